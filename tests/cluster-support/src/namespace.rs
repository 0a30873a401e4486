//! One namespace per test, plus the cluster-scoped objects (Nodes, DeviceClasses,
//! ResourceSlices) the test registered; all are deleted when the value is dropped, pass or fail.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::{Api, Resource};

use crate::objects::TEST_LABEL;
use crate::TestCluster;

pub struct TestNamespace {
    pub name: String,
    pub client: kube::Client,
    config: kube::Config,
    cluster_scoped: Mutex<Vec<(ApiResource, String)>>,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `t-<test>-<suffix>`: unique across parallel tests and across runs, a valid DNS label.
fn unique_name(test: &str) -> String {
    let clean: String = test.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).take(40).collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = (nanos ^ std::process::id().rotate_left(16) ^ n.wrapping_mul(0x9e37_79b9)) & 0xff_ffff;
    format!("t-{}-{suffix:06x}", clean.trim_matches('-'))
}

impl TestNamespace {
    /// Creates the namespace and waits for its `default` ServiceAccount (pods are refused
    /// until the controller-manager made it). Panics on failure: this is test setup.
    pub(crate) async fn create(cluster: &TestCluster, test: &str) -> TestNamespace {
        let name = unique_name(test);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {TEST_LABEL: "true"}}
        }))
        .expect("namespace shape");
        Api::<Namespace>::all(cluster.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        let me =
            TestNamespace { name, client: cluster.client.clone(), config: cluster.config.clone(), cluster_scoped: Mutex::new(Vec::new()) };
        let sas: Api<ServiceAccount> = me.api();
        crate::wait_for(&sas, "default", Duration::from_secs(30), "the default ServiceAccount", |_| true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        me
    }

    /// A namespaced API in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// `<namespace>-<suffix>`, for cluster-scoped objects that must not clash across tests.
    pub fn prefixed(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.name)
    }

    /// Deletes cluster-scoped object `name` of kind `K` when this namespace is dropped.
    pub fn track<K: Resource<DynamicType = ()>>(&self, name: &str) {
        self.cluster_scoped.lock().expect("not poisoned").push((ApiResource::erase::<K>(&()), name.to_string()));
    }

    /// The admin configuration, e.g. as a base for a client with other credentials.
    pub fn config(&self) -> &kube::Config {
        &self.config
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let objects = std::mem::take(&mut *self.cluster_scoped.lock().unwrap_or_else(|p| p.into_inner()));
        let name = self.name.clone();
        let config = self.config.clone();
        // Drop cannot await, and the test's runtime may be single-threaded, so the deletes run
        // on a thread with a runtime of its own. Each call is bounded; leftovers carry TEST_LABEL.
        let handle = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                let Ok(client) = kube::Client::try_from(config) else {
                    return;
                };
                let dp = DeleteParams::background();
                for (ar, obj) in objects.iter().rev() {
                    let api: Api<DynamicObject> = Api::all_with(client.clone(), ar);
                    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), api.delete(obj, &dp)).await {
                        eprintln!("cleanup: deleting {} {obj}: {e}", ar.kind);
                    }
                }
                let api: Api<Namespace> = Api::all(client);
                if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), api.delete(&name, &dp)).await {
                    eprintln!("cleanup: deleting namespace {name}: {e}");
                }
            });
        });
        let _ = handle.join();
    }
}
