/* Conformance probe: NVIDIA's nvml.h (libnvidia-ml-dev), linked with -lnvidia-ml against the fake.
 * Every struct below is NVIDIA's own type, so the values printed prove that the library writes
 * the layouts the header declares. Output: one "key=value" per line, "gpuN.key" per device. */
#include <nvml.h>
#include <stdio.h>
#include <string.h>

static int failures = 0;

#define CHECK(call)                                                                        \
    do {                                                                                   \
        nvmlReturn_t rc_ = (call);                                                         \
        if (rc_ != NVML_SUCCESS) {                                                         \
            printf("error.%s=%d\n", #call, (int)rc_);                                      \
            failures++;                                                                    \
        }                                                                                  \
    } while (0)

int main(void) {
    char buf[NVML_DEVICE_NAME_V2_BUFFER_SIZE > 96 ? NVML_DEVICE_NAME_V2_BUFFER_SIZE : 96];
    unsigned int count = 0, value = 0, v2 = 0;
    int major = 0, minor = 0, cuda = 0;

    printf("sizeof.nvmlPciInfo_t=%zu\n", sizeof(nvmlPciInfo_t));
    printf("sizeof.nvmlMemory_t=%zu\n", sizeof(nvmlMemory_t));
    printf("sizeof.nvmlMemory_v2_t=%zu\n", sizeof(nvmlMemory_v2_t));
    printf("sizeof.nvmlProcessInfo_t=%zu\n", sizeof(nvmlProcessInfo_t));
    printf("sizeof.nvmlFieldValue_t=%zu\n", sizeof(nvmlFieldValue_t));

    CHECK(nvmlInit()); /* nvmlInit_v2 through the header's versioning macros */
    CHECK(nvmlSystemGetDriverVersion(buf, NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE));
    printf("driver_version=%s\n", buf);
    CHECK(nvmlSystemGetNVMLVersion(buf, NVML_SYSTEM_NVML_VERSION_BUFFER_SIZE));
    printf("nvml_version=%s\n", buf);
    CHECK(nvmlSystemGetCudaDriverVersion_v2(&cuda));
    printf("cuda_driver_version=%d\n", cuda);
    CHECK(nvmlDeviceGetCount(&count));
    printf("count=%u\n", count);
    CHECK(nvmlGetExcludedDeviceCount(&value));
    printf("excluded=%u\n", value);

    for (unsigned int i = 0; i < count; i++) {
        nvmlDevice_t dev, again;
        CHECK(nvmlDeviceGetHandleByIndex(i, &dev));
#define P(fmt, key, ...) printf("gpu%u." key "=" fmt "\n", i, __VA_ARGS__)
        CHECK(nvmlDeviceGetIndex(dev, &value));
        P("%u", "index", value);
        CHECK(nvmlDeviceGetName(dev, buf, NVML_DEVICE_NAME_BUFFER_SIZE)); /* 64, as nvidia-smi passes */
        P("%s", "name", buf);
        CHECK(nvmlDeviceGetUUID(dev, buf, NVML_DEVICE_UUID_BUFFER_SIZE));
        P("%s", "uuid", buf);
        CHECK(nvmlDeviceGetHandleByUUID(buf, &again));
        P("%d", "uuid_roundtrip", again == dev);
        CHECK(nvmlDeviceGetSerial(dev, buf, NVML_DEVICE_SERIAL_BUFFER_SIZE));
        P("%s", "serial", buf);
        CHECK(nvmlDeviceGetVbiosVersion(dev, buf, NVML_DEVICE_VBIOS_VERSION_BUFFER_SIZE));
        P("%s", "vbios", buf);
        CHECK(nvmlDeviceGetBoardPartNumber(dev, buf, NVML_DEVICE_PART_NUMBER_BUFFER_SIZE));
        P("%s", "board_part_number", buf);

        nvmlPciInfo_t pci;
        memset(&pci, 0xAB, sizeof pci);
        CHECK(nvmlDeviceGetPciInfo(dev, &pci)); /* _v3 */
        P("%s", "pci.busId", pci.busId);
        P("%s", "pci.busIdLegacy", pci.busIdLegacy);
        P("%u", "pci.domain", pci.domain);
        P("%u", "pci.bus", pci.bus);
        P("%u", "pci.device", pci.device);
        P("0x%08X", "pci.pciDeviceId", pci.pciDeviceId);
        P("0x%08X", "pci.pciSubSystemId", pci.pciSubSystemId);
        CHECK(nvmlDeviceGetHandleByPciBusId(pci.busId, &again));
        P("%d", "pci_roundtrip", again == dev);

        nvmlMemory_t mem;
        CHECK(nvmlDeviceGetMemoryInfo(dev, &mem));
        P("%llu", "mem.total", mem.total);
        P("%llu", "mem.free", mem.free);
        P("%llu", "mem.used", mem.used);
        nvmlMemory_v2_t mem2;
        memset(&mem2, 0, sizeof mem2);
        mem2.version = nvmlMemory_v2;
        CHECK(nvmlDeviceGetMemoryInfo_v2(dev, &mem2));
        P("0x%08X", "mem2.version", mem2.version);
        P("%llu", "mem2.total", mem2.total);
        P("%llu", "mem2.reserved", mem2.reserved);
        P("%llu", "mem2.free", mem2.free);
        P("%llu", "mem2.used", mem2.used);
        mem2.version = 1; /* a wrong version must be refused, not misread */
        P("%d", "mem2.bad_version_rc", (int)nvmlDeviceGetMemoryInfo_v2(dev, &mem2));
        nvmlBAR1Memory_t bar1;
        CHECK(nvmlDeviceGetBAR1MemoryInfo(dev, &bar1));
        P("%llu", "bar1.total", bar1.bar1Total);
        P("%llu", "bar1.used", bar1.bar1Used);
        P("%llu", "bar1.free", bar1.bar1Free);

        nvmlUtilization_t util = {99, 99};
        CHECK(nvmlDeviceGetUtilizationRates(dev, &util));
        P("%u", "util.gpu", util.gpu);
        P("%u", "util.memory", util.memory);
        CHECK(nvmlDeviceGetTemperature(dev, NVML_TEMPERATURE_GPU, &value));
        P("%u", "temp", value);
        CHECK(nvmlDeviceGetTemperatureThreshold(dev, NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, &value));
        P("%u", "temp.shutdown", value);
        CHECK(nvmlDeviceGetTemperatureThreshold(dev, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN, &value));
        P("%u", "temp.slowdown", value);
        CHECK(nvmlDeviceGetPowerUsage(dev, &value));
        P("%u", "power.usage", value);
        CHECK(nvmlDeviceGetEnforcedPowerLimit(dev, &value));
        P("%u", "power.enforced", value);
        CHECK(nvmlDeviceGetPowerManagementLimitConstraints(dev, &value, &v2));
        P("%u", "power.min", value);
        P("%u", "power.max", v2);
        unsigned long long energy = 0;
        CHECK(nvmlDeviceGetTotalEnergyConsumption(dev, &energy));
        P("%d", "energy.positive", energy > 0);

        static const char *const clock_names[] = {"graphics", "sm", "memory", "video"};
        for (int c = 0; c < NVML_CLOCK_COUNT; c++) {
            CHECK(nvmlDeviceGetClockInfo(dev, (nvmlClockType_t)c, &value));
            printf("gpu%u.clock.%s=%u\n", i, clock_names[c], value);
            CHECK(nvmlDeviceGetMaxClockInfo(dev, (nvmlClockType_t)c, &value));
            printf("gpu%u.maxclock.%s=%u\n", i, clock_names[c], value);
        }
        CHECK(nvmlDeviceGetCudaComputeCapability(dev, &major, &minor));
        P("%d.%d", "compute_capability", major, minor);
        nvmlPstates_t pstate;
        CHECK(nvmlDeviceGetPerformanceState(dev, &pstate));
        P("%d", "pstate", (int)pstate);
        nvmlEnableState_t cur, pend;
        CHECK(nvmlDeviceGetEccMode(dev, &cur, &pend));
        P("%d", "ecc.current", (int)cur);
        P("%d", "ecc.pending", (int)pend);
        CHECK(nvmlDeviceGetPersistenceMode(dev, &cur));
        P("%d", "persistence", (int)cur);
        CHECK(nvmlDeviceGetMaxPcieLinkGeneration(dev, &value));
        P("%u", "pcie.max_gen", value);
        CHECK(nvmlDeviceGetCurrPcieLinkWidth(dev, &value));
        P("%u", "pcie.width", value);

        nvmlFieldValue_t fv[2];
        memset(fv, 0, sizeof fv);
        fv[0].fieldId = NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION;
        fv[1].fieldId = NVML_FI_DEV_ECC_CURRENT;
        CHECK(nvmlDeviceGetFieldValues(dev, 2, fv));
        P("%d", "field.energy.rc", (int)fv[0].nvmlReturn);
        P("%d", "field.energy.type", (int)fv[0].valueType);
        P("%d", "field.energy.positive", fv[0].value.ullVal > 0);
        P("%d", "field.ecc_current.rc", (int)fv[1].nvmlReturn);
        P("%u", "field.ecc_current", fv[1].value.uiVal);

        nvmlProcessInfo_t procs[8];
        unsigned int nprocs = 8;
        CHECK(nvmlDeviceGetComputeRunningProcesses(dev, &nprocs, procs)); /* _v3 */
        P("%u", "processes", nprocs);
    }
    CHECK(nvmlShutdown());
    printf("after_shutdown_rc=%d\n", (int)nvmlDeviceGetCount(&count));
    printf("failures=%d\n", failures);
    return failures != 0;
}
