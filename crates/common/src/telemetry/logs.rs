//! Log lines: the filter that applies only to events (spans always pass, so a
//! quiet log never breaks a trace) and the JSON line format whose every line
//! inside a request carries `trace_id`, `span_id` and `request_id`.

use std::{io::Write as _, sync::OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use tracing::{
    Event, Subscriber,
    dispatcher::WeakDispatch,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    EnvFilter, Layer,
    fmt::{
        MakeWriter,
        format::Writer,
        time::{FormatTime as _, SystemTime},
    },
    layer::Context,
    registry::LookupSpan,
};

/// A log layer that prints only the events `filter` allows. Span callbacks pass
/// through so lines keep their span context.
pub(super) struct LogFilter<L> {
    pub(super) filter: EnvFilter,
    pub(super) inner: L,
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

/// One JSON line written straight into a byte buffer: no map of values, no
/// allocation per field (the access line is written for every call, and
/// building it as a `serde_json::Map` cost more than the rest of the server
/// stack's layers together; see docs/performance.md).
struct Line<'a> {
    buf: &'a mut Vec<u8>,
    /// Room to format a `Debug`/`Display` value before it is escaped.
    scratch: &'a mut String,
    first: bool,
}

impl<'a> Line<'a> {
    fn new(buf: &'a mut Vec<u8>, scratch: &'a mut String) -> Self {
        buf.clear();
        Self {
            buf,
            scratch,
            first: true,
        }
    }

    fn key(&mut self, key: &str) {
        self.buf.push(if self.first { b'{' } else { b',' });
        self.first = false;
        escaped(self.buf, key);
        self.buf.push(b':');
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        escaped(self.buf, value);
    }

    /// A value serde writes as JSON (numbers, booleans).
    fn value(&mut self, key: &str, value: impl serde::Serialize) {
        self.key(key);
        if serde_json::to_writer(&mut *self.buf, &value).is_err() {
            self.buf.extend_from_slice(b"null");
        }
    }

    fn formatted(&mut self, key: &str, value: std::fmt::Arguments<'_>) {
        use std::fmt::Write as _;
        self.scratch.clear();
        let _ = self.scratch.write_fmt(value);
        self.key(key);
        escaped(self.buf, self.scratch);
    }

    fn finish(self) -> &'a [u8] {
        if self.first {
            self.buf.push(b'{');
        }
        self.buf.extend_from_slice(b"}\n");
        self.buf
    }
}

fn escaped(buf: &mut Vec<u8>, s: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// The keys a line writes itself; an event field of the same name is left out
/// rather than written twice.
const OWN_KEYS: [&str; 7] = [
    "timestamp",
    "level",
    "target",
    "span",
    "trace_id",
    "span_id",
    "request_id",
];

impl Visit for Line<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if !OWN_KEYS.contains(&field.name()) {
            self.value(field.name(), value);
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        if !OWN_KEYS.contains(&field.name()) {
            self.value(field.name(), value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if !OWN_KEYS.contains(&field.name()) {
            self.value(field.name(), value);
        }
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        if !OWN_KEYS.contains(&field.name()) {
            self.value(field.name(), value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if !OWN_KEYS.contains(&field.name()) {
            self.str(field.name(), value);
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !OWN_KEYS.contains(&field.name()) {
            self.str(field.name(), &crate::status::chain(value));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !OWN_KEYS.contains(&field.name()) {
            self.formatted(field.name(), format_args!("{value:?}"));
        }
    }
}

thread_local! {
    /// Each thread's line buffers, reused from line to line.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, String)> =
        const { std::cell::RefCell::new((Vec::new(), String::new())) };
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
            sc.is_valid().then(|| (sc.trace_id(), sc.span_id()))
        });
        let write = |buf: &mut Vec<u8>, scratch: &mut String| {
            let mut line = Line::new(buf, scratch);
            line.scratch.clear();
            let _ = SystemTime.format_time(&mut Writer::new(line.scratch));
            line.key("timestamp");
            escaped(line.buf, line.scratch);
            let meta = event.metadata();
            line.str("level", meta.level().as_str());
            line.str("target", meta.target());
            event.record(&mut line);
            if let Some(span) = &span {
                line.str("span", span.name());
                if let Some((trace_id, span_id)) = ids {
                    line.formatted("trace_id", format_args!("{trace_id}"));
                    line.formatted("span_id", format_args!("{span_id}"));
                }
                for s in span.scope() {
                    if let Some(rid) = s.extensions().get::<RequestIdField>() {
                        line.str("request_id", &rid.0);
                        break;
                    }
                }
            }
            // One write per line so concurrent lines never interleave.
            let _ = self.writer.make_writer_for(meta).write_all(line.finish());
        };
        // A `Debug` impl that logs would find the buffers taken: it gets fresh ones.
        let reused = BUFFERS.try_with(|b| match b.try_borrow_mut() {
            Ok(mut b) => {
                let (buf, scratch) = &mut *b;
                write(buf, scratch);
                true
            }
            Err(_) => false,
        });
        if reused != Ok(true) {
            write(&mut Vec::new(), &mut String::new());
        }
    }
}
