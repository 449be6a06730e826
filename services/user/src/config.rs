//! The user service's settings: the shared blocks plus its own `user` block.

use emporium_common::{
    binary::ServiceConfig,
    config::{self, BaseConfig, ConfigError, FromLayers, Layers, LayersError, Secret, Validate},
};
use serde::{Deserialize, Serialize};

/// Everything the user service reads at start. See the README for the variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Server, database, telemetry, auth, development mode.
    #[serde(flatten)]
    pub base: BaseConfig,
    /// This service's own settings (`EMPORIUM_USER__*`).
    pub user: UserSettings,
}

/// The `user` block.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UserSettings {
    /// Email of an admin created at start if no user has it
    /// (`EMPORIUM_USER__ADMIN_EMAIL`). The only way to get the first admin.
    pub admin_email: Option<String>,
    /// Password for that admin (`EMPORIUM_USER__ADMIN_PASSWORD`); used only when
    /// the admin is created, never to reset an existing user.
    pub admin_password: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base: BaseConfig::local("user", 50051, 9091),
            user: UserSettings::default(),
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.base.validate()?;
        match (&self.user.admin_email, &self.user.admin_password) {
            (Some(_), None) => Err(ConfigError::invalid(
                "user.admin_password",
                "must be set when user.admin_email is",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "user.admin_email",
                "must be set when user.admin_password is",
            )),
            _ => Ok(()),
        }
    }
}

impl FromLayers for Config {
    fn from_layers(layers: &Layers) -> Result<Self, LayersError> {
        Ok(Self {
            base: BaseConfig::from_layers(layers)?,
            user: config::block(layers, "user")?,
        })
    }
}

impl ServiceConfig for Config {
    fn base(&self) -> &BaseConfig {
        &self.base
    }
}
