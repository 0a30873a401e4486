//! DRA kubelet plugin against the fake kubelet: the plugin watcher's GetInfo and
//! NotifyRegistrationStatus, NodePrepareResources for good claims and one malformed claim
//! (its error in its own entry only), CDI specs naming the claim's GPUs, idempotency across a
//! plugin restart (checkpoint; the API is not asked again), NodeUnprepareResources twice, and
//! the in-pod view through the CDI edits.

mod fake_kubelet;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_gpu_operator::kubelet::dra::plugin::{ClaimSource, DraService, Paths};
use fake_gpu_operator::kubelet::dra::{cdi, plugin, DRIVER};
use fake_gpu_operator::kubelet::pod_view::HostFiles;
use fake_gpu_operator::kubelet::proto::dra as pb;
use fake_gpu_operator::kubelet::proto::registration as reg;
use fake_gpu_operator::kubelet::{load_node, uds, KubeletDirs, NodeFiles};
use fakegpu_model::SimulatedNode;
use k8s_openapi::api::resource::v1::ResourceClaim;

const NODE: &str = "dra-node-1";

/// Claims as the API server would return them (the plugin only GETs claims).
#[derive(Default)]
struct Claims {
    by_name: Mutex<HashMap<(String, String), ResourceClaim>>,
    gets: Mutex<usize>,
}

#[tonic::async_trait]
impl ClaimSource for Claims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String> {
        *self.gets.lock().unwrap() += 1;
        self.by_name
            .lock()
            .unwrap()
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .ok_or_else(|| format!("claim {namespace}/{name} not found"))
    }
}

fn claim(uid: &str, name: &str, node: &SimulatedNode, picks: &[usize]) -> ResourceClaim {
    let results: Vec<serde_json::Value> = picks
        .iter()
        .map(|i| serde_json::json!({"request": "gpu", "driver": DRIVER, "pool": NODE, "device": node.gpus[*i].uuid.to_lowercase()}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "ns1", "uid": uid},
        "spec": {"devices": {}},
        "status": {"allocation": {"devices": {"results": results, "config": [
            {"source": "FromClaim", "requests": [], "opaque": {"driver": DRIVER, "parameters":
                {"apiVersion": "gpu.resource.example.com/v1alpha1", "kind": "GpuConfig", "sharing": {"strategy": "TimeSlicing", "timeSlicingConfig": {"interval": "Long"}}}}}
        ]}}}
    }))
    .unwrap()
}

fn start(
    paths: &Paths,
    node: Arc<SimulatedNode>,
    host: HostFiles,
    claims: Arc<Claims>,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let service = DraService::new(node, host, paths, claims).unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let paths = paths.clone();
    let task = tokio::spawn(async move {
        plugin::serve(&paths, service, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, task)
}

async fn wait_for(path: &Path) {
    for _ in 0..100 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not appear", path.display());
}

fn pbclaim(ns: &str, uid: &str, name: &str) -> pb::Claim {
    pb::Claim { namespace: ns.into(), uid: uid.into(), name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_prepare_restart_unprepare() {
    let tmp = tempfile::tempdir().unwrap();
    let files = NodeFiles::new(&tmp.path().join("nodes"), NODE);
    std::fs::create_dir_all(&files.dir).unwrap();
    std::fs::write(files.config(), format!(r#"{{"node": "{NODE}", "profile": "h100", "gpus": 8}}"#)).unwrap();
    let node = Arc::new(load_node(&files, NODE).unwrap());
    let dirs = KubeletDirs {
        device_plugins: tmp.path().join("device-plugins"),
        plugins_registry: tmp.path().join("plugins_registry"),
        plugins: tmp.path().join("plugins"),
    };
    let cdi_root = tmp.path().join("cdi");
    let paths = Paths::new(&dirs, &cdi_root);
    let host = HostFiles {
        nvml_lib: fake_kubelet::fake_nvml(),
        cuda_lib: fake_kubelet::fake_cuda(),
        nvidia_smi: fake_kubelet::nvidia_smi(),
        node_dir: files.dir.clone(),
        node_name: NODE.into(),
    };
    let claims = Arc::new(Claims::default());
    for (uid, name, picks) in [("uid-a", "one-gpu", vec![6]), ("uid-b", "two-gpus", vec![1, 2])] {
        claims.by_name.lock().unwrap().insert(("ns1".into(), name.into()), claim(uid, name, &node, &picks));
    }
    let (stop, task) = start(&paths, node.clone(), host.clone(), claims.clone());

    // The plugin watcher finds the registration socket and asks who it is.
    wait_for(&paths.registration_socket).await;
    assert_eq!(paths.registration_socket, dirs.plugins_registry.join("gpu.nvidia.com-reg.sock"));
    let mut watcher = reg::registration_client::RegistrationClient::new(uds::connect(&paths.registration_socket).await.unwrap());
    let info = watcher.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "DRAPlugin");
    assert_eq!(info.name, "gpu.nvidia.com");
    assert_eq!(info.endpoint, dirs.plugins.join("gpu.nvidia.com/dra.sock").display().to_string());
    assert_eq!(info.supported_versions, vec!["v1.DRAPlugin".to_string()]);
    watcher.notify_registration_status(reg::RegistrationStatus { plugin_registered: true, error: String::new() }).await.unwrap();

    // Prepare two good claims and two bad ones in one call.
    let mut dra = pb::dra_plugin_client::DraPluginClient::new(uds::connect(Path::new(&info.endpoint)).await.unwrap());
    let request = pb::NodePrepareResourcesRequest {
        claims: vec![
            pbclaim("ns1", "uid-a", "one-gpu"),
            pbclaim("ns1", "", "malformed"),
            pbclaim("ns1", "uid-b", "two-gpus"),
            pbclaim("ns1", "uid-x", "missing"),
        ],
    };
    let resp = dra.node_prepare_resources(request.clone()).await.unwrap().into_inner();
    assert_eq!(resp.claims.len(), 4);
    let a = &resp.claims["uid-a"];
    assert_eq!(a.error, "");
    assert_eq!(a.devices.len(), 1);
    assert_eq!(a.devices[0].device_name, node.gpus[6].uuid.to_lowercase());
    assert_eq!(a.devices[0].pool_name, NODE);
    assert_eq!(a.devices[0].cdi_device_ids, cdi::device_ids("uid-a", &a.devices[0].device_name));
    let b = &resp.claims["uid-b"];
    assert_eq!(b.error, "");
    assert_eq!(b.devices.len(), 2);
    assert!(resp.claims[""].error.contains("malformed"), "{:?}", resp.claims[""]);
    assert!(resp.claims["uid-x"].error.contains("not found"), "{:?}", resp.claims["uid-x"]);

    // The CDI spec of claim b names its GPUs and per-device sharing.
    let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(cdi::spec_path(&cdi_root, "uid-b")).unwrap()).unwrap();
    assert_eq!(spec["kind"], "k8s.gpu.nvidia.com/gpu");
    let text = spec.to_string();
    assert!(text.contains(&format!("NVIDIA_VISIBLE_DEVICES={},{}", node.gpus[1].uuid, node.gpus[2].uuid)), "{text}");
    assert!(text.contains("_TIMESLICE_INTERVAL=Long"), "{text}");

    // In-pod view through the CDI edits.
    let ids: Vec<String> = b.devices.iter().flat_map(|d| d.cdi_device_ids.clone()).collect();
    // NODE_NAME reaches the container through the claim's CDI devices (upstream: the common device).
    let (env, _) = fake_kubelet::cdi_edits(&cdi_root, &ids);
    assert_eq!(env.get("NODE_NAME").map(String::as_str), Some(NODE), "NODE_NAME injected: {env:?}");
    match (fake_kubelet::fake_nvml(), fake_kubelet::nvidia_smi()) {
        (Some(_), Some(smi)) => {
            let (env, mounts) = fake_kubelet::cdi_edits(&cdi_root, &ids);
            let container = fake_kubelet::Container::new(&tmp.path().join("rootfs"), env, &mounts);
            let out = container.run(&smi, &["-L"]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text} {}", String::from_utf8_lossy(&out.stderr));
            let listed: Vec<&str> = text.lines().filter_map(|l| l.split("(UUID: ").nth(1)).map(|u| u.trim_end_matches(')')).collect();
            assert_eq!(listed, vec![node.gpus[1].uuid.as_str(), node.gpus[2].uuid.as_str()], "{text}");
        }
        _ => eprintln!("SKIP in-pod view: build nvml-shim and run scripts/fetch-nvidia.sh"),
    }

    // Restart the plugin with an API that has forgotten the claims: prepared claims answer
    // from the checkpoint, identically.
    let _ = stop.send(());
    task.await.unwrap();
    let gets_before = *claims.gets.lock().unwrap();
    let empty = Arc::new(Claims::default());
    let (stop, task) = start(&paths, node.clone(), host.clone(), empty.clone());
    wait_for(&paths.plugin_socket).await;
    let mut dra = pb::dra_plugin_client::DraPluginClient::new(uds::connect(&paths.plugin_socket).await.unwrap());
    let again = dra
        .node_prepare_resources(pb::NodePrepareResourcesRequest {
            claims: vec![pbclaim("ns1", "uid-a", "one-gpu"), pbclaim("ns1", "uid-b", "two-gpus")],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.claims["uid-a"], resp.claims["uid-a"]);
    assert_eq!(again.claims["uid-b"], resp.claims["uid-b"]);
    assert_eq!(*empty.gets.lock().unwrap(), 0, "answered from the checkpoint");
    assert!(gets_before >= 3);

    // Unprepare twice: no error, spec gone, and a re-prepare would ask the API again.
    for _ in 0..2 {
        let un = dra
            .node_unprepare_resources(pb::NodeUnprepareResourcesRequest { claims: vec![pbclaim("ns1", "uid-b", "two-gpus")] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(un.claims["uid-b"].error, "");
    }
    assert!(!cdi::spec_path(&cdi_root, "uid-b").exists());
    assert!(cdi::spec_path(&cdi_root, "uid-a").exists());
    let re = dra
        .node_prepare_resources(pb::NodePrepareResourcesRequest { claims: vec![pbclaim("ns1", "uid-b", "two-gpus")] })
        .await
        .unwrap()
        .into_inner();
    assert!(re.claims["uid-b"].error.contains("not found"));
    let _ = stop.send(());
    task.await.unwrap();
}

/// gRPC health as the kubelet's liveness probe asks it: SERVING while both plugin sockets
/// answer, NOT_SERVING once they are gone, NotFound for an unknown service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_plugin_sockets() {
    use fake_gpu_operator::kubelet::dra::liveness;
    use fake_gpu_operator::kubelet::proto::health::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };

    let tmp = tempfile::tempdir().unwrap();
    let files = NodeFiles::new(&tmp.path().join("nodes"), NODE);
    std::fs::create_dir_all(&files.dir).unwrap();
    std::fs::write(files.config(), format!(r#"{{"node": "{NODE}", "profile": "h100", "gpus": 2}}"#)).unwrap();
    let node = Arc::new(load_node(&files, NODE).unwrap());
    let dirs = KubeletDirs {
        device_plugins: tmp.path().join("device-plugins"),
        plugins_registry: tmp.path().join("plugins_registry"),
        plugins: tmp.path().join("plugins"),
    };
    let paths = Paths::new(&dirs, &tmp.path().join("cdi"));
    let host = HostFiles { nvml_lib: None, cuda_lib: None, nvidia_smi: None, node_dir: files.dir.clone(), node_name: NODE.into() };
    let (stop, task) = start(&paths, node, host, Arc::new(Claims::default()));
    wait_for(&paths.plugin_socket).await;
    wait_for(&paths.registration_socket).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (hstop, hrx) = tokio::sync::oneshot::channel::<()>();
    let health = tokio::spawn(liveness::serve_on(listener, paths.clone(), async {
        let _ = hrx.await;
    }));
    let mut client = HealthClient::connect(format!("http://{addr}")).await.unwrap();
    let check = |service: &str| HealthCheckRequest { service: service.into() };
    for service in ["liveness", ""] {
        let r = client.check(check(service)).await.unwrap().into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
    let e = client.check(check("readiness")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);

    // The plugin stops: its sockets are gone, the probe fails.
    let _ = stop.send(());
    task.await.unwrap();
    let r = client.check(check("liveness")).await.unwrap().into_inner();
    assert_eq!(r.status, ServingStatus::NotServing as i32);
    let _ = hstop.send(());
    health.await.unwrap().unwrap();
}
