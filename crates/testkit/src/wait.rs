//! Waiting for what happens in the background: one bounded poll, so tests
//! ask for a condition instead of sleeping and hoping.

use std::{future::Future, time::Duration};

/// Calls `poll` every 20 ms until it returns `Some`, and returns that; panics
/// when `timeout` passes first. For waiting on something that happens in the
/// background (a saga settling, a process exiting, a span arriving): it asks
/// for the condition itself, so a slow machine waits longer instead of racing.
pub async fn eventually<T, F, Fut>(timeout: Duration, poll: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    match poll_until(timeout, poll).await {
        Some(done) => done,
        None => panic!("eventually: the condition still did not hold after {timeout:?}"),
    }
}

/// [`eventually`] for callers with a better message: `None` at the timeout.
pub async fn poll_until<T, F, Fut>(timeout: Duration, mut poll: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(done) = poll().await {
            return Some(done);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
