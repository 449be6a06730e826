//! Distributed tracing: W3C trace context and baggage in gRPC metadata, and
//! the RPC spans both sides of a call open.
//!
//! tonic propagates nothing by itself. The server stack ([`crate::stack`])
//! extracts `traceparent`, `tracestate` and `baggage` from every request and
//! makes its span a child of the caller's; every peer channel
//! ([`crate::client::PeerChannel`]) opens a client span and injects it. Service
//! code never touches either. Spans are `tracing` spans; the
//! `tracing-opentelemetry` layer installed by [`super::init`] turns
//! them into OpenTelemetry spans (names, kinds and status through the `otel.*`
//! fields it understands).

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapCompositePropagator, TextMapPropagator},
    trace::TraceContextExt as _,
};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use tonic::Code;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The propagators Emporium speaks: W3C trace context and W3C baggage. Built
/// once: every request and every outbound call uses it.
pub fn propagator() -> &'static TextMapCompositePropagator {
    static PROPAGATOR: std::sync::LazyLock<TextMapCompositePropagator> =
        std::sync::LazyLock::new(|| {
            TextMapCompositePropagator::new(vec![
                Box::new(TraceContextPropagator::new()),
                Box::new(BaggagePropagator::new()),
            ])
        });
    &PROPAGATOR
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // gRPC metadata keys are lower-case; the propagators already use lower case.
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's context (trace and baggage) from request headers; empty when
/// the caller sent none or sent garbage (a new trace starts then).
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Writes `cx` into request headers as `traceparent`, `tracestate`, `baggage`.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    propagator().inject_context(cx, &mut HeaderInjector(headers));
}

/// The W3C trace id of `span` (32 hex digits), if it is being traced.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The server span of one RPC, a child of the caller's context. Name and
/// attributes follow OpenTelemetry's RPC conventions; `rpc.grpc.status_code`
/// and the status are recorded by [`record_status`] when the call ends.
pub fn server_span(
    service: &str,
    method: &str,
    request_id: &str,
    parent: Context,
) -> tracing::Span {
    let span = tracing::info_span!(
        "rpc.server",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.system = "grpc",
        // Plain `&str`s, not `%` (Display): they are recorded as strings
        // instead of being formatted first.
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        request_id = request_id,
    );
    // An empty context (no or invalid traceparent) makes this span a new root.
    let _ = span.set_parent(parent);
    span
}

/// The client span of one outbound RPC to `peer` (`user`, `inventory`, …).
pub fn client_span(peer: &str, service: &str, method: &str, authority: &str) -> tracing::Span {
    let (address, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<i64>().ok()),
        None => (authority, None),
    };
    tracing::info_span!(
        "rpc.client",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "client",
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        peer.service = peer,
        server.address = address,
        server.port = port,
    )
}

/// Which side of a call a span is on: the conventions count different codes
/// as errors for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server's span: only codes that mean the server failed are errors.
    Server,
    /// The client's span: every non-OK code is an error.
    Client,
}

/// Whether `code` marks a span of `side` as failed (OpenTelemetry's gRPC
/// conventions: a server answering NOT_FOUND did its job).
pub fn is_error(side: Side, code: Code) -> bool {
    match side {
        Side::Client => code != Code::Ok,
        Side::Server => matches!(
            code,
            Code::Unknown
                | Code::DeadlineExceeded
                | Code::Unimplemented
                | Code::Internal
                | Code::Unavailable
                | Code::DataLoss
        ),
    }
}

/// Records the call's final code on its span, and an error status when the
/// code is an error for `side`.
pub fn record_status(span: &tracing::Span, side: Side, code: Code, message: &str) {
    span.record("rpc.grpc.status_code", code as i64);
    if is_error(side, code) {
        span.record("otel.status_code", "ERROR");
        let name = crate::status::code_name(code);
        if message.is_empty() {
            span.record("otel.status_description", name);
        } else {
            span.record("otel.status_description", format!("{name}: {message}"));
        }
    }
}

/// Marks `span` as failed with `description` (saga steps, rolled-back
/// transactions).
pub fn record_error(span: &tracing::Span, description: &str) {
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", description);
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::baggage::BaggageExt as _;

    #[test]
    fn trace_context_and_baggage_survive_a_round_trip() {
        let mut inbound = HeaderMap::new();
        inbound.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        inbound.insert("tracestate", HeaderValue::from_static("vendor=opaque"));
        inbound.insert("baggage", HeaderValue::from_static("tenant=acme"));
        let cx = extract(&inbound);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.baggage().get("tenant").map(|v| v.as_str()), Some("acme"));

        let mut outbound = HeaderMap::new();
        inject(&cx, &mut outbound);
        assert_eq!(
            outbound["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(outbound["tracestate"], "vendor=opaque");
        assert_eq!(outbound["baggage"], "tenant=acme");
    }

    #[test]
    fn garbage_starts_a_new_trace() {
        let mut inbound = HeaderMap::new();
        inbound.insert("traceparent", HeaderValue::from_static("00-zz-yy-01"));
        assert!(!extract(&inbound).span().span_context().is_valid());
        assert!(!extract(&HeaderMap::new()).span().span_context().is_valid());
    }

    #[test]
    fn servers_fail_only_on_their_own_faults() {
        assert!(!is_error(Side::Server, Code::NotFound));
        assert!(!is_error(Side::Server, Code::InvalidArgument));
        assert!(is_error(Side::Server, Code::Internal));
        assert!(is_error(Side::Server, Code::DeadlineExceeded));
        assert!(is_error(Side::Client, Code::NotFound));
        assert!(!is_error(Side::Client, Code::Ok));
    }
}
