//! Per-GPU identities: UUID, serial, PCI address, minor number.
//!
//! They are a pure function of (node name, GPU index) so that every process on a
//! node — the fake NVML in each container, the operator, the kubelet plugins and
//! the metrics exporter — names the same GPU the same way without talking to each other.

use std::fmt;

/// Bus numbers of a common 8-GPU server, used when a profile gives none.
const DEFAULT_BUS_IDS: [u32; 8] = [0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB];

/// A PCI address; GPUs are always device 0, function 0 on their own bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u32,
    pub bus: u32,
    pub device: u32,
    pub function: u32,
}

impl PciAddress {
    /// NVML's bus id, `%08X:%02X:%02X.%X` (e.g. `00000000:18:00.0`).
    pub fn bus_id(&self) -> String {
        format!("{:08X}:{:02X}:{:02X}.{:X}", self.domain, self.bus, self.device, self.function)
    }

    /// The legacy 16-byte form, `%04X:%02X:%02X.%X`.
    pub fn bus_id_legacy(&self) -> String {
        format!("{:04X}:{:02X}:{:02X}.{:X}", self.domain, self.bus, self.device, self.function)
    }

    /// `nvmlDeviceGetBoardId` as every capture shows it: `(domain << 16) | (bus << 8) | device`.
    pub fn board_id(&self) -> u32 {
        (self.domain << 16) | (self.bus << 8) | self.device
    }

    /// Parses the forms clients pass to `nvmlDeviceGetHandleByPciBusId`:
    /// `domain:bus:device.function` with 4 or 8 domain digits, `bus:device.function`, any case.
    pub fn parse(text: &str) -> Option<PciAddress> {
        let text = text.trim();
        let (head, function) = text.rsplit_once('.')?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (u32::from_str_radix(d, 16).ok()?, *b, *v),
            [b, v] => (0, *b, *v),
            _ => return None,
        };
        Some(PciAddress {
            domain,
            bus: u32::from_str_radix(bus, 16).ok().filter(|b| *b <= 0xFF)?,
            device: u32::from_str_radix(device, 16).ok().filter(|d| *d <= 0x1F)?,
            function: u32::from_str_radix(function, 16).ok().filter(|f| *f <= 7)?,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.bus_id())
    }
}

/// Everything that names one GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuIdentity {
    pub index: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower-case hex, never the nil UUID.
    pub uuid: String,
    /// 13 decimal digits, as NVIDIA boards print them.
    pub serial: String,
    pub pci: PciAddress,
    pub minor_number: u32,
    /// `nvmlDeviceGetBoardId`: the bus number shifted as real boards report it.
    pub board_id: u32,
    /// `nvmlDeviceGetModuleId`: 1-based slot.
    pub module_id: u32,
}

/// Computes the identity of GPU `index` on `node`. `bus_ids` is the profile's bus layout.
pub fn gpu_identity(node: &str, index: u32, bus_ids: &[u32]) -> GpuIdentity {
    let layout: &[u32] = if bus_ids.is_empty() { &DEFAULT_BUS_IDS } else { bus_ids };
    let per_domain = layout.len() as u32;
    let pci = PciAddress { domain: index / per_domain, bus: layout[(index % per_domain) as usize], device: 0, function: 0 };
    let serial_digits = stable_hash(&["serial", node, &index.to_string()]) % 1_000_000_000_000;
    GpuIdentity {
        index,
        uuid: format_uuid("GPU-", uuid_bytes(&["gpu", node, &index.to_string()])),
        serial: format!("1{serial_digits:012}"),
        pci,
        minor_number: index,
        board_id: pci.board_id(),
        module_id: index % per_domain + 1,
    }
}

/// 16 stable pseudo-random bytes for `parts`, shaped as an RFC 4122 version-4 UUID so
/// that tools validating UUIDs accept them.
pub fn uuid_bytes(parts: &[&str]) -> [u8; 16] {
    let hi = stable_hash(&[&["uuid-hi"], parts].concat());
    let lo = stable_hash(&[&["uuid-lo"], parts].concat());
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hi.to_be_bytes());
    bytes[8..].copy_from_slice(&lo.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    bytes
}

/// Formats 16 bytes as `prefix` + the 8-4-4-4-12 hex groups.
pub fn format_uuid(prefix: &str, b: [u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// FNV-1a over the parts (each terminated by a NUL, so `["ab","c"]` ≠ `["a","bc"]`),
/// finished with a SplitMix64 mix. Stable across builds, platforms and Rust versions,
/// unlike `std`'s hashers.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(std::iter::once(&0u8)) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn identities_are_deterministic_and_distinct() {
        let a = gpu_identity("node-a", 3, &[]);
        assert_eq!(a, gpu_identity("node-a", 3, &[]));
        let mut uuids = HashSet::new();
        let mut serials = HashSet::new();
        for node in ["node-a", "node-b", "kwok-node-17"] {
            for i in 0..256 {
                let id = gpu_identity(node, i, &[]);
                assert!(uuids.insert(id.uuid.clone()), "duplicate uuid {}", id.uuid);
                assert!(serials.insert(id.serial.clone()), "duplicate serial {}", id.serial);
                assert_eq!(id.serial.len(), 13);
                assert!(id.uuid.len() == 40 && id.uuid.starts_with("GPU-"));
                assert_ne!(&id.uuid[4..], "00000000-0000-0000-0000-000000000000");
            }
        }
    }

    #[test]
    fn uuid_is_lowercase_hex_v4() {
        let id = gpu_identity("n", 0, &[]);
        let body = &id.uuid[4..];
        assert!(body.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(&body[14..15], "4");
    }

    #[test]
    fn pci_addresses_ascend_with_index() {
        let addrs: Vec<PciAddress> = (0..40).map(|i| gpu_identity("n", i, &[0x53, 0x64]).pci).collect();
        assert!(addrs.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(addrs[0].bus_id(), "00000000:53:00.0");
        assert_eq!(addrs[3].bus_id(), "00000001:64:00.0");
        assert_eq!(gpu_identity("n", 0, &[0x53]).board_id, 0x5300);
    }

    #[test]
    fn pci_parse_accepts_client_forms() {
        let want = PciAddress { domain: 0, bus: 0x18, device: 0, function: 0 };
        for text in ["00000000:18:00.0", "0000:18:00.0", "18:00.0", "0000:18:00.0 "] {
            assert_eq!(PciAddress::parse(text), Some(want), "{text}");
        }
        for bad in ["", "18:00", "zz:00.0", "0000:100:00.0", "0:18:00.9"] {
            assert_eq!(PciAddress::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        // Pinned: a change of the function would rename every GPU of every deployed node.
        let id = gpu_identity("node-a", 0, &[]);
        assert_eq!(id.uuid, "GPU-e3d167f4-26a5-4799-ad0a-21c54e7b01d1");
        assert_eq!(id.serial, "1641256698973");
    }
}
