//! The card processor the service charges through. A trait, because tests and
//! chaos runs swap in processors that fail, stall or count calls; [`Simulated`]
//! is the one the binary uses.

use std::fmt;

use futures::future::BoxFuture;

use crate::domain::{DeclineReason, IdempotencyKey, Money, PaymentMethod};

/// What the processor is asked to charge.
#[derive(Debug, Clone, Copy)]
pub struct ChargeAttempt<'a> {
    /// The method to charge.
    pub payment_method: PaymentMethod,
    /// How much.
    pub amount: &'a Money,
    /// Passed through so that a real processor can deduplicate too: after a crash
    /// between its answer and our commit, the retry must not charge twice.
    pub idempotency_key: &'a IdempotencyKey,
}

/// A processor's answer to a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The money was captured.
    Approved,
    /// The card was declined; nothing was taken.
    Declined(DeclineReason),
}

/// The processor could not decide this time; nothing was taken and the same
/// request may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("card processor unavailable")]
pub struct Unavailable;

/// A card processor.
pub trait Processor: fmt::Debug + Send + Sync + 'static {
    /// Charges and captures at once, or declines, or fails transiently.
    fn charge<'a>(
        &'a self,
        attempt: ChargeAttempt<'a>,
    ) -> BoxFuture<'a, Result<Decision, Unavailable>>;
}

/// The simulated processor of the proto's test payment methods.
#[derive(Debug, Clone, Copy, Default)]
pub struct Simulated;

impl Simulated {
    /// The decision for a method, without the future around it.
    pub fn decide(method: PaymentMethod) -> Result<Decision, Unavailable> {
        match method {
            PaymentMethod::CardOk => Ok(Decision::Approved),
            PaymentMethod::CardDeclined => Ok(Decision::Declined(DeclineReason::CardDeclined)),
            PaymentMethod::CardInsufficientFunds => {
                Ok(Decision::Declined(DeclineReason::InsufficientFunds))
            }
            PaymentMethod::CardError => Err(Unavailable),
        }
    }
}

impl Processor for Simulated {
    fn charge<'a>(
        &'a self,
        attempt: ChargeAttempt<'a>,
    ) -> BoxFuture<'a, Result<Decision, Unavailable>> {
        Box::pin(async move { Self::decide(attempt.payment_method) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_test_method_has_its_documented_outcome() {
        use PaymentMethod::*;
        assert_eq!(Simulated::decide(CardOk), Ok(Decision::Approved));
        assert_eq!(
            Simulated::decide(CardDeclined),
            Ok(Decision::Declined(DeclineReason::CardDeclined))
        );
        assert_eq!(
            Simulated::decide(CardInsufficientFunds),
            Ok(Decision::Declined(DeclineReason::InsufficientFunds))
        );
        assert_eq!(Simulated::decide(CardError), Err(Unavailable));
    }
}
