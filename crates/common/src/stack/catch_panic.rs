//! Turns a panic in a handler into INTERNAL with a generic message; the process
//! and the connection stay up. tower-http catches it; ours only answers in gRPC
//! (its default answer, a plain HTTP 500, is a protocol error to gRPC clients)
//! and keeps the panic text in the log, never in the response.

use std::any::Any;

use tonic::{Status, body::Body};

use super::{HttpResponse, status_response};

/// The answer to a panic: INTERNAL, logged and counted.
pub(super) fn internal_for_panic(panic: Box<dyn Any + Send + 'static>) -> HttpResponse {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into());
    tracing::error!(panic = %msg, "handler panicked");
    metrics::counter!("rpc_server_panics_total").increment(1);
    status_response(Status::internal("internal error"))
}

/// tower-http boxes the response body; tonic wants its own body type back.
pub(super) fn into_grpc_body<B>(resp: http::Response<B>) -> HttpResponse
where
    B: http_body::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    B::Error: Into<crate::BoxError>,
{
    resp.map(Body::new)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tonic::Code;
    use tower::{Layer as _, Service as _, ServiceExt as _};
    use tower_http::catch_panic::CatchPanicLayer;

    use super::*;
    use crate::stack::HttpRequest;

    #[tokio::test]
    async fn a_panicking_handler_answers_internal_and_keeps_serving() {
        async fn explode(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            panic!("secret detail: connection string postgres://admin:hunter2@db");
        }
        let mut svc = tower::ServiceBuilder::new()
            .map_response(into_grpc_body)
            .layer(CatchPanicLayer::custom(internal_for_panic))
            .service(tower::service_fn(explode));
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
        let _ = CatchPanicLayer::custom(internal_for_panic).layer(tower::service_fn(explode));
    }
}
