//! The edge's settings: the common blocks, the four services it calls, and its
//! own block (request bounds).
//!
//! The edge's one public port is what the common `server` block calls the
//! gRPC address (`server.grpc_addr`, 8080 by default): it serves REST/JSON,
//! the streams, gRPC-Web and gRPC (HTTP/1.1 and h2c) and the storefront. The
//! admin port (`/healthz`, `/readyz`, `/metrics`) is 9095. The `database` and
//! `auth` blocks are not used: the edge keeps no state and holds no keys (it
//! forwards the caller's token), so production asks it for none.

use emporium_common::{
    binary::ServiceConfig,
    config::{
        self, BaseConfig, ConfigError, FromLayers, Layers, LayersError, PeerConfig, Validate,
    },
};
use serde::{Deserialize, Serialize};

/// Everything the edge reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Server (`server.grpc_addr` is the HTTP port), telemetry, development mode.
    #[serde(flatten)]
    pub base: BaseConfig,
    /// The services behind the edge (`EMPORIUM_PEERS__ORDER__URL`, …).
    pub peers: Peers,
    /// The edge's own settings (`EMPORIUM_EDGE__*`).
    pub edge: EdgeConfig,
}

/// Where the four services are. A proto package `emporium.<name>.v1` is served
/// by the peer `<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    /// The user service.
    pub user: PeerConfig,
    /// The inventory service.
    pub inventory: PeerConfig,
    /// The payment service.
    pub payment: PeerConfig,
    /// The order service.
    pub order: PeerConfig,
}

impl Peers {
    /// Each peer with its name, the middle part of the proto packages it serves.
    pub fn named(&self) -> [(&'static str, &PeerConfig); 4] {
        [
            ("user", &self.user),
            ("inventory", &self.inventory),
            ("payment", &self.payment),
            ("order", &self.order),
        ]
    }
}

/// How the edge bounds what it accepts, and whom browsers may call it from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeConfig {
    /// Largest request body accepted, in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
    /// Origins whose pages may call the API from a browser (CORS), e.g.
    /// `["https://shop.example.com"]`; `["*"]` allows any. Empty: only pages
    /// the edge serves itself (the storefront) may.
    #[serde(default)]
    pub cors_allowed_origins: Vec<String>,
    /// How often an open stream gets a heartbeat (an SSE comment, a WebSocket
    /// ping), in milliseconds, so idle proxies do not cut it.
    #[serde(default = "default_heartbeat_ms")]
    pub stream_heartbeat_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    15_000
}

impl EdgeConfig {
    /// [`Self::stream_heartbeat_ms`] as a duration.
    pub fn stream_heartbeat(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.stream_heartbeat_ms)
    }
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            cors_allowed_origins: Vec::new(),
            stream_heartbeat_ms: default_heartbeat_ms(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local("edge", 8080, 9095),
            peers: Peers {
                user: PeerConfig::local(50051),
                inventory: PeerConfig::local(50052),
                payment: PeerConfig::local(50053),
                order: PeerConfig::local(50054),
            },
            edge: EdgeConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        for (name, peer) in self.peers.named() {
            peer.validate_as(&format!("peers.{name}"))?;
        }
        if self.edge.max_body_bytes == 0 {
            return Err(ConfigError::invalid("edge.max_body_bytes", "must be > 0"));
        }
        if self.edge.stream_heartbeat_ms < 100 {
            return Err(ConfigError::invalid(
                "edge.stream_heartbeat_ms",
                "must be at least 100",
            ));
        }
        for origin in &self.edge.cors_allowed_origins {
            let valid = origin == "*"
                || ((origin.starts_with("http://") || origin.starts_with("https://"))
                    && !origin.trim_end_matches('/').contains(['?', '#', ' '])
                    && origin.splitn(4, '/').count() == 3);
            if !valid {
                return Err(ConfigError::invalid(
                    "edge.cors_allowed_origins",
                    format!("`{origin}` is not an origin (scheme://host[:port], or *)"),
                ));
            }
        }
        Ok(())
    }
}

impl FromLayers for Config {
    fn from_layers(layers: &Layers) -> Result<Self, LayersError> {
        Ok(Self {
            base: BaseConfig::from_layers(layers)?,
            peers: config::block(layers, "peers")?,
            edge: config::block(layers, "edge")?,
        })
    }
}

impl ServiceConfig for Config {
    fn base(&self) -> &BaseConfig {
        &self.base
    }

    fn uses_auth_keys(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_8080() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.base.server.grpc_addr.port(), 8080);
        assert_eq!(config.base.server.admin_addr.port(), 9095);
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let with = |origins: &[&str]| {
            let mut c = Config::default();
            c.edge.cors_allowed_origins = origins.iter().map(|o| (*o).to_owned()).collect();
            c.validate()
        };
        with(&["https://shop.example.com", "http://localhost:3000", "*"]).unwrap();
        for bad in [
            "shop.example.com",
            "https://shop.example.com/path",
            "ftp://x",
        ] {
            let e = with(&[bad]).unwrap_err().to_string();
            assert!(e.contains("edge.cors_allowed_origins"), "{bad}: {e}");
        }
    }
}
