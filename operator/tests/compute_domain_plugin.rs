//! The compute-domain.nvidia.com kubelet plugin against the kubelet's side of the protocols
//! (plugin watcher: GetInfo + NotifyRegistrationStatus; DRA client): prepare of a Single and an
//! All claim returns CDI ids whose spec holds the channel device nodes (one, or every channel of
//! the node) and the domain's variables; a claim without the opaque config fails with a clear
//! error in its own entry; a restart answers from the checkpoint without the API; unprepare is
//! idempotent and removes the spec; in the container (the fake runtime applying the CDI
//! edits) the channel is a character device at NVIDIA's path; gRPC health is SERVING while both sockets answer.

mod fake_kubelet;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_gpu_operator::compute_domain::plugin::{self, ChannelService};
use fake_gpu_operator::compute_domain::{channels, DRIVER};
use fake_gpu_operator::kubelet::dra::liveness;
use fake_gpu_operator::kubelet::dra::plugin::ClaimSource;
use fake_gpu_operator::kubelet::proto::dra as pb;
use fake_gpu_operator::kubelet::proto::health::health_check_response::ServingStatus;
use fake_gpu_operator::kubelet::proto::health::health_client::HealthClient;
use fake_gpu_operator::kubelet::proto::health::HealthCheckRequest;
use fake_gpu_operator::kubelet::proto::registration as reg;
use fake_gpu_operator::kubelet::{uds, KubeletDirs};
use k8s_openapi::api::resource::v1::ResourceClaim;
use serde_json::json;

const NODE: &str = "gb-node-000";
const CHANNELS: u32 = 16;

#[derive(Default)]
struct Claims {
    by_name: Mutex<HashMap<String, ResourceClaim>>,
    gets: Mutex<usize>,
}

#[tonic::async_trait]
impl ClaimSource for Claims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String> {
        *self.gets.lock().unwrap() += 1;
        self.by_name.lock().unwrap().get(name).cloned().ok_or_else(|| format!("claim {namespace}/{name} not found"))
    }
}

/// A claim allocated `device` on this node, as the scheduler leaves it; `mode` None = no opaque config.
fn claim(uid: &str, name: &str, device: &str, mode: Option<&str>) -> ResourceClaim {
    let config = mode.map_or(json!([]), |m| {
        json!([{"source": "FromClaim", "requests": [], "opaque": {"driver": DRIVER, "parameters":
            {"apiVersion": "resource.nvidia.com/v1beta1", "kind": "ComputeDomainChannelConfig", "domainID": "dom-uid-1", "allocationMode": m}}}])
    });
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "ns1", "uid": uid},
        "spec": {"devices": {}},
        "status": {"allocation": {"devices": {"results": [{"request": "channel", "driver": DRIVER, "pool": NODE, "device": device}], "config": config}}}
    }))
    .unwrap()
}

fn pbclaim(uid: &str, name: &str) -> pb::Claim {
    pb::Claim { namespace: "ns1".into(), uid: uid.into(), name: name.into() }
}

fn start(dirs: &KubeletDirs, cdi: &Path, claims: Arc<Claims>) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let service = ChannelService::new(NODE, CHANNELS, dirs, cdi, claims).unwrap();
    let (paths, _) = plugin::paths(dirs, cdi);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        plugin::serve(&paths, service, async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    (tx, task)
}

async fn appear(path: &Path) {
    for _ in 0..100 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} did not appear", path.display());
}

async fn check(addr: std::net::SocketAddr, service: &str) -> Result<ServingStatus, tonic::Code> {
    let mut client = HealthClient::connect(format!("http://{addr}")).await.unwrap();
    match client.check(HealthCheckRequest { service: service.into() }).await {
        Ok(r) => Ok(ServingStatus::try_from(r.into_inner().status).unwrap()),
        Err(s) => Err(s.code()),
    }
}

fn device_nodes(spec: &serde_json::Value) -> Vec<String> {
    spec["devices"][0]["containerEdits"]["deviceNodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_prepare_restart_unprepare() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = KubeletDirs {
        device_plugins: tmp.path().join("device-plugins"),
        plugins_registry: tmp.path().join("plugins_registry"),
        plugins: tmp.path().join("plugins"),
    };
    let cdi = tmp.path().join("cdi");
    let (paths, channel_dir) = plugin::paths(&dirs, &cdi);
    let claims = Arc::new(Claims::default());
    for c in [
        claim("uid-s", "single", "channel-3", Some("Single")),
        claim("uid-a", "all", "channel-4", Some("All")),
        claim("uid-n", "bare", "channel-5", None),
    ] {
        claims.by_name.lock().unwrap().insert(c.metadata.name.clone().unwrap(), c);
    }
    let (stop, task) = start(&dirs, &cdi, claims.clone());

    // The plugin watcher sees the registration socket and asks who it is.
    appear(&paths.registration_socket).await;
    assert_eq!(paths.registration_socket, dirs.plugins_registry.join("compute-domain.nvidia.com-reg.sock"));
    let mut watcher = reg::registration_client::RegistrationClient::new(uds::connect(&paths.registration_socket).await.unwrap());
    let info = watcher.get_info(reg::InfoRequest {}).await.unwrap().into_inner();
    assert_eq!((info.r#type.as_str(), info.name.as_str()), ("DRAPlugin", DRIVER));
    assert_eq!(info.endpoint, dirs.plugins.join("compute-domain.nvidia.com/dra.sock").display().to_string());
    assert_eq!(info.supported_versions, vec!["v1.DRAPlugin".to_string()]);
    watcher.notify_registration_status(reg::RegistrationStatus { plugin_registered: true, error: String::new() }).await.unwrap();

    // gRPC health, as the kubelet's liveness probe asks it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health_addr = listener.local_addr().unwrap();
    let health_paths = paths.clone();
    let health_task = tokio::spawn(async move { liveness::serve_on(listener, health_paths, std::future::pending()).await.unwrap() });
    assert_eq!(check(health_addr, "").await, Ok(ServingStatus::Serving));
    assert_eq!(check(health_addr, "liveness").await, Ok(ServingStatus::Serving));
    assert_eq!(check(health_addr, "readiness").await, Err(tonic::Code::NotFound));

    let mut dra = pb::dra_plugin_client::DraPluginClient::new(uds::connect(Path::new(&info.endpoint)).await.unwrap());
    let request =
        pb::NodePrepareResourcesRequest { claims: vec![pbclaim("uid-s", "single"), pbclaim("uid-a", "all"), pbclaim("uid-n", "bare")] };
    let resp = dra.node_prepare_resources(request).await.unwrap().into_inner();
    let s = &resp.claims["uid-s"];
    assert_eq!(s.error, "");
    assert_eq!(s.devices.len(), 1);
    assert_eq!((s.devices[0].device_name.as_str(), s.devices[0].pool_name.as_str()), ("channel-3", NODE), "pool = node");
    assert_eq!(s.devices[0].request_names, vec!["channel".to_string()]);
    assert_eq!(s.devices[0].cdi_device_ids, vec![format!("{}=uid-s-channel-3", channels::CDI_KIND)]);
    let bare = &resp.claims["uid-n"];
    assert!(bare.devices.is_empty());
    assert!(bare.error.contains("ns1/bare has no opaque config of driver compute-domain.nvidia.com"), "{}", bare.error);

    // The CDI specs: Single = its channel's device node; All = every channel of the node.
    let spec_s: serde_json::Value = serde_json::from_slice(&std::fs::read(channels::spec_path(&cdi, "uid-s")).unwrap()).unwrap();
    assert_eq!(spec_s["kind"], channels::CDI_KIND);
    assert_eq!(spec_s["devices"][0]["name"], "uid-s-channel-3");
    assert_eq!(device_nodes(&spec_s), vec!["/dev/nvidia-caps-imex-channels/channel3".to_string()]);
    let env = spec_s["devices"][0]["containerEdits"]["env"].to_string();
    assert!(env.contains("COMPUTE_DOMAIN_UUID=dom-uid-1") && env.contains("IMEX_CHANNELS=3"), "{env}");
    let spec_a: serde_json::Value = serde_json::from_slice(&std::fs::read(channels::spec_path(&cdi, "uid-a")).unwrap()).unwrap();
    let all = device_nodes(&spec_a);
    assert_eq!(all.len(), CHANNELS as usize);
    assert_eq!(all[15], "/dev/nvidia-caps-imex-channels/channel15");
    // The host side of each device node exists: a link to /dev/null.
    for c in 0..CHANNELS {
        let host = channels::host_channel(&channel_dir, c);
        assert_eq!(std::fs::read_link(&host).unwrap(), Path::new("/dev/null"), "{}", host.display());
    }
    assert!(!channels::spec_path(&cdi, "uid-n").exists());

    // The container's view (the fake runtime applies the CDI edits of the returned ids): the
    // channel device at NVIDIA's path is a character device that opens, and the env names the
    // domain and the channel.
    let (env, mounts) = fake_kubelet::cdi_edits(&cdi, &s.devices[0].cdi_device_ids);
    let rootfs = tmp.path().join("rootfs");
    let container = fake_kubelet::Container::new(&rootfs, env, &mounts);
    let channel = rootfs.join("dev/nvidia-caps-imex-channels/channel3");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata(&channel).unwrap().file_type().is_char_device());
    let out = container
        .run(Path::new("/bin/sh"), &["-c", &format!("echo $COMPUTE_DOMAIN_UUID $IMEX_CHANNELS && echo x > {}", channel.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "dom-uid-1 3");
    assert!(!rootfs.join("dev/nvidia-caps-imex-channels/channel4").exists(), "Single: only the claim's channel");

    // Restart with an API that forgot the claims: the checkpoint answers, identically.
    let _ = stop.send(());
    task.await.unwrap();
    assert!(!paths.plugin_socket.exists(), "sockets removed on stop");
    assert_eq!(check(health_addr, "liveness").await, Ok(ServingStatus::NotServing), "no plugin, not serving");
    let empty = Arc::new(Claims::default());
    let (stop, task) = start(&dirs, &cdi, empty.clone());
    appear(&paths.plugin_socket).await;
    let mut dra = pb::dra_plugin_client::DraPluginClient::new(uds::connect(&paths.plugin_socket).await.unwrap());
    let again = dra
        .node_prepare_resources(pb::NodePrepareResourcesRequest { claims: vec![pbclaim("uid-s", "single"), pbclaim("uid-a", "all")] })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.claims["uid-s"], resp.claims["uid-s"]);
    assert_eq!(again.claims["uid-a"], resp.claims["uid-a"]);
    assert_eq!(*empty.gets.lock().unwrap(), 0, "answered from the checkpoint");

    // Unprepare twice: no error, spec gone, checkpoint entry gone (a re-prepare asks the API).
    for _ in 0..2 {
        let un = dra
            .node_unprepare_resources(pb::NodeUnprepareResourcesRequest { claims: vec![pbclaim("uid-a", "all")] })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(un.claims["uid-a"].error, "");
    }
    assert!(!channels::spec_path(&cdi, "uid-a").exists());
    assert!(channels::spec_path(&cdi, "uid-s").exists());
    let re =
        dra.node_prepare_resources(pb::NodePrepareResourcesRequest { claims: vec![pbclaim("uid-a", "all")] }).await.unwrap().into_inner();
    assert!(re.claims["uid-a"].error.contains("not found"), "{:?}", re.claims["uid-a"]);
    let checkpoint = plugin::Checkpoint::load(&paths.checkpoint).unwrap();
    assert_eq!(checkpoint.claims.keys().collect::<Vec<_>>(), vec!["uid-s"]);
    assert_eq!(checkpoint.claims["uid-s"].domain_id, "dom-uid-1");
    let _ = stop.send(());
    task.await.unwrap();
    health_task.abort();

    // A checkpoint that does not parse is an error naming the file, not a silent reset.
    std::fs::write(&paths.checkpoint, b"{not json").unwrap();
    let err = ChannelService::new(NODE, CHANNELS, &dirs, &cdi, Arc::new(Claims::default())).err().unwrap().to_string();
    assert!(err.contains("computedomain-checkpoint.json"), "{err}");
}
