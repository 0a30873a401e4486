//! The DRA side: driver `gpu.nvidia.com`. [`attributes`] and [`slices`] decide what the
//! ResourceSlices of a pool hold, [`prepare`] what a claim's devices become in a container,
//! [`cdi`] and [`checkpoint`] the files on the node; [`plugin`] (kubelet plugin), [`publish`]
//! (slice writes), [`kwok`] (central publisher for KWOK nodes) and [`liveness`] (gRPC health)
//! are the edges.

pub mod attributes;
pub mod cdi;
pub mod checkpoint;
pub mod kwok;
pub mod liveness;
pub mod plugin;
pub mod prepare;
pub mod publish;
pub mod slices;

/// The driver name, as NVIDIA's DRA driver for GPUs uses it.
pub const DRIVER: &str = "gpu.nvidia.com";
