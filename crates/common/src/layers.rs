//! The tower layers every request passes through, outermost first:
//!
//! request id → trace context (server span) → metrics + access log → auth → load shed → deadline →
//! catch panic → the service.
//!
//! Each layer answers failures itself with a proper gRPC status (never a bare
//! HTTP error and never a tower error), so the metrics layer above them counts the
//! code the client really got. [`crate::server::Server`] assembles the stack.

use std::{
    collections::{HashMap, HashSet},
    convert::Infallible,
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use futures::{FutureExt as _, future::BoxFuture};
use http::HeaderValue;
use http_body::Frame;
use tokio::sync::Semaphore;
use tonic::{Code, Status, body::Body, codegen::Bytes};
use tonic_types::StatusExt as _;
use tower::{Layer, Service};
use tracing::Instrument as _;
use uuid::Uuid;

use crate::auth::Tokens;

/// The HTTP request every layer sees.
pub type HttpRequest = http::Request<Body>;
/// The HTTP response every layer returns.
pub type HttpResponse = http::Response<Body>;

/// One step of the server stack: look at the request, call `next`, look at the
/// response. Implementations are cheap to clone (configuration in `Arc`s).
pub trait Middleware: Clone + Send + Sync + 'static {
    /// Handles one request.
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send;
}

/// The rest of the stack, called at most once.
#[derive(Debug)]
pub struct Next<S> {
    inner: S,
}

impl<S> Next<S>
where
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible>,
{
    /// Passes the request on and waits for the response.
    pub async fn run(mut self, req: HttpRequest) -> HttpResponse {
        match self.inner.call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// A [`Layer`] for any [`Middleware`].
#[derive(Debug, Clone)]
pub struct MiddlewareLayer<M>(pub M);

impl<M: Clone, S> Layer<S> for MiddlewareLayer<M> {
    type Service = MiddlewareService<M, S>;
    fn layer(&self, inner: S) -> Self::Service {
        MiddlewareService {
            mw: self.0.clone(),
            inner,
        }
    }
}

/// The service a [`MiddlewareLayer`] produces.
#[derive(Debug, Clone)]
pub struct MiddlewareService<M, S> {
    mw: M,
    inner: S,
}

impl<M, S> Service<HttpRequest> for MiddlewareService<M, S>
where
    M: Middleware,
    S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<HttpResponse, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        // The clone that was driven to readiness is the one that must serve.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let fut = self.mw.handle(req, Next { inner });
        Box::pin(async move { Ok(fut.await) })
    }
}

/// A gRPC error as an HTTP response (trailers-only, as gRPC requires).
pub fn status_response(status: Status) -> HttpResponse {
    status.into_http()
}

/// `/pkg.Service/Method` split into service and method.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The id of a request: the caller's `x-request-id` when it is sane, else a new
/// UUID. Handlers read it from request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// Gives every request an id and echoes it in the response's `x-request-id`.
#[derive(Debug, Clone, Default)]
pub struct RequestIdMiddleware;

const REQUEST_ID: &str = "x-request-id";

impl Middleware for RequestIdMiddleware {
    fn handle<S>(
        &self,
        mut req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                !v.is_empty()
                    && v.len() <= 128
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::now_v7().to_string());
        req.extensions_mut().insert(RequestId(id.clone()));
        async move {
            let mut resp = next.run(req).await;
            if let Ok(v) = HeaderValue::from_str(&id) {
                resp.headers_mut().insert(REQUEST_ID, v);
            }
            resp
        }
    }
}

/// Opens the request's server span as a child of the caller's trace (W3C
/// `traceparent`/`tracestate`/`baggage` in the metadata), so every log line
/// and every outbound call inside carries the trace and the request id.
#[derive(Debug, Clone, Default)]
pub struct TraceContextMiddleware;

impl Middleware for TraceContextMiddleware {
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let (service, method) = split_path(req.uri().path()).unwrap_or(("unknown", "unknown"));
        let request_id = req
            .extensions()
            .get::<RequestId>()
            .map(|r| r.0.as_str())
            .unwrap_or_default();
        let span = crate::trace::server_span(
            service,
            method,
            request_id,
            crate::trace::extract(req.headers()),
        );
        next.run(req).instrument(span)
    }
}

/// The set of gRPC methods this server knows, as `/pkg.Service/Method`. Metrics
/// label only these, so random paths cannot blow up label cardinality.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(Arc<HashSet<String>>);

impl KnownMethods {
    /// Every method of every service in the given encoded descriptor sets.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut out = HashSet::new();
        for set in sets {
            let Ok(fds) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in fds.file {
                let pkg = file.package();
                for svc in &file.service {
                    for m in &svc.method {
                        out.insert(format!("/{pkg}.{}/{}", svc.name(), m.name()));
                    }
                }
            }
        }
        Self(Arc::new(out))
    }

    /// Whether `path` names a known method.
    pub fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }

    /// All known method paths.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// Per-RPC metrics (count by code, latency, in flight) and the access log line.
#[derive(Debug, Clone)]
pub struct MetricsMiddleware {
    known: KnownMethods,
    access_log: bool,
    leak_guard: bool,
}

impl MetricsMiddleware {
    /// Labels only `known` methods; writes an INFO access line per RPC when
    /// `access_log` is on.
    pub fn new(known: KnownMethods, access_log: bool) -> Self {
        Self {
            known,
            access_log,
            leak_guard: false,
        }
    }

    /// Checks every status message for leaked internals (a testing aid: a leak
    /// aborts the connection so the test that caused it fails).
    pub fn with_leak_guard(mut self, on: bool) -> Self {
        self.leak_guard = on;
        self
    }
}

struct Completion {
    leak_guard: bool,
    service: String,
    method: String,
    start: Instant,
    access_log: bool,
    span: tracing::Span,
}

impl Completion {
    /// Scans the status message in `headers` when the leak guard is on.
    fn guard(&self, headers: &http::HeaderMap) {
        if !self.leak_guard {
            return;
        }
        if let Some(status) = Status::from_header_map(headers)
            && let Some(marker) = crate::error::leak_in(status.message())
        {
            tracing::error!(
                marker,
                message = status.message(),
                "status message leaks internals"
            );
            panic!(
                "status message leaks internals ({marker:?}): {:?}",
                status.message()
            );
        }
    }

    fn finish(self, code: Code, message: &str) {
        let elapsed = self.start.elapsed();
        let labels = [
            ("rpc_service", self.service.clone()),
            ("rpc_method", self.method.clone()),
        ];
        metrics::gauge!("rpc_server_in_flight", &labels).decrement(1.0);
        let code_label = code_name(code);
        metrics::counter!(
            "rpc_server_requests_total",
            "rpc_service" => self.service.clone(),
            "rpc_method" => self.method.clone(),
            "rpc_grpc_status_code" => code_label,
        )
        .increment(1);
        metrics::histogram!("rpc_server_duration_seconds", &labels).record(elapsed.as_secs_f64());
        crate::trace::record_status(&self.span, crate::trace::Side::Server, code, message);
        if self.access_log {
            self.span.in_scope(|| {
                tracing::info!(
                    rpc.service = %self.service,
                    rpc.method = %self.method,
                    code = code_label,
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    "rpc finished"
                );
            });
        }
    }
}

/// The canonical upper-snake name of a gRPC code, as dashboards show it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl Middleware for MetricsMiddleware {
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let path = req.uri().path();
        let (service, method) = match split_path(path) {
            Some((s, m)) if self.known.contains(path) => (s.to_owned(), m.to_owned()),
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        let access_log = self.access_log;
        let leak_guard = self.leak_guard;
        async move {
            metrics::gauge!(
                "rpc_server_in_flight",
                "rpc_service" => service.clone(),
                "rpc_method" => method.clone(),
            )
            .increment(1.0);
            let done = Completion {
                leak_guard,
                service,
                method,
                start: Instant::now(),
                access_log,
                span: tracing::Span::current(),
            };
            observe(next.run(req).await, done)
        }
    }
}

impl OnStatus for Completion {
    fn on_status(self, code: Code, message: &str, metadata: Option<&http::HeaderMap>) {
        if let Some(metadata) = metadata {
            self.guard(metadata);
        }
        self.finish(code, message);
    }
}

/// Told once how a call ended: its code and message, and the headers or
/// trailers that carried them (none when the stream broke off).
pub trait OnStatus: Send + 'static {
    /// The call ended with `code`.
    fn on_status(self, code: Code, message: &str, metadata: Option<&http::HeaderMap>);
}

/// Calls `done` when `resp` ends: at once for a trailers-only answer (every
/// error), else when the trailers go by — for a stream that is when it ends —
/// or with CANCELLED when the body is dropped first.
pub fn observe<F: OnStatus>(resp: HttpResponse, done: F) -> HttpResponse {
    if let Some(status) = Status::from_header_map(resp.headers()) {
        done.on_status(status.code(), status.message(), Some(resp.headers()));
        return resp;
    }
    let (parts, body) = resp.into_parts();
    HttpResponse::from_parts(
        parts,
        Body::new(ObservedBody {
            inner: body,
            done: Some(done),
        }),
    )
}

pin_project_lite::pin_project! {
    struct ObservedBody<F: OnStatus> {
        #[pin]
        inner: Body,
        done: Option<F>,
    }

    impl<F: OnStatus> PinnedDrop for ObservedBody<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before the trailers: the client went away or the stream
            // was torn down.
            if let Some(done) = this.project().done.take() {
                done.on_status(Code::Cancelled, "the stream was dropped", None);
            }
        }
    }
}

impl<F: OnStatus> http_body::Body for ObservedBody<F> {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref()
                    && let Some(done) = this.done.take()
                {
                    match Status::from_header_map(trailers) {
                        Some(s) => done.on_status(s.code(), s.message(), Some(trailers)),
                        None => done.on_status(Code::Unknown, "trailers without a status", None),
                    }
                }
            }
            Some(Err(s)) => {
                if let Some(done) = this.done.take() {
                    done.on_status(s.code(), s.message(), None);
                }
            }
            None => {
                if let Some(done) = this.done.take() {
                    done.on_status(Code::Unknown, "stream ended without a status", None);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Verifies the bearer token and puts the [`crate::auth::Caller`] into request
/// extensions. Health, reflection and the configured public methods need no
/// token; every other call without a valid one is UNAUTHENTICATED.
#[derive(Debug, Clone)]
pub struct AuthMiddleware {
    tokens: Tokens,
    public: Arc<HashSet<String>>,
}

impl AuthMiddleware {
    /// `public` lists full method paths open without a token.
    pub fn new(tokens: Tokens, public: impl IntoIterator<Item = String>) -> Self {
        Self {
            tokens,
            public: Arc::new(public.into_iter().collect()),
        }
    }

    fn is_public(&self, path: &str) -> bool {
        path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.v1.ServerReflection/")
            || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
            || self.public.contains(path)
    }
}

impl Middleware for AuthMiddleware {
    fn handle<S>(
        &self,
        mut req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let public = self.is_public(req.uri().path());
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim().to_owned())
            });
        let verdict = match token {
            Some(t) => match self.tokens.verify(&t) {
                Ok(caller) => Ok(Some(caller)),
                Err(e) => Err(e),
            },
            None => Ok(None),
        };
        let rejection = match verdict {
            Ok(Some(caller)) => {
                req.extensions_mut().insert(caller);
                None
            }
            Ok(None) if public => None,
            Ok(None) => Some(Status::unauthenticated(
                "missing access token: sign in with Authenticate and send the token as `authorization` metadata",
            )),
            // A bad token on a public method is ignored rather than refused, so a
            // stale token never blocks signing in again.
            Err(_) if public => None,
            Err(e) => {
                tracing::debug!(error = %e, "access token rejected");
                Some(Status::unauthenticated("invalid or expired access token"))
            }
        };
        async move {
            match rejection {
                Some(status) => status_response(status),
                None => next.run(req).await,
            }
        }
    }
}

/// Per-caller token buckets: a user (or, without a token, an address) that
/// sends faster than the configured rate gets RESOURCE_EXHAUSTED with a
/// `google.rpc.RetryInfo` saying when to come back, instead of starving others.
#[derive(Debug, Clone)]
pub struct RateLimitMiddleware {
    per_sec: f64,
    burst: f64,
    buckets: Arc<std::sync::Mutex<HashMap<String, Bucket>>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Above this many tracked callers, idle buckets (full again) are dropped, so
/// the map cannot grow without bound.
const MAX_TRACKED_CALLERS: usize = 10_000;

impl RateLimitMiddleware {
    /// `per_sec` requests per second per caller, bursts of `burst`.
    pub fn new(per_sec: u32, burst: u32) -> Self {
        Self {
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
            buckets: Arc::default(),
        }
    }

    /// Takes one token for `key`; on refusal, how long until one is available.
    fn take(&self, key: String, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().expect("rate limit map poisoned");
        if buckets.len() >= MAX_TRACKED_CALLERS && !buckets.contains_key(&key) {
            let full_after = Duration::from_secs_f64(self.burst / self.per_sec);
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * self.per_sec).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.per_sec))
        }
    }
}

impl Middleware for RateLimitMiddleware {
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let key = match req.extensions().get::<crate::auth::Caller>() {
            Some(c) if c.service.is_some() => None,
            Some(c) => Some(format!("user:{}", c.user_id)),
            None => req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
                .map(|a| format!("ip:{}", a.ip())),
        };
        let verdict = match key {
            Some(key) if self.per_sec > 0.0 => self.take(key, Instant::now()),
            _ => Ok(()),
        };
        async move {
            match verdict {
                Ok(()) => next.run(req).await,
                Err(wait) => {
                    metrics::counter!("rpc_server_rate_limited_total").increment(1);
                    let retry = wait.max(Duration::from_millis(1));
                    status_response(tonic::Status::with_error_details(
                        Code::ResourceExhausted,
                        format!("rate limit exceeded, retry in {} ms", retry.as_millis()),
                        tonic_types::ErrorDetails::with_retry_info(Some(retry)),
                    ))
                }
            }
        }
    }
}

/// Refuses work beyond a global in-flight limit with RESOURCE_EXHAUSTED instead
/// of queueing it: a queue only turns overload into timeouts for everyone.
#[derive(Debug, Clone)]
pub struct LoadShedMiddleware {
    permits: Arc<Semaphore>,
}

impl LoadShedMiddleware {
    /// At most `limit` requests in the handlers at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl Middleware for LoadShedMiddleware {
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let permit = self.permits.clone().try_acquire_owned();
        async move {
            match permit {
                Ok(permit) => {
                    let resp = next.run(req).await;
                    drop(permit);
                    resp
                }
                Err(_) => {
                    metrics::counter!("rpc_server_shed_total").increment(1);
                    status_response(Status::resource_exhausted("server busy, retry later"))
                }
            }
        }
    }
}

/// When the current request must be answered by. Handlers pass the remaining
/// time on to the calls they make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// Time left, zero when passed.
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Bounds every call by the client's `grpc-timeout` or the server's default,
/// whichever is shorter, and answers DEADLINE_EXCEEDED when it passes (the
/// handler's future is dropped, which rolls back an open transaction).
#[derive(Debug, Clone)]
pub struct DeadlineMiddleware {
    default: Duration,
}

impl DeadlineMiddleware {
    /// `default` applies when the client sends no deadline.
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

/// Parses a `grpc-timeout` header value (`1S`, `250m`, …).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl Middleware for DeadlineMiddleware {
    fn handle<S>(
        &self,
        mut req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        let client = req
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let budget = client.map_or(self.default, |c| c.min(self.default));
        req.extensions_mut()
            .insert(Deadline(Instant::now() + budget));
        async move {
            match tokio::time::timeout(budget, next.run(req)).await {
                Ok(resp) => resp,
                Err(_) => status_response(Status::deadline_exceeded("deadline exceeded")),
            }
        }
    }
}

/// Turns a panic in a handler into INTERNAL with a generic message; the process
/// and the connection stay up. (tower-http's default answers plain HTTP 500,
/// which gRPC clients see as a protocol error.)
#[derive(Debug, Clone, Default)]
pub struct CatchPanicMiddleware;

impl Middleware for CatchPanicMiddleware {
    // Not an `async fn`: that would borrow `self`, and the future must be 'static.
    #[allow(clippy::manual_async_fn)]
    fn handle<S>(
        &self,
        req: HttpRequest,
        next: Next<S>,
    ) -> impl Future<Output = HttpResponse> + Send + 'static
    where
        S: Service<HttpRequest, Response = HttpResponse, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        async move {
            match AssertUnwindSafe(next.run(req)).catch_unwind().await {
                Ok(resp) => resp,
                Err(panic) => {
                    let msg = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic".into());
                    tracing::error!(panic = %msg, "handler panicked");
                    metrics::counter!("rpc_server_panics_total").increment(1);
                    status_response(Status::internal("internal error"))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_leak_guard_stops_a_leaky_status() {
        use futures::FutureExt as _;
        use tower::ServiceExt as _;
        async fn leaky(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            Ok(Status::internal("error returned from database: SELECT * FROM users").into_http())
        }
        async fn clean(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            Ok(Status::internal("internal error").into_http())
        }
        let request = || {
            http::Request::builder()
                .uri("/emporium.user.v1.UserService/GetUser")
                .body(Body::empty())
                .unwrap()
        };
        let guard = || {
            MiddlewareLayer(
                MetricsMiddleware::new(KnownMethods::default(), false).with_leak_guard(true),
            )
        };
        let leaked = AssertUnwindSafe(guard().layer(tower::service_fn(leaky)).oneshot(request()))
            .catch_unwind()
            .await;
        assert!(leaked.is_err(), "a leaky message must not get out");
        let fine = guard()
            .layer(tower::service_fn(clean))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(fine.headers()["grpc-status"], "13");
    }

    #[test]
    fn buckets_allow_the_burst_then_the_rate() {
        let rl = RateLimitMiddleware::new(10, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.take("a".into(), t0).is_ok());
        }
        let wait = rl.take("a".into(), t0).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Other callers are unaffected.
        assert!(rl.take("b".into(), t0).is_ok());
        // A tenth of a second later one more token is there, not two.
        let t1 = t0 + Duration::from_millis(100);
        assert!(rl.take("a".into(), t1).is_ok());
        assert!(rl.take("a".into(), t1).is_err());
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }

    #[test]
    fn paths_split() {
        assert_eq!(
            split_path("/emporium.user.v1.UserService/GetUser"),
            Some(("emporium.user.v1.UserService", "GetUser"))
        );
        assert_eq!(split_path("/nope"), None);
        assert_eq!(split_path("/a/b/c"), None);
    }

    #[test]
    fn known_methods_come_from_the_descriptors() {
        let known = KnownMethods::from_descriptor_sets(&[emporium_proto::FILE_DESCRIPTOR_SET]);
        assert!(known.contains("/emporium.user.v1.UserService/CreateUser"));
        assert!(!known.contains("/emporium.user.v1.UserService/Nope"));
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_keeps_serving() {
        use tower::ServiceExt as _;

        async fn explode(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            panic!("secret detail: connection string postgres://admin:hunter2@db");
        }
        let mut svc = MiddlewareLayer(CatchPanicMiddleware).layer(tower::service_fn(explode));
        let request = || {
            http::Request::builder()
                .uri("/emporium.user.v1.UserService/GetUser")
                .body(Body::empty())
                .unwrap()
        };
        let assert_internal = |resp: HttpResponse| {
            // A gRPC status (trailers-only), not an HTTP error the client cannot read.
            assert_eq!(resp.status(), http::StatusCode::OK);
            assert_eq!(resp.headers()["grpc-status"], "13");
            let status = Status::from_header_map(resp.headers()).expect("a grpc-status header");
            assert_eq!(status.code(), Code::Internal);
            assert_eq!(status.message(), "internal error");
            // The panic text stays in the server log, never in the response.
            for value in resp.headers().values() {
                let value = value.to_str().unwrap_or_default();
                assert!(!value.contains("secret"), "panic text leaked: {value}");
                assert!(!value.contains("hunter2"), "panic text leaked: {value}");
            }
        };

        let first = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_internal(first);
        // The same service value answers again: the panic broke neither it nor the stack.
        let second = svc.ready().await.unwrap().call(request()).await.unwrap();
        assert_internal(second);
        // And a clone driven by `oneshot`, as the server does per connection.
        assert_internal(svc.clone().oneshot(request()).await.unwrap());
    }
}
