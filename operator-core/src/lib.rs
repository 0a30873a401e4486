//! The shared core of fake-gpu-operator's components: what the node side
//! (`fakegpu-operator-node`) and the cluster side (`fakegpu-operator-cluster`) both read and
//! write, depending on neither.
//!
//! It owns the formats — the Helm values' node pools ([`config`]), the cluster and per-node
//! topology ConfigMaps ([`topology`]), the node files the fake NVML and the plugins read
//! ([`node_files`], [`node_state`]), NodeResourceTopology ([`nrt`]), the mock backend's per-pool
//! objects ([`nvml_mock`]) — and the pure decisions
//! made from them: a node's pool and devices ([`resolve`]), its labels ([`labels`]), a pod's
//! GPU annotations ([`pod`]) and the cluster-wide view of nodes and pods ([`index`]). The kube
//! edges shared by every component are here too: the API client and shutdown ([`common`]) and
//! the `resource.k8s.io` version adapter ([`resource_api`]).

pub mod common;
pub mod config;
pub mod index;
pub mod labels;
pub mod mig_manager;
pub mod mig_strategy;
pub mod node_files;
pub mod node_state;
pub mod nrt;
pub mod nvml_mock;
pub mod pod;
pub mod resolve;
pub mod resource_api;
pub mod topology;
