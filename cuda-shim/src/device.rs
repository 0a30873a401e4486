//! One simulated GPU as CUDA sees it: its ordinal in this process, its identity (the same
//! UUID, PCI address and name NVML reports), and every attribute, prepared once so that a
//! getter is an array read.

use fakegpu_model::telemetry::{self, Load, MemoryUsage};
use fakegpu_model::{cuda, GpuIdentity, NodeSpec};

pub(crate) struct Device {
    pub ordinal: usize,
    /// The GPU's index on the node (the live state's key), whatever ordinal CUDA gives it.
    pub host_index: u32,
    pub id: GpuIdentity,
    pub name: String,
    pub uuid: [u8; 16],
    /// `cuDeviceGetPCIBusId`: `dddd:bb:dd.f`, lower-case hex as CUDA prints it.
    pub bus_id: String,
    pub attributes: cuda::Attributes,
    /// Framebuffer total and what the driver reserves (NVML's `total` and `reserved`).
    pub total_bytes: u64,
}

impl Device {
    pub fn new(spec: &NodeSpec, id: GpuIdentity, ordinal: usize) -> Device {
        let profile = &spec.profile;
        let group = if profile.multi_gpu_board { (id.index / 2) as i32 } else { id.index as i32 };
        let idle = telemetry::readings(profile, &Load::default()).memory;
        Device {
            ordinal,
            host_index: id.index,
            name: profile.product_name.clone(),
            uuid: cuda::uuid_bytes(&id.uuid).unwrap_or_default(),
            bus_id: format!("{:04x}:{:02x}:{:02x}.{:x}", id.pci.domain, id.pci.bus, id.pci.device, id.pci.function),
            attributes: cuda::attributes(profile, &id.pci, group),
            total_bytes: idle.total,
            id,
        }
    }

    /// Memory as NVML reports it with `used_bytes` in use (the same model function).
    pub fn memory(&self, spec: &NodeSpec, used_bytes: u64) -> MemoryUsage {
        telemetry::readings(&spec.profile, &Load { memory_used_bytes: used_bytes, ..Load::default() }).memory
    }
}
