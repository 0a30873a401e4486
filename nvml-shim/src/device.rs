//! One simulated GPU as the exports see it: its identity, its profile, the strings the
//! getters hand out (prepared once so that a getter is a copy), and its readings.

use std::ffi::CString;
use std::sync::Arc;

use fakegpu_model::telemetry::{self, Load, Readings};
use fakegpu_model::{GpuIdentity, NodeSpec, Profile};

use crate::runtime::cstring;

pub(crate) struct Device {
    pub id: GpuIdentity,
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
    /// NUMA node of the GPU: the first half of a node's GPUs on node 0, the rest on 1.
    pub numa_node: u32,
}

impl Device {
    pub fn new(spec: &NodeSpec, id: GpuIdentity) -> Device {
        let profile = Arc::new(spec.profile.clone());
        Device {
            name: cstring(&profile.product_name),
            uuid: cstring(&id.uuid),
            serial: cstring(&id.serial),
            bus_id: id.pci.bus_id(),
            bus_id_legacy: id.pci.bus_id_legacy(),
            vbios: cstring(&profile.vbios_version),
            board_part_number: cstring(&profile.board_part_number),
            inforom_image: cstring(&profile.inforom.image),
            gsp_version: profile.gsp_firmware.then(|| cstring(&spec.driver_version)),
            numa_node: if spec.gpu_count > 1 { id.index * 2 / spec.gpu_count } else { 0 },
            profile,
            id,
        }
    }

    /// What the GPU reads now.
    pub fn readings(&self) -> Readings {
        telemetry::readings(&self.profile, &Load::default())
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
