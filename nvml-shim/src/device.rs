//! One simulated GPU as the exports see it: its identity, its profile, the strings the
//! getters hand out (prepared once so that a getter is a copy), and its readings.

use std::ffi::CString;
use std::sync::Arc;

use fakegpu_model::dynamics;
use fakegpu_model::state_file;
use fakegpu_model::telemetry::{self, Load, Readings};
use fakegpu_model::{GpuIdentity, NodeSpec, Profile};

use crate::runtime::cstring;

pub(crate) struct Device {
    pub id: GpuIdentity,
    /// The GPU's index on the node (the live state's key), whatever index a container sees.
    pub host_index: u32,
    pub profile: Arc<Profile>,
    pub name: CString,
    pub uuid: CString,
    pub serial: CString,
    pub bus_id: String,
    pub bus_id_legacy: String,
    pub vbios: CString,
    pub board_part_number: CString,
    pub inforom_image: CString,
    /// GSP firmware version: the driver's, where the board runs GSP firmware.
    pub gsp_version: Option<CString>,
    /// NUMA node of the GPU, from the node's layout ([`fakegpu_model::numa`]): the pool's
    /// `numa` zones, else the first half of the GPUs on node 0 and the rest on 1.
    pub numa_node: u32,
    /// The CPU ids of that NUMA node (its CPU affinity).
    pub cpus: std::ops::Range<u64>,
    /// The (GI id, CI id) of the MIG devices this process may see; None = all of them.
    pub mig_filter: Option<Vec<(u32, u32)>>,
}

impl Device {
    pub fn new(spec: &NodeSpec, id: GpuIdentity) -> Device {
        let profile = Arc::new(spec.profile.clone());
        let placement = spec.numa_placement();
        let numa_node = placement.zone_of(id.index);
        Device {
            host_index: id.index,
            name: cstring(&profile.product_name),
            uuid: cstring(&id.uuid),
            serial: cstring(&id.serial),
            bus_id: id.pci.bus_id(),
            bus_id_legacy: id.pci.bus_id_legacy(),
            vbios: cstring(&profile.vbios_version),
            board_part_number: cstring(&profile.board_part_number),
            inforom_image: cstring(&profile.inforom.image),
            gsp_version: profile.gsp_firmware.then(|| cstring(&spec.driver_version)),
            numa_node,
            cpus: placement.cpus_of(numa_node, online_cpus()),
            mig_filter: None,
            profile,
            id,
        }
    }

    /// What the GPU reads now: the static idle readings unless the live state moved it.
    #[inline]
    pub fn readings(&self) -> Readings {
        crate::live::readings(self.host_index, &self.profile, crate::live::now_coarse())
            .unwrap_or_else(|| telemetry::readings(&self.profile, &Load::default()))
    }

    /// The energy counter (mJ): monotonic across processes and state changes.
    pub fn energy_mj(&self) -> u64 {
        let now = state_file::now();
        match crate::live::hot(self.host_index) {
            Some(h) => dynamics::energy_mj(&self.profile, &h.gpu_state(), now),
            None => dynamics::idle_energy_mj(&self.profile, now),
        }
    }

    /// Current clock-event reasons: GPU_IDLE when idle, plus injected ones.
    pub fn clock_event_reasons(&self) -> u64 {
        let util = self.readings().gpu_util;
        dynamics::clock_event_reasons(crate::live::hot(self.host_index).map(|h| h.gpu_state()).as_ref(), util)
    }

    /// The injected faults of this GPU (default = healthy).
    pub fn faults(&self) -> fakegpu_model::state::Faults {
        crate::live::with_gpu(self.host_index, |g| g.faults.clone()).unwrap_or_default()
    }

    /// Whether ECC is enabled (ECC counters and fields are NOT_SUPPORTED otherwise).
    pub fn ecc(&self) -> bool {
        self.profile.ecc_enabled
    }

    /// Boards from Ampere on remap rows instead of retiring pages.
    pub fn remaps_rows(&self) -> bool {
        self.profile.architecture.nvml_value() >= fakegpu_model::profile::Architecture::Ampere.nvml_value()
    }
}

/// The CPUs of the host this process runs on, as the kernel reports them online.
fn online_cpus() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 {
        n as u64
    } else {
        1
    }
}
