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
    /// Testing aid: abort the process at this point of a charge
    /// (`EMPORIUM_PAYMENT__CRASH_AFTER`): `charge_claimed` (the key is claimed,
    /// the processor not yet called: leaves a claim whose holder is dead) or
    /// `charge_committed` (the charge's record is committed, the reply not yet
    /// sent: the caller never learns the outcome).
    ///
    /// It exists only when the crate is built with the `testing` feature, which
    /// only `emporium-testkit` (a dev-dependency) turns on, so only `cargo test`
    /// builds it. A release build compiles neither this field nor the abort;
    /// there `EMPORIUM_PAYMENT__CRASH_AFTER` is ignored with the warning every
    /// unknown setting gets.
    #[cfg(feature = "testing")]
    pub crash_after: Option<String>,
}

/// Where the `payment.crash_after` failpoint aborts the process.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After the charge claimed its key, before the processor is called.
    ChargeClaimed,
    /// After the charge's record transaction committed, before the reply.
    ChargeCommitted,
}

#[cfg(feature = "testing")]
impl CrashPoint {
    /// The point a setting names.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "charge_claimed" => Some(Self::ChargeClaimed),
            "charge_committed" => Some(Self::ChargeCommitted),
            _ => None,
        }
    }
}

impl PaymentSettings {
    /// [`Self::claim_lease_ms`] as a duration.
    pub fn claim_lease(&self) -> Duration {
        Duration::from_millis(self.claim_lease_ms)
    }

    /// [`Self::crash_after`], parsed (validation refused anything else).
    #[cfg(feature = "testing")]
    pub fn crash_point(&self) -> Option<CrashPoint> {
        self.crash_after.as_deref().and_then(CrashPoint::parse)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local("payment", 50053, 9093),
            payment: PaymentSettings {
                claim_lease_ms: 30_000,
                #[cfg(feature = "testing")]
                crash_after: None,
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
        #[cfg(feature = "testing")]
        if let Some(point) = &self.payment.crash_after
            && CrashPoint::parse(point).is_none()
        {
            return Err(ConfigError::invalid(
                "payment.crash_after",
                "must be charge_claimed or charge_committed",
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
