//! Limits for calls that answer with a stream (server streaming and
//! bidirectional RPCs: WatchOrderUpdates, StreamUsers).
//!
//! The layers above see only the request that opens a stream, and the handler
//! returns as soon as the stream is set up: without this layer a stream would
//! then live on, uncounted, past the token that opened it. Here, at open, the
//! stream takes a slot — at most `server.max_streams_per_caller` per caller and
//! `server.max_open_streams` in all, else RESOURCE_EXHAUSTED — and its response
//! body is then cut off, with a status in the trailers, at the first of:
//!
//! - its maximum age (`server.stream_max_age_ms`): UNAVAILABLE, reconnect;
//! - the caller's token expiry ([`Caller::valid_until`]): UNAUTHENTICATED;
//! - the client's own `grpc-timeout`, if it sent one: DEADLINE_EXCEEDED.
//!
//! The slot is given back when the stream ends, however it ends. Open streams
//! are the gauge `rpc_server_open_streams{rpc_service,rpc_method}`.
//!
//! A bidirectional stream runs many operations under one admission:
//! [`PerOperation`] is what its handler asks before each one (the token still
//! valid, a permit from the caller's rate-limit bucket). Decision 0017.

use std::{
    collections::HashMap,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::future::Either;
use http_body::Frame;
use ipnet::IpNet;
use tokio::time::{Instant, Sleep};
use tonic::{Status, body::Body, codegen::Bytes};
use tower::{Layer, Service};

use super::{
    HttpRequest, HttpResponse,
    metrics::KnownMethods,
    rate_limit::{Bucket, client_addr},
    status_response,
};
use crate::{
    auth::Caller,
    config::ServerConfig,
    rpc::{grpc_timeout, split_path},
};

/// The message of a stream ended at its maximum age.
pub const MAX_AGE_REACHED: &str = "stream reached its maximum age; reconnect";

/// See the module docs.
#[derive(Debug, Clone)]
pub struct StreamsLayer {
    known: KnownMethods,
    open: Arc<OpenStreams>,
    max_age: Duration,
    trusted_proxies: Arc<[IpNet]>,
}

impl StreamsLayer {
    /// The limits of `config` for the streaming methods among `known`.
    pub fn new(config: &ServerConfig, known: KnownMethods) -> Self {
        Self {
            known,
            open: Arc::new(OpenStreams {
                per_caller: config.max_streams_per_caller,
                overall: config.max_open_streams,
                counts: Mutex::default(),
            }),
            max_age: config.stream_max_age(),
            trusted_proxies: config.trusted_proxies.as_slice().into(),
        }
    }
}

/// The streams open now, per caller and in all.
#[derive(Debug)]
struct OpenStreams {
    per_caller: usize,
    overall: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_caller: HashMap<String, usize>,
}

impl OpenStreams {
    /// Takes a slot for `caller` (a key such as `user:<id>`), or refuses.
    fn open(self: &Arc<Self>, caller: String, labels: Labels) -> Result<Slot, Status> {
        let mut counts = self.counts.lock().expect("stream counts poisoned");
        let mine = counts.by_caller.get(&caller).copied().unwrap_or(0);
        if mine >= self.per_caller {
            metrics::counter!("rpc_server_streams_refused_total", "limit" => "per_caller")
                .increment(1);
            return Err(Status::resource_exhausted(format!(
                "too many open streams for this caller (at most {}): close one before opening another",
                self.per_caller
            )));
        }
        if counts.total >= self.overall {
            metrics::counter!("rpc_server_streams_refused_total", "limit" => "overall")
                .increment(1);
            return Err(Status::resource_exhausted(
                "server has too many open streams, retry later",
            ));
        }
        counts.total += 1;
        *counts.by_caller.entry(caller.clone()).or_default() += 1;
        drop(counts);
        metrics::gauge!("rpc_server_open_streams", &labels).increment(1.0);
        Ok(Slot {
            open: self.clone(),
            caller,
            labels,
        })
    }
}

type Labels = [(&'static str, String); 2];

/// One open stream's place in the counts, given back on drop.
#[derive(Debug)]
struct Slot {
    open: Arc<OpenStreams>,
    caller: String,
    labels: Labels,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("rpc_server_open_streams", &self.labels).decrement(1.0);
        let mut counts = self.open.counts.lock().expect("stream counts poisoned");
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_caller.get_mut(&self.caller) {
            *n -= 1;
            if *n == 0 {
                counts.by_caller.remove(&self.caller);
            }
        }
    }
}

/// Why a stream is cut off, the first that comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cutoff {
    MaxAge,
    TokenExpired,
    ClientDeadline,
}

impl Cutoff {
    fn status(self) -> Status {
        match self {
            Cutoff::MaxAge => Status::unavailable(MAX_AGE_REACHED),
            Cutoff::TokenExpired => Status::unauthenticated(crate::auth::EXPIRED_MID_STREAM),
            Cutoff::ClientDeadline => Status::deadline_exceeded("deadline exceeded"),
        }
    }
}

/// The instant (on Tokio's clock) the token of a caller valid through the
/// second `valid_until` stops being accepted; `None` if never within reach.
fn token_end(valid_until: u64, now: Instant) -> Option<Instant> {
    let end = UNIX_EPOCH.checked_add(Duration::from_secs(valid_until.checked_add(1)?))?;
    let left = end
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    now.checked_add(left)
}

/// The key a caller's streams are counted under (as the rate limit keys its
/// buckets).
fn caller_key(req: &HttpRequest, trusted: &[IpNet]) -> String {
    match req.extensions().get::<Caller>() {
        Some(Caller {
            service: Some(s), ..
        }) => format!("service:{s}"),
        Some(c) => format!("user:{}", c.user_id),
        None => client_addr(req, trusted)
            .map_or_else(|| "anonymous".to_owned(), |ip| format!("ip:{ip}")),
    }
}

impl<S> Layer<S> for StreamsLayer {
    type Service = Streams<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Streams {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`StreamsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Streams<S> {
    inner: S,
    layer: StreamsLayer,
}

impl<S> Service<HttpRequest> for Streams<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, StreamsFuture<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let path = req.uri().path();
        if !self.layer.known.is_server_streaming(path) {
            return Either::Right(StreamsFuture {
                inner: self.inner.call(req),
                limits: None,
            });
        }
        let labels = match split_path(path) {
            Some((s, m)) => [("rpc_service", s.to_owned()), ("rpc_method", m.to_owned())],
            None => [
                ("rpc_service", "unknown".to_owned()),
                ("rpc_method", "unknown".to_owned()),
            ],
        };
        let key = caller_key(&req, &self.layer.trusted_proxies);
        let slot = match self.layer.open.open(key, labels) {
            Ok(slot) => slot,
            Err(status) => return Either::Left(ready(Ok(status_response(status)))),
        };
        let now = Instant::now();
        let mut end = (now + self.layer.max_age, Cutoff::MaxAge);
        let token = req
            .extensions()
            .get::<Caller>()
            .and_then(|c| token_end(c.valid_until, now));
        let client = grpc_timeout(req.headers()).and_then(|t| now.checked_add(t));
        for (at, why) in [
            (token, Cutoff::TokenExpired),
            (client, Cutoff::ClientDeadline),
        ] {
            if let Some(at) = at
                && at < end.0
            {
                end = (at, why);
            }
        }
        Either::Right(StreamsFuture {
            inner: self.inner.call(req),
            limits: Some(Limits {
                slot,
                end: end.0,
                why: end.1,
            }),
        })
    }
}

/// What a stream takes from the handler's future to its body.
#[derive(Debug)]
struct Limits {
    slot: Slot,
    end: Instant,
    why: Cutoff,
}

pin_project_lite::pin_project! {
    /// The handler's future; a streaming answer gets its body limited.
    pub struct StreamsFuture<F> {
        #[pin]
        inner: F,
        limits: Option<Limits>,
    }
}

impl<F, E> Future for StreamsFuture<F>
where
    F: Future<Output = Result<HttpResponse, E>>,
{
    type Output = Result<HttpResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = std::task::ready!(this.inner.poll(cx));
        Poll::Ready(resp.map(|resp| match this.limits.take() {
            // A trailers-only answer (every error at open) is not a stream:
            // its slot is given back at once.
            Some(limits) if !resp.headers().contains_key("grpc-status") => {
                let (parts, body) = resp.into_parts();
                http::Response::from_parts(
                    parts,
                    Body::new(LimitedBody {
                        inner: Some(body),
                        slot: Some(limits.slot),
                        cutoff: Box::pin(tokio::time::sleep_until(limits.end)),
                        why: limits.why,
                    }),
                )
            }
            _ => resp,
        }))
    }
}

/// A stream's body, ended with the cutoff's status in its trailers when the
/// cutoff comes first. Cutting off between frames is safe: tonic yields whole
/// encoded messages per data frame.
struct LimitedBody {
    inner: Option<Body>,
    slot: Option<Slot>,
    cutoff: Pin<Box<Sleep>>,
    why: Cutoff,
}

impl LimitedBody {
    /// Drops the handler's stream (its task sees the receiver gone) and gives
    /// the slot back.
    fn finish(&mut self) {
        self.inner = None;
        self.slot = None;
    }
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if this.cutoff.as_mut().poll(cx).is_ready() {
            this.finish();
            let mut trailers = http::HeaderMap::new();
            // A status built from fixed ASCII text always encodes.
            let _ = this.why.status().add_header(&mut trailers);
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let frame = std::task::ready!(Pin::new(inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) if f.is_trailers() => this.finish(),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner
            .as_ref()
            .is_none_or(http_body::Body::is_end_stream)
    }
}

/// What each operation of a bidirectional stream passes before it runs: the
/// stream was admitted once, but its operations come for as long as it lives,
/// so the caller's token and rate are checked again per operation. Built from
/// the opening request's extensions (the auth and rate-limit layers put the
/// caller and its bucket there).
#[derive(Debug, Clone)]
pub struct PerOperation {
    caller: Option<Caller>,
    bucket: Option<Bucket>,
}

impl PerOperation {
    /// The checks for the stream opened by `req`.
    pub fn of<T>(req: &tonic::Request<T>) -> Self {
        Self {
            caller: req.extensions().get::<Caller>().cloned(),
            bucket: req.extensions().get::<Bucket>().cloned(),
        }
    }

    /// UNAUTHENTICATED once the caller's token has expired: every later
    /// operation would fail the same way, so the stream should end with it.
    pub fn check_token(&self) -> Result<(), Status> {
        self.caller
            .as_ref()
            .map_or(Ok(()), Caller::check_still_valid)
    }

    /// One permit from the caller's rate-limit bucket, the same bucket unary
    /// calls take from; RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` when
    /// it is empty: that operation's answer (the stream goes on).
    pub fn take_permit(&self) -> Result<(), Status> {
        self.bucket.as_ref().map_or(Ok(()), Bucket::take)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body::Body as _;
    use tower::ServiceExt as _;

    use super::*;

    const WATCH: &str = "/emporium.order.v1.OrderService/WatchOrderUpdates";

    fn layer(per_caller: usize, overall: usize, max_age: Duration) -> StreamsLayer {
        let config = ServerConfig {
            max_streams_per_caller: per_caller,
            max_open_streams: overall,
            stream_max_age_ms: max_age.as_millis() as u64,
            ..ServerConfig::local(0, 0)
        };
        StreamsLayer::new(
            &config,
            KnownMethods::from_descriptor_sets(&[emporium_proto::FILE_DESCRIPTOR_SET]),
        )
    }

    /// A body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = Bytes;
        type Error = Status;
        fn poll_frame(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            Poll::Pending
        }
    }

    /// A stream that never sends anything.
    async fn forever(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
        Ok(http::Response::new(Body::new(Silent)))
    }

    fn watch(user: uuid::Uuid, valid_until: u64) -> HttpRequest {
        let mut req = http::Request::builder()
            .uri(WATCH)
            .body(Body::empty())
            .unwrap();
        req.extensions_mut().insert(Caller {
            user_id: user,
            roles: vec![crate::auth::Role::Customer],
            service: None,
            certificate: None,
            valid_until,
        });
        req
    }

    fn code(resp: &HttpResponse) -> Option<String> {
        resp.headers()
            .get("grpc-status")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The status in the trailers that end `resp`'s body.
    async fn trailers_status(resp: HttpResponse) -> Status {
        let mut body = resp.into_body();
        loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .expect("trailers before the end")
                .expect("no body error");
            if let Ok(trailers) = frame.into_trailers() {
                return Status::from_header_map(&trailers).expect("a status");
            }
        }
    }

    #[tokio::test]
    async fn streams_are_capped_per_caller_and_overall_and_slots_come_back() {
        let layer = layer(2, 3, Duration::from_secs(60));
        let svc = layer.layer(tower::service_fn(forever));
        let (a, b) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
        let a1 = svc.clone().oneshot(watch(a, u64::MAX)).await.unwrap();
        let a2 = svc.clone().oneshot(watch(a, u64::MAX)).await.unwrap();
        assert_eq!((code(&a1), code(&a2)), (None, None));
        let a3 = svc.clone().oneshot(watch(a, u64::MAX)).await.unwrap();
        assert_eq!(code(&a3).as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
        let b1 = svc.clone().oneshot(watch(b, u64::MAX)).await.unwrap();
        assert_eq!(code(&b1), None);
        // Three open in all: b's second is refused by the overall cap.
        let b2 = svc.clone().oneshot(watch(b, u64::MAX)).await.unwrap();
        assert_eq!(code(&b2).as_deref(), Some("8"));
        // Closing one of a's gives the slot back.
        drop(a1);
        let a4 = svc.clone().oneshot(watch(a, u64::MAX)).await.unwrap();
        assert_eq!(code(&a4), None);
        drop((a2, a4, b1));
        assert_eq!(layer.open.counts.lock().unwrap().total, 0);
        assert!(layer.open.counts.lock().unwrap().by_caller.is_empty());
    }

    #[tokio::test]
    async fn a_stream_refused_by_its_handler_gives_its_slot_back_at_once() {
        async fn refuse(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            Ok(Status::permission_denied("not yours").into_http())
        }
        let layer = layer(1, 1, Duration::from_secs(60));
        let svc = layer.layer(tower::service_fn(refuse));
        let resp = svc
            .oneshot(watch(uuid::Uuid::now_v7(), u64::MAX))
            .await
            .unwrap();
        assert_eq!(code(&resp).as_deref(), Some("7"));
        assert_eq!(layer.open.counts.lock().unwrap().total, 0);
    }

    #[tokio::test]
    async fn unary_calls_are_not_counted() {
        let layer = layer(1, 1, Duration::from_secs(60));
        let svc = layer.layer(tower::service_fn(forever));
        let mut req = watch(uuid::Uuid::now_v7(), u64::MAX);
        *req.uri_mut() = "/emporium.order.v1.OrderService/GetOrder".parse().unwrap();
        let resp = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(code(&resp), None);
        assert_eq!(layer.open.counts.lock().unwrap().total, 0);
    }

    #[tokio::test]
    async fn a_stream_ends_unavailable_at_its_maximum_age() {
        let layer = layer(8, 8, Duration::from_millis(200));
        let svc = layer.layer(tower::service_fn(forever));
        let resp = svc
            .oneshot(watch(uuid::Uuid::now_v7(), u64::MAX))
            .await
            .unwrap();
        let status = trailers_status(resp).await;
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), MAX_AGE_REACHED);
        assert_eq!(layer.open.counts.lock().unwrap().total, 0);
    }

    #[tokio::test]
    async fn a_stream_ends_unauthenticated_when_its_token_expires() {
        let layer = layer(8, 8, Duration::from_secs(600));
        let svc = layer.layer(tower::service_fn(forever));
        // Accepted through the current second only.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let resp = svc.oneshot(watch(uuid::Uuid::now_v7(), now)).await.unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), trailers_status(resp))
            .await
            .expect("cut off within a second or so");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }

    #[tokio::test]
    async fn the_clients_deadline_bounds_the_whole_stream() {
        let layer = layer(8, 8, Duration::from_secs(600));
        let svc = layer.layer(tower::service_fn(forever));
        let mut req = watch(uuid::Uuid::now_v7(), u64::MAX);
        req.headers_mut()
            .insert("grpc-timeout", http::HeaderValue::from_static("200m"));
        let status = trailers_status(svc.oneshot(req).await.unwrap()).await;
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    }
}
