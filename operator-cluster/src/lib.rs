//! The cluster side of fake-gpu-operator: the controllers that watch the whole cluster and keep
//! the per-node state `fakegpu-operator-core` defines in step, independent of the node side.
//!
//! It owns the status-updater ([`status_updater`]: topology ConfigMaps, allocations, node
//! labels and node files for pool nodes, the Run:ai rule of [`runai_rule`], the mock backend's
//! per-pool objects of [`nvml_mock`]), the KWOK GPU
//! device plugin ([`kwok_device_plugin`]: KWOK nodes' capacity), the MIG manager ([`mig_manager`]:
//! NVIDIA mig-manager's and Run:ai mig-faker's contracts on KWOK nodes), the read-only topology HTTP
//! API ([`topology_server`]) and the bounded, retrying queue both controllers use
//! ([`work_queue`]).

pub mod kwok_device_plugin;
pub mod mig_manager;
pub mod nvml_mock;
pub mod runai_rule;
pub mod status_updater;
pub mod topology_server;
pub mod work_queue;
