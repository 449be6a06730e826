//! gRPC and gRPC-Web on the edge's port, passed through to the services
//! without decoding the messages. `tonic-web` turns a gRPC-Web request
//! (`application/grpc-web`, `+proto`, `-text`) into gRPC and the answer back
//! (trailers in the body); plain gRPC over h2c passes as it is.
//!
//! Only the public methods go through: those with a `google.api.http` rule,
//! the same set the REST routes expose. Everything else (ReserveStock,
//! Charge, …) is UNIMPLEMENTED here, as if it did not exist. The edge's own
//! `grpc.health.v1.Health` answers on this port too, so the kit's
//! `emporium-edge health` probe works as it does for the services.
//!
//! Only an allowlist of headers is sent on: the browser's cookies, origin
//! and hop-by-hop headers stay at the edge.

use std::{
    collections::HashMap,
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
};

use emporium_common::{BoxError, client::PeerChannel, telemetry::trace};
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue};
use tonic::{Status, body::Body};
use tonic_health::{pb::health_server::HealthServer, server::HealthService};
use tower::Service;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Headers a gRPC call keeps on its way to the service.
const FORWARDED: &[&str] = &[
    "content-type",
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "authorization",
    "x-request-id",
    "x-forwarded-for",
    "traceparent",
    "tracestate",
    "user-agent",
];

/// One public method: who serves it, and whether it streams.
#[derive(Debug, Clone)]
pub(crate) struct Method {
    /// The channel to the service.
    pub(crate) channel: PeerChannel,
    /// Server streaming (its deadline is not the unary default).
    pub(crate) streaming: bool,
}

/// Who is calling, put in the request's extensions by the HTTP handler.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The TCP peer.
    pub(crate) addr: SocketAddr,
    /// The request id (the client's or a new one).
    pub(crate) request_id: String,
}

/// The pass-through service that `tonic_web::GrpcWebLayer` wraps.
#[derive(Clone)]
pub(crate) struct Forward {
    methods: Arc<HashMap<String, Method>>,
    health: HealthServer<HealthService>,
}

impl Forward {
    /// Forwards the `methods` (by gRPC path) and answers health from `health`.
    pub(crate) fn new(methods: HashMap<String, Method>, health: HealthService) -> Self {
        Self {
            methods: Arc::new(methods),
            health: HealthServer::new(health),
        }
    }
}

/// The headers sent on: the allowlist, the client's address appended to
/// `x-forwarded-for`, and the request id.
pub(crate) fn forwarded_headers(
    headers: &HeaderMap,
    client: SocketAddr,
    request_id: &str,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in FORWARDED {
        for value in headers.get_all(*name) {
            out.append(*name, value.clone());
        }
    }
    let mut hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let ip = client.ip().to_string();
    hops.push(&ip);
    out.remove("x-forwarded-for");
    if let Ok(v) = HeaderValue::from_str(&hops.join(", ")) {
        out.insert("x-forwarded-for", v);
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        out.insert("x-request-id", v);
    }
    out
}

impl Service<http::Request<Body>> for Forward {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let path = req.uri().path().to_owned();
        if path.starts_with("/grpc.health.v1.Health/") {
            return Box::pin(self.health.call(req));
        }
        let (mut parts, body) = req.into_parts();
        if let Some(caller) = parts.extensions.get::<Caller>() {
            parts.headers = forwarded_headers(&parts.headers, caller.addr, &caller.request_id);
        }
        // gRPC-Web arrives over HTTP/1.1; the services speak HTTP/2.
        parts.version = http::Version::HTTP_2;
        let mut req = http::Request::from_parts(parts, body);
        let Some(method) = self.methods.get(&path).cloned() else {
            return Box::pin(async move {
                Ok(Status::unimplemented(format!("{path} is not served here")).into_http())
            });
        };
        if method.streaming && !req.headers().contains_key("grpc-timeout") {
            // The peer channel's default deadline is for unary calls.
            let ms = crate::stream::STREAM_DEADLINE.as_millis();
            if let Ok(v) = HeaderValue::from_str(&format!("{ms}m")) {
                req.headers_mut().insert("grpc-timeout", v);
            }
        }
        let span = tracing::info_span!(
            "grpc.proxy",
            otel.name = %path,
            otel.kind = "server",
            rpc.system = "grpc",
        );
        let _ = span.set_parent(trace::extract(req.headers()));
        let mut channel = method.channel;
        Box::pin(
            async move {
                let answer: Result<_, BoxError> = channel.call(req).await;
                Ok(answer.unwrap_or_else(|e| {
                    match e.downcast::<Status>() {
                        Ok(status) => *status,
                        Err(e) => Status::unavailable(format!("service unavailable: {e}")),
                    }
                    .into_http()
                }))
            }
            .instrument(span),
        )
    }
}

/// True for `application/grpc` and `application/grpc-web` (any suffix).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}
