//! Conversion of DRA objects between the one model the operator keeps (`resource.k8s.io/v1`,
//! k8s-openapi's `resource::v1` types) and the wire shape of the version the API server serves.
//! Pure JSON rewriting, no I/O. Field names follow k8s.io/api v0.37.2 `resource/{v1,v1beta1,v1beta2}`:
//!
//! * v1beta2 and v1 have the same shape for everything written or read here; only `apiVersion`
//!   changes.
//! * v1beta1 wraps every field of a slice device except `name` in `basic`
//!   (`devices[].basic.{attributes,capacity,consumesCounters,taints,…}`), and a claim's request
//!   is flat (`requests[].{deviceClassName,selectors,allocationMode,count,…}`) where v1 nests the
//!   same fields under `requests[].exactly`. DeviceClasses, claim status (allocation results,
//!   reservedFor), capacities (`{value: …}`) and attributes (`int`/`bool`/`string`/`version`)
//!   are the same in all three.

use serde_json::{Map, Value};

/// A served version of `resource.k8s.io`, highest first in preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DraVersion {
    V1,
    V1beta2,
    V1beta1,
}

/// The API group of DRA.
pub const GROUP: &str = "resource.k8s.io";

impl DraVersion {
    /// Every version this operator speaks, in order of preference.
    pub const ALL: [DraVersion; 3] = [DraVersion::V1, DraVersion::V1beta2, DraVersion::V1beta1];

    pub fn as_str(self) -> &'static str {
        match self {
            DraVersion::V1 => "v1",
            DraVersion::V1beta2 => "v1beta2",
            DraVersion::V1beta1 => "v1beta1",
        }
    }

    /// `resource.k8s.io/<version>`.
    pub fn api_version(self) -> String {
        format!("{GROUP}/{}", self.as_str())
    }

    pub fn parse(v: &str) -> Option<DraVersion> {
        DraVersion::ALL.into_iter().find(|d| d.as_str() == v)
    }

    /// The highest version of [`DraVersion::ALL`] among `served` (version strings as API
    /// discovery lists them); `None` when the server serves none of them.
    pub fn highest(served: &[String]) -> Option<DraVersion> {
        DraVersion::ALL.into_iter().find(|v| served.iter().any(|s| s == v.as_str()))
    }
}

impl std::fmt::Display for DraVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The DRA kinds the operator reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraKind {
    ResourceSlice,
    DeviceClass,
    ResourceClaim,
    ResourceClaimTemplate,
}

impl DraKind {
    pub fn kind(self) -> &'static str {
        match self {
            DraKind::ResourceSlice => "ResourceSlice",
            DraKind::DeviceClass => "DeviceClass",
            DraKind::ResourceClaim => "ResourceClaim",
            DraKind::ResourceClaimTemplate => "ResourceClaimTemplate",
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            DraKind::ResourceSlice => "resourceslices",
            DraKind::DeviceClass => "deviceclasses",
            DraKind::ResourceClaim => "resourceclaims",
            DraKind::ResourceClaimTemplate => "resourceclaimtemplates",
        }
    }

    pub fn namespaced(self) -> bool {
        matches!(self, DraKind::ResourceClaim | DraKind::ResourceClaimTemplate)
    }
}

/// `obj` (a v1 object as JSON) in the shape of `to`, with `apiVersion` and `kind` set.
pub fn from_v1(kind: DraKind, mut obj: Value, to: DraVersion) -> Value {
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(to.api_version()));
        m.insert("kind".into(), Value::String(kind.kind().into()));
    }
    if to == DraVersion::V1beta1 {
        match kind {
            DraKind::ResourceSlice => {
                for d in devices_mut(&mut obj) {
                    wrap_basic(d);
                }
            }
            DraKind::ResourceClaim => flatten_requests(obj.pointer_mut("/spec/devices/requests")),
            DraKind::ResourceClaimTemplate => flatten_requests(obj.pointer_mut("/spec/spec/devices/requests")),
            DraKind::DeviceClass => {}
        }
    }
    obj
}

/// `obj` (as served in version `from`, JSON) in the v1 shape, `apiVersion` v1.
pub fn to_v1(kind: DraKind, mut obj: Value, from: DraVersion) -> Value {
    if from == DraVersion::V1beta1 {
        match kind {
            DraKind::ResourceSlice => {
                for d in devices_mut(&mut obj) {
                    unwrap_basic(d);
                }
            }
            DraKind::ResourceClaim => nest_requests(obj.pointer_mut("/spec/devices/requests")),
            DraKind::ResourceClaimTemplate => nest_requests(obj.pointer_mut("/spec/spec/devices/requests")),
            DraKind::DeviceClass => {}
        }
    }
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(DraVersion::V1.api_version()));
        m.insert("kind".into(), Value::String(kind.kind().into()));
    }
    obj
}

fn devices_mut(obj: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    obj.pointer_mut("/spec/devices").and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut)
}

/// v1 device → v1beta1: everything but `name` moves under `basic`.
fn wrap_basic(d: &mut Map<String, Value>) {
    let name = d.remove("name");
    let basic = std::mem::take(d);
    if let Some(n) = name {
        d.insert("name".into(), n);
    }
    d.insert("basic".into(), Value::Object(basic));
}

/// v1beta1 device → v1: `basic`'s fields move up next to `name`.
fn unwrap_basic(d: &mut Map<String, Value>) {
    if let Some(Value::Object(basic)) = d.remove("basic") {
        for (k, v) in basic {
            d.entry(k).or_insert(v);
        }
    }
}

/// v1 requests (`{name, exactly: {…}}` or `{name, firstAvailable: […]}`) → v1beta1 (the
/// fields of `exactly` at the request's top level).
fn flatten_requests(requests: Option<&mut Value>) {
    for r in requests.and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
        if let Some(Value::Object(exactly)) = r.remove("exactly") {
            for (k, v) in exactly {
                r.entry(k).or_insert(v);
            }
        }
    }
}

/// v1beta1 requests → v1: every field other than `name` and `firstAvailable` goes under
/// `exactly` (a request is either one or the other; v1beta1 rejects mixing them).
fn nest_requests(requests: Option<&mut Value>) {
    for r in requests.and_then(Value::as_array_mut).into_iter().flatten().filter_map(Value::as_object_mut) {
        if r.contains_key("firstAvailable") || r.contains_key("exactly") {
            continue;
        }
        let keys: Vec<String> = r.keys().filter(|k| k.as_str() != "name").cloned().collect();
        if keys.is_empty() {
            continue;
        }
        let mut exactly = Map::new();
        for k in keys {
            if let Some(v) = r.remove(&k) {
                exactly.insert(k, v);
            }
        }
        r.insert("exactly".into(), Value::Object(exactly));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::resource::{v1, v1beta1, v1beta2};
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::json;

    /// Every kind of attribute value and capacity (with a request policy), counters a
    /// partitionable device consumes, a taint, per-device node selection: what a v1 slice can
    /// carry that any of the three versions can express.
    fn full_slice() -> Value {
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
            "metadata": {"name": "n1-gpu", "labels": {"app.kubernetes.io/managed-by": "fake-gpu-operator"}},
            "spec": {
                "driver": "gpu.nvidia.com",
                "nodeName": "n1",
                "pool": {"name": "n1", "generation": 3, "resourceSliceCount": 1},
                "sharedCounters": [{"name": "gpu-0-counters", "counters": {"memory": {"value": "80Gi"}, "multiprocessors": {"value": "132"}}}],
                "devices": [
                    {
                        "name": "gpu-0",
                        "attributes": {
                            "type": {"string": "gpu"},
                            "index": {"int": 0},
                            "nvlink": {"bool": true},
                            "driverVersion": {"version": "535.261.3"}
                        },
                        "capacity": {
                            "memory": {"value": "80Gi"},
                            "multiprocessors": {"value": "132", "requestPolicy": {"default": "1", "validRange": {"min": "1", "max": "132", "step": "1"}}}
                        },
                        "consumesCounters": [{"counterSet": "gpu-0-counters", "counters": {"memory": {"value": "80Gi"}}}],
                        "taints": [{"key": "example.com/unhealthy", "value": "true", "effect": "NoSchedule"}],
                        "allowMultipleAllocations": true
                    },
                    {"name": "gpu-1", "attributes": {"type": {"string": "gpu"}}}
                ]
            }
        })
    }

    fn full_class() -> Value {
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass",
            "metadata": {"name": "gpu.nvidia.com"},
            "spec": {
                "selectors": [{"cel": {"expression": "device.driver == 'gpu.nvidia.com' && device.attributes['gpu.nvidia.com'].type == 'gpu'"}}],
                "config": [{"opaque": {"driver": "gpu.nvidia.com", "parameters": {"sharing": "TimeSlicing"}}}],
                "extendedResourceName": "nvidia.com/gpu"
            }
        })
    }

    fn claim_spec() -> Value {
        json!({"devices": {
            "requests": [
                {"name": "gpu", "exactly": {
                    "deviceClassName": "gpu.nvidia.com",
                    "selectors": [{"cel": {"expression": "device.attributes['gpu.nvidia.com'].productName == 'NVIDIA H100 80GB HBM3'"}}],
                    "allocationMode": "ExactCount", "count": 2, "adminAccess": false,
                    "tolerations": [{"key": "example.com/unhealthy", "operator": "Exists", "effect": "NoSchedule"}],
                    "capacity": {"requests": {"memory": "10Gi"}}
                }},
                {"name": "any", "firstAvailable": [
                    {"name": "big", "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1},
                    {"name": "mig", "deviceClassName": "mig.nvidia.com", "allocationMode": "All"}
                ]}
            ],
            "constraints": [{"requests": ["gpu"], "matchAttribute": "gpu.nvidia.com/productName"}],
            "config": [{"requests": ["gpu"], "opaque": {"driver": "gpu.nvidia.com", "parameters": {"a": 1}}}]
        }})
    }

    fn full_claim() -> Value {
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "ns", "labels": {"x": "y"}},
            "spec": claim_spec(),
            "status": {
                "allocation": {
                    "devices": {
                        "results": [{"request": "gpu", "driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-0", "adminAccess": false,
                                     "consumedCapacity": {"memory": "10Gi"}, "shareID": "0f0e"}],
                        "config": [{"source": "FromClaim", "requests": ["gpu"], "opaque": {"driver": "gpu.nvidia.com", "parameters": {"a": 1}}}]
                    },
                    "nodeSelector": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}
                },
                "reservedFor": [{"resource": "pods", "name": "p", "uid": "u1"}],
                "devices": [{"driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-0", "data": {"k": "v"}}]
            }
        })
    }

    fn full_template() -> Value {
        json!({
            "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
            "metadata": {"name": "t", "namespace": "ns"},
            "spec": {"metadata": {"labels": {"domain": "d"}}, "spec": claim_spec()}
        })
    }

    /// `v` survives a trip through k8s-openapi's type `K` for that version unchanged: every
    /// field the conversion produced exists under that name in the real API's schema (an
    /// unknown or misplaced field would be dropped and the comparison fails).
    fn schema_checked<K: DeserializeOwned + Serialize>(v: &Value) {
        let typed: K = serde_json::from_value(v.clone()).expect("parses as the version's type");
        assert_eq!(&serde_json::to_value(typed).unwrap(), v, "the version's schema keeps every field");
    }

    fn check_all(kind: DraKind, v1obj: Value, check: &dyn Fn(DraVersion, &Value)) {
        for to in DraVersion::ALL {
            let wire = from_v1(kind, v1obj.clone(), to);
            assert_eq!(wire["apiVersion"], json!(to.api_version()));
            check(to, &wire);
            assert_eq!(to_v1(kind, wire, to), v1obj, "{kind:?} {to} converts back unchanged");
        }
    }

    #[test]
    fn highest_served_version_wins() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(DraVersion::highest(&s(&["v1beta1", "v1", "v1beta2"])), Some(DraVersion::V1));
        assert_eq!(DraVersion::highest(&s(&["v1beta1", "v1beta2", "v1alpha3"])), Some(DraVersion::V1beta2));
        assert_eq!(DraVersion::highest(&s(&["v1alpha3", "v1beta1"])), Some(DraVersion::V1beta1));
        assert_eq!(DraVersion::highest(&s(&["v1alpha3"])), None);
        assert_eq!(DraVersion::parse("v1beta2"), Some(DraVersion::V1beta2));
        assert_eq!(DraVersion::V1beta1.api_version(), "resource.k8s.io/v1beta1");
    }

    #[test]
    fn slices_in_every_version() {
        check_all(DraKind::ResourceSlice, full_slice(), &|to, wire| {
            let d0 = &wire["spec"]["devices"][0];
            match to {
                DraVersion::V1 => schema_checked::<v1::ResourceSlice>(wire),
                DraVersion::V1beta2 => {
                    schema_checked::<v1beta2::ResourceSlice>(wire);
                    assert_eq!(d0["attributes"]["index"], json!({"int": 0}), "flat like v1");
                }
                DraVersion::V1beta1 => {
                    schema_checked::<v1beta1::ResourceSlice>(wire);
                    assert_eq!(d0["name"], "gpu-0");
                    assert_eq!(d0.as_object().unwrap().len(), 2, "only name and basic: {d0}");
                    let b = &d0["basic"];
                    assert_eq!(b["attributes"]["type"], json!({"string": "gpu"}));
                    assert_eq!(b["attributes"]["index"], json!({"int": 0}));
                    assert_eq!(b["attributes"]["nvlink"], json!({"bool": true}));
                    assert_eq!(b["attributes"]["driverVersion"], json!({"version": "535.261.3"}));
                    assert_eq!(b["capacity"]["memory"], json!({"value": "80Gi"}));
                    assert_eq!(b["capacity"]["multiprocessors"]["requestPolicy"]["validRange"]["max"], "132");
                    assert_eq!(b["consumesCounters"][0]["counterSet"], "gpu-0-counters");
                    assert_eq!(b["taints"][0]["effect"], "NoSchedule");
                    assert_eq!(b["allowMultipleAllocations"], true);
                    // Pool-level fields are not wrapped.
                    assert_eq!(wire["spec"]["sharedCounters"][0]["counters"]["memory"], json!({"value": "80Gi"}));
                    assert_eq!(wire["spec"]["nodeName"], "n1");
                }
            }
        });
    }

    /// The schema check bites: a v1 (flat) device sent as v1beta1 loses its attributes.
    #[test]
    fn an_unconverted_device_does_not_fit_v1beta1() {
        let mut flat = full_slice();
        flat["apiVersion"] = json!("resource.k8s.io/v1beta1");
        let r = std::panic::catch_unwind(|| schema_checked::<v1beta1::ResourceSlice>(&flat));
        assert!(r.is_err());
    }

    #[test]
    fn device_classes_in_every_version() {
        check_all(DraKind::DeviceClass, full_class(), &|to, wire| {
            assert_eq!(wire["spec"], full_class()["spec"], "same spec in {to}");
            match to {
                DraVersion::V1 => schema_checked::<v1::DeviceClass>(wire),
                DraVersion::V1beta2 => schema_checked::<v1beta2::DeviceClass>(wire),
                DraVersion::V1beta1 => schema_checked::<v1beta1::DeviceClass>(wire),
            }
        });
    }

    #[test]
    fn claims_in_every_version() {
        check_all(DraKind::ResourceClaim, full_claim(), &|to, wire| {
            let r0 = &wire["spec"]["devices"]["requests"][0];
            match to {
                DraVersion::V1 => schema_checked::<v1::ResourceClaim>(wire),
                DraVersion::V1beta2 => {
                    schema_checked::<v1beta2::ResourceClaim>(wire);
                    assert_eq!(r0["exactly"]["count"], 2);
                }
                DraVersion::V1beta1 => {
                    schema_checked::<v1beta1::ResourceClaim>(wire);
                    assert!(r0.get("exactly").is_none());
                    assert_eq!(r0["deviceClassName"], "gpu.nvidia.com");
                    assert_eq!(r0["count"], 2);
                    assert_eq!(r0["allocationMode"], "ExactCount");
                    assert_eq!(r0["tolerations"][0]["operator"], "Exists");
                    assert_eq!(r0["capacity"]["requests"]["memory"], "10Gi");
                    let r1 = &wire["spec"]["devices"]["requests"][1];
                    assert_eq!(r1["firstAvailable"][1]["allocationMode"], "All");
                    assert!(r1.get("deviceClassName").is_none());
                }
            }
            // Status reads the same in every version.
            assert_eq!(wire["status"], full_claim()["status"]);
        });
    }

    #[test]
    fn templates_in_every_version() {
        check_all(DraKind::ResourceClaimTemplate, full_template(), &|to, wire| match to {
            DraVersion::V1 => schema_checked::<v1::ResourceClaimTemplate>(wire),
            DraVersion::V1beta2 => schema_checked::<v1beta2::ResourceClaimTemplate>(wire),
            DraVersion::V1beta1 => {
                schema_checked::<v1beta1::ResourceClaimTemplate>(wire);
                assert_eq!(wire["spec"]["spec"]["devices"]["requests"][0]["deviceClassName"], "gpu.nvidia.com");
            }
        });
    }

    /// What an API server serving v1beta1 answers (a claim as the old scheduler wrote it):
    /// read into the v1 model with the request under `exactly`.
    #[test]
    fn a_v1beta1_claim_reads_as_v1() {
        let served = json!({
            "apiVersion": "resource.k8s.io/v1beta1", "kind": "ResourceClaim",
            "metadata": {"name": "c", "namespace": "ns"},
            "spec": {"devices": {"requests": [{"name": "gpu", "deviceClassName": "gpu.nvidia.com", "allocationMode": "ExactCount", "count": 1}]}},
            "status": {"allocation": {"devices": {"results": [{"request": "gpu", "driver": "gpu.nvidia.com", "pool": "n1", "device": "gpu-0"}]}}}
        });
        let c: v1::ResourceClaim = serde_json::from_value(to_v1(DraKind::ResourceClaim, served, DraVersion::V1beta1)).unwrap();
        let req = &c.spec.unwrap().devices.unwrap().requests.unwrap()[0];
        let exactly = req.exactly.as_ref().unwrap();
        assert_eq!((exactly.device_class_name.as_str(), exactly.count), ("gpu.nvidia.com", Some(1)));
        let results = c.status.unwrap().allocation.unwrap().devices.unwrap().results.unwrap();
        assert_eq!((results[0].pool.as_str(), results[0].device.as_str()), ("n1", "gpu-0"));
    }
}
