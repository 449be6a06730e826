//! The `telemetry` block: how logs are written.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Validate};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for collectors.
    Json,
}

/// Logging settings. Trace export follows the standard `OTEL_*` variables
/// instead (see `telemetry`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryConfig {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info,emporium_user=debug`. `RUST_LOG`, when
    /// set, wins.
    pub log_filter: String,
    /// One INFO line per RPC (method, code, duration). Off removes the only
    /// per-request INFO line.
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            access_log: true,
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map(|_| ())
            .map_err(|e| ConfigError::invalid("telemetry.log_filter", e.to_string()))
    }
}
