//! gRPC health (`grpc.health.v1.Health/Check`) of the compute-domain kubelet plugin, for the
//! kubelet's liveness probe: SERVING only while the registration socket answers GetInfo and
//! the DRA socket answers an empty NodePrepareResources (what the kubelet needs), else
//! NOT_SERVING. Services `""` and `"liveness"` are known; others get NotFound.

use std::path::PathBuf;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::kubelet::dra::plugin::Paths;
use crate::kubelet::proto::dra as pb;
use crate::kubelet::proto::health::health_check_response::ServingStatus;
use crate::kubelet::proto::health::health_server::{Health, HealthServer};
use crate::kubelet::proto::health::{HealthCheckRequest, HealthCheckResponse};
use crate::kubelet::proto::registration as reg;
use crate::kubelet::uds;

/// How long one probe of a socket may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

pub struct HealthService {
    registration_socket: PathBuf,
    plugin_socket: PathBuf,
}

impl HealthService {
    pub fn new(paths: &Paths) -> HealthService {
        HealthService { registration_socket: paths.registration_socket.clone(), plugin_socket: paths.plugin_socket.clone() }
    }

    async fn sockets_answer(&self) -> Result<(), String> {
        let probe = async {
            let channel = uds::connect(&self.registration_socket).await.map_err(|e| format!("registration socket: {e}"))?;
            reg::registration_client::RegistrationClient::new(channel)
                .get_info(reg::InfoRequest {})
                .await
                .map_err(|e| format!("GetInfo: {e}"))?;
            let channel = uds::connect(&self.plugin_socket).await.map_err(|e| format!("DRA socket: {e}"))?;
            pb::dra_plugin_client::DraPluginClient::new(channel)
                .node_prepare_resources(pb::NodePrepareResourcesRequest { claims: vec![] })
                .await
                .map_err(|e| format!("NodePrepareResources: {e}"))?;
            Ok(())
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe).await.map_err(|_| "probe timed out".to_string())?
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        if !service.is_empty() && service != "liveness" {
            return Err(Status::not_found(format!("unknown service {service:?} (known: \"\", \"liveness\")")));
        }
        let status = match self.sockets_answer().await {
            Ok(()) => ServingStatus::Serving,
            Err(e) => {
                tracing::warn!("health: {e}");
                ServingStatus::NotServing
            }
        };
        Ok(Response::new(HealthCheckResponse { status: status as i32 }))
    }
}

/// Serves health on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, paths: &Paths) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(HealthServer::new(HealthService::new(paths)))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}
