//! A fake kubelet: the kubelet side of the device plugin (Registration server on
//! `kubelet.sock`, DevicePlugin client, a device manager that records each Allocate for its
//! pod/container and serves the records over PodResources v1), plugin registration (the plugin
//! watcher's GetInfo / NotifyRegistrationStatus client) and DRA (NodePrepare/NodeUnprepare
//! client), over unix sockets, plus a "container runtime" that applies Allocate/CDI edits to a
//! local process.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fake_gpu_operator::kubelet::proto::deviceplugin as dp;
use fake_gpu_operator::kubelet::proto::deviceplugin::registration_server::{Registration, RegistrationServer};
use fake_gpu_operator::kubelet::proto::podresources as pr;
use fake_gpu_operator::kubelet::proto::podresources::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use fake_gpu_operator::kubelet::uds;
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// The kubelet's device plugin Registration service; each Register lands in a channel.
struct Registrar(mpsc::UnboundedSender<dp::RegisterRequest>);

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, request: Request<dp::RegisterRequest>) -> Result<Response<dp::Empty>, Status> {
        let r = request.into_inner();
        if r.version != "v1beta1" {
            return Err(Status::invalid_argument(format!("unsupported version {}", r.version)));
        }
        let _ = self.0.send(r);
        Ok(Response::new(dp::Empty {}))
    }
}

/// The kubelet device manager's records: which devices each pod's containers were allocated.
/// Like the real kubelet, an allocation is recorded only after the plugin's Allocate returned.
#[derive(Clone, Default)]
pub struct DeviceManager(Arc<Mutex<Vec<pr::PodResources>>>);

impl DeviceManager {
    pub fn record(&self, namespace: &str, pod: &str, container: &str, resource: &str, devices: &[String]) {
        let mut pods = self.0.lock().unwrap();
        let idx = match pods.iter().position(|p| p.namespace == namespace && p.name == pod) {
            Some(i) => i,
            None => {
                pods.push(pr::PodResources { name: pod.into(), namespace: namespace.into(), containers: vec![] });
                pods.len() - 1
            }
        };
        let p = &mut pods[idx];
        let c = match p.containers.iter().position(|c| c.name == container) {
            Some(i) => &mut p.containers[i],
            None => {
                p.containers.push(pr::ContainerResources { name: container.into(), ..Default::default() });
                p.containers.last_mut().unwrap()
            }
        };
        c.devices.retain(|d| d.resource_name != resource);
        c.devices.push(pr::ContainerDevices { resource_name: resource.into(), device_ids: devices.to_vec(), topology: None });
    }

    /// The pod is gone: its devices are free again.
    pub fn remove_pod(&self, namespace: &str, pod: &str) {
        self.0.lock().unwrap().retain(|p| !(p.namespace == namespace && p.name == pod));
    }

    pub fn pods(&self) -> Vec<pr::PodResources> {
        self.0.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl PodResourcesLister for DeviceManager {
    async fn list(&self, _: Request<pr::ListPodResourcesRequest>) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        Ok(Response::new(pr::ListPodResourcesResponse { pod_resources: self.pods() }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Ok(Response::new(pr::AllocatableResourcesResponse::default()))
    }

    async fn get(&self, request: Request<pr::GetPodResourcesRequest>) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        let r = request.into_inner();
        match self.pods().into_iter().find(|p| p.namespace == r.pod_namespace && p.name == r.pod_name) {
            Some(p) => Ok(Response::new(pr::GetPodResourcesResponse { pod_resources: Some(p) })),
            None => Err(Status::not_found(format!("pod {}/{} not found", r.pod_namespace, r.pod_name))),
        }
    }
}

/// Serves `devices` as PodResources v1 on `socket` until the task is dropped or aborted.
pub fn serve_pod_resources(socket: &Path, devices: DeviceManager) -> tokio::task::JoinHandle<()> {
    let incoming = uds::bind(socket).expect("bind pod-resources socket");
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(devices))
            .serve_with_incoming(incoming)
            .await
            .expect("pod-resources server");
    })
}

/// A running fake kubelet serving `kubelet.sock` in `dir`.
pub struct Kubelet {
    pub dir: PathBuf,
    pub registrations: mpsc::UnboundedReceiver<dp::RegisterRequest>,
    /// Survives restarts (the real kubelet checkpoints it).
    pub devices: DeviceManager,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Kubelet {
    pub fn start(dir: &Path) -> Kubelet {
        let (tx, rx) = mpsc::unbounded_channel();
        let incoming = uds::bind(&dir.join("kubelet.sock")).expect("bind kubelet.sock");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(RegistrationServer::new(Registrar(tx)))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .expect("kubelet server");
        });
        Kubelet { dir: dir.to_path_buf(), registrations: rx, devices: DeviceManager::default(), stop: Some(stop), task }
    }

    /// A kubelet restart: the server stops, the kubelet removes every socket in the
    /// directory (its own and the plugins'), and a new one starts.
    pub async fn restart(mut self) -> Kubelet {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = (&mut self.task).await;
        for entry in std::fs::read_dir(&self.dir).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "sock") {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let mut next = Kubelet::start(&self.dir);
        next.devices = self.devices.clone();
        next
    }

    pub async fn next_registration(&mut self, within: std::time::Duration) -> Option<dp::RegisterRequest> {
        tokio::time::timeout(within, self.registrations.recv()).await.ok().flatten()
    }

    /// What the kubelet's device manager does for one container of a pod: Allocate on the
    /// plugin, then (after it returned) record the devices for that pod/container.
    pub async fn allocate(
        &self,
        plugin: &mut dp::device_plugin_client::DevicePluginClient<tonic::transport::Channel>,
        resource: &str,
        (namespace, pod, container): (&str, &str, &str),
        devices: &[String],
    ) -> Result<dp::AllocateResponse, Status> {
        let resp = plugin
            .allocate(dp::AllocateRequest { container_requests: vec![dp::ContainerAllocateRequest { devices_ids: devices.to_vec() }] })
            .await?
            .into_inner();
        self.devices.record(namespace, pod, container, resource, devices);
        Ok(resp)
    }

    /// Dials the plugin that registered with `endpoint`.
    pub async fn plugin(&self, endpoint: &str) -> dp::device_plugin_client::DevicePluginClient<tonic::transport::Channel> {
        dp::device_plugin_client::DevicePluginClient::new(uds::connect(&self.dir.join(endpoint)).await.expect("dial plugin"))
    }
}

/// What a container runtime does with env + mounts, for a local process: each mount becomes
/// a symlink at `<rootfs>/<container path>`, values naming a container path are rewritten
/// into the rootfs, and the library directory goes on LD_LIBRARY_PATH.
pub struct Container {
    pub rootfs: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl Container {
    pub fn new(rootfs: &Path, env: BTreeMap<String, String>, mounts: &[(String, String)]) -> Container {
        for (host, container) in mounts {
            let at = rootfs.join(container.trim_start_matches('/'));
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            let _ = std::fs::remove_file(&at);
            std::os::unix::fs::symlink(host, &at).unwrap();
        }
        let mut env: BTreeMap<String, String> = env
            .into_iter()
            .map(|(k, v)| {
                let mapped = if v.starts_with('/') && mounts.iter().any(|(_, c)| v.starts_with(c.as_str())) {
                    rootfs.join(v.trim_start_matches('/')).display().to_string()
                } else {
                    v
                };
                (k, mapped)
            })
            .collect();
        env.insert("LD_LIBRARY_PATH".into(), rootfs.join("usr/lib/x86_64-linux-gnu").display().to_string());
        Container { rootfs: rootfs.to_path_buf(), env }
    }

    /// Runs `program` with only the container's environment (plus PATH).
    pub fn run(&self, program: &Path, args: &[&str]) -> std::process::Output {
        std::process::Command::new(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(&self.env)
            .output()
            .expect("run in container")
    }
}

/// Applies CDI container edits of the devices named by `ids` from spec files in `cdi_root`:
/// env, mounts, and device nodes (as mounts of their host device).
pub fn cdi_edits(cdi_root: &Path, ids: &[String]) -> (BTreeMap<String, String>, Vec<(String, String)>) {
    let mut env = BTreeMap::new();
    let mut mounts = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(cdi_root).unwrap().flatten() {
        let spec: serde_json::Value = serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
        let kind = spec["kind"].as_str().unwrap().to_string();
        for d in spec["devices"].as_array().unwrap() {
            let id = format!("{kind}={}", d["name"].as_str().unwrap());
            if !ids.contains(&id) || !seen.insert(id) {
                continue;
            }
            for e in d["containerEdits"]["env"].as_array().into_iter().flatten() {
                let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
                env.insert(k.to_string(), v.to_string());
            }
            for m in d["containerEdits"]["mounts"].as_array().into_iter().flatten() {
                mounts.push((m["hostPath"].as_str().unwrap().to_string(), m["containerPath"].as_str().unwrap().to_string()));
            }
            // A device node appears at its path, backed by the host's (hostPath, else path).
            for n in d["containerEdits"]["deviceNodes"].as_array().into_iter().flatten() {
                let path = n["path"].as_str().unwrap().to_string();
                mounts.push((n["hostPath"].as_str().map_or_else(|| path.clone(), str::to_string), path));
            }
        }
    }
    (env, mounts)
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// The fake NVML built by `cargo build -p nvml-shim`, if present.
pub fn fake_nvml() -> Option<PathBuf> {
    let p = workspace().join("target/debug/libnvidia_ml.so");
    p.exists().then_some(p)
}

/// The fake CUDA driver built by `cargo build -p cuda-shim`, if present.
pub fn fake_cuda() -> Option<PathBuf> {
    let p = workspace().join("target/debug/libcuda.so");
    p.exists().then_some(p)
}

/// NVIDIA's nvidia-smi unpacked by scripts/fetch-nvidia.sh, if present.
pub fn nvidia_smi() -> Option<PathBuf> {
    let cache = std::env::var("FAKEGPU_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/fake-gpu-operator"));
    let root = std::env::var("FAKEGPU_NVIDIA_ROOT").map(PathBuf::from).unwrap_or_else(|_| cache.join("nvidia-535.261.03-1/root"));
    let p = root.join("usr/lib/nvidia/current/nvidia-smi");
    p.exists().then_some(p)
}
