//! Long-lived channels to peer services: one per peer, created once at start and
//! shared by every call (a channel multiplexes calls over HTTP/2; a channel per
//! call would pay a TCP and HTTP/2 handshake each time). With `tls.enabled` and
//! an `https://` URL the channel speaks TLS, presenting this service's
//! certificate when the peer requires mutual TLS (see [`crate::tls`]).
//!
//! Every call through a [`PeerChannel`] opens a client span, sends it on as W3C
//! `traceparent`/`tracestate`/`baggage` metadata, and is counted per peer
//! (`rpc_client_*` metrics): the calling code does nothing for any of it.

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tonic::{
    Code,
    body::Body,
    transport::{Channel, Endpoint},
};
use tower::Service;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    config::{ConfigError, PeerConfig},
    rpc::split_path,
    status::code_name,
    telemetry::{
        rpc::{OnStatus, observe},
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
/// peer is not up yet, and reconnects on its own when the peer comes back.
pub fn channel(name: &str, peer: &PeerConfig) -> Result<PeerChannel, ChannelError> {
    let inner = raw_channel(peer)?;
    let authority = authority(&peer.url);
    Ok(PeerChannel {
        inner,
        peer: Arc::from(name),
        authority: Arc::from(authority),
    })
}

fn authority(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_default()
}

fn raw_channel(peer: &PeerConfig) -> Result<Channel, ChannelError> {
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
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(transport)?;
    if peer.tls.enabled {
        // tonic would silently speak plaintext to an http:// URL: refuse instead.
        if endpoint.uri().scheme_str() != Some("https") {
            return Err(tls_error(
                "tls.enabled",
                "needs an https:// peer URL".into(),
            ));
        }
        let tls = peer.tls.client_tls_config("tls").map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => tls_error(&key, reason),
            other => tls_error("tls", other.to_string()),
        })?;
        endpoint = endpoint.tls_config(tls).map_err(transport)?;
    }
    Ok(endpoint
        .connect_timeout(peer.connect_timeout())
        .timeout(peer.call_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// A channel to one peer that traces and measures every call. Cheap to clone;
/// clones share the connection.
#[derive(Debug, Clone)]
pub struct PeerChannel {
    inner: Channel,
    peer: Arc<str>,
    authority: Arc<str>,
}

struct ClientCall {
    peer: Arc<str>,
    service: String,
    method: String,
    start: Instant,
    span: tracing::Span,
}

impl ClientCall {
    fn labels(&self) -> [(&'static str, String); 3] {
        [
            ("peer", self.peer.to_string()),
            ("rpc_service", self.service.clone()),
            ("rpc_method", self.method.clone()),
        ]
    }
}

impl OnStatus for ClientCall {
    fn on_status(self, code: Code, message: &str, _metadata: Option<&http::HeaderMap>) {
        let labels = self.labels();
        metrics::gauge!("rpc_client_in_flight", &labels).decrement(1.0);
        metrics::histogram!("rpc_client_duration_seconds", &labels)
            .record(self.start.elapsed().as_secs_f64());
        let [peer, service, method] = labels;
        metrics::counter!(
            "rpc_client_requests_total",
            "peer" => peer.1,
            "rpc_service" => service.1,
            "rpc_method" => method.1,
            "rpc_grpc_status_code" => code_name(code),
        )
        .increment(1);
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

impl Service<http::Request<Body>> for PeerChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let (service, method) = split_path(req.uri().path()).unwrap_or(("unknown", "unknown"));
        let (service, method) = (service.to_owned(), method.to_owned());
        // A child of whatever span the caller is in (a handler, a saga step).
        let span = trace::client_span(&self.peer, &service, &method, &self.authority);
        trace::inject(&span.context(), req.headers_mut());
        let call = ClientCall {
            peer: self.peer.clone(),
            service,
            method,
            start: Instant::now(),
            span: span.clone(),
        };
        metrics::gauge!("rpc_client_in_flight", &call.labels()).increment(1.0);
        let fut = self.inner.call(req);
        Box::pin(
            async move {
                match fut.await {
                    Ok(resp) => Ok(observe(resp, call)),
                    Err(e) => {
                        call.on_status(transport_code(&e), &e.to_string(), None);
                        Err(e)
                    }
                }
            }
            .instrument(span),
        )
    }
}
