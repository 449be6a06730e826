//! Refuses work beyond what the process can do quickly, with RESOURCE_EXHAUSTED,
//! instead of queueing it: a queue only turns overload into timeouts for
//! everyone. Two limits, both global (many connections cannot multiply them):
//!
//! - a fixed ceiling on all requests in the handlers (`server.max_in_flight`);
//! - for each unary method, a limit on users' calls that adapts to the method's
//!   latency (`server.adaptive_concurrency`). Past the point where the process
//!   is busy, more concurrency only makes every call slower: the limit follows
//!   TCP Vegas (tower-acc's estimator), shrinking while calls take longer than
//!   the fastest seen and growing while they do not, so the admitted calls stay
//!   near their unloaded latency and the excess is told to come back after
//!   about one call's time (`google.rpc.RetryInfo`).
//!
//! Peer services' calls are not limited adaptively: they are the inside of work
//! a user's call was already admitted for (the order saga), and refusing them
//! would waste it. Health checks are not either: a busy process is still alive.
//! Each method has its own limit because their latencies differ by orders of
//! magnitude (GetOrder against CreateOrder): one baseline would fit none.

use std::{
    collections::HashMap,
    future::{Future, Ready, ready},
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use futures::future::Either;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use tower::{Layer, Service};
use tower_acc::{Algorithm, Vegas};

use super::{HttpRequest, HttpResponse, KnownMethods, status_response};
use crate::auth::Caller;

/// Where each method's adaptive limit starts, before it has measured anything.
const INITIAL_LIMIT: usize = 32;
/// Vegas forgets its no-load latency every `PROBE_MULTIPLIER × limit` calls
/// and takes the current one instead (tower-acc's default: 30), to follow a
/// baseline that really moved. Under sustained overload the current latency is
/// a queued one, so each probe raised the limit a notch for good and the
/// admitted latency crept up over minutes; probing this rarely keeps the limit
/// where it settled, and a baseline that really doubled only doubles the limit
/// (Vegas aims at a queue of a few calls, whatever the baseline).
const PROBE_MULTIPLIER: usize = 100_000;
/// Latency below which queueing is not worth refusing anyone: the estimator
/// sees every faster call as taking this long. A refusal costs the server
/// about what a sub-millisecond call does (the same HTTP/2 and layer work), so
/// shedding such calls when a few dozen callers merely saturate the process
/// only trades served calls for refused ones (measured: GetUser with 32
/// callers served 36 % fewer calls and refused 16,000 a second). Calls queue
/// up to about this long before their method's limit starts to bite.
const LATENCY_FLOOR: Duration = Duration::from_millis(5);
/// The shortest and longest retry delay a refused caller is given.
const RETRY_BOUNDS: (Duration, Duration) = (Duration::from_millis(1), Duration::from_secs(1));

/// See the module docs.
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    permits: Arc<Semaphore>,
    adaptive: Arc<HashMap<String, Arc<Mutex<MethodLimit>>>>,
}

impl LoadShedLayer {
    /// At most `max_in_flight` requests in the handlers at once and, when
    /// `adaptive`, an adaptive limit on users' calls of each unary method of
    /// `known`.
    pub fn new(max_in_flight: usize, adaptive: bool, known: &KnownMethods) -> Self {
        let adaptive = if adaptive {
            known
                .unary()
                .filter(|path| !path.starts_with("/grpc."))
                .map(|path| {
                    let limit = MethodLimit::new(path, max_in_flight);
                    (path.to_owned(), Arc::new(Mutex::new(limit)))
                })
                .collect()
        } else {
            HashMap::new()
        };
        Self {
            permits: Arc::new(Semaphore::new(max_in_flight)),
            adaptive: Arc::new(adaptive),
        }
    }

    /// The adaptive limit `req` is subject to, if any.
    fn adaptive_limit(&self, req: &HttpRequest) -> Option<&Arc<Mutex<MethodLimit>>> {
        if self.adaptive.is_empty() {
            return None;
        }
        let from_peer = req
            .extensions()
            .get::<Caller>()
            .is_some_and(|c| c.service.is_some());
        if from_peer {
            return None;
        }
        self.adaptive.get(req.uri().path())
    }
}

/// One method's adaptive limit and what it has measured.
#[derive(Debug)]
struct MethodLimit {
    method: String,
    algorithm: Vegas,
    in_flight: usize,
    /// The limit last published as a gauge, to publish only changes.
    published: usize,
    /// A smoothed latency of admitted calls: what a refused caller is told to wait.
    typical: Duration,
}

impl MethodLimit {
    fn new(method: &str, max: usize) -> Self {
        let algorithm = Vegas::builder()
            .initial_limit(INITIAL_LIMIT.min(max))
            .max_limit(max)
            .probe_multiplier(PROBE_MULTIPLIER)
            .build();
        let limit = Self {
            method: method.to_owned(),
            algorithm,
            in_flight: 0,
            published: 0,
            typical: RETRY_BOUNDS.0,
        };
        limit.publish();
        limit
    }

    fn publish(&self) {
        metrics::gauge!("rpc_server_concurrency_limit", "rpc_method" => self.method.clone())
            .set(self.algorithm.max_concurrency() as f64);
    }

    /// Takes a place, or says how long to wait before trying again.
    fn admit(&mut self) -> Result<(), Duration> {
        if self.in_flight >= self.algorithm.max_concurrency() {
            return Err(self.typical.clamp(RETRY_BOUNDS.0, RETRY_BOUNDS.1));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Gives the place back; `answered` is the call's latency and whether it
    /// failed as overload does, `None` when the caller went away first.
    fn release(&mut self, answered: Option<(Duration, bool)>) {
        match answered {
            Some((rtt, overloaded)) => {
                self.algorithm
                    .update(rtt.max(LATENCY_FLOOR), self.in_flight, overloaded, false);
                self.typical = (self.typical * 7 + rtt) / 8;
            }
            None => self
                .algorithm
                .update(Duration::ZERO, self.in_flight, false, true),
        }
        self.in_flight = self.in_flight.saturating_sub(1);
        let now = self.algorithm.max_concurrency();
        if now != self.published {
            self.published = now;
            self.publish();
        }
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] makes.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    layer: LoadShedLayer,
}

fn shed(reason: &'static str, retry: Option<Duration>) -> HttpResponse {
    metrics::counter!("rpc_server_shed_total", "limit" => reason).increment(1);
    let status = match retry {
        Some(retry) => Status::with_error_details(
            Code::ResourceExhausted,
            format!("server busy, retry in {} ms", retry.as_millis().max(1)),
            tonic_types::ErrorDetails::with_retry_info(Some(retry)),
        ),
        None => Status::resource_exhausted("server busy, retry later"),
    };
    status_response(status)
}

impl<S> Service<HttpRequest> for LoadShed<S>
where
    S: Service<HttpRequest, Response = HttpResponse>,
{
    type Response = HttpResponse;
    type Error = S::Error;
    type Future = Either<Ready<Result<HttpResponse, S::Error>>, WithPermit<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: HttpRequest) -> Self::Future {
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            return Either::Left(ready(Ok(shed("max_in_flight", None))));
        };
        let place = match self.layer.adaptive_limit(&req) {
            None => None,
            Some(limit) => match lock(limit).admit() {
                Ok(()) => Some(Place {
                    limit: limit.clone(),
                    since: Instant::now(),
                    answered: None,
                }),
                Err(retry) => return Either::Left(ready(Ok(shed("adaptive", Some(retry))))),
            },
        };
        Either::Right(WithPermit {
            inner: self.inner.call(req),
            _permit: permit,
            place,
        })
    }
}

fn lock(limit: &Mutex<MethodLimit>) -> std::sync::MutexGuard<'_, MethodLimit> {
    // The estimator cannot panic (tower-acc's contract), so a poisoned lock
    // still holds consistent numbers.
    limit
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An admitted call's place in its method's adaptive limit, given back when
/// the call is answered or abandoned.
#[derive(Debug)]
struct Place {
    limit: Arc<Mutex<MethodLimit>>,
    since: Instant,
    answered: Option<(Duration, bool)>,
}

impl Drop for Place {
    fn drop(&mut self) {
        lock(&self.limit).release(self.answered);
    }
}

/// Whether an answer says the process (or what it waited on) was overloaded:
/// the deadline ran out, or it gave up for now.
fn overloaded(response: &HttpResponse) -> bool {
    // Every refusal is a trailers-only answer: its code is in the headers.
    matches!(
        Status::from_header_map(response.headers()).map(|s| s.code()),
        Some(Code::DeadlineExceeded | Code::Unavailable)
    )
}

pin_project_lite::pin_project! {
    /// The handler's future, holding its places in the limits until it is done.
    pub struct WithPermit<F> {
        #[pin]
        inner: F,
        _permit: OwnedSemaphorePermit,
        place: Option<Place>,
    }
}

impl<F, E> Future for WithPermit<F>
where
    F: Future<Output = Result<HttpResponse, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some(mut place) = this.place.take() {
            let failed = out.as_ref().map_or(true, overloaded);
            place.answered = Some((place.since.elapsed(), failed));
        }
        Poll::Ready(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(limit: &mut MethodLimit, rtt_ms: u64) {
        limit.release(Some((Duration::from_millis(rtt_ms), false)));
    }

    /// Calls whose latency grows with the number admitted (one busy core):
    /// the limit comes down from where it started to a handful, and a refused
    /// caller is told to wait about one call's time.
    #[test]
    fn the_limit_shrinks_while_calls_queue_and_refuses_the_excess() {
        let mut limit = MethodLimit::new("/t.T/M", 1_024);
        assert_eq!(limit.algorithm.max_concurrency(), INITIAL_LIMIT);
        // The unloaded latency: one call at a time, 5 ms each.
        for _ in 0..20 {
            limit.admit().unwrap();
            answer(&mut limit, 5);
        }
        for _ in 0..400 {
            let admitted = limit.algorithm.max_concurrency();
            for _ in 0..admitted {
                limit.admit().unwrap();
            }
            assert!(limit.admit().is_err(), "one more than the limit is refused");
            // Processor sharing: each of `admitted` calls takes admitted × 5 ms.
            for _ in 0..admitted {
                answer(&mut limit, 5 * admitted as u64);
            }
        }
        let settled = limit.algorithm.max_concurrency();
        assert!((2..=12).contains(&settled), "limit settled at {settled}");
        let retry = {
            for _ in 0..settled {
                limit.admit().unwrap();
            }
            limit.admit().unwrap_err()
        };
        assert!(
            retry >= Duration::from_millis(5) && retry <= Duration::from_millis(5 * 12),
            "{retry:?}"
        );
    }

    /// Calls that stay as fast however many are admitted: the limit grows.
    #[test]
    fn the_limit_grows_while_calls_do_not_queue() {
        let mut limit = MethodLimit::new("/t.T/M", 1_024);
        for _ in 0..200 {
            let admitted = limit.algorithm.max_concurrency();
            for _ in 0..admitted {
                limit.admit().unwrap();
            }
            for _ in 0..admitted {
                answer(&mut limit, 5);
            }
        }
        assert!(limit.algorithm.max_concurrency() > 4 * INITIAL_LIMIT);
        assert_eq!(limit.in_flight, 0);
    }

    #[test]
    fn only_users_calls_of_limited_methods_are_limited_adaptively() {
        let limit = Arc::new(Mutex::new(MethodLimit::new("/t.T/M", 8)));
        let layer = LoadShedLayer {
            permits: Arc::new(Semaphore::new(8)),
            adaptive: Arc::new(HashMap::from([("/t.T/M".to_owned(), limit)])),
        };
        let call = |path: &str, service: Option<&str>| {
            let mut req = http::Request::post(path)
                .body(tonic::body::Body::empty())
                .unwrap();
            req.extensions_mut().insert(Caller {
                user_id: uuid::Uuid::nil(),
                roles: Vec::new(),
                service: service.map(str::to_owned),
                certificate: None,
                valid_until: u64::MAX,
            });
            layer.adaptive_limit(&req).is_some()
        };
        assert!(call("/t.T/M", None), "a user's call");
        assert!(!call("/t.T/M", Some("order")), "a peer service's call");
        assert!(!call("/t.T/Other", None), "a method without a limit");
        let anonymous = http::Request::post("/t.T/M")
            .body(tonic::body::Body::empty())
            .unwrap();
        assert!(
            layer.adaptive_limit(&anonymous).is_some(),
            "an anonymous call"
        );
    }

    /// Calls much faster than the floor: 32 at once take 4 ms instead of
    /// 0.2 ms, but that is no reason to refuse any of them.
    #[test]
    fn fast_calls_queueing_below_the_floor_are_not_limited() {
        let mut limit = MethodLimit::new("/t.T/M", 1_024);
        limit.admit().unwrap();
        limit.release(Some((Duration::from_micros(200), false)));
        for _ in 0..400 {
            let admitted = limit.algorithm.max_concurrency().min(32);
            for _ in 0..admitted {
                limit.admit().unwrap();
            }
            for _ in 0..admitted {
                limit.release(Some((Duration::from_micros(125) * admitted as u32, false)));
            }
        }
        assert!(limit.algorithm.max_concurrency() >= INITIAL_LIMIT);
    }

    #[test]
    fn abandoned_calls_give_their_place_back() {
        let mut limit = MethodLimit::new("/t.T/M", 2);
        limit.admit().unwrap();
        limit.admit().unwrap();
        assert!(limit.admit().is_err());
        limit.release(None);
        limit.admit().unwrap();
    }
}
