//! The TLS blocks: `server.tls` (the gRPC port) and `peers.<peer>.tls` (the
//! channel to a peer). The PEM files are read and checked at start, through
//! [`crate::tls`].
//!
//! Off by default. Two shapes, one switch each:
//!
//! - **mutual TLS** between services: the server presents its certificate *and*
//!   refuses, during the handshake, any client without a certificate signed by
//!   [`TlsConfig::ca_file`] — no call gets through, not even health;
//! - **plain TLS** for external clients ([`TlsConfig::require_client_cert`]
//!   off): the server presents its certificate, clients stay anonymous at this
//!   layer (access tokens still apply).
//!
//! `make certs` (`emporium dev-certs`) writes a development CA and one
//! certificate per service under `certs/`, which is git-ignored and never copied
//! into an image; real deployments mount certificates from their secret store.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use super::{ConfigError, Validate};
use crate::tls::install_crypto_provider;

/// How long a client may take to finish the TLS handshake before the server
/// drops the connection (a silent client would otherwise hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS on this service's gRPC port: the `server.tls` block
/// (`EMPORIUM_SERVER__TLS__ENABLED`, `…__CERT_FILE`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// Serve gRPC over TLS. Off: plaintext HTTP/2, as before.
    pub enabled: bool,
    /// This service's certificate (PEM; the leaf first, then any intermediates).
    /// It is also presented to peers when they ask for a client certificate.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The CA (PEM, one or more certificates) that client certificates must chain
    /// to. Required when `require_client_cert` is on; unused otherwise.
    pub ca_file: Option<PathBuf>,
    /// Mutual TLS: refuse clients without a certificate signed by `ca_file`. On
    /// for ports only other services call; off for a port external clients use
    /// (plain TLS).
    pub require_client_cert: bool,
}

impl Default for TlsConfig {
    /// Off; when switched on, mutual unless told otherwise.
    fn default() -> Self {
        Self {
            enabled: false,
            cert_file: None,
            key_file: None,
            ca_file: None,
            require_client_cert: true,
        }
    }
}

impl TlsConfig {
    /// The dotted key of this block, for error messages.
    const KEY: &'static str = "server.tls";

    /// tonic's server TLS settings: this service's identity, plus the client CA
    /// when client certificates are required. Reads the files now.
    pub fn server_tls_config(&self) -> Result<ServerTlsConfig, ConfigError> {
        let key = Self::KEY;
        let cert = read_certs(&format!("{key}.cert_file"), self.cert_file.as_deref())?;
        let private_key = read_key(&format!("{key}.key_file"), self.key_file.as_deref())?;
        install_crypto_provider();
        let mut tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(cert, private_key))
            .timeout(HANDSHAKE_TIMEOUT);
        if self.require_client_cert {
            if self.ca_file.is_none() {
                return Err(ConfigError::invalid(
                    &format!("{key}.ca_file"),
                    format!(
                        "must be set for mutual TLS ({key}.require_client_cert = false \
                         serves plain TLS)"
                    ),
                ));
            }
            let ca = read_certs(&format!("{key}.ca_file"), self.ca_file.as_deref())?;
            tls = tls.client_ca_root(Certificate::from_pem(ca));
        }
        Ok(tls)
    }
}

impl TlsConfig {
    /// What the `health` subcommand connects with when TLS is on: trusts
    /// `ca_file` and presents this service's own certificate, so a port that
    /// requires client certificates answers the probe too.
    pub fn probe_tls_config(&self) -> Result<ClientTlsConfig, ConfigError> {
        let key = Self::KEY;
        let cert = read_certs(&format!("{key}.cert_file"), self.cert_file.as_deref())?;
        let private_key = read_key(&format!("{key}.key_file"), self.key_file.as_deref())?;
        install_crypto_provider();
        let mut tls = ClientTlsConfig::new().identity(Identity::from_pem(cert, private_key));
        if let Some(ca) = &self.ca_file {
            let ca = read_certs(&format!("{key}.ca_file"), Some(ca))?;
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        Ok(tls)
    }
}

impl Validate for TlsConfig {
    /// When enabled: the files are set, readable and hold what they should.
    fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled {
            self.server_tls_config().map(|_| ())
        } else {
            Ok(())
        }
    }
}

/// TLS on a channel to one peer: the `tls` block of a peer
/// (`EMPORIUM_PEERS__INVENTORY__TLS__ENABLED`, `…__CA_FILE`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerTlsConfig {
    /// Connect over TLS; the peer's URL must then be `https://`.
    pub enabled: bool,
    /// The CA (PEM) the peer's server certificate must chain to. Required when
    /// enabled: no public roots are built in.
    pub ca_file: Option<PathBuf>,
    /// This service's certificate (PEM), presented when the peer requires mutual
    /// TLS. Set together with `key_file`; usually the same file as
    /// `server.tls.cert_file`.
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    pub key_file: Option<PathBuf>,
    /// The name the peer's certificate must carry. Unset: the host of the URL
    /// (a DNS name or an IP address).
    pub server_name: Option<String>,
}

impl PeerTlsConfig {
    /// tonic's client TLS settings for the peer block `key` (e.g.
    /// `peers.inventory.tls`): the CA, this service's identity when one is
    /// configured, and the server name when set. Reads the files now.
    pub fn client_tls_config(&self, key: &str) -> Result<ClientTlsConfig, ConfigError> {
        let ca = read_certs(&format!("{key}.ca_file"), self.ca_file.as_deref())?;
        install_crypto_provider();
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        match (&self.cert_file, &self.key_file) {
            (None, None) => {}
            (Some(cert), Some(private_key)) => {
                let cert = read_certs(&format!("{key}.cert_file"), Some(cert))?;
                let private_key = read_key(&format!("{key}.key_file"), Some(private_key))?;
                tls = tls.identity(Identity::from_pem(cert, private_key));
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    &format!("{key}.cert_file"),
                    format!("{key}.cert_file and {key}.key_file must be set together"),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.as_str()).map_err(|_| {
                ConfigError::invalid(
                    &format!("{key}.server_name"),
                    "must be a DNS name or an IP address",
                )
            })?;
            tls = tls.domain_name(name.clone());
        }
        Ok(tls)
    }

    /// Checks the block `key` for a peer at `url`: TLS on exactly when the URL
    /// is `https://`, and the files readable.
    pub fn validate_as(&self, key: &str, url: &str) -> Result<(), ConfigError> {
        let https = url.starts_with("https://");
        match (self.enabled, https) {
            (true, true) => self.client_tls_config(key).map(|_| ()),
            (false, false) => Ok(()),
            (true, false) => Err(ConfigError::invalid(
                &format!("{key}.enabled"),
                "needs an https:// peer URL",
            )),
            (false, true) => Err(ConfigError::invalid(
                &format!("{key}.enabled"),
                "must be true for an https:// peer URL (and ca_file set)",
            )),
        }
    }
}

/// Reads a PEM file `path` set by `setting` that must hold certificates.
fn read_certs(setting: &str, path: Option<&Path>) -> Result<Vec<u8>, ConfigError> {
    let path = set(setting, path)?;
    crate::tls::read_certs(path).map_err(|reason| invalid_file(setting, path, &reason))
}

/// Reads a PEM file `path` set by `setting` that must hold a private key.
fn read_key(setting: &str, path: Option<&Path>) -> Result<Vec<u8>, ConfigError> {
    let path = set(setting, path)?;
    crate::tls::read_key(path).map_err(|reason| invalid_file(setting, path, &reason))
}

fn set<'p>(setting: &str, path: Option<&'p Path>) -> Result<&'p Path, ConfigError> {
    path.filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| ConfigError::invalid(setting, "must be set when TLS is enabled"))
}

fn invalid_file(setting: &str, path: &Path, reason: &str) -> ConfigError {
    ConfigError::invalid(setting, format!("{}: {reason}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default_and_mutual_once_on() {
        let c = TlsConfig::default();
        assert!(!c.enabled);
        assert!(c.require_client_cert);
        c.validate().unwrap();
        PeerTlsConfig::default()
            .validate_as("peers.user.tls", "http://127.0.0.1:50051")
            .unwrap();
    }

    #[test]
    fn errors_name_the_setting_and_the_file_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let c = TlsConfig {
            enabled: true,
            cert_file: Some(missing.clone()),
            key_file: Some(missing.clone()),
            ..TlsConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.starts_with(
                "invalid setting `server.tls.cert_file` (env EMPORIUM_SERVER__TLS__CERT_FILE): "
            ),
            "{err}"
        );
        assert!(err.contains(&missing.display().to_string()), "{err}");
        assert!(!err.contains('\n'), "{err}");

        let not_pem = dir.path().join("empty.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let c = TlsConfig {
            cert_file: Some(not_pem.clone()),
            ..c
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("no certificate in it"), "{err}");

        let err = TlsConfig {
            enabled: true,
            ..TlsConfig::default()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("`server.tls.cert_file`"), "{err}");
        assert!(err.contains("must be set"), "{err}");
    }

    #[test]
    fn peer_tls_matches_the_url_scheme() {
        let on = PeerTlsConfig {
            enabled: true,
            ..PeerTlsConfig::default()
        };
        let err = on
            .validate_as("peers.user.tls", "http://127.0.0.1:50051")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`peers.user.tls.enabled`"), "{err}");
        assert!(err.contains("EMPORIUM_PEERS__USER__TLS__ENABLED"), "{err}");
        let err = PeerTlsConfig::default()
            .validate_as("peers.user.tls", "https://127.0.0.1:50051")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be true"), "{err}");
        let err = on
            .validate_as("peers.user.tls", "https://127.0.0.1:50051")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`peers.user.tls.ca_file`"), "{err}");
    }
}
