//! The ResourceSlice device of each simulated GPU, with the attribute names and types of
//! NVIDIA's DRA driver for GPUs, so its DeviceClass CEL selectors
//! (`device.attributes['gpu.nvidia.com'].productName == '…'`) work unchanged. Device names are
//! `gpu-<uuid>` lower-case (as upstream fake-gpu-operator; docs/operator-interfaces.md §2).

use std::collections::BTreeMap;

use fakegpu_model::{GpuIdentity, SimulatedNode};
use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, DeviceCapacity};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

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

/// The slice device of one GPU of `node`.
pub fn gpu_device(node: &SimulatedNode, gpu: &GpuIdentity) -> Device {
    let spec = &node.spec;
    let p = &spec.profile;
    let cuda = spec.cuda_driver_version;
    let mut attributes = BTreeMap::new();
    attributes.insert("type".to_string(), string("gpu"));
    attributes.insert("uuid".into(), string(&gpu.uuid));
    attributes.insert("productName".into(), string(&p.product_name));
    attributes.insert("brand".into(), string(p.brand.display()));
    attributes.insert("architecture".into(), string(p.architecture.display()));
    attributes.insert("cudaComputeCapability".into(), version(format!("{}.{}.0", p.compute_capability.major, p.compute_capability.minor)));
    attributes.insert("driverVersion".into(), version(semver(&spec.driver_version)));
    attributes.insert("cudaDriverVersion".into(), version(format!("{}.{}.0", cuda / 1000, (cuda % 1000) / 10)));
    attributes.insert("pcieBusID".into(), string(gpu.pci.bus_id_legacy().to_ascii_lowercase()));
    attributes.insert("index".into(), int(i64::from(gpu.index)));
    attributes.insert("minor".into(), int(i64::from(gpu.minor_number)));
    let mut capacity = BTreeMap::new();
    capacity
        .insert("memory".to_string(), DeviceCapacity { value: binary_quantity(p.memory.total_mib * 1024 * 1024), request_policy: None });
    Device { name: device_name(&gpu.uuid), attributes: Some(attributes), capacity: Some(capacity), ..Default::default() }
}

/// Every GPU of the node, in index order.
pub fn node_devices(node: &SimulatedNode) -> Vec<Device> {
    node.gpus.iter().map(|g| gpu_device(node, g)).collect()
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
}
