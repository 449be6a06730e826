//! Password hashing with argon2id, off the async threads.
//!
//! Parameters are argon2's defaults, which follow OWASP's recommendation for
//! argon2id: 19 MiB of memory, 2 passes, 1 lane. Hashes are stored in PHC string
//! form, so raising the parameters later still verifies old hashes.
//!
//! Hashing is CPU- and memory-heavy by design; a semaphore bounds how many run at
//! once so a burst of sign-ins cannot exhaust memory or starve the blocking pool.

use std::sync::Arc;

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier};
use emporium_common::status::InternalError;
use tokio::sync::Semaphore;

use crate::error::Error;

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the email is
    /// unknown so that both answers take the same time.
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// A hasher allowing as many concurrent hashes as there are CPUs.
    pub fn new() -> Result<Self, Error> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dummy = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_blocking(&dummy)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(cpus)),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| closed())?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || hash_blocking(&password))
            .await
            .map_err(|e| Error::Internal(InternalError::caused_by("the hash task failed", e)))?
    }

    /// Whether `password` matches `hash`. With `hash = None` (unknown email) it
    /// does the same work against a dummy hash and answers `false`.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let _permit = self.permits.acquire().await.map_err(|_| closed())?;
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            PasswordVerifier::<str>::verify_password(&Argon2::default(), password.as_bytes(), &hash)
                .is_ok()
        })
        .await
        .map_err(|e| Error::Internal(InternalError::caused_by("the verify task failed", e)))?;
        Ok(known && ok)
    }
}

fn closed() -> Error {
    Error::Internal("password hasher closed".into())
}

fn hash_blocking(password: &str) -> Result<String, Error> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| {
            Error::Internal(InternalError::caused_by(
                "argon2 hashing failed",
                e.to_string(),
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_unknown_users_never_match() {
        let h = Hasher::new().unwrap();
        let hash = h.hash("correct horse").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(h.verify("correct horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!h.verify("correct horse", None).await.unwrap());
    }
}
