//! MIG through the kubelet plugins, against the fake kubelet over unix sockets. The node's MIG
//! layout is in its live state file (as `nvidia-smi mig -cgi … -C` leaves it):
//! - device plugin, `mixed` strategy: `nvidia.com/gpu` for the GPUs without MIG plus one
//!   `nvidia.com/mig-<profile>` endpoint per profile, device ids = the model's MIG UUIDs,
//!   Allocate hands out MIG UUIDs, a fault on the parent GPU makes its MIG devices Unhealthy,
//!   and a layout change re-registers the new set of resources;
//! - DRA: NodePrepareResources of a MIG device writes a CDI spec naming its MIG UUID;
//! - in-pod view: NVIDIA's `nvidia-smi -L` over the fake NVML with those edits lists the parent
//!   GPU with exactly the granted MIG device.

mod fake_kubelet;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fake_gpu_operator::kubelet::allocation::MigStrategy;
use fake_gpu_operator::kubelet::device_plugin::{self, Config};
use fake_gpu_operator::kubelet::dra::plugin::{ClaimSource, DraService, Paths};
use fake_gpu_operator::kubelet::dra::{attributes, cdi, plugin, DRIVER};
use fake_gpu_operator::kubelet::pod_view::HostFiles;
use fake_gpu_operator::kubelet::proto::deviceplugin as dp;
use fake_gpu_operator::kubelet::proto::dra as pb;
use fake_gpu_operator::kubelet::{load_node, uds, KubeletDirs, NodeFiles};
use fakegpu_model::mig::{self, MigDevice};
use fakegpu_model::state::{self, Fault, NodeState, StateError};
use fakegpu_model::{state_file, SimulatedNode};
use futures::StreamExt;
use k8s_openapi::api::resource::v1::ResourceClaim;

use fake_kubelet::{Container, Kubelet};

const NODE: &str = "mig-node-1";

/// A node of four A100 80GB: GPU 0 as seven 1g.10gb, GPU 1 as two 3g.40gb, GPUs 2 and 3 whole.
fn setup(tmp: &Path) -> (NodeFiles, Arc<SimulatedNode>) {
    let files = NodeFiles::new(&tmp.join("nodes"), NODE);
    std::fs::create_dir_all(&files.dir).unwrap();
    std::fs::write(files.config(), format!(r#"{{"node": "{NODE}", "profile": "a100-80gb", "gpus": 4}}"#)).unwrap();
    let node = Arc::new(load_node(&files, NODE).unwrap());
    set_layout(&files, &node, 0, "all-1g.10gb");
    set_layout(&files, &node, 1, "all-3g.40gb");
    (files, node)
}

fn set_layout(files: &NodeFiles, node: &SimulatedNode, gpu: u32, config: &str) {
    let layout = mig::named_layout(&node.spec.profile, config).unwrap();
    state_file::update(&files.state(), &node.spec, |st: &mut NodeState| -> Result<(), StateError> {
        st.gpu_mut(&node.spec, gpu, state_file::now())?.mig = layout;
        Ok(())
    })
    .unwrap();
}

fn live_migs(files: &NodeFiles, node: &SimulatedNode, gpu: u32) -> Vec<MigDevice> {
    node.mig_devices(&state_file::read(&files.state()).unwrap()).into_iter().filter(|m| m.parent_index == gpu).collect()
}

fn host_files(files: &NodeFiles) -> HostFiles {
    HostFiles {
        nvml_lib: fake_kubelet::fake_nvml(),
        cuda_lib: fake_kubelet::fake_cuda(),
        nvidia_smi: fake_kubelet::nvidia_smi(),
        node_dir: files.dir.clone(),
        node_name: NODE.into(),
    }
}

/// `nvidia-smi -L` in a container with `env` and `mounts`: the UUIDs it lists, in order (None
/// when the fake NVML or NVIDIA's nvidia-smi is not at hand).
fn in_pod_uuids(rootfs: &Path, env: BTreeMap<String, String>, mounts: &[(String, String)]) -> Option<Vec<String>> {
    let (Some(_), Some(smi)) = (fake_kubelet::fake_nvml(), fake_kubelet::nvidia_smi()) else {
        eprintln!("SKIP in-pod view: build nvml-shim and run scripts/fetch-nvidia.sh");
        return None;
    };
    let out = Container::new(rootfs, env, mounts).run(&smi, &["-L"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "nvidia-smi -L failed: {text} {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("in-pod nvidia-smi -L:\n{text}");
    Some(text.lines().filter_map(|l| l.split("(UUID: ").nth(1)).map(|u| u.trim_end_matches(')').to_string()).collect())
}

async fn registrations(kubelet: &mut Kubelet, n: usize) -> BTreeMap<String, String> {
    let mut got = BTreeMap::new();
    while got.len() < n {
        let r = kubelet.next_registration(Duration::from_secs(5)).await.unwrap_or_else(|| panic!("only {got:?} registered within 5 s"));
        got.insert(r.resource_name, r.endpoint);
    }
    got
}

async fn first_list(kubelet: &Kubelet, endpoint: &str) -> Vec<dp::Device> {
    let mut client = kubelet.plugin(endpoint).await;
    client.list_and_watch(dp::Empty {}).await.unwrap().into_inner().next().await.unwrap().unwrap().devices
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_strategy_serves_mig_resources_with_the_models_uuids() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, node) = setup(tmp.path());
    let dp_dir = tmp.path().join("device-plugins");
    std::fs::create_dir_all(&dp_dir).unwrap();
    let mut kubelet = Kubelet::start(&dp_dir);
    let config = Config {
        device_plugins_dir: dp_dir.clone(),
        resource_name: device_plugin::RESOURCE_NAME.into(),
        socket_name: device_plugin::PLUGIN_SOCKET.into(),
        files: host_files(&files),
        state_path: files.state(),
        health_interval: Duration::from_millis(100),
        grants: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = tokio::spawn(device_plugin::run_all(config, MigStrategy::Mixed, node.clone(), async {
        let _ = stopped.await;
    }));

    // One endpoint per resource, each on its own socket.
    let regs = registrations(&mut kubelet, 3).await;
    assert_eq!(
        regs,
        BTreeMap::from([
            ("nvidia.com/gpu".to_string(), "fake-nvidia-gpu.sock".to_string()),
            ("nvidia.com/mig-1g.10gb".to_string(), "fake-nvidia-mig-1g.10gb.sock".to_string()),
            ("nvidia.com/mig-3g.40gb".to_string(), "fake-nvidia-mig-3g.40gb.sock".to_string()),
        ])
    );

    // Device ids: the model's MIG UUIDs of each GPU; nvidia.com/gpu only the GPUs without MIG.
    let small = live_migs(&files, &node, 0);
    let big = live_migs(&files, &node, 1);
    let ids = |d: &[dp::Device]| d.iter().map(|d| d.id.clone()).collect::<Vec<_>>();
    let mut mig_stream = kubelet.plugin(&regs["nvidia.com/mig-1g.10gb"]).await.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
    let listed = mig_stream.next().await.unwrap().unwrap().devices;
    assert_eq!(ids(&listed), small.iter().map(|m| m.uuid.clone()).collect::<Vec<_>>());
    assert_eq!(listed.len(), 7);
    assert!(listed.iter().all(|d| d.health == "Healthy" && d.topology.as_ref().unwrap().nodes[0].id == 0));
    assert_eq!(ids(&first_list(&kubelet, &regs["nvidia.com/mig-3g.40gb"]).await), big.iter().map(|m| m.uuid.clone()).collect::<Vec<_>>());
    assert_eq!(ids(&first_list(&kubelet, &regs["nvidia.com/gpu"]).await), vec![node.gpus[2].uuid.clone(), node.gpus[3].uuid.clone()]);

    // Allocate a 3g.40gb: NVIDIA_VISIBLE_DEVICES is its MIG UUID; a GPU UUID is not a device of
    // this resource.
    let mut client = kubelet.plugin(&regs["nvidia.com/mig-3g.40gb"]).await;
    let alloc = client
        .allocate(dp::AllocateRequest { container_requests: vec![dp::ContainerAllocateRequest { devices_ids: vec![big[1].uuid.clone()] }] })
        .await
        .unwrap()
        .into_inner();
    let c = &alloc.container_responses[0];
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], big[1].uuid);
    let wrong = dp::ContainerAllocateRequest { devices_ids: vec![node.gpus[2].uuid.clone()] };
    assert!(client.allocate(dp::AllocateRequest { container_requests: vec![wrong] }).await.is_err());

    // In the pod: the parent GPU with only that MIG device, both with the host's UUIDs.
    let mounts: Vec<(String, String)> = c.mounts.iter().map(|m| (m.host_path.clone(), m.container_path.clone())).collect();
    let env = c.envs.clone().into_iter().collect();
    if let Some(listed) = in_pod_uuids(&tmp.path().join("rootfs-dp"), env, &mounts) {
        assert_eq!(listed, vec![node.gpus[1].uuid.clone(), big[1].uuid.clone()]);
    }

    // A fault on GPU 0 makes its seven MIG devices Unhealthy.
    let spec = node.spec.clone();
    state_file::update(&files.state(), &spec, |st| state::inject(st, &spec, 0, &Fault::Lost, state_file::now())).unwrap();
    let changed =
        tokio::time::timeout(Duration::from_secs(5), mig_stream.next()).await.expect("health update within 5 s").unwrap().unwrap();
    assert!(changed.devices.iter().all(|d| d.health == "Unhealthy"), "{:?}", changed.devices);

    // GPU 1 leaves MIG mode: its 3g.40gb resource goes, nvidia.com/gpu gains it; re-registered.
    state_file::update(&files.state(), &node.spec, |st: &mut NodeState| -> Result<(), StateError> {
        st.gpu_mut(&node.spec, 1, state_file::now())?.mig = Default::default();
        Ok(())
    })
    .unwrap();
    let again = registrations(&mut kubelet, 2).await;
    assert_eq!(again.keys().cloned().collect::<BTreeSet<_>>(), BTreeSet::from(["nvidia.com/gpu".into(), "nvidia.com/mig-1g.10gb".into()]));
    let gpus = first_list(&kubelet, &again["nvidia.com/gpu"]).await;
    assert_eq!(ids(&gpus), node.gpus[1..].iter().map(|g| g.uuid.clone()).collect::<Vec<_>>());
    assert!(!dp_dir.join("fake-nvidia-mig-3g.40gb.sock").exists(), "the gone resource's socket is removed");

    let _ = stop.send(());
    plugin.await.unwrap().unwrap();
}

/// One claim, as the API server would return it.
struct OneClaim(ResourceClaim);

#[tonic::async_trait]
impl ClaimSource for OneClaim {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String> {
        let m = &self.0.metadata;
        if m.namespace.as_deref() == Some(namespace) && m.name.as_deref() == Some(name) {
            Ok(self.0.clone())
        } else {
            Err(format!("claim {namespace}/{name} not found"))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dra_prepares_a_mig_device_with_its_uuid() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, node) = setup(tmp.path());
    let state = state_file::read(&files.state()).unwrap();

    // The pool holds GPU 2 and 3 whole and the nine MIG devices, not GPUs 0 and 1 whole.
    let devices = attributes::pool_devices(&node, &state);
    assert_eq!(devices.len(), 2 + 7 + 2);
    assert!(devices.iter().all(|d| d.name != attributes::device_name(&node.gpus[0].uuid)));
    let big = live_migs(&files, &node, 1);
    let name = attributes::mig_device_name(&big[0]);
    let slice_device = devices.iter().find(|d| d.name == name).expect("the MIG device is in the pool");
    assert_eq!(slice_device.attributes.as_ref().unwrap()["uuid"].string.as_deref(), Some(big[0].uuid.as_str()));

    let claim: ResourceClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "mig-claim", "namespace": "ns1", "uid": "uid-mig"},
        "spec": {"devices": {}},
        "status": {"allocation": {"devices": {"results": [{"request": "mig", "driver": DRIVER, "pool": NODE, "device": name}]}}}
    }))
    .unwrap();
    let dirs = KubeletDirs {
        device_plugins: tmp.path().join("device-plugins"),
        plugins_registry: tmp.path().join("plugins_registry"),
        plugins: tmp.path().join("plugins"),
    };
    let cdi_root = tmp.path().join("cdi");
    let paths = Paths::new(&dirs, &cdi_root);
    let service = DraService::new(node.clone(), host_files(&files), &paths, Arc::new(OneClaim(claim))).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serve_paths = paths.clone();
    let task = tokio::spawn(async move {
        plugin::serve(&serve_paths, service, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    // The socket file appears only once the server listens (uds::bind): wait for it, then dial.
    for _ in 0..100 {
        if paths.plugin_socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let channel = uds::connect(&paths.plugin_socket).await.expect("the DRA plugin answers within 5 s");
    let mut dra = pb::dra_plugin_client::DraPluginClient::new(channel);
    let resp = dra
        .node_prepare_resources(pb::NodePrepareResourcesRequest {
            claims: vec![pb::Claim { namespace: "ns1".into(), uid: "uid-mig".into(), name: "mig-claim".into() }],
        })
        .await
        .unwrap()
        .into_inner();
    let entry = &resp.claims["uid-mig"];
    assert_eq!(entry.error, "");
    assert_eq!(entry.devices[0].device_name, name);

    // The CDI spec names the MIG UUID, and the pod sees the parent GPU with only that MIG device.
    let text = std::fs::read_to_string(cdi::spec_path(&cdi_root, "uid-mig")).unwrap();
    assert!(text.contains(&format!("NVIDIA_VISIBLE_DEVICES={}", big[0].uuid)), "{text}");
    let (env, mounts) = fake_kubelet::cdi_edits(&cdi_root, &entry.devices[0].cdi_device_ids);
    if let Some(listed) = in_pod_uuids(&tmp.path().join("rootfs-dra"), env, &mounts) {
        assert_eq!(listed, vec![node.gpus[1].uuid.clone(), big[0].uuid.clone()]);
    }
    let _ = tx.send(());
    task.await.unwrap();
}
