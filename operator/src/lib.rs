//! The operator's components as a library: pure decision modules (configuration, topology,
//! labels, allocation, metrics) tested without a cluster, and thin kube-rs adapters that
//! apply their decisions. The binary in `main.rs` picks one component per process.

pub mod common;
pub mod compute_domain;
pub mod config;
pub mod exporter;
pub mod index;
pub mod inference;
pub mod kubelet;
pub mod kwok_device_plugin;
pub mod labels;
pub mod node_files;
pub mod node_state;
pub mod nrt;
pub mod pod;
pub mod podresources_server;
pub mod resolve;
pub mod resource_api;
pub mod runai_rule;
pub mod status_updater;
pub mod topology;
pub mod topology_server;
pub mod work_queue;
