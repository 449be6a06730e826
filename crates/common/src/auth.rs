//! Access tokens: issuing (user service: user tokens; order service: service
//! tokens) and verifying (every service), and the verified [`Caller`] that
//! handlers read from request extensions.
//!
//! - **User tokens**: HS256 with `auth.jwt_secret`, `kid` = `auth.key_id`;
//!   retired keys in `auth.previous_keys` verify until their `accept_until`.
//! - **Service tokens**: EdDSA (Ed25519), signed only by the order service's
//!   private key, verified with the public key; `sub` = `service:<name>` and
//!   `obo` = the end user the call is made for.
//!
//! The algorithm is pinned per key id, so `alg: none` and algorithm switching
//! (an HS256 token under the service kid, say) are refused. `iss`, `aud`, `exp`
//! and `nbf` are required, with `auth.leeway_secs` of clock skew.

use std::{collections::HashMap, fmt, sync::Arc};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::AuthConfig;

/// The service whose tokens the internal RPCs accept.
pub const ORDER_SERVICE: &str = "order";

/// Lifetime of a service token: one saga step's worth, renewed per call.
const SERVICE_TOKEN_TTL_SECS: u64 = 300;

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
/// [`crate::stack::AuthLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The end user: the token's subject, or for a service token the user the
    /// service acts for (kept for ownership checks and auditing).
    pub user_id: Uuid,
    /// The end user's roles (a service acting for a user has the user's rights).
    pub roles: Vec<Role>,
    /// The calling service, for a service token (`"order"`).
    pub service: Option<String>,
    /// Over mutual TLS: the service the client certificate names (see
    /// `tls::service_of`; empty when it names none). `None` without mutual TLS.
    pub certificate: Option<String>,
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

    /// Whether the call comes from the named service (with a service token).
    pub fn is_service(&self, name: &str) -> bool {
        self.service.as_deref() == Some(name)
    }

    /// The gate of the saga's internal RPCs (ReserveStock, Charge, Refund, …):
    /// only the order service, acting for a user, may call them; anyone else,
    /// admins included, gets the refusal message for PERMISSION_DENIED.
    /// Over mutual TLS the client certificate must be the order service's too:
    /// a token that leaked to another service cannot be replayed from there.
    pub fn ensure_order_service(&self) -> Result<(), &'static str> {
        if !self.is_service(ORDER_SERVICE) {
            return Err("only the order service may call this method");
        }
        match self.certificate.as_deref() {
            None | Some(ORDER_SERVICE) => Ok(()),
            Some(_) => Err("only the order service's certificate may call this method"),
        }
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
    /// On behalf of: the end user a service token acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    obo: Option<String>,
}

/// Why a token was refused. Callers see only "invalid or expired access token";
/// the reason is for logs.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Signature, algorithm, key id, claims or expiry did not check out.
    #[error("token rejected: {0}")]
    Rejected(String),
    /// The token could not be built (or this service has no key to build it).
    #[error("token could not be signed: {0}")]
    Sign(String),
    /// A configured key does not parse.
    #[error("invalid key: {0}")]
    Key(String),
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

struct UserKey {
    decoding: DecodingKey,
    /// `None` for the current key.
    accept_until: Option<u64>,
}

struct Inner {
    encoding: EncodingKey,
    key_id: String,
    user_keys: HashMap<String, UserKey>,
    user_validation: Validation,
    service_key_id: String,
    service_decoding: DecodingKey,
    service_encoding: Option<EncodingKey>,
    service_validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: u64,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("key_id", &self.inner.key_id)
            .field("service_key_id", &self.inner.service_key_id)
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .finish_non_exhaustive()
    }
}

fn validation(alg: Algorithm, config: &AuthConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.set_issuer(&[&config.issuer]);
    v.set_audience(&[&config.audience]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    v.leeway = config.leeway_secs;
    v
}

impl Tokens {
    /// Builds the signers and verifiers from (validated) configuration.
    pub fn new(config: &AuthConfig) -> Result<Self, TokenError> {
        let secret = config.jwt_secret.expose().as_bytes();
        let mut user_keys = HashMap::new();
        user_keys.insert(
            config.key_id.clone(),
            UserKey {
                decoding: DecodingKey::from_secret(secret),
                accept_until: None,
            },
        );
        for k in &config.previous_keys {
            user_keys.insert(
                k.key_id.clone(),
                UserKey {
                    decoding: DecodingKey::from_secret(k.secret.expose().as_bytes()),
                    accept_until: Some(k.accept_until),
                },
            );
        }
        let service_decoding = DecodingKey::from_ed_pem(config.service_public_key.as_bytes())
            .map_err(|e| TokenError::Key(format!("auth.service_public_key: {e}")))?;
        let service_encoding = match &config.service_private_key {
            Some(pem) => Some(
                EncodingKey::from_ed_pem(pem.expose().as_bytes())
                    .map_err(|e| TokenError::Key(format!("auth.service_private_key: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                encoding: EncodingKey::from_secret(secret),
                key_id: config.key_id.clone(),
                user_keys,
                user_validation: validation(Algorithm::HS256, config),
                service_key_id: config.service_key_id.clone(),
                service_decoding,
                service_encoding,
                service_validation: validation(Algorithm::EdDSA, config),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                ttl_secs: config.token_ttl_secs,
            }),
        })
    }

    fn claims(&self, sub: String, roles: &[Role], ttl: u64, obo: Option<Uuid>) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub,
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + ttl,
            obo: obo.map(|u| u.to_string()),
        }
    }

    /// Signs a user token for `user_id` with `roles`, valid from now for the
    /// configured TTL.
    pub fn issue(&self, user_id: Uuid, roles: &[Role]) -> Result<IssuedToken, TokenError> {
        let claims = self.claims(user_id.to_string(), roles, self.inner.ttl_secs, None);
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.inner.key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, &self.inner.encoding)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Signs a service token: `service` calling on behalf of `user_id` with the
    /// user's `roles`. Only a service configured with the private key can.
    pub fn issue_service(
        &self,
        service: &str,
        user_id: Uuid,
        roles: &[Role],
    ) -> Result<IssuedToken, TokenError> {
        let key = self
            .inner
            .service_encoding
            .as_ref()
            .ok_or_else(|| TokenError::Sign("no auth.service_private_key configured".into()))?;
        let claims = self.claims(
            format!("service:{service}"),
            roles,
            SERVICE_TOKEN_TTL_SECS,
            Some(user_id),
        );
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.inner.service_key_id.clone());
        let token = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let reject = |m: &str| TokenError::Rejected(m.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|e| reject(&e.to_string()))?;
        let kid = header.kid.ok_or_else(|| reject("no kid"))?;
        let (claims, service) = if kid == self.inner.service_key_id {
            let data = jsonwebtoken::decode::<Claims>(
                token,
                &self.inner.service_decoding,
                &self.inner.service_validation,
            )
            .map_err(|e| reject(&e.to_string()))?;
            let name = data
                .claims
                .sub
                .strip_prefix("service:")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| reject("service token without a service subject"))?
                .to_owned();
            (data.claims, Some(name))
        } else {
            let key = self
                .inner
                .user_keys
                .get(&kid)
                .ok_or_else(|| reject("unknown kid"))?;
            if key
                .accept_until
                .is_some_and(|until| jsonwebtoken::get_current_timestamp() > until)
            {
                return Err(reject("key retired"));
            }
            let data =
                jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.inner.user_validation)
                    .map_err(|e| reject(&e.to_string()))?;
            if data.claims.obo.is_some() {
                return Err(reject("user token with an on-behalf-of claim"));
            }
            (data.claims, None)
        };
        let user = match &service {
            Some(_) => claims
                .obo
                .as_deref()
                .ok_or_else(|| reject("service token without obo"))?,
            None => claims.sub.as_str(),
        };
        let user_id = Uuid::parse_str(user).map_err(|_| reject("user is not a uuid"))?;
        let mut roles = Vec::new();
        for r in &claims.roles {
            let role = Role::parse(r).ok_or_else(|| reject(&format!("unknown role {r:?}")))?;
            if !roles.contains(&role) {
                roles.push(role);
            }
        }
        if roles.is_empty() {
            return Err(reject("no roles"));
        }
        Ok(Caller {
            user_id,
            roles,
            service,
            certificate: None,
        })
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
        let tokens = Tokens::new(&config()).unwrap();
        let id = Uuid::now_v7();
        let t = tokens.issue(id, &[Role::Customer, Role::Admin]).unwrap();
        let caller = tokens.verify(&t.token).unwrap();
        assert_eq!(caller.user_id, id);
        assert!(caller.is_admin());
        assert!(caller.may_act_for(Uuid::now_v7()));
    }

    #[test]
    fn tokens_from_another_key_issuer_or_audience_are_refused() {
        let tokens = Tokens::new(&config()).unwrap();
        let id = Uuid::now_v7();
        let other_key = Tokens::new(&AuthConfig {
            jwt_secret: Secret::new("another-secret-that-is-long-enough-000"),
            ..config()
        })
        .unwrap();
        let other_iss = Tokens::new(&AuthConfig {
            issuer: "someone-else".into(),
            ..config()
        })
        .unwrap();
        let other_aud = Tokens::new(&AuthConfig {
            audience: "elsewhere".into(),
            ..config()
        })
        .unwrap();
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
        let tokens = Tokens::new(&config()).unwrap();
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
            service: None,
            certificate: None,
        };
        assert!(caller.may_act_for(me));
        assert!(!caller.may_act_for(Uuid::now_v7()));
    }

    fn with_service_key() -> AuthConfig {
        AuthConfig {
            service_private_key: Some(Secret::new(crate::config::DEV_SERVICE_PRIVATE_KEY)),
            ..config()
        }
    }

    #[test]
    fn service_tokens_name_the_service_and_the_user() {
        let order = Tokens::new(&with_service_key()).unwrap();
        let verifier = Tokens::new(&config()).unwrap();
        let user = Uuid::now_v7();
        let t = order
            .issue_service("order", user, &[Role::Customer])
            .unwrap();
        let caller = verifier.verify(&t.token).unwrap();
        assert_eq!(caller.user_id, user);
        assert!(caller.is_service("order"));
        assert!(!caller.is_admin());
        // A service without the private key cannot mint one.
        assert!(
            verifier
                .issue_service("order", user, &[Role::Customer])
                .is_err()
        );
        // User tokens are never service tokens.
        let t = verifier.issue(user, &[Role::Admin]).unwrap();
        assert_eq!(verifier.verify(&t.token).unwrap().service, None);
    }

    #[test]
    fn an_hs256_token_under_the_service_kid_is_refused() {
        // Algorithm switching: sign with the (public) HMAC secret but claim the
        // service key id.
        let cfg = config();
        let tokens = Tokens::new(&cfg).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "service:order".into(),
            roles: vec!["customer".into()],
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + 60,
            obo: Some(Uuid::now_v7().to_string()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(cfg.service_key_id.clone());
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(cfg.jwt_secret.expose().as_bytes()),
        )
        .unwrap();
        assert!(tokens.verify(&forged).is_err());
    }

    #[test]
    fn rotated_keys_verify_until_their_deadline() {
        let old = AuthConfig {
            jwt_secret: Secret::new("the-old-secret-0123456789abcdefghij"),
            key_id: "k1".into(),
            ..config()
        };
        let old_token = Tokens::new(&old)
            .unwrap()
            .issue(Uuid::now_v7(), &[Role::Customer])
            .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let rotated = |accept_until| AuthConfig {
            key_id: "k2".into(),
            previous_keys: vec![crate::config::PreviousKey {
                key_id: "k1".into(),
                secret: old.jwt_secret.clone(),
                accept_until,
            }],
            ..config()
        };
        let during = Tokens::new(&rotated(now + 600)).unwrap();
        assert!(during.verify(&old_token.token).is_ok());
        let new_token = during.issue(Uuid::now_v7(), &[Role::Customer]).unwrap();
        assert!(during.verify(&new_token.token).is_ok());
        let after = Tokens::new(&rotated(now - 1)).unwrap();
        assert!(after.verify(&old_token.token).is_err());
        // Without the old key listed at all, the old token is an unknown kid.
        assert!(
            Tokens::new(&config())
                .unwrap()
                .verify(&old_token.token)
                .is_err()
        );
    }
}
