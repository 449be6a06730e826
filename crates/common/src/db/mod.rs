//! One database handle for SQLite (the embedded default) and PostgreSQL.
//!
//! Services write runtime queries with `$1, $2 …` placeholders, which both
//! backends accept, through the sqlx Any driver. SQLite gets one writer
//! connection and a separate read pool: a second writer gains nothing and stalls
//! in the busy handler. On PostgreSQL both handles are the same pool.

mod errors;
mod notify;
mod tx;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sqlx::{
    AnyPool, Executor as _,
    any::AnyPoolOptions,
    migrate::{MigrateError, Migrator},
};
use tracing::{Instrument as _, field::Empty};

pub use self::{
    errors::{DbFailure, classify, status},
    notify::{Listener, Notice},
    tx::Tx,
};
use crate::config::DatabaseConfig;

/// Which database a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// The OpenTelemetry `db.system.name`.
    pub fn system_name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// The pools of one service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    writer: AnyPool,
    reader: AnyPool,
    backend: Backend,
    name: Arc<str>,
    /// PostgreSQL only: where a [`Listener`] connects.
    url: Option<Arc<str>>,
}

/// Opening or migrating the database failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The database could not be reached or opened.
    #[error("cannot open database: {0}")]
    Connect(#[source] sqlx::Error),
    /// The directory for a SQLite file could not be created.
    #[error("cannot create database directory {path}: {source}")]
    Directory {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A migration failed.
    #[error("database migration failed: {0}")]
    Migrate(#[source] MigrateError),
}

impl Db {
    /// Opens the database named by `config.url`, creating a SQLite file (and its
    /// directory) when missing.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url = config.url.expose();
        let timeout = Duration::from_millis(config.acquire_timeout_ms);
        if url.starts_with("sqlite:") {
            let url = sqlite_url(url)?;
            let writer = sqlite_options(1, timeout)
                .connect(&url)
                .await
                .map_err(DbError::Connect)?;
            let reader = sqlite_options(config.max_connections, timeout)
                .connect(&url)
                .await
                .map_err(DbError::Connect)?;
            Ok(Self {
                writer,
                reader,
                backend: Backend::Sqlite,
                name: database_name(&url).into(),
                url: None,
            }
            .measured())
        } else {
            let pool = AnyPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(timeout)
                .connect(url)
                .await
                .map_err(DbError::Connect)?;
            Ok(Self {
                writer: pool.clone(),
                reader: pool,
                backend: Backend::Postgres,
                name: database_name(url).into(),
                url: Some(url.into()),
            }
            .measured())
        }
    }

    /// Applies the service's embedded migrations (idempotent; safe with several
    /// replicas starting at once on PostgreSQL, which takes an advisory lock).
    pub async fn migrate(&self, migrator: &Migrator) -> Result<(), DbError> {
        migrator.run(&self.writer).await.map_err(DbError::Migrate)
    }

    /// The pool for writes and for reads that must see the latest write.
    pub fn writer(&self) -> &AnyPool {
        &self.writer
    }

    /// The pool for reads.
    pub fn reader(&self) -> &AnyPool {
        &self.reader
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a write transaction named `operation` (`reserve`, `save`, …),
    /// traced as a span from `begin` to commit or rollback and timed in
    /// `db_transaction_duration_seconds`. Dropping the [`Tx`] uncommitted rolls
    /// it back and marks the span failed.
    pub async fn begin(&self, operation: &'static str) -> Result<Tx, sqlx::Error> {
        let span = self.transaction_span(operation);
        let start = Instant::now();
        match self.writer.begin().instrument(span.clone()).await {
            Ok(tx) => Ok(Tx {
                inner: Some(tx),
                span,
                operation,
                db: self.name.clone(),
                start,
            }),
            Err(e) => {
                crate::telemetry::trace::record_error(&span, "begin failed");
                Err(e)
            }
        }
    }

    /// Runs one write statement on its own, as its own transaction (no
    /// `BEGIN` and `COMMIT` round trips: two of them were as many as the
    /// statement), traced and timed like [`Db::begin`]'s transactions.
    pub async fn write_one<'q>(
        &self,
        operation: &'static str,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let span = self.transaction_span(operation);
        let start = Instant::now();
        let result = query.execute(&self.writer).instrument(span.clone()).await;
        let failure = result.is_err().then_some("statement failed");
        tx::finished(&self.name, operation, start, &span, failure);
        result
    }

    fn transaction_span(&self, operation: &'static str) -> tracing::Span {
        tracing::info_span!(
            "db.transaction",
            otel.name = %format_args!("db.{operation}"),
            otel.kind = "client",
            otel.status_code = Empty,
            otel.status_description = Empty,
            db.system.name = self.backend.system_name(),
            db.namespace = %self.name,
            db.operation.name = operation,
        )
    }

    /// Registers this database's pool gauges, refreshed at every scrape of
    /// `/metrics` for as long as the pools are open.
    fn measured(self) -> Self {
        let pools = [
            ("writer", self.writer.clone()),
            ("reader", self.reader.clone()),
        ];
        let count = if self.backend == Backend::Sqlite {
            2
        } else {
            1
        };
        let db = self.name.to_string();
        crate::telemetry::on_scrape(move || {
            for (pool_name, pool) in pools.iter().take(count) {
                let labels = [("db", db.clone()), ("pool", (*pool_name).to_owned())];
                let size = f64::from(pool.size());
                let idle = pool.num_idle() as f64;
                let in_use = (size - idle).max(0.0);
                let state = |s: &'static str| {
                    let mut l = labels.to_vec();
                    l.push(("state", s.to_owned()));
                    l
                };
                metrics::gauge!("db_pool_connections", &state("idle")).set(idle);
                metrics::gauge!("db_pool_connections", &state("in_use")).set(in_use);
                metrics::gauge!("db_pool_max_connections", &labels)
                    .set(f64::from(pool.options().get_max_connections()));
            }
            !pools[0].1.is_closed()
        });
        self
    }

    /// A trivial query on each pool, for readiness.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.reader.execute("SELECT 1").await?;
        if self.backend == Backend::Sqlite {
            self.writer.execute("SELECT 1").await?;
        }
        Ok(())
    }

    /// The readiness check of a service whose only dependency is this
    /// database: `/readyz` answers 503 while it does not answer.
    pub fn readiness(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static {
        let db = self.clone();
        move || {
            let db = db.clone();
            Box::pin(async move {
                db.ping()
                    .await
                    .map_err(|_| "database unavailable".to_owned())
            })
        }
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// The database name in a URL: a SQLite file's stem or the PostgreSQL
/// database (the path), without query parameters.
pub fn database_name(url: &str) -> String {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let last = path.rsplit('/').next().unwrap_or(path);
    let stem = last.strip_suffix(".db").unwrap_or(last);
    if stem.is_empty() {
        "default".into()
    } else {
        stem.to_owned()
    }
}

fn sqlite_options(max: u32, timeout: Duration) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(timeout)
        // A file cannot drop a connection the way a server can, and the ping
        // sqlx sends before handing one out is a round trip to the connection's
        // worker thread (two thread wake-ups) before every query or transaction.
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // WAL lets readers run beside the writer; NORMAL sync is durable
                // across process crashes (only an OS crash can lose the last commits).
                conn.execute(
                    "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                     PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                )
                .await?;
                Ok(())
            })
        })
}

/// Adds `mode=rwc` so the file is created, and creates its directory.
fn sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if let Some(dir) = Path::new(path).parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|source| DbError::Directory {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let mut url = format!("sqlite://{path}");
    if query.is_empty() {
        url.push_str("?mode=rwc");
    } else {
        url.push('?');
        url.push_str(query);
        if !query.contains("mode=") {
            url.push_str("&mode=rwc");
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_come_from_the_url() {
        assert_eq!(database_name("sqlite://data/order.db?mode=rwc"), "order");
        assert_eq!(
            database_name("postgres://u:p@db:5432/emporium_user"),
            "emporium_user"
        );
        assert_eq!(
            database_name("postgres://u:p@db:5432/inv?sslmode=disable"),
            "inv"
        );
    }

    #[test]
    fn sqlite_urls_get_create_mode_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/user.db");
        let url = sqlite_url(&format!("sqlite://{}", path.display())).unwrap();
        assert!(url.ends_with("user.db?mode=rwc"), "{url}");
        assert!(path.parent().unwrap().is_dir());
        let url = sqlite_url(&format!("sqlite:{}?mode=ro", path.display())).unwrap();
        assert!(url.ends_with("?mode=ro"), "{url}");
    }

    #[tokio::test]
    async fn sqlite_opens_in_wal_mode() {
        let dir = tempfile::tempdir().unwrap();
        let config = DatabaseConfig {
            url: crate::config::Secret::new(format!(
                "sqlite://{}",
                dir.path().join("t.db").display()
            )),
            ..DatabaseConfig::sqlite_default("t")
        };
        let db = Db::connect(&config).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(db.writer())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        db.ping().await.unwrap();
    }
}
