//! The real binary exporting over OTLP/gRPC to a collector the test runs (a
//! stand-in that keeps what it receives): the standard `OTEL_*` variables
//! switch export on and name the service, the caller's `traceparent` is
//! honoured, and the last batch is flushed at shutdown. A collector that never
//! answers costs the calls nothing and cannot hold up the exit.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use emporium_common::rpc::Channel;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::span::SpanKind,
};

use emporium_testkit::process::Process;

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, pb, process::command};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn collector() -> (SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let svc = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, collector)
}

fn text<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

async fn authenticate(addr: SocketAddr, traceparent: Option<&str>) {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(pb::AuthenticateRequest {
        email: ADMIN_EMAIL.into(),
        password: ADMIN_PASSWORD.into(),
    });
    if let Some(tp) = traceparent {
        req.metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    pb::user_service_client::UserServiceClient::new(channel)
        .authenticate(req)
        .await
        .expect("the call succeeds whatever the collector does");
}

/// SIGTERM, then a clean exit within the drain, the grace and the bounded
/// flush (a hang fails the test rather than blocking it).
async fn stop(process: &mut Process) {
    let status = process.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_named_by_otel_variables_and_are_flushed_at_exit() {
    let (collector_addr, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{collector_addr}"),
    )
    .env("OTEL_SERVICE_NAME", "user-under-test")
    // Nothing is sent on a timer during the test: only the flush at exit
    // can deliver the span.
    .env("OTEL_BSP_SCHEDULE_DELAY", "600000");
    let mut process = Process::start(cmd);
    let addr = process.grpc;

    authenticate(addr, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    assert!(
        received.0.lock().unwrap().is_empty(),
        "spans went out before shutdown, so this test would not prove the flush"
    );
    stop(&mut process).await;

    let exports = received.0.lock().unwrap().clone();
    let resource_spans: Vec<_> = exports.iter().flat_map(|e| &e.resource_spans).collect();
    assert!(!resource_spans.is_empty(), "nothing was flushed at exit");
    for rs in &resource_spans {
        let attrs = &rs.resource.as_ref().unwrap().attributes;
        assert_eq!(
            text(attrs, "service.name"),
            Some(&Value::StringValue("user-under-test".into()))
        );
    }
    let spans: Vec<_> = resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    let server = spans
        .iter()
        .find(|s| s.name == "emporium.user.v1.UserService/Authenticate")
        .unwrap_or_else(|| panic!("no Authenticate span in {spans:#?}"));
    assert_eq!(
        hex(&server.trace_id),
        TRACE_ID,
        "the caller's trace continues"
    );
    assert_eq!(
        hex(&server.parent_span_id),
        PARENT_ID,
        "the caller's span is the parent"
    );
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        text(&server.attributes, "rpc.system"),
        Some(&Value::StringValue("grpc".into()))
    );
    assert_eq!(
        text(&server.attributes, "rpc.grpc.status_code"),
        Some(&Value::IntValue(0))
    );

    // The access line of that call names the same trace and the server span.
    let span_id = hex(&server.span_id);
    let access = process
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["message"] == "rpc finished" && l["rpc.method"] == "Authenticate")
        .expect("an access line for Authenticate");
    assert_eq!(access["trace_id"], TRACE_ID, "{access}");
    assert_eq!(access["span_id"], span_id.as_str(), "{access}");
    assert!(access["request_id"].is_string(), "{access}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_comes_from_otel_traces_sampler() {
    let (collector_addr, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{collector_addr}"),
    )
    .env("OTEL_TRACES_SAMPLER", "always_off");
    let mut process = Process::start(cmd);
    let addr = process.grpc;
    // Even a caller that sampled its trace is not recorded under always_off.
    authenticate(addr, Some(&format!("00-{TRACE_ID}-{PARENT_ID}-01"))).await;
    authenticate(addr, None).await;
    stop(&mut process).await;
    let spans: usize = received
        .0
        .lock()
        .unwrap()
        .iter()
        .flat_map(|e| &e.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(spans, 0, "always_off exported spans");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_never_answers_costs_the_calls_nothing() {
    // Accepts connections and never says a word: exports hang until they time out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming().flatten() {
            keep.lock().unwrap().push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://{silent_addr}"),
    )
    .env("OTEL_BSP_SCHEDULE_DELAY", "10");
    let mut process = Process::start(cmd);
    let addr = process.grpc;
    for _ in 0..20 {
        authenticate(addr, None).await;
    }
    assert!(
        !held.lock().unwrap().is_empty(),
        "the exporter never tried the collector"
    );
    // Shutdown waits for the flush only so long, then exits cleanly.
    stop(&mut process).await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
