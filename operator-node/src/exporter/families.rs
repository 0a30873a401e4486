//! The metric families the exporter serves: dcgm-exporter's names, types and help texts, in
//! the order dcgm-exporter's default counter files list them.

/// Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// Which value of a [`super::sample::GpuValues`] a family carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    SmClock,
    MemClock,
    MemoryTemp,
    GpuTemp,
    PowerUsage,
    TotalEnergy,
    PcieReplay,
    GpuUtil,
    MemCopyUtil,
    EncUtil,
    DecUtil,
    XidErrors,
    FbFree,
    FbUsed,
    GrEngineActive,
    PipeTensorActive,
    DramActive,
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub field: Field,
}

const fn fam(name: &'static str, kind: Kind, help: &'static str, field: Field) -> Family {
    Family { name, kind, help, field }
}

/// Every family, in output order. The first block is dcgm-exporter's `default-counters.csv`,
/// the last three its DCP (profiling) counters.
pub const FAMILIES: [Family; 17] = [
    fam("DCGM_FI_DEV_SM_CLOCK", Kind::Gauge, "SM clock frequency (in MHz).", Field::SmClock),
    fam("DCGM_FI_DEV_MEM_CLOCK", Kind::Gauge, "Memory clock frequency (in MHz).", Field::MemClock),
    fam("DCGM_FI_DEV_MEMORY_TEMP", Kind::Gauge, "Memory temperature (in C).", Field::MemoryTemp),
    fam("DCGM_FI_DEV_GPU_TEMP", Kind::Gauge, "GPU temperature (in C).", Field::GpuTemp),
    fam("DCGM_FI_DEV_POWER_USAGE", Kind::Gauge, "Power draw (in W).", Field::PowerUsage),
    fam("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", Kind::Counter, "Total energy consumption since boot (in mJ).", Field::TotalEnergy),
    fam("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", Kind::Counter, "Total number of PCIe retries.", Field::PcieReplay),
    fam("DCGM_FI_DEV_GPU_UTIL", Kind::Gauge, "GPU utilization (in %).", Field::GpuUtil),
    fam("DCGM_FI_DEV_MEM_COPY_UTIL", Kind::Gauge, "Memory utilization (in %).", Field::MemCopyUtil),
    fam("DCGM_FI_DEV_ENC_UTIL", Kind::Gauge, "Encoder utilization (in %).", Field::EncUtil),
    fam("DCGM_FI_DEV_DEC_UTIL", Kind::Gauge, "Decoder utilization (in %).", Field::DecUtil),
    fam("DCGM_FI_DEV_XID_ERRORS", Kind::Gauge, "Value of the last XID error encountered.", Field::XidErrors),
    fam("DCGM_FI_DEV_FB_FREE", Kind::Gauge, "Framebuffer memory free (in MiB).", Field::FbFree),
    fam("DCGM_FI_DEV_FB_USED", Kind::Gauge, "Framebuffer memory used (in MiB).", Field::FbUsed),
    fam("DCGM_FI_PROF_GR_ENGINE_ACTIVE", Kind::Gauge, "Ratio of time the graphics engine is active.", Field::GrEngineActive),
    fam("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", Kind::Gauge, "Ratio of cycles the tensor (HMMA) pipe is active.", Field::PipeTensorActive),
    fam(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        Kind::Gauge,
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        Field::DramActive,
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_upstream_families_present() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len());
        for upstream in ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"] {
            assert!(names.contains(&upstream), "{upstream}");
        }
    }

    #[test]
    fn counters_are_the_monotonic_fields() {
        let counters: Vec<&str> = FAMILIES.iter().filter(|f| f.kind == Kind::Counter).map(|f| f.name).collect();
        assert_eq!(counters, ["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER"]);
    }
}
