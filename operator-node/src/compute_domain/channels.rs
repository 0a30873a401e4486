//! IMEX channels on a node, as the `compute-domain.nvidia.com` driver offers and prepares them.
//!
//! A node's pool holds `channel-0` … `channel-<n-1>` (attributes `type=channel`, `id`, and the
//! node's `cliqueID` when it has one) and one `daemon-0` (`type=daemon`, the IMEX daemon
//! device of DeviceClass `compute-domain-daemon.nvidia.com`). Each claim of a domain gets one
//! channel; several domains can share a node, each with its own channel, as IMEX channels are
//! per-domain. Prepare turns the claim's channel into container edits: allocation mode `Single`
//! gives that channel's device node, `All` every channel of the node
//! (`/dev/nvidia-caps-imex-channels/channel<N>`, as NVIDIA's driver injects them).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, ResourceClaim};
use serde_json::{json, Value};

use super::types::{AllocationMode, ChannelConfig, CHANNEL_CONFIG_KIND};
use super::DRIVER;

/// Channels a node offers unless told otherwise: one full slice with the daemon device
/// (NVIDIA's driver enumerates 2048; the scheduler's work grows with the devices per node).
pub const DEFAULT_CHANNELS: u32 = 127;
/// Where NVIDIA's driver puts IMEX channel device nodes in a container.
pub const CONTAINER_CHANNEL_DIR: &str = "/dev/nvidia-caps-imex-channels";
pub const DAEMON_DEVICE: &str = "daemon-0";
/// CDI kind of the claim specs.
pub const CDI_KIND: &str = "k8s.compute-domain.nvidia.com/computedomain";
/// The host device a fake channel is: /dev/null (character device 1:3), so a workload that
/// opens its channel succeeds and nothing real is touched.
pub const FAKE_CHANNEL_MAJOR_MINOR: (u32, u32) = (1, 3);

fn string(v: &str) -> DeviceAttribute {
    DeviceAttribute { string: Some(v.into()), ..Default::default() }
}

fn int(v: i64) -> DeviceAttribute {
    DeviceAttribute { int: Some(v), ..Default::default() }
}

pub fn channel_name(id: u32) -> String {
    format!("channel-{id}")
}

/// The devices of a node's pool: `channels` channels and the daemon device.
pub fn pool_devices(channels: u32, clique: Option<&str>) -> Vec<Device> {
    let device = |name: String, kind: &str, id: u32| {
        let mut attributes = BTreeMap::from([("type".to_string(), string(kind)), ("id".to_string(), int(i64::from(id)))]);
        if let Some(c) = clique {
            attributes.insert("cliqueID".into(), string(c));
        }
        Device { name, attributes: Some(attributes), ..Default::default() }
    };
    let mut devices: Vec<Device> = (0..channels).map(|i| device(channel_name(i), "channel", i)).collect();
    devices.push(device(DAEMON_DEVICE.into(), "daemon", 0));
    devices
}

/// One prepared device of a claim: the channel allocated and the channel device nodes the
/// container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedChannel {
    pub request: String,
    pub pool: String,
    pub device: String,
    pub channels: Vec<u32>,
}

/// A prepared claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub domain_id: String,
    pub mode: AllocationMode,
    pub devices: Vec<PreparedChannel>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrepareError {
    #[error("claim {claim} is not allocated")]
    NotAllocated { claim: String },
    #[error("claim {claim} has no {driver} device allocated on node {node}", driver = DRIVER)]
    NothingHere { claim: String, node: String },
    #[error(
        "claim {claim} has no opaque config of driver {driver} (kind {kind} with domainID): a ComputeDomain's claims come from the ResourceClaimTemplate its controller creates",
        driver = DRIVER,
        kind = CHANNEL_CONFIG_KIND
    )]
    NoConfig { claim: String },
    #[error("claim {claim}: opaque config of driver {driver} is not a valid {kind}: {error}", driver = DRIVER, kind = CHANNEL_CONFIG_KIND)]
    BadConfig { claim: String, error: String },
    #[error("claim {claim}: device {device} is not a channel of this node (channel-0 … channel-{last})")]
    UnknownDevice { claim: String, device: String, last: u32 },
    #[error("claim {claim}: device {daemon} is the IMEX daemon's; this fake runs no IMEX daemon, so it cannot be prepared", daemon = DAEMON_DEVICE)]
    Daemon { claim: String },
}

fn claim_ref(claim: &ResourceClaim) -> String {
    format!("{}/{}", claim.metadata.namespace.as_deref().unwrap_or_default(), claim.metadata.name.as_deref().unwrap_or_default())
}

/// What a claim's devices on `node` become, with `channels` channels on the node.
pub fn prepare(claim: &ResourceClaim, node: &str, channels: u32) -> Result<Prepared, PrepareError> {
    let name = claim_ref(claim);
    let devices = claim
        .status
        .as_ref()
        .and_then(|s| s.allocation.as_ref())
        .and_then(|a| a.devices.as_ref())
        .ok_or_else(|| PrepareError::NotAllocated { claim: name.clone() })?;
    let results: Vec<_> = devices.results.iter().flatten().filter(|r| r.driver == DRIVER && r.pool == node).collect();
    if results.is_empty() {
        return Err(PrepareError::NothingHere { claim: name, node: node.into() });
    }
    // The last config of this driver wins, as for every DRA driver's opaque configs.
    let opaque = devices.config.iter().flatten().filter_map(|c| c.opaque.as_ref()).rfind(|o| o.driver == DRIVER);
    let params = opaque.ok_or_else(|| PrepareError::NoConfig { claim: name.clone() })?;
    let config: ChannelConfig = serde_json::from_value(params.parameters.0.clone())
        .map_err(|e| PrepareError::BadConfig { claim: name.clone(), error: e.to_string() })?;
    if config.kind != CHANNEL_CONFIG_KIND || config.domain_id.is_empty() {
        return Err(PrepareError::BadConfig {
            claim: name,
            error: format!("kind {:?} with domainID {:?} (want kind {CHANNEL_CONFIG_KIND} and a domainID)", config.kind, config.domain_id),
        });
    }
    let mut prepared = Vec::new();
    for r in results {
        if r.device == DAEMON_DEVICE {
            return Err(PrepareError::Daemon { claim: name });
        }
        let id = r.device.strip_prefix("channel-").and_then(|n| n.parse::<u32>().ok()).filter(|n| *n < channels).ok_or_else(|| {
            PrepareError::UnknownDevice { claim: name.clone(), device: r.device.clone(), last: channels.saturating_sub(1) }
        })?;
        let nodes = match config.allocation_mode {
            AllocationMode::Single => vec![id],
            AllocationMode::All => (0..channels).collect(),
        };
        prepared.push(PreparedChannel { request: r.request.clone(), pool: r.pool.clone(), device: r.device.clone(), channels: nodes });
    }
    Ok(Prepared { domain_id: config.domain_id, mode: config.allocation_mode, devices: prepared })
}

/// The spec file of a claim.
pub fn spec_path(cdi_root: &Path, claim_uid: &str) -> PathBuf {
    cdi_root.join(format!("k8s.compute-domain.nvidia.com-computedomain_{claim_uid}.json"))
}

/// The fully-qualified CDI id of a prepared device.
pub fn device_id(claim_uid: &str, device: &str) -> String {
    format!("{CDI_KIND}={claim_uid}-{device}")
}

/// The host file standing for channel `id` (a link to /dev/null the plugin creates).
pub fn host_channel(host_dir: &Path, id: u32) -> PathBuf {
    host_dir.join(format!("channel{id}"))
}

/// The CDI spec of a prepared claim: per device, the channel device nodes and the variables
/// naming the domain, the claim and the node.
pub fn spec(claim_uid: &str, node: &str, prepared: &Prepared, host_dir: &Path) -> Value {
    let (major, minor) = FAKE_CHANNEL_MAJOR_MINOR;
    let devices: Vec<Value> = prepared
        .devices
        .iter()
        .map(|d| {
            let env_id = d.device.replace('-', "_").to_ascii_uppercase();
            let list: Vec<String> = d.channels.iter().map(u32::to_string).collect();
            let nodes: Vec<Value> = d
                .channels
                .iter()
                .map(|c| {
                    json!({"path": format!("{CONTAINER_CHANNEL_DIR}/channel{c}"), "hostPath": host_channel(host_dir, *c),
                           "type": "c", "major": major, "minor": minor, "permissions": "rw"})
                })
                .collect();
            json!({"name": format!("{claim_uid}-{}", d.device), "containerEdits": {
                "env": [
                    format!("COMPUTE_DOMAIN_UUID={}", prepared.domain_id),
                    format!("COMPUTE_DOMAIN_ALLOCATION_MODE={}", prepared.mode),
                    format!("COMPUTE_DOMAIN_DEVICE_{env_id}_RESOURCE_CLAIM={claim_uid}"),
                    format!("IMEX_CHANNELS={}", list.join(",")),
                    format!("KUBERNETES_NODE_NAME={node}"),
                    format!("DRA_RESOURCE_DRIVER_NAME={DRIVER}"),
                ],
                "deviceNodes": nodes
            }})
        })
        .collect();
    json!({"cdiVersion": "0.5.0", "kind": CDI_KIND, "devices": devices, "containerEdits": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(device: &str, config: Option<Value>) -> ResourceClaim {
        let config =
            config.map_or(json!([]), |p| json!([{"source": "FromClaim", "requests": [], "opaque": {"driver": DRIVER, "parameters": p}}]));
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"}, "spec": {},
            "status": {"allocation": {"devices": {"results": [
                {"request": "channel", "driver": DRIVER, "pool": "n1", "device": device},
                {"request": "gpu", "driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-x"}
            ], "config": config}}}
        }))
        .unwrap()
    }

    fn cfg(mode: &str) -> Value {
        json!({"apiVersion": "resource.nvidia.com/v1beta1", "kind": CHANNEL_CONFIG_KIND, "domainID": "dom-1", "allocationMode": mode})
    }

    #[test]
    fn pool_has_every_channel_and_the_daemon() {
        let d = pool_devices(4, Some("uuid.0"));
        let names: Vec<_> = d.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["channel-0", "channel-1", "channel-2", "channel-3", "daemon-0"]);
        let a = d[2].attributes.as_ref().unwrap();
        assert_eq!((a["type"].string.as_deref(), a["id"].int, a["cliqueID"].string.as_deref()), (Some("channel"), Some(2), Some("uuid.0")));
        assert_eq!(d[4].attributes.as_ref().unwrap()["type"].string.as_deref(), Some("daemon"));
        assert!(!pool_devices(1, None)[0].attributes.as_ref().unwrap().contains_key("cliqueID"));
        assert_eq!(pool_devices(DEFAULT_CHANNELS, None).len(), 128, "one full slice");
    }

    #[test]
    fn single_gets_its_channel_all_gets_every_channel() {
        let p = prepare(&claim("channel-5", Some(cfg("Single"))), "n1", 8).unwrap();
        assert_eq!(p.domain_id, "dom-1");
        assert_eq!(
            p.devices,
            vec![PreparedChannel { request: "channel".into(), pool: "n1".into(), device: "channel-5".into(), channels: vec![5] }]
        );
        let all = prepare(&claim("channel-5", Some(cfg("All"))), "n1", 8).unwrap();
        assert_eq!(all.devices[0].channels, (0..8).collect::<Vec<_>>());
        let spec = spec("u1", "n1", &all, Path::new("/host/ch"));
        let dev = &spec["devices"][0];
        assert_eq!(dev["name"], "u1-channel-5");
        assert_eq!(dev["containerEdits"]["deviceNodes"].as_array().unwrap().len(), 8);
        assert_eq!(
            dev["containerEdits"]["deviceNodes"][7],
            json!({"path": "/dev/nvidia-caps-imex-channels/channel7", "hostPath": "/host/ch/channel7", "type": "c", "major": 1, "minor": 3, "permissions": "rw"})
        );
        let env: Vec<_> = dev["containerEdits"]["env"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(env.contains(&"COMPUTE_DOMAIN_UUID=dom-1") && env.contains(&"IMEX_CHANNELS=0,1,2,3,4,5,6,7"), "{env:?}");
        assert!(env.contains(&"COMPUTE_DOMAIN_DEVICE_CHANNEL_5_RESOURCE_CLAIM=u1"), "{env:?}");
        assert_eq!(device_id("u1", "channel-5"), "k8s.compute-domain.nvidia.com/computedomain=u1-channel-5");
    }

    #[test]
    fn bad_claims_get_errors_naming_what_is_wrong() {
        let e = prepare(&claim("channel-0", None), "n1", 8).unwrap_err();
        assert_eq!(e, PrepareError::NoConfig { claim: "ns/c".into() });
        assert!(e.to_string().contains("no opaque config of driver compute-domain.nvidia.com"), "{e}");
        let e = prepare(
            &claim("channel-0", Some(json!({"kind": CHANNEL_CONFIG_KIND, "apiVersion": "x", "domainID": "d", "allocationMode": "Most"}))),
            "n1",
            8,
        )
        .unwrap_err();
        assert!(matches!(e, PrepareError::BadConfig { .. }) && e.to_string().contains("Most"), "{e}");
        let e = prepare(&claim("channel-0", Some(json!({"kind": "Other", "apiVersion": "x", "domainID": ""}))), "n1", 8).unwrap_err();
        assert!(e.to_string().contains("want kind ComputeDomainChannelConfig"), "{e}");
        let e = prepare(&claim("channel-8", Some(cfg("Single"))), "n1", 8).unwrap_err();
        assert!(e.to_string().contains("channel-8 is not a channel of this node (channel-0 … channel-7)"), "{e}");
        assert!(matches!(prepare(&claim(DAEMON_DEVICE, Some(cfg("Single"))), "n1", 8), Err(PrepareError::Daemon { .. })));
        assert!(matches!(prepare(&claim("channel-0", Some(cfg("Single"))), "n2", 8), Err(PrepareError::NothingHere { .. })));
        let unallocated: ResourceClaim = serde_json::from_value(json!({"metadata": {"name": "c", "namespace": "ns"}, "spec": {}})).unwrap();
        assert!(matches!(prepare(&unallocated, "n1", 8), Err(PrepareError::NotAllocated { .. })));
    }
}
