//! gRPC health (`grpc.health.v1.Health/Check`) of the DRA kubelet plugin on TCP
//! `--healthcheck-port` (upstream `HEALTHCHECK_PORT`; the chart's liveness probe is
//! `grpc: {port: 51515, service: liveness}`). As upstream: the services `""` and `liveness` are
//! known (others: NotFound), and they are SERVING only while the registration socket answers
//! `GetInfo` and the DRA socket answers an empty `NodePrepareResources`; otherwise NOT_SERVING.
//! `Watch` is not offered (Unimplemented), which the kubelet's probe does not use.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::plugin::Paths;
use crate::kubelet::proto::dra as pb;
use crate::kubelet::proto::health::health_server::{Health, HealthServer};
use crate::kubelet::proto::health::{health_check_response::ServingStatus, HealthCheckRequest, HealthCheckResponse};
use crate::kubelet::proto::registration as reg;
use crate::kubelet::uds;

/// Services a probe may name.
pub const SERVICES: [&str; 2] = ["", "liveness"];
/// How long each socket may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether both plugin sockets answer.
pub async fn sockets_answer(paths: &Paths) -> Result<(), String> {
    let registration = async {
        let ch = uds::connect(&paths.registration_socket).await.map_err(|e| format!("registration socket: {e}"))?;
        reg::registration_client::RegistrationClient::new(ch).get_info(reg::InfoRequest {}).await.map_err(|e| format!("GetInfo: {e}"))
    };
    let dra = async {
        let ch = uds::connect(&paths.plugin_socket).await.map_err(|e| format!("DRA socket: {e}"))?;
        pb::dra_plugin_client::DraPluginClient::new(ch)
            .node_prepare_resources(pb::NodePrepareResourcesRequest { claims: vec![] })
            .await
            .map_err(|e| format!("NodePrepareResources: {e}"))
    };
    let both = async {
        registration.await?;
        dra.await?;
        Ok(())
    };
    tokio::time::timeout(PROBE_TIMEOUT, both).await.map_err(|_| format!("no answer within {PROBE_TIMEOUT:?}"))?
}

pub struct HealthService {
    paths: Paths,
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !SERVICES.contains(&service.as_str()) {
            return Err(Status::not_found(format!("unknown service {service:?}")));
        }
        let status = match sockets_answer(&self.paths).await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                tracing::warn!("health: {e}");
                ServingStatus::NotServing
            }
        };
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }

    type WatchStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(&self, _: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("Watch is not offered; use Check"))
    }
}

/// Serves health on `addr` until `shutdown`.
pub async fn serve(addr: SocketAddr, paths: Paths, shutdown: impl std::future::Future<Output = ()> + Send) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("health port {addr}: {e}"))?;
    serve_on(listener, paths, shutdown).await
}

/// Serves health on a bound listener (tests bind port 0).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    paths: Paths,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), String> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(HealthService { paths }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| e.to_string())
}
