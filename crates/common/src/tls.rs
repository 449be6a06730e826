//! TLS material: the crypto provider and PEM files, for the TLS blocks of the
//! configuration (`config::TlsConfig`, `config::PeerTlsConfig`).
//!
//! Only the aws-lc-rs crypto backend is linked (as for `jsonwebtoken`);
//! [`install_crypto_provider`] makes that choice explicit before the first
//! handshake, so a crate that later pulls in `ring` cannot make rustls panic.

use std::{path::Path, sync::Once};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// The scheme and trust domain of the SPIFFE-style URI a service certificate
/// carries in its subject alternative names: `spiffe://emporium/<service>`.
pub const SERVICE_URI_PREFIX: &str = "spiffe://emporium/";

/// The service a (verified) client certificate names: the `<service>` of its
/// `spiffe://emporium/<service>` URI SAN; `None` when it names none. Only the
/// URI counts, not DNS names: a certificate made for a host is not thereby a
/// service identity.
pub fn service_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    cert.valid_uri_names().find_map(|uri| {
        let name = uri.strip_prefix(SERVICE_URI_PREFIX)?;
        (!name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
            .then(|| name.to_owned())
    })
}

/// Makes aws-lc-rs the process-wide rustls crypto provider. Idempotent; a
/// provider installed earlier by someone else is kept. Called wherever TLS is
/// set up, so services and tests need not remember it.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means a provider is already installed: that one stays.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    });
}

/// The PEM file at `path`, which must hold at least one certificate; the error
/// says what is wrong with it.
pub fn read_certs(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        cert.map_err(|e| format!("bad PEM: {e}"))?;
        count += 1;
    }
    if count == 0 {
        return Err("no certificate in it".into());
    }
    Ok(pem)
}

/// The PEM file at `path`, which must hold a private key.
pub fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| e.to_string())?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("no private key in it ({e})"))?;
    Ok(pem)
}
