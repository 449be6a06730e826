//! Client-side balancing over the replicas of a peer.
//!
//! A peer URL whose host is a name (a Kubernetes headless Service, say) is
//! resolved at start and every `resolve_interval`: each address becomes an
//! endpoint with a lazily connecting channel of its own, addresses that
//! disappear are dropped, new ones are added, and a resolution that fails or
//! finds nothing keeps the endpoints there are (a DNS hiccup must not empty
//! the set). Each call goes to the less busy of two endpoints picked at random
//! (power of two choices, by calls in flight that this process counts itself:
//! tonic's own balancer reports every load as zero) among those whose breaker
//! admits calls.
//!
//! Until the first resolution — and for an IP address, always — the set is one
//! endpoint for the URL as written.

use std::{
    fmt,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;
use tonic::transport::Channel;

use super::breaker::{Admit, Breaker, BreakerPolicy};

/// Finds the addresses behind a host name.
pub trait Resolve: Send + Sync + 'static {
    /// The addresses of `host` with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;
}

/// The system resolver (`/etc/hosts`, DNS).
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns;

impl Resolve for Dns {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// One replica of a peer.
pub struct Endpoint {
    /// The address, or `None` for the URL as written.
    pub addr: Option<SocketAddr>,
    /// Its label in metrics and logs.
    pub label: String,
    /// Its connection.
    pub channel: Channel,
    breaker: Mutex<Breaker>,
    in_flight: AtomicUsize,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("label", &self.label)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl Endpoint {
    /// An endpoint over `channel` with a closed breaker.
    pub fn new(
        addr: Option<SocketAddr>,
        label: String,
        channel: Channel,
        policy: BreakerPolicy,
    ) -> Self {
        Self {
            addr,
            label,
            channel,
            breaker: Mutex::new(Breaker::new(policy)),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls in flight to this endpoint from this process.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records how an admitted call ended, and publishes the breaker's state.
    pub fn record(&self, peer: &str, failed: bool) {
        let mut b = self.breaker();
        let before = b.openings();
        b.record(failed, Instant::now());
        let labels = [("peer", peer.to_owned()), ("endpoint", self.label.clone())];
        metrics::gauge!("rpc_client_breaker_state", &labels).set(b.state().gauge());
        if b.openings() > before {
            metrics::counter!("rpc_client_breaker_openings_total", &labels).increment(1);
            tracing::warn!(peer, endpoint = %self.label, "circuit breaker opened");
        }
    }
}

/// A call's hold on an endpoint: counts it in flight until dropped.
#[derive(Debug)]
pub struct Lease(Arc<Endpoint>);

impl Lease {
    /// The endpoint.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.0
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoints of one peer.
#[derive(Debug)]
pub struct Endpoints {
    list: RwLock<Vec<Arc<Endpoint>>>,
}

impl Endpoints {
    /// A set of one endpoint.
    pub fn single(endpoint: Endpoint) -> Arc<Self> {
        Arc::new(Self {
            list: RwLock::new(vec![Arc::new(endpoint)]),
        })
    }

    /// The endpoints now.
    pub fn snapshot(&self) -> Vec<Arc<Endpoint>> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Picks the endpoint for the next call and admits the call through its
    /// breaker; `None` when every breaker refuses. A retry passes the endpoint
    /// that just failed as `avoid`: it is skipped while another one is there.
    pub fn pick(
        &self,
        avoid: Option<&Arc<Endpoint>>,
        random: impl FnMut(usize) -> usize,
    ) -> Option<Lease> {
        let now = Instant::now();
        let mut open: Vec<Arc<Endpoint>> = self
            .snapshot()
            .into_iter()
            .filter(|e| e.breaker().is_available(now))
            .collect();
        if let Some(avoid) = avoid
            && open.len() > 1
        {
            open.retain(|e| !Arc::ptr_eq(e, avoid));
        }
        let mut random = random;
        while !open.is_empty() {
            let i = match open.len() {
                1 => 0,
                n => {
                    let a = random(n);
                    let b = (a + 1 + random(n - 1)) % n;
                    if open[b].in_flight() < open[a].in_flight() {
                        b
                    } else {
                        a
                    }
                }
            };
            let chosen = open.swap_remove(i);
            if chosen.breaker().admit(now) != Admit::Refuse {
                chosen.in_flight.fetch_add(1, Ordering::Relaxed);
                return Some(Lease(chosen));
            }
        }
        None
    }

    /// Replaces the set with `addrs`: keeps the endpoints (and their
    /// connections and breakers) of addresses still there, makes new ones with
    /// `make`, drops the rest. An empty `addrs` changes nothing.
    pub fn update(
        &self,
        addrs: &[SocketAddr],
        mut make: impl FnMut(SocketAddr) -> Option<Endpoint>,
    ) -> bool {
        if addrs.is_empty() {
            return false;
        }
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        let same = list.len() == addrs.len()
            && list
                .iter()
                .all(|e| e.addr.is_some_and(|a| addrs.contains(&a)));
        if same {
            return false;
        }
        let mut next = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(kept) = list.iter().find(|e| e.addr == Some(*addr)) {
                next.push(kept.clone());
            } else if let Some(made) = make(*addr) {
                next.push(Arc::new(made));
            }
        }
        if next.is_empty() {
            return false;
        }
        *list = next;
        true
    }
}

/// Re-resolves `host:port` every `every` for as long as `endpoints` lives.
pub fn spawn_resolver(
    peer: String,
    host: String,
    port: u16,
    every: Duration,
    resolver: Arc<dyn Resolve>,
    endpoints: Weak<Endpoints>,
    make: impl Fn(SocketAddr) -> Option<Endpoint> + Send + Sync + 'static,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(set) = endpoints.upgrade() else { return };
            match resolver.resolve(&host, port).await {
                Ok(mut addrs) => {
                    addrs.sort();
                    addrs.dedup();
                    if set.update(&addrs, &make) {
                        tracing::info!(peer, host, endpoints = addrs.len(), "peer endpoints changed");
                        metrics::gauge!("rpc_client_endpoints", "peer" => peer.clone())
                            .set(addrs.len() as f64);
                    }
                }
                Err(e) => {
                    tracing::warn!(peer, host, error = %e, "could not resolve the peer; keeping its endpoints");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(addr: &str) -> Endpoint {
        let addr: SocketAddr = addr.parse().unwrap();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        Endpoint::new(
            Some(addr),
            addr.to_string(),
            channel,
            BreakerPolicy::default(),
        )
    }

    #[tokio::test]
    async fn updates_keep_known_endpoints_and_ignore_empty_answers() {
        let set = Endpoints::single(endpoint("127.0.0.2:1"));
        let a: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.3:1".parse().unwrap();
        let first = set.snapshot()[0].clone();
        assert!(set.update(&[a, b], |addr| Some(endpoint(&addr.to_string()))));
        let now = set.snapshot();
        assert_eq!(now.len(), 2);
        assert!(Arc::ptr_eq(&now[0], &first), "the known endpoint is kept");
        assert!(!set.update(&[], |_| None), "an empty answer keeps the set");
        assert!(!set.update(&[b, a], |_| None), "same set, nothing to do");
        assert!(set.update(&[b], |_| None));
        assert_eq!(set.snapshot().len(), 1);
        assert_eq!(set.snapshot()[0].addr, Some(b));
    }

    #[tokio::test]
    async fn the_less_busy_of_two_wins_and_open_breakers_are_skipped() {
        let set = Endpoints::single(endpoint("127.0.0.2:1"));
        let addrs: Vec<SocketAddr> = ["127.0.0.2:1", "127.0.0.3:1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        set.update(&addrs, |addr| Some(endpoint(&addr.to_string())));
        // The "random" picks are always the first two; held calls steer the
        // choice to whichever has fewer in flight.
        let held: Vec<_> = (0..4).map(|_| set.pick(None, |_| 0).unwrap()).collect();
        let went: Vec<_> = held.iter().map(|l| l.endpoint().addr.unwrap()).collect();
        assert_eq!(went, [addrs[0], addrs[1], addrs[0], addrs[1]]);
        drop(held);
        assert!(set.snapshot().iter().all(|e| e.in_flight() == 0));
        // A retry avoids the endpoint that just failed.
        let first = set.snapshot()[0].clone();
        for _ in 0..5 {
            let l = set.pick(Some(&first), |_| 0).unwrap();
            assert_eq!(l.endpoint().addr, Some(addrs[1]));
        }
        // Open the first endpoint's breaker: every call goes to the second.
        let first = set.snapshot()[0].clone();
        for _ in 0..BreakerPolicy::default().consecutive_failures {
            first.record("p", true);
        }
        for _ in 0..5 {
            assert_eq!(
                set.pick(None, |n| n - 1).unwrap().endpoint().addr,
                Some(addrs[1])
            );
        }
        // Both open: nothing to call.
        let second = set.snapshot()[1].clone();
        for _ in 0..BreakerPolicy::default().consecutive_failures {
            second.record("p", true);
        }
        assert!(set.pick(None, |_| 0).is_none());
    }
}
