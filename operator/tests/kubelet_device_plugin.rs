//! Device plugin against the fake kubelet over unix sockets: registration, ListAndWatch with
//! the model's UUIDs, preferred allocation, Allocate's env and mounts, an injected fault
//! turning a GPU Unhealthy, re-registration after a kubelet restart, and the in-pod view:
//! NVIDIA's nvidia-smi over the fake NVML with the Allocate edits lists exactly the granted GPUs;
//! and the grant report: after the fake kubelet records an Allocate for a pod, the plugin finds
//! it through PodResources and patches that pod's `allocated-gpus` annotation (stand-in API).

mod fake_kubelet;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_gpu_operator::kubelet::device_plugin::{self, Config};
use fake_gpu_operator::kubelet::grant::{self, Annotator, AnnotatorError, PodKey};
use fake_gpu_operator::kubelet::granter::GrantConfig;
use fake_gpu_operator::kubelet::pod_view::HostFiles;
use fake_gpu_operator::kubelet::proto::deviceplugin as dp;
use fake_gpu_operator::kubelet::{load_node, NodeFiles, ALLOCATED_GPUS_ANNOTATION};
use fakegpu_model::state::{self, Fault};
use fakegpu_model::state_file;
use futures::StreamExt;

use fake_kubelet::{Container, Kubelet};

const NODE: &str = "dp-node-1";

struct Setup {
    _tmp: tempfile::TempDir,
    files: NodeFiles,
    dp_dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let files = NodeFiles::new(&tmp.path().join("nodes"), NODE);
    std::fs::create_dir_all(&files.dir).unwrap();
    std::fs::write(files.config(), format!(r#"{{"node": "{NODE}", "profile": "a100-80gb", "gpus": 8}}"#)).unwrap();
    let dp_dir = tmp.path().join("device-plugins");
    std::fs::create_dir_all(&dp_dir).unwrap();
    let root = tmp.path().to_path_buf();
    Setup { _tmp: tmp, files, dp_dir, root }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_allocate_fault_and_reregister() {
    let s = setup();
    let node = Arc::new(load_node(&s.files, NODE).unwrap());
    let uuids: Vec<String> = node.gpus.iter().map(|g| g.uuid.clone()).collect();
    let mut kubelet = Kubelet::start(&s.dp_dir);
    let host = HostFiles {
        nvml_lib: fake_kubelet::fake_nvml().or(Some("/nonexistent/libnvidia_ml.so".into())),
        cuda_lib: fake_kubelet::fake_cuda().or(Some("/nonexistent/libcuda.so".into())),
        nvidia_smi: fake_kubelet::nvidia_smi(),
        node_dir: s.files.dir.clone(),
        node_name: NODE.into(),
    };
    let config = Config {
        device_plugins_dir: s.dp_dir.clone(),
        resource_name: "nvidia.com/gpu".into(),
        socket_name: device_plugin::PLUGIN_SOCKET.into(),
        files: host.clone(),
        state_path: s.files.state(),
        health_interval: Duration::from_millis(100),
        grants: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = tokio::spawn(device_plugin::run(config, node.clone(), async {
        let _ = stopped.await;
    }));

    // Register.
    let reg = kubelet.next_registration(Duration::from_secs(5)).await.expect("registration within 5 s");
    assert_eq!(reg.resource_name, "nvidia.com/gpu");
    assert_eq!(reg.endpoint, device_plugin::PLUGIN_SOCKET);
    assert!(reg.options.unwrap().get_preferred_allocation_available);
    let mut client = kubelet.plugin(&reg.endpoint).await;

    // ListAndWatch: the model's UUIDs, all healthy, NUMA halves.
    let mut stream = client.list_and_watch(dp::Empty {}).await.unwrap().into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.devices.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), uuids);
    assert!(first.devices.iter().all(|d| d.health == "Healthy"));
    assert_eq!(first.devices[7].topology.as_ref().unwrap().nodes[0].id, 1);

    // Preferred allocation of 2 from NUMA 1's free GPUs when NUMA 0 has only one free.
    let avail: Vec<String> = [3, 4, 5, 6].iter().map(|i| uuids[*i].clone()).collect();
    let pref = client
        .get_preferred_allocation(dp::PreferredAllocationRequest {
            container_requests: vec![dp::ContainerPreferredAllocationRequest {
                available_device_i_ds: avail,
                must_include_device_i_ds: vec![],
                allocation_size: 2,
            }],
        })
        .await
        .unwrap()
        .into_inner();
    let granted = pref.container_responses[0].device_i_ds.clone();
    assert_eq!(granted, vec![uuids[4].clone(), uuids[5].clone()]);

    // Allocate 2 GPUs: env and mounts name them.
    let alloc = client
        .allocate(dp::AllocateRequest { container_requests: vec![dp::ContainerAllocateRequest { devices_ids: granted.clone() }] })
        .await
        .unwrap()
        .into_inner();
    let c = &alloc.container_responses[0];
    assert_eq!(c.envs["NVIDIA_VISIBLE_DEVICES"], granted.join(","));
    assert_eq!(c.envs["FAKEGPU_NODE"], NODE);
    // Upstream #191: NODE_NAME reaches non-DRA pods (their nvidia-smi needs it).
    assert_eq!(c.envs.get("NODE_NAME").map(String::as_str), Some(NODE), "NODE_NAME injected: {:?}", c.envs);
    let lib = c.mounts.iter().find(|m| m.container_path == "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1").expect("NVML mount");
    assert!(lib.read_only);
    // The fake CUDA driver goes next to it, so CUDA discovery in the pod sees the same GPUs.
    let cuda = c.mounts.iter().find(|m| m.container_path == "/usr/lib/x86_64-linux-gnu/libcuda.so.1").expect("CUDA mount");
    assert!(cuda.read_only && cuda.host_path.ends_with("libcuda.so"));
    let node_mount = c.mounts.iter().find(|m| m.host_path == s.files.dir.display().to_string()).expect("node dir mount");
    assert!(node_mount.read_only);
    assert!(client
        .allocate(dp::AllocateRequest { container_requests: vec![dp::ContainerAllocateRequest { devices_ids: vec!["GPU-nope".into()] }] })
        .await
        .is_err());

    // In-pod view: NVIDIA's nvidia-smi over the fake NVML with exactly these edits.
    match (fake_kubelet::fake_nvml(), fake_kubelet::fake_cuda(), fake_kubelet::nvidia_smi()) {
        (Some(_), Some(_), Some(smi)) => {
            let mounts: Vec<(String, String)> = c.mounts.iter().map(|m| (m.host_path.clone(), m.container_path.clone())).collect();
            let env = c.envs.clone().into_iter().collect();
            let container = Container::new(&s.root.join("rootfs"), env, &mounts);
            let out = container.run(&smi, &["-L"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "nvidia-smi -L failed: {text} {}", String::from_utf8_lossy(&out.stderr));
            let listed: Vec<&str> = text.lines().filter_map(|l| l.split("(UUID: ").nth(1)).map(|u| u.trim_end_matches(')')).collect();
            assert_eq!(listed, vec![granted[0].as_str(), granted[1].as_str()], "nvidia-smi -L:\n{text}");
            assert!(text.starts_with("GPU 0: NVIDIA A100"), "{text}");
        }
        _ => eprintln!("SKIP in-pod view: build nvml-shim and cuda-shim and run scripts/fetch-nvidia.sh"),
    }

    // Injected fault → Unhealthy in ListAndWatch.
    let spec = node.spec.clone();
    state_file::update(&s.files.state(), &spec, |st| state::inject(st, &spec, 3, &Fault::Lost, state_file::now())).unwrap();
    let changed = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("health update within 5 s").unwrap().unwrap();
    assert_eq!(changed.devices[3].health, "Unhealthy");
    assert_eq!(changed.devices.iter().filter(|d| d.health == "Unhealthy").count(), 1);

    // Kubelet restart: sockets deleted and recreated → re-registration within 5 s.
    let mut kubelet = kubelet.restart().await;
    let again = kubelet.next_registration(Duration::from_secs(5)).await.expect("re-registration within 5 s");
    assert_eq!(again.resource_name, "nvidia.com/gpu");
    let mut client = kubelet.plugin(&again.endpoint).await;
    let listed = client.list_and_watch(dp::Empty {}).await.unwrap().into_inner().next().await.unwrap().unwrap();
    assert_eq!(listed.devices.len(), 8);
    assert_eq!(listed.devices[3].health, "Unhealthy");

    let _ = stop.send(());
    plugin.await.unwrap().unwrap();
}

/// The API server's pods as far as annotations go: each patch is recorded and applied.
#[derive(Default)]
struct FakeApi {
    pods: Mutex<BTreeMap<PodKey, Option<String>>>,
    patches: Mutex<Vec<(PodKey, serde_json::Value)>>,
}

#[tonic::async_trait]
impl Annotator for FakeApi {
    async fn current(&self, pods: &[PodKey]) -> Result<BTreeMap<PodKey, Option<String>>, AnnotatorError> {
        let known = self.pods.lock().unwrap();
        Ok(pods.iter().filter_map(|k| known.get(k).map(|v| (k.clone(), v.clone()))).collect())
    }

    async fn patch(&self, namespace: &str, name: &str, patch: serde_json::Value) -> Result<(), AnnotatorError> {
        let key: PodKey = (namespace.into(), name.into());
        let mut pods = self.pods.lock().unwrap();
        let Some(current) = pods.get_mut(&key) else { return Err(AnnotatorError(format!("pod {namespace}/{name} not found"))) };
        *current = patch["metadata"]["annotations"][ALLOCATED_GPUS_ANNOTATION].as_str().map(str::to_string);
        self.patches.lock().unwrap().push((key, patch));
        Ok(())
    }
}

impl FakeApi {
    async fn patches_within(&self, n: usize, within: Duration) -> Vec<(PodKey, serde_json::Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let p = self.patches.lock().unwrap().clone();
            if p.len() >= n || tokio::time::Instant::now() >= deadline {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn key(ns: &str, name: &str) -> PodKey {
    (ns.into(), name.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocate_is_annotated_on_the_pod_found_through_podresources() {
    let s = setup();
    let node = Arc::new(load_node(&s.files, NODE).unwrap());
    let uuids: Vec<String> = node.gpus.iter().map(|g| g.uuid.clone()).collect();
    let mut kubelet = Kubelet::start(&s.dp_dir);
    let socket = s.root.join("pod-resources/kubelet.sock");
    let _pod_resources = fake_kubelet::serve_pod_resources(&socket, kubelet.devices.clone());

    // Before the plugin starts: a pod whose annotation names the wrong GPU (a restart lost the
    // fix), one already right, and one the API server no longer knows.
    kubelet.devices.record("ns", "stale", "main", "nvidia.com/gpu", &[uuids[0].clone()]);
    kubelet.devices.record("ns", "ok", "main", "nvidia.com/gpu", &[uuids[1].clone()]);
    kubelet.devices.record("ns", "deleted", "main", "nvidia.com/gpu", &[uuids[2].clone()]);
    let api = Arc::new(FakeApi::default());
    api.pods.lock().unwrap().extend([
        (key("ns", "stale"), Some(uuids[7].clone())),
        (key("ns", "ok"), Some(uuids[1].to_lowercase())),
        (key("ns", "p"), None),
    ]);

    let config = Config {
        device_plugins_dir: s.dp_dir.clone(),
        resource_name: "nvidia.com/gpu".into(),
        socket_name: device_plugin::PLUGIN_SOCKET.into(),
        files: HostFiles { nvml_lib: None, cuda_lib: None, nvidia_smi: None, node_dir: s.files.dir.clone(), node_name: NODE.into() },
        state_path: s.files.state(),
        health_interval: Duration::from_millis(100),
        grants: Some(GrantConfig {
            pod_resources_socket: socket.clone(),
            annotator: api.clone(),
            // Only the start-up reconcile and the Allocate path run within this test.
            resync: Duration::from_secs(3600),
            wait: Duration::from_secs(10),
        }),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let plugin = tokio::spawn(device_plugin::run(config, node.clone(), async {
        let _ = stopped.await;
    }));

    // Start-up reconcile: only the stale annotation is rewritten.
    let patches = api.patches_within(1, Duration::from_secs(5)).await;
    assert_eq!(patches, vec![(key("ns", "stale"), grant::annotation_patch(&[uuids[0].clone()]))]);

    // The kubelet allocates GPUs 5 and 6 (not a first fit) to container main of pod ns/p.
    let reg = kubelet.next_registration(Duration::from_secs(5)).await.expect("registration within 5 s");
    let mut client = kubelet.plugin(&reg.endpoint).await;
    let granted = vec![uuids[5].clone(), uuids[6].clone()];
    let resp = kubelet.allocate(&mut client, "nvidia.com/gpu", ("ns", "p", "main"), &granted).await.expect("Allocate");
    assert_eq!(resp.container_responses[0].envs["NVIDIA_VISIBLE_DEVICES"], granted.join(","));

    let patches = api.patches_within(2, Duration::from_secs(5)).await;
    assert_eq!(patches.len(), 2, "one more patch, for ns/p: {patches:?}");
    assert_eq!(patches[1].0, key("ns", "p"));
    assert_eq!(patches[1].1, grant::annotation_patch(&granted));
    assert_eq!(patches[1].1["metadata"]["annotations"][ALLOCATED_GPUS_ANNOTATION].as_str().unwrap(), format!("{},{}", uuids[5], uuids[6]));

    // An Allocate the kubelet never records (the pod failed admission) annotates nothing;
    // nothing else is rewritten meanwhile.
    client
        .allocate(dp::AllocateRequest { container_requests: vec![dp::ContainerAllocateRequest { devices_ids: vec![uuids[3].clone()] }] })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.patches.lock().unwrap().len(), 2);
    assert_eq!(api.pods.lock().unwrap()[&key("ns", "p")].as_deref(), Some(granted.join(",").as_str()));

    let _ = stop.send(());
    plugin.await.unwrap().unwrap();
}
