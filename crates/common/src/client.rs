//! Long-lived channels to peer services: one per peer, created once at start and
//! shared by every call (a channel multiplexes calls over HTTP/2; a channel per
//! call would pay a TCP and HTTP/2 handshake each time).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::config::{ConfigError, Validate};

/// How to reach one peer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerConfig {
    /// `http://host:port` of the peer's gRPC port.
    pub url: String,
    /// How long establishing a connection may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for each call when the caller has no shorter one, in milliseconds.
    pub call_timeout_ms: u64,
}

impl PeerConfig {
    /// A peer on localhost at `port` with default timeouts.
    pub fn local(port: u16) -> Self {
        Self {
            url: format!("http://127.0.0.1:{port}"),
            connect_timeout_ms: 1_000,
            call_timeout_ms: 5_000,
        }
    }

    /// [`Self::call_timeout_ms`] as a duration.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// Validates the peer block named `key` (e.g. `peers.inventory`).
    pub fn validate_as(&self, key: &str) -> Result<(), ConfigError> {
        Endpoint::from_shared(self.url.clone())
            .map_err(|e| ConfigError::invalid(&format!("{key}.url"), e.to_string()))?;
        if self.connect_timeout_ms == 0 || self.call_timeout_ms == 0 {
            return Err(ConfigError::invalid(key, "timeouts must be > 0"));
        }
        Ok(())
    }
}

impl Validate for PeerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_as("peer")
    }
}

/// A peer URL that tonic cannot use.
pub type ChannelError = tonic::transport::Error;

/// A lazily connecting channel: the service starts even when the peer is not up
/// yet, and reconnects on its own when the peer comes back.
pub fn channel(peer: &PeerConfig) -> Result<Channel, ChannelError> {
    Ok(Endpoint::from_shared(peer.url.clone())?
        .connect_timeout(Duration::from_millis(peer.connect_timeout_ms))
        .timeout(peer.call_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}
