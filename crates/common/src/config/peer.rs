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
    /// Deadline for each call when the caller has no shorter one, in milliseconds.
    pub call_timeout_ms: u64,
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
            tls: PeerTlsConfig::default(),
        }
    }

    /// [`Self::call_timeout_ms`] as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
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
        self.tls.validate_as(&format!("{key}.tls"), &self.url)
    }
}

impl Validate for PeerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as("peer")
    }
}
