//! The payment service's settings: the shared blocks plus its own `payment`
//! block.

use std::time::Duration;

use emporium_common::{
    binary::ServiceConfig,
    config::{self, BaseConfig, ConfigError, FromLayers, Layers, LayersError, Validate},
};
use serde::{Deserialize, Serialize};

/// Everything the payment service reads at start; each field names its variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Server, database, telemetry, auth, development mode.
    #[serde(flatten)]
    pub base: BaseConfig,
    /// This service's own settings (`EMPORIUM_PAYMENT__*`).
    pub payment: PaymentSettings,
}

/// The `payment` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentSettings {
    /// How long a charge may hold its idempotency key before a retry may presume
    /// it dead (process killed mid-charge) and take it over, in milliseconds
    /// (`EMPORIUM_PAYMENT__CLAIM_LEASE_MS`). Must comfortably exceed the slowest
    /// processor call; until it passes, retries of that key get ABORTED.
    pub claim_lease_ms: u64,
}

impl PaymentSettings {
    /// [`Self::claim_lease_ms`] as a duration.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_millis(self.claim_lease_ms)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local("payment", 50053, 9093),
            payment: PaymentSettings {
                claim_lease_ms: 30_000,
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        if self.payment.claim_lease_ms < 1_000 {
            return Err(ConfigError::invalid(
                "payment.claim_lease_ms",
                "must be >= 1000",
            ));
        }
        Ok(())
    }
}

impl FromLayers for Config {
    fn from_layers(layers: &Layers) -> Result<Self, LayersError> {
        Ok(Self {
            base: BaseConfig::from_layers(layers)?,
            payment: config::block(layers, "payment")?,
        })
    }
}

impl ServiceConfig for Config {
    fn base(&self) -> &BaseConfig {
        &self.base
    }
}
