//! Emporium's edge: the one door for browsers and public API clients. It serves
//! REST/JSON transcoded from the `google.api.http` annotations in the
//! contracts, and calls the four services over gRPC like any other client of
//! theirs (the kit's peer channels: deadlines, retries, breakers, balancing).
//!
//! It is not a service with rules of its own: it holds no state and no
//! handler per RPC. Annotating an RPC in `proto/` adds its route.
//!
//! Reading order: [`config`] → [`routes`] (the table read from the descriptor
//! set) → [`transcode`] (JSON ⇄ protobuf, the raw gRPC codec) → [`error`]
//! (gRPC codes as HTTP statuses) → [`serve`] and the one handler below.

pub mod config;
pub mod error;
pub mod routes;
mod static_files;
pub mod transcode;

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Instant,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
};
use emporium_common::{
    BoxError,
    client::{self, PeerChannel},
    server::{self, Listeners},
    telemetry::trace,
};
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use prost_reflect::DescriptorPool;
use tonic::metadata::MetadataValue;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use config::Config;

use crate::{
    error::ApiError,
    routes::{Found, Route, RouteTable},
    transcode::RawCodec,
};

/// Everything the handler needs, shared by every request.
#[derive(Debug)]
struct Edge {
    table: RouteTable,
    /// Proto service full name → the channel to the peer serving it.
    peers: HashMap<String, PeerChannel>,
    max_body_bytes: usize,
}

/// The name of the peer that serves `service` (`emporium.<peer>.v1.X`).
fn peer_name(service: &str) -> Option<&str> {
    let mut parts = service.split('.');
    match (parts.next(), parts.next()) {
        (Some("emporium"), Some(peer)) => Some(peer),
        _ => None,
    }
}

/// One channel per peer, by name.
fn channels(config: &Config) -> Result<HashMap<&'static str, PeerChannel>, BoxError> {
    let mut channels = HashMap::new();
    for (name, peer) in config.peers.named() {
        channels.insert(name, client::channel(name, peer)?);
    }
    Ok(channels)
}

/// The edge's HTTP routes over `channels`: the transcoder for every annotated
/// method, and JSON errors for everything else.
fn router(
    channels: &HashMap<&'static str, PeerChannel>,
    config: &Config,
) -> Result<Router, BoxError> {
    let pool = DescriptorPool::decode(emporium_proto::FILE_DESCRIPTOR_SET)?;
    let table = RouteTable::from_pool(&pool)?;
    let mut peers = HashMap::new();
    for route in table.routes() {
        let service = route.rpc.parent_service().full_name().to_owned();
        let channel = peer_name(&service)
            .and_then(|p| channels.get(p))
            .ok_or_else(|| format!("no peer serves {service} (routes of {})", route.pattern))?;
        peers.insert(service, channel.clone());
    }
    for route in table.routes() {
        tracing::debug!(method = %route.method, pattern = %route.pattern, rpc = %route.grpc_path(), "route");
    }
    let edge = Arc::new(Edge {
        table,
        peers,
        max_body_bytes: config.edge.max_body_bytes,
    });
    Ok(Router::new()
        .merge(static_files::router())
        .fallback(handle)
        .with_state(edge))
}

/// Serves the REST/JSON API on the main listener and the admin routes on the
/// admin listener until `shutdown` completes; then `/readyz` turns 503, new
/// requests are still served for the drain delay, and in-flight ones get the
/// grace period.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    emporium_common::telemetry::metrics_handle();
    let channels = channels(&config)?;
    let app = router(&channels, &config)?;
    let (http, admin) = listeners.into_parts();
    let draining = Arc::new(AtomicBool::new(false));
    let upstreams: Arc<Vec<(&'static str, PeerChannel)>> = Arc::new(channels.into_iter().collect());
    let readiness: server::ReadinessCheck = Arc::new(move || {
        let upstreams = upstreams.clone();
        Box::pin(async move { upstreams_ready(&upstreams).await })
    });
    let admin_app = server::admin_router(draining.clone(), Some(readiness));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut api = tokio::spawn(
        axum::serve(
            http,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped(stop_rx.clone()))
        .into_future(),
    );
    let admin_task = tokio::spawn(
        axum::serve(admin, admin_app)
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future(),
    );
    tracing::info!("edge serving");
    tokio::select! {
        () = shutdown => {}
        res = &mut api => {
            let _ = stop_tx.send(true);
            return Err(format!("HTTP server stopped unexpectedly: {res:?}").into());
        }
    }
    tracing::info!(
        drain_delay_ms = config.base.server.drain_delay_ms,
        grace_ms = config.base.server.shutdown_grace_ms,
        "shutdown requested: /readyz reports 503"
    );
    draining.store(true, Ordering::SeqCst);
    tokio::time::sleep(config.base.server.drain_delay()).await;
    let _ = stop_tx.send(true);
    match tokio::time::timeout(config.base.server.shutdown_grace(), &mut api).await {
        Ok(res) => {
            res??;
            tracing::info!("in-flight requests finished; HTTP server stopped");
        }
        Err(_) => {
            tracing::warn!("grace period elapsed; abandoning the requests still running");
            api.abort();
        }
    }
    admin_task.await??;
    Ok(())
}

/// `/readyz` beyond draining: ready while at least one upstream answers its
/// gRPC health check as SERVING (each asked for at most a second). One
/// service away takes its routes away (they answer 503), not the whole edge:
/// every edge replica would fail the same check, and the routes of the
/// services still up would go down with them.
async fn upstreams_ready(upstreams: &[(&'static str, PeerChannel)]) -> Result<(), String> {
    let checks = upstreams.iter().map(|(name, channel)| async move {
        let mut health = HealthClient::new(channel.clone());
        let asked = health.check(HealthCheckRequest {
            service: String::new(),
        });
        match tokio::time::timeout(std::time::Duration::from_secs(1), asked).await {
            Ok(Ok(r)) if r.get_ref().status() == ServingStatus::Serving => Ok(()),
            Ok(Ok(r)) => Err(format!("{name}: {}", r.get_ref().status().as_str_name())),
            Ok(Err(s)) => Err(format!("{name}: {}", error::code_name(s.code()))),
            Err(_) => Err(format!("{name}: no answer within 1 s")),
        }
    });
    let failed: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if !upstreams.is_empty() && failed.len() == upstreams.len() {
        return Err(format!("no upstream is serving ({})", failed.join(", ")));
    }
    Ok(())
}

/// Every request: find the route, build the message, call the peer, answer.
async fn handle(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let (route_label, mut resp) = match edge.table.find(&method, req.uri().path()) {
        Found::Route(route, bound) => {
            let span = tracing::info_span!(
                "http.server",
                otel.name = %format_args!("{method} {}", route.pattern),
                otel.kind = "server",
                http.request.method = %method,
                http.route = %route.pattern,
                request_id = %request_id,
            );
            // The browser's traceparent, if any, is this span's parent; the peer
            // channel sends the trace on to the services.
            let _ = span.set_parent(trace::extract(req.headers()));
            let resp = call(&edge, route, bound, client, &request_id, req)
                .instrument(span)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            (route.pattern.clone(), resp)
        }
        Found::WrongMethod(allow) => (
            "unmatched".to_owned(),
            ApiError::wrong_method(&method, req.uri().path(), allow).into_response(),
        ),
        Found::NotFound => (
            "unmatched".to_owned(),
            ApiError::no_route(&method, req.uri().path()).into_response(),
        ),
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let labels = [
        ("route", route_label),
        ("method", method.to_string()),
        ("status", resp.status().as_u16().to_string()),
    ];
    metrics::counter!("http_server_requests_total", &labels).increment(1);
    metrics::histogram!("http_server_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// The transcoded call of one matched route.
async fn call(
    edge: &Edge,
    route: &Route,
    bound: Vec<(Vec<String>, String)>,
    client: SocketAddr,
    request_id: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body, edge.max_body_bytes, &parts.headers).await?;
    let message = transcode::request_message(route, bound, parts.uri.query(), &body)?;

    let mut request = tonic::Request::new(transcode::encode(&message));
    let md = request.metadata_mut();
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION)
        && let Ok(v) = MetadataValue::try_from(auth.as_bytes())
    {
        md.insert("authorization", v);
    }
    if let Ok(v) = MetadataValue::try_from(request_id) {
        md.insert("x-request-id", v);
    }
    // The services limit callers without a token per client address: name it.
    // Hops already listed are kept (every header, in order); the services
    // believe only the entries their trusted proxies (this edge) appended.
    let mut hops: Vec<&str> = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = client.ip().to_string();
    hops.push(&ip);
    let forwarded = hops.join(", ");
    if let Ok(v) = MetadataValue::try_from(forwarded.as_str()) {
        md.insert("x-forwarded-for", v);
    }

    let service = route.rpc.parent_service().full_name();
    let channel = edge
        .peers
        .get(service)
        .cloned()
        .ok_or_else(|| ApiError::new(tonic::Code::Internal, "internal error"))?;
    let path = http::uri::PathAndQuery::try_from(route.grpc_path())
        .map_err(|_| ApiError::new(tonic::Code::Internal, "internal error"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| {
        ApiError::new(
            tonic::Code::Unavailable,
            format!("service unavailable: {e}"),
        )
    })?;
    let answer = grpc
        .unary(request, path, RawCodec)
        .await
        .map_err(|s| ApiError::from_status(&s))?;
    let json = transcode::response_json(route.rpc.output(), answer.into_inner())?;
    let mut resp = Response::new(Body::from(json));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    *resp.status_mut() = StatusCode::OK;
    Ok(resp)
}

/// The body, at most `limit` bytes (413 beyond).
async fn read_body(
    body: Body,
    limit: usize,
    headers: &http::HeaderMap,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large(limit)),
        Err(e) => Err(ApiError::new(
            tonic::Code::InvalidArgument,
            format!("could not read the request body: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_name_their_peer() {
        assert_eq!(peer_name("emporium.order.v1.OrderService"), Some("order"));
        assert_eq!(peer_name("grpc.health.v1.Health"), None);
    }
}
