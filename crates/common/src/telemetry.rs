//! Logs, traces and the metrics recorder.
//!
//! [`init`] installs the process-wide `tracing` subscriber with two layers:
//!
//! - OpenTelemetry: every span becomes an OpenTelemetry span. With
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set,
//!   spans go to that collector over OTLP/gRPC through a batch processor (a
//!   queue and a background thread: a slow or absent collector costs requests
//!   nothing, and a full queue drops spans rather than waiting). Without it the
//!   spans still get W3C ids, so logs carry trace ids and incoming trace context
//!   is passed on. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER(_ARG)` and `OTEL_BSP_*` work as the specification says.
//! - Logs: pretty lines for people, or JSON lines where every line inside a
//!   request carries `trace_id`, `span_id` and `request_id`.
//!
//! It returns a guard; keep it alive for the life of the process: dropping it
//! flushes the spans still queued (bounded by [`FLUSH_TIMEOUT`]).

use std::{
    io::Write as _,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use serde_json::{Map, Value};
use tracing::{
    Event, Level, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, filter_fn},
    fmt::{
        self, MakeWriter,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    layer::Context,
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{LogFormat, TelemetryConfig};

/// How long shutdown waits for the last spans to reach the collector.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Flushes telemetry when dropped. Hold it in `main` until the server returns.
#[must_use = "dropping the guard ends telemetry"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.provider.take() else {
            return;
        };
        let shutdown = move || {
            if let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT) {
                eprintln!("telemetry: spans not flushed at shutdown: {e}");
            }
        };
        // The exporter's connection is driven by this runtime: block a worker
        // politely instead of stalling the one that would drive it.
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        }
    }
}

/// Whether the environment names an OTLP collector for traces.
fn otlp_configured() -> bool {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
}

/// The tracer provider of a service binary: resource from the `OTEL_*`
/// variables (`service` unless `OTEL_SERVICE_NAME` says otherwise), sampler
/// from `OTEL_TRACES_SAMPLER`, and a batch OTLP/gRPC exporter when a collector
/// is configured. Call inside the Tokio runtime: the exporter's channel lives
/// on it.
pub fn tracer_provider(service: &str) -> SdkTracerProvider {
    let mut resource = Resource::builder();
    let named_by_env = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(service.to_owned());
    }
    let mut builder = SdkTracerProvider::builder().with_resource(resource.build());
    if otlp_configured() {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            // Telemetry must never keep a service from starting.
            Err(e) => eprintln!("telemetry: OTLP exporter disabled: {e}"),
        }
    }
    builder.build()
}

/// Installs the global subscriber for a service binary named `service`
/// (`user`, `order`, …): `RUST_LOG` when set, else the configured filter, for
/// the logs; every Emporium span for the traces. A second call (tests spawn
/// several services in one process) keeps the first subscriber.
pub fn init(config: &TelemetryConfig, service: &str) -> TelemetryGuard {
    let provider = tracer_provider(service);
    install(config, &provider, std::io::stdout);
    TelemetryGuard {
        provider: Some(provider),
    }
}

/// Tracing for a command-line client named `name`: spans only (the program
/// prints its own output), exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is
/// set, so its calls start traces the services continue. Call inside a
/// multi-thread runtime; drop the guard inside it too.
pub fn init_client(name: &str) -> TelemetryGuard {
    let provider = tracer_provider(name);
    let _ = tracing_subscriber::registry()
        .with(filter_fn(is_our_span))
        .with(spans_layer(&provider))
        .try_init();
    TelemetryGuard {
        provider: Some(provider),
    }
}

/// Installs the global subscriber around `provider`, writing logs to `writer`.
/// Returns `false` when a subscriber was already installed (which is kept).
/// Tests pass a provider with an in-memory exporter.
pub fn install<W>(config: &TelemetryConfig, provider: &SdkTracerProvider, writer: W) -> bool
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    subscriber(filter, config.log_format, provider, writer)
        .try_init()
        .is_ok()
}

/// The subscriber [`install`] installs: log filter and format, spans to `provider`.
pub fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    provider: &SdkTracerProvider,
    writer: W,
) -> impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let logs = match format {
        LogFormat::Json => JsonLines::new(writer).boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_writer(writer).boxed(),
    };
    // One global filter lets through what either side needs: our spans always
    // (a `warn` log filter must not break traces) and whatever the log filter
    // may want; the log layer then applies the log filter to events itself.
    // No per-layer filters (`with_filter`): with two of them, tracing-subscriber
    // 0.3.23 lost spans at random on PostgreSQL runs, splitting traces (decision 0009).
    let max_log = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    tracing_subscriber::registry()
        .with(filter_fn(move |meta| {
            is_our_span(meta) || LevelFilter::from_level(*meta.level()) <= max_log
        }))
        .with(spans_layer(provider))
        .with(LogFilter {
            filter,
            inner: logs,
        })
}

/// Whether `meta` is one of Emporium's spans (INFO and above): the spans a
/// trace is made of, whatever the log filter says.
fn is_our_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span() && meta.target().starts_with("emporium") && *meta.level() <= Level::INFO
}

/// The OpenTelemetry layer (unfiltered: the global filter installed beside it
/// decides what reaches it).
pub fn spans_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("emporium"))
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_location(false)
        // Parents come from the `tracing` span tree (explicit and contextual);
        // nothing here reads OpenTelemetry's thread-local current context, so
        // maintaining it on every enter and exit of every poll is pure cost.
        .with_context_activation(false)
}

/// A log layer that prints only the events `filter` allows. Span callbacks pass
/// through so lines keep their span context.
struct LogFilter<L> {
    filter: EnvFilter,
    inner: L,
}

impl<S, L> Layer<S> for LogFilter<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.inner.on_register_dispatch(subscriber);
    }
    fn on_layer(&mut self, subscriber: &mut S) {
        self.inner.on_layer(subscriber);
    }
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_new_span(&self.filter, attrs, id, ctx.clone());
        self.inner.on_new_span(attrs, id, ctx);
    }
    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        Layer::<S>::on_record(&self.filter, id, values, ctx.clone());
        self.inner.on_record(id, values, ctx);
    }
    fn on_follows_from(&self, id: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_follows_from(id, follows, ctx);
    }
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if Layer::<S>::enabled(&self.filter, event.metadata(), ctx.clone()) {
            self.inner.on_event(event, ctx);
        }
    }
    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_enter(&self.filter, id, ctx.clone());
        self.inner.on_enter(id, ctx);
    }
    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_exit(&self.filter, id, ctx.clone());
        self.inner.on_exit(id, ctx);
    }
    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        Layer::<S>::on_close(&self.filter, id.clone(), ctx.clone());
        self.inner.on_close(id, ctx);
    }
    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.inner.on_id_change(old, new, ctx);
    }
}

/// Logs for tests: silent unless `TEST_LOG` is set, then pretty at `RUST_LOG` or
/// `debug`. Safe to call from every test.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(fmt::layer().compact().with_test_writer())
                .try_init();
        }
    });
}

/// The request id of a span and its children, kept where [`JsonLines`] finds it.
struct RequestIdField(String);

#[derive(Default)]
struct RequestIdVisitor(Option<String>);

impl Visit for RequestIdVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "request_id" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "request_id" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

struct JsonFields(Map<String, Value>);

impl Visit for JsonFields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), crate::error::chain(value).into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// JSON lines: `timestamp`, `level`, `target`, `message`, the event's fields,
/// and inside a span `span`, `trace_id`, `span_id` and `request_id` — the keys
/// that join a log line to its trace and to the client's request.
pub struct JsonLines<W> {
    writer: W,
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLines<W> {
    /// Lines go to `writer`.
    pub fn new(writer: W) -> Self {
        Self {
            writer,
            dispatch: OnceLock::new(),
        }
    }
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let mut v = RequestIdVisitor::default();
        attrs.record(&mut v);
        if let (Some(rid), Some(span)) = (v.0, ctx.span(id)) {
            span.extensions_mut().insert(RequestIdField(rid));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let span = ctx.event_span(event);
        // Before any extension is borrowed: the lookup locks the span's extensions.
        let ids = span.as_ref().and_then(|s| {
            let dispatch = self.dispatch.get()?.upgrade()?;
            let cx = tracing_opentelemetry::get_otel_context(&s.id(), &dispatch)?;
            let sc = cx.span().span_context().clone();
            sc.is_valid()
                .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
        });
        let mut fields = JsonFields(Map::new());
        let mut ts = String::new();
        let _ = SystemTime.format_time(&mut Writer::new(&mut ts));
        fields.0.insert("timestamp".into(), ts.into());
        let meta = event.metadata();
        fields
            .0
            .insert("level".into(), meta.level().as_str().into());
        fields.0.insert("target".into(), meta.target().into());
        event.record(&mut fields);
        let mut line = fields.0;
        if let Some(span) = &span {
            line.insert("span".into(), span.name().into());
            if let Some((trace_id, span_id)) = ids {
                line.insert("trace_id".into(), trace_id.into());
                line.insert("span_id".into(), span_id.into());
            }
            if let Some(rid) = span
                .scope()
                .find_map(|s| s.extensions().get::<RequestIdField>().map(|r| r.0.clone()))
            {
                line.insert("request_id".into(), rid.into());
            }
        }
        let mut buf = serde_json::to_vec(&Value::Object(line)).unwrap_or_default();
        buf.push(b'\n');
        // One write per line so concurrent lines never interleave.
        let _ = self.writer.make_writer_for(meta).write_all(&buf);
    }
}

/// A [`MakeWriter`] that keeps every line in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<u8>>>);

impl CapturedLines {
    /// Every line written so far, parsed as JSON.
    pub fn json(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("captured lines poisoned").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl std::io::Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("captured lines poisoned")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLines {
    type Writer = CapturedLines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

type Collector = Box<dyn Fn() -> bool + Send + Sync>;

fn collectors() -> &'static Mutex<Vec<Collector>> {
    static COLLECTORS: OnceLock<Mutex<Vec<Collector>>> = OnceLock::new();
    COLLECTORS.get_or_init(Mutex::default)
}

/// Runs `collect` before every render of `/metrics` (gauges that are read
/// rather than counted, like pool sizes) until it returns `false`.
pub fn on_scrape(collect: impl Fn() -> bool + Send + Sync + 'static) {
    collectors()
        .lock()
        .expect("collectors poisoned")
        .push(Box::new(collect));
}

/// The Prometheus text of every metric of this process, read gauges refreshed.
pub fn render_metrics() -> String {
    collectors()
        .lock()
        .expect("collectors poisoned")
        .retain(|collect| collect());
    metrics_handle().render()
}

/// Latency buckets in seconds: from a cached read (~100 µs) to a stuck call (10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    // Without upkeep the histograms' internal buffers grow without bound.
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_log_filter_keeps_traces_and_the_ids_on_what_it_prints() {
        let provider = SdkTracerProvider::builder().build();
        let lines = CapturedLines::default();
        let subscriber = subscriber(
            EnvFilter::new("warn"),
            LogFormat::Json,
            &provider,
            lines.clone(),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = crate::trace::server_span(
                "emporium.user.v1.UserService",
                "GetUser",
                "req-2",
                opentelemetry::Context::new(),
            );
            let trace_id = crate::trace::trace_id(&span).expect("the span is traced at `warn`");
            span.in_scope(|| {
                tracing::info!("not printed at warn");
                tracing::warn!("printed");
            });
            let lines = lines.json();
            assert_eq!(lines.len(), 1, "{lines:#?}");
            assert_eq!(lines[0]["message"], "printed");
            assert_eq!(lines[0]["trace_id"], trace_id.as_str());
            assert_eq!(lines[0]["request_id"], "req-2");
        });
    }

    #[test]
    fn json_lines_carry_trace_span_and_request_ids() {
        let provider = SdkTracerProvider::builder().build();
        let lines = CapturedLines::default();
        let subscriber = tracing_subscriber::registry()
            .with(spans_layer(&provider))
            .with(JsonLines::new(lines.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("before any request");
            let mut headers = http::HeaderMap::new();
            headers.insert(
                "traceparent",
                http::HeaderValue::from_static(
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            );
            let span = crate::trace::server_span(
                "emporium.user.v1.UserService",
                "GetUser",
                "req-1",
                crate::trace::extract(&headers),
            );
            span.in_scope(|| {
                tracing::info!(answer = 42, "inside the request");
                tracing::info_span!("emporium.child").in_scope(|| tracing::warn!("nested"));
            });
        });
        let lines = lines.json();
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert_eq!(lines[0]["message"], "before any request");
        assert!(lines[0].get("trace_id").is_none());
        for line in &lines[1..] {
            assert_eq!(
                line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
                "{line}"
            );
            assert_eq!(line["request_id"], "req-1", "{line}");
            let span_id = line["span_id"].as_str().unwrap();
            assert_eq!(span_id.len(), 16);
            // Our span, not the caller's.
            assert_ne!(span_id, "00f067aa0ba902b7");
        }
        assert_eq!(lines[1]["answer"], 42);
        assert_eq!(lines[1]["level"], "INFO");
        assert_ne!(lines[1]["span_id"], lines[2]["span_id"]);
        assert_eq!(lines[2]["span"], "emporium.child");
    }
}
