//! What a claim's allocation means on this node: the GPUs of this driver and pool it was
//! given, and the sharing config that applies to each (opaque `GpuConfig` of
//! dra-example-driver's shape, as upstream: TimeSlicing with interval, or SpacePartitioning
//! with a partition count; the last matching config wins, default TimeSlicing/Default).

use fakegpu_model::state::NodeState;
use fakegpu_model::SimulatedNode;
use k8s_openapi::api::resource::v1::ResourceClaim;
use serde::Deserialize;

use super::DRIVER;
use crate::kubelet::devices;

/// How a device is shared between the containers that get it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sharing {
    TimeSlicing { interval: String },
    SpacePartitioning { partition_count: u32 },
}

/// One prepared device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedDevice {
    pub request: String,
    pub pool: String,
    pub device: String,
    /// `GPU-…`, or `MIG-…` for a MIG device.
    pub uuid: String,
    /// Host index of the GPU (a MIG device's parent).
    pub index: u32,
    pub share_id: Option<String>,
    pub sharing: Sharing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    #[error("claim {0} is not allocated")]
    NotAllocated(String),
    #[error("claim {claim}: device {device} of pool {pool} is not a device this node offers")]
    UnknownDevice { claim: String, pool: String, device: String },
    #[error("claim {claim}: invalid opaque config: {reason}")]
    BadConfig { claim: String, reason: String },
    #[error("claim {claim}: the API has uid {actual}, the kubelet asked for {wanted}")]
    UidMismatch { claim: String, wanted: String, actual: String },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GpuConfig {
    #[serde(default)]
    sharing: Option<SharingConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SharingConfig {
    strategy: String,
    #[serde(default)]
    time_slicing_config: Option<TimeSlicingConfig>,
    #[serde(default)]
    space_partitioning_config: Option<SpacePartitioningConfig>,
}

#[derive(Debug, Deserialize)]
struct TimeSlicingConfig {
    #[serde(default)]
    interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpacePartitioningConfig {
    partition_count: u32,
}

fn parse_sharing(claim: &str, params: &serde_json::Value) -> Result<Sharing, PrepareError> {
    let bad = |reason: String| PrepareError::BadConfig { claim: claim.into(), reason };
    let cfg: GpuConfig = serde_json::from_value(params.clone()).map_err(|e| bad(e.to_string()))?;
    let Some(s) = cfg.sharing else { return Ok(Sharing::TimeSlicing { interval: "Default".into() }) };
    match s.strategy.as_str() {
        "TimeSlicing" => {
            let interval = s.time_slicing_config.and_then(|t| t.interval).unwrap_or_else(|| "Default".into());
            if !["Default", "Short", "Medium", "Long"].contains(&interval.as_str()) {
                return Err(bad(format!("unknown time-slice interval {interval}")));
            }
            Ok(Sharing::TimeSlicing { interval })
        }
        "SpacePartitioning" => {
            let n = s.space_partitioning_config.map(|c| c.partition_count).unwrap_or(0);
            if n < 1 {
                return Err(bad("partitionCount must be at least 1".into()));
            }
            Ok(Sharing::SpacePartitioning { partition_count: n })
        }
        other => Err(bad(format!("unknown sharing strategy {other}"))),
    }
}

/// The devices of `claim` (which the kubelet named with `uid`) that this node's plugin
/// prepares, among those the node offers under its live `state` (whole GPUs, MIG devices).
pub fn prepare(claim: &ResourceClaim, uid: &str, node: &SimulatedNode, state: &NodeState) -> Result<Vec<PreparedDevice>, PrepareError> {
    let id = format!("{}/{}", claim.metadata.namespace.as_deref().unwrap_or(""), claim.metadata.name.as_deref().unwrap_or(""));
    let actual = claim.metadata.uid.clone().unwrap_or_default();
    if actual != uid {
        return Err(PrepareError::UidMismatch { claim: id, wanted: uid.into(), actual });
    }
    let devices = claim.status.as_ref().and_then(|s| s.allocation.as_ref()).and_then(|a| a.devices.as_ref());
    let Some(alloc) = devices else { return Err(PrepareError::NotAllocated(id)) };
    let configs: Vec<(Vec<String>, Sharing)> = alloc
        .config
        .iter()
        .flatten()
        .filter_map(|c| c.opaque.as_ref().filter(|o| o.driver == DRIVER).map(|o| (c.requests.clone().unwrap_or_default(), &o.parameters.0)))
        .map(|(reqs, params)| parse_sharing(&id, params).map(|s| (reqs, s)))
        .collect::<Result<_, _>>()?;
    let offered = devices::offered(node, state);
    let mut out = Vec::new();
    for r in alloc.results.iter().flatten().filter(|r| r.driver == DRIVER) {
        let device = offered
            .iter()
            .find(|d| r.pool == node.spec.node_name && super::attributes::name_of(d) == r.device)
            .ok_or_else(|| PrepareError::UnknownDevice { claim: id.clone(), pool: r.pool.clone(), device: r.device.clone() })?;
        // Requests may be `<request>/<subrequest>`; a config naming the parent matches too.
        let parent = r.request.split('/').next().unwrap_or_default();
        let sharing = configs
            .iter()
            .rev()
            .find(|(reqs, _)| reqs.is_empty() || reqs.iter().any(|q| q == &r.request || q == parent))
            .map(|(_, s)| s.clone())
            .unwrap_or(Sharing::TimeSlicing { interval: "Default".into() });
        out.push(PreparedDevice {
            request: r.request.clone(),
            pool: r.pool.clone(),
            device: r.device.clone(),
            uuid: device.uuid().to_string(),
            index: device.parent_index(),
            share_id: r.share_id.clone(),
            sharing,
        });
    }
    if out.is_empty() {
        return Err(PrepareError::NotAllocated(id));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fakegpu_model::NodeSpec;

    pub fn claim(uid: &str, node: &SimulatedNode, picks: &[usize], config: Option<serde_json::Value>) -> ResourceClaim {
        let results: Vec<serde_json::Value> = picks
            .iter()
            .map(|i| serde_json::json!({"request": "gpu", "driver": DRIVER, "pool": node.spec.node_name, "device": node.gpus[*i].uuid.to_lowercase()}))
            .collect();
        let mut alloc = serde_json::json!({"devices": {"results": results}});
        if let Some(c) = config {
            alloc["devices"]["config"] =
                serde_json::json!([{"source": "FromClaim", "requests": [], "opaque": {"driver": DRIVER, "parameters": c}}]);
        }
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": uid},
            "spec": {"devices": {}},
            "status": {"allocation": alloc}
        }))
        .unwrap()
    }

    #[test]
    fn prepares_this_nodes_gpus_with_sharing() {
        let node = SimulatedNode::new(NodeSpec::builtin("a100-80gb", Some(4), "n1").unwrap());
        let c = claim("u1", &node, &[2, 0], None);
        let p = prepare(&c, "u1", &node, &NodeState::default()).unwrap();
        assert_eq!(p.iter().map(|d| d.index).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(p[0].sharing, Sharing::TimeSlicing { interval: "Default".into() });
        let sp = serde_json::json!({"apiVersion": "gpu.resource.example.com/v1alpha1", "kind": "GpuConfig",
            "sharing": {"strategy": "SpacePartitioning", "spacePartitioningConfig": {"partitionCount": 3}}});
        let p = prepare(&claim("u2", &node, &[1], Some(sp)), "u2", &node, &NodeState::default()).unwrap();
        assert_eq!(p[0].sharing, Sharing::SpacePartitioning { partition_count: 3 });
    }

    #[test]
    fn refuses_what_it_cannot_prepare() {
        let none = NodeState::default();
        let node = SimulatedNode::new(NodeSpec::builtin("a100-80gb", Some(4), "n1").unwrap());
        let other = SimulatedNode::new(NodeSpec::builtin("a100-80gb", Some(4), "n2").unwrap());
        assert!(matches!(prepare(&claim("u", &other, &[0], None), "u", &node, &none), Err(PrepareError::UnknownDevice { .. })));
        assert!(matches!(prepare(&claim("u", &node, &[0], None), "x", &node, &none), Err(PrepareError::UidMismatch { .. })));
        let bad = serde_json::json!({"sharing": {"strategy": "Nope"}});
        assert!(matches!(prepare(&claim("u", &node, &[0], Some(bad)), "u", &node, &none), Err(PrepareError::BadConfig { .. })));
        let mut unalloc = claim("u", &node, &[0], None);
        unalloc.status = None;
        assert!(matches!(prepare(&unalloc, "u", &node, &none), Err(PrepareError::NotAllocated(_))));
    }

    #[test]
    fn prepares_mig_devices_by_their_slice_names() {
        let (node, state) = crate::kubelet::devices::tests::node_with_mig("a100-80gb", 2, "n1", &[1], "all-3g.40gb");
        let migs = node.mig_devices(&state);
        let name = super::super::attributes::mig_device_name(&migs[1]);
        let mut c = claim("m1", &node, &[0], None);
        let results = &mut c.status.as_mut().unwrap().allocation.as_mut().unwrap().devices.as_mut().unwrap().results;
        results.as_mut().unwrap()[0].device = name.clone();
        let p = prepare(&c, "m1", &node, &state).unwrap();
        assert_eq!((p[0].uuid.as_str(), p[0].index, p[0].device.as_str()), (migs[1].uuid.as_str(), 1, name.as_str()));
        // GPU 1 is partitioned: claiming it whole is refused; without the layout its MIG device is unknown.
        let whole = claim("w", &node, &[1], None);
        assert!(matches!(prepare(&whole, "w", &node, &state), Err(PrepareError::UnknownDevice { .. })));
        assert!(matches!(prepare(&c, "m1", &node, &NodeState::default()), Err(PrepareError::UnknownDevice { .. })));
    }
}
