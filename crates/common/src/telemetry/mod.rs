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
//!
//! Reading order: this file (the subscriber) → [`trace`] (W3C propagation and
//! the RPC spans) → [`rpc`] (how a call's end is observed, for the server stack
//! and the peer channels alike) → [`logs`] → [`metrics`].

pub mod logs;
pub mod metrics;
pub mod rpc;
pub mod trace;

pub use metrics::{metrics_handle, on_scrape, render_metrics};

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer,
    filter::{LevelFilter, filter_fn},
    fmt::{self, MakeWriter},
    prelude::*,
    registry::LookupSpan,
};

use self::logs::{JsonLines, LogFilter};
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::CapturedLines;

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
            let span = trace::server_span(
                "emporium.user.v1.UserService",
                "GetUser",
                "req-2",
                opentelemetry::Context::new(),
            );
            let trace_id = trace::trace_id(&span).expect("the span is traced at `warn`");
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
            let span = trace::server_span(
                "emporium.user.v1.UserService",
                "GetUser",
                "req-1",
                trace::extract(&headers),
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
