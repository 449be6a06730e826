//! The gRPC server bootstrap every service uses.
//!
//! One [`Server`] serves the service's API plus `grpc.health.v1.Health` and
//! reflection (v1 and v1alpha) on the gRPC port, behind the shared tower stack,
//! and `/healthz`, `/readyz`, `/metrics` on the admin HTTP port.
//!
//! Shutdown, once the `shutdown` future completes (SIGTERM/SIGINT in the
//! binaries): health flips to NOT_SERVING and `/readyz` to 503 at once; new calls
//! are still served for the drain delay (so load balancers see the change first);
//! then the listener closes and in-flight calls get the grace period to finish.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::future::BoxFuture;
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::server::TcpIncoming,
};
use tonic_health::ServingStatus;
use tower::Service;

use crate::{
    auth::Tokens,
    config::ServerConfig,
    layers::{
        AuthMiddleware, CatchPanicMiddleware, DeadlineMiddleware, KnownMethods, LoadShedMiddleware,
        MetricsMiddleware, MiddlewareLayer, RateLimitMiddleware, RequestIdMiddleware,
        TraceContextMiddleware,
    },
};

/// The bound gRPC and admin sockets. Bind first, then serve: tests bind
/// `127.0.0.1:0` and read the ports without guessing or sleeping.
#[derive(Debug)]
pub struct Listeners {
    grpc: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &ServerConfig) -> io::Result<Self> {
        let grpc = TcpListener::bind(config.grpc_addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("bind gRPC {}: {e}", config.grpc_addr))
        })?;
        let admin = TcpListener::bind(config.admin_addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("bind admin {}: {e}", config.admin_addr))
        })?;
        Ok(Self { grpc, admin })
    }

    /// Binds both on `127.0.0.1` with ports chosen by the OS.
    pub async fn ephemeral() -> io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind("127.0.0.1:0").await?,
            admin: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    /// The gRPC address actually bound.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The admin HTTP address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }
}

/// Serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection service could not be built from the descriptors.
    #[error("reflection setup failed: {0}")]
    Reflection(String),
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed: {0}")]
    Grpc(String),
    /// The admin server stopped with an error.
    #[error("admin server failed: {0}")]
    Admin(String),
    /// TLS is on but its certificate, key or CA is unusable.
    #[error("TLS setup failed: {0}")]
    Tls(String),
}

type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Builder for one service's server.
pub struct Server {
    config: ServerConfig,
    tokens: Tokens,
    routes: RoutesBuilder,
    service_names: Vec<&'static str>,
    public_methods: Vec<String>,
    access_log: bool,
    readiness: Option<ReadinessCheck>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("services", &self.service_names)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with the shared stack; tokens are verified with `tokens`.
    pub fn new(config: &ServerConfig, tokens: Tokens) -> Self {
        Self {
            config: config.clone(),
            tokens,
            routes: Routes::builder(),
            service_names: Vec::new(),
            public_methods: Vec::new(),
            access_log: true,
            readiness: None,
        }
    }

    /// Adds a generated gRPC service; its health status is reported under its
    /// full name and reflection lists it.
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes.add_service(svc);
        self
    }

    /// Methods (`/pkg.Service/Method`) callable without an access token.
    pub fn public_methods<I: IntoIterator<Item = &'static str>>(mut self, methods: I) -> Self {
        self.public_methods
            .extend(methods.into_iter().map(str::to_owned));
        self
    }

    /// Turns the per-RPC INFO access line on or off.
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on;
        self
    }

    /// A check `/readyz` runs (e.g. a database ping); failing it answers 503.
    pub fn readiness<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.readiness = Some(Arc::new(move || Box::pin(check())));
        self
    }

    /// Serves until `shutdown` completes, then drains as described in the module
    /// docs. Returns once both ports are closed.
    pub async fn serve(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), ServeError> {
        // Installs the recorder before the first request is counted.
        crate::telemetry::metrics_handle();
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_service_status("", ServingStatus::Serving).await;
        for name in &self.service_names {
            health
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }

        let descriptor_sets: [&[u8]; 4] = [
            emporium_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut v1 = tonic_reflection::server::Builder::configure();
        let mut v1alpha = tonic_reflection::server::Builder::configure();
        for set in descriptor_sets {
            v1 = v1.register_encoded_file_descriptor_set(set);
            v1alpha = v1alpha.register_encoded_file_descriptor_set(set);
        }
        // List only what this process serves, not every package we have protos for.
        let platform = [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        for name in self.service_names.iter().copied().chain(platform) {
            v1 = v1.with_service_name(name);
            v1alpha = v1alpha.with_service_name(name);
        }
        let v1 = v1
            .build_v1()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;
        let v1alpha = v1alpha
            .build_v1alpha()
            .map_err(|e| ServeError::Reflection(e.to_string()))?;

        let mut routes = self.routes;
        routes
            .add_service(health_service)
            .add_service(v1)
            .add_service(v1alpha);

        let known = KnownMethods::from_descriptor_sets(&descriptor_sets);
        let stack = tower::ServiceBuilder::new()
            // First, so every later layer, log line and the response carry the id.
            .layer(MiddlewareLayer(RequestIdMiddleware))
            // The server span, continuing the caller's trace; everything below
            // logs inside it and every outbound call carries it on.
            .layer(MiddlewareLayer(TraceContextMiddleware))
            // Above auth and shedding, so refused calls are counted with their code.
            .layer(MiddlewareLayer(
                MetricsMiddleware::new(known, self.access_log)
                    .with_leak_guard(self.config.leak_guard),
            ))
            // Before any work is admitted: unauthenticated calls cost nothing below.
            .layer(MiddlewareLayer(AuthMiddleware::new(
                self.tokens.clone(),
                self.public_methods.clone(),
            )))
            // After auth, so the limit is per user, not per connection or address.
            .layer(MiddlewareLayer(RateLimitMiddleware::new(
                self.config.rate_limit_per_sec,
                self.config.rate_limit_burst,
            )))
            // Global, not per connection: many connections must not multiply the limit.
            .layer(MiddlewareLayer(LoadShedMiddleware::new(
                self.config.max_in_flight,
            )))
            // Only admitted work is timed; the deadline is visible to handlers.
            .layer(MiddlewareLayer(DeadlineMiddleware::new(
                self.config.request_timeout(),
            )))
            // Innermost, so a panic becomes a gRPC status the layers above can see.
            .layer(MiddlewareLayer(CatchPanicMiddleware))
            .into_inner();

        let mut builder = tonic::transport::Server::builder();
        // TLS wraps each accepted connection before HTTP/2: with mutual TLS a
        // client without a certificate from our CA never reaches the stack.
        if self.config.tls.enabled {
            let tls = self
                .config
                .tls
                .server_tls_config()
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            builder = builder
                .tls_config(tls)
                .map_err(|e| ServeError::Tls(format!("server.tls: {}", crate::error::chain(&e))))?;
        }
        let grpc_server = builder
            .max_concurrent_streams(self.config.max_concurrent_streams)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .layer(stack)
            .add_routes(routes.routes());

        // serve_with_incoming ignores the builder's TCP options: set them here.
        let incoming = TcpIncoming::from(listeners.grpc)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let (drain_tx, drain_rx) = oneshot::channel::<()>();
        let mut grpc = tokio::spawn(grpc_server.serve_with_incoming_shutdown(incoming, async {
            let _ = drain_rx.await;
        }));

        let draining = Arc::new(AtomicBool::new(false));
        let admin_state = AdminState {
            draining: draining.clone(),
            readiness: self.readiness.clone(),
        };
        let admin_router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics_text))
            .with_state(admin_state);
        let (admin_stop_tx, admin_stop_rx) = oneshot::channel::<()>();
        let admin = tokio::spawn(
            axum::serve(listeners.admin, admin_router)
                .with_graceful_shutdown(async {
                    let _ = admin_stop_rx.await;
                })
                .into_future(),
        );

        tracing::info!(services = ?self.service_names, "serving");
        tokio::select! {
            () = shutdown => {}
            res = &mut grpc => {
                let _ = admin_stop_tx.send(());
                return Err(ServeError::Grpc(match res {
                    Ok(Ok(())) => "stopped unexpectedly".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                }));
            }
        }

        tracing::info!(
            drain_delay_ms = self.config.drain_delay_ms,
            grace_ms = self.config.shutdown_grace_ms,
            "shutdown requested: reporting NOT_SERVING"
        );
        draining.store(true, Ordering::SeqCst);
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in &self.service_names {
            health
                .set_service_status(*name, ServingStatus::NotServing)
                .await;
        }
        tokio::time::sleep(self.config.drain_delay()).await;
        let _ = drain_tx.send(());
        let result = match tokio::time::timeout(self.config.shutdown_grace(), &mut grpc).await {
            Ok(Ok(Ok(()))) => {
                tracing::info!("in-flight calls finished; gRPC server stopped");
                Ok(())
            }
            Ok(Ok(Err(e))) => Err(ServeError::Grpc(e.to_string())),
            Ok(Err(e)) => Err(ServeError::Grpc(e.to_string())),
            Err(_) => {
                tracing::warn!("grace period elapsed; abandoning the calls still running");
                grpc.abort();
                Ok(())
            }
        };
        let _ = admin_stop_tx.send(());
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ServeError::Admin(e.to_string())),
            Err(e) => return Err(ServeError::Admin(e.to_string())),
        }
        result
    }
}

#[derive(Clone)]
struct AdminState {
    draining: Arc<AtomicBool>,
    readiness: Option<ReadinessCheck>,
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into());
    }
    if let Some(check) = &state.readiness {
        match tokio::time::timeout(Duration::from_secs(2), check()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            Err(_) => {
                return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "readiness check timed out\n".into(),
                );
            }
        }
    }
    (StatusCode::OK, "ready\n".into())
}

async fn metrics_text() -> String {
    crate::telemetry::render_metrics()
}

/// Completes on SIGTERM or SIGINT (Ctrl-C): the shutdown future for binaries.
///
/// The handlers are installed when this is called, not when the future is first
/// polled: a signal that arrives while the server is still starting must start a
/// drain, not kill the process with the default action. Call it inside the runtime.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                },
                _ => {
                    tracing::warn!("cannot install signal handlers; falling back to Ctrl-C");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}
