//! The inventory service's settings: the shared blocks plus its own
//! `inventory` block.

use emporium_common::{
    binary::ServiceConfig,
    config::{self, BaseConfig, ConfigError, FromLayers, Layers, LayersError, Validate},
};
use serde::{Deserialize, Serialize};

use crate::domain::Currency;

/// Everything the inventory service reads at start. See the README for the
/// variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Server, database, telemetry, auth, development mode.
    #[serde(flatten)]
    pub base: BaseConfig,
    /// This service's own settings (`EMPORIUM_INVENTORY__*`).
    pub inventory: InventorySettings,
}

/// The `inventory` block.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InventorySettings {
    /// The catalogue currency (`EMPORIUM_INVENTORY__CURRENCY`): the ISO 4217 code
    /// every price and reservation is in, e.g. `EUR`. The service refuses to
    /// start when stored products are priced in another currency.
    pub currency: Currency,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local("inventory", 50052, 9092),
            inventory: InventorySettings {
                currency: Currency::parse("EUR").expect("EUR is a currency"),
            },
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()
    }
}

impl FromLayers for Config {
    fn from_layers(layers: &Layers) -> Result<Self, LayersError> {
        Ok(Self {
            base: BaseConfig::from_layers(layers)?,
            inventory: config::block(layers, "inventory")?,
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
    fn defaults_are_valid_and_bad_currencies_are_named() {
        Config::default().validate().unwrap();
        for bad in ["", "eur", "EURO", "E1R"] {
            let err =
                serde_json::from_value::<InventorySettings>(serde_json::json!({ "currency": bad }))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("ISO 4217") || err.contains("required"),
                "{err}"
            );
        }
    }
}
