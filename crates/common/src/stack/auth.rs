//! Verifies the bearer token and puts the [`Caller`] into request extensions.
//! Health, reflection and the configured public methods need no token; every
//! other call without a valid one is UNAUTHENTICATED, before any work is done.

use std::{collections::HashSet, sync::Arc};

use super::{HttpRequest, gate::Gate};
use crate::auth::{Caller, Tokens};
use tonic::{
    Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    tokens: Tokens,
    public: Arc<HashSet<String>>,
}

impl AuthLayer {
    /// `public` lists full method paths open without a token.
    pub fn new(tokens: Tokens, public: impl IntoIterator<Item = String>) -> Self {
        Self {
            tokens,
            public: Arc::new(public.into_iter().collect()),
        }
    }

    fn is_public(&self, path: &str) -> bool {
        path.starts_with("/grpc.health.v1.Health/")
            || path.starts_with("/grpc.reflection.v1.ServerReflection/")
            || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
            || self.public.contains(path)
    }

    /// The caller of `req`, `None` for an anonymous call to a public method, or
    /// the refusal.
    fn verdict(&self, req: &HttpRequest) -> Result<Option<Caller>, Status> {
        let public = self.is_public(req.uri().path());
        let token = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match token.map(|t| self.tokens.verify(t)) {
            Some(Ok(caller)) => Ok(Some(caller)),
            None if public => Ok(None),
            None => Err(Status::unauthenticated(
                "missing access token: sign in with Authenticate and send the token as `authorization` metadata",
            )),
            // A bad token on a public method is ignored rather than refused, so a
            // stale token never blocks signing in again.
            Some(Err(_)) if public => Ok(None),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "access token rejected");
                Err(Status::unauthenticated("invalid or expired access token"))
            }
        }
    }
}

/// Over mutual TLS, the service the client certificate names (empty when none).
fn client_certificate(req: &HttpRequest) -> Option<String> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()?
        .peer_certs()?;
    let leaf = certs.first()?;
    Some(crate::tls::service_of(leaf).unwrap_or_default())
}

impl Gate for AuthLayer {
    fn admit(&self, req: &mut HttpRequest) -> Result<(), Status> {
        if let Some(mut caller) = self.verdict(req)? {
            caller.certificate = client_certificate(req);
            req.extensions_mut().insert(caller);
        }
        Ok(())
    }
}
