//! Password hashing with argon2id, off the async threads.
//!
//! Parameters are argon2's defaults, which follow OWASP's recommendation for
//! argon2id: 19 MiB of memory, 2 passes, 1 lane. Hashes are stored in PHC string
//! form, so raising the parameters later still verifies old hashes.
//!
//! Hashing is CPU- and memory-heavy by design; a semaphore bounds how many run at
//! once so a burst of sign-ins cannot exhaust memory.
//!
//! Hashes run on a few threads of their own, each keeping its 19 MiB of argon2
//! memory from one hash to the next. Letting argon2 allocate it per hash (64-byte
//! aligned) fragments glibc's heap: every hash took new memory and the freed
//! blocks were never reused nor returned, so 16 sign-ins left 171 MB resident
//! and `make bench` saw 224 MB after 64 (`MALLOC_MMAP_THRESHOLD_` set, it stayed
//! at 16 MB, which is how the cause was found). Now it is one buffer per
//! hashing thread, allocated on its first hash: at most `running` × 19 MiB.

use std::sync::{Arc, Mutex, mpsc};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use emporium_common::status::InternalError;
use tokio::sync::Semaphore;

use crate::error::Error;

/// Hashes and verifies passwords.
#[derive(Debug, Clone)]
pub struct Hasher {
    /// The hashing threads' queue; they end when the last clone is dropped.
    jobs: mpsc::Sender<Job>,
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
        // A buffer of its own, freed at once: the threads' buffers are only
        // taken when someone signs up or in.
        let dummy_hash = hash_with(&mut Vec::new(), &dummy)?;
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..running.max(1) {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut memory = Vec::new();
                    loop {
                        // The lock is held only to take the next job.
                        let next = queue.lock().map(|q| q.recv());
                        match next {
                            Ok(Ok(job)) => job(&mut memory),
                            _ => return,
                        }
                    }
                })
                .map_err(|e| {
                    Error::Internal(InternalError::caused_by("start a hashing thread", e))
                })?;
        }
        Ok(Self {
            jobs,
            permits: Arc::new(Semaphore::new(running)),
            admitted: Arc::new(Semaphore::new(admitted.max(running))),
            dummy_hash: dummy_hash.into(),
        })
    }

    /// Runs `work` on a hashing thread once a permit is free. The permits move
    /// into the job: dropping the returned future (a cancelled request) does
    /// not free them while the 19 MiB hash still runs.
    async fn run<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
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
        let (done, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move |memory: &mut Vec<Block>| {
                let out = work(memory);
                drop((running, admitted));
                let _ = done.send(out);
            }))
            .map_err(|_| closed())?;
        answer.await.map_err(|_| {
            Error::Internal(InternalError::caused_by(what, "the hashing thread stopped"))
        })
    }

    /// The PHC string of `password`.
    pub async fn hash(&self, password: &str) -> Result<String, Error> {
        let password = password.to_owned();
        self.run("the hash task failed", move |memory| {
            hash_with(memory, &password)
        })
        .await?
    }

    /// Whether `password` matches `hash`. With `hash = None` (unknown email) it
    /// does the same work against a dummy hash and answers `false`.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool, Error> {
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.to_string(), str::to_owned);
        let password = password.to_owned();
        let ok = self
            .run("the verify task failed", move |memory| {
                verify_with(memory, &password, &hash)
            })
            .await?;
        Ok(known && ok)
    }
}

/// A hash or a verification, run on a hashing thread with its memory.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// Hashes that may wait for a CPU, per CPU, before callers are refused.
pub const QUEUED_PER_CPU: usize = 4;

fn closed() -> Error {
    Error::Internal("password hasher closed".into())
}

/// `memory` sized for `params` (it is reused as it is when it already is).
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let n = params.block_count();
    if memory.len() != n {
        *memory = vec![Block::default(); n];
    }
    memory
}

fn failed(e: impl std::fmt::Display) -> Error {
    Error::Internal(InternalError::caused_by(
        "argon2 hashing failed",
        e.to_string(),
    ))
}

/// The PHC string of `password` with argon2id's default parameters and a
/// random 16-byte salt, computed in `memory`.
fn hash_with(memory: &mut Vec<Block>, password: &str) -> Result<String, Error> {
    let params = Params::default();
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    // 16 bytes from the OS's CSPRNG (UUID v4 is drawn from getrandom).
    let salt = Salt::new(uuid::Uuid::new_v4().as_bytes()).map_err(failed)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(
            password.as_bytes(),
            &salt,
            &mut out,
            blocks(memory, &params),
        )
        .map_err(failed)?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(failed)?,
        salt: Some(salt),
        hash: Some(Output::new(&out).map_err(failed)?),
    };
    Ok(hash.to_string())
}

/// Whether `password` matches the PHC string `hash` (any argon2 variant and
/// parameters it names), computed in `memory`; compared in constant time.
fn verify_with(memory: &mut Vec<Block>, password: &str, hash: &str) -> bool {
    let mut check = || -> Option<bool> {
        let parsed = PasswordHash::new(hash).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm.as_str()).ok()?;
        let version = match parsed.version {
            Some(v) => Version::try_from(v).ok()?,
            None => Version::default(),
        };
        let params = Params::try_from(&parsed).ok()?;
        let (salt, expected) = (parsed.salt?, parsed.hash?);
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params.clone())
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                blocks(memory, &params),
            )
            .ok()?;
        // `Output`'s equality is constant-time.
        Some(Output::new(&out).ok()? == expected)
    };
    check().unwrap_or(false)
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

    #[test]
    fn hashes_of_the_argon2_api_verify_and_the_memory_is_reused() {
        use argon2::PasswordHasher as _;
        // Stored hashes were made by argon2's own PasswordHasher; they still verify.
        let stored = Argon2::default()
            .hash_password(b"correct horse")
            .unwrap()
            .to_string();
        let mut memory = Vec::new();
        assert!(verify_with(&mut memory, "correct horse", &stored));
        assert!(!verify_with(&mut memory, "wrong horse", &stored));
        assert!(!verify_with(
            &mut memory,
            "correct horse",
            "not a PHC string"
        ));
        // Ours verify the other way round, and carry the default parameters.
        let ours = hash_with(&mut memory, "correct horse").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        let parsed = argon2::password_hash::phc::PasswordHash::new(&ours).unwrap();
        argon2::PasswordVerifier::verify_password(&Argon2::default(), b"correct horse", &parsed)
            .unwrap();
        // One buffer, kept from one hash to the next.
        let before = memory.as_ptr();
        hash_with(&mut memory, "another").unwrap();
        assert_eq!(memory.as_ptr(), before);
        assert_eq!(memory.len(), Params::default().block_count());
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
