//! Hand-made gRPC requests on a real connection: for tests that must send what
//! no generated client would (malformed frames, wrong wire types, lying lengths)
//! or call any method by name (the auth matrix).

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use emporium_common::rpc::{Channel, Code, Status};
use http_body::{Body as _, Frame};
use tonic::{body::Body, codegen::Bytes};
use tower::ServiceExt as _;

/// A request body sent as one HTTP/2 DATA frame.
pub struct Once(pub Option<Bytes>);

impl http_body::Body for Once {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }
}

/// A gRPC length-prefixed message: `flag`, then `len` (which may lie), then `bytes`.
pub fn frame(flag: u8, len: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// An honest uncompressed frame around `bytes`.
pub fn framed(bytes: &[u8]) -> Vec<u8> {
    frame(0, bytes.len().try_into().unwrap(), bytes)
}

/// POSTs `body` as is (framing included) to `path` over `channel`: a hand-made
/// gRPC request on the real HTTP/2 connection. Returns the response message or
/// the status; a transport failure or a non-gRPC answer fails the test.
pub async fn raw(
    channel: &Channel,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<Vec<u8>, Status> {
    let mut req = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req.body(Body::new(Once(Some(body.into())))).unwrap();
    let resp = channel
        .clone()
        .oneshot(req)
        .await
        .expect("the connection survives a hostile request");
    assert_eq!(
        resp.status(),
        http::StatusCode::OK,
        "a gRPC answer, not an HTTP error"
    );
    if let Some(s) = Status::from_header_map(resp.headers()) {
        // Trailers-only: an error before any message.
        return if s.code() == Code::Ok {
            Ok(Vec::new())
        } else {
            Err(s)
        };
    }
    let mut body = resp.into_body();
    let (mut data, mut trailers) = (Vec::new(), None);
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        match frame.expect("response body").into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    let status = Status::from_header_map(&trailers.expect("trailers")).expect("grpc-status");
    match status.code() {
        Code::Ok => Ok(data.get(5..).unwrap_or_default().to_vec()),
        _ => Err(status),
    }
}
