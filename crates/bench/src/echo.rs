//! The ceiling: a bare tonic server with nothing but `grpc.health.v1.Health`
//! (no layers, no database, no logging), serving the same RPC the `health`
//! scenario asks a service's full stack for.

use std::net::SocketAddr;

use tonic_health::ServingStatus;

/// Serves until killed.
pub async fn serve(addr: SocketAddr) -> Result<(), String> {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    tonic::transport::Server::builder()
        .add_service(service)
        .serve(addr)
        .await
        .map_err(|e| e.to_string())
}
