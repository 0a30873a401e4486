//! Which `resource.k8s.io` version the operator talks to, and every DRA read and write through
//! it. The operator models DRA objects once, as `resource.k8s.io/v1` (k8s-openapi's
//! `resource::v1` types); [`DraApi`] finds the highest version the API server serves (v1,
//! else v1beta2, else v1beta1: Kubernetes 1.31–1.33 serve no v1) by API discovery when it is
//! made, converts each object at the edge ([`convert`]), and discovers again when a request
//! answers 404 (the version it used is no longer served, e.g. after an API server upgrade or
//! a `--runtime-config` change) before retrying once.

pub mod convert;

use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use convert::{DraKind, DraVersion, GROUP};

/// A v1 model type the operator reads or writes through [`DraApi`].
pub trait DraObject: Serialize + DeserializeOwned + Clone + Send + 'static {
    const KIND: DraKind;
}

impl DraObject for k8s_openapi::api::resource::v1::ResourceSlice {
    const KIND: DraKind = DraKind::ResourceSlice;
}
impl DraObject for k8s_openapi::api::resource::v1::DeviceClass {
    const KIND: DraKind = DraKind::DeviceClass;
}
impl DraObject for k8s_openapi::api::resource::v1::ResourceClaim {
    const KIND: DraKind = DraKind::ResourceClaim;
}
impl DraObject for k8s_openapi::api::resource::v1::ResourceClaimTemplate {
    const KIND: DraKind = DraKind::ResourceClaimTemplate;
}

/// The versions of `resource.k8s.io` the API server serves, as its discovery lists them
/// (empty when it serves the group in no version).
pub async fn served_versions(client: &Client) -> Result<Vec<String>, kube::Error> {
    let groups = client.list_api_groups().await?;
    Ok(groups.groups.into_iter().filter(|g| g.name == GROUP).flat_map(|g| g.versions.into_iter().map(|v| v.version)).collect())
}

/// The version to use: the highest served; v1 (with a warning) when none is, so that the
/// first write's 404 triggers discovery again once DRA is switched on.
pub async fn discover(client: &Client) -> Result<DraVersion, kube::Error> {
    let served = served_versions(client).await?;
    Ok(match DraVersion::highest(&served) {
        Some(v) => v,
        None => {
            tracing::warn!(?served, "the API server serves no DRA version this operator speaks (v1, v1beta2, v1beta1); trying v1");
            DraVersion::V1
        }
    })
}

/// A client for DRA objects in the version the API server serves. Cheap to clone; clones share
/// the discovered version.
#[derive(Clone)]
pub struct DraApi {
    client: Client,
    version: Arc<RwLock<DraVersion>>,
}

impl DraApi {
    /// Discovers the served version once.
    pub async fn new(client: Client) -> Result<DraApi, kube::Error> {
        let v = discover(&client).await?;
        tracing::info!(version = %v, "DRA objects in resource.k8s.io/{v}");
        Ok(DraApi::with_version(client, v))
    }

    /// [`DraApi::new`], or v1 when discovery fails now (the API server not reachable yet): the
    /// first request that answers 404 discovers again. For long-running plugins that must
    /// start without the API server.
    pub async fn new_or_v1(client: Client) -> DraApi {
        match DraApi::new(client.clone()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("DRA version discovery failed ({e}); assuming resource.k8s.io/v1 until a request answers 404");
                DraApi::with_version(client, DraVersion::V1)
            }
        }
    }

    /// A client for a version already known (tests, or a caller that discovered it).
    pub fn with_version(client: Client, version: DraVersion) -> DraApi {
        DraApi { client, version: Arc::new(RwLock::new(version)) }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The version in use.
    pub fn version(&self) -> DraVersion {
        *self.version.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Discovers again; true when the version changed.
    async fn rediscover(&self) -> bool {
        let old = self.version();
        match discover(&self.client).await {
            Ok(v) if v != old => {
                tracing::info!(from = %old, to = %v, "resource.k8s.io version changed");
                *self.version.write().unwrap_or_else(|e| e.into_inner()) = v;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!("DRA version discovery failed: {e}");
                false
            }
        }
    }

    fn dynamic(&self, kind: DraKind, version: DraVersion, namespace: Option<&str>) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(GROUP, version.as_str(), kind.kind());
        let ar = ApiResource::from_gvk_with_plural(&gvk, kind.plural());
        match namespace {
            Some(ns) if kind.namespaced() => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Runs `op` in the current version; on a 404, discovers again and, when the version
    /// changed, runs it once more in the new one.
    async fn retry<T, F, Fut>(&self, op: F) -> Result<T, kube::Error>
    where
        F: Fn(DraVersion) -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        match op(self.version()).await {
            Err(kube::Error::Api(s)) if s.code == 404 && self.rediscover().await => op(self.version()).await,
            r => r,
        }
    }

    /// Server-side apply of `obj` (a v1 model object) under `pp`; returns what the server
    /// stored, as v1.
    pub async fn apply<K: DraObject>(&self, namespace: Option<&str>, name: &str, obj: &K, pp: &PatchParams) -> Result<K, kube::Error> {
        let v1 = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
        self.retry(|v| {
            let body = convert::from_v1(K::KIND, v1.clone(), v);
            let api = self.dynamic(K::KIND, v, namespace);
            async move { decode(v, api.patch(name, pp, &Patch::Apply(&body)).await?) }
        })
        .await
    }

    /// Creates `obj`.
    pub async fn create<K: DraObject>(&self, namespace: Option<&str>, obj: &K) -> Result<K, kube::Error> {
        let v1 = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
        self.retry(|v| {
            let body = serde_json::from_value::<DynamicObject>(convert::from_v1(K::KIND, v1.clone(), v));
            let api = self.dynamic(K::KIND, v, namespace);
            async move { decode(v, api.create(&PostParams::default(), &body.map_err(kube::Error::SerdeError)?).await?) }
        })
        .await
    }

    /// A merge patch of fields that read the same in every version (metadata, status).
    pub async fn merge<K: DraObject>(&self, namespace: Option<&str>, name: &str, patch: &serde_json::Value) -> Result<K, kube::Error> {
        self.retry(|v| {
            let api = self.dynamic(K::KIND, v, namespace);
            async move { decode(v, api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?) }
        })
        .await
    }

    pub async fn get<K: DraObject>(&self, namespace: Option<&str>, name: &str) -> Result<K, kube::Error> {
        self.retry(|v| {
            let api = self.dynamic(K::KIND, v, namespace);
            async move { decode(v, api.get(name).await?) }
        })
        .await
    }

    /// Lists in `namespace` (None: all namespaces, or cluster-scoped kinds).
    pub async fn list<K: DraObject>(&self, namespace: Option<&str>, lp: &ListParams) -> Result<Vec<K>, kube::Error> {
        self.retry(|v| {
            let api = self.dynamic(K::KIND, v, namespace);
            async move { api.list(lp).await?.items.into_iter().map(|o| decode(v, o)).collect() }
        })
        .await
    }

    /// Deletes one object of `kind` (a missing one answers 404 like any delete).
    pub async fn delete(&self, kind: DraKind, namespace: Option<&str>, name: &str, dp: &DeleteParams) -> Result<(), kube::Error> {
        let api = self.dynamic(kind, self.version(), namespace);
        match api.delete(name, dp).await {
            Err(kube::Error::Api(s)) if s.code == 404 && self.rediscover().await => {
                self.dynamic(kind, self.version(), namespace).delete(name, dp).await.map(|_| ())
            }
            r => r.map(|_| ()),
        }
    }

    /// A watch of every object of `K` (the version in use when it starts), as v1; an object
    /// that does not convert is logged and its event dropped.
    pub fn watch<K: DraObject>(&self, cfg: watcher::Config) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send {
        let v = self.version();
        watcher(self.dynamic(K::KIND, v, None), cfg).filter_map(move |ev| {
            let out = match ev {
                Err(e) => Some(Err(e)),
                Ok(e) => map_event(e, |o| {
                    decode(v, o).map_err(|e| tracing::warn!(kind = K::KIND.kind(), "dropping an object that does not convert: {e}")).ok()
                })
                .map(Ok),
            };
            std::future::ready(out)
        })
    }
}

/// A served object (version `v`) as the v1 model.
fn decode<K: DraObject>(v: DraVersion, obj: DynamicObject) -> Result<K, kube::Error> {
    let value = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
    serde_json::from_value(convert::to_v1(K::KIND, value, v)).map_err(kube::Error::SerdeError)
}

fn map_event<K>(e: watcher::Event<DynamicObject>, f: impl Fn(DynamicObject) -> Option<K>) -> Option<watcher::Event<K>> {
    Some(match e {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)?),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)?),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}
