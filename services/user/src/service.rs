//! The user service's rules: who may do what, and in which order things happen.
//! Knows nothing of gRPC; talks to the database only through [`Store`].

use emporium_common::{
    auth::{Caller, IssuedToken, Tokens},
    paging::{self, PageSize, TimeCursor},
    status::InternalError,
    time::now_micros,
};

use crate::{
    domain::{Email, NewUser, Password, Roles, User, UserChanges, UserId},
    error::Error,
    password::Hasher,
    store::{Store, StoredChanges},
};

/// One page of users.
pub type Page = paging::Page<User, TimeCursor>;

/// The user service's operations.
#[derive(Debug, Clone)]
pub struct Users {
    store: Store,
    tokens: Tokens,
    hasher: Hasher,
}

const BAD_CREDENTIALS: &str = "invalid email or password";
/// What a deactivated account's token gets, whatever it calls.
const DEACTIVATED: &str = "this account is deactivated; its tokens no longer work";

impl Users {
    /// The service over a migrated store.
    pub fn new(store: Store, tokens: Tokens, hasher: Hasher) -> Self {
        Self {
            store,
            tokens,
            hasher,
        }
    }

    /// The store, for readiness checks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Signs a customer up.
    pub async fn create(&self, new: NewUser) -> Result<User, Error> {
        self.insert(new, Roles::customer()).await
    }

    async fn insert(&self, new: NewUser, roles: Roles) -> Result<User, Error> {
        let hash = self.hasher.hash(new.password.expose()).await?;
        let now = now_micros();
        let user = User {
            id: UserId::generate(),
            email: new.email.as_str().to_owned(),
            name: new.name.as_str().to_owned(),
            roles,
            active: true,
            created_at: now,
            updated_at: now,
        };
        self.store.insert(&user, &new.email.key(), &hash).await?;
        tracing::info!(user_id = %user.id, "user created");
        Ok(user)
    }

    /// Creates the configured admin unless a user with that email exists (which
    /// is left exactly as it is: configuration never resets a password).
    pub async fn bootstrap_admin(&self, new: NewUser) -> Result<(), Error> {
        match self.insert(new, Roles::admin()).await {
            Ok(user) => {
                tracing::info!(user_id = %user.id, "bootstrap admin created");
                Ok(())
            }
            Err(Error::AlreadyExists) => {
                tracing::info!("bootstrap admin already exists; left unchanged");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Checks credentials and issues a token. Unknown email, wrong password and
    /// deactivated user look the same from outside, in answer and in time.
    pub async fn authenticate(
        &self,
        email: &str,
        password: &str,
    ) -> Result<(IssuedToken, User), Error> {
        // An address that fails validation belongs to no one; it is not looked
        // up (PostgreSQL would refuse one with NUL), and is answered like any
        // unknown email, after the same hashing work.
        let found = match Email::parse(email) {
            Ok(email) => self.store.credentials(&email.key()).await?,
            Err(_) => None,
        };
        let (user, hash) = match &found {
            Some((user, hash)) => (Some(user), Some(hash.as_str())),
            None => (None, None),
        };
        let ok = self.hasher.verify(password, hash).await?;
        match user {
            Some(user) if ok && user.active => {
                let token = self
                    .tokens
                    .issue(user.id.0, user.roles.as_slice())
                    .map_err(|e| {
                        Error::Internal(InternalError::caused_by("signing the access token", e))
                    })?;
                Ok((token, user.clone()))
            }
            _ => Err(Error::Unauthenticated(BAD_CREDENTIALS)),
        }
    }

    /// The caller as the accounts stand now. A user token carries the roles of
    /// when it was issued; this service owns the accounts, so it believes the
    /// database instead: a deactivated or deleted user's token stops working here
    /// at once, and a demoted admin's token loses its admin rights at once (other
    /// services honour a token until it expires, `auth.token_ttl_secs`).
    /// Service tokens name a user the calling service acts for; they are taken
    /// as they are.
    async fn current(&self, caller: &Caller) -> Result<Caller, Error> {
        if caller.service.is_some() {
            return Ok(caller.clone());
        }
        match self.store.get(UserId(caller.user_id)).await? {
            Some(user) if user.active => Ok(Caller {
                roles: user.roles.as_slice().to_vec(),
                ..caller.clone()
            }),
            Some(_) => Err(Error::Unauthenticated(DEACTIVATED)),
            // Deleted (or never stored: tokens minted by the operator's tools):
            // nothing to check against, so the signed token stands until it
            // expires.
            None => Ok(caller.clone()),
        }
    }

    /// One user: the caller themself, or anyone for an admin. The permission check
    /// comes first, so a customer learns nothing about other ids.
    pub async fn get(&self, caller: &Caller, id: UserId) -> Result<User, Error> {
        // Users reading themselves (most calls): the row that shows the caller
        // is still active is the answer, so it is read once, not twice.
        if caller.service.is_none() && caller.user_id == id.0 {
            return match self.store.get(id).await? {
                Some(user) if user.active => Ok(user),
                Some(_) => Err(Error::Unauthenticated(DEACTIVATED)),
                None => Err(Error::NotFound),
            };
        }
        let caller = &self.current(caller).await?;
        ensure_may_act_for(caller, id)?;
        self.store.get(id).await?.ok_or(Error::NotFound)
    }

    /// Changes the present fields.
    pub async fn update(
        &self,
        caller: &Caller,
        id: UserId,
        changes: UserChanges,
    ) -> Result<User, Error> {
        let caller = &self.current(caller).await?;
        ensure_may_act_for(caller, id)?;
        if changes.needs_admin() && !caller.is_admin() {
            return Err(Error::PermissionDenied(
                "only admins may change roles or active",
            ));
        }
        let password_hash = match &changes.password {
            Some(p) => Some(self.hasher.hash(p.expose()).await?),
            None => None,
        };
        let stored = StoredChanges {
            email: changes
                .email
                .as_ref()
                .map(|e| (e.as_str().to_owned(), e.key())),
            name: changes.name.map(|n| n.as_str().to_owned()),
            password_hash,
            roles: changes.roles.map(|r| r.to_db()),
            active: changes.active,
        };
        let user = self
            .store
            .update(id, stored, now_micros())
            .await?
            .ok_or(Error::NotFound)?;
        tracing::info!(user_id = %user.id, "user updated");
        Ok(user)
    }

    /// Deletes a user.
    pub async fn delete(&self, caller: &Caller, id: UserId) -> Result<(), Error> {
        let caller = &self.current(caller).await?;
        ensure_may_act_for(caller, id)?;
        if !self.store.delete(id).await? {
            return Err(Error::NotFound);
        }
        tracing::info!(user_id = %id, "user deleted");
        Ok(())
    }

    /// One page of users, admin-only.
    pub async fn list(
        &self,
        caller: &Caller,
        after: Option<TimeCursor>,
        size: PageSize,
    ) -> Result<Page, Error> {
        if !self.current(caller).await?.is_admin() {
            return Err(Error::PermissionDenied("only admins may list users"));
        }
        let users = self
            .store
            .list(after.map(TimeCursor::to_row), size.fetch())
            .await?;
        Ok(Page::from_fetched(users, size, |u| TimeCursor {
            created_at: u.created_at,
            id: u.id.0,
        }))
    }
}

fn ensure_may_act_for(caller: &Caller, id: UserId) -> Result<(), Error> {
    if caller.may_act_for(id.0) {
        Ok(())
    } else {
        Err(Error::PermissionDenied(
            "customers may act only on their own user",
        ))
    }
}

/// Parses the configured bootstrap admin.
pub fn admin_from_config(email: &str, password: &str) -> Result<NewUser, String> {
    Ok(NewUser {
        email: Email::parse(email).map_err(|e| format!("admin_email {e}"))?,
        name: crate::domain::UserName::parse("Administrator").map_err(str::to_owned)?,
        password: Password::parse(password).map_err(|e| format!("admin_password {e}"))?,
    })
}
