//! The admin HTTP port: `/healthz` (the process is up), `/readyz` (503 while
//! draining or when the readiness check fails), `/metrics` (Prometheus text).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::get};
use futures::future::BoxFuture;

/// A check `/readyz` runs, such as a database ping.
pub type ReadinessCheck = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// The admin routes; `draining` turns `/readyz` to 503.
pub(super) fn router(draining: Arc<AtomicBool>, readiness: Option<ReadinessCheck>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            draining,
            readiness,
        })
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
