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

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::AuthConfig;

/// The service whose tokens the internal RPCs accept.
pub const ORDER_SERVICE: &str = "order";

/// Longest life a service token may be given: one call's deadline, not a
/// session (they are minted per call).
pub const MAX_SERVICE_TOKEN_TTL: Duration = Duration::from_secs(60);

/// The audience of service tokens meant for the service `name`.
pub fn service_audience(name: &str) -> String {
    format!("emporium-{name}")
}

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
    /// When the token stops being accepted: its `exp` plus `auth.leeway_secs`,
    /// in seconds since the epoch. A call is admitted once, but a stream lives
    /// on: the stream layer ends it then, and each operation of a bidirectional
    /// stream checks it again ([`Self::check_still_valid`]).
    pub valid_until: u64,
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

    /// Whether the token is past [`Self::valid_until`] at `now` (seconds since
    /// the epoch). Verification accepts a token through the second it expires.
    pub fn is_expired_at(&self, now: u64) -> bool {
        now > self.valid_until
    }

    /// UNAUTHENTICATED once the token has expired: what a long-lived stream
    /// asks before each operation it runs for the caller.
    pub fn check_still_valid(&self) -> Result<(), tonic::Status> {
        if self.is_expired_at(jsonwebtoken::get_current_timestamp()) {
            Err(tonic::Status::unauthenticated(EXPIRED_MID_STREAM))
        } else {
            Ok(())
        }
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

/// The message of a stream ended because its caller's token expired.
pub const EXPIRED_MID_STREAM: &str = "access token expired: sign in again and reopen the stream";

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
    /// User tokens only: a service token's rights come from which service it
    /// is and whom it acts for, never from a claim it carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    /// Service tokens: a unique id, so a replay within the token's life is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
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

/// The ids of the service tokens accepted so far, kept until each token has
/// expired (plus the clock leeway), after which a replay fails on `exp` anyway.
#[derive(Debug, Default)]
struct SeenTokens {
    until: HashMap<String, u64>,
    /// Size at which expired ids are next swept out: doubling keeps the sweep's
    /// cost constant per token.
    sweep_at: usize,
}

impl SeenTokens {
    /// Records `jti`; `false` if it was seen and has not expired.
    fn first_use(&mut self, jti: &str, until: u64, now: u64) -> bool {
        if self.until.len() >= self.sweep_at.max(1_024) {
            self.until.retain(|_, u| *u >= now);
            self.sweep_at = self.until.len() * 2;
        }
        match self.until.get(jti) {
            Some(u) if *u >= now => false,
            _ => {
                self.until.insert(jti.to_owned(), until);
                true
            }
        }
    }
}

/// User tokens already verified, by their exact text, with the caller each
/// names. A client sends the same token with every call for its whole life, and
/// checking it again (decoding, an HMAC, the claims parsed twice by
/// `jsonwebtoken`) was a fifth of a GetUser's instructions (callgrind). Only
/// tokens that verified are kept, so a hit is byte-for-byte a token already
/// accepted; its expiry and its key's retirement are checked again on every hit.
#[derive(Debug, Default)]
struct VerifiedTokens {
    callers: HashMap<Box<str>, Verified>,
}

#[derive(Debug)]
struct Verified {
    caller: Caller,
    /// The signing key's retirement ([`UserKey::accept_until`]).
    key_accept_until: Option<u64>,
}

impl VerifiedTokens {
    /// Enough for every token in use on a busy replica; a full cache first
    /// drops the expired, and is emptied when over half its entries are live.
    const MAX: usize = 4_096;

    fn get(&self, token: &str, now: u64) -> Option<Caller> {
        let v = self.callers.get(token)?;
        let live = !v.caller.is_expired_at(now) && v.key_accept_until.is_none_or(|u| now <= u);
        live.then(|| v.caller.clone())
    }

    fn insert(&mut self, token: &str, verified: Verified, now: u64) {
        if self.callers.len() >= Self::MAX {
            self.callers.retain(|_, v| !v.caller.is_expired_at(now));
            if self.callers.len() > Self::MAX / 2 {
                self.callers.clear();
            }
        }
        self.callers.insert(token.into(), verified);
    }
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
    /// The service this process is: only service tokens minted for it (their
    /// `aud`) are accepted. `None` accepts no service token at all.
    this_service: Option<String>,
    /// Ids of service tokens already accepted, with when each may be forgotten.
    seen: Mutex<SeenTokens>,
    /// User tokens already verified.
    verified: Mutex<VerifiedTokens>,
    leeway_secs: u64,
    encoding: EncodingKey,
    key_id: String,
    user_keys: HashMap<String, UserKey>,
    user_validation: Validation,
    service_key_id: String,
    service_decoding: DecodingKey,
    service_signer: Option<ServiceSigner>,
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

/// Signs service tokens (EdDSA JWTs) with a key pair parsed once.
/// `jsonwebtoken::encode` parses the PKCS#8 key and derives its public half
/// for every token, which cost as much as the signature itself: with a token
/// per saga call, a third of the order service's instructions went to tokens
/// (callgrind, create-order). The tokens are the same standard JWS compact
/// form, verified by `jsonwebtoken` as before.
struct ServiceSigner {
    key_pair: aws_lc_rs::signature::Ed25519KeyPair,
    /// `{"typ":"JWT","alg":"EdDSA","kid":…}`, base64url-encoded once.
    header: String,
}

impl ServiceSigner {
    fn new(pem: &str, key_id: &str) -> Result<Self, String> {
        // Parsed the way jsonwebtoken reads an Ed25519 PEM, so the same keys load.
        let der = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
        let key_pair = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(der.as_bytes())
            .map_err(|e| e.to_string())?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key_id.to_owned());
        let header = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
        Ok(Self {
            key_pair,
            header: URL_SAFE_NO_PAD.encode(header),
        })
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let claims = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + claims.len() * 4 / 3 + 100);
        token.push_str(&self.header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let signature = self.key_pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
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
        let service_signer = match &config.service_private_key {
            Some(pem) => Some(
                ServiceSigner::new(pem.expose(), &config.service_key_id)
                    .map_err(|e| TokenError::Key(format!("auth.service_private_key: {e}")))?,
            ),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                this_service: None,
                seen: Mutex::default(),
                verified: Mutex::default(),
                leeway_secs: config.leeway_secs,
                encoding: EncodingKey::from_secret(secret),
                key_id: config.key_id.clone(),
                user_keys,
                user_validation: validation(Algorithm::HS256, config),
                service_key_id: config.service_key_id.clone(),
                service_decoding,
                service_signer,
                service_validation: validation(Algorithm::EdDSA, config),
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                ttl_secs: config.token_ttl_secs,
            }),
        })
    }

    /// The same keys, verifying as the service `name`: service tokens are
    /// accepted only when minted for it.
    pub fn for_service(config: &AuthConfig, name: &str) -> Result<Self, TokenError> {
        let mut tokens = Self::new(config)?;
        let inner = Arc::get_mut(&mut tokens.inner).expect("just built");
        inner.this_service = Some(name.to_owned());
        Ok(tokens)
    }

    fn claims(&self, sub: String, roles: &[Role], ttl: u64, obo: Option<Uuid>) -> Claims {
        let now = jsonwebtoken::get_current_timestamp();
        Claims {
            sub,
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            jti: None,
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

    /// Signs a service token: `service` calling `peer` on behalf of `user_id`,
    /// for one call: `aud` is the peer alone, it carries a unique `jti`, and it
    /// lives `ttl` (the call's deadline; at most [`MAX_SERVICE_TOKEN_TTL`], at
    /// least a second). Only a service configured with the private key can.
    pub fn issue_service(
        &self,
        service: &str,
        peer: &str,
        user_id: Uuid,
        ttl: Duration,
    ) -> Result<IssuedToken, TokenError> {
        let signer = self
            .inner
            .service_signer
            .as_ref()
            .ok_or_else(|| TokenError::Sign("no auth.service_private_key configured".into()))?;
        let ttl = ttl.clamp(Duration::from_secs(1), MAX_SERVICE_TOKEN_TTL);
        let mut claims = self.claims(
            format!("service:{service}"),
            &[],
            ttl.as_secs_f64().ceil() as u64,
            Some(user_id),
        );
        claims.aud = service_audience(peer);
        claims.jti = Some(Uuid::now_v7().to_string());
        let token = signer.sign(&claims)?;
        Ok(IssuedToken {
            token,
            expires_at: claims.exp,
        })
    }

    /// Checks a token and returns the caller it names.
    pub fn verify(&self, token: &str) -> Result<Caller, TokenError> {
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(caller) = self.verified().get(token, now) {
            return Ok(caller);
        }
        let reject = |m: &str| TokenError::Rejected(m.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|e| reject(&e.to_string()))?;
        let kid = header.kid.ok_or_else(|| reject("no kid"))?;
        let (claims, service, key_accept_until) = if kid == self.inner.service_key_id {
            let me = self
                .inner
                .this_service
                .as_deref()
                .ok_or_else(|| reject("this process accepts no service tokens"))?;
            let mut validation = self.inner.service_validation.clone();
            validation.set_audience(&[service_audience(me)]);
            let data =
                jsonwebtoken::decode::<Claims>(token, &self.inner.service_decoding, &validation)
                    .map_err(|e| reject(&e.to_string()))?;
            let name = data
                .claims
                .sub
                .strip_prefix("service:")
                .filter(|n| !n.is_empty())
                .ok_or_else(|| reject("service token without a service subject"))?
                .to_owned();
            let jti = data
                .claims
                .jti
                .as_deref()
                .ok_or_else(|| reject("service token without a jti"))?;
            if !self
                .inner
                .seen
                .lock()
                .expect("seen tokens poisoned")
                .first_use(jti, data.claims.exp + self.inner.leeway_secs, now)
            {
                return Err(reject("service token replayed"));
            }
            (data.claims, Some(name), None)
        } else {
            let key = self
                .inner
                .user_keys
                .get(&kid)
                .ok_or_else(|| reject("unknown kid"))?;
            if key.accept_until.is_some_and(|until| now > until) {
                return Err(reject("key retired"));
            }
            let data =
                jsonwebtoken::decode::<Claims>(token, &key.decoding, &self.inner.user_validation)
                    .map_err(|e| reject(&e.to_string()))?;
            if data.claims.obo.is_some() {
                return Err(reject("user token with an on-behalf-of claim"));
            }
            (data.claims, None, key.accept_until)
        };
        let user = match &service {
            Some(_) => claims
                .obo
                .as_deref()
                .ok_or_else(|| reject("service token without obo"))?,
            None => claims.sub.as_str(),
        };
        let user_id = Uuid::parse_str(user).map_err(|_| reject("user is not a uuid"))?;
        let valid_until = claims.exp.saturating_add(self.inner.leeway_secs);
        if service.is_some() {
            // A service acts with the rights of a customer on the user it names.
            return Ok(Caller {
                user_id,
                roles: vec![Role::Customer],
                service,
                certificate: None,
                valid_until,
            });
        }
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
        let caller = Caller {
            user_id,
            roles,
            service,
            certificate: None,
            valid_until,
        };
        self.verified().insert(
            token,
            Verified {
                caller: caller.clone(),
                key_accept_until,
            },
            now,
        );
        Ok(caller)
    }

    fn verified(&self) -> std::sync::MutexGuard<'_, VerifiedTokens> {
        self.inner
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    fn the_caller_carries_when_its_token_stops_being_accepted() {
        let leeway = AuthConfig {
            leeway_secs: 7,
            token_ttl_secs: 60,
            ..config()
        };
        let tokens = Tokens::new(&leeway).unwrap();
        let t = tokens.issue(Uuid::now_v7(), &[Role::Admin]).unwrap();
        let caller = tokens.verify(&t.token).unwrap();
        assert_eq!(caller.valid_until, t.expires_at + 7);
        assert!(!caller.is_expired_at(t.expires_at + 7));
        assert!(caller.is_expired_at(t.expires_at + 8));
        assert!(caller.check_still_valid().is_ok());
        let expired = Caller {
            valid_until: jsonwebtoken::get_current_timestamp() - 1,
            ..caller
        };
        assert_eq!(
            expired.check_still_valid().unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
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
            valid_until: u64::MAX,
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

    const CALL: Duration = Duration::from_secs(5);

    #[test]
    fn service_tokens_name_the_service_and_the_user() {
        let order = Tokens::new(&with_service_key()).unwrap();
        let inventory = Tokens::for_service(&config(), "inventory").unwrap();
        let user = Uuid::now_v7();
        let t = order
            .issue_service("order", "inventory", user, CALL)
            .unwrap();
        let caller = inventory.verify(&t.token).unwrap();
        assert_eq!(caller.user_id, user);
        assert!(caller.is_service("order"));
        assert!(!caller.is_admin());
        // A service without the private key cannot mint one.
        assert!(
            inventory
                .issue_service("order", "inventory", user, CALL)
                .is_err()
        );
        // User tokens are never service tokens.
        let t = inventory.issue(user, &[Role::Admin]).unwrap();
        assert_eq!(inventory.verify(&t.token).unwrap().service, None);
    }

    #[test]
    fn a_service_token_works_once_for_the_one_peer_it_was_minted_for() {
        let order = Tokens::new(&with_service_key()).unwrap();
        let payment = Tokens::for_service(&config(), "payment").unwrap();
        let inventory = Tokens::for_service(&config(), "inventory").unwrap();
        let user_service = Tokens::for_service(&config(), "user").unwrap();
        let user = Uuid::now_v7();
        let for_inventory = order
            .issue_service("order", "inventory", user, CALL)
            .unwrap()
            .token;
        // Refused by the other peers (whoever receives one cannot replay it to
        // payment's Refund), and by a process that is no service at all.
        assert!(payment.verify(&for_inventory).is_err());
        assert!(user_service.verify(&for_inventory).is_err());
        assert!(
            Tokens::new(&config())
                .unwrap()
                .verify(&for_inventory)
                .is_err()
        );
        // Accepted once by its peer; the same token again is a replay.
        inventory.verify(&for_inventory).unwrap();
        let replay = inventory.verify(&for_inventory).unwrap_err();
        assert!(replay.to_string().contains("replayed"), "{replay}");
        // Each call gets its own.
        let next = order
            .issue_service("order", "inventory", user, CALL)
            .unwrap()
            .token;
        inventory.verify(&next).unwrap();
    }

    #[test]
    fn a_service_token_lives_one_call_and_claims_no_roles() {
        let order = Tokens::new(&with_service_key()).unwrap();
        let t = order
            .issue_service("order", "payment", Uuid::now_v7(), CALL)
            .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        assert!(
            (now + 4..=now + 6).contains(&t.expires_at),
            "{}",
            t.expires_at
        );
        let long = order
            .issue_service(
                "order",
                "payment",
                Uuid::now_v7(),
                Duration::from_secs(3600),
            )
            .unwrap();
        assert!(long.expires_at <= now + MAX_SERVICE_TOKEN_TTL.as_secs() + 1);
        use base64::Engine as _;
        let payload = t.token.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert!(claims.get("roles").is_none(), "{claims}");
        assert_eq!(claims["aud"], "emporium-payment");
        assert!(claims["jti"].is_string());
    }

    #[test]
    fn rights_come_from_the_service_never_from_a_roles_claim() {
        // A token signed with the service key that claims admin (as the
        // development key's holders could forge) is a customer's rights on the
        // user it names.
        let cfg = with_service_key();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "service:order".into(),
            roles: vec!["admin".into()],
            jti: Some(Uuid::now_v7().to_string()),
            iss: cfg.issuer.clone(),
            aud: service_audience("inventory"),
            iat: now,
            nbf: now,
            exp: now + 10,
            obo: Some(Uuid::now_v7().to_string()),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(cfg.service_key_id.clone());
        let key =
            EncodingKey::from_ed_pem(crate::config::DEV_SERVICE_PRIVATE_KEY.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let caller = Tokens::for_service(&cfg, "inventory")
            .unwrap()
            .verify(&token)
            .unwrap();
        assert!(!caller.is_admin());
        assert_eq!(caller.roles, [Role::Customer]);
    }

    #[test]
    fn a_token_forged_with_the_development_key_is_refused_by_a_production_key() {
        let forger = Tokens::new(&with_service_key()).unwrap();
        let forged = forger
            .issue_service("order", "payment", Uuid::now_v7(), CALL)
            .unwrap()
            .token;
        let production = AuthConfig {
            service_public_key: "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAjWqflosjhsXT5i3MlZCNLYgwJVSifjIZLA/wpjztVDI=\n-----END PUBLIC KEY-----\n".into(),
            ..config()
        };
        let payment = Tokens::for_service(&production, "payment").unwrap();
        assert!(payment.verify(&forged).is_err());
    }

    #[test]
    fn an_hs256_token_under_the_service_kid_is_refused() {
        // Algorithm switching: sign with the (public) HMAC secret but claim the
        // service key id.
        let cfg = config();
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "service:order".into(),
            roles: vec!["customer".into()],
            jti: Some(Uuid::now_v7().to_string()),
            iss: cfg.issuer.clone(),
            aud: cfg.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + 60,
            obo: Some(Uuid::now_v7().to_string()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(cfg.service_key_id.clone());
        let tokens = Tokens::for_service(&cfg, "inventory").unwrap();
        let forged = jsonwebtoken::encode(
            &header,
            &claims,
            &EncodingKey::from_secret(cfg.jwt_secret.expose().as_bytes()),
        )
        .unwrap();
        assert!(tokens.verify(&forged).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_tampered_copy_is_still_checked() {
        let tokens = Tokens::new(&config()).unwrap();
        let t = tokens.issue(Uuid::now_v7(), &[Role::Customer]).unwrap();
        let first = tokens.verify(&t.token).unwrap();
        assert_eq!(tokens.verify(&t.token).unwrap(), first);
        // Another subject under the same signature: a different text, so checked.
        let mut parts: Vec<String> = t.token.split('.').map(str::to_owned).collect();
        let claims = URL_SAFE_NO_PAD.decode(&parts[1]).unwrap();
        let forged = String::from_utf8(claims)
            .unwrap()
            .replace(&first.user_id.to_string(), &Uuid::now_v7().to_string());
        parts[1] = URL_SAFE_NO_PAD.encode(forged);
        assert!(tokens.verify(&parts.join(".")).is_err());

        let now = jsonwebtoken::get_current_timestamp();
        let mut cache = VerifiedTokens::default();
        let caller = Caller {
            valid_until: now + 10,
            ..first
        };
        cache.insert(
            "a",
            Verified {
                caller: caller.clone(),
                key_accept_until: None,
            },
            now,
        );
        cache.insert(
            "b",
            Verified {
                caller,
                key_accept_until: Some(now + 5),
            },
            now,
        );
        assert!(cache.get("a", now + 10).is_some());
        assert!(cache.get("a", now + 11).is_none(), "expired");
        assert!(cache.get("b", now + 5).is_some());
        assert!(cache.get("b", now + 6).is_none(), "its key retired");
    }

    #[test]
    fn remembered_tokens_are_bounded() {
        let tokens = Tokens::new(&config()).unwrap();
        let caller = tokens
            .verify(
                &tokens
                    .issue(Uuid::now_v7(), &[Role::Customer])
                    .unwrap()
                    .token,
            )
            .unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let mut cache = VerifiedTokens::default();
        for i in 0..VerifiedTokens::MAX * 3 {
            let live = Caller {
                valid_until: now + 60,
                ..caller.clone()
            };
            let verified = Verified {
                caller: live,
                key_accept_until: None,
            };
            cache.insert(&i.to_string(), verified, now);
            assert!(cache.callers.len() <= VerifiedTokens::MAX);
        }
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
