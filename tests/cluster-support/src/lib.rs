//! Support for tests against the `fakegpu cluster` control plane: finding and connecting to the
//! running cluster (or skipping / failing when it is absent), a fresh namespace per test that is
//! deleted on drop, and wait-for-condition helpers with timeouts.
//!
//! ```no_run
//! # async fn t() {
//! let Some(cluster) = fakegpu_cluster_support::cluster_or_skip("my_test").await else { return };
//! let ns = cluster.namespace("my-test").await;
//! # }
//! ```

pub mod connect;
pub mod namespace;
pub mod objects;
pub mod wait;

pub use connect::{binaries_or_skip, cluster_or_skip, TestCluster};
pub use namespace::TestNamespace;
pub use wait::{wait_for, wait_for_list, WaitError};
