//! Per-RPC metrics (count by code, latency, in flight) and the access log line.
//! Sits above auth and shedding, so refused calls are counted with the code the
//! client really got.

use std::{
    collections::{HashMap, HashSet},
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Instant,
};

use tonic::Code;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse};
use crate::{
    rpc::split_path,
    status::code_name,
    telemetry::{
        rpc::{MethodMetrics, OnStatus, observe},
        trace,
    },
};

/// The set of gRPC methods this server knows, as `/pkg.Service/Method`. Metrics
/// label only these, so random paths cannot blow up label cardinality. It also
/// knows which of them answer with a stream (server streaming or
/// bidirectional), for the stream limits.
#[derive(Debug, Clone, Default)]
pub struct KnownMethods(Arc<Methods>);

#[derive(Debug, Default)]
struct Methods {
    all: HashSet<String>,
    server_streaming: HashSet<String>,
}

impl KnownMethods {
    /// Every method of every service in the given encoded descriptor sets.
    pub fn from_descriptor_sets(sets: &[&[u8]]) -> Self {
        use prost::Message as _;
        let mut out = Methods::default();
        for set in sets {
            let Ok(fds) = prost_types::FileDescriptorSet::decode(*set) else {
                continue;
            };
            for file in fds.file {
                let pkg = file.package();
                for svc in &file.service {
                    for m in &svc.method {
                        let path = format!("/{pkg}.{}/{}", svc.name(), m.name());
                        if m.server_streaming() {
                            out.server_streaming.insert(path.clone());
                        }
                        out.all.insert(path);
                    }
                }
            }
        }
        Self(Arc::new(out))
    }

    /// Whether `path` names a known method.
    pub fn contains(&self, path: &str) -> bool {
        self.0.all.contains(path)
    }

    /// Whether `path` names a known method that answers with a stream.
    pub fn is_server_streaming(&self, path: &str) -> bool {
        self.0.server_streaming.contains(path)
    }

    /// The known methods that answer with one message.
    pub fn unary(&self) -> impl Iterator<Item = &str> {
        self.iter().filter(|m| !self.is_server_streaming(m))
    }

    /// All known method paths.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.all.iter().map(String::as_str)
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    methods: Arc<HashMap<String, Arc<MethodMetrics>>>,
    unknown: Arc<MethodMetrics>,
    access_log: bool,
    #[cfg(any(test, feature = "testing"))]
    leak_guard: bool,
}

impl MetricsLayer {
    /// Labels only `known` methods; writes an INFO access line per RPC when
    /// `access_log` is on.
    pub fn new(known: KnownMethods, access_log: bool) -> Self {
        let methods = known
            .iter()
            .filter_map(|path| {
                let (service, method) = split_path(path)?;
                Some((path.to_owned(), method_metrics(service, method)))
            })
            .collect();
        Self {
            methods: Arc::new(methods),
            unknown: method_metrics("unknown", "unknown"),
            access_log,
            #[cfg(any(test, feature = "testing"))]
            leak_guard: false,
        }
    }

    /// Test builds only: checks every status message for leaked internals (a
    /// leak aborts the connection so the test that caused it fails).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_leak_guard(mut self, on: bool) -> Self {
        self.leak_guard = on;
        self
    }
}

fn method_metrics(service: &str, method: &str) -> Arc<MethodMetrics> {
    Arc::new(MethodMetrics::new(
        trace::Side::Server,
        vec![
            ("rpc_service", service.to_owned()),
            ("rpc_method", method.to_owned()),
        ],
    ))
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metrics {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`MetricsLayer`] makes.
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    layer: MetricsLayer,
}

struct Completion {
    names: Arc<MethodMetrics>,
    start: Instant,
    access_log: bool,
    span: tracing::Span,
    #[cfg(any(test, feature = "testing"))]
    leak_guard: bool,
}

impl OnStatus for Completion {
    fn on_status(self, code: Code, message: &str, _metadata: Option<&http::HeaderMap>) {
        #[cfg(any(test, feature = "testing"))]
        if self.leak_guard {
            crate::testing::guard_against_leaks(message);
        }
        let elapsed = self.start.elapsed();
        self.names.ended(code, elapsed);
        trace::record_status(&self.span, trace::Side::Server, code, message);
        if self.access_log {
            self.span.in_scope(|| {
                tracing::info!(
                    rpc.service = self.names.label("rpc_service"),
                    rpc.method = self.names.label("rpc_method"),
                    code = code_name(code),
                    duration_ms = elapsed.as_secs_f64() * 1e3,
                    "rpc finished"
                );
            });
        }
    }
}

impl<S> Service<HttpRequest> for Metrics<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let names = match self.layer.methods.get(req.uri().path()) {
            Some(known) => known.clone(),
            None => self.layer.unknown.clone(),
        };
        names.started();
        let done = Completion {
            names,
            start: Instant::now(),
            access_log: self.layer.access_log,
            span: tracing::Span::current(),
            #[cfg(any(test, feature = "testing"))]
            leak_guard: self.layer.leak_guard,
        };
        MetricsFuture {
            inner: self.inner.call(req),
            done: Some(done),
        }
    }
}

pin_project_lite::pin_project! {
    /// Wraps the response so the call is counted when it really ends.
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        done: Option<Completion>,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<HttpResponse, E>>,
{
    type Output = Result<HttpResponse, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = ready!(this.inner.poll(cx));
        Poll::Ready(resp.map(|resp| match this.done.take() {
            Some(done) => observe(resp, done),
            None => resp,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::{convert::Infallible, panic::AssertUnwindSafe};

    use futures::FutureExt as _;
    use tonic::{Status, body::Body};
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn the_leak_guard_stops_a_leaky_status() {
        async fn leaky(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            Ok(Status::internal("error returned from database: SELECT * FROM users").into_http())
        }
        async fn clean(_req: HttpRequest) -> Result<HttpResponse, Infallible> {
            Ok(Status::internal("internal error").into_http())
        }
        let request = || {
            http::Request::builder()
                .uri("/emporium.user.v1.UserService/GetUser")
                .body(Body::empty())
                .unwrap()
        };
        let guard = || MetricsLayer::new(KnownMethods::default(), false).with_leak_guard(true);
        let leaked = AssertUnwindSafe(guard().layer(tower::service_fn(leaky)).oneshot(request()))
            .catch_unwind()
            .await;
        assert!(leaked.is_err(), "a leaky message must not get out");
        let fine = guard()
            .layer(tower::service_fn(clean))
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(fine.headers()["grpc-status"], "13");
    }

    #[test]
    fn known_methods_come_from_the_descriptors() {
        let known = KnownMethods::from_descriptor_sets(&[emporium_proto::FILE_DESCRIPTOR_SET]);
        assert!(known.contains("/emporium.user.v1.UserService/CreateUser"));
        assert!(!known.contains("/emporium.user.v1.UserService/Nope"));
        assert!(known.is_server_streaming("/emporium.user.v1.UserService/StreamUsers"));
        assert!(known.is_server_streaming("/emporium.order.v1.OrderService/WatchOrderUpdates"));
        assert!(!known.is_server_streaming("/emporium.user.v1.UserService/GetUser"));
        // Client streaming only: its one answer ends the call, as for unary calls.
        assert!(!known.is_server_streaming("/emporium.inventory.v1.InventoryService/ImportStock"));
    }
}
