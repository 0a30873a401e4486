//! Which writes bring a pool's ResourceSlices to the wanted devices. One pool per node
//! (pool name = node name, `spec.nodeName` = node), at most [`MAX_DEVICES_PER_SLICE`] devices
//! per slice, deterministic slice names. Nothing is written when the slices already hold the
//! wanted content; otherwise every slice is rewritten with the pool generation bumped (the
//! scheduler ignores older generations) and slices no longer needed are deleted last.

use k8s_openapi::api::resource::v1::{Device, ResourcePool, ResourceSlice, ResourceSliceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::DRIVER;

pub const MAX_DEVICES_PER_SLICE: usize = 128;
/// Label put on every slice this operator writes (its owner, for listing).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "fake-gpu-operator";
/// Which publisher wrote a slice: `node` (the node-local plugin) or `kwok` (the central one).
pub const PUBLISHER_LABEL: &str = "fake-gpu-operator.run.ai/publisher";

/// One write.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create or replace (server-side apply) this slice.
    Apply(Box<ResourceSlice>),
    /// Delete the slice of this name.
    Delete(String),
}

/// The name of slice `i` of `node`'s pool. The central KWOK publisher uses upstream
/// kwok-dra-plugin's name, `kwok-<node>-gpu` (further slices of a pool over 128 devices:
/// `-<i>`), which upstream's tests and users' scripts look up.
pub fn slice_name(node: &str, i: usize, publisher: &str) -> String {
    driver_slice_name(DRIVER, node, i, publisher)
}

/// The name of slice `i` of `node`'s pool of `driver` (compute-domain.nvidia.com has no
/// upstream KWOK name to keep).
pub fn driver_slice_name(driver: &str, node: &str, i: usize, publisher: &str) -> String {
    match (driver == DRIVER && publisher == super::kwok::PUBLISHER, i) {
        (true, 0) => format!("kwok-{node}-gpu"),
        (true, _) => format!("kwok-{node}-gpu-{i}"),
        (false, _) => format!("{node}-{}-{i}", driver.replace('.', "-")),
    }
}

/// The slices that hold `devices` for `node` at `generation`.
pub fn desired(node: &str, devices: &[Device], generation: i64, owner: Option<&OwnerReference>, publisher: &str) -> Vec<ResourceSlice> {
    driver_desired(DRIVER, node, devices, generation, owner, publisher)
}

/// [`desired`] for the pool of another driver (compute-domain.nvidia.com).
pub fn driver_desired(
    driver: &str,
    node: &str,
    devices: &[Device],
    generation: i64,
    owner: Option<&OwnerReference>,
    publisher: &str,
) -> Vec<ResourceSlice> {
    let chunks: Vec<&[Device]> = if devices.is_empty() { vec![&[]] } else { devices.chunks(MAX_DEVICES_PER_SLICE).collect() };
    let count = chunks.len() as i64;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| ResourceSlice {
            metadata: ObjectMeta {
                name: Some(driver_slice_name(driver, node, i, publisher)),
                labels: Some(
                    [(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()), (PUBLISHER_LABEL.to_string(), publisher.to_string())].into(),
                ),
                owner_references: owner.map(|o| vec![o.clone()]),
                ..Default::default()
            },
            spec: ResourceSliceSpec {
                driver: driver.into(),
                node_name: Some(node.into()),
                pool: ResourcePool { name: node.into(), generation, resource_slice_count: count },
                devices: (!chunk.is_empty()).then(|| chunk.to_vec()),
                ..Default::default()
            },
        })
        .collect()
}

fn same_content(have: &ResourceSlice, want: &ResourceSlice) -> bool {
    let (h, w) = (&have.spec, &want.spec);
    have.metadata.name == want.metadata.name
        && h.driver == w.driver
        && h.node_name == w.node_name
        && h.pool.name == w.pool.name
        && h.pool.resource_slice_count == w.pool.resource_slice_count
        && h.devices.as_deref().unwrap_or_default() == w.devices.as_deref().unwrap_or_default()
        && (want.metadata.owner_references.is_none() || have.metadata.owner_references == want.metadata.owner_references)
}

/// The writes that turn `existing` (the pool's slices as listed) into slices holding `devices`.
pub fn plan(node: &str, devices: &[Device], existing: &[ResourceSlice], owner: Option<&OwnerReference>, publisher: &str) -> Vec<Op> {
    driver_plan(DRIVER, node, devices, existing, owner, publisher)
}

/// [`plan`] for the pool of another driver.
pub fn driver_plan(
    driver: &str,
    node: &str,
    devices: &[Device],
    existing: &[ResourceSlice],
    owner: Option<&OwnerReference>,
    publisher: &str,
) -> Vec<Op> {
    let generation = existing.iter().map(|s| s.spec.pool.generation).max();
    let want = driver_desired(driver, node, devices, generation.unwrap_or(0), owner, publisher);
    let one_generation = existing.iter().all(|s| Some(s.spec.pool.generation) == generation);
    let unchanged = existing.len() == want.len() && one_generation && want.iter().all(|w| existing.iter().any(|h| same_content(h, w)));
    if unchanged {
        return Vec::new();
    }
    let next = generation.map_or(0, |g| g + 1);
    let want = driver_desired(driver, node, devices, next, owner, publisher);
    let mut ops: Vec<Op> = want.iter().cloned().map(|s| Op::Apply(Box::new(s))).collect();
    for h in existing {
        let name = h.metadata.name.clone().unwrap_or_default();
        if !want.iter().any(|w| w.metadata.name.as_deref() == Some(name.as_str())) {
            ops.push(Op::Delete(name));
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devs(n: usize) -> Vec<Device> {
        (0..n).map(|i| Device { name: format!("gpu-{i}"), ..Default::default() }).collect()
    }

    fn applied(ops: &[Op]) -> Vec<ResourceSlice> {
        ops.iter().filter_map(|o| if let Op::Apply(s) = o { Some((**s).clone()) } else { None }).collect()
    }

    #[test]
    fn new_pool_then_no_change_writes_nothing() {
        let ops = plan("n1", &devs(8), &[], None, "node");
        assert_eq!(ops.len(), 1);
        let slices = applied(&ops);
        assert_eq!(slices[0].spec.pool.generation, 0);
        assert_eq!(slices[0].spec.devices.as_ref().unwrap().len(), 8);
        assert!(plan("n1", &devs(8), &slices, None, "node").is_empty());
    }

    #[test]
    fn big_pools_split_at_128_and_changes_bump_the_generation() {
        let ops = plan("n1", &devs(300), &[], None, "node");
        let slices = applied(&ops);
        assert_eq!(slices.len(), 3);
        assert!(slices.iter().all(|s| s.spec.pool.resource_slice_count == 3 && s.spec.devices.as_ref().unwrap().len() <= 128));
        let shrink = plan("n1", &devs(100), &slices, None, "node");
        let after = applied(&shrink);
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].spec.pool.generation, 1);
        assert_eq!(shrink.last(), Some(&Op::Delete(slice_name("n1", 2, "node"))));
        assert!(shrink.contains(&Op::Delete(slice_name("n1", 1, "node"))));
    }

    #[test]
    fn kwok_slices_carry_upstreams_name() {
        let slices = applied(&plan("kwok-gpu-node-1", &devs(2), &[], None, crate::kubelet::dra::kwok::PUBLISHER));
        assert_eq!(slices[0].metadata.name.as_deref(), Some("kwok-kwok-gpu-node-1-gpu"));
        assert_eq!(slice_name("n", 1, crate::kubelet::dra::kwok::PUBLISHER), "kwok-n-gpu-1");
        // Slices written under the old name are replaced.
        let mut old = slices[0].clone();
        old.metadata.name = Some(slice_name("kwok-gpu-node-1", 0, "node"));
        let ops = plan("kwok-gpu-node-1", &devs(2), &[old], None, crate::kubelet::dra::kwok::PUBLISHER);
        assert!(ops.contains(&Op::Delete("kwok-gpu-node-1-gpu-nvidia-com-0".into())), "{ops:?}");
    }
}

/// The ResourceSlices this crate publishes survive the conversion to every `resource.k8s.io`
/// version (`fakegpu_operator_core::resource_api::convert`) and fit each version's schema.
#[cfg(test)]
mod convert_tests {
    use fakegpu_operator_core::resource_api::convert::{from_v1, to_v1};
    use fakegpu_operator_core::resource_api::{DraKind, DraVersion};
    use k8s_openapi::api::resource::{v1, v1beta1, v1beta2};
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::{json, Value};

    fn schema_checked<K: DeserializeOwned + Serialize>(v: &Value) {
        let typed: K = serde_json::from_value(v.clone()).expect("parses as the version's type");
        assert_eq!(&serde_json::to_value(typed).unwrap(), v, "the version's schema keeps every field");
    }
    fn check_all(kind: DraKind, v1obj: Value, check: &dyn Fn(DraVersion, &Value)) {
        for to in DraVersion::ALL {
            let wire = from_v1(kind, v1obj.clone(), to);
            assert_eq!(wire["apiVersion"], json!(to.api_version()));
            check(to, &wire);
            assert_eq!(to_v1(kind, wire, to), v1obj, "{kind:?} {to} converts back unchanged");
        }
    }

    #[test]
    fn the_operators_own_devices_convert() {
        let node = fakegpu_model::SimulatedNode::new(fakegpu_model::NodeSpec::builtin("h100", Some(2), "n1").unwrap());
        let (mig_node, state) = crate::kubelet::devices::tests::node_with_mig("h100", 1, "n2", &[0], "all-1g.10gb");
        let mut devices = crate::kubelet::dra::attributes::node_devices(&node);
        devices.extend(crate::kubelet::dra::attributes::pool_devices(&mig_node, &state));
        for s in crate::kubelet::dra::slices::desired("n1", &devices, 0, None, "node") {
            let v1obj = serde_json::to_value(&s).unwrap();
            check_all(DraKind::ResourceSlice, v1obj, &|to, wire| match to {
                DraVersion::V1 => schema_checked::<v1::ResourceSlice>(wire),
                DraVersion::V1beta2 => schema_checked::<v1beta2::ResourceSlice>(wire),
                DraVersion::V1beta1 => {
                    schema_checked::<v1beta1::ResourceSlice>(wire);
                    let typed: v1beta1::ResourceSlice = serde_json::from_value(wire.clone()).unwrap();
                    let devs = typed.spec.devices.unwrap();
                    assert_eq!(devs.len(), devices.len());
                    for (b, d) in devs.iter().zip(&devices) {
                        let basic = b.basic.as_ref().unwrap();
                        assert_eq!(b.name, d.name);
                        assert_eq!(serde_json::to_value(&basic.attributes).unwrap(), serde_json::to_value(&d.attributes).unwrap());
                        assert_eq!(serde_json::to_value(&basic.capacity).unwrap(), serde_json::to_value(&d.capacity).unwrap());
                    }
                }
            });
        }
    }
}
