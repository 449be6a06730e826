//! Log lines: the filter that applies only to events (spans always pass, so a
//! quiet log never breaks a trace) and the JSON line format whose every line
//! inside a request carries `trace_id`, `span_id` and `request_id`.

use std::{io::Write as _, sync::OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
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
            .insert(field.name().into(), crate::status::chain(value).into());
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
