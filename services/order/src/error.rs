//! The order service's errors and the one place they become gRPC statuses.
//!
//! Business failures of the saga (out of stock, declined card) are not errors
//! here: the order ends CANCELLED with a reason and the call succeeds.

use emporium_common::{
    rpc::Status,
    status::{self as common_error, InternalError, Violations},
};

/// Everything that can go wrong in the order service's own RPCs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; every bad field is listed.
    #[error("invalid request: {0}")]
    InvalidArgument(Violations),
    /// No such order (or not the caller's to know about).
    #[error("order not found")]
    NotFound,
    /// Authenticated, but not allowed.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The order is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent call holds the order; retry.
    #[error("{0}")]
    Aborted(&'static str),
    /// A peer or the process is not available now; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A bug or a broken invariant.; the cause is kept for the log.
    #[error("internal error")]
    Internal(#[from] InternalError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => common_error::invalid_argument(&v),
            Error::NotFound => Status::not_found(e.to_string()),
            Error::PermissionDenied(m) => Status::permission_denied(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Aborted(m) => Status::aborted(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::Database(ref db) => emporium_common::db::status(db),
            Error::Internal(_) => common_error::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use emporium_common::rpc::Code;

    #[test]
    fn every_variant_maps_to_its_code_without_leaking() {
        let cases = [
            (
                Error::InvalidArgument(Violations::one("items", "is required")),
                Code::InvalidArgument,
            ),
            (Error::NotFound, Code::NotFound),
            (Error::PermissionDenied("not yours"), Code::PermissionDenied),
            (
                Error::FailedPrecondition("order is pending".into()),
                Code::FailedPrecondition,
            ),
            (Error::Aborted("retry"), Code::Aborted),
            (
                Error::Unavailable("payment service unavailable".into()),
                Code::Unavailable,
            ),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
            ),
            (Error::Database(sqlx::Error::RowNotFound), Code::Internal),
            (
                Error::Internal("stored step 'x' is invalid".into()),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(!s.message().contains("stored"), "{s:?}");
        }
    }
}
