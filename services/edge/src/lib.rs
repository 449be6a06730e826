//! Emporium's edge: the one door for browsers and public API clients. On one
//! port it serves REST/JSON transcoded from the `google.api.http` annotations
//! in the contracts, server streams as Server-Sent Events or WebSocket,
//! gRPC-Web and gRPC for the same public methods, the OpenAPI document and
//! the storefront page. It calls the four services over gRPC like any other
//! client of theirs (the kit's peer channels: deadlines, retries, breakers,
//! balancing).
//!
//! It is not a service with rules of its own: it holds no state and no
//! handler per RPC. Annotating an RPC in `proto/` adds its route.
//!
//! Reading order: [`config`] → [`routes`] (the table read from the descriptor
//! set) → [`transcode`] (JSON ⇄ protobuf, the raw gRPC codec) → [`error`]
//! (gRPC codes as HTTP statuses) → `stream` (SSE, WebSocket) → `grpc`
//! (gRPC-Web and gRPC passed through) → [`openapi`] → [`serve`] and the one
//! handler below.

pub mod config;
pub mod error;
mod grpc;
pub mod openapi;
pub mod routes;
mod static_files;
mod stream;
pub mod transcode;

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    response::{IntoResponse, Response},
    routing::get,
};
use emporium_common::{
    BoxError,
    client::{self, PeerChannel},
    server::{self, LIVENESS, Listeners},
    telemetry::trace,
};
use futures::Stream;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::BodyExt as _;
use prost_reflect::DescriptorPool;
use tokio::sync::watch;
use tonic::metadata::MetadataValue;
use tonic_health::{
    ServingStatus,
    pb::{
        HealthCheckRequest, health_check_response::ServingStatus as CheckStatus,
        health_client::HealthClient,
    },
    server::{HealthReporter, HealthService},
};
use tower::{ServiceExt as _, util::BoxCloneSyncService};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use config::Config;

use crate::{
    error::ApiError,
    routes::{Found, Route, RouteTable},
    transcode::RawCodec,
};

/// gRPC-Web and gRPC, translated and passed through.
type GrpcService =
    BoxCloneSyncService<http::Request<Body>, http::Response<tonic::body::Body>, Infallible>;

/// Everything the handler needs, shared by every request.
struct Edge {
    table: RouteTable,
    /// Proto service full name → the channel to the peer serving it.
    peers: HashMap<String, PeerChannel>,
    max_body_bytes: usize,
    heartbeat: Duration,
    grpc: GrpcService,
    /// The public methods' gRPC paths (for metric labels).
    grpc_paths: Vec<String>,
    openapi: String,
    /// Turns true when the edge stops: open streams end, telling the client
    /// to reconnect.
    stop: watch::Receiver<bool>,
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

/// CORS for the configured origins: the gRPC-Web headers allowed and the
/// gRPC status headers exposed, so generated gRPC-Web clients can read them.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let names = |names: &[&'static str]| -> Vec<header::HeaderName> {
        names
            .iter()
            .map(|n| header::HeaderName::from_static(n))
            .collect()
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(names(&[
            "authorization",
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "x-request-id",
            "traceparent",
            "tracestate",
        ]))
        .expose_headers(names(&[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "x-request-id",
            "retry-after",
        ]))
        .max_age(Duration::from_secs(600))
}

/// The edge's routes over `channels`: the transcoder for every annotated
/// method, gRPC-Web and gRPC for the same methods, `/openapi.json`, and JSON
/// errors for everything else.
fn router(
    channels: &HashMap<&'static str, PeerChannel>,
    config: &Config,
    health: HealthService,
    stop: watch::Receiver<bool>,
) -> Result<Router, BoxError> {
    let pool = DescriptorPool::decode(emporium_proto::FILE_DESCRIPTOR_SET)?;
    let table = RouteTable::from_pool(&pool)?;
    let mut peers = HashMap::new();
    let mut methods = HashMap::new();
    for route in table.routes() {
        let service = route.rpc.parent_service().full_name().to_owned();
        let channel = peer_name(&service)
            .and_then(|p| channels.get(p))
            .ok_or_else(|| format!("no peer serves {service} (routes of {})", route.pattern))?;
        peers.insert(service, channel.clone());
        methods.insert(
            route.grpc_path(),
            grpc::Method {
                channel: channel.clone(),
                streaming: route.rpc.is_server_streaming(),
            },
        );
        tracing::debug!(method = %route.method, pattern = %route.pattern, rpc = %route.grpc_path(), "route");
    }
    let mut grpc_paths: Vec<String> = methods.keys().cloned().collect();
    grpc_paths.sort();
    let grpc = BoxCloneSyncService::new(tower::Layer::layer(
        &tonic_web::GrpcWebLayer::new(),
        grpc::Forward::new(methods, health),
    ));
    let openapi =
        serde_json::to_string_pretty(&openapi::document(&table, env!("CARGO_PKG_VERSION")))?;
    let edge = Arc::new(Edge {
        table,
        peers,
        max_body_bytes: config.edge.max_body_bytes,
        heartbeat: config.edge.stream_heartbeat(),
        grpc,
        grpc_paths,
        openapi,
        stop,
    });
    Ok(Router::new()
        .route("/openapi.json", get(openapi_json))
        .merge(static_files::router())
        .fallback(handle)
        .with_state(edge)
        .layer(cors(&config.edge.cors_allowed_origins)))
}

async fn openapi_json(State(edge): State<Arc<Edge>>) -> Response {
    let mut resp = Response::new(Body::from(edge.openapi.clone()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Serves the edge's port and the admin routes until `shutdown` completes;
/// then `/readyz` and gRPC health turn NOT_SERVING, new requests are still
/// served for the drain delay, open streams are told to reconnect, and
/// in-flight requests get the grace period.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    emporium_common::telemetry::metrics_handle();
    let channels = channels(&config)?;
    let reporter = HealthReporter::new();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status(LIVENESS, ServingStatus::Serving)
        .await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let app = router(
        &channels,
        &config,
        HealthService::from_health_reporter(reporter.clone()),
        stop_rx.clone(),
    )?;
    let (http, admin) = listeners.into_parts();
    let draining = Arc::new(AtomicBool::new(false));
    let upstreams: Arc<Vec<(&'static str, PeerChannel)>> = Arc::new(channels.into_iter().collect());
    let readiness: server::ReadinessCheck = Arc::new(move || {
        let upstreams = upstreams.clone();
        Box::pin(async move { upstreams_ready(&upstreams).await })
    });
    let admin_app = server::admin_router(draining.clone(), Some(readiness));

    let stopped = |mut rx: watch::Receiver<bool>| async move {
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
        "shutdown requested: /readyz and health report NOT_SERVING"
    );
    draining.store(true, Ordering::SeqCst);
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
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
        match tokio::time::timeout(Duration::from_secs(1), asked).await {
            Ok(Ok(r)) if r.get_ref().status() == CheckStatus::Serving => Ok(()),
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

/// Every request: gRPC(-Web) passes through; anything else finds its route,
/// builds the message, calls the peer and answers.
async fn handle(
    State(edge): State<Arc<Edge>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    mut req: Request,
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
    let (route_label, mut resp) = if grpc::is_grpc(req.headers()) {
        let path = req.uri().path();
        let label = if edge.grpc_paths.iter().any(|p| p == path) {
            path.to_owned()
        } else {
            "unmatched".to_owned()
        };
        req.extensions_mut().insert(grpc::Caller {
            addr: client,
            request_id: request_id.clone(),
        });
        let resp = match edge.grpc.clone().oneshot(req).await {
            Ok(resp) => resp.map(Body::new),
            Err(never) => match never {},
        };
        (label, resp)
    } else {
        match edge.table.find(&method, req.uri().path()) {
            Found::Route(route, bound) => {
                let span = tracing::info_span!(
                    "http.server",
                    otel.name = %format_args!("{method} {}", route.pattern),
                    otel.kind = "server",
                    http.request.method = %method,
                    http.route = %route.pattern,
                    request_id = %request_id,
                );
                // The browser's traceparent, if any, is this span's parent; the
                // peer channel sends the trace on to the services.
                let _ = span.set_parent(trace::extract(req.headers()));
                let resp = if route.rpc.is_server_streaming() {
                    open_stream(&edge, route, bound, client, &request_id, req)
                        .instrument(span)
                        .await
                } else {
                    call(&edge, route, bound, client, &request_id, req)
                        .instrument(span)
                        .await
                        .unwrap_or_else(IntoResponse::into_response)
                };
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
        }
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

/// The metadata a transcoded call carries: the caller's token (or the
/// stream's `access_token`), the request id, and the client's address.
fn metadata(
    md: &mut tonic::metadata::MetadataMap,
    headers: &http::HeaderMap,
    token: Option<&str>,
    client: SocketAddr,
    request_id: &str,
) {
    let forwarded = grpc::forwarded_headers(headers, client, request_id);
    for name in ["authorization", "x-request-id", "x-forwarded-for"] {
        if let Some(v) = forwarded.get(name)
            && let Ok(v) = MetadataValue::try_from(v.as_bytes())
        {
            md.insert(name, v);
        }
    }
    if !md.contains_key("authorization")
        && let Some(token) = token
        && let Ok(v) = MetadataValue::try_from(format!("Bearer {token}"))
    {
        md.insert("authorization", v);
    }
}

/// A ready gRPC client to the service behind `route`.
async fn client_for(
    edge: &Edge,
    route: &Route,
) -> Result<(tonic::client::Grpc<PeerChannel>, http::uri::PathAndQuery), ApiError> {
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
    Ok((grpc, path))
}

/// The transcoded call of one matched unary route.
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
    metadata(
        request.metadata_mut(),
        &parts.headers,
        None,
        client,
        request_id,
    );
    let (mut grpc, path) = client_for(edge, route).await?;
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

/// A server-streaming route: opened as a gRPC stream, answered as SSE or,
/// on `Upgrade: websocket`, as a WebSocket.
async fn open_stream(
    edge: &Edge,
    route: &Route,
    bound: Vec<(Vec<String>, String)>,
    client: SocketAddr,
    request_id: &str,
    req: Request,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let websocket = stream::wants_websocket(&parts.headers);
    let opened: Result<Pin<Box<dyn Stream<Item = stream::Item> + Send>>, ApiError> = async {
        let body = read_body(body, edge.max_body_bytes, &parts.headers).await?;
        let (token, query) = stream::take_access_token(parts.uri.query());
        let message = transcode::request_message(route, bound, query.as_deref(), &body)?;
        let mut request = tonic::Request::new(transcode::encode(&message));
        metadata(
            request.metadata_mut(),
            &parts.headers,
            token.as_deref(),
            client,
            request_id,
        );
        // The peer channel's default deadline is for unary calls; the service
        // bounds a stream's age itself.
        request.set_timeout(stream::STREAM_DEADLINE);
        let (mut grpc, path) = client_for(edge, route).await?;
        let answer = grpc
            .server_streaming(request, path, RawCodec)
            .await
            .map_err(|s| ApiError::from_status(&s))?;
        let items = stream::items(answer.into_inner(), route.rpc.output(), edge.stop.clone());
        Ok(Box::pin(items) as Pin<Box<dyn Stream<Item = stream::Item> + Send>>)
    }
    .await;
    if websocket {
        stream::websocket(&mut parts, opened, edge.heartbeat).await
    } else {
        match opened {
            Ok(items) => stream::sse(items, edge.heartbeat),
            Err(e) => e.into_response(),
        }
    }
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
