//! Errors as gRPC statuses: the building blocks every service's
//! `From<Error> for Status` uses, so the mapping of domain errors to gRPC codes
//! reads the same everywhere.
//!
//! - invalid input: INVALID_ARGUMENT with a `google.rpc.BadRequest` listing every
//!   offending field ([`Violations`]);
//! - internal failures: logged with their whole cause chain, answered with a
//!   generic message that never carries SQL, paths or panic text ([`internal`]).

use std::{error::Error as StdError, fmt};

use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// One invalid field: `field` is a path such as `items[2].quantity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the offending field in the request.
    pub field: String,
    /// What is wrong, lowercase, no trailing period.
    pub description: String,
}

/// All the invalid fields of one request. Collect them all, then fail once, so a
/// client can fix everything in one round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A single violation.
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Self::new();
        v.add(field, description);
        v
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Records the error of a parse, if any, and returns its value.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, r: Result<T, E>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.add(field, e.to_string());
                None
            }
        }
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations recorded.
    pub fn iter(&self) -> impl Iterator<Item = &FieldViolation> {
        self.0.iter()
    }

    /// `Ok(())` when empty, else `Err(self)`.
    pub fn finish(self) -> Result<(), Violations> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The parsed request when nothing was recorded, else every violation: the
    /// end of a transport's `TryFrom`, so no `expect` follows validation.
    /// `value` is `None` only when a [`Self::check`] recorded why.
    pub fn finish_with<T>(self, value: Option<T>) -> Result<T, Violations> {
        match value {
            Some(value) if self.is_empty() => Ok(value),
            _ => Err(self),
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl StdError for Violations {}

/// INVALID_ARGUMENT naming every field, with a `google.rpc.BadRequest` detail.
pub fn invalid_argument(violations: &Violations) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations.iter() {
        details.add_bad_request_violation(v.field.clone(), v.description.clone());
    }
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {violations}"),
        details,
    )
}

/// One unmet precondition, e.g. `("STOCK", "SKU-1", "requested 5, available 2")`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreconditionViolation {
    /// A type the service defines, upper case (`STOCK`, `STATE`).
    pub kind: String,
    /// What failed the check (a SKU, an id).
    pub subject: String,
    /// Why, lowercase.
    pub description: String,
}

/// FAILED_PRECONDITION with a `google.rpc.PreconditionFailure` listing each
/// violation, so a client can tell which items to fix without parsing text.
pub fn failed_precondition(
    message: impl Into<String>,
    violations: &[PreconditionViolation],
) -> Status {
    let mut details = ErrorDetails::new();
    for v in violations {
        details.add_precondition_failure_violation(
            v.kind.clone(),
            v.subject.clone(),
            v.description.clone(),
        );
    }
    Status::with_error_details(Code::FailedPrecondition, message, details)
}

/// An internal failure (a bug, a broken invariant, a task that died): what was
/// being done, and the error that stopped it when there is one. Services wrap
/// it in their `Internal` variant, so the log line shows the whole chain while
/// the client gets only "internal error".
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub struct InternalError {
    context: String,
    #[source]
    source: Option<crate::BoxError>,
}

impl InternalError {
    /// A failure with no underlying error.
    pub fn new(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }

    /// A failure caused by `source`, whose chain is kept for the log.
    pub fn caused_by(context: impl Into<String>, source: impl Into<crate::BoxError>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

impl From<&str> for InternalError {
    fn from(context: &str) -> Self {
        Self::new(context)
    }
}

impl From<String> for InternalError {
    fn from(context: String) -> Self {
        Self::new(context)
    }
}

/// INTERNAL with a generic message. The error and its whole `source()` chain go to
/// the log, never to the client.
pub fn internal(err: &(dyn StdError + 'static)) -> Status {
    tracing::error!(error = %chain(err), "internal error");
    Status::internal("internal error")
}

/// UNAVAILABLE: a dependency (database, peer) is not answering; the client may
/// retry. The cause is logged, not returned.
pub fn unavailable(what: &str, err: &(dyn StdError + 'static)) -> Status {
    tracing::warn!(error = %chain(err), "{what} unavailable");
    Status::unavailable(format!("{what} unavailable, retry later"))
}

/// `err: source: source …` on one line.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}

/// The canonical upper-snake name of a gRPC code, as dashboards and logs show it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `google.rpc.Status` equivalent of a tonic status, details included, for
/// streams that report per-item errors in a message field.
pub fn to_rpc_status(status: &Status) -> emporium_proto::google::rpc::Status {
    if !status.details().is_empty()
        && let Ok(decoded) = emporium_proto::google::rpc::Status::decode(status.details())
    {
        return decoded;
    }
    emporium_proto::google::rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_carries_every_field() {
        let mut v = Violations::new();
        v.add("email", "must contain @");
        v.add("items[2].quantity", "must be > 0");
        let s = invalid_argument(&v);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(
            s.message(),
            "invalid request: email: must contain @; items[2].quantity: must be > 0"
        );
        let br = s.get_details_bad_request().expect("bad request detail");
        let fields: Vec<_> = br
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "items[2].quantity"]);

        let rpc = to_rpc_status(&s);
        assert_eq!(rpc.code, Code::InvalidArgument as i32);
        assert_eq!(rpc.details.len(), 1);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn internal_errors_keep_their_cause_for_the_log() {
        #[derive(Debug, thiserror::Error)]
        enum ServiceError {
            #[error("internal error")]
            Internal(#[from] InternalError),
        }
        let io = std::io::Error::other("disk on fire");
        let e = ServiceError::from(InternalError::caused_by("writing the summary", io));
        assert_eq!(
            chain(&e),
            "internal error: writing the summary: disk on fire"
        );
        let s = internal(&e);
        assert_eq!(s.message(), "internal error");
    }

    #[test]
    fn internal_hides_the_cause() {
        let e = Outer(std::io::Error::other("SELECT * FROM secret_table"));
        let s = internal(&e);
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("SELECT"));
        assert_eq!(chain(&e), "outer: SELECT * FROM secret_table");
    }
}
