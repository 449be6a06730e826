//! Long-lived channels to peer services: one per peer, created once at start and
//! shared by every call (a channel multiplexes calls over HTTP/2; a channel per
//! call would pay a TCP and HTTP/2 handshake each time). With `tls.enabled` and
//! an `https://` URL the channel speaks TLS, presenting this service's
//! certificate when the peer requires mutual TLS (see [`crate::tls`]).
//!
//! Every call through a [`PeerChannel`], with nothing for the calling code to
//! do:
//! - opens a client span, sends it on as W3C `traceparent`/`tracestate`/
//!   `baggage` metadata, and is counted per peer (`rpc_client_*` metrics);
//! - carries a deadline: its own `grpc-timeout`, the serving call's remaining
//!   time less a margin, or the peer's `call_timeout_ms` ([`deadline`]);
//! - goes to one of the peer's replicas, found by DNS and picked by load
//!   ([`balance`]), whose circuit breaker admits it ([`breaker`]);
//! - is sent again when that is safe and the peer says it did not run it,
//!   with jittered backoff, within the deadline and the peer's retry budget
//!   ([`retry`]).
//!
//! HTTP/2 keepalive pings a connection every 30 s while calls are open and
//! drops it if no answer comes within 10 s; idle connections are not pinged,
//! since gRPC servers in other languages refuse (GOAWAY `too_many_pings`)
//! clients that ping idle connections more often than every 5 minutes.

pub mod balance;
pub mod breaker;
pub mod deadline;
pub mod retry;

use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use http_body_util::BodyExt as _;
use tonic::{
    Code, Status,
    body::Body,
    codegen::Bytes,
    transport::{Channel, Endpoint},
};
use tower::{Service, ServiceExt as _};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use self::{
    balance::{Dns, Endpoints, Resolve},
    breaker::BreakerPolicy,
    retry::{Budget, RetryPolicy},
};
use crate::{
    BoxError,
    config::{ConfigError, PeerConfig},
    rpc::split_path,
    status::code_name,
    telemetry::{
        rpc::{MethodMetrics, OnStatus, observe},
        trace,
    },
};

/// A peer that cannot be set up: one line naming the URL and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A URL (or TLS material) that tonic cannot use.
    #[error("{source}")]
    Transport {
        /// The peer's URL.
        url: String,
        /// What tonic said.
        source: tonic::transport::Error,
    },
    /// A TLS setting or file that is wrong.
    #[error("peer {url}: `{setting}`: {reason}")]
    Tls {
        /// The peer's URL.
        url: String,
        /// The setting within the peer block, e.g. `tls.ca_file`.
        setting: String,
        /// What is wrong, naming the file.
        reason: String,
    },
}

/// A lazily connecting, traced and measured channel to the peer called `name`
/// (the `peer` label of the client metrics): the service starts even when the
/// peer is not up yet, and reconnects on its own when the peer comes back. A
/// host name in the URL is resolved with the system resolver.
pub fn channel(name: &str, peer: &PeerConfig) -> Result<PeerChannel, ChannelError> {
    channel_with_resolver(name, peer, Arc::new(Dns))
}

/// [`channel`] with the resolver given (tests control which replicas exist).
pub fn channel_with_resolver(
    name: &str,
    peer: &PeerConfig,
    resolver: Arc<dyn Resolve>,
) -> Result<PeerChannel, ChannelError> {
    let breaker = BreakerPolicy {
        cool_down: peer.breaker_cool_down(),
        ..BreakerPolicy::default()
    };
    let first = raw_channel(peer, None)?;
    let authority = authority(&peer.url);
    let endpoints = Endpoints::single(balance::Endpoint::new(
        None,
        authority.clone(),
        first,
        breaker,
    ));
    // A name, not an address: resolve it, and keep resolving it.
    let uri: http::Uri = peer.url.parse().map_err(|_| ChannelError::Tls {
        url: peer.url.clone(),
        setting: "url".into(),
        reason: "is not a URI".into(),
    })?;
    if let Some(host) = uri.host()
        && host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_err()
    {
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("https") {
                443
            } else {
                80
            });
        let config = peer.clone();
        balance::spawn_resolver(
            name.to_owned(),
            host.to_owned(),
            port,
            peer.resolve_interval(),
            resolver,
            Arc::downgrade(&endpoints),
            move |addr| match raw_channel(&config, Some(addr)) {
                Ok(channel) => Some(balance::Endpoint::new(
                    Some(addr),
                    addr.to_string(),
                    channel,
                    breaker,
                )),
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "cannot make a channel to a resolved address");
                    None
                }
            },
        );
    }
    let retry = RetryPolicy {
        max_attempts: peer.max_attempts,
        ..RetryPolicy::default()
    };
    Ok(PeerChannel {
        inner: Arc::new(Inner {
            peer: Arc::from(name),
            authority: Arc::from(authority),
            budget: Budget::new(&retry),
            retry,
            endpoints,
            default_timeout: peer.call_timeout(),
            methods: Default::default(),
        }),
    })
}

fn authority(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

/// A channel to the peer's URL, or to one resolved address of it (keeping the
/// URL's host as the `:authority` and the TLS server name).
fn raw_channel(peer: &PeerConfig, addr: Option<SocketAddr>) -> Result<Channel, ChannelError> {
    let url = &peer.url;
    let transport = |source| ChannelError::Transport {
        url: url.clone(),
        source,
    };
    let tls_error = |setting: &str, reason: String| ChannelError::Tls {
        url: url.clone(),
        setting: setting.to_owned(),
        reason,
    };
    let original: http::Uri = url
        .parse()
        .map_err(|_| tls_error("url", "is not a URI".into()))?;
    let target = match addr {
        None => url.clone(),
        Some(addr) => format!("{}://{addr}", original.scheme_str().unwrap_or("http")),
    };
    let mut endpoint = Endpoint::from_shared(target).map_err(transport)?;
    if addr.is_some() {
        endpoint = endpoint.origin(original.clone());
    }
    if peer.tls.enabled {
        // tonic would silently speak plaintext to an http:// URL: refuse instead.
        if original.scheme_str() != Some("https") {
            return Err(tls_error(
                "tls.enabled",
                "needs an https:// peer URL".into(),
            ));
        }
        let mut tls = peer.tls.client_tls_config("tls").map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => tls_error(&key, reason),
            other => tls_error("tls", other.to_string()),
        })?;
        // Dialled by address, the certificate is still checked for the name.
        if addr.is_some()
            && peer.tls.server_name.is_none()
            && let Some(host) = original.host()
        {
            tls = tls.domain_name(host.to_owned());
        }
        endpoint = endpoint.tls_config(tls).map_err(transport)?;
    }
    Ok(endpoint
        .connect_timeout(peer.connect_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(false)
        .connect_lazy())
}

/// A channel to one peer that traces and measures every call, and balances,
/// bounds and retries it (see the module docs). Cheap to clone; clones share
/// the connections, breakers and retry budget.
#[derive(Debug, Clone)]
pub struct PeerChannel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    peer: Arc<str>,
    authority: Arc<str>,
    endpoints: Arc<Endpoints>,
    retry: RetryPolicy,
    budget: Budget,
    default_timeout: Duration,
    /// Labels and metric handles by method path, looked up once per method
    /// rather than registered on every call (see `stack::metrics`).
    methods: std::sync::Mutex<std::collections::HashMap<String, Arc<MethodMetrics>>>,
}

impl PeerChannel {
    /// The replicas this channel knows now (for tests and diagnostics).
    pub fn endpoints(&self) -> Vec<Arc<balance::Endpoint>> {
        self.inner.endpoints.snapshot()
    }

    /// Tokens left in the retry budget (for tests and diagnostics).
    pub fn retry_tokens(&self) -> f64 {
        self.inner.budget.tokens()
    }
}

struct ClientCall {
    metrics: Arc<MethodMetrics>,
    start: Instant,
    span: tracing::Span,
}

impl OnStatus for ClientCall {
    fn on_status(self, code: Code, message: &str, _metadata: Option<&http::HeaderMap>) {
        self.metrics.ended(code, self.start.elapsed());
        trace::record_status(&self.span, trace::Side::Client, code, message);
    }
}

/// The code a caller sees for a call that got no answer at all.
fn transport_code(e: &tonic::transport::Error) -> Code {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<tonic::TimeoutExpired>() {
            return Code::DeadlineExceeded;
        }
        source = err.source();
    }
    Code::Unavailable
}

/// The code a response's headers carry (every error is a trailers-only
/// answer); `None` while the call goes on in the body.
fn header_code(resp: &http::Response<Body>) -> Option<Code> {
    Status::from_header_map(resp.headers()).map(|s| s.code())
}

/// Whether an attempt that ended with `code` counts against its endpoint: it
/// did not answer (or said it cannot), as opposed to a business refusal.
fn is_endpoint_failure(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

/// The request's parts, to send the request again.
struct Template {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Template {
    fn build(&self, body: Body) -> http::Request<Body> {
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

impl Inner {
    /// Sends `req` (attempting again when it is safe), and returns the final
    /// attempt's answer. `call` observes that answer for traces and metrics.
    async fn send(
        self: Arc<Self>,
        req: http::Request<Body>,
        call: ClientCall,
    ) -> Result<http::Response<Body>, BoxError> {
        let started = Instant::now();
        let deadline = deadline::outbound(req.headers(), self.default_timeout, started);
        let safe = retry::is_safe(req.uri().path());
        let (parts, body) = req.into_parts();
        let template = Template {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
        };
        // A safe call is unary: its one message is small, and kept to be sent again.
        let (mut once, kept): (Option<Body>, Option<Bytes>) = if safe {
            match body.collect().await {
                Ok(b) => (None, Some(b.to_bytes())),
                Err(e) => {
                    call.on_status(Code::Internal, "request body failed", None);
                    return Err(e.into());
                }
            }
        } else {
            (Some(body), None)
        };
        let mut attempt = 0;
        let mut failed_at: Option<Arc<balance::Endpoint>> = None;
        loop {
            attempt += 1;
            let now = Instant::now();
            if now >= deadline {
                let s = Status::deadline_exceeded(format!(
                    "deadline passed before calling {}",
                    self.peer
                ));
                call.on_status(s.code(), s.message(), None);
                return Err(s.into());
            }
            let Some(lease) = self
                .endpoints
                .pick(failed_at.as_ref(), |n| fastrand::usize(..n))
            else {
                let s = Status::unavailable(format!(
                    "{} is failing: its circuit breaker is open",
                    self.peer
                ));
                call.on_status(s.code(), s.message(), None);
                return Err(s.into());
            };
            let body = match (&kept, once.take()) {
                (Some(bytes), _) => Body::new(http_body_util::Full::new(bytes.clone())),
                (None, Some(body)) => body,
                (None, None) => unreachable!("an unsafe call is sent once"),
            };
            let mut req = template.build(body);
            req.headers_mut()
                .insert("grpc-timeout", deadline::header_value(deadline, now));
            let mut channel = lease.endpoint().channel.clone();
            let answer = tokio::time::timeout(deadline - now, async move {
                channel.ready().await?;
                channel.call(req).await
            })
            .await;
            let (code, result): (Code, Result<http::Response<Body>, BoxError>) = match answer {
                Err(_) => {
                    let s =
                        Status::deadline_exceeded(format!("{} did not answer in time", self.peer));
                    (s.code(), Err(s.into()))
                }
                Ok(Err(e)) => (transport_code(&e), Err(e.into())),
                Ok(Ok(resp)) => (header_code(&resp).unwrap_or(Code::Ok), Ok(resp)),
            };
            let failed = is_endpoint_failure(code);
            lease.endpoint().record(&self.peer, failed);
            // A retry goes elsewhere when there is elsewhere to go.
            failed_at = Some(lease.endpoint().clone());
            drop(lease);
            if failed {
                self.budget.failed();
            } else {
                self.budget.succeeded();
            }
            if safe
                && retry::is_retryable(code)
                && attempt < self.retry.max_attempts
                && self.budget.allows_retry()
            {
                let pause = self.retry.backoff(attempt, fastrand::f64());
                if Instant::now() + pause < deadline {
                    metrics::counter!(
                        "rpc_client_retries_total",
                        "peer" => self.peer.to_string(),
                        "rpc_method" => call.metrics.label("rpc_method").to_owned(),
                    )
                    .increment(1);
                    tracing::debug!(peer = %self.peer, code = code_name(code), attempt, "retrying");
                    tokio::time::sleep(pause).await;
                    continue;
                }
            }
            return match result {
                Ok(resp) => Ok(observe(resp, call)),
                Err(e) => {
                    let (code, message) = match e.downcast_ref::<Status>() {
                        Some(s) => (s.code(), s.message().to_owned()),
                        None => (code, e.to_string()),
                    };
                    call.on_status(code, &message, None);
                    Err(e)
                }
            };
        }
    }
}

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each attempt waits for its endpoint's channel in `send`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let metrics = {
            let path = req.uri().path();
            let mut methods = self
                .inner
                .methods
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            match methods.get(path) {
                Some(known) => known.clone(),
                None => {
                    let (service, method) = split_path(path).unwrap_or(("unknown", "unknown"));
                    let known = Arc::new(MethodMetrics::new(
                        trace::Side::Client,
                        vec![
                            ("peer", self.inner.peer.to_string()),
                            ("rpc_service", service.to_owned()),
                            ("rpc_method", method.to_owned()),
                        ],
                    ));
                    methods.insert(path.to_owned(), known.clone());
                    known
                }
            }
        };
        // A child of whatever span the caller is in (a handler, a saga step).
        let span = trace::client_span(
            &self.inner.peer,
            metrics.label("rpc_service"),
            metrics.label("rpc_method"),
            &self.inner.authority,
        );
        trace::inject(&span.context(), req.headers_mut());
        metrics.started();
        let call = ClientCall {
            metrics,
            start: Instant::now(),
            span: span.clone(),
        };
        Box::pin(self.inner.clone().send(req, call).instrument(span))
    }
}
