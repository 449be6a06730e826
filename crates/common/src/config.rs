//! Configuration: defaults < optional TOML file < `EMPORIUM_*` environment.
//!
//! Each service has one `Config` struct built from the blocks here. Nested keys
//! use a double underscore in the environment: `server.grpc_addr` is
//! `EMPORIUM_SERVER__GRPC_ADDR`. A file is read when `--config FILE` or
//! `EMPORIUM_CONFIG` names one. Values are checked at start; a bad one stops the
//! process with one line naming the setting.

use std::{cell::Cell, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::tls::TlsConfig;

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

/// Checks values that types alone cannot.
pub trait Validate {
    /// Returns the first bad setting.
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Command-line arguments every service binary understands.
#[derive(Debug, Default, Clone)]
pub struct Args {
    /// `--config FILE`: a TOML file between the defaults and the environment.
    pub config_file: Option<PathBuf>,
    /// `--print-config`: print the effective configuration (secrets redacted) and exit.
    pub print_config: bool,
    /// `--help`.
    pub help: bool,
}

impl Args {
    /// Parses the process arguments.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::parse(std::env::args().skip(1))
    }

    /// Parses the given arguments (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, ConfigError> {
        let mut out = Args::default();
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--config" => {
                    let file = it
                        .next()
                        .ok_or_else(|| ConfigError::Load("--config needs a file".into()))?;
                    out.config_file = Some(file.into());
                }
                "--print-config" => out.print_config = true,
                "-h" | "--help" => out.help = true,
                other => {
                    return Err(ConfigError::Load(format!(
                        "unknown argument `{other}` (try --help)"
                    )));
                }
            }
        }
        Ok(out)
    }

    /// The usage text for a service binary.
    pub fn usage(binary: &str) -> String {
        format!(
            "usage: {binary} [--config FILE] [--print-config]\n\n\
             Settings come from defaults, then FILE (or $EMPORIUM_CONFIG), then EMPORIUM_* \
             variables\n(nested keys joined by `__`, e.g. EMPORIUM_SERVER__GRPC_ADDR). \
             --print-config shows them all."
        )
    }
}

/// Loads a service's configuration: `defaults` < file < `EMPORIUM_*` environment,
/// then validates it.
pub fn load<T>(defaults: T, args: &Args) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Validate,
{
    let file = args
        .config_file
        .clone()
        .or_else(|| std::env::var_os("EMPORIUM_CONFIG").map(PathBuf::from));
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
    // Only known keys are taken from the environment, so unrelated EMPORIUM_*
    // variables (test switches, the config path itself) never collide.
    figment = figment.merge(Env::prefixed("EMPORIUM_").split("__").ignore(&["config"]));
    let config: T = figment
        .extract()
        .map_err(|e| ConfigError::Load(one_line(&e)))?;
    config.validate()?;
    Ok(config)
}

fn one_line(e: &figment::Error) -> String {
    // figment's Display already names the key and the source; keep only the first
    // error so the process dies with exactly one line.
    let mut s = e.to_string();
    if let Some(i) = s.find('\n') {
        s.truncate(i);
    }
    if let Some(path) = e.path.first() {
        let key = e.path.join(".");
        if !s.contains(path.as_str()) {
            s = format!("{s} (setting `{key}`, env {})", env_name(&key));
        }
    }
    s
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

/// The gRPC and admin listeners and how requests are bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Address of the gRPC port (the API, `grpc.health.v1.Health`, reflection).
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP port (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// Longest a request may run when the client sends no `grpc-timeout`, in
    /// milliseconds; a shorter client deadline always wins.
    pub request_timeout_ms: u64,
    /// After SIGTERM/SIGINT: how long health reports NOT_SERVING while new calls are
    /// still accepted, so load balancers stop routing here first (milliseconds).
    pub drain_delay_ms: u64,
    /// After the drain delay: how long in-flight calls get to finish before the
    /// process exits anyway (milliseconds).
    pub shutdown_grace_ms: u64,
    /// Most requests handled at once across all connections; the excess is refused
    /// with RESOURCE_EXHAUSTED instead of queueing.
    pub max_in_flight: usize,
    /// Most concurrent HTTP/2 streams one client connection may open.
    pub max_concurrent_streams: u32,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Requests per second each caller (a user, or an address for calls without
    /// a token) may make, refilled continuously; the excess gets
    /// RESOURCE_EXHAUSTED with a retry delay. 0 turns the limit off. Calls from
    /// peer services are not limited here (the order service bounds its own).
    pub rate_limit_per_sec: u32,
    /// How many requests a caller may make at once above that rate (bucket size).
    pub rate_limit_burst: u32,
    /// Testing aid: a response whose status message contains internals (SQL,
    /// paths, panic text, tokens; see `error::LEAK_MARKERS`) aborts its
    /// connection and logs an error. The test harness turns it on, so every
    /// error of every test is scanned. Off in production.
    #[serde(default)]
    pub leak_guard: bool,
    /// TLS on the gRPC port (off by default; see [`crate::tls`]).
    #[serde(default)]
    pub tls: TlsConfig,
}

impl ServerConfig {
    /// Defaults for a service on the given local ports.
    pub fn local(grpc_port: u16, admin_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            request_timeout_ms: 10_000,
            drain_delay_ms: 1_000,
            shutdown_grace_ms: 20_000,
            max_in_flight: 1_024,
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            leak_guard: false,
            tls: TlsConfig::default(),
        }
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Self::drain_delay_ms`] as a duration.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

impl Validate for ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be > 0",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid("server.max_in_flight", "must be > 0"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "server.max_concurrent_streams",
                "must be > 0",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(ConfigError::invalid(
                "server.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::invalid(
                "server.rate_limit_burst",
                "must be > 0 when server.rate_limit_per_sec is",
            ));
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin_addr",
                "must differ from server.grpc_addr",
            ));
        }
        self.tls.validate()
    }
}

/// Where a service keeps its data.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (created if missing) or `postgres://USER:PASSWORD@HOST/DB`.
    pub url: Secret,
    /// Most connections in the pool (SQLite always writes through one of them).
    pub max_connections: u32,
    /// How long a query waits for a free connection before the call fails with
    /// UNAVAILABLE, in milliseconds.
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    /// Defaults: a SQLite file under `data/`.
    pub fn sqlite_default(service: &str) -> Self {
        Self {
            url: Secret::new(format!("sqlite://data/{service}.db")),
            max_connections: 8,
            acquire_timeout_ms: 3_000,
        }
    }
}

impl Validate for DatabaseConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.url.expose();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be > 0",
            ));
        }
        if self.acquire_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "database.acquire_timeout_ms",
                "must be > 0",
            ));
        }
        Ok(())
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    Pretty,
    /// One JSON object per line, for collectors.
    Json,
}

/// Logging settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TelemetryConfig {
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// A `RUST_LOG`-style filter, e.g. `info,emporium_user=debug`. `RUST_LOG`, when
    /// set, wins.
    pub log_filter: String,
    /// One INFO line per RPC (method, code, duration). Off removes the only
    /// per-request INFO line.
    pub access_log: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_filter: "info".into(),
            access_log: true,
        }
    }
}

impl Validate for TelemetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.log_filter)
            .map(|_| ())
            .map_err(|e| ConfigError::invalid("telemetry.log_filter", e.to_string()))
    }
}

/// The development signing secret. Services warn at start when they run with it.
pub const DEV_JWT_SECRET: &str = "emporium-dev-secret-do-not-use-in-production";

/// The development service-token key pair (Ed25519). Public on purpose: it only
/// exists so `make run` works with nothing to set up; services warn while the
/// private half is in use.
pub const DEV_SERVICE_PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGztA7eE2YL5XrUXFGP9OTLhhbOfjehhcMHvismvWvt7
-----END PRIVATE KEY-----
";
/// See [`DEV_SERVICE_PRIVATE_KEY`].
pub const DEV_SERVICE_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAnPz8wFOfn35t8IBQs6M7wRDheupuBIhHXxjJCYaz4d8=
-----END PUBLIC KEY-----
";

/// A retired user-token key, still accepted until `accept_until` so tokens
/// issued before a rotation keep working until they expire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreviousKey {
    /// The `kid` tokens signed with it carry.
    pub key_id: String,
    /// The retired HMAC key.
    pub secret: Secret,
    /// Unix time (seconds) after which it is refused; set it to the rotation
    /// time plus the token TTL.
    pub accept_until: u64,
}

/// Access-token settings, the same on every service.
///
/// Two kinds of token: **user tokens** (HS256 with `jwt_secret`, issued by the
/// user service's Authenticate) and **service tokens** (EdDSA, signed by the order
/// service with `service_private_key` and verified by everyone with
/// `service_public_key`), which the order service uses for the internal RPCs on
/// behalf of an order's user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthConfig {
    /// HMAC-SHA256 key that signs and verifies user tokens; at least 32 bytes.
    /// Every service needs the same value. The default is for development only.
    pub jwt_secret: Secret,
    /// Key id written into each user token's header (`kid`).
    pub key_id: String,
    /// Retired user-token keys still accepted for a while (key rotation), e.g.
    /// `EMPORIUM_AUTH__PREVIOUS_KEYS='[{key_id="k1",secret="…",accept_until=1767225600}]'`.
    pub previous_keys: Vec<PreviousKey>,
    /// Ed25519 public key (PEM) that verifies service tokens.
    pub service_public_key: String,
    /// Ed25519 private key (PEM) this service signs service tokens with; only the
    /// order service has one.
    pub service_private_key: Option<Secret>,
    /// Key id of service tokens.
    pub service_key_id: String,
    /// `iss` claim written and required.
    pub issuer: String,
    /// `aud` claim written and required.
    pub audience: String,
    /// Lifetime of an issued user token, in seconds.
    pub token_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::new(DEV_JWT_SECRET),
            key_id: "dev".into(),
            previous_keys: Vec::new(),
            service_public_key: DEV_SERVICE_PUBLIC_KEY.into(),
            service_private_key: None,
            service_key_id: "svc-dev".into(),
            issuer: "emporium-user".into(),
            audience: "emporium".into(),
            token_ttl_secs: 3_600,
            leeway_secs: 30,
        }
    }
}

impl Validate for AuthConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret.expose().len() < 32 {
            return Err(ConfigError::invalid(
                "auth.jwt_secret",
                "must be at least 32 bytes",
            ));
        }
        if self.key_id.is_empty() {
            return Err(ConfigError::invalid("auth.key_id", "must not be empty"));
        }
        for (i, k) in self.previous_keys.iter().enumerate() {
            let key = format!("auth.previous_keys[{i}]");
            if k.secret.expose().len() < 32 {
                return Err(ConfigError::invalid(
                    &key,
                    "secret must be at least 32 bytes",
                ));
            }
            if k.key_id.is_empty() || k.key_id == self.key_id || k.key_id == self.service_key_id {
                return Err(ConfigError::invalid(
                    &key,
                    "key_id must be set and differ from auth.key_id and auth.service_key_id",
                ));
            }
        }
        if self.service_key_id.is_empty() || self.service_key_id == self.key_id {
            return Err(ConfigError::invalid(
                "auth.service_key_id",
                "must be set and differ from auth.key_id",
            ));
        }
        if jsonwebtoken::DecodingKey::from_ed_pem(self.service_public_key.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                "auth.service_public_key",
                "must be an Ed25519 public key in PEM form",
            ));
        }
        if let Some(private) = &self.service_private_key
            && jsonwebtoken::EncodingKey::from_ed_pem(private.expose().as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(
                "auth.service_private_key",
                "must be an Ed25519 private key in PEM (PKCS#8) form",
            ));
        }
        if self.issuer.is_empty() {
            return Err(ConfigError::invalid("auth.issuer", "must not be empty"));
        }
        if self.audience.is_empty() {
            return Err(ConfigError::invalid("auth.audience", "must not be empty"));
        }
        if !(60..=86_400).contains(&self.token_ttl_secs) {
            return Err(ConfigError::invalid(
                "auth.token_ttl_secs",
                "must be between 60 and 86400",
            ));
        }
        if self.leeway_secs > 300 {
            return Err(ConfigError::invalid("auth.leeway_secs", "must be <= 300"));
        }
        Ok(())
    }
}

/// Logs a warning when the development signing secret is in use.
pub fn warn_if_dev_secret(auth: &AuthConfig) {
    if auth.jwt_secret.expose() == DEV_JWT_SECRET {
        tracing::warn!(
            "auth.jwt_secret is the development default: anyone can mint tokens; \
             set EMPORIUM_AUTH__JWT_SECRET outside development"
        );
    }
    if auth.service_public_key == DEV_SERVICE_PUBLIC_KEY {
        tracing::warn!(
            "auth.service_public_key is the development key pair, whose private half is public; \
             set EMPORIUM_AUTH__SERVICE_PUBLIC_KEY (and the order service's \
             EMPORIUM_AUTH__SERVICE_PRIVATE_KEY) outside development"
        );
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
        let args = Args {
            config_file: Some(file),
            ..Args::default()
        };
        let c = load(defaults(), &args).unwrap();
        assert_eq!(c.server.grpc_addr.port(), 6000);
        // Keys the file does not mention keep the service's own defaults.
        assert_eq!(c.server.admin_addr.port(), 9091);
    }

    #[test]
    fn bad_value_names_the_setting_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[server]\ngrpc_addr = \"not an address\"\n").unwrap();
        let args = Args {
            config_file: Some(file),
            ..Args::default()
        };
        let err = load(defaults(), &args).unwrap_err().to_string();
        assert!(err.contains("grpc_addr"), "{err}");
        assert!(!err.contains('\n'), "{err}");

        std::fs::write(
            dir.path().join("c.toml"),
            "[auth]\njwt_secret = \"short\"\n",
        )
        .unwrap();
        let err = load(defaults(), &args).unwrap_err().to_string();
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
        let c = load(c, &Args::default()).unwrap();
        assert_eq!(c.auth.jwt_secret.expose(), DEV_JWT_SECRET);
        assert!(!format!("{c:?}").contains(DEV_JWT_SECRET));
    }

    #[test]
    fn args_parse() {
        let a = Args::parse(["--config".into(), "x.toml".into(), "--print-config".into()]).unwrap();
        assert_eq!(a.config_file.unwrap(), PathBuf::from("x.toml"));
        assert!(a.print_config);
        assert!(Args::parse(["--bogus".into()]).is_err());
    }
}
