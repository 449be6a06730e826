//! A traced, timed write transaction.

use std::{sync::Arc, time::Instant};

use sqlx::AnyConnection;
use tracing::Instrument as _;

/// A write transaction from [`Db::begin`]: use `&mut *tx` as the executor,
/// finish with [`Tx::commit`].
#[derive(Debug)]
pub struct Tx {
    pub(super) inner: Option<sqlx::Transaction<'static, sqlx::Any>>,
    pub(super) span: tracing::Span,
    pub(super) operation: &'static str,
    pub(super) db: Arc<str>,
    pub(super) start: Instant,
}

impl Tx {
    /// Commits; the span and the metrics record the outcome.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        let Some(tx) = self.inner.take() else {
            return Ok(());
        };
        let result = tx.commit().instrument(self.span.clone()).await;
        self.finish(if result.is_ok() {
            None
        } else {
            Some("commit failed")
        });
        result
    }

    /// Rolls back on purpose (a refusal found inside the transaction); the span
    /// records why.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let Some(tx) = self.inner.take() else {
            return Ok(());
        };
        self.finish(Some("rolled back"));
        tx.rollback().await
    }

    fn finish(&self, failure: Option<&str>) {
        finished(&self.db, self.operation, self.start, &self.span, failure);
    }
}

/// Records how a write transaction (or a single write statement) ended: its
/// duration in `db_transaction_duration_seconds`, and on its span why it failed.
pub(super) fn finished(
    db: &str,
    operation: &'static str,
    start: Instant,
    span: &tracing::Span,
    failure: Option<&str>,
) {
    metrics::histogram!(
        "db_transaction_duration_seconds",
        "db" => db.to_owned(),
        "operation" => operation,
        "outcome" => if failure.is_none() { "commit" } else { "rollback" },
    )
    .record(start.elapsed().as_secs_f64());
    if let Some(why) = failure {
        crate::telemetry::trace::record_error(span, why);
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        // Still open: an error (or a dropped request) left it; sqlx rolls back.
        if self.inner.is_some() {
            self.finish(Some("rolled back"));
        }
    }
}

impl std::ops::Deref for Tx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        self.inner.as_ref().expect("transaction already finished")
    }
}

impl std::ops::DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        self.inner.as_mut().expect("transaction already finished")
    }
}
