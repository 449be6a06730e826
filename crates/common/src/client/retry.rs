//! Which calls may be sent again, how long to wait between tries, and how many
//! retries a peer may absorb.
//!
//! - The policy table names every method that is safe to send twice: reads,
//!   and writes that are idempotent by an id or an idempotency key. Anything
//!   not in it (streams, CreateUser, CreateProduct, …) is sent once.
//! - A safe call is retried when the peer says it did not run the call
//!   (UNAVAILABLE, or no connection at all) or that the same call is still
//!   running (ABORTED); a timeout ends the call, since the deadline is what
//!   bounds it.
//! - Backoff is exponential with full jitter, so callers that failed together
//!   do not retry together.
//! - A retry budget per peer, as gRPC's retry throttling: a token bucket that
//!   loses one token per failed attempt and regains a tenth per success;
//!   below half full, no retries. An outage then costs about one attempt per
//!   call, not `max_attempts`.

use std::{sync::Mutex, time::Duration};

use tonic::Code;

/// Methods that are safe to send more than once (full gRPC paths).
const SAFE: &[&str] = &[
    "/grpc.health.v1.Health/Check",
    // Reads.
    "/emporium.user.v1.UserService/GetUser",
    "/emporium.user.v1.UserService/ListUsers",
    "/emporium.inventory.v1.InventoryService/GetProduct",
    "/emporium.inventory.v1.InventoryService/ListProducts",
    "/emporium.payment.v1.PaymentService/GetPayment",
    "/emporium.payment.v1.PaymentService/ListPayments",
    "/emporium.order.v1.OrderService/GetOrder",
    "/emporium.order.v1.OrderService/ListOrders",
    // Idempotent by the order id.
    "/emporium.inventory.v1.InventoryService/ReserveStock",
    "/emporium.inventory.v1.InventoryService/CommitReservation",
    "/emporium.inventory.v1.InventoryService/ReleaseReservation",
    "/emporium.order.v1.OrderService/CancelOrder",
    // Idempotent by an idempotency key.
    "/emporium.inventory.v1.InventoryService/AdjustStock",
    "/emporium.payment.v1.PaymentService/Charge",
    "/emporium.payment.v1.PaymentService/Refund",
    "/emporium.payment.v1.PaymentService/VoidCharge",
    "/emporium.order.v1.OrderService/CreateOrder",
];

/// Whether `path` may be sent again.
pub fn is_safe(path: &str) -> bool {
    SAFE.contains(&path)
}

/// Whether an attempt that ended with `code` may be retried (for a safe method).
pub fn is_retryable(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::Aborted)
}

/// How a peer's calls are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Cap of the first backoff; doubled per retry.
    pub initial_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Tokens in a full budget.
    pub budget_tokens: f64,
    /// Tokens a success gives back.
    pub budget_refill: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            budget_tokens: 10.0,
            budget_refill: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry): uniformly
    /// random in `[0, min(max, initial × 2^(retry-1))]`.
    pub fn backoff(&self, retry: u32, random: f64) -> Duration {
        let exp = self
            .initial_backoff
            .saturating_mul(1 << retry.saturating_sub(1).min(20));
        exp.min(self.max_backoff).mul_f64(random.clamp(0.0, 1.0))
    }
}

/// One peer's retry budget.
#[derive(Debug)]
pub struct Budget {
    max: f64,
    refill: f64,
    tokens: Mutex<f64>,
}

impl Budget {
    /// A full budget.
    pub fn new(policy: &RetryPolicy) -> Self {
        Self {
            max: policy.budget_tokens,
            refill: policy.budget_refill,
            tokens: Mutex::new(policy.budget_tokens),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut f64) -> T) -> T {
        f(&mut self.tokens.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// An attempt succeeded (or got an answer that is not a failure).
    pub fn succeeded(&self) {
        let (max, refill) = (self.max, self.refill);
        self.with(|t| *t = (*t + refill).min(max));
    }

    /// An attempt failed.
    pub fn failed(&self) {
        self.with(|t| *t = (*t - 1.0).max(0.0));
    }

    /// Whether a retry may go out now.
    pub fn allows_retry(&self) -> bool {
        let half = self.max / 2.0;
        self.with(|t| *t > half)
    }

    /// Tokens left (for tests and the metric).
    pub fn tokens(&self) -> f64 {
        self.with(|t| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_and_keyed_writes_are_safe() {
        assert!(is_safe("/emporium.payment.v1.PaymentService/Charge"));
        assert!(is_safe("/emporium.user.v1.UserService/GetUser"));
        assert!(!is_safe("/emporium.user.v1.UserService/CreateUser"));
        assert!(!is_safe(
            "/emporium.inventory.v1.InventoryService/CreateProduct"
        ));
        assert!(!is_safe(
            "/emporium.order.v1.OrderService/WatchOrderUpdates"
        ));
        assert!(!is_safe("/emporium.user.v1.UserService/StreamUsers"));
        assert!(is_retryable(Code::Unavailable));
        assert!(!is_retryable(Code::DeadlineExceeded));
        assert!(!is_retryable(Code::InvalidArgument));
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(50));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(100));
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(100));
        assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(30, 1.0), Duration::from_secs(1));
    }

    #[test]
    fn the_budget_stops_retries_in_an_outage_and_refills_with_successes() {
        let b = Budget::new(&RetryPolicy::default());
        let mut retries = 0;
        for _ in 0..100 {
            b.failed();
            if b.allows_retry() {
                retries += 1;
                b.failed();
            }
        }
        // Ten tokens, one per failed attempt, no retries below five.
        assert!(retries <= 3, "{retries}");
        assert!(!b.allows_retry());
        for _ in 0..60 {
            b.succeeded();
        }
        assert!(b.allows_retry(), "{}", b.tokens());
        for _ in 0..1000 {
            b.succeeded();
        }
        assert_eq!(b.tokens(), 10.0);
    }
}
