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
    /// One per hash running on the blocking pool, held until the hash is done,
    /// even if the request that asked for it went away meanwhile.
    permits: Arc<Semaphore>,
    /// One per hash running or waiting: past it, callers are refused at once
    /// (RESOURCE_EXHAUSTED) rather than queued without bound.
    admitted: Arc<Semaphore>,
    /// A real hash of a random password, verified against when the email is
    /// unknown so that both answers take the same time.
    dummy_hash: Arc<str>,
}

impl Hasher {
    /// A hasher running as many hashes at once as there are CPUs, with up to
    /// [`QUEUED_PER_CPU`] more waiting per CPU.
    pub fn new() -> Result<Self, Error> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_limits(cpus, cpus * (1 + QUEUED_PER_CPU))
    }

    /// At most `running` hashes at once, `admitted` running or waiting.
    pub fn with_limits(running: usize, admitted: usize) -> Result<Self, Error> {
        let dummy = uuid::Uuid::new_v4().to_string();
        let dummy_hash = hash_blocking(&dummy)?;
        Ok(Self {
            permits: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(admitted.max(running))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Runs `work` on the blocking pool once a permit is free. The permits move
    /// into the blocking task: dropping the returned future (a cancelled
    /// request) does not free them while the 19 MiB hash still runs.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Error> {
        let admitted = self
            .admitted
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy("too many sign-ins at once, retry shortly"))?;
        let running = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop((running, admitted));
            out
        })
        .await
        .map_err(|e| Error::Internal(InternalError::caused_by(what, e)))
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        self.run("the hash task failed", move || hash_blocking(&password))
            .await?
    }

    /// Whether `password` matches `hash`. With `hash = None` (unknown email) it
    /// does the same work against a dummy hash and answers `false`.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.to_owned();
        let ok = self
            .run("the verify task failed", move || {
                PasswordVerifier::<str>::verify_password(
                    &Argon2::default(),
                    password.as_bytes(),
                    &hash,
                )
                .is_ok()
            })
            .await?;
        Ok(known && ok)
    }
}

/// Hashes that may wait for a CPU, per CPU, before callers are refused.
pub const QUEUED_PER_CPU: usize = 4;

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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_hash_keeps_its_permit_until_it_is_done() {
        let h = Hasher::with_limits(1, 2).unwrap();
        // The caller gives up 1 ms in: the 19 MiB hash is running by then.
        let gave_up =
            tokio::time::timeout(std::time::Duration::from_millis(1), h.hash("correct horse"))
                .await;
        assert!(gave_up.is_err(), "a hash takes longer than 1 ms");
        assert_eq!(
            h.permits.available_permits(),
            0,
            "the abandoned hash still runs, so its permit is still taken"
        );
        // The next caller waits for it, then runs.
        h.hash("next").await.unwrap();
        assert_eq!(h.permits.available_permits(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_queue_callers_are_refused_at_once() {
        let h = Hasher::with_limits(1, 2).unwrap();
        let (a, b, c) = tokio::join!(h.hash("a"), h.hash("b"), h.hash("c"));
        let refused = [&a, &b, &c]
            .iter()
            .filter(|r| matches!(r, Err(Error::Busy(_))))
            .count();
        assert_eq!(refused, 1, "{a:?} {b:?} {c:?}");
    }

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
