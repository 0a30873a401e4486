//! The node side of fake-gpu-operator: the components that act for one node (or, in their KWOK
//! modes, for every simulated node from one process) on top of `fakegpu-operator-core`.
//!
//! It owns the kubelet plugins ([`kubelet`]: device plugin, DRA plugin, the KWOK DRA publisher,
//! the kubelet's gRPC protocols compiled from `proto/` by `build.rs`), the compute-domain DRA
//! driver and its controller ([`compute_domain`], which share its types, reconcile rule and the
//! DRA plugin framework), the status-exporter ([`exporter`], with the Prometheus client of
//! [`inference`]), the kubelet pod-resources API it serves on a node
//! ([`podresources_server`]), the MIG manager of real nodes ([`mig_manager_node`]) and the mock
//! backend's node agent ([`nvml_mock_agent`]).

pub mod compute_domain;
pub mod exporter;
pub mod inference;
pub mod kubelet;
pub mod mig_manager_node;
pub mod nvml_mock_agent;
pub mod podresources_server;
