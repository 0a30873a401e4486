//! The ResourceSlice device of each device a node offers ([`crate::kubelet::devices`]), with
//! the attribute names and types of NVIDIA's DRA driver for GPUs, so its DeviceClass CEL
//! selectors (`device.attributes['gpu.nvidia.com'].productName == '…'`) work unchanged. GPUs
//! are named `gpu-<uuid>` lower-case (as upstream fake-gpu-operator; docs/operator-interfaces.md
//! §2); a MIG device after its parent as NVIDIA's driver does,
//! `<parent>-mig-<GI profile id>-<placement start>-<placement size>`.
//!
//! On a node whose pool has a `numa` block, every device also carries [`NUMA_ATTRIBUTE`], the
//! zone of its GPU (a MIG device its parent's) from the model's layout — the one the fake NVML,
//! the NodeResourceTopology and podresources use. NVIDIA's driver publishes no NUMA attribute for
//! GPUs (only a driver-local `numa` on its VFIO devices); the Kubernetes standard name lets a
//! claim's `matchAttribute` line GPUs up with other drivers' devices (CPUs, NICs) of one zone.

use std::collections::BTreeMap;

use fakegpu_model::mig::MigDevice;
use fakegpu_model::state::NodeState;
use fakegpu_model::{GpuIdentity, SimulatedNode};
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, DeviceCapacity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::kubelet::devices::{self, NodeDevice};

/// Kubernetes' standard attribute for a device's NUMA node (an int), set only with a layout.
pub const NUMA_ATTRIBUTE: &str = "resource.kubernetes.io/numaNode";

/// `type` of a whole GPU and of a MIG device.
pub const GPU_TYPE: &str = "gpu";
pub const MIG_TYPE: &str = "mig";

/// `gpu-<uuid>`: the DRA device name of a GPU.
pub fn device_name(uuid: &str) -> String {
    uuid.to_ascii_lowercase()
}

/// A semantic version from a dotted version, leading zeros dropped (`535.261.03` → `535.261.3`), padded to 3 parts.
pub fn semver(text: &str) -> String {
    let mut parts: Vec<String> = text.split('.').take(3).map(|p| p.trim_start_matches('0').to_string()).collect();
    for p in &mut parts {
        if p.is_empty() {
            *p = "0".into();
        }
    }
    while parts.len() < 3 {
        parts.push("0".into());
    }
    parts.join(".")
}

/// A byte count as the API server canonicalises a binary quantity (`81920Mi` → `80Gi`).
pub fn binary_quantity(bytes: u64) -> Quantity {
    const SUFFIXES: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    if bytes < 1024 {
        return Quantity(bytes.to_string());
    }
    let (mut value, mut suffix) = (bytes, "");
    for s in SUFFIXES {
        if value % 1024 != 0 {
            break;
        }
        value /= 1024;
        suffix = s;
    }
    Quantity(format!("{value}{suffix}"))
}

fn string(v: impl Into<String>) -> DeviceAttribute {
    DeviceAttribute { string: Some(v.into()), ..Default::default() }
}
fn version(v: impl Into<String>) -> DeviceAttribute {
    DeviceAttribute { version: Some(v.into()), ..Default::default() }
}
fn int(v: i64) -> DeviceAttribute {
    DeviceAttribute { int: Some(v), ..Default::default() }
}

/// What a GPU and the MIG devices carved from it share: the board's and the driver's.
fn board_attributes(node: &SimulatedNode, gpu: &GpuIdentity, kind: &str) -> BTreeMap<String, DeviceAttribute> {
    let spec = &node.spec;
    let p = &spec.profile;
    let cuda = spec.cuda_driver_version;
    let mut attributes = BTreeMap::new();
    attributes.insert("type".to_string(), string(kind));
    attributes.insert("productName".into(), string(&p.product_name));
    attributes.insert("brand".into(), string(p.brand.display()));
    attributes.insert("architecture".into(), string(p.architecture.display()));
    attributes.insert("cudaComputeCapability".into(), version(format!("{}.{}.0", p.compute_capability.major, p.compute_capability.minor)));
    attributes.insert("driverVersion".into(), version(semver(&spec.driver_version)));
    attributes.insert("cudaDriverVersion".into(), version(format!("{}.{}.0", cuda / 1000, (cuda % 1000) / 10)));
    attributes.insert("pcieBusID".into(), string(gpu.pci.bus_id_legacy().to_ascii_lowercase()));
    if spec.numa.is_some() {
        attributes.insert(NUMA_ATTRIBUTE.into(), int(i64::from(spec.numa_placement().zone_of(gpu.index))));
    }
    attributes
}

fn capacity(value: Quantity) -> DeviceCapacity {
    DeviceCapacity { value, request_policy: None }
}

/// The slice device of one GPU of `node`.
pub fn gpu_device(node: &SimulatedNode, gpu: &GpuIdentity) -> Device {
    let mut attributes = board_attributes(node, gpu, GPU_TYPE);
    attributes.insert("uuid".into(), string(&gpu.uuid));
    attributes.insert("index".into(), int(i64::from(gpu.index)));
    attributes.insert("minor".into(), int(i64::from(gpu.minor_number)));
    let memory = BTreeMap::from([("memory".to_string(), capacity(binary_quantity(node.spec.profile.memory.total_mib * 1024 * 1024)))]);
    Device { name: device_name(&gpu.uuid), attributes: Some(attributes), capacity: Some(memory), ..Default::default() }
}

/// NVIDIA's name of a MIG device, after its parent's (`gpu-<uuid>-mig-19-3-1` for a `1g.10gb`
/// GPU instance at memory slice 3). NVIDIA's driver only makes compute instances as big as their
/// GPU instance; a smaller one (a layout made with nvidia-smi) adds `-ci-<CI id>` to stay unique.
pub fn mig_device_name(m: &MigDevice) -> String {
    let mut name = format!("{}-mig-{}-{}-{}", device_name(&m.parent_uuid), m.gi_profile.id, m.placement.start, m.placement.size);
    if m.ci_profile.slices != m.gi_profile.compute_slices {
        name.push_str(&format!("-ci-{}", m.compute_instance));
    }
    name
}

/// The slice device of one MIG device of `node`: NVIDIA's MIG attributes (`parentUUID`,
/// `profile`, `index` among the parent's MIG devices, `parentIndex`) and its GPU instance's
/// engines and memory slices as capacity.
pub fn mig_device(node: &SimulatedNode, m: &MigDevice) -> Device {
    let parent = &node.gpus[m.parent_index as usize];
    let mut attributes = board_attributes(node, parent, MIG_TYPE);
    attributes.insert("uuid".into(), string(&m.uuid));
    attributes.insert("parentUUID".into(), string(&m.parent_uuid));
    attributes.insert("profile".into(), string(m.profile()));
    attributes.insert("index".into(), int(i64::from(m.index)));
    attributes.insert("parentIndex".into(), int(i64::from(m.parent_index)));
    let g = &m.gi_profile;
    let count = |n: u32| capacity(Quantity(n.to_string()));
    let mut capacity_map = BTreeMap::from([
        ("multiprocessors".to_string(), count(g.multiprocessors)),
        ("copyEngines".to_string(), count(g.copy_engines)),
        ("decoders".to_string(), count(g.decoders)),
        ("encoders".to_string(), count(g.encoders)),
        ("jpegEngines".to_string(), count(g.jpegs)),
        ("ofaEngines".to_string(), count(g.ofas)),
        ("memory".to_string(), capacity(binary_quantity(m.memory_bytes()))),
    ]);
    for slice in m.placement.start..m.placement.start + m.placement.size {
        capacity_map.insert(format!("memorySlice{slice}"), count(1));
    }
    Device { name: mig_device_name(m), attributes: Some(attributes), capacity: Some(capacity_map), ..Default::default() }
}

/// The slice name of an offered device.
pub fn name_of(d: &NodeDevice) -> String {
    match d {
        NodeDevice::Gpu(g) => device_name(&g.uuid),
        NodeDevice::Mig(m) => mig_device_name(m),
    }
}

/// Every GPU of a node without live state (no MIG), in index order.
pub fn node_devices(node: &SimulatedNode) -> Vec<Device> {
    pool_devices(node, &NodeState::default())
}

/// Every device the node offers under the live `state` (GPUs in index order; a MIG-enabled
/// GPU as its MIG devices).
pub fn pool_devices(node: &SimulatedNode, state: &NodeState) -> Vec<Device> {
    devices::offered(node, state)
        .iter()
        .map(|d| match d {
            NodeDevice::Gpu(g) => gpu_device(node, g),
            NodeDevice::Mig(m) => mig_device(node, m),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::NodeSpec;

    #[test]
    fn versions_and_quantities_are_canonical() {
        assert_eq!(semver("535.261.03"), "535.261.3");
        assert_eq!(semver("12.2"), "12.2.0");
        assert_eq!(binary_quantity(80 << 30).0, "80Gi");
        assert_eq!(binary_quantity(81559 << 20).0, "81559Mi");
        assert_eq!(binary_quantity(512).0, "512");
    }

    #[test]
    fn h100_device_attributes() {
        let node = SimulatedNode::new(NodeSpec::builtin("h100", Some(2), "n1").unwrap());
        let d = gpu_device(&node, &node.gpus[1]);
        let a = d.attributes.as_ref().unwrap();
        assert_eq!(d.name, node.gpus[1].uuid.to_ascii_lowercase());
        assert_eq!(a["uuid"].string.as_deref(), Some(node.gpus[1].uuid.as_str()));
        assert_eq!(a["index"].int, Some(1));
        assert_eq!(a["architecture"].string.as_deref(), Some("Hopper"));
        assert_eq!(a["cudaComputeCapability"].version.as_deref(), Some("9.0.0"));
        assert_eq!(a["cudaDriverVersion"].version.as_deref(), Some("12.2.0"));
        assert_eq!(a["driverVersion"].version.as_deref(), Some("535.261.3"));
        assert!(a["pcieBusID"].string.as_deref().unwrap().starts_with("0000:"));
    }

    /// The driver attributes are the node's: a B200 node states its profile's 580 driver and
    /// CUDA 13.0, a node config that overrides them its own.
    #[test]
    fn driver_attributes_follow_the_node() {
        let node = SimulatedNode::new(NodeSpec::builtin("b200", Some(1), "n1").unwrap());
        let a = gpu_device(&node, &node.gpus[0]).attributes.unwrap();
        assert_eq!(a["driverVersion"].version.as_deref(), Some("580.105.8"));
        assert_eq!(a["cudaDriverVersion"].version.as_deref(), Some("13.0.0"));
        let mut spec = NodeSpec::builtin("b200", Some(1), "n1").unwrap();
        (spec.driver_version, spec.cuda_driver_version) = ("575.57.08".into(), 12090);
        let node = SimulatedNode::new(spec);
        let a = gpu_device(&node, &node.gpus[0]).attributes.unwrap();
        assert_eq!(a["driverVersion"].version.as_deref(), Some("575.57.8"));
        assert_eq!(a["cudaDriverVersion"].version.as_deref(), Some("12.9.0"));
    }

    #[test]
    fn numa_attribute_follows_the_layout_and_is_absent_without_one() {
        let plain = SimulatedNode::new(NodeSpec::builtin("h100", Some(4), "n1").unwrap());
        assert!(node_devices(&plain).iter().all(|d| !d.attributes.as_ref().unwrap().contains_key(NUMA_ATTRIBUTE)));
        let mut spec = NodeSpec::builtin("h100", Some(6), "n1").unwrap();
        spec.numa = Some(fakegpu_model::numa::NumaLayout { zones: 4, gpus_per_zone: None, cpus_per_zone: None });
        let node = SimulatedNode::new(spec);
        let zones: Vec<Option<i64>> = node_devices(&node).iter().map(|d| d.attributes.as_ref().unwrap()[NUMA_ATTRIBUTE].int).collect();
        // 6 GPUs over 4 zones: 2, 2, 1, 1.
        assert_eq!(zones, [0, 0, 1, 1, 2, 3].map(Some));
        // A MIG device is in its parent's zone.
        let mut spec = NodeSpec::builtin("h100", Some(4), "n1").unwrap();
        spec.numa = Some(fakegpu_model::numa::NumaLayout { zones: 2, gpus_per_zone: Some(vec![1, 3]), cpus_per_zone: None });
        let (mig_node, state) = crate::kubelet::devices::tests::node_with_mig("h100", 4, "n1", &[2], "all-1g.10gb");
        let node = SimulatedNode::new(NodeSpec { numa: spec.numa.clone(), ..mig_node.spec.clone() });
        let devices = pool_devices(&node, &state);
        let mig = devices.iter().find(|d| d.attributes.as_ref().unwrap()["type"].string.as_deref() == Some(MIG_TYPE)).unwrap();
        assert_eq!(mig.attributes.as_ref().unwrap()[NUMA_ATTRIBUTE].int, Some(1));
        assert_eq!(devices[0].attributes.as_ref().unwrap()[NUMA_ATTRIBUTE].int, Some(0));
    }

    #[test]
    fn mig_devices_carry_nvidias_attributes_with_the_models_values() {
        let (node, state) = crate::kubelet::devices::tests::node_with_mig("h100", 2, "n1", &[1], "all-1g.10gb");
        let devices = pool_devices(&node, &state);
        assert_eq!(node_devices(&node).len(), 2, "without live state every GPU is whole");
        // GPU 0 whole, GPU 1 as seven MIG devices and not whole.
        assert_eq!(devices.len(), 8);
        assert_eq!(devices[0].name, device_name(&node.gpus[0].uuid));
        assert!(devices.iter().all(|d| d.name != device_name(&node.gpus[1].uuid)));
        let migs = node.mig_devices(&state);
        let m = &migs[2];
        let d = &devices[3];
        let a = d.attributes.as_ref().unwrap();
        let c = d.capacity.as_ref().unwrap();
        assert_eq!(d.name, format!("{}-mig-19-{}-1", node.gpus[1].uuid.to_lowercase(), m.placement.start));
        assert!(d.name.len() <= 63, "a DNS label");
        assert_eq!(a["type"].string.as_deref(), Some("mig"));
        assert_eq!(a["uuid"].string.as_deref(), Some(m.uuid.as_str()));
        assert_eq!(a["parentUUID"].string.as_deref(), Some(node.gpus[1].uuid.as_str()));
        assert_eq!(a["profile"].string.as_deref(), Some("1g.10gb"));
        assert_eq!((a["index"].int, a["parentIndex"].int), (Some(2), Some(1)));
        assert_eq!(a["productName"].string, gpu_device(&node, &node.gpus[1]).attributes.unwrap()["productName"].string);
        assert_eq!(a["pcieBusID"].string.as_deref(), Some(node.gpus[1].pci.bus_id_legacy().to_lowercase().as_str()));
        assert_eq!(a["cudaComputeCapability"].version.as_deref(), Some("9.0.0"));
        assert_eq!(c["memory"].value, binary_quantity(m.gi_profile.memory_mib << 20));
        assert_eq!(c["memory"].value.0, "9984Mi");
        assert_eq!(c["multiprocessors"].value.0, m.gi_profile.multiprocessors.to_string());
        assert_eq!(c["multiprocessors"].value.0, "16");
        assert_eq!(c["copyEngines"].value.0, m.gi_profile.copy_engines.to_string());
        assert_eq!(c["decoders"].value.0, m.gi_profile.decoders.to_string());
        assert_eq!(c["jpegEngines"].value.0, m.gi_profile.jpegs.to_string());
        assert_eq!(c[&format!("memorySlice{}", m.placement.start)].value.0, "1");
        assert_eq!(c.keys().filter(|k| k.starts_with("memorySlice")).count(), 1);
        // Names are unique across the pool.
        let names: std::collections::BTreeSet<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names.len(), devices.len());
    }
}
