// Concurrency and cost probe for the live node state, linked against libnvidia-ml.so.1.
//
//   hammer read THREADS STOPFILE   THREADS threads read GPU 0 until STOPFILE exists; every
//                                  utilization sample must satisfy gpu + memory == 100 (the
//                                  writer keeps that invariant), else it is a torn read.
//                                  Prints "reads=N torn=N errors=N generations=N".
//   hammer bench ITERATIONS        ns per call of a few getters on GPU 0, one line each.
#include <nvml.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static nvmlDevice_t dev;
static const char *stop_file;
static volatile int stop;

struct result {
    unsigned long reads, torn, errors, changes;
};

static void *reader(void *arg) {
    struct result *r = arg;
    unsigned last = 1000;
    while (!stop) {
        for (int k = 0; k < 256; k++) {
            nvmlUtilization_t u;
            nvmlReturn_t rc = nvmlDeviceGetUtilizationRates(dev, &u);
            if (rc != NVML_SUCCESS) {
                r->errors++;
                continue;
            }
            r->reads++;
            if (u.gpu + u.memory != 100 && !(u.gpu == 0 && u.memory == 0)) r->torn++;
            if (u.gpu != last) r->changes++, last = u.gpu;
            unsigned int temp;
            if (nvmlDeviceGetTemperature(dev, NVML_TEMPERATURE_GPU, &temp) != NVML_SUCCESS) r->errors++;
            nvmlMemory_t m;
            if (nvmlDeviceGetMemoryInfo(dev, &m) != NVML_SUCCESS || m.used > m.total) r->errors++;
        }
        usleep(2000); // leave the writer some CPU on small machines
    }
    return NULL;
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: hammer read THREADS STOPFILE | hammer bench ITERATIONS\n");
        return 2;
    }
    if (nvmlInit_v2() != NVML_SUCCESS || nvmlDeviceGetHandleByIndex_v2(0, &dev) != NVML_SUCCESS) {
        fprintf(stderr, "hammer: NVML init failed\n");
        return 1;
    }
    if (!strcmp(argv[1], "read")) {
        int n = atoi(argv[2]);
        stop_file = argv[3];
        pthread_t t[256];
        struct result r[256];
        memset(r, 0, sizeof r);
        for (int i = 0; i < n; i++) pthread_create(&t[i], NULL, reader, &r[i]);
        while (access(stop_file, F_OK) != 0) usleep(10000);
        stop = 1;
        struct result sum = {0};
        for (int i = 0; i < n; i++) {
            pthread_join(t[i], NULL);
            sum.reads += r[i].reads, sum.torn += r[i].torn, sum.errors += r[i].errors, sum.changes += r[i].changes;
        }
        printf("reads=%lu torn=%lu errors=%lu generations=%lu\n", sum.reads, sum.torn, sum.errors, sum.changes);
        nvmlShutdown();
        return sum.torn || sum.errors ? 1 : 0;
    }
    long iters = atol(argv[2]);
    double t0;
    unsigned int v;
    nvmlUtilization_t u;
    nvmlMemory_t m;
    unsigned long long e;
#define BENCH(label, call)                                        \
    t0 = now_ns();                                                \
    for (long i = 0; i < iters; i++) call;                        \
    printf("%-34s %8.1f ns\n", label, (now_ns() - t0) / iters);
    BENCH("nvmlDeviceGetUtilizationRates", nvmlDeviceGetUtilizationRates(dev, &u));
    BENCH("nvmlDeviceGetTemperature", nvmlDeviceGetTemperature(dev, NVML_TEMPERATURE_GPU, &v));
    BENCH("nvmlDeviceGetPowerUsage", nvmlDeviceGetPowerUsage(dev, &v));
    BENCH("nvmlDeviceGetMemoryInfo", nvmlDeviceGetMemoryInfo(dev, &m));
    BENCH("nvmlDeviceGetClockInfo(SM)", nvmlDeviceGetClockInfo(dev, NVML_CLOCK_SM, &v));
    BENCH("nvmlDeviceGetTotalEnergyConsumption", nvmlDeviceGetTotalEnergyConsumption(dev, &e));
    nvmlShutdown();
    return 0;
}
