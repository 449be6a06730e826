//! Per-caller token buckets (governor's GCRA): a user, or without a token an
//! address, that sends faster than the configured rate gets RESOURCE_EXHAUSTED
//! with a `google.rpc.RetryInfo` saying when to come back, instead of starving
//! the others. Calls from peer services are not limited here.

use std::{
    net::IpAddr,
    num::NonZeroU32,
    sync::{Arc, Weak},
    time::Duration,
};

use super::{HttpRequest, gate::Gate};
use crate::auth::Caller;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use ipnet::IpNet;
use tonic::{
    Code, Status,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};
use tonic_types::StatusExt as _;

/// How often buckets that are full again are dropped, so memory stays bounded
/// by the callers of the last minute or so, not of the process's life.
const EVICT_EVERY: Duration = Duration::from_secs(30);

/// The quota of `per_sec` requests per second with bursts of `burst`; `None`
/// when limiting is off.
pub(super) fn quota(per_sec: u32, burst: u32) -> Option<Quota> {
    let per_sec = NonZeroU32::new(per_sec)?;
    let burst = NonZeroU32::new(burst)?;
    Some(Quota::with_period(Duration::from_secs(1) / per_sec.get())?.allow_burst(burst))
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    trusted_proxies: Arc<[IpNet]>,
}

/// The address of the client behind a call: the TCP peer, or, when the peer is
/// a trusted proxy, the last address in `x-forwarded-for` that is not itself a
/// trusted proxy (each proxy appends the address it got the call from, so only
/// the entries added by our own proxies can be believed).
pub fn client_addr(req: &HttpRequest, trusted: &[IpNet]) -> Option<IpAddr> {
    let ext = req.extensions();
    let peer = ext
        .get::<TcpConnectInfo>()
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(|tls| tls.get_ref())
        })
        .and_then(TcpConnectInfo::remote_addr)?
        .ip();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let mut client = peer;
    // Every x-forwarded-for header, in order; a malformed entry ends the walk
    // (it cannot be told apart from a forgery), as does the first untrusted one.
    let hops: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    Some(client)
}

impl RateLimitLayer {
    /// `per_sec` requests per second per caller, bursts of `burst`; 0 turns it off.
    /// Inside a Tokio runtime a task evicts idle callers every 30 s for as long
    /// as the layer lives.
    pub fn new(per_sec: u32, burst: u32, trusted_proxies: &[IpNet]) -> Self {
        let limiter = quota(per_sec, burst).map(|q| Arc::new(RateLimiter::keyed(q)));
        if let (Some(limiter), Ok(rt)) = (&limiter, tokio::runtime::Handle::try_current()) {
            let weak: Weak<DefaultKeyedRateLimiter<String>> = Arc::downgrade(limiter);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(EVICT_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let Some(limiter) = weak.upgrade() else {
                        return;
                    };
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            });
        }
        Self {
            limiter,
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// The bucket of the caller of `req`; `None` when limiting is off, for
    /// peer services, and for a call whose client address is unknown.
    fn bucket(&self, req: &HttpRequest) -> Option<Bucket> {
        let limiter = self.limiter.as_ref()?;
        let key = match req.extensions().get::<Caller>() {
            Some(c) if c.service.is_some() => return None,
            Some(c) => format!("user:{}", c.user_id),
            None => format!("ip:{}", client_addr(req, &self.trusted_proxies)?),
        };
        Some(Bucket {
            limiter: limiter.clone(),
            key,
        })
    }
}

/// One caller's bucket, put into the extensions of every admitted call so that
/// a stream can charge each of its operations to the same bucket as unary
/// calls (see `stack::PerOperation`). Cheap to clone.
#[derive(Clone)]
pub struct Bucket {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    key: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket").field("key", &self.key).finish()
    }
}

impl Bucket {
    /// Takes one token; RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo`
    /// saying when one is available again.
    pub fn take(&self) -> Result<(), Status> {
        self.limiter.check_key(&self.key).map_err(|not_until| {
            metrics::counter!("rpc_server_rate_limited_total").increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry = wait.max(Duration::from_millis(1));
            Status::with_error_details(
                Code::ResourceExhausted,
                format!("rate limit exceeded, retry in {} ms", retry.as_millis()),
                tonic_types::ErrorDetails::with_retry_info(Some(retry)),
            )
        })
    }
}

impl Gate for RateLimitLayer {
    fn admit(&self, req: &mut HttpRequest) -> Result<(), Status> {
        if let Some(bucket) = self.bucket(req) {
            bucket.take()?;
            req.extensions_mut().insert(bucket);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn buckets_allow_the_burst_then_the_rate() {
        let clock = FakeRelativeClock::default();
        let limiter: RateLimiter<
            String,
            governor::state::keyed::DefaultKeyedStateStore<String>,
            FakeRelativeClock,
            governor::middleware::NoOpMiddleware<governor::nanos::Nanos>,
        > = RateLimiter::new(quota(10, 3).unwrap(), Default::default(), clock.clone());
        let take = |key: &str| {
            limiter
                .check_key(&key.to_owned())
                .map_err(|n| n.wait_time_from(clock.now()))
        };
        for _ in 0..3 {
            assert!(take("a").is_ok());
        }
        let wait = take("a").unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Other callers are unaffected.
        assert!(take("b").is_ok());
        // A tenth of a second later one more token is there, not two.
        clock.advance(Duration::from_millis(100));
        assert!(take("a").is_ok());
        assert!(take("a").is_err());
    }

    #[test]
    fn zero_turns_limiting_off() {
        assert!(quota(0, 10).is_none());
        assert!(RateLimitLayer::new(0, 10, &[]).limiter.is_none());
    }

    fn call_from(peer: &str, forwarded: &[&str]) -> HttpRequest {
        let mut req = http::Request::new(tonic::body::Body::empty());
        for f in forwarded {
            req.headers_mut()
                .append("x-forwarded-for", http::HeaderValue::from_str(f).unwrap());
        }
        let peer: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
        req.extensions_mut().insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(peer),
        });
        req
    }

    #[test]
    fn the_client_behind_trusted_proxies_is_the_last_untrusted_hop() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // Straight from a client: the peer, whatever it claims.
        assert_eq!(
            client_addr(&call_from("203.0.113.7", &["1.2.3.4"]), &trusted),
            ip("203.0.113.7")
        );
        // Through our proxy: the address it saw.
        assert_eq!(
            client_addr(&call_from("10.0.0.5", &["198.51.100.9"]), &trusted),
            ip("198.51.100.9")
        );
        // A client that forges a header in front of our proxy: the proxy appended
        // the real address last, and that is the one believed.
        assert_eq!(
            client_addr(&call_from("10.0.0.5", &["1.1.1.1, 198.51.100.9"]), &trusted),
            ip("198.51.100.9")
        );
        // Two of our proxies in a row, headers split across lines.
        assert_eq!(
            client_addr(
                &call_from("10.0.0.5", &["198.51.100.9", "10.0.0.6"]),
                &trusted
            ),
            ip("198.51.100.9")
        );
        // Garbage ends the walk at the last good hop.
        assert_eq!(
            client_addr(&call_from("10.0.0.5", &["nonsense"]), &trusted),
            ip("10.0.0.5")
        );
        // No trusted proxies configured: the header is never read.
        assert_eq!(
            client_addr(&call_from("10.0.0.5", &["198.51.100.9"]), &[]),
            ip("10.0.0.5")
        );
    }
}
