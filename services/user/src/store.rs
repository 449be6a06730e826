//! The users table: sqlx runtime queries with `$n` placeholders that run on
//! SQLite and PostgreSQL alike. No rules here, only reads and writes.

use emporium_common::db::{Db, DbFailure, classify};
use sqlx::FromRow;

use crate::{
    domain::{Roles, User, UserId},
    error::Error,
};

/// The embedded migrations of this service.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Access to the users table.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

#[derive(FromRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    roles: String,
    active: i64,
    created_at: i64,
    updated_at: i64,
}

#[derive(FromRow)]
struct CredentialRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl TryFrom<UserRow> for User {
    type Error = Error;
    fn try_from(r: UserRow) -> Result<Self, Error> {
        let id = UserId::parse(&r.id).map_err(|_| {
            Error::Internal(format!("stored user id {:?} is not a uuid", r.id).into())
        })?;
        let roles = Roles::from_db(&r.roles).ok_or_else(|| {
            Error::Internal(format!("stored roles {:?} of {id} are invalid", r.roles).into())
        })?;
        Ok(User {
            id,
            email: r.email,
            name: r.name,
            roles,
            active: r.active != 0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

/// Column values an update writes; `None` keeps the stored value.
#[derive(Debug, Default)]
pub struct StoredChanges {
    /// Email as typed and its lowercase key, together.
    pub email: Option<(String, String)>,
    /// Name.
    pub name: Option<String>,
    /// New argon2 hash.
    pub password_hash: Option<String>,
    /// Roles in stored form.
    pub roles: Option<String>,
    /// Active flag.
    pub active: Option<bool>,
}

fn unique_is_email(e: sqlx::Error) -> Error {
    // email_key is the only unique column that a client value can collide with
    // (ids are generated here).
    match classify(&e) {
        DbFailure::UniqueViolation => Error::AlreadyExists,
        _ => Error::Database(e),
    }
}

impl Store {
    /// A store over the service's database.
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The database, for readiness checks.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Inserts a new user; a taken email is [`Error::AlreadyExists`].
    pub async fn insert(
        &self,
        user: &User,
        email_key: &str,
        password_hash: &str,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO users (id, email, email_key, name, password_hash, roles, active, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(user.id.to_string())
        .bind(&user.email)
        .bind(email_key)
        .bind(&user.name)
        .bind(password_hash)
        .bind(user.roles.to_db())
        .bind(i64::from(user.active))
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(self.db.writer())
        .await
        .map_err(unique_is_email)?;
        Ok(())
    }

    /// One user by id.
    pub async fn get(&self, id: UserId) -> Result<Option<User>, Error> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, email, name, roles, active, created_at, updated_at FROM users WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(self.db.reader())
        .await?;
        row.map(User::try_from).transpose()
    }

    /// A user and their password hash, by lowercase email.
    pub async fn credentials(&self, email_key: &str) -> Result<Option<(User, String)>, Error> {
        let row: Option<CredentialRow> = sqlx::query_as(
            "SELECT id, email, name, roles, active, created_at, updated_at, password_hash \
             FROM users WHERE email_key = $1",
        )
        .bind(email_key)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|r| Ok((User::try_from(r.user)?, r.password_hash)))
            .transpose()
    }

    /// Applies the present changes in one statement and returns the new user,
    /// or `None` when there is no such user.
    pub async fn update(
        &self,
        id: UserId,
        c: StoredChanges,
        now: i64,
    ) -> Result<Option<User>, Error> {
        let (email, email_key) = c.email.unzip();
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET \
               email = COALESCE($2, email), \
               email_key = COALESCE($3, email_key), \
               name = COALESCE($4, name), \
               password_hash = COALESCE($5, password_hash), \
               roles = COALESCE($6, roles), \
               active = COALESCE($7, active), \
               updated_at = $8 \
             WHERE id = $1 \
             RETURNING id, email, name, roles, active, created_at, updated_at",
        )
        .bind(id.to_string())
        .bind(email)
        .bind(email_key)
        .bind(c.name)
        .bind(c.password_hash)
        .bind(c.roles)
        .bind(c.active.map(i64::from))
        .bind(now)
        .fetch_optional(self.db.writer())
        .await
        .map_err(unique_is_email)?;
        row.map(User::try_from).transpose()
    }

    /// Deletes a user; `false` when there was none.
    pub async fn delete(&self, id: UserId) -> Result<bool, Error> {
        let done = sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(id.to_string())
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Up to `limit` users after the `(created_at, id)` cursor, in that order.
    pub async fn list(&self, after: Option<(i64, String)>, limit: u32) -> Result<Vec<User>, Error> {
        let rows: Vec<UserRow> = match after {
            None => {
                sqlx::query_as(
                    "SELECT id, email, name, roles, active, created_at, updated_at FROM users \
                     ORDER BY created_at, id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(self.db.reader())
                .await?
            }
            Some((created_at, id)) => {
                sqlx::query_as(
                    "SELECT id, email, name, roles, active, created_at, updated_at FROM users \
                     WHERE created_at > $1 OR (created_at = $1 AND id > $2) \
                     ORDER BY created_at, id LIMIT $3",
                )
                .bind(created_at)
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(self.db.reader())
                .await?
            }
        };
        rows.into_iter().map(User::try_from).collect()
    }
}
