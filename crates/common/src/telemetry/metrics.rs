//! The process-wide Prometheus recorder behind every admin `/metrics`, and the
//! gauges that are read at scrape time rather than counted.

use std::sync::{Mutex, OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

type Collector = Box<dyn Fn() -> bool + Send + Sync>;

fn collectors() -> &'static Mutex<Vec<Collector>> {
    static COLLECTORS: OnceLock<Mutex<Vec<Collector>>> = OnceLock::new();
    COLLECTORS.get_or_init(Mutex::default)
}

/// Runs `collect` before every render of `/metrics` (gauges that are read
/// rather than counted, like pool sizes) until it returns `false`.
pub fn on_scrape(collect: impl Fn() -> bool + Send + Sync + 'static) {
    collectors()
        .lock()
        .expect("collectors poisoned")
        .push(Box::new(collect));
}

/// The Prometheus text of every metric of this process, read gauges refreshed.
pub fn render_metrics() -> String {
    collectors()
        .lock()
        .expect("collectors poisoned")
        .retain(|collect| collect());
    metrics_handle().render()
}

/// Latency buckets in seconds: from a cached read (~100 µs) to a stuck call (10 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
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
