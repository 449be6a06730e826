//! The user service's settings: the common blocks plus the admin bootstrap.

use emporium_common::config::{
    AuthConfig, ConfigError, DatabaseConfig, Secret, ServerConfig, TelemetryConfig, Validate,
};
use serde::{Deserialize, Serialize};

/// Everything the user service reads at start. See the README for the variables.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Ports and request bounds (`EMPORIUM_SERVER__*`).
    pub server: ServerConfig,
    /// The users database (`EMPORIUM_DATABASE__*`).
    pub database: DatabaseConfig,
    /// Logging (`EMPORIUM_TELEMETRY__*`).
    pub telemetry: TelemetryConfig,
    /// Access tokens (`EMPORIUM_AUTH__*`); the same key on every service.
    pub auth: AuthConfig,
    /// Email of an admin created at start if no user has it
    /// (`EMPORIUM_ADMIN_EMAIL`). The only way to get the first admin.
    pub admin_email: Option<String>,
    /// Password for that admin (`EMPORIUM_ADMIN_PASSWORD`); used only when the
    /// admin is created, never to reset an existing user.
    pub admin_password: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerConfig::local(50051, 9091),
            database: DatabaseConfig::sqlite_default("user"),
            telemetry: TelemetryConfig::default(),
            auth: AuthConfig::default(),
            admin_email: None,
            admin_password: None,
        }
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.database.validate()?;
        self.telemetry.validate()?;
        self.auth.validate()?;
        match (&self.admin_email, &self.admin_password) {
            (Some(_), None) => Err(ConfigError::invalid(
                "admin_password",
                "must be set when admin_email is",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                "admin_email",
                "must be set when admin_password is",
            )),
            _ => Ok(()),
        }
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
