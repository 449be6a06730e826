//! How the end of a gRPC call is observed, on either side: the server stack's
//! metrics layer and the peer channels both wrap a response with [`observe`]
//! and are told its final code once, whether it came in the headers (every
//! error), in the trailers (a finished stream), or never (a dropped stream).

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use http_body::Frame;
use tonic::{Code, Status, body::Body, codegen::Bytes};

/// Told once how a call ended: its code and message, and the headers or
/// trailers that carried them (none when the stream broke off).
pub trait OnStatus: Send + 'static {
    /// The call ended with `code`.
    fn on_status(self, code: Code, message: &str, metadata: Option<&http::HeaderMap>);
}

/// Calls `done` when `resp` ends: at once for a trailers-only answer (every
/// error), else when the trailers go by — for a stream that is when it ends —
/// or with CANCELLED when the body is dropped first.
pub fn observe<F: OnStatus>(resp: http::Response<Body>, done: F) -> http::Response<Body> {
    if let Some(status) = Status::from_header_map(resp.headers()) {
        done.on_status(status.code(), status.message(), Some(resp.headers()));
        return resp;
    }
    let (parts, body) = resp.into_parts();
    http::Response::from_parts(
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

/// One method's request metrics on one side of its calls (`rpc_server_…` or
/// `rpc_client_…`): in flight, duration, and requests by code. The handles
/// are looked up at the method's first call (the recorder is installed by
/// then) instead of on every call, where a lookup builds and hashes its key
/// and labels each time.
#[derive(Debug)]
pub(crate) struct MethodMetrics {
    side: super::trace::Side,
    /// `rpc_service`, `rpc_method` and, for a client, `peer`.
    labels: Vec<(&'static str, String)>,
    handles: std::sync::OnceLock<Handles>,
}

#[derive(Debug)]
struct Handles {
    in_flight: metrics::Gauge,
    duration: metrics::Histogram,
    /// By code, each registered when first needed: a series per code that
    /// never happened would only clutter the scrape.
    requests: [std::sync::OnceLock<metrics::Counter>; 17],
}

impl MethodMetrics {
    pub(crate) fn new(side: super::trace::Side, labels: Vec<(&'static str, String)>) -> Self {
        Self {
            side,
            labels,
            handles: std::sync::OnceLock::new(),
        }
    }

    /// The value of label `name`.
    pub(crate) fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    /// The metric names of this side: `[in flight, duration, requests]`,
    /// spelled out so the dashboards' checks (and a reader's grep) find them.
    fn names(&self) -> [&'static str; 3] {
        match self.side {
            super::trace::Side::Server => [
                "rpc_server_in_flight",
                "rpc_server_duration_seconds",
                "rpc_server_requests_total",
            ],
            super::trace::Side::Client => [
                "rpc_client_in_flight",
                "rpc_client_duration_seconds",
                "rpc_client_requests_total",
            ],
        }
    }

    fn handles(&self) -> &Handles {
        let [in_flight, duration, _] = self.names();
        self.handles.get_or_init(|| Handles {
            in_flight: metrics::gauge!(in_flight, &self.labels),
            duration: metrics::histogram!(duration, &self.labels),
            requests: Default::default(),
        })
    }

    /// A call has started.
    pub(crate) fn started(&self) {
        self.handles().in_flight.increment(1.0);
    }

    /// A call started `elapsed` ago ended with `code`.
    pub(crate) fn ended(&self, code: Code, elapsed: std::time::Duration) {
        let handles = self.handles();
        handles.in_flight.decrement(1.0);
        handles.duration.record(elapsed.as_secs_f64());
        handles.requests[(code as usize).min(16)]
            .get_or_init(|| {
                let mut labels = self.labels.clone();
                labels.push((
                    "rpc_grpc_status_code",
                    crate::status::code_name(code).into(),
                ));
                metrics::counter!(self.names()[2], &labels)
            })
            .increment(1);
    }
}
