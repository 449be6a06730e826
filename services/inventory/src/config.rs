//! The inventory service's settings: the common blocks plus the catalogue
//! currency.

use emporium_common::config::{
    AuthConfig, ConfigError, DatabaseConfig, ServerConfig, TelemetryConfig, Validate,
};
use serde::{Deserialize, Serialize};

use crate::domain::Currency;

/// Everything the inventory service reads at start. See the README for the
/// variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Ports and request bounds (`EMPORIUM_SERVER__*`).
    pub server: ServerConfig,
    /// The inventory database (`EMPORIUM_DATABASE__*`).
    pub database: DatabaseConfig,
    /// Logging (`EMPORIUM_TELEMETRY__*`).
    pub telemetry: TelemetryConfig,
    /// Access tokens (`EMPORIUM_AUTH__*`); the same key on every service.
    pub auth: AuthConfig,
    /// The catalogue currency (`EMPORIUM_CURRENCY`): the ISO 4217 code every
    /// price and reservation is in, e.g. `EUR`. The service refuses to start
    /// when stored products are priced in another currency.
    pub currency: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local(50052, 9092),
            database: DatabaseConfig::sqlite_default("inventory"),
            telemetry: TelemetryConfig::default(),
            auth: AuthConfig::default(),
            currency: "EUR".into(),
        }
    }
}

impl Config {
    /// The catalogue currency, parsed.
    pub fn currency(&self) -> Result<Currency, ConfigError> {
        Currency::parse(&self.currency).map_err(|e| ConfigError::invalid("currency", e))
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()?;
        self.currency().map(|_| ())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_currencies_are_named() {
        Config::default().validate().unwrap();
        for bad in ["", "eur", "EURO", "E1R"] {
            let c = Config {
                currency: bad.into(),
                ..Config::default()
            };
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("EMPORIUM_CURRENCY"), "{err}");
        }
    }
}
