//! A circuit breaker for one endpoint of a peer.
//!
//! Closed: calls pass; the breaker opens after `consecutive_failures` failures
//! in a row, or when at least `ratio_min_calls` of the last `window` calls were
//! made and `failure_ratio` of them failed. Open: calls fail fast for the
//! cool-down. Half-open: one probe call passes; its success closes the breaker,
//! its failure opens it again for twice as long (at most 16 × `cool_down`).
//!
//! The first cool-down is short because an open breaker on a peer with one
//! replica is an outage of its own: a restart that takes half a second must not
//! cost every caller seconds. Measured with `make chaos` (a service restarted
//! every 3 s), a flat 2 s cool-down was the cause of most saga pauses. A peer
//! that stays down is probed less and less often.
//!
//! What counts as a failure is the caller's call (see `mod.rs`): the peer not
//! answering or answering UNAVAILABLE, never a business refusal.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// The breaker's settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failures in a row that open the breaker.
    pub consecutive_failures: u32,
    /// Share of failed calls in the window that opens the breaker.
    pub failure_ratio: f64,
    /// Calls remembered for the ratio.
    pub window: usize,
    /// Fewest calls in the window before the ratio counts.
    pub ratio_min_calls: usize,
    /// How long the breaker stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_ratio: 0.5,
            window: 20,
            ratio_min_calls: 10,
            cool_down: Duration::from_millis(500),
        }
    }
}

/// Where a breaker stands (also its metric value: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls pass.
    Closed,
    /// Calls fail fast until the instant.
    Open(Instant),
    /// One probe is out; other calls fail fast until it returns.
    HalfOpen,
}

impl State {
    /// The gauge value: closed 0, half-open 1, open 2.
    pub fn gauge(self) -> f64 {
        match self {
            State::Closed => 0.0,
            State::HalfOpen => 1.0,
            State::Open(_) => 2.0,
        }
    }
}

/// One endpoint's breaker. Not thread-safe by itself: the caller locks it.
#[derive(Debug)]
pub struct Breaker {
    policy: BreakerPolicy,
    state: State,
    in_a_row: u32,
    /// `true` for each failed call, newest last.
    recent: VecDeque<bool>,
    /// Times the breaker opened, for the metric.
    openings: u64,
    /// Openings since it last closed after a good probe: each doubles the
    /// cool-down.
    streak: u32,
}

/// Whether a call may go out now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Yes.
    Pass,
    /// Yes, as the half-open probe.
    Probe,
    /// No: the breaker is open.
    Refuse,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: State::Closed,
            in_a_row: 0,
            recent: VecDeque::with_capacity(policy.window),
            openings: 0,
            streak: 0,
        }
    }

    /// The state now (an open breaker whose cool-down is over reads half-open
    /// only once a probe was admitted).
    pub fn state(&self) -> State {
        self.state
    }

    /// How many times it opened.
    pub fn openings(&self) -> u64 {
        self.openings
    }

    /// Whether a call would be admitted now, without admitting it.
    pub fn is_available(&self, now: Instant) -> bool {
        match self.state {
            State::Closed => true,
            State::Open(until) => now >= until,
            State::HalfOpen => false,
        }
    }

    /// Admits a call or refuses it. A [`Admit::Probe`] must be followed by
    /// [`Self::record`].
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed => Admit::Pass,
            State::Open(until) if now >= until => {
                self.state = State::HalfOpen;
                Admit::Probe
            }
            State::Open(_) | State::HalfOpen => Admit::Refuse,
        }
    }

    /// Records how an admitted call ended.
    pub fn record(&mut self, failed: bool, now: Instant) {
        if self.recent.len() == self.policy.window {
            self.recent.pop_front();
        }
        self.recent.push_back(failed);
        self.in_a_row = if failed { self.in_a_row + 1 } else { 0 };
        match self.state {
            State::HalfOpen if failed => self.open(now),
            State::HalfOpen => {
                self.state = State::Closed;
                self.recent.clear();
                self.streak = 0;
            }
            State::Closed if failed && self.trips() => self.open(now),
            // A call admitted before the breaker opened: its end changes nothing.
            _ => {}
        }
    }

    fn trips(&self) -> bool {
        if self.in_a_row >= self.policy.consecutive_failures {
            return true;
        }
        let calls = self.recent.len();
        let failures = self.recent.iter().filter(|f| **f).count();
        calls >= self.policy.ratio_min_calls
            && failures as f64 >= self.policy.failure_ratio * calls as f64
    }

    fn open(&mut self, now: Instant) {
        let cool_down = self
            .policy
            .cool_down
            .saturating_mul(1 << self.streak.min(4));
        self.state = State::Open(now + cool_down);
        self.openings += 1;
        self.streak += 1;
        self.in_a_row = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            consecutive_failures: 3,
            failure_ratio: 0.5,
            window: 10,
            ratio_min_calls: 6,
            cool_down: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_open_it_and_a_probe_after_the_cool_down_closes_it() {
        let mut b = Breaker::new(policy());
        for _ in 0..2 {
            assert_eq!(b.admit(Instant::now()), Admit::Pass);
            b.record(true, Instant::now());
        }
        assert_eq!(b.state(), State::Closed);
        b.admit(Instant::now());
        b.record(true, Instant::now());
        assert!(matches!(b.state(), State::Open(_)));
        assert_eq!(b.openings(), 1);
        assert_eq!(b.admit(Instant::now()), Admit::Refuse);

        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Refuse);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(b.is_available(Instant::now()));
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        // Only one probe at a time.
        assert_eq!(b.admit(Instant::now()), Admit::Refuse);
        b.record(false, Instant::now());
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.admit(Instant::now()), Admit::Pass);
    }

    #[tokio::test(start_paused = true)]
    async fn each_failed_probe_doubles_the_cool_down_and_a_good_one_resets_it() {
        let mut b = Breaker::new(policy());
        for _ in 0..3 {
            b.admit(Instant::now());
            b.record(true, Instant::now());
        }
        // 5 s, then 10, 20, 40, 80, and no longer.
        for wait in [5, 10, 20, 40, 80, 80] {
            tokio::time::advance(Duration::from_millis(wait * 1_000 - 1)).await;
            assert_eq!(b.admit(Instant::now()), Admit::Refuse, "{wait}");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(b.admit(Instant::now()), Admit::Probe, "{wait}");
            b.record(true, Instant::now());
        }
        assert_eq!(b.openings(), 7);
        // A good probe closes it; the next opening waits the first cool-down again.
        tokio::time::advance(Duration::from_secs(80)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(false, Instant::now());
        for _ in 0..3 {
            b.admit(Instant::now());
            b.record(true, Instant::now());
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_failure_ratio_opens_it_without_a_streak() {
        let mut b = Breaker::new(policy());
        // fail, ok, fail, ok, …: never two in a row, half of them failing.
        for i in 0..5 {
            b.admit(Instant::now());
            b.record(i % 2 == 0, Instant::now());
        }
        assert_eq!(b.state(), State::Closed, "too few calls for the ratio");
        b.admit(Instant::now());
        b.record(true, Instant::now());
        assert!(matches!(b.state(), State::Open(_)), "4 of 6 failed");
    }

    #[tokio::test(start_paused = true)]
    async fn successes_keep_it_closed() {
        let mut b = Breaker::new(policy());
        for i in 0..100 {
            b.admit(Instant::now());
            // One failure in ten.
            b.record(i % 10 == 0, Instant::now());
        }
        assert_eq!(b.state(), State::Closed);
        assert_eq!(b.openings(), 0);
    }
}
