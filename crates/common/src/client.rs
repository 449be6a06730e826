//! Long-lived channels to peer services: one per peer, created once at start and
//! shared by every call (a channel multiplexes calls over HTTP/2; a channel per
//! call would pay a TCP and HTTP/2 handshake each time). With `tls.enabled` and
//! an `https://` URL the channel speaks TLS, presenting this service's
//! certificate when the peer requires mutual TLS (see [`crate::tls`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

use crate::{
    config::{ConfigError, Validate},
    tls::PeerTlsConfig,
};

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

/// A peer that cannot be set up: one line naming the URL and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// A URL (or TLS material) that tonic cannot use.
    #[error("{source}")]
    Transport {
        /// The peer's URL.
        url: String,
        /// What tonic said.
        source: tonic::transport::Error,
    },
    /// A TLS setting or file that is wrong.
    #[error("peer {url}: `{setting}`: {reason}")]
    Tls {
        /// The peer's URL.
        url: String,
        /// The setting within the peer block, e.g. `tls.ca_file`.
        setting: String,
        /// What is wrong, naming the file.
        reason: String,
    },
}

/// A lazily connecting channel: the service starts even when the peer is not up
/// yet, and reconnects on its own when the peer comes back.
pub fn channel(peer: &PeerConfig) -> Result<Channel, ChannelError> {
    let url = &peer.url;
    let transport = |source| ChannelError::Transport {
        url: url.clone(),
        source,
    };
    let tls_error = |setting: &str, reason: String| ChannelError::Tls {
        url: url.clone(),
        setting: setting.to_owned(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.clone()).map_err(transport)?;
    if peer.tls.enabled {
        // tonic would silently speak plaintext to an http:// URL: refuse instead.
        if endpoint.uri().scheme_str() != Some("https") {
            return Err(tls_error(
                "tls.enabled",
                "needs an https:// peer URL".into(),
            ));
        }
        let tls = peer.tls.client_tls_config("tls").map_err(|e| match e {
            ConfigError::Invalid { key, reason, .. } => tls_error(&key, reason),
            other => tls_error("tls", other.to_string()),
        })?;
        endpoint = endpoint.tls_config(tls).map_err(transport)?;
    }
    Ok(endpoint
        .connect_timeout(Duration::from_millis(peer.connect_timeout_ms))
        .timeout(peer.call_timeout())
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy())
}
