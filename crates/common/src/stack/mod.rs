//! The tower stack every request passes through, outermost first:
//!
//! request id → trace context (server span) → metrics + access log → auth →
//! rate limit → stream limits → load shed → deadline → catch panic → the service.
//!
//! One file per concern, each a plain tower `Layer` + `Service` with a concrete
//! future (no per-layer boxing), answering failures itself with a real gRPC
//! status (never a bare HTTP error nor a tower error), so the metrics layer
//! above counts the code the client really got. Commodity parts come from kept
//! crates — tower-http's request id and panic catching, governor's keyed rate
//! limiter — wrapped only to answer in gRPC. [`ServerStack`] assembles them;
//! `server::Server` puts it in front of every route.

mod auth;
mod catch_panic;
mod deadline;
mod gate;
mod load_shed;
mod metrics;
mod rate_limit;
mod request_id;
mod streams;
mod trace_context;

use std::convert::Infallible;

use tonic::{Status, body::Body};
use tower::{Layer, Service, ServiceBuilder, util::BoxCloneSyncService};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{PropagateRequestIdLayer, SetRequestIdLayer},
};

pub use self::{
    auth::AuthLayer,
    deadline::{Deadline, DeadlineLayer},
    gate::{Gate, GateLayer, Gated},
    load_shed::LoadShedLayer,
    metrics::{KnownMethods, MetricsLayer},
    rate_limit::{Bucket, RateLimitLayer, client_addr},
    request_id::{RequestId, X_REQUEST_ID, request_id},
    streams::{MAX_AGE_REACHED, PerOperation, StreamsLayer},
    trace_context::TraceContextLayer,
};
use crate::{auth::Tokens, config::ServerConfig};

/// The HTTP request every layer sees.
pub type HttpRequest = http::Request<Body>;
/// The HTTP response every layer returns.
pub type HttpResponse = http::Response<Body>;

/// A gRPC error as an HTTP response (trailers-only, as gRPC requires).
pub fn status_response(status: Status) -> HttpResponse {
    status.into_http()
}

/// The whole server stack as one layer.
#[derive(Debug, Clone)]
pub struct ServerStack {
    metrics: MetricsLayer,
    auth: AuthLayer,
    rate_limit: RateLimitLayer,
    streams: StreamsLayer,
    load_shed: LoadShedLayer,
    deadline: DeadlineLayer,
}

impl ServerStack {
    /// The stack for a server with `config`, verifying tokens with `tokens`,
    /// open without a token for `public` methods, labelling metrics by `known`.
    pub fn new(
        config: &ServerConfig,
        tokens: Tokens,
        public: impl IntoIterator<Item = String>,
        known: KnownMethods,
        access_log: bool,
    ) -> Self {
        let metrics = MetricsLayer::new(known.clone(), access_log);
        #[cfg(any(test, feature = "testing"))]
        let metrics = metrics.with_leak_guard(config.leak_guard);
        Self {
            metrics,
            auth: AuthLayer::new(tokens, public),
            rate_limit: RateLimitLayer::new(
                config.rate_limit_per_sec,
                config.rate_limit_burst,
                &config.trusted_proxies,
            ),
            load_shed: LoadShedLayer::new(
                config.max_in_flight,
                config.adaptive_concurrency,
                &known,
            ),
            streams: StreamsLayer::new(config, known),
            deadline: DeadlineLayer::new(config.request_timeout()),
        }
    }
}

impl<S> Layer<S> for ServerStack
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    type Service = BoxCloneSyncService<HttpRequest, HttpResponse, Infallible>;

    fn layer(&self, inner: S) -> Self::Service {
        let stack = ServiceBuilder::new()
            // First, so every later layer, log line and the response carry the
            // id; an insane id from the caller is replaced, not propagated.
            .map_request(request_id::drop_insane_id::<Body>)
            .layer(SetRequestIdLayer::x_request_id(request_id::MakeUuidV7))
            .layer(PropagateRequestIdLayer::x_request_id())
            // The server span, continuing the caller's trace; everything below
            // logs inside it and every outbound call carries it on.
            .layer(TraceContextLayer)
            // Above auth and shedding, so refused calls are counted with their code.
            .layer(self.metrics.clone())
            // Before any work is admitted: unauthenticated calls cost nothing below.
            .layer(GateLayer(self.auth.clone()))
            // After auth, so the limit is per user, not per connection or address.
            .layer(GateLayer(self.rate_limit.clone()))
            // Streams outlive their opening call: capped per caller and in all at
            // open (before shedding, so a refused stream costs no permit), then cut
            // off at their maximum age, token expiry or the client's deadline.
            .layer(self.streams.clone())
            // Global, not per connection: many connections must not multiply the limit.
            .layer(self.load_shed.clone())
            // Only admitted work is timed; the deadline is visible to handlers.
            .layer(self.deadline)
            // Innermost, so a panic becomes a gRPC status the layers above can see.
            .map_response(catch_panic::into_grpc_body)
            .layer(CatchPanicLayer::custom(
                catch_panic::internal_for_panic as fn(_) -> HttpResponse,
            ))
            .service(inner);
        BoxCloneSyncService::new(stack)
    }
}
