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

impl BaseConfig {
    /// Production refuses the built-in development keys: `Err` names the first
    /// setting that still holds one, in one line, unless development mode was
    /// asked for. With development mode on, the keys in use are returned so
    /// the caller can say so at start.
    pub fn check_development_keys(&self) -> Result<Vec<&'static str>, ConfigError> {
        let found = self.auth.development_keys();
        match found.first() {
            Some((key, provide)) if !self.dev_mode => Err(ConfigError::Invalid {
                key: (*key).to_owned(),
                env: super::env_name(key),
                reason: format!(
                    "is the built-in development key, which anyone can read: provide {provide} \
                     (or set EMPORIUM_DEV_MODE=true, for development only)"
                ),
            }),
            _ => Ok(found.into_iter().map(|(key, _)| key).collect()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEV_SERVICE_PRIVATE_KEY, Secret};

    #[test]
    fn production_refuses_every_development_key_and_names_the_setting() {
        let mut base = BaseConfig::local("inventory", 0, 0);
        let err = base.check_development_keys().unwrap_err().to_string();
        assert!(
            err.starts_with("invalid setting `auth.jwt_secret` (env EMPORIUM_AUTH__JWT_SECRET): is the built-in development key"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        // Only the user secret replaced: the public service key is still the
        // development one (the hole an operator who sets one variable leaves).
        base.auth.jwt_secret = Secret::new("a-real-secret-of-at-least-32-bytes-0123");
        let err = base.check_development_keys().unwrap_err().to_string();
        assert!(err.contains("EMPORIUM_AUTH__SERVICE_PUBLIC_KEY"), "{err}");
        base.auth.service_public_key =
            "-----BEGIN PUBLIC KEY-----\nreal\n-----END PUBLIC KEY-----\n".into();
        base.auth.service_private_key = Some(Secret::new(DEV_SERVICE_PRIVATE_KEY));
        let err = base.check_development_keys().unwrap_err().to_string();
        assert!(err.contains("EMPORIUM_AUTH__SERVICE_PRIVATE_KEY"), "{err}");
        base.auth.service_private_key = None;
        assert_eq!(base.check_development_keys().unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn development_mode_allows_them_and_says_which() {
        let base = BaseConfig {
            dev_mode: true,
            ..BaseConfig::local("order", 0, 0)
        };
        assert_eq!(
            base.check_development_keys().unwrap(),
            ["auth.jwt_secret", "auth.service_public_key"]
        );
    }
}
