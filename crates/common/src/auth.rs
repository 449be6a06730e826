//! Access tokens: issuing (user service) and verifying (every service), and the
//! verified [`Caller`] that handlers read from request extensions.
//!
//! Tokens are JWTs signed with HMAC-SHA256 (`HS256` only: the algorithm is pinned,
//! so `none` and algorithm switching are refused). Claims: `sub` = user id, `roles`,
//! `iss`, `aud`, `iat`, `nbf`, `exp`, and `kid` in the header.

use std::{collections::HashSet, fmt, sync::Arc};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::AuthConfig;

/// What a caller may do. Carried in tokens as lowercase strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A shopper: sees and changes only their own things.
    Customer,
    /// An operator: may act on anything.
    Admin,
}

impl Role {
    /// The name used in tokens and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Admin => "admin",
        }
    }

    /// Parses a stored or claimed role name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Role::Customer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated caller of a request, put into request extensions by
/// [`crate::layers::AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user the token was issued to.
    pub user_id: Uuid,
    /// The roles in the token.
    pub roles: Vec<Role>,
}

impl Caller {
    /// Whether the caller holds the admin role.
    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// Whether the caller may act on resources owned by `owner`: their own, or
    /// anyone's for an admin.
    pub fn may_act_for(&self, owner: Uuid) -> bool {
        self.is_admin() || self.user_id == owner
    }
}

/// The verified caller of a request; UNAUTHENTICATED when the auth layer put
/// none there (it always does for methods that are not public).
pub fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("missing access token"))
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    roles: Vec<String>,
    iss: String,
    aud: String,
    iat: u64,
    nbf: u64,
    exp: u64,
}

/// Why a token was refused. Callers see only "invalid or expired access token";
/// the reason is for logs.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, claims or expiry did not check out.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The token could not be built.
    #[error("token could not be signed: {0}")]
    Sign(String),
}

/// A signed token and when it expires (seconds since the epoch).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

/// Issues and verifies access tokens. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    key_id: String,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("key_id", &self.inner.key_id)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Builds the signer and verifier from configuration.
    pub fn new(config: &AuthConfig) -> Self {
        let secret = config.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway_secs;
        Self {
            inner: Arc::new(Inner {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                key_id: config.key_id.clone(),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                ttl_secs: config.token_ttl_secs,
            }),
        }
    }

    /// Signs a token for `user_id` with `roles`, valid from now for the configured TTL.
    pub fn issue(&self, user_id: Uuid, roles: &[Role]) -> Result<IssuedToken, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_string(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + self.inner.ttl_secs,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.inner.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.inner.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.inner.decoding, &self.inner.validation)
                .map_err(|e| TokenError::Rejected(e.to_string()))?;
        let user_id = Uuid::parse_str(&data.claims.sub)
            .map_err(|_| TokenError::Rejected("sub is not a uuid".into()))?;
        let mut seen = HashSet::new();
        let mut roles = Vec::new();
        for r in &data.claims.roles {
            let role = Role::parse(r)
                .ok_or_else(|| TokenError::Rejected(format!("unknown role {r:?}")))?;
            if seen.insert(role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(TokenError::Rejected("no roles".into()));
        }
        Ok(Caller { user_id, roles })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn config() -> AuthConfig {
        AuthConfig::default()
    }

    #[test]
    fn issued_token_verifies_to_the_same_caller() {
        let tokens = Tokens::new(&config());
        let id = Uuid::now_v7();
        let t = tokens.issue(id, &[Role::Customer, Role::Admin]).unwrap();
        let caller = tokens.verify(&t.token).unwrap();
        assert_eq!(caller.user_id, id);
        assert!(caller.is_admin());
        assert!(caller.may_act_for(Uuid::now_v7()));
    }

    #[test]
    fn tokens_from_another_key_issuer_or_audience_are_refused() {
        let tokens = Tokens::new(&config());
        let id = Uuid::now_v7();
        let other_key = Tokens::new(&AuthConfig {
            jwt_secret: Secret::new("another-secret-that-is-long-enough-000"),
            ..config()
        });
        let other_iss = Tokens::new(&AuthConfig {
            issuer: "someone-else".into(),
            ..config()
        });
        let other_aud = Tokens::new(&AuthConfig {
            audience: "elsewhere".into(),
            ..config()
        });
        for t in [&other_key, &other_iss, &other_aud] {
            let tok = t.issue(id, &[Role::Customer]).unwrap().token;
            assert!(tokens.verify(&tok).is_err());
        }
        assert!(tokens.verify("not.a.jwt").is_err());
    }

    #[test]
    fn alg_none_is_refused() {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let tokens = Tokens::new(&config());
        let now = jsonwebtoken::get_current_timestamp();
        let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(format!(
            r#"{{"sub":"{}","roles":["admin"],"iss":"emporium-user","aud":"emporium","iat":{now},"nbf":{now},"exp":{}}}"#,
            Uuid::now_v7(),
            now + 60
        ));
        assert!(tokens.verify(&format!("{header}.{claims}.")).is_err());
    }

    #[test]
    fn customer_acts_only_for_themself() {
        let me = Uuid::now_v7();
        let caller = Caller {
            user_id: me,
            roles: vec![Role::Customer],
        };
        assert!(caller.may_act_for(me));
        assert!(!caller.may_act_for(Uuid::now_v7()));
    }
}
