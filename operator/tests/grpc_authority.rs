//! The kubelet's own gRPC client (grpc-go, built by tests/grpc-authority/run.sh) against the DRA
//! plugin's sockets: dialing the bare socket path makes grpc-go send that path as `:authority`,
//! which h2 refuses with PROTOCOL_ERROR. Through `uds::bind` (and so `FixAuthority`) GetInfo and
//! NodePrepareResources succeed; a tonic server on a plain unix listener refuses the same call,
//! so this test fails if the rewrite stops working. Run by tests/grpc-authority/run.sh, which
//! sets FAKEGPU_GRPC_INFO to the built client.

use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use fake_gpu_operator::kubelet::dra::plugin::{self, ClaimSource, DraService, Paths};
use fake_gpu_operator::kubelet::pod_view::HostFiles;
use fake_gpu_operator::kubelet::proto::dra::dra_plugin_server::DraPluginServer;
use fake_gpu_operator::kubelet::{load_node, KubeletDirs, NodeFiles};
use k8s_openapi::api::resource::v1::ResourceClaim;

const NODE: &str = "authority-node-1";

/// No claims: the client sends NodePrepareResources with none.
struct NoClaims;

#[tonic::async_trait]
impl ClaimSource for NoClaims {
    async fn get(&self, namespace: &str, name: &str) -> Result<ResourceClaim, String> {
        Err(format!("claim {namespace}/{name} not found"))
    }
}

fn grpc_info(args: &[&str]) -> Output {
    let bin = std::env::var("FAKEGPU_GRPC_INFO").expect("FAKEGPU_GRPC_INFO names the grpc-info client (tests/grpc-authority/run.sh)");
    std::process::Command::new(bin).args(args).output().expect("running grpc-info")
}

async fn run_grpc_info(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || grpc_info(&args.iter().map(String::as_str).collect::<Vec<_>>())).await.unwrap()
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

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the grpc-go client: run tests/grpc-authority/run.sh"]
async fn grpc_go_client_with_socket_path_authority() {
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
    let new_service = || DraService::new(node.clone(), host.clone(), &paths, Arc::new(NoClaims)).unwrap();

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serve_paths = paths.clone();
    let service = new_service();
    let server = tokio::spawn(async move {
        plugin::serve(&serve_paths, service, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    wait_for(&paths.registration_socket).await;
    wait_for(&paths.plugin_socket).await;

    let reg = paths.registration_socket.display().to_string();
    let out = run_grpc_info(&["getinfo", &reg]).await;
    assert!(out.status.success(), "GetInfo with :authority {reg}: {}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("type=DRAPlugin name=gpu.nvidia.com endpoint={} versions=v1.DRAPlugin", paths.plugin_socket.display())
    );
    let dra = paths.plugin_socket.display().to_string();
    let out = run_grpc_info(&["prepare", &dra]).await;
    assert!(out.status.success(), "NodePrepareResources with :authority {dra}: {}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "prepare=ok");
    let _ = stop.send(());
    server.await.unwrap();

    // The same service on a plain listener: h2 refuses the socket-path authority.
    let plain_path = tmp.path().join("plain.sock");
    let listener = tokio::net::UnixListener::bind(&plain_path).unwrap();
    let plain = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DraPluginServer::new(plugin::ClaimServer(new_service())))
            .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
    );
    let out = run_grpc_info(&["prepare", &plain_path.display().to_string()]).await;
    assert!(!out.status.success(), "a plain h2 server accepted a socket-path authority: {}", text(&out));
    assert!(text(&out).contains("PROTOCOL_ERROR"), "{}", text(&out));
    plain.abort();
}
