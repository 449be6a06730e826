//! Logs (tracing) and the metrics recorder.
//!
//! [`init`] installs the process-wide subscriber once and returns a guard; keep it
//! alive for the life of the process so anything buffered is flushed on drop.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogFormat, TelemetryConfig};

/// Flushes telemetry when dropped. Hold it in `main` until the server returns.
#[must_use = "dropping the guard ends telemetry"]
#[derive(Debug)]
pub struct TelemetryGuard {
    _private: (),
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        tracing::debug!("telemetry guard dropped");
    }
}

/// Installs the global `tracing` subscriber: `RUST_LOG` when set, else the
/// configured filter; pretty or JSON lines on stdout. A second call (tests spawn
/// several services in one process) keeps the first subscriber.
pub fn init(config: &TelemetryConfig) -> TelemetryGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match config.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    if result.is_err() {
        tracing::debug!("a tracing subscriber was already installed; keeping it");
    }
    TelemetryGuard { _private: () }
}

/// Logs for tests: silent unless `TEST_LOG` is set, then pretty at `RUST_LOG` or
/// `debug`. Safe to call from every test.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let filter =
                EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("debug"));
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(fmt::layer().compact().with_test_writer())
                .try_init();
        }
    });
}

/// Latency buckets in seconds: from a cached read (~100 µs) to a stuck call (10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The process-wide Prometheus recorder, installed on first use. Its upkeep task
/// runs on the runtime that first asks for it.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    // Without upkeep the histograms' internal buffers grow without bound.
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}
