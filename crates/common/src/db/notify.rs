//! Change notices between the processes that share one PostgreSQL database
//! (LISTEN/NOTIFY), so a replica learns of a change another replica made.
//!
//! A notice is sent inside the writing transaction and delivered only if it
//! commits. Notices are not stored: while a listener's connection is down they
//! are lost, so the listener reports a [`Notice::Gap`] after reconnecting and
//! the service reads back what changed meanwhile. On SQLite one process owns the
//! file, so there is nobody to tell: sending does nothing, and there is no
//! listener.

use sqlx::{AnyConnection, postgres::PgListener};

use super::{Backend, Db};

/// What a [`Listener`] heard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A notice with its payload.
    Changed(String),
    /// The connection was lost and is back: notices sent meanwhile are gone.
    Gap,
}

/// Receives the notices of one channel.
#[derive(Debug)]
pub struct Listener {
    inner: PgListener,
}

impl Listener {
    /// The next notice; waits for one.
    pub async fn next(&mut self) -> Result<Notice, sqlx::Error> {
        Ok(match self.inner.try_recv().await? {
            Some(n) => Notice::Changed(n.payload().to_owned()),
            None => Notice::Gap,
        })
    }
}

impl Db {
    /// Sends `payload` on `channel` when the transaction on `conn` commits
    /// (PostgreSQL); nothing on SQLite.
    pub async fn notify(
        &self,
        conn: &mut AnyConnection,
        channel: &str,
        payload: &str,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// `write`, one INSERT or UPDATE of rows with a text `id`, made to also
    /// send each written row's id on a channel when it commits: on PostgreSQL
    /// `WITH written AS (write RETURNING id) SELECT pg_notify($n, id) …`, with
    /// the channel bound as parameter `channel_param` (bind it last); on SQLite
    /// `write` itself, with nothing more to bind. Either way the rows affected
    /// are the rows written, and no transaction or second statement is needed.
    pub fn with_notice(&self, write: &str, channel_param: usize) -> String {
        match self.backend {
            Backend::Postgres => format!(
                "WITH written AS ({write} RETURNING id) \
                 SELECT pg_notify(${channel_param}, id) FROM written"
            ),
            Backend::Sqlite => write.to_owned(),
        }
    }

    /// Listens on `channel` over a connection of its own (PostgreSQL); `None`
    /// on SQLite.
    pub async fn listen(&self, channel: &str) -> Result<Option<Listener>, sqlx::Error> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let mut inner = PgListener::connect(url).await?;
        inner.listen(channel).await?;
        Ok(Some(Listener { inner }))
    }
}
