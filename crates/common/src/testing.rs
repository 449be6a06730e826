//! Test aids, compiled only into test builds (`cfg(test)` here, the `testing`
//! feature for the test harness): quiet logs, captured log lines, and the leak
//! guard's list of what a client must never see. Nothing here is on a
//! production response path: a release binary does not contain it.

use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tracing_subscriber::{
    EnvFilter,
    fmt::{self, MakeWriter},
    prelude::*,
};

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

/// A [`MakeWriter`] that keeps every line in memory, for tests.
#[derive(Debug, Clone, Default)]
pub struct CapturedLines(Arc<Mutex<Vec<u8>>>);

impl CapturedLines {
    /// Every line written so far, parsed as JSON.
    pub fn json(&self) -> Vec<Value> {
        let bytes = self.0.lock().expect("captured lines poisoned").clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl std::io::Write for CapturedLines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .expect("captured lines poisoned")
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for CapturedLines {
    type Writer = CapturedLines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Text that must never appear in a message a client sees: SQL, driver names,
/// panic and backtrace text, source and file paths, tokens. Upper-case markers
/// match as written (SQL keywords); the others ignore case.
pub const LEAK_MARKERS: [&str; 16] = [
    "SELECT",
    "INSERT",
    "UPDATE ",
    "DELETE FROM",
    "sqlx",
    "sqlite",
    "postgres",
    "panicked",
    "RUST_BACKTRACE",
    "/src/",
    ".rs:",
    "/home/",
    "/root/",
    "/tmp/",
    "stack backtrace",
    "Bearer ",
];

/// The first [`LEAK_MARKERS`] entry `message` contains, if any.
pub fn leak_in(message: &str) -> Option<&'static str> {
    let lower = message.to_lowercase();
    LEAK_MARKERS.into_iter().find(|marker| {
        if marker.bytes().any(|b| b.is_ascii_lowercase()) {
            lower.contains(&marker.to_lowercase())
        } else {
            message.contains(marker)
        }
    })
}

/// The leak guard's check (the server stack calls it on every status in test
/// builds with `server.leak_guard` on): a message with internals in it is
/// logged and panics, which aborts the connection so the test that provoked it
/// fails.
pub fn guard_against_leaks(message: &str) {
    if let Some(marker) = leak_in(message) {
        tracing::error!(marker, message, "status message leaks internals");
        panic!("status message leaks internals ({marker:?}): {message:?}");
    }
}
