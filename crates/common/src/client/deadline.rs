//! Deadline propagation: the time an incoming call has left, minus a margin,
//! bounds every call made while serving it.
//!
//! The server stack runs each handler inside [`scope`] with the call's deadline;
//! [`outbound`] reads it back when a peer call goes out, so no service code has
//! to pass it along (or can forget to). A call made outside any request (a
//! background saga, a sweeper) has no incoming deadline and gets the one it set
//! itself, or the peer's configured default.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use http::HeaderMap;

use crate::rpc::{grpc_timeout, serving_deadline as incoming, with_serving_deadline};

/// Runs `fut` with `deadline` as the incoming call's deadline (the server
/// stack does this for every handler).
pub fn scope<F: Future>(deadline: Instant, fut: F) -> impl Future<Output = F::Output> {
    with_serving_deadline(deadline, fut)
}

/// What is kept back from a propagated deadline so the answer can travel back
/// in time: a tenth of what is left, at most 50 ms.
pub fn margin(left: Duration) -> Duration {
    (left / 10).min(Duration::from_millis(50))
}

/// The deadline of an outbound call: the earliest of the request's own
/// `grpc-timeout`, the incoming call's deadline less the margin, and — when
/// neither is there — now plus `default`.
pub fn outbound(headers: &HeaderMap, default: Duration, now: Instant) -> Instant {
    let own = grpc_timeout(headers).map(|t| now + t);
    let inherited = incoming().map(|d| {
        let left = d.saturating_duration_since(now);
        now + left.saturating_sub(margin(left))
    });
    match (own, inherited) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => now + default,
    }
}

/// `grpc-timeout` for what is left until `deadline` (milliseconds, rounded up
/// so a small remainder is not sent as zero).
pub fn header_value(deadline: Instant, now: Instant) -> http::HeaderValue {
    let left = deadline.saturating_duration_since(now);
    let ms = left.as_micros().div_ceil(1000).min(99_999_999);
    http::HeaderValue::from_str(&format!("{ms}m")).expect("digits and a unit are a valid header")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-timeout", v.parse().unwrap());
        h
    }

    #[tokio::test]
    async fn the_earliest_deadline_wins() {
        let now = Instant::now();
        let default = Duration::from_secs(5);
        // Nothing known: the default.
        assert_eq!(outbound(&HeaderMap::new(), default, now), now + default);
        // The request's own timeout.
        assert_eq!(
            outbound(&with_timeout("2S"), default, now),
            now + Duration::from_secs(2)
        );
        // Inside a handler with 1 s left: 1 s less 50 ms, even if the request
        // asked for more.
        scope(now + Duration::from_secs(1), async {
            assert_eq!(
                outbound(&with_timeout("2S"), default, now),
                now + Duration::from_millis(950)
            );
            assert_eq!(
                outbound(&HeaderMap::new(), default, now),
                now + Duration::from_millis(950)
            );
            // A shorter own timeout still wins.
            assert_eq!(
                outbound(&with_timeout("100m"), default, now),
                now + Duration::from_millis(100)
            );
        })
        .await;
        // Outside the handler the incoming deadline is gone.
        assert!(incoming().is_none());
    }

    #[test]
    fn small_remainders_are_kept_and_rounded_up() {
        let now = Instant::now();
        assert_eq!(
            margin(Duration::from_millis(200)),
            Duration::from_millis(20)
        );
        assert_eq!(header_value(now + Duration::from_micros(1), now), "1m");
        assert_eq!(
            header_value(now + Duration::from_millis(1500), now),
            "1500m"
        );
        assert_eq!(header_value(now, now), "0m");
    }
}
