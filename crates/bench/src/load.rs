//! Driving load: a closed loop (N callers, each sending its next call when
//! the last one answered) or an open loop (calls sent at a fixed rate whether
//! or not earlier ones answered, each timed from when it was due, so a queue
//! at the server shows as latency instead of as a slower sender).

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
// Tokio's clock, so the tests can run on paused time.
use tokio::time::Instant;

/// What one call ended as.
pub type CallResult = Result<(), Failure>;

/// Why a call failed: what went wrong (a gRPC code name, an HTTP status,
/// `order CANCELLED`, …) and, when the server said when to come back
/// (`google.rpc.RetryInfo`), how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What the failure is counted as.
    pub kind: String,
    /// The retry delay the server asked for.
    pub retry_after: Option<Duration>,
}

impl From<String> for Failure {
    fn from(kind: String) -> Self {
        Self {
            kind,
            retry_after: None,
        }
    }
}

impl From<&str> for Failure {
    fn from(kind: &str) -> Self {
        kind.to_owned().into()
    }
}

/// One call of a scenario, by caller number and sequence number.
pub type Call =
    Arc<dyn Fn(usize, u64) -> Pin<Box<dyn Future<Output = CallResult> + Send>> + Send + Sync>;

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latencies of successful calls, in microseconds.
    pub ok: Histogram<u64>,
    /// Latencies of every answered call (refused ones included).
    pub all: Histogram<u64>,
    /// Failures by kind.
    pub errors: BTreeMap<String, u64>,
    /// Calls sent.
    pub sent: u64,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Outcome {
    fn new() -> Self {
        Self {
            ok: histogram(),
            all: histogram(),
            errors: BTreeMap::new(),
            sent: 0,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, took: Duration, result: CallResult) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        self.sent += 1;
        let _ = self.all.record(us);
        match result {
            Ok(()) => {
                let _ = self.ok.record(us);
            }
            Err(failure) => *self.errors.entry(failure.kind).or_default() += 1,
        }
    }

    fn merge(&mut self, other: &Self) {
        let _ = self.ok.add(&other.ok);
        let _ = self.all.add(&other.all);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.sent += other.sent;
    }

    /// Successful calls per second.
    pub fn goodput(&self) -> f64 {
        self.ok.len() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s at three significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid bounds")
}

/// `callers` callers, each calling in turn until `duration` passed or
/// `max_calls` were sent in all. A caller told to come back later waits as
/// long as it was told before its next call, as a well-behaved client does
/// (gRPC's retry policies honour the server's pushback the same way).
pub async fn closed(callers: usize, duration: Duration, max_calls: u64, call: Call) -> Outcome {
    let sent = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for caller in 0..callers {
        let (call, sent) = (call.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::new();
            loop {
                let seq = sent.fetch_add(1, Ordering::Relaxed);
                if seq >= max_calls || Instant::now() >= until {
                    break;
                }
                let t = Instant::now();
                let result = call(caller, seq).await;
                let pushback = result.as_ref().err().and_then(|f| f.retry_after);
                out.record(t.elapsed(), result);
                if let Some(wait) = pushback {
                    tokio::time::sleep(wait).await;
                }
            }
            out
        }));
    }
    let mut total = Outcome::new();
    for t in tasks {
        if let Ok(out) = t.await {
            total.merge(&out);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// Calls sent at `rate` per second for `duration` (at most `max_calls`),
/// each timed from the moment it was due. At most `max_outstanding` may be
/// waiting at once; beyond that the sender counts a `client overflow` rather
/// than grow without bound.
pub async fn open(
    rate: f64,
    duration: Duration,
    max_calls: u64,
    max_outstanding: usize,
    call: Call,
) -> Outcome {
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let outstanding = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut total = Outcome::new();
    let mut seq = 0u64;
    loop {
        let due = started + interval.mul_f64(seq as f64);
        if due >= started + duration || seq >= max_calls {
            break;
        }
        tokio::time::sleep_until(due).await;
        if outstanding.load(Ordering::Relaxed) as usize >= max_outstanding {
            total.record(Duration::ZERO, Err("client overflow".into()));
        } else {
            outstanding.fetch_add(1, Ordering::Relaxed);
            let (call, outstanding) = (call.clone(), outstanding.clone());
            tasks.spawn(async move {
                let result = call(seq as usize, seq).await;
                outstanding.fetch_sub(1, Ordering::Relaxed);
                (due.elapsed(), result)
            });
        }
        seq += 1;
        // Collect finished calls as we go so the set stays small.
        while let Some(Ok((took, result))) = tasks.try_join_next() {
            total.record(took, result);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        if let Ok((took, result)) = joined {
            total.record(took, result);
        }
    }
    total.elapsed = started.elapsed();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleepy(ms: u64) -> Call {
        Arc::new(move |_, seq| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if seq % 10 == 9 {
                    Err("NINTH".into())
                } else {
                    Ok(())
                }
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_stops_at_its_count_and_counts_errors_by_kind() {
        let out = closed(4, Duration::from_secs(60), 100, sleepy(10)).await;
        assert_eq!(out.sent, 100);
        assert_eq!(out.errors["NINTH"], 10);
        assert_eq!(out.ok.len(), 90);
        // 4 callers, 10 ms a call: 100 calls take 25 rounds.
        assert_eq!(out.elapsed.as_millis(), 250);
        assert!(out.ok.value_at_quantile(0.5) >= 10_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_loop_waits_as_long_as_the_server_asks() {
        let pushed_back: Call = Arc::new(|_, _| {
            Box::pin(async {
                Err(Failure {
                    kind: "ResourceExhausted".into(),
                    retry_after: Some(Duration::from_millis(100)),
                })
            })
        });
        let out = closed(2, Duration::from_secs(1), u64::MAX, pushed_back).await;
        // Two callers, each one call per 100 ms, for a second.
        assert_eq!(out.sent, 20);
        assert_eq!(out.errors["ResourceExhausted"], 20);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_loop_times_calls_from_when_they_were_due() {
        // 100/s of 50 ms calls with room for 2 outstanding: the sender does
        // not slow down; the calls it cannot start (about 3 of every 5) overflow.
        let out = open(100.0, Duration::from_secs(1), u64::MAX, 2, sleepy(50)).await;
        assert_eq!(out.sent, 100);
        let overflow = out.errors["client overflow"];
        assert!((55..=70).contains(&overflow), "{:?}", out.errors);
        // With room for all, every call takes its 50 ms from when it was due.
        let out = open(100.0, Duration::from_secs(1), u64::MAX, 1000, sleepy(50)).await;
        assert_eq!(out.sent, 100);
        assert_eq!(out.all.max() / 1000, 50);
    }
}
