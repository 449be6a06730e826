//! The user service's errors and the one place they become gRPC statuses.

use emporium_common::{
    rpc::Status,
    status::{self as common_error, InternalError, Violations},
};

/// Everything that can go wrong in the user service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input failed validation; every bad field is listed.
    #[error("invalid request: {0}")]
    InvalidArgument(Violations),
    /// No such user.
    #[error("user not found")]
    NotFound,
    /// The email is taken.
    #[error("a user with this email already exists")]
    AlreadyExists,
    /// No valid credentials or token.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    PermissionDenied(&'static str),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A bug or a broken invariant (e.g. a row that does not parse).; the cause is kept for the log.
    #[error("internal error")]
    Internal(#[from] InternalError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(v) => common_error::invalid_argument(&v),
            Error::NotFound => Status::not_found(e.to_string()),
            Error::AlreadyExists => Status::already_exists(e.to_string()),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::PermissionDenied(m) => Status::permission_denied(m),
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
                Error::InvalidArgument(Violations::one("email", "must contain @")),
                Code::InvalidArgument,
            ),
            (Error::NotFound, Code::NotFound),
            (Error::AlreadyExists, Code::AlreadyExists),
            (
                Error::Unauthenticated("invalid email or password"),
                Code::Unauthenticated,
            ),
            (
                Error::PermissionDenied("admins only"),
                Code::PermissionDenied,
            ),
            (
                Error::Database(sqlx::Error::PoolTimedOut),
                Code::Unavailable,
            ),
            (Error::Database(sqlx::Error::RowNotFound), Code::Internal),
            (
                Error::Internal("row id 'x' is not a uuid".into()),
                Code::Internal,
            ),
        ];
        for (err, code) in cases {
            let s = Status::from(err);
            assert_eq!(s.code(), code, "{s:?}");
            assert!(!s.message().contains("row"), "{s:?}");
        }
    }
}
