//! How failures are reported: one `error: <code>: <message>` line, then the
//! field violations of a `google.rpc.BadRequest` detail when the status has one.

use std::{fmt, io};

use emporium_common::rpc::{Code, Status, StatusExt};

/// Everything that makes a command fail.
#[derive(Debug)]
pub enum CliError {
    /// A gRPC call failed.
    Rpc {
        /// The status the service (or the transport) answered.
        status: Status,
        /// A hint appended to the message, e.g. which service was unreachable.
        hint: Option<String>,
    },
    /// The command cannot run as given (not logged in, bad URL, malformed token).
    Usage(String),
    /// A local file could not be read or written.
    Io {
        /// What was being done, e.g. "writing /home/ada/.config/emporium/token".
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// Stdout was closed (output piped into `head`): stop quietly.
    BrokenPipe,
    /// A step of `emporium demo` did not behave as described.
    Demo(String),
}

impl CliError {
    /// A failed call with no hint.
    pub fn rpc(status: Status) -> Self {
        Self::Rpc { status, hint: None }
    }

    /// Adds `hint` to an RPC failure with code `code`; other errors are unchanged.
    pub fn with_hint(self, code: Code, hint: impl Into<String>) -> Self {
        match self {
            Self::Rpc { status, hint: None } if status.code() == code => Self::Rpc {
                status,
                hint: Some(hint.into()),
            },
            other => other,
        }
    }

    /// The text printed to stderr: the one-line summary, then one indented line
    /// per field violation. Always ends with a newline.
    pub fn report(&self) -> String {
        let mut out = format!("error: {self}\n");
        if let Self::Rpc { status, .. } = self
            && let Some(bad_request) = status.get_details_bad_request()
        {
            for v in &bad_request.field_violations {
                out.push_str(&format!("  {}: {}\n", v.field, v.description));
            }
        }
        out
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rpc { status, hint } => {
                let message = status.message().trim();
                let message = if message.is_empty() {
                    status.code().description()
                } else {
                    message
                };
                write!(f, "{}: {message}", code_name(status.code()))?;
                if let Some(hint) = hint {
                    write!(f, " ({hint})")?;
                }
                Ok(())
            }
            Self::Usage(message) => f.write_str(message),
            Self::Io { what, source } => write!(f, "{what}: {source}"),
            Self::BrokenPipe => f.write_str("stdout closed"),
            Self::Demo(message) => write!(f, "demo failed: {message}"),
        }
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rpc { status, .. } => Some(status),
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<Status> for CliError {
    fn from(status: Status) -> Self {
        Self::rpc(status)
    }
}

/// The canonical name of a gRPC code (`INVALID_ARGUMENT`, …): the kit's, one
/// table for the services' metrics and this command line.
pub use emporium_common::status::code_name;

#[cfg(test)]
mod tests {
    use emporium_common::rpc::ErrorDetails;

    use super::*;

    #[test]
    fn rpc_error_is_one_line_plus_field_violations() {
        let mut details = ErrorDetails::new();
        details.add_bad_request_violation("email", "must contain @");
        details.add_bad_request_violation("password", "must be at least 8 characters");
        let status = Status::with_error_details(Code::InvalidArgument, "invalid user", details);
        assert_eq!(
            CliError::rpc(status).report(),
            "error: INVALID_ARGUMENT: invalid user\n  email: must contain @\n  \
             password: must be at least 8 characters\n"
        );
    }

    #[test]
    fn hints_apply_only_to_their_code() {
        let e = CliError::rpc(Status::unavailable("tcp connect error"))
            .with_hint(Code::Unavailable, "user service at http://127.0.0.1:50051");
        assert_eq!(
            e.report(),
            "error: UNAVAILABLE: tcp connect error (user service at http://127.0.0.1:50051)\n"
        );
        let e = CliError::rpc(Status::not_found("no such order")).with_hint(Code::Unavailable, "x");
        assert_eq!(e.report(), "error: NOT_FOUND: no such order\n");
    }
}
