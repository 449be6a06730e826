//! Bounds every call by the client's `grpc-timeout` or the server's default,
//! whichever is shorter, and answers DEADLINE_EXCEEDED when it passes (the
//! handler's future is dropped, which rolls back an open transaction). Only
//! admitted work is timed; the [`Deadline`] is visible to handlers.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use tonic::Status;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse, status_response};

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

use crate::rpc::grpc_timeout;

/// See the module docs.
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    default: Duration,
}

impl DeadlineLayer {
    /// `default` applies when the client sends no deadline.
    pub fn new(default: Duration) -> Self {
        Self { default }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            default: self.default,
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    default: Duration,
}

impl<S> Service<HttpRequest> for DeadlineService<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = DeadlineFuture<tokio::task::futures::TaskLocalFuture<Instant, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        let client = grpc_timeout(req.headers());
        let budget = client.map_or(self.default, |c| c.min(self.default));
        let deadline = Instant::now() + budget;
        req.extensions_mut().insert(Deadline(deadline));
        // The handler runs knowing its deadline, so its calls to peers inherit
        // it (`client::deadline`).
        let handler = crate::rpc::with_serving_deadline(deadline, self.inner.call(req));
        DeadlineFuture {
            inner: tokio::time::timeout(budget, handler),
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, cut off at the deadline.
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
    }
}

impl<F, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<HttpResponse, E>>,
{
    type Output = Result<HttpResponse, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(resp) => resp,
            Err(_) => Ok(status_response(Status::deadline_exceeded(
                "deadline exceeded",
            ))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        use crate::rpc::parse_grpc_timeout;
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(parse_grpc_timeout("1234567890S"), None);
    }
}
