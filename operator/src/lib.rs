//! The operator's components as a library: a facade over the three crates that hold them, with
//! every module under the path it had before the split (`fake_gpu_operator::kubelet`, …), so
//! the binary, the tests, examples and benches and other crates keep one import root.
//!
//! - `fakegpu-operator-core` (operator-core/): formats, resolution, labels, the index, node files,
//!   the `resource.k8s.io` adapter and the kube helpers both sides use;
//! - `fakegpu-operator-node` (operator-node/): kubelet plugins, compute-domain driver,
//!   status-exporter, pod-resources server;
//! - `fakegpu-operator-cluster` (operator-cluster/): status-updater, KWOK GPU device plugin,
//!   topology server.
//!
//! The binary in `main.rs` picks one component per process.

pub use fakegpu_operator_cluster::{kwok_device_plugin, mig_manager, nvml_mock, runai_rule, status_updater, topology_server, work_queue};
/// The MIG manager's pure decisions (the component is [`mig_manager`]).
pub use fakegpu_operator_core::mig_manager as mig_manager_core;
pub use fakegpu_operator_core::nvml_mock as nvml_mock_core;
pub use fakegpu_operator_core::{common, config, index, labels, node_files, node_state, nrt, pod, resolve, resource_api, topology};
pub use fakegpu_operator_node::{compute_domain, exporter, inference, kubelet, mig_manager_node, nvml_mock_agent, podresources_server};
