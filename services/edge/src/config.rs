//! The edge's settings: the common blocks, the four services it calls, and its
//! own block (request bounds).
//!
//! The edge serves HTTP/JSON on what the common `server` block calls the gRPC
//! address (`server.grpc_addr`, 8080 by default): it is the process's main
//! port. The admin port (`/healthz`, `/readyz`, `/metrics`) is 9095. The
//! `database` block is not used: the edge keeps no state.

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

/// How the edge bounds what it accepts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeConfig {
    /// Largest request body accepted, in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
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
}
