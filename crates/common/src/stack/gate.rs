//! The shape shared by the layers that either let a request through or answer
//! it themselves (auth, rate limit): a [`Gate`] decides, [`GateLayer`] does
//! the tower plumbing once, with no allocation per request.

use std::{
    future::{Ready, ready},
    task::{Context, Poll},
};

use futures::future::Either;
use tonic::Status;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse, status_response};

/// Admits a request (and may add to its extensions) or refuses it.
pub trait Gate: Clone {
    /// `Err` is the gRPC status the caller gets instead of the service.
    fn admit(&self, req: &mut HttpRequest) -> Result<(), Status>;
}

/// A layer around a [`Gate`].
#[derive(Debug, Clone)]
pub struct GateLayer<G>(pub G);

impl<G: Clone, S> Layer<S> for GateLayer<G> {
    type Service = Gated<G, S>;
    fn layer(&self, inner: S) -> Self::Service {
        Gated {
            gate: self.0.clone(),
            inner,
        }
    }
}

/// The service a [`GateLayer`] makes.
#[derive(Debug, Clone)]
pub struct Gated<G, S> {
    gate: G,
    inner: S,
}

impl<G, S> Service<HttpRequest> for Gated<G, S>
where
    G: Gate,
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: HttpRequest) -> Self::Future {
        match self.gate.admit(&mut req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(status) => Either::Left(ready(Ok(status_response(status)))),
        }
    }
}
