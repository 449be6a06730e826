//! Configuration: defaults < optional TOML file < `EMPORIUM_*` environment.
//!
//! Each service has one `Config` struct: the shared [`BaseConfig`] (server,
//! database, telemetry, auth, development mode) plus a block of its own named
//! after it (`payment.claim_lease_ms` is `EMPORIUM_PAYMENT__CLAIM_LEASE_MS`).
//! Nested keys use a double underscore in the environment. A file is read when
//! `--config FILE` or `EMPORIUM_CONFIG` names one. Values are checked at start; a
//! bad one stops the process with one line naming the setting.
//!
//! The environment layer ([`env`]) types each variable by the default it
//! overrides, so a password of digits stays a string; any setting can also be
//! read from a file with the `_FILE` suffix (Docker and Kubernetes secrets).
//!
//! Reading order: [`load`] → [`BaseConfig`] and its blocks ([`ServerConfig`],
//! [`DatabaseConfig`], [`TelemetryConfig`], [`AuthConfig`], [`TlsConfig`]) →
//! [`PeerConfig`] for services that call others.

mod auth;
mod base;
mod database;
pub mod env;
mod peer;
mod server;
mod telemetry;
mod tls;

use std::{cell::Cell, fmt, path::Path};

use figment::{
    Figment,
    providers::{Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize};

/// The merged layers a configuration is read from, and the error of a read.
pub use figment::Figment as Layers;
/// A bad value found while reading the layers (boxed: figment's error is large).
pub type LayersError = Box<figment::Error>;

pub use auth::{
    AuthConfig, DEV_JWT_SECRET, DEV_SERVICE_PRIVATE_KEY, DEV_SERVICE_PUBLIC_KEY, PreviousKey,
};
pub use base::BaseConfig;
pub use database::DatabaseConfig;
pub use peer::PeerConfig;
pub use server::ServerConfig;
pub use telemetry::{LogFormat, TelemetryConfig};
pub use tls::{PeerTlsConfig, TlsConfig};

/// A configuration error, printed as one line that names the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value could not be read or has the wrong type.
    #[error("invalid configuration: {0}")]
    Load(String),
    /// A value was read but is not acceptable.
    #[error("invalid setting `{key}` (env {env}): {reason}")]
    Invalid {
        /// Dotted key, e.g. `auth.jwt_secret`.
        key: String,
        /// The environment variable that sets it.
        env: String,
        /// What is wrong.
        reason: String,
    },
    /// A variable that no longer exists under this name.
    #[error("{old} was renamed: set {new} instead")]
    Renamed {
        /// The old variable, still set.
        old: &'static str,
        /// What it is called now.
        new: &'static str,
    },
}

impl ConfigError {
    /// An invalid value for the dotted `key`.
    pub fn invalid(key: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            env: env_name(key),
            reason: reason.into(),
        }
    }
}

/// The environment variable that sets a dotted key.
pub fn env_name(key: &str) -> String {
    format!("EMPORIUM_{}", key.replace('.', "__").to_uppercase())
}

/// How a configuration is read out of the merged layers. A service's `Config`
/// reads [`BaseConfig`] and its own block separately (`extract_inner`), so that
/// figment can name the setting behind any bad value: serde's `flatten`, which
/// the struct uses for printing, would lose that path.
pub trait FromLayers: Sized {
    /// Reads the configuration out of `layers`.
    fn from_layers(layers: &Figment) -> Result<Self, LayersError>;
}

/// Checks values that types alone cannot.
pub trait Validate {
    /// Returns the first bad setting.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// A loaded configuration and what the loader noticed on the way.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The validated configuration.
    pub config: T,
    /// Variables that look like settings of this service but are not (typos),
    /// for the log once it is up.
    pub unknown: Vec<String>,
}

/// Loads a configuration: `defaults` < `file` < `EMPORIUM_*` environment, then
/// validates it.
pub fn load<T>(defaults: T, file: Option<&Path>) -> Result<Loaded<T>, ConfigError>
where
    T: Serialize + FromLayers + Validate,
{
    let layer = env::EnvLayer::read(&defaults, std::env::vars_os())?;
    let mut figment = Figment::from(Serialized::defaults(&defaults));
    if let Some(file) = file {
        if !file.is_file() {
            return Err(ConfigError::Load(format!(
                "config file {} does not exist",
                file.display()
            )));
        }
        figment = figment.merge(Toml::file_exact(file));
    }
    for (key, value) in layer.values {
        figment = figment.merge((key, value));
    }
    let config = T::from_layers(&figment).map_err(|e| one_line(&e))?;
    config.validate()?;
    Ok(Loaded {
        config,
        unknown: layer.unknown,
    })
}

/// One line naming the setting, whatever layer the bad value came from.
fn one_line(e: &figment::Error) -> ConfigError {
    if e.path.is_empty() {
        let mut s = e.to_string();
        if let Some(i) = s.find('\n') {
            s.truncate(i);
        }
        return ConfigError::Load(s);
    }
    ConfigError::invalid(&e.path.join("."), e.kind.to_string())
}

/// Reads the block `key` (a service's own settings) out of `layers`, with
/// errors naming the setting inside it.
pub fn block<T: serde::de::DeserializeOwned>(layers: &Layers, key: &str) -> Result<T, LayersError> {
    layers.extract_inner(key).map_err(|mut e| {
        // figment names the inner key last; the setting is `key.<path>`.
        e.path.retain(|p| p != key);
        e.path.insert(0, key.to_owned());
        Box::new(e)
    })
}

thread_local! {
    static REDACT: Cell<bool> = const { Cell::new(false) };
}

/// The effective configuration as pretty JSON, with every [`Secret`] replaced by
/// `"[redacted]"`.
pub fn redacted_json<T: Serialize>(config: &T) -> String {
    REDACT.with(|r| r.set(true));
    let out = serde_json::to_string_pretty(config);
    REDACT.with(|r| r.set(false));
    out.unwrap_or_else(|e| format!("<unprintable config: {e}>"))
}

/// A value that must never be printed: `Debug` and [`redacted_json`] hide it.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The real value is serialized for figment's defaults layer; only printing
        // asks for redaction.
        if REDACT.with(Cell::get) {
            s.serialize_str("[redacted]")
        } else {
            s.serialize_str(&self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Sample {
        server: ServerConfig,
        auth: AuthConfig,
    }

    impl FromLayers for Sample {
        fn from_layers(layers: &Figment) -> Result<Self, LayersError> {
            Ok(layers.extract()?)
        }
    }

    impl Validate for Sample {
        fn validate(&self) -> Result<(), ConfigError> {
            self.server.validate()?;
            self.auth.validate()
        }
    }

    fn defaults() -> Sample {
        Sample {
            server: ServerConfig::local(50051, 9091),
            auth: AuthConfig::default(),
        }
    }

    #[test]
    fn file_overrides_defaults_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\ngrpc_addr = \"0.0.0.0:6000\"\n").unwrap();
        let c = load(defaults(), Some(&file)).unwrap().config;
        assert_eq!(c.server.grpc_addr.port(), 6000);
        // Keys the file does not mention keep the service's own defaults.
        assert_eq!(c.server.admin_addr.port(), 9091);
    }

    #[test]
    fn bad_value_names_the_setting_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\ngrpc_addr = \"not an address\"\n").unwrap();
        let err = load(defaults(), Some(&file)).unwrap_err().to_string();
        assert!(err.contains("grpc_addr"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        std::fs::write(&file, "[auth]\njwt_secret = \"short\"\n").unwrap();
        let err = load(defaults(), Some(&file)).unwrap_err().to_string();
        assert_eq!(
            err,
            "invalid setting `auth.jwt_secret` (env EMPORIUM_AUTH__JWT_SECRET): must be at least 32 bytes"
        );
    }

    #[test]
    fn printing_redacts_secrets_but_loading_keeps_them() {
        let c = defaults();
        let printed = redacted_json(&c);
        assert!(printed.contains("[redacted]"));
        assert!(!printed.contains(DEV_JWT_SECRET));
        // Serializing for the defaults layer must keep the real value.
        let c = load(c, None).unwrap().config;
        assert_eq!(c.auth.jwt_secret.expose(), DEV_JWT_SECRET);
        assert!(!format!("{c:?}").contains(DEV_JWT_SECRET));
    }
}
