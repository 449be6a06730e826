//! Peer channels against real gRPC servers on real sockets: safe calls are
//! retried within a budget, unsafe ones are not; a failing replica is taken out
//! by its breaker; replicas found through a resolver the test controls share
//! the load, and leave or join as the resolver says; the serving call's
//! deadline bounds the calls its handler makes.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use emporium_common::{
    client::{balance::Resolve, channel, channel_with_resolver},
    config::PeerConfig,
    rpc::{
        Code,
        health::{HealthCheckRequest, health_client::HealthClient},
    },
    stack::{DeadlineLayer, HttpRequest, HttpResponse},
};
use tonic::{body::Body, server::NamedService};
use tower::{Layer as _, Service, ServiceExt as _};

/// What a scripted replica saw and how it answers.
#[derive(Default)]
struct Script {
    /// Codes to answer with, in order; the last one repeats; empty: OK.
    codes: VecDeque<Code>,
    /// Headers of every request, in order.
    seen: Vec<http::HeaderMap>,
}

type Shared = Arc<Mutex<Script>>;

/// A health service that answers from its script: OK through a real health
/// server, anything else as a trailers-only error.
#[derive(Clone)]
struct Scripted {
    script: Shared,
    inner: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
}

impl NamedService for Scripted {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<http::Request<Body>> for Scripted {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let code = {
            let mut s = self.script.lock().unwrap();
            s.seen.push(req.headers().clone());
            let code = s.codes.front().copied().unwrap_or(Code::Ok);
            if s.codes.len() > 1 {
                s.codes.pop_front();
            }
            code
        };
        let mut inner = self.inner.clone();
        Box::pin(async move {
            if code == Code::Ok {
                inner.call(req).await
            } else {
                Ok(tonic::Status::new(code, "scripted").into_http())
            }
        })
    }
}

/// A scripted replica on `ip`, on `port` (0: any). Returns its address.
async fn replica(ip: &str, port: u16, codes: &[Code]) -> (SocketAddr, Shared) {
    let script = Arc::new(Mutex::new(Script {
        codes: codes.iter().copied().collect(),
        seen: Vec::new(),
    }));
    let reporter = tonic_health::server::HealthReporter::new();
    let health = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(reporter),
    );
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = Scripted {
        script: script.clone(),
        inner: health,
    };
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (addr, script)
}

fn calls(s: &Shared) -> usize {
    s.lock().unwrap().seen.len()
}

fn peer(url: String) -> PeerConfig {
    PeerConfig {
        url,
        breaker_cool_down_ms: 60_000,
        resolve_interval_ms: 100,
        ..PeerConfig::local(0)
    }
}

async fn check(
    client: &mut HealthClient<emporium_common::client::PeerChannel>,
) -> Result<(), Code> {
    client
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

#[tokio::test]
async fn a_safe_call_is_retried_when_the_peer_did_not_run_it() {
    let (addr, script) = replica(
        "127.0.0.1",
        0,
        &[Code::Unavailable, Code::Unavailable, Code::Ok],
    )
    .await;
    let mut client = HealthClient::new(channel("peer", &peer(format!("http://{addr}"))).unwrap());
    assert_eq!(check(&mut client).await, Ok(()));
    assert_eq!(calls(&script), 3, "two retries");
    // A refusal that is an answer is not retried.
    script.lock().unwrap().codes = [Code::PermissionDenied].into();
    assert_eq!(check(&mut client).await, Err(Code::PermissionDenied));
    assert_eq!(calls(&script), 4);
}

#[tokio::test]
async fn an_unsafe_call_is_sent_once() {
    let (addr, script) = replica("127.0.0.1", 0, &[Code::Unavailable]).await;
    let mut client = HealthClient::new(channel("peer", &peer(format!("http://{addr}"))).unwrap());
    // Watch is a stream: never sent twice.
    let answer = client.watch(HealthCheckRequest::default()).await;
    assert_eq!(answer.err().map(|s| s.code()), Some(Code::Unavailable));
    assert_eq!(calls(&script), 1);
}

#[tokio::test]
async fn in_an_outage_the_retry_budget_keeps_retries_from_multiplying_the_load() {
    let (addr, script) = replica("127.0.0.1", 0, &[Code::Unavailable]).await;
    let ch = channel(
        "peer",
        &PeerConfig {
            // Keep the breaker out of it: this is about the budget.
            breaker_cool_down_ms: 1,
            ..peer(format!("http://{addr}"))
        },
    )
    .unwrap();
    let mut client = HealthClient::new(ch.clone());
    for _ in 0..50 {
        assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    }
    let attempts = calls(&script);
    // Without a budget: 50 × 4 = 200 attempts. With it: each call's first
    // attempt, plus the few retries the first ten tokens allowed.
    assert!(attempts <= 60, "{attempts} attempts for 50 calls");
    assert!(ch.retry_tokens() <= 5.0, "{}", ch.retry_tokens());
}

#[tokio::test]
async fn a_failing_replica_is_taken_out_by_its_breaker() {
    let (addr, script) = replica("127.0.0.1", 0, &[Code::Unavailable]).await;
    let mut client = HealthClient::new(channel("peer", &peer(format!("http://{addr}"))).unwrap());
    for _ in 0..3 {
        let _ = check(&mut client).await;
    }
    let before = calls(&script);
    assert!(
        before >= 5,
        "{before}: the breaker opens after five failures"
    );
    // Open: calls fail fast without reaching the replica.
    for _ in 0..10 {
        assert_eq!(check(&mut client).await, Err(Code::Unavailable));
    }
    assert_eq!(calls(&script), before);
}

/// A resolver whose answer the test sets, counting how often it was asked.
#[derive(Clone, Default)]
struct Fixed(
    Arc<Mutex<Vec<SocketAddr>>>,
    Arc<std::sync::atomic::AtomicUsize>,
);

impl Fixed {
    fn set(&self, addrs: &[SocketAddr]) {
        *self.0.lock().unwrap() = addrs.to_vec();
    }

    fn asked(&self) -> usize {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Resolve for Fixed {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        let addrs = self.0.lock().unwrap().clone();
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async move { Ok(addrs) })
    }
}

/// Three replicas on one port of 127.0.0.2, .3 and .4.
async fn three_replicas(codes: [&[Code]; 3]) -> (u16, Vec<(SocketAddr, Shared)>) {
    'port: loop {
        let (first, s1) = replica("127.0.0.2", 0, codes[0]).await;
        let port = first.port();
        let mut all = vec![(first, s1)];
        for (ip, c) in [("127.0.0.3", codes[1]), ("127.0.0.4", codes[2])] {
            if tokio::net::TcpListener::bind((ip, port)).await.is_err() {
                continue 'port;
            }
            all.push(replica(ip, port, c).await);
        }
        return (port, all);
    }
}

/// Polls `done` every 10 ms for up to 10 s.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the condition did not hold within 10 s");
}

#[tokio::test]
async fn replicas_from_the_resolver_share_the_load_and_come_and_go() {
    let (port, replicas) = three_replicas([&[], &[], &[]]).await;
    let [(a, sa), (b, sb), (c, sc)] = <[_; 3]>::try_from(replicas).ok().unwrap();
    let resolver = Fixed::default();
    resolver.set(&[a, b]);
    let ch = channel_with_resolver(
        "peer",
        &peer(format!("http://replicas.test:{port}")),
        Arc::new(resolver.clone()),
    )
    .unwrap();
    until(|| ch.endpoints().len() == 2).await;
    let mut client = HealthClient::new(ch.clone());
    for _ in 0..60 {
        check(&mut client).await.unwrap();
    }
    let (na, nb) = (calls(&sa), calls(&sb));
    assert_eq!(na + nb, 60);
    assert!(na >= 10 && nb >= 10, "load is spread: {na} / {nb}");

    // .2 leaves, .4 joins.
    resolver.set(&[b, c]);
    until(|| {
        let addrs: Vec<_> = ch.endpoints().iter().filter_map(|e| e.addr).collect();
        addrs == [b, c]
    })
    .await;
    for _ in 0..40 {
        check(&mut client).await.unwrap();
    }
    assert_eq!(calls(&sa), na, "a replica that left gets no calls");
    assert!(calls(&sc) >= 5, "a new replica gets calls: {}", calls(&sc));
    assert_eq!(calls(&sb) + calls(&sc), nb + 40);

    // A resolver that finds nothing keeps the replicas there are.
    resolver.set(&[]);
    let asked = resolver.asked();
    until(|| resolver.asked() >= asked + 2).await;
    assert_eq!(ch.endpoints().len(), 2);
}

#[tokio::test]
async fn calls_fail_over_from_a_dead_replica() {
    let (port, replicas) = three_replicas([&[Code::Unavailable], &[], &[]]).await;
    let resolver = Fixed::default();
    let addrs: Vec<_> = replicas.iter().map(|r| r.0).collect();
    resolver.set(&addrs[..2]);
    let ch = channel_with_resolver(
        "peer",
        &peer(format!("http://replicas.test:{port}")),
        Arc::new(resolver),
    )
    .unwrap();
    until(|| ch.endpoints().len() == 2).await;
    let mut client = HealthClient::new(ch);
    // Every call succeeds: a retry goes to the healthy replica, and once its
    // breaker opens the dead one gets nothing.
    for _ in 0..50 {
        check(&mut client).await.unwrap();
    }
    let dead = calls(&replicas[0].1);
    assert!(dead <= 6, "the dead replica got {dead} calls");
    assert_eq!(calls(&replicas[1].1), 50);
}

#[tokio::test]
async fn the_serving_calls_deadline_bounds_the_calls_its_handler_makes() {
    let (addr, script) = replica("127.0.0.1", 0, &[]).await;
    let peer_channel = channel("peer", &peer(format!("http://{addr}"))).unwrap();
    // A service whose handler calls the peer once, behind the kit's deadline layer.
    let handler = tower::service_fn(move |_req: HttpRequest| {
        let peer = peer_channel.clone();
        async move {
            HealthClient::new(peer)
                .check(HealthCheckRequest::default())
                .await
                .expect("the peer answers");
            Ok::<HttpResponse, Infallible>(tonic::Status::ok("").into_http())
        }
    });
    let service = DeadlineLayer::new(Duration::from_secs(10)).layer(handler);
    let request = http::Request::builder()
        .uri("/emporium.test.v1.Svc/Do")
        .header("grpc-timeout", "2S")
        .body(Body::empty())
        .unwrap();
    service.clone().oneshot(request).await.unwrap();
    let sent = |i: usize| {
        let s = script.lock().unwrap();
        let v = s.seen[i]["grpc-timeout"].to_str().unwrap().to_owned();
        v.trim_end_matches('m').parse::<u64>().unwrap()
    };
    let inherited = sent(0);
    assert!(
        (1_800..=1_950).contains(&inherited),
        "2 s less the margin, less the time spent: {inherited} ms"
    );
    // No incoming deadline and none of its own: the peer's default (5 s).
    let mut client = HealthClient::new(channel("peer", &peer(format!("http://{addr}"))).unwrap());
    check(&mut client).await.unwrap();
    assert!((4_900..=5_000).contains(&sent(1)), "{}", sent(1));
}
