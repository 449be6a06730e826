//! The `auth` block: the keys that sign and verify access tokens.

use serde::{Deserialize, Serialize};

use super::{ConfigError, Secret, Validate};

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
    /// Lifetime of an issued user token, in seconds: also the longest a
    /// deactivated or demoted user's token keeps working at the services other
    /// than the user service (which checks the account on every call).
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
            token_ttl_secs: 900,
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

impl AuthConfig {
    /// The settings whose value is a built-in development key, which anyone can
    /// read in the source: as `(dotted key, what to provide)`.
    pub fn development_keys(&self) -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        if self.jwt_secret.expose() == DEV_JWT_SECRET {
            found.push(("auth.jwt_secret", "a secret of at least 32 random bytes"));
        }
        if self.service_public_key == DEV_SERVICE_PUBLIC_KEY {
            found.push((
                "auth.service_public_key",
                "the public half of your Ed25519 service key pair (PEM)",
            ));
        }
        if self
            .service_private_key
            .as_ref()
            .is_some_and(|k| k.expose() == DEV_SERVICE_PRIVATE_KEY)
        {
            found.push((
                "auth.service_private_key",
                "the private half of your Ed25519 service key pair (PKCS#8 PEM)",
            ));
        }
        for k in &self.previous_keys {
            if k.secret.expose() == DEV_JWT_SECRET {
                found.push(("auth.previous_keys", "retired keys that were never public"));
            }
        }
        found
    }
}
