//! Opens the request's server span as a child of the caller's trace (W3C
//! `traceparent`/`tracestate`/`baggage` in the metadata), so every log line
//! and every outbound call inside carries the trace and the request id.

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::instrument::{Instrument as _, Instrumented};

use super::{HttpRequest, request_id::request_id};
use crate::{rpc::split_path, telemetry::trace};

/// See the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextLayer;

impl<S> Layer<S> for TraceContextLayer {
    type Service = TraceContext<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceContext { inner }
    }
}

/// The service [`TraceContextLayer`] makes.
#[derive(Debug, Clone)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S: Service<HttpRequest>> Service<HttpRequest> for TraceContext<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let (service, method) = split_path(req.uri().path()).unwrap_or(("unknown", "unknown"));
        let span = trace::server_span(
            service,
            method,
            request_id(&req),
            trace::extract(req.headers()),
        );
        // The handler is called inside the span too: work it starts before its
        // first await belongs to the request.
        let _entered = span.enter();
        let fut = self.inner.call(req);
        drop(_entered);
        fut.instrument(span)
    }
}
