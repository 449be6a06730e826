//! Refuses work beyond a global in-flight limit with RESOURCE_EXHAUSTED instead
//! of queueing it: a queue only turns overload into timeouts for everyone.
//! Global, not per connection, so many connections cannot multiply the limit.

use std::{
    future::{Future, Ready, ready},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::Either;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse, status_response};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
}

impl LoadShedLayer {
    /// At most `limit` requests in the handlers at once.
    pub fn new(limit: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limit)),
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            permits: self.permits.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] makes.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S> Service<HttpRequest> for LoadShed<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, WithPermit<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Either::Right(WithPermit {
                inner: self.inner.call(req),
                _permit: permit,
            }),
            Err(_) => {
                metrics::counter!("rpc_server_shed_total").increment(1);
                Either::Left(ready(Ok(status_response(Status::resource_exhausted(
                    "server busy, retry later",
                )))))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The handler's future, holding its place in the limit until it is done.
    pub struct WithPermit<F> {
        #[pin]
        inner: F,
        _permit: OwnedSemaphorePermit,
    }
}

impl<F: Future> Future for WithPermit<F> {
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}
