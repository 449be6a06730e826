//! The blocks every service has, in one struct that each service's `Config`
//! flattens into its own: `dev_mode`, `server`, `database`, `telemetry`, `auth`.

use serde::{Deserialize, Serialize};

use super::{AuthConfig, ConfigError, DatabaseConfig, ServerConfig, TelemetryConfig, Validate};

/// The settings every service shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaseConfig {
    /// Development mode (`EMPORIUM_DEV_MODE`): allows the built-in development
    /// keys, which anyone can read in the source. Never on in production.
    #[serde(default)]
    pub dev_mode: bool,
    /// Ports and request bounds (`EMPORIUM_SERVER__*`).
    pub server: ServerConfig,
    /// This service's own database (`EMPORIUM_DATABASE__*`).
    pub database: DatabaseConfig,
    /// Logging (`EMPORIUM_TELEMETRY__*`).
    pub telemetry: TelemetryConfig,
    /// Access tokens (`EMPORIUM_AUTH__*`); the same keys on every service.
    pub auth: AuthConfig,
}

impl BaseConfig {
    /// The defaults of the service `name` on its local ports: a SQLite file
    /// under `data/`, pretty logs, the development keys.
    pub fn local(name: &str, grpc_port: u16, admin_port: u16) -> Self {
        Self {
            dev_mode: false,
            server: ServerConfig::local(grpc_port, admin_port),
            database: DatabaseConfig::sqlite_default(name),
            telemetry: TelemetryConfig::default(),
            auth: AuthConfig::default(),
        }
    }
}

impl super::FromLayers for BaseConfig {
    fn from_layers(layers: &super::Layers) -> Result<Self, super::LayersError> {
        Ok(layers.extract()?)
    }
}

impl Validate for BaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()
    }
}
