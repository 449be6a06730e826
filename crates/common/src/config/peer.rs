//! A peer block (`peers.<name>`): how to reach a service this one calls.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::Endpoint;

use super::{ConfigError, PeerTlsConfig, Validate};

/// How to reach one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerConfig {
    /// `http://host:port` of the peer's gRPC port (`https://` with TLS).
    pub url: String,
    /// How long establishing a connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline of a call that has none of its own and is not made while
    /// serving a call (whose remaining time it would inherit), in milliseconds.
    pub call_timeout_ms: u64,
    /// Most attempts of a call that is safe to send again (reads, and writes
    /// idempotent by an id or a key), the first included; 1 turns retries off.
    pub max_attempts: u32,
    /// How long a replica whose circuit breaker opened gets no calls before
    /// one probe call, in milliseconds; each failed probe doubles it (at most
    /// 16 times this), a good one closes the breaker.
    pub breaker_cool_down_ms: u64,
    /// How often a host name in `url` is resolved again to find the peer's
    /// replicas, in milliseconds.
    pub resolve_interval_ms: u64,
    /// TLS to this peer (off by default).
    #[serde(default)]
    pub tls: PeerTlsConfig,
}

impl PeerConfig {
    /// A peer on localhost at `port` with default timeouts.
    pub fn local(port: u16) -> Self {
        Self {
            url: format!("http://127.0.0.1:{port}"),
            connect_timeout_ms: 1_000,
            call_timeout_ms: 5_000,
            max_attempts: 4,
            breaker_cool_down_ms: 500,
            resolve_interval_ms: 10_000,
            tls: PeerTlsConfig::default(),
        }
    }

    /// [`Self::call_timeout_ms`] as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// [`Self::breaker_cool_down_ms`] as a duration.
    pub fn breaker_cool_down(&self) -> Duration {
        Duration::from_millis(self.breaker_cool_down_ms)
    }

    /// [`Self::resolve_interval_ms`] as a duration.
    pub fn resolve_interval(&self) -> Duration {
        Duration::from_millis(self.resolve_interval_ms)
    }

    /// [`Self::connect_timeout_ms`] as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// Validates the peer block named `key` (e.g. `peers.inventory`).
    pub fn validate_as(&self, key: &str) -> Result<(), ConfigError> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| ConfigError::invalid(&format!("{key}.url"), e.to_string()))?;
        if self.connect_timeout_ms == 0 || self.call_timeout_ms == 0 {
            return Err(ConfigError::invalid(key, "timeouts must be > 0"));
        }
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::invalid(
                &format!("{key}.max_attempts"),
                "must be 1 to 10",
            ));
        }
        if self.breaker_cool_down_ms == 0 || self.resolve_interval_ms < 100 {
            return Err(ConfigError::invalid(
                key,
                "breaker_cool_down_ms must be > 0 and resolve_interval_ms at least 100",
            ));
        }
        self.tls.validate_as(&format!("{key}.tls"), &self.url)
    }
}

impl Validate for PeerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as("peer")
    }
}
