/* A driver-API client compiled against NVIDIA's cuda.h (nvidia-cuda-dev 11.8) with -Werror and
 * run over the fake libcuda.so.1.
 *
 *   probe discover        one line per device: ordinal, name, UUID, bus id, cc, SMs, memory
 *   probe errors          NULL / invalid device / uninitialised / bad attribute cases
 *   probe fork            CUDA's fork rule: a child of an initialised parent cannot use CUDA
 *   probe hold GPU MIB    a context on GPU with MIB allocated; prints "ready <pid>", then waits
 *   probe bench ITERS     cuInit + cuDeviceGetCount time, threads, cuDeviceGetAttribute ns/call
 *
 * Every check that fails prints "FAIL: ..." and makes the exit status 1. */
#define _GNU_SOURCE
#include <cuda.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

#define EXPECT(call, want)                                                                    \
  do {                                                                                        \
    CUresult got_ = (call);                                                                   \
    if (got_ != (want)) {                                                                     \
      const char *name_ = NULL;                                                               \
      cuGetErrorName(got_, &name_);                                                           \
      printf("FAIL: %s = %d (%s), want %s\n", #call, (int)got_, name_ ? name_ : "?", #want); \
      failures++;                                                                             \
    }                                                                                         \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int threads(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  struct dirent *e;
  if (!d) return -1;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static long rss_kib(void) {
  char line[256];
  long kib = -1;
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmRSS:", 6) == 0) kib = strtol(line + 6, NULL, 10);
  fclose(f);
  return kib;
}

static void uuid_text(const CUuuid *u, char out[41]) {
  const unsigned char *b = (const unsigned char *)u->bytes;
  snprintf(out, 41, "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3],
           b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static int discover(void) {
  int count = -1, version = 0;
  EXPECT(cuDriverGetVersion(&version), CUDA_SUCCESS);
  EXPECT(cuInit(0), CUDA_SUCCESS);
  EXPECT(cuDeviceGetCount(&count), CUDA_SUCCESS);
  printf("driver %d count %d\n", version, count);
  for (int i = 0; i < count; i++) {
    CUdevice dev;
    char name[256], bus[32], uuid[41], bus_back[32];
    CUuuid u, u2;
    size_t total = 0;
    int major, minor, sms, clock, mem_clock, width, l2, domain, busno, devno, managed, unified, ecc, maxthreads;
    CUdevice again = -1;
    EXPECT(cuDeviceGet(&dev, i), CUDA_SUCCESS);
    EXPECT(cuDeviceGetName(name, sizeof name, dev), CUDA_SUCCESS);
    EXPECT(cuDeviceGetUuid(&u, dev), CUDA_SUCCESS);
    EXPECT(cuDeviceGetUuid_v2(&u2, dev), CUDA_SUCCESS);
    if (memcmp(&u, &u2, sizeof u) != 0) {
      printf("FAIL: cuDeviceGetUuid and _v2 differ on %d\n", i);
      failures++;
    }
    EXPECT(cuDeviceTotalMem(&total, dev), CUDA_SUCCESS);
    EXPECT(cuDeviceGetPCIBusId(bus, sizeof bus, dev), CUDA_SUCCESS);
    EXPECT(cuDeviceGetByPCIBusId(&again, bus), CUDA_SUCCESS);
    if (again != dev) {
      printf("FAIL: cuDeviceGetByPCIBusId(%s) = %d, want %d\n", bus, again, dev);
      failures++;
    }
    EXPECT(cuDeviceGetPCIBusId(bus_back, 8, dev), CUDA_SUCCESS); /* truncated, NUL-terminated */
    if (strlen(bus_back) != 7) {
      printf("FAIL: truncated bus id has length %zu\n", strlen(bus_back));
      failures++;
    }
#define ATTR(var, attr) EXPECT(cuDeviceGetAttribute(&var, attr, dev), CUDA_SUCCESS)
    ATTR(major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    ATTR(minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    ATTR(sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    ATTR(clock, CU_DEVICE_ATTRIBUTE_CLOCK_RATE);
    ATTR(mem_clock, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
    ATTR(width, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
    ATTR(l2, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
    ATTR(domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID);
    ATTR(busno, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID);
    ATTR(devno, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID);
    ATTR(managed, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY);
    ATTR(unified, CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING);
    ATTR(ecc, CU_DEVICE_ATTRIBUTE_ECC_ENABLED);
    ATTR(maxthreads, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    /* Every attribute the 11.8 header names answers. */
    for (int a = 1; a <= CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED; a++) {
      int v;
      EXPECT(cuDeviceGetAttribute(&v, (CUdevice_attribute)a, dev), CUDA_SUCCESS);
    }
    uuid_text(&u, uuid);
    printf("device %d name=%s uuid=%s bus=%s cc=%d.%d sms=%d total=%zu clock_khz=%d mem_clock_khz=%d bus_width=%d l2=%d "
           "pci=%04x:%02x:%02x managed=%d unified=%d ecc=%d max_threads=%d\n",
           i, name, uuid, bus, major, minor, sms, total, clock, mem_clock, width, l2, domain, busno, devno, managed, unified,
           ecc, maxthreads);
  }
  /* A context, memory and a round trip through the device. */
  if (count > 0) {
    CUcontext ctx = NULL, cur = NULL;
    CUdevice dev = -1;
    CUdeviceptr d1 = 0, d2 = 0;
    size_t free_b = 0, total_b = 0, free_after = 0;
    CUstream s;
    CUevent e1, e2;
    float ms = -1;
    const size_t n = 1 << 20;
    unsigned char *in = malloc(n), *back = malloc(n);
    for (size_t k = 0; k < n; k++) in[k] = (unsigned char)(k * 7 + 3);
    EXPECT(cuDevicePrimaryCtxRetain(&ctx, 0), CUDA_SUCCESS);
    EXPECT(cuCtxSetCurrent(ctx), CUDA_SUCCESS);
    EXPECT(cuCtxGetCurrent(&cur), CUDA_SUCCESS);
    EXPECT(cuCtxGetDevice(&dev), CUDA_SUCCESS);
    if (cur != ctx || dev != 0) {
      printf("FAIL: current context/device mismatch\n");
      failures++;
    }
    EXPECT(cuMemGetInfo(&free_b, &total_b), CUDA_SUCCESS);
    EXPECT(cuMemAlloc(&d1, n), CUDA_SUCCESS);
    EXPECT(cuMemAlloc(&d2, n), CUDA_SUCCESS);
    EXPECT(cuMemGetInfo(&free_after, &total_b), CUDA_SUCCESS);
    if (free_b - free_after != 2 * n) {
      printf("FAIL: free memory went from %zu to %zu after allocating %zu\n", free_b, free_after, 2 * n);
      failures++;
    }
    EXPECT(cuMemcpyHtoD(d1, in, n), CUDA_SUCCESS);
    EXPECT(cuMemcpyDtoD(d2, d1, n), CUDA_SUCCESS);
    EXPECT(cuMemcpyDtoH(back, d2, n), CUDA_SUCCESS);
    if (memcmp(in, back, n) != 0) {
      printf("FAIL: round trip changed the data\n");
      failures++;
    }
    EXPECT(cuMemcpyHtoD(d1 + n - 1, in, 2), CUDA_ERROR_INVALID_VALUE); /* past the allocation */
    EXPECT(cuMemAlloc(&d1, total_b), CUDA_ERROR_OUT_OF_MEMORY);
    EXPECT(cuStreamCreate(&s, 0), CUDA_SUCCESS);
    EXPECT(cuEventCreate(&e1, 0), CUDA_SUCCESS);
    EXPECT(cuEventCreate(&e2, 0), CUDA_SUCCESS);
    EXPECT(cuEventRecord(e1, s), CUDA_SUCCESS);
    EXPECT(cuStreamSynchronize(s), CUDA_SUCCESS);
    EXPECT(cuEventRecord(e2, s), CUDA_SUCCESS);
    EXPECT(cuEventSynchronize(e2), CUDA_SUCCESS);
    EXPECT(cuEventElapsedTime(&ms, e1, e2), CUDA_SUCCESS);
    if (ms < 0) {
      printf("FAIL: elapsed %f ms\n", (double)ms);
      failures++;
    }
    EXPECT(cuEventDestroy(e1), CUDA_SUCCESS);
    EXPECT(cuEventDestroy(e2), CUDA_SUCCESS);
    EXPECT(cuStreamDestroy(s), CUDA_SUCCESS);
    EXPECT(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);
    EXPECT(cuMemFree(d2), CUDA_SUCCESS);
    EXPECT(cuMemFree(d2), CUDA_ERROR_INVALID_VALUE);
    EXPECT(cuCtxSynchronize(), CUDA_SUCCESS);
    EXPECT(cuModuleLoad(NULL, "kernel.cubin"), CUDA_ERROR_NOT_SUPPORTED);
    EXPECT(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_NOT_SUPPORTED);
    EXPECT(cuDevicePrimaryCtxRelease(0), CUDA_SUCCESS);
    free(in);
    free(back);
  }
  return failures ? 1 : 0;
}

static int errors(void) {
  int count = 0, v = 0;
  CUdevice dev;
  char name[64];
  const char *s = NULL;
  CUcontext ctx = NULL;
  CUdeviceptr p = 0;
  size_t f = 0, t = 0;
  /* Before cuInit. */
  EXPECT(cuDeviceGetCount(&count), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuDeviceGet(&dev, 0), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuCtxGetCurrent(&ctx), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuGetErrorName(CUDA_ERROR_NOT_INITIALIZED, &s), CUDA_SUCCESS);
  if (!s || strcmp(s, "CUDA_ERROR_NOT_INITIALIZED") != 0) {
    printf("FAIL: name of 3 is %s\n", s ? s : "NULL");
    failures++;
  }
  EXPECT(cuGetErrorString(CUDA_ERROR_INVALID_DEVICE, &s), CUDA_SUCCESS);
  EXPECT(cuGetErrorName((CUresult)12345, &s), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuInit(1), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuInit(0), CUDA_SUCCESS);
  EXPECT(cuInit(0), CUDA_SUCCESS);
  EXPECT(cuDeviceGetCount(&count), CUDA_SUCCESS);
  /* NULL out-pointers. */
  EXPECT(cuDeviceGetCount(NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGet(NULL, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetName(NULL, 64, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetName(name, 0, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetUuid(NULL, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceTotalMem(NULL, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetAttribute(NULL, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetByPCIBusId(&dev, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetByPCIBusId(&dev, "not-a-bus-id"), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetByPCIBusId(&dev, "0000:ff:1f.0"), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuGetErrorName(CUDA_SUCCESS, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDriverGetVersion(NULL), CUDA_ERROR_INVALID_VALUE);
  /* Invalid devices and attributes. */
  EXPECT(cuDeviceGet(&dev, count), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuDeviceGet(&dev, -1), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuDeviceGetName(name, sizeof name, count), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_WARP_SIZE, count), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuDeviceGetAttribute(&v, (CUdevice_attribute)0, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDeviceGetAttribute(&v, (CUdevice_attribute)100000, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuDevicePrimaryCtxRetain(&ctx, count), CUDA_ERROR_INVALID_DEVICE);
  EXPECT(cuDeviceGetLuid(name, (unsigned int *)&v, 0), CUDA_ERROR_NOT_SUPPORTED);
  EXPECT(cuDeviceGetUuid_v2((CUuuid *)name, count), CUDA_ERROR_INVALID_DEVICE);
  /* No current context. */
  EXPECT(cuMemAlloc(&p, 16), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuMemGetInfo(&f, &t), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuCtxSetCurrent((CUcontext)&v), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuCtxDestroy((CUcontext)&v), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuDevicePrimaryCtxRelease(0), CUDA_ERROR_INVALID_CONTEXT);
  /* A created context: current until destroyed, its handle dead afterwards. */
  EXPECT(cuCtxCreate(&ctx, 0, 0), CUDA_SUCCESS);
  EXPECT(cuMemAlloc(&p, 0), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemAlloc(NULL, 16), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemAlloc(&p, 16), CUDA_SUCCESS);
  EXPECT(cuMemcpyHtoD(p, NULL, 16), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyDtoH(name, 12345, 16), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuCtxDestroy(ctx), CUDA_SUCCESS);
  EXPECT(cuCtxDestroy(ctx), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuGetExportTable((const void **)&s, (const CUuuid *)name), CUDA_ERROR_NOT_SUPPORTED);
  return failures ? 1 : 0;
}

static int forked(void) {
  int count = 0, status = 0;
  pid_t child;
  EXPECT(cuInit(0), CUDA_SUCCESS);
  child = fork();
  if (child == 0) {
    /* CUDA's rule: the child of an initialised process cannot use CUDA. */
    int c = 0, bad = 0;
    bad |= cuInit(0) != CUDA_ERROR_NOT_INITIALIZED;
    bad |= cuDeviceGetCount(&c) != CUDA_ERROR_NOT_INITIALIZED;
    _exit(bad);
  }
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    printf("FAIL: the forked child could use CUDA (status %d)\n", status);
    failures++;
  }
  EXPECT(cuDeviceGetCount(&count), CUDA_SUCCESS);
  printf("fork ok, parent still sees %d devices\n", count);
  return failures ? 1 : 0;
}

static int hold(int gpu, long mib) {
  CUcontext ctx;
  CUdeviceptr p;
  EXPECT(cuInit(0), CUDA_SUCCESS);
  EXPECT(cuCtxCreate(&ctx, 0, gpu), CUDA_SUCCESS);
  EXPECT(cuMemAlloc(&p, (size_t)mib << 20), CUDA_SUCCESS);
  if (failures) return 1;
  printf("ready %d\n", (int)getpid());
  fflush(stdout);
  for (;;) pause();
}

static int bench(long iters) {
  int threads_before = threads(), count = 0, v = 0;
  long rss_before = rss_kib();
  double t0 = now_s(), t1, t2;
  long sum = 0;
  EXPECT(cuInit(0), CUDA_SUCCESS);
  EXPECT(cuDeviceGetCount(&count), CUDA_SUCCESS);
  t1 = now_s();
  for (long i = 0; i < iters; i++) {
    cuDeviceGetAttribute(&v, (CUdevice_attribute)(1 + i % 120), (CUdevice)(i % count));
    sum += v;
  }
  t2 = now_s();
  printf("init_count_us %.1f threads_added %d rss_added_kib %ld attribute_ns %.2f (checksum %ld)\n", (t1 - t0) * 1e6,
         threads() - threads_before, rss_kib() - rss_before, (t2 - t1) * 1e9 / (double)iters, sum);
  return failures ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "discover") == 0) return discover();
  if (argc >= 2 && strcmp(argv[1], "errors") == 0) return errors();
  if (argc >= 2 && strcmp(argv[1], "fork") == 0) return forked();
  if (argc >= 4 && strcmp(argv[1], "hold") == 0) return hold(atoi(argv[2]), atol(argv[3]));
  if (argc >= 3 && strcmp(argv[1], "bench") == 0) return bench(atol(argv[2]));
  fprintf(stderr, "usage: probe discover|errors|fork|hold GPU MIB|bench ITERS\n");
  return 2;
}
