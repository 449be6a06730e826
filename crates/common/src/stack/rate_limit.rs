//! Per-caller token buckets (governor's GCRA): a user, or without a token an
//! address, that sends faster than the configured rate gets RESOURCE_EXHAUSTED
//! with a `google.rpc.RetryInfo` saying when to come back, instead of starving
//! the others. Calls from peer services are not limited here.

use std::{
    future::{Ready, ready},
    num::NonZeroU32,
    sync::{Arc, Weak},
    task::{Context, Poll},
    time::Duration,
};

use futures::future::Either;
use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tower::{Layer, Service};

use super::{HttpRequest, HttpResponse, status_response};
use crate::auth::Caller;

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
}

impl RateLimitLayer {
    /// `per_sec` requests per second per caller, bursts of `burst`; 0 turns it off.
    /// Inside a Tokio runtime a task evicts idle callers every 30 s for as long
    /// as the layer lives.
    pub fn new(per_sec: u32, burst: u32) -> Self {
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
        Self { limiter }
    }

    /// Takes one token for the caller of `req`; on refusal, how long until one
    /// is available.
    fn take(&self, req: &HttpRequest) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = match req.extensions().get::<Caller>() {
            Some(c) if c.service.is_some() => return Ok(()),
            Some(c) => format!("user:{}", c.user_id),
            None => match req
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|i| i.remote_addr())
            {
                Some(a) => format!("ip:{}", a.ip()),
                None => return Ok(()),
            },
        };
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] makes.
#[derive(Debug, Clone)]
pub struct RateLimit<S> {
    inner: S,
    layer: RateLimitLayer,
}

impl<S> Service<HttpRequest> for RateLimit<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        match self.layer.take(&req) {
            Ok(()) => Either::Right(self.inner.call(req)),
            Err(wait) => {
                metrics::counter!("rpc_server_rate_limited_total").increment(1);
                let retry = wait.max(Duration::from_millis(1));
                Either::Left(ready(Ok(status_response(Status::with_error_details(
                    Code::ResourceExhausted,
                    format!("rate limit exceeded, retry in {} ms", retry.as_millis()),
                    tonic_types::ErrorDetails::with_retry_info(Some(retry)),
                )))))
            }
        }
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
        assert!(RateLimitLayer::new(0, 10).limiter.is_none());
    }
}
