//! The order service's settings: the common blocks, its peers, and the saga's
//! timing.

use emporium_common::{
    binary::ServiceConfig,
    config::{
        self, AuthConfig, BaseConfig, ConfigError, DEV_SERVICE_PRIVATE_KEY, DEV_SERVICE_PUBLIC_KEY,
        FromLayers, Layers, LayersError, PeerConfig, Secret, Validate,
    },
};
use serde::{Deserialize, Serialize};

/// How much longer than the retry budget a lease must be (ms).
const LEASE_HEADROOM_MS: u64 = 500;

/// Everything the order service reads at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Server, database, telemetry, auth, development mode.
    #[serde(flatten)]
    pub base: BaseConfig,
    /// The services this one calls (`EMPORIUM_PEERS__USER__URL`, …).
    pub peers: Peers,
    /// Saga timing (`EMPORIUM_SAGA__*`).
    pub saga: SagaConfig,
}

/// Where the user, inventory and payment services are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Peers {
    /// The user service (checks that the customer exists and is active).
    pub user: PeerConfig,
    /// The inventory service (reserves, commits and releases stock).
    pub inventory: PeerConfig,
    /// The payment service (charges and refunds).
    pub payment: PeerConfig,
}

/// How the saga retries, leases and sweeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SagaConfig {
    /// The deadline of each peer call the saga makes, in milliseconds; the peer
    /// channel retries what is safe to retry within it (`peers.<peer>.*`). A
    /// forward step that gets no answer compensates the order; a step that must
    /// settle money or stock pauses and is resumed later. The saga's own budget:
    /// a CreateOrder caller's deadline never shortens it.
    pub retry_budget_ms: u64,
    /// How long a run owns an order's saga without renewing (milliseconds).
    /// Another process (or this one after a restart) takes over an order whose
    /// lease has run out. Must exceed `retry_budget_ms` by at least 500 ms, since
    /// one peer call may take the whole budget between two renewals.
    pub lease_ms: u64,
    /// Longest wait before a paused order (a peer was away) is resumed, in
    /// milliseconds. The first wait is `sweep_interval_ms`, doubled after each
    /// pause up to this.
    pub max_pause_ms: u64,
    /// How long after it was placed an order may wait for a peer that does not
    /// answer before its forward steps give up and it is cancelled
    /// (`INTERNAL_ERROR`), in milliseconds. Until then such a step pauses and is
    /// resumed, so a peer restarting does not cancel orders. A peer that
    /// refuses outright cancels at once; settling money or stock never gives up.
    pub give_up_after_ms: u64,
    /// How often unfinished orders with an expired lease are looked for
    /// (milliseconds). The first sweep runs at start.
    pub sweep_interval_ms: u64,
    /// How long CreateOrder (and CancelOrder) waits for the saga before
    /// answering with the order as it stands (the saga finishes in the
    /// background), in milliseconds. A call whose deadline comes sooner gets its
    /// answer 100 ms before that deadline; the saga carries on regardless.
    pub create_wait_ms: u64,
    /// Testing aid: abort the process at one point of the saga, to prove
    /// recovery from a crash there: `saved:<step>` right after the order is
    /// stored at that step (`reserve`, `charge`, `commit`, `compensate`,
    /// `done`), `called:<call>` right after that peer call returns and before
    /// anything is stored (`check_user`, `reserve`, `charge`, `commit`, `void`,
    /// `refund`, `release`).
    ///
    /// It exists only when the crate is built with the `testing` feature. No
    /// package enables that feature in its `[dependencies]`: only
    /// `emporium-testkit` does, and the testkit is a dev-dependency, so cargo
    /// turns it on for `cargo test` alone. A `cargo build --release` (and the
    /// container images built with it) compiles neither this field nor the
    /// abort it triggers; there, `--print-config` shows no `saga.crash_at`,
    /// and `EMPORIUM_SAGA__CRASH_AT` is ignored with the warning every
    /// unknown setting gets ("this service has no such setting").
    #[cfg(feature = "testing")]
    pub crash_at: Option<String>,
}

impl Default for SagaConfig {
    fn default() -> Self {
        Self {
            retry_budget_ms: 8_000,
            lease_ms: 30_000,
            max_pause_ms: 60_000,
            give_up_after_ms: 60_000,
            sweep_interval_ms: 5_000,
            create_wait_ms: 9_000,
            #[cfg(feature = "testing")]
            crash_at: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // No private key by default: in development mode `Config::auth`
            // falls back to the development pair, elsewhere one must be given.
            base: BaseConfig::local("order", 50054, 9094),
            peers: Peers {
                user: PeerConfig::local(50051),
                inventory: PeerConfig::local(50052),
                payment: PeerConfig::local(50053),
            },
            saga: SagaConfig::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        if self.base.auth.service_private_key.is_none() && !self.base.dev_mode {
            return Err(ConfigError::invalid(
                "auth.service_private_key",
                "must be set: the order service signs the service tokens of its saga calls \
                 (the private half of the pair whose public half every service verifies with)",
            ));
        }
        self.peers.user.validate_as("peers.user")?;
        self.peers.inventory.validate_as("peers.inventory")?;
        self.peers.payment.validate_as("peers.payment")?;
        let s = &self.saga;
        for (key, v) in [
            ("saga.retry_budget_ms", s.retry_budget_ms),
            ("saga.lease_ms", s.lease_ms),
            ("saga.max_pause_ms", s.max_pause_ms),
            ("saga.sweep_interval_ms", s.sweep_interval_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be > 0"));
            }
        }
        // One peer call may retry for the whole budget between two renewals of
        // the lease, and the renewal itself is a database write: a lease with
        // less headroom would let another run take the order over mid-call.
        if s.lease_ms < s.retry_budget_ms.saturating_add(LEASE_HEADROOM_MS) {
            return Err(ConfigError::invalid(
                "saga.lease_ms",
                format!("must exceed saga.retry_budget_ms by at least {LEASE_HEADROOM_MS} ms"),
            ));
        }
        #[cfg(feature = "testing")]
        if let Some(point) = &s.crash_at
            && !crate::saga::CRASH_POINTS.contains(&point.as_str())
        {
            return Err(ConfigError::invalid(
                "saga.crash_at",
                format!("must be one of {}", crate::saga::CRASH_POINTS.join(", ")),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The token settings the order service signs with: the configured ones,
    /// or in development mode, with no private key given and the development
    /// public key in use, the development private key.
    pub fn auth(&self) -> AuthConfig {
        let mut auth = self.base.auth.clone();
        if self.base.dev_mode
            && auth.service_private_key.is_none()
            && auth.service_public_key == DEV_SERVICE_PUBLIC_KEY
        {
            auth.service_private_key = Some(Secret::new(DEV_SERVICE_PRIVATE_KEY));
        }
        auth
    }
}

impl FromLayers for Config {
    fn from_layers(layers: &Layers) -> Result<Self, LayersError> {
        Ok(Self {
            base: BaseConfig::from_layers(layers)?,
            peers: config::block(layers, "peers")?,
            saga: config::block(layers, "saga")?,
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
    fn no_private_key_has_a_default_and_production_must_give_one() {
        let config = Config::default();
        assert!(config.base.auth.service_private_key.is_none());
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("EMPORIUM_AUTH__SERVICE_PRIVATE_KEY"), "{err}");
        // Development mode signs with the development pair.
        let dev = Config {
            base: BaseConfig {
                dev_mode: true,
                ..Config::default().base
            },
            ..Config::default()
        };
        dev.validate().unwrap();
        assert_eq!(
            dev.auth().service_private_key.unwrap().expose(),
            DEV_SERVICE_PRIVATE_KEY
        );
    }
}
