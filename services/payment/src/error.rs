//! The payment service's errors and the one place they become gRPC statuses.

use std::collections::HashMap;

use emporium_common::{
    rpc::{Code, ErrorDetails, Status, StatusExt as _},
    status::{self as common_error, InternalError, PreconditionViolation, Violations},
};
use emporium_proto::payment::v1 as pb;

use crate::domain::{DeclineReason, PaymentId};

/// The `google.rpc.ErrorInfo` domain of this service's errors.
pub const ERROR_DOMAIN: &str = "payment.emporium";

/// `ErrorInfo.reason` of ALREADY_EXISTS: the order already has a successful charge.
pub const REASON_ORDER_ALREADY_PAID: &str = "ORDER_ALREADY_PAID";

/// `ErrorInfo.reason` of FAILED_PRECONDITION: the charge key was voided by
/// VoidCharge, so no Charge with it ever reaches the processor.
pub const REASON_CHARGE_VOIDED: &str = "CHARGE_VOIDED";

/// Everything that can go wrong in the payment service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; every bad field is listed.
    #[error("invalid request: {0}")]
    InvalidArgument(Violations),
    /// No such payment.
    #[error("payment not found")]
    NotFound,
    /// The order already has a successful charge (this one).
    #[error("the order already has a successful charge")]
    AlreadyPaid(PaymentId),
    /// The card was declined; the DECLINED payment is recorded.
    #[error("{}", .reason.describe())]
    Declined {
        /// The DECLINED payment.
        payment_id: PaymentId,
        /// Why.
        reason: DeclineReason,
    },
    /// The payment is not in a state, or has not the money left, for a refund.
    #[error("payment cannot be refunded: {description}")]
    NotRefundable {
        /// The payment.
        payment_id: PaymentId,
        /// `STATUS` or `AMOUNT`.
        kind: &'static str,
        /// Why, lowercase.
        description: String,
    },
    /// The charge key was voided (VoidCharge): nothing was or will be charged
    /// with it.
    #[error("the charge with this idempotency key was voided, nothing was charged")]
    ChargeVoided,
    /// Another call holds what this one needs; retrying is safe.
    #[error("{0}")]
    Aborted(&'static str),
    /// The card processor failed transiently; nothing was recorded.
    #[error("card processor unavailable, retry with the same idempotency key")]
    ProcessorUnavailable,
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// COMMIT itself failed: the transaction may or may not have been applied
    /// (the connection can break after the server committed and before it
    /// said so). UNKNOWN, never UNAVAILABLE, which would tell the caller that
    /// nothing happened. Made only by `store::commit`.
    #[error("the outcome is not known, retry with the same idempotency key")]
    OutcomeUnknown(#[source] sqlx::Error),
    /// A bug or a broken invariant (e.g. a row that does not parse).; the cause is kept for the log.
    #[error("internal error")]
    Internal(#[from] InternalError),
}

fn error_info(code: Code, message: String, reason: &str, payment_id: PaymentId) -> Status {
    let metadata = HashMap::from([("payment_id".to_owned(), payment_id.to_string())]);
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata),
    )
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => common_error::invalid_argument(&v),
            Error::NotFound => Status::not_found(e.to_string()),
            Error::AlreadyPaid(id) => error_info(
                Code::AlreadyExists,
                e.to_string(),
                REASON_ORDER_ALREADY_PAID,
                id,
            ),
            Error::Declined { payment_id, reason } => error_info(
                Code::FailedPrecondition,
                e.to_string(),
                pb::DeclineReason::from(reason).as_str_name(),
                payment_id,
            ),
            Error::NotRefundable {
                payment_id,
                kind,
                ref description,
            } => common_error::failed_precondition(
                e.to_string(),
                &[PreconditionViolation {
                    kind: kind.to_owned(),
                    subject: payment_id.to_string(),
                    description: description.clone(),
                }],
            ),
            Error::ChargeVoided => Status::with_error_details(
                Code::FailedPrecondition,
                e.to_string(),
                ErrorDetails::with_error_info(REASON_CHARGE_VOIDED, ERROR_DOMAIN, HashMap::new()),
            ),
            Error::Aborted(m) => Status::aborted(m),
            Error::ProcessorUnavailable => Status::unavailable(e.to_string()),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::Database(ref db) => emporium_common::db::status(db),
            Error::OutcomeUnknown(ref db) => {
                tracing::error!(error = %common_error::chain(db), "commit outcome unknown");
                Status::unknown(e.to_string())
            }
            Error::Internal(_) => common_error::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_maps_to_its_code_without_leaking() {
        let id = PaymentId::generate();
        let cases = [
            (
                Error::InvalidArgument(Violations::one("amount.units", "must be > 0")),
                Code::InvalidArgument,
            ),
            (Error::NotFound, Code::NotFound),
            (Error::AlreadyPaid(id), Code::AlreadyExists),
            (
                Error::Declined {
                    payment_id: id,
                    reason: DeclineReason::InsufficientFunds,
                },
                Code::FailedPrecondition,
            ),
            (
                Error::NotRefundable {
                    payment_id: id,
                    kind: "AMOUNT",
                    description: "only 5 is left to refund".into(),
                },
                Code::FailedPrecondition,
            ),
            (Error::Aborted("still running, retry"), Code::Aborted),
            (Error::ProcessorUnavailable, Code::Unavailable),
            (Error::PermissionDenied("not yours"), Code::PermissionDenied),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
            ),
            (Error::Database(sqlx::Error::RowNotFound), Code::Internal),
            (Error::ChargeVoided, Code::FailedPrecondition),
            // A failed COMMIT may have committed: whatever the cause, even one
            // that is UNAVAILABLE anywhere else, the answer is UNKNOWN.
            (
                Error::OutcomeUnknown(sqlx::Error::PoolTimedOut),
                Code::Unknown,
            ),
            (
                Error::OutcomeUnknown(sqlx::Error::Io(std::io::Error::from(
                    std::io::ErrorKind::ConnectionReset,
                ))),
                Code::Unknown,
            ),
            (
                Error::OutcomeUnknown(sqlx::Error::RowNotFound),
                Code::Unknown,
            ),
            (
                Error::Internal("row id 'x' is not a uuid".into()),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(!s.message().contains("row"), "{s:?}");
            assert!(!s.message().ends_with('.'), "{s:?}");
        }
    }

    #[test]
    fn declines_and_duplicates_name_the_payment() {
        let id = PaymentId::generate();
        let s = Status::from(Error::Declined {
            payment_id: id,
            reason: DeclineReason::CardDeclined,
        });
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(info.reason, "DECLINE_REASON_CARD_DECLINED");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata["payment_id"], id.to_string());

        let s = Status::from(Error::AlreadyPaid(id));
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.metadata["payment_id"].as_str()),
            (REASON_ORDER_ALREADY_PAID, id.to_string().as_str())
        );

        let s = Status::from(Error::ChargeVoided);
        let info = s.get_details_error_info().expect("error info");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (REASON_CHARGE_VOIDED, ERROR_DOMAIN)
        );

        let s = Status::from(Error::NotRefundable {
            payment_id: id,
            kind: "STATUS",
            description: "the payment was declined".into(),
        });
        let pf = s.get_details_precondition_failure().expect("precondition");
        assert_eq!(pf.violations[0].subject, id.to_string());
    }
}
