//! The `database` block: where a service keeps its data.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, Validate};

/// Where a service keeps its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASSWORD@HOST/DB`.
    pub url: Secret,
    /// Most connections in the pool (SQLite always writes through one of them).
    pub max_connections: u32,
    /// How long a query waits for a free connection before the call fails with
    /// UNAVAILABLE, in milliseconds.
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    /// Defaults: a SQLite file under `data/`.
    pub fn sqlite_default(service: &str) -> Self {
        Self {
            url: Secret::new(format!("sqlite://data/{service}.db")),
            max_connections: 8,
            acquire_timeout_ms: 3_000,
        }
    }

    /// [`Self::acquire_timeout_ms`] as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be > 0",
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_ms",
                "must be > 0",
            ));
        }
        Ok(())
    }
}
