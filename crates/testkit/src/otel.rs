//! Every span the process makes, kept in memory, and every log line as JSON:
//! the collector-free way to test traces. [`capture`] installs the process-wide
//! subscriber the services use in production ([`emporium_common::telemetry`]),
//! with an in-memory exporter in place of OTLP. Use it in a test binary of its
//! own: a process has one subscriber, and it must be installed first.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use emporium_common::{
    config::{LogFormat, TelemetryConfig},
    {telemetry, testing::CapturedLines},
};
use opentelemetry::{
    Value,
    trace::{SpanId, SpanKind, Status, TraceId},
};
use opentelemetry_sdk::{
    error::OTelSdkResult,
    trace::{SdkTracerProvider, SpanData, SpanExporter},
};

#[derive(Debug, Clone, Default)]
struct Memory(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Memory {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        self.0.lock().expect("span store poisoned").extend(batch);
        std::future::ready(Ok(()))
    }
}

/// The process's spans and log lines.
#[derive(Debug)]
pub struct Captured {
    spans: Memory,
    /// JSON log lines (every level at INFO and above).
    pub logs: CapturedLines,
    _provider: SdkTracerProvider,
}

/// Installs the capturing subscriber (once per process) and returns it.
/// Panics if some other subscriber got there first.
pub fn capture() -> &'static Captured {
    static CAPTURED: OnceLock<Captured> = OnceLock::new();
    CAPTURED.get_or_init(|| {
        let spans = Memory::default();
        // Simple (synchronous) export: a span is readable as soon as it ends.
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let logs = CapturedLines::default();
        let config = TelemetryConfig {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            access_log: true,
        };
        assert!(
            telemetry::install(&config, &provider, logs.clone()),
            "another tracing subscriber was installed before otel::capture()"
        );
        Captured {
            spans,
            logs,
            _provider: provider,
        }
    })
}

impl Captured {
    /// Every finished span so far.
    pub fn all(&self) -> Vec<SpanData> {
        self.spans.0.lock().expect("span store poisoned").clone()
    }

    /// The finished spans of one trace.
    pub fn trace(&self, trace_id: TraceId) -> Vec<SpanData> {
        self.spans
            .0
            .lock()
            .expect("span store poisoned")
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .cloned()
            .collect()
    }

    /// Waits (at most `timeout`) until the spans of `trace_id` satisfy `done`
    /// (spans end when the work ends, which may be after the answer reached
    /// the client), then returns them; panics with the spans seen on timeout.
    pub async fn wait_for(
        &self,
        trace_id: TraceId,
        timeout: Duration,
        done: impl Fn(&[SpanData]) -> bool,
    ) -> Vec<SpanData> {
        let until = Instant::now() + timeout;
        loop {
            let spans = self.trace(trace_id);
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= until {
                let others: Vec<_> = self
                    .all()
                    .iter()
                    .filter(|s| s.span_context.trace_id() != trace_id)
                    .map(|s| {
                        format!(
                            "{} {} {} parent={}",
                            s.span_context.trace_id(),
                            s.span_context.span_id(),
                            s.name,
                            s.parent_span_id
                        )
                    })
                    .collect();
                panic!(
                    "trace {trace_id} incomplete after {timeout:?}:\n{}\nspans of other traces: {others:#?}",
                    render_tree(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A span's attribute as text.
pub fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
}

/// The span named `name` (the OpenTelemetry name, e.g.
/// `emporium.order.v1.OrderService/CreateOrder`) of kind `kind`; panics when
/// there is not exactly one.
pub fn one<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    let found: Vec<_> = spans
        .iter()
        .filter(|s| s.name == name && s.span_kind == kind)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {kind:?} span {name:?}, found {}:\n{}",
        found.len(),
        render_tree(spans)
    );
    found[0]
}

/// The spans of a trace as an indented tree, children in start order: kind,
/// name, duration, status, and the attributes that tell spans apart.
pub fn render_tree(spans: &[SpanData]) -> String {
    let ids: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), s))
        .collect();
    let mut children: HashMap<SpanId, Vec<&SpanData>> = HashMap::new();
    let mut roots = Vec::new();
    for s in spans {
        if ids.contains_key(&s.parent_span_id) {
            children.entry(s.parent_span_id).or_default().push(s);
        } else {
            roots.push(s);
        }
    }
    roots.sort_by_key(|s| s.start_time);
    for list in children.values_mut() {
        list.sort_by_key(|s| s.start_time);
    }
    let mut out = String::new();
    fn walk(
        out: &mut String,
        s: &SpanData,
        depth: usize,
        children: &HashMap<SpanId, Vec<&SpanData>>,
    ) {
        let ms = s
            .end_time
            .duration_since(s.start_time)
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3;
        let kind = match s.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Internal => "internal",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        };
        let status = match &s.status {
            Status::Error { description } => format!("  ERROR({description})"),
            _ => String::new(),
        };
        let mut extra = String::new();
        for key in ["rpc.grpc.status_code", "db.system.name", "peer.service"] {
            if let Some(v) = attr(s, key) {
                let _ = write!(extra, " {key}={v}");
            }
        }
        let _ = writeln!(
            out,
            "{:indent$}{} [{kind}] {ms:.1} ms{extra}{status}",
            "",
            s.name,
            indent = depth * 2
        );
        for c in children
            .get(&s.span_context.span_id())
            .into_iter()
            .flatten()
        {
            walk(out, c, depth + 1, children);
        }
    }
    for r in roots {
        walk(&mut out, r, 0, &children);
    }
    out
}
