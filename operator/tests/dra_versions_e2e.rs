//! DRA on API servers that serve no `resource.k8s.io/v1` (Kubernetes 1.31–1.33, or a newer one
//! with `--runtime-config`): the test starts its own control planes (`fakegpu cluster up
//! --runtime-config resource.k8s.io/v1=false,resource.k8s.io/<old>=true`, one KWOK H100×2 node)
//! and runs kwok-dra-plugin against each:
//!
//! * only v1beta2 served: the slice holds the model's GPUs in the flat v1beta2 shape, and both
//!   DeviceClasses are there;
//! * only v1beta1 served, with the kube-scheduler of the older release in
//!   tests/cluster/legacy.env (1.34+ schedulers allocate only through v1): the slice holds the
//!   devices under `basic`, and a pod with a ResourceClaim of DeviceClass `gpu.nvidia.com` is
//!   scheduled to the KWOK node with a device of our slice allocated; the operator reads that
//!   claim back into its v1 model.
//!
//! Needs the control-plane binaries (`FAKEGPU_K8S_BIN_DIR`, set by scripts/cluster-ci.sh); skips
//! without them unless CI=true. Builds the older scheduler on first use (tests/cluster/build-legacy.sh).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use fake_gpu_operator::kubelet::dra::{attributes, DRIVER};
use fake_gpu_operator::resource_api::{self, DraApi, DraVersion};
use fakegpu_cluster::{ClusterCommand, UpArgs};
use fakegpu_model::{NodeSpec, SimulatedNode};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};

const PROFILE: &str = "h100";
const GPUS: u32 = 2;
const POOL: &str = "dra-old";
const NODE: &str = "kwok-dra-old-0";

/// Stops the cluster of `run_dir` when dropped (also when the test panics).
struct ClusterGuard;

impl Drop for ClusterGuard {
    fn drop(&mut self) {
        let _ = fakegpu_cluster::run(ClusterCommand::Down);
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds (or reuses) the older kube-scheduler; its bin directory.
fn legacy_scheduler() -> PathBuf {
    let out = Command::new(repo_root().join("tests/cluster/build-legacy.sh")).output().expect("run build-legacy.sh");
    assert!(out.status.success(), "build-legacy.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let bin = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().trim().to_string();
    PathBuf::from(bin).join("kube-scheduler")
}

fn model() -> SimulatedNode {
    SimulatedNode::new(NodeSpec::builtin(PROFILE, Some(GPUS), NODE).unwrap())
}

fn model_uuids() -> BTreeSet<String> {
    model().gpus.iter().map(|g| g.uuid.to_lowercase()).collect()
}

fn dynamic(client: &kube::Client, version: DraVersion, kind: &str, plural: &str, ns: Option<&str>) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(resource_api::GROUP, version.as_str(), kind), plural);
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    }
}

async fn poll<T, F, Fut>(what: &str, timeout: Duration, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = std::time::Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(last) if start.elapsed() > timeout => panic!("timed out after {timeout:?} waiting for {what}; last: {last}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// One control plane serving DRA only in `version`: slices and classes in that version's shape;
/// with a scheduler that speaks it, a claim allocated from our slice.
fn run_case(version: DraVersion, scheduler: Option<PathBuf>) {
    let run_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dra-versions-{version}"));
    // One test in this binary: nothing else reads the variable concurrently.
    std::env::set_var("FAKEGPU_RUN_DIR", &run_dir);
    let _ = fakegpu_cluster::run(ClusterCommand::Down); // a run dir left by a killed earlier run
    let guard = ClusterGuard;
    let mut scheduler_args = Vec::new();
    if scheduler.is_some() {
        // DRA is beta and off by default in the 1.33 scheduler.
        scheduler_args.push("--feature-gates=DynamicResourceAllocation=true".to_string());
    }
    let up = UpArgs {
        nodes: 1,
        pool: POOL.into(),
        profile: Some(PROFILE.into()),
        gpus: Some(GPUS),
        bin_dir: std::env::var_os("FAKEGPU_K8S_BIN_DIR").map(PathBuf::from),
        real_node: false,
        node_bin_dir: None,
        no_operator: true,
        compute_domains: false,
        audit_log: None,
        runtime_config: Some(format!("resource.k8s.io/v1=false,resource.k8s.io/{version}=true")),
        scheduler_bin: scheduler.clone(),
        scheduler_args,
    };
    assert_eq!(fakegpu_cluster::run(ClusterCommand::Up(Box::new(up))).expect("cluster up"), 0, "cluster up");
    let kubeconfig = fakegpu_cluster::paths::kubeconfig_in(&run_dir);

    // The plugin as the chart runs it (its own process, discovering the version itself).
    let out = Command::new(env!("CARGO_BIN_EXE_fake-gpu-operator"))
        .args(["kwok-dra-plugin", "--namespace", "default", "--once"])
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env_remove("TOPOLOGY_CM_NAMESPACE")
        .output()
        .expect("run kwok-dra-plugin");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kwok-dra-plugin --once failed: {log}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("nodes=1 writes=1"), "one node, one slice: {log}");
    assert!(log.contains(&format!("resource.k8s.io/{version}")), "the plugin reports the version it chose: {log}");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let config = fakegpu_cluster::kubeconfig::client_config(&kubeconfig).await.unwrap();
        let client = kube::Client::try_from(config).unwrap();
        assert_eq!(resource_api::served_versions(&client).await.unwrap(), vec![version.as_str().to_string()]);
        assert_eq!(resource_api::discover(&client).await.unwrap(), version);

        // The slice, read in the served version's own shape.
        let slices = dynamic(&client, version, "ResourceSlice", "resourceslices", None);
        let slice = slices.get(&format!("kwok-{NODE}-gpu")).await.expect("the KWOK node's slice");
        let spec = &slice.data["spec"];
        assert_eq!(spec["driver"], DRIVER);
        assert_eq!(spec["nodeName"], NODE);
        let devices = spec["devices"].as_array().unwrap();
        let attrs =
            |d: &serde_json::Value| if version == DraVersion::V1beta1 { d["basic"]["attributes"].clone() } else { d["attributes"].clone() };
        let capacity =
            |d: &serde_json::Value| if version == DraVersion::V1beta1 { d["basic"]["capacity"].clone() } else { d["capacity"].clone() };
        let names: BTreeSet<String> = devices.iter().map(|d| d["name"].as_str().unwrap().to_string()).collect();
        assert_eq!(names, model_uuids(), "the model's GPUs of that node");
        let sim = model();
        let memory = attributes::binary_quantity(sim.spec.profile.memory.total_mib << 20).0;
        for d in devices {
            assert_eq!(attrs(d)["type"]["string"], "gpu", "{d}");
            assert_eq!(attrs(d)["productName"]["string"], sim.spec.profile.product_name.as_str(), "{d}");
            assert_eq!(capacity(d)["memory"]["value"], memory.as_str(), "{d}");
            if version == DraVersion::V1beta1 {
                assert!(d.get("attributes").is_none(), "v1beta1 keeps them under basic: {d}");
            }
        }

        // Both DeviceClasses, in that version.
        let classes = dynamic(&client, version, "DeviceClass", "deviceclasses", None);
        for name in [DRIVER, "mig.nvidia.com"] {
            let c = classes.get(name).await.unwrap_or_else(|e| panic!("DeviceClass {name}: {e}"));
            let expr = c.data["spec"]["selectors"][0]["cel"]["expression"].as_str().unwrap().to_string();
            assert!(expr.contains(&format!("device.driver == '{DRIVER}'")), "{expr}");
        }

        if scheduler.is_some() {
            allocate(&client, version).await;
        }
    });
    drop(guard);
}

/// A claim for one `gpu.nvidia.com` device and a pod using it: the (older) scheduler allocates
/// a device of our slice and binds the pod to the KWOK node; kwok runs it.
async fn allocate(client: &kube::Client, version: DraVersion) {
    let ns = "default";
    let claims = dynamic(client, version, "ResourceClaim", "resourceclaims", Some(ns));
    // Written as the operator writes claims: the v1 model, converted.
    let claim: k8s_openapi::api::resource::v1::ResourceClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "one-gpu", "namespace": ns},
        "spec": {"devices": {"requests": [{"name": "gpu", "exactly": {"deviceClassName": DRIVER, "allocationMode": "ExactCount", "count": 1}}]}}
    }))
    .unwrap();
    let dra = DraApi::new(client.clone()).await.unwrap();
    assert_eq!(dra.version(), version);
    dra.create(Some(ns), &claim).await.expect("claim created in the served version");
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "uses-gpu"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "gpu"}]}}],
            "resourceClaims": [{"name": "gpu", "resourceClaimName": "one-gpu"}]
        }
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let node = poll("the pod bound and Running", Duration::from_secs(90), || async {
        let p = pods.get("uses-gpu").await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        match p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            Some(n) if phase == "Running" => Ok(n),
            n => Err(format!("node {n:?}, phase {phase:?}, conditions {:?}", p.status.and_then(|s| s.conditions))),
        }
    })
    .await;
    assert_eq!(node, NODE);
    // As served (v1beta1 results) and as the operator reads it (its v1 model).
    let served = claims.get("one-gpu").await.unwrap();
    let result = &served.data["status"]["allocation"]["devices"]["results"][0];
    assert_eq!((result["driver"].as_str(), result["pool"].as_str()), (Some(DRIVER), Some(NODE)));
    assert!(model_uuids().contains(result["device"].as_str().unwrap()), "{result}");
    let read: k8s_openapi::api::resource::v1::ResourceClaim = dra.get(Some(ns), "one-gpu").await.unwrap();
    let exactly = read.spec.as_ref().unwrap().devices.as_ref().unwrap().requests.as_ref().unwrap()[0].exactly.clone().unwrap();
    assert_eq!(exactly.device_class_name, DRIVER);
    let status = read.status.unwrap();
    assert_eq!(status.allocation.unwrap().devices.unwrap().results.unwrap()[0].device, result["device"].as_str().unwrap());
    assert_eq!(status.reserved_for.unwrap()[0].name, "uses-gpu");
}

#[test]
fn dra_on_api_servers_without_v1() {
    if std::env::var_os("FAKEGPU_K8S_BIN_DIR").is_none() && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!("skipping dra_on_api_servers_without_v1: no FAKEGPU_K8S_BIN_DIR (run under scripts/cluster-ci.sh)");
        return;
    }
    run_case(DraVersion::V1beta2, None);
    run_case(DraVersion::V1beta1, Some(legacy_scheduler()));
}
