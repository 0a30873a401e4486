//! The Linux sysfs view of a simulated node's GPUs: what `/sys/bus/pci/devices/<address>/`
//! would hold for each GPU, and the machine's DMI product name. Tools that look past NVML at
//! the PCI bus (NVIDIA's gpu-feature-discovery and device plugin, via go-nvlib's nvpci) read
//! these files; they are derived from the same identities the fake NVML reports (bus ids,
//! PCI ids, NUMA nodes, BAR1 size), so both views of a GPU agree. Pure: the caller writes the
//! files wherever it mounts them.

use crate::node::SimulatedNode;

/// PCI class code (`class` file, base class / subclass / prog-if) of a 3D controller: every
/// built-in board is a data-center part without a VGA function, and enumerates as one.
pub const PCI_CLASS_3D_CONTROLLER: u32 = 0x030200;
/// PCI class code of a VGA-compatible controller (a board that drives displays).
pub const PCI_CLASS_VGA_CONTROLLER: u32 = 0x030000;

/// The DMI product name (`/sys/class/dmi/id/product_name`) of a simulated machine: it is no
/// vendor's server, so it says what it is.
pub const MACHINE_PRODUCT_NAME: &str = "fake-gpu-operator";

/// BAR0 (registers) and BAR3 (the second 64-bit window) of NVIDIA data-center GPUs.
const BAR0_BYTES: u64 = 16 << 20;
const BAR3_BYTES: u64 = 32 << 20;
/// Flags the kernel prints for a 32-bit non-prefetchable and a 64-bit prefetchable window.
const FLAGS_MEM32: u64 = 0x0004_0200;
const FLAGS_MEM64_PREFETCH: u64 = 0x0014_220c;
/// Lines of the `resource` file: six BARs and the expansion ROM.
const RESOURCE_LINES: usize = 7;

/// One file under the PCI devices directory, path relative to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysfsFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// The class code a GPU of this board enumerates with.
pub fn pci_class(_profile: &crate::profile::Profile) -> u32 {
    PCI_CLASS_3D_CONTROLLER
}

/// The sysfs directory name of a PCI address: `%04x:%02x:%02x.%x`, lower case.
pub fn sysfs_address(a: &crate::identity::PciAddress) -> String {
    format!("{:04x}:{:02x}:{:02x}.{:x}", a.domain, a.bus, a.device, a.function)
}

/// The files of every GPU of `node` under `/sys/bus/pci/devices`: `vendor`, `device`,
/// `subsystem_vendor`, `subsystem_device`, `class`, `numa_node`, `resource` and `config`
/// (the 256-byte configuration header, without a capability list: these are physical GPUs,
/// no vGPU capability to find).
pub fn pci_devices(node: &SimulatedNode) -> Vec<SysfsFile> {
    let p = &node.spec.profile;
    let (vendor, device) = (p.pci.device_id.0 & 0xffff, p.pci.device_id.0 >> 16);
    let (sub_vendor, sub_device) = (p.pci.subsystem_id.0 & 0xffff, p.pci.subsystem_id.0 >> 16);
    let class = pci_class(p);
    let placement = node.spec.numa_placement();
    let bar1 = p.memory.bar1_total_mib << 20;
    let mut out = Vec::new();
    for (slot, g) in node.gpus.iter().enumerate() {
        let dir = sysfs_address(&g.pci);
        let file = |name: &str, contents: Vec<u8>| SysfsFile { path: format!("{dir}/{name}"), contents };
        // Windows laid out from a per-GPU base so no two GPUs overlap; the addresses are not
        // reported anywhere else, only the sizes mean something.
        let base = 0x1_0000_0000_u64 + (slot as u64) * (bar1 + BAR3_BYTES + (1 << 30)).next_power_of_two();
        let mut bars = [(0u64, 0u64, 0u64); RESOURCE_LINES];
        bars[0] = (0xa000_0000 + (slot as u64) * BAR0_BYTES, BAR0_BYTES, FLAGS_MEM32);
        bars[1] = (base, bar1, FLAGS_MEM64_PREFETCH);
        bars[3] = (base + bar1, BAR3_BYTES, FLAGS_MEM64_PREFETCH);
        let resource: String = bars
            .iter()
            .map(|&(start, size, flags)| {
                let (s, e) = if size == 0 { (0, 0) } else { (start, start + size - 1) };
                format!("0x{s:016x} 0x{e:016x} 0x{flags:016x}\n")
            })
            .collect();
        let mut config = vec![0u8; 256];
        config[0..2].copy_from_slice(&(vendor as u16).to_le_bytes());
        config[2..4].copy_from_slice(&(device as u16).to_le_bytes());
        // Command: memory space and bus master enabled; status: no capability list.
        config[4..6].copy_from_slice(&0x0006u16.to_le_bytes());
        config[9..12].copy_from_slice(&class.to_le_bytes()[..3]);
        config[0x2c..0x2e].copy_from_slice(&(sub_vendor as u16).to_le_bytes());
        config[0x2e..0x30].copy_from_slice(&(sub_device as u16).to_le_bytes());
        out.extend([
            file("vendor", format!("0x{vendor:04x}\n").into_bytes()),
            file("device", format!("0x{device:04x}\n").into_bytes()),
            file("subsystem_vendor", format!("0x{sub_vendor:04x}\n").into_bytes()),
            file("subsystem_device", format!("0x{sub_device:04x}\n").into_bytes()),
            file("class", format!("0x{class:06x}\n").into_bytes()),
            file("numa_node", format!("{}\n", placement.zone_of(g.index)).into_bytes()),
            file("resource", resource.into_bytes()),
            file("config", config),
        ]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeSpec;

    fn read<'a>(files: &'a [SysfsFile], path: &str) -> &'a str {
        std::str::from_utf8(&files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{path}")).contents).unwrap()
    }

    #[test]
    fn h100_node_files_follow_the_nvml_identity() {
        let node = SimulatedNode::new(NodeSpec::builtin("h100", Some(8), "n").unwrap());
        let files = pci_devices(&node);
        assert_eq!(files.len(), 8 * 8);
        // NVML says 00000000:53:00.0 for GPU 0; sysfs names it 0000:53:00.0.
        assert_eq!(node.gpus[0].pci.bus_id(), "00000000:53:00.0");
        assert_eq!(read(&files, "0000:53:00.0/vendor"), "0x10de\n");
        assert_eq!(read(&files, "0000:53:00.0/device"), "0x2330\n");
        assert_eq!(read(&files, "0000:53:00.0/subsystem_device"), "0x16c1\n");
        assert_eq!(read(&files, "0000:53:00.0/class"), "0x030200\n");
        // Two halves by default: GPUs 0-3 on node 0, 4-7 on node 1.
        assert_eq!(read(&files, "0000:53:00.0/numa_node"), "0\n");
        assert_eq!(read(&files, "0000:ca:00.0/numa_node"), "1\n");
        let res = read(&files, "0000:53:00.0/resource");
        assert_eq!(res.lines().count(), RESOURCE_LINES);
        let bar1: Vec<u64> = res.lines().nth(1).unwrap().split(' ').map(|v| u64::from_str_radix(&v[2..], 16).unwrap()).collect();
        assert_eq!(bar1[1] - bar1[0] + 1, node.spec.profile.memory.bar1_total_mib << 20);
        let config = &files.iter().find(|f| f.path == "0000:53:00.0/config").unwrap().contents;
        assert_eq!((config.len(), &config[0..4], config[6] & 0x10), (256, &[0xde, 0x10, 0x30, 0x23][..], 0));
    }

    #[test]
    fn bars_of_different_gpus_do_not_overlap() {
        let node = SimulatedNode::new(NodeSpec::builtin("gb300", Some(4), "n").unwrap());
        let files = pci_devices(&node);
        let mut windows: Vec<(u64, u64)> = files
            .iter()
            .filter(|f| f.path.ends_with("/resource"))
            .flat_map(|f| std::str::from_utf8(&f.contents).unwrap().lines().map(str::to_string).collect::<Vec<_>>())
            .map(|l| {
                let v: Vec<u64> = l.split(' ').map(|v| u64::from_str_radix(&v[2..], 16).unwrap()).collect();
                (v[0], v[1])
            })
            .filter(|w| w.1 != 0)
            .collect();
        windows.sort();
        assert!(windows.windows(2).all(|w| w[0].1 < w[1].0), "{windows:x?}");
        assert!(files.iter().any(|f| f.path.starts_with("0019:06:00.0/")), "PCI domains above 0");
    }
}
