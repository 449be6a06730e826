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
