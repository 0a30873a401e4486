//! The model of simulated NVIDIA GPUs, shared by the fake NVML library, nvidia-smi,
//! the operator and the metrics exporter. Pure Rust: no FFI, no Kubernetes, no I/O
//! beyond reading the files it is pointed at.
//!
//! Data flows one way: [`profile`] (facts about a board) + [`config`] (which board,
//! how many, which node) → [`node`] with [`identity`] per GPU → [`telemetry`] readings.

pub mod board;
pub mod boundary;
pub mod builtin;
pub mod config;
pub mod cuda;
pub mod driver;
pub mod driver_root;
pub mod dynamics;
pub mod error;
pub mod fabric;
pub mod file;
pub mod identity;
pub mod log;
pub mod mig;
pub mod mig_parted;
pub mod node;
pub mod numa;
pub mod profile;
pub mod state;
pub mod state_file;
pub mod sysfs;
pub mod telemetry;
pub mod visibility;

pub use builtin::{builtin_profiles, find_builtin};
pub use config::{resolve, NodeConfigFile, NodeSpec};
pub use error::{ConfigError, ProfileError};
pub use identity::{gpu_identity, GpuIdentity, PciAddress};
pub use node::SimulatedNode;
pub use profile::Profile;

/// The most GPUs one simulated node may have.
pub const MAX_GPUS: u32 = 256;
