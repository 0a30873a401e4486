//! Generated gRPC code for the kubelet protocols (build.rs compiles proto/ with protox).
#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Device plugin API v1beta1 (`/v1beta1.Registration`, `/v1beta1.DevicePlugin`).
pub mod deviceplugin {
    tonic::include_proto!("v1beta1");
}

/// Plugin registration v1 (`/pluginregistration.Registration`).
pub mod registration {
    tonic::include_proto!("pluginregistration");
}

/// DRA kubelet plugin v1 (`/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin`).
pub mod dra {
    tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");
}

/// PodResources v1 (`/v1.PodResourcesLister`). Its proto package is plain `v1`, which the DRA
/// health API shares, so it stays in a module of its own.
pub mod podresources {
    tonic::include_proto!("v1");
}

/// gRPC health checking (`/grpc.health.v1.Health`), served by the DRA plugin for liveness probes.
pub mod health {
    tonic::include_proto!("grpc.health.v1");
}
