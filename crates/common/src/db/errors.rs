//! Database errors as the client should see them, classified in one place so
//! no service matches on error strings.

/// How a failed query should reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// A unique constraint refused the write: ALREADY_EXISTS (or a replay).
    UniqueViolation,
    /// The database is down, busy or out of connections: UNAVAILABLE, retryable.
    Unavailable,
    /// Anything else: INTERNAL.
    Other,
}

/// Classifies a sqlx error in one place, so no service matches on error strings.
pub fn classify(e: &sqlx::Error) -> DbFailure {
    match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => DbFailure::UniqueViolation,
        sqlx::Error::Database(db) => {
            // SQLITE_BUSY / SQLITE_LOCKED and PostgreSQL's serialization and
            // connection-class failures are transient.
            match db.code().as_deref() {
                Some("5" | "6" | "40001" | "40P01" | "57P01" | "57P03") => DbFailure::Unavailable,
                Some(code) if code.starts_with("08") => DbFailure::Unavailable,
                _ => DbFailure::Other,
            }
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => DbFailure::Unavailable,
        _ => DbFailure::Other,
    }
}

/// The `tonic::Status` for a database error that has no domain meaning here.
pub fn status(e: &sqlx::Error) -> tonic::Status {
    match classify(e) {
        DbFailure::Unavailable => crate::status::unavailable("database", e),
        DbFailure::UniqueViolation | DbFailure::Other => crate::status::internal(e),
    }
}
