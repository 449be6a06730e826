//! W3C trace context and baggage pass through a service: what arrives in the
//! server stack goes out on every call the handler makes through a
//! [`PeerChannel`], with the handler's own client span as the new parent. The
//! peer is a real gRPC server on a real socket that records the metadata it got.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use emporium_common::{
    client::channel,
    config::PeerConfig,
    rpc::health::{HealthCheckRequest, health_client::HealthClient},
    stack::{HttpRequest, HttpResponse, TraceContextLayer},
    telemetry,
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::body::Body;
use tower::{Layer as _, ServiceExt as _};
use tracing_subscriber::prelude::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A health server that keeps the headers of every request it receives.
async fn recording_peer() -> (u16, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let layer = tower::layer::layer_fn(move |inner| {
        let record = record.clone();
        tower::util::MapRequest::new(inner, move |req: http::Request<Body>| {
            record.lock().unwrap().push(req.headers().clone());
            req
        })
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(layer)
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (port, seen)
}

#[tokio::test]
async fn trace_context_and_baggage_flow_through_a_service_to_its_peers() {
    let provider = SdkTracerProvider::builder().build();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry::spans_layer(&provider)),
    );
    let (port, seen) = recording_peer().await;
    let peer = channel("peer", &PeerConfig::local(port)).unwrap();

    // The service: whatever it is asked, it calls its peer once.
    let handler = tower::service_fn(move |_req: HttpRequest| {
        let peer = peer.clone();
        async move {
            HealthClient::new(peer)
                .check(HealthCheckRequest::default())
                .await
                .expect("the peer answers");
            Ok::<HttpResponse, Infallible>(tonic::Status::ok("").into_http())
        }
    });
    let service = TraceContextLayer.layer(handler);
    let request = http::Request::builder()
        .uri("/emporium.test.v1.Svc/Do")
        .header("traceparent", format!("00-{TRACE_ID}-{CALLER_SPAN}-01"))
        .header("tracestate", "vendor=opaque")
        .header("baggage", "tenant=acme,plan=gold")
        .body(Body::empty())
        .unwrap();
    service.oneshot(request).await.unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let headers = &seen[0];
    let traceparent = headers["traceparent"].to_str().unwrap();
    let parts: Vec<_> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[1], TRACE_ID, "the caller's trace goes on");
    assert_ne!(
        parts[2], CALLER_SPAN,
        "the parent is the service's own client span"
    );
    assert_eq!(parts[3], "01", "the sampling decision goes on");
    assert_eq!(headers["tracestate"], "vendor=opaque");
    let baggage = headers["baggage"].to_str().unwrap();
    let mut items: Vec<_> = baggage.split(',').map(str::trim).collect();
    items.sort_unstable();
    assert_eq!(items, ["plan=gold", "tenant=acme"]);
}

#[tokio::test]
async fn a_call_outside_any_trace_starts_one() {
    let provider = SdkTracerProvider::builder().build();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(telemetry::spans_layer(&provider)),
    );
    let (port, seen) = recording_peer().await;
    let mut client = HealthClient::new(channel("peer", &PeerConfig::local(port)).unwrap());
    client.check(HealthCheckRequest::default()).await.unwrap();
    client.check(HealthCheckRequest::default()).await.unwrap();
    let seen = seen.lock().unwrap();
    let trace = |h: &http::HeaderMap| {
        h["traceparent"]
            .to_str()
            .unwrap()
            .split('-')
            .nth(1)
            .map(str::to_owned)
    };
    assert!(trace(&seen[0]).is_some());
    assert_ne!(
        trace(&seen[0]),
        trace(&seen[1]),
        "two root calls are two traces"
    );
    assert!(seen[0].get("baggage").is_none());
}
