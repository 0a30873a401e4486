//! Compute Domains (docs/compute-domains.md): the `resource.nvidia.com/v1beta1` ComputeDomain,
//! its controller and the DRA driver `compute-domain.nvidia.com` that hands out IMEX channels.
//!
//! Pure decisions — [`types`] (the CRD's Rust shape and the claim's opaque config),
//! [`reconcile`] (which template a domain owns, its status from the allocated claims, the nodes
//! and their NVLink cliques, the Ready rule), [`channels`] (a node's channel devices, what a
//! prepared claim gets, its CDI spec) — are unit-tested without a cluster. The edges are thin:
//! [`controller`] (lists, applies the reconcile plan), [`kwok`] (ResourceSlices for KWOK
//! nodes), [`plugin`] (the kubelet plugin on a node), [`crds`] (the chart's CRDs, embedded) and
//! [`cli`].

pub mod channels;
pub mod cli;
pub mod controller;
pub mod crds;
pub mod kwok;
pub mod plugin;
pub mod reconcile;
pub mod types;

/// The DRA driver name, as NVIDIA's driver uses it.
pub const DRIVER: &str = "compute-domain.nvidia.com";
/// DeviceClass a domain's claims request one channel from.
pub const CHANNEL_CLASS: &str = "compute-domain-default-channel.nvidia.com";
/// DeviceClass of the per-node IMEX daemon device.
pub const DAEMON_CLASS: &str = "compute-domain-daemon.nvidia.com";
/// Finalizer on domains and on the templates they own.
pub const FINALIZER: &str = "computedomain.resource.nvidia.com/finalizer";
/// Label on a domain's ResourceClaimTemplate naming the domain.
pub const TEMPLATE_DOMAIN_LABEL: &str = "resource.nvidia.com/computeDomain";
/// Label on a domain's ResourceClaimTemplate saying what it is for.
pub const TEMPLATE_TARGET_LABEL: &str = "resource.nvidia.com/computeDomainTarget";
/// Label the template puts on every claim generated from it (naming the domain).
pub const CLAIM_DOMAIN_LABEL: &str = "nvidia.com/computeDomain";
/// The request name in the template.
pub const CHANNEL_REQUEST: &str = "channel";
/// Node label GPU Feature Discovery sets to `<cluster UUID>.<clique id>`; when present it wins
/// over the model's rule (a real node's GFD is the authority there).
pub const GFD_CLIQUE_LABEL: &str = "nvidia.com/gpu.clique";
