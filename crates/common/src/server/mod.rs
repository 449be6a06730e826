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

mod admin;
mod listeners;
mod signal;

use std::{
    convert::Infallible,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::oneshot;
use tonic::{
    body::Body,
    server::NamedService,
    service::{Routes, RoutesBuilder},
    transport::server::TcpIncoming,
};
use tonic_health::ServingStatus;
use tower::Service;

pub use self::{admin::ReadinessCheck, listeners::Listeners, signal::shutdown_signal};
use crate::{
    auth::Tokens,
    config::{BaseConfig, ServerConfig},
    stack::{KnownMethods, ServerStack},
};

/// The admin routes (`/healthz`, `/readyz`, `/metrics`) for a process that is
/// not a gRPC [`Server`] (the edge): `draining` turns `/readyz` to 503, as does
/// a failing `readiness` check.
pub fn admin_router(draining: Arc<AtomicBool>, readiness: Option<ReadinessCheck>) -> axum::Router {
    admin::router(draining, readiness)
}

/// The health service name that stays SERVING for the whole life of the
/// process, draining included: what a liveness probe asks for, so that a
/// draining replica is taken out of rotation (readiness) without being
/// restarted (liveness).
pub const LIVENESS: &str = "liveness";

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

    /// The server of the service `name` (`inventory`, …) with the shared
    /// `base` settings: tokens verified with `base.auth` (service tokens only
    /// when minted for `name`), the access log as `base.telemetry` says.
    pub fn for_service(name: &str, base: &BaseConfig) -> Result<Self, crate::auth::TokenError> {
        let tokens = Tokens::for_service(&base.auth, name)?;
        Ok(Self::new(&base.server, tokens).access_log(base.telemetry.access_log))
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
        health
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
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
        let stack = ServerStack::new(
            &self.config,
            self.tokens.clone(),
            self.public_methods.clone(),
            known,
            self.access_log,
        );

        let mut builder = tonic::transport::Server::builder();
        // TLS wraps each accepted connection before HTTP/2: with mutual TLS a
        // client without a certificate from our CA never reaches the stack.
        if self.config.tls.enabled {
            let tls = self
                .config
                .tls
                .server_tls_config()
                .map_err(|e| ServeError::Tls(e.to_string()))?;
            builder = builder.tls_config(tls).map_err(|e| {
                ServeError::Tls(format!("server.tls: {}", crate::status::chain(&e)))
            })?;
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
        let admin_router = admin::router(draining.clone(), self.readiness.clone());
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
