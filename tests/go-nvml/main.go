// nvml-list: lists the GPUs NVML reports, through NVIDIA's go-nvml bindings
// (github.com/NVIDIA/go-nvml, which dlopens libnvidia-ml.so.1). run.sh runs it over the fake
// NVML and compares each line with what the model says the node has.
package main

import (
	"fmt"
	"os"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

func check(what string, ret nvml.Return) {
	if ret != nvml.SUCCESS {
		fmt.Fprintf(os.Stderr, "%s: %s\n", what, nvml.ErrorString(ret))
		os.Exit(1)
	}
}

func main() {
	check("nvmlInit", nvml.Init())
	defer nvml.Shutdown()
	driver, ret := nvml.SystemGetDriverVersion()
	check("nvmlSystemGetDriverVersion", ret)
	cuda, ret := nvml.SystemGetCudaDriverVersion()
	check("nvmlSystemGetCudaDriverVersion", ret)
	fmt.Printf("driver %s cuda %d\n", driver, cuda)
	count, ret := nvml.DeviceGetCount()
	check("nvmlDeviceGetCount", ret)
	for i := 0; i < count; i++ {
		dev, ret := nvml.DeviceGetHandleByIndex(i)
		check("nvmlDeviceGetHandleByIndex", ret)
		name, ret := dev.GetName()
		check("nvmlDeviceGetName", ret)
		uuid, ret := dev.GetUUID()
		check("nvmlDeviceGetUUID", ret)
		mem, ret := dev.GetMemoryInfo()
		check("nvmlDeviceGetMemoryInfo", ret)
		pci, ret := dev.GetPciInfo()
		check("nvmlDeviceGetPciInfo", ret)
		major, minor, ret := dev.GetCudaComputeCapability()
		check("nvmlDeviceGetCudaComputeCapability", ret)
		busID := make([]byte, 0, len(pci.BusIdLegacy))
		for _, c := range pci.BusIdLegacy {
			if c == 0 {
				break
			}
			busID = append(busID, byte(c))
		}
		fmt.Printf("gpu %d name=%q uuid=%s memory_total=%d bus=%s cc=%d.%d\n", i, name, uuid, mem.Total, string(busID), major, minor)
	}
}
