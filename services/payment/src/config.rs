//! The payment service's settings: the common blocks plus the charge-claim lease.

use std::time::Duration;

use emporium_common::config::{
    AuthConfig, ConfigError, DatabaseConfig, ServerConfig, TelemetryConfig, Validate,
};
use serde::{Deserialize, Serialize};

/// Everything the payment service reads at start; each field names its variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Ports and request bounds (`EMPORIUM_SERVER__*`).
    pub server: ServerConfig,
    /// The payments database (`EMPORIUM_DATABASE__*`).
    pub database: DatabaseConfig,
    /// Logging (`EMPORIUM_TELEMETRY__*`).
    pub telemetry: TelemetryConfig,
    /// Access tokens (`EMPORIUM_AUTH__*`); the same key on every service.
    pub auth: AuthConfig,
    /// How long a charge may hold its idempotency key before a retry may presume
    /// it dead (process killed mid-charge) and take it over, in milliseconds
    /// (`EMPORIUM_CLAIM_LEASE_MS`). Must comfortably exceed the slowest processor
    /// call; until it passes, retries of that key get ABORTED.
    pub claim_lease_ms: u64,
}

impl Config {
    /// [`Self::claim_lease_ms`] as a duration.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_millis(self.claim_lease_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local(50053, 9093),
            database: DatabaseConfig::sqlite_default("payment"),
            telemetry: TelemetryConfig::default(),
            auth: AuthConfig::default(),
            claim_lease_ms: 30_000,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()?;
        if self.claim_lease_ms < 1_000 {
            return Err(ConfigError::invalid("claim_lease_ms", "must be >= 1000"));
        }
        Ok(())
    }
}

impl emporium_common::binary::ServiceConfig for Config {
    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }
    fn auth(&self) -> &AuthConfig {
        &self.auth
    }
}
