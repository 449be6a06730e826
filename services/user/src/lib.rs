//! Emporium's user service: accounts, sign-in and access tokens.
//!
//! It owns the users database and is the only issuer of access tokens, which
//! every service verifies. It calls no other service.
//!
//! Reading order: [`config`] → [`domain`] (newtypes and rules) → [`service`] (the
//! operations) → [`store`] (SQL) → [`grpc`] (the transport) → [`error`] (how
//! failures become gRPC statuses). [`serve`] wires them together.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod password;
pub mod service;
pub mod store;

use std::future::Future;

use emporium_common::{
    BoxError,
    auth::Tokens,
    db::Db,
    server::{Listeners, Server},
};

pub use config::Config;

/// Opens the database, applies migrations, bootstraps the admin, and serves on
/// `listeners` until `shutdown` completes and the drain is over.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let base = &config.base;
    let db = Db::connect(&base.database).await?;
    db.migrate(&store::MIGRATOR).await?;
    let users = service::Users::new(
        store::Store::new(db.clone()),
        Tokens::new(&base.auth)?,
        password::Hasher::new()?,
    );
    if let (Some(email), Some(password)) = (&config.user.admin_email, &config.user.admin_password) {
        let admin = service::admin_from_config(email, password.expose())?;
        users.bootstrap_admin(admin).await?;
    }

    let result = Server::for_service(base)?
        .public_methods(grpc::PUBLIC_METHODS)
        .readiness(db.readiness())
        .add_service(grpc::UserApi::new(users).into_server(base.server.max_message_bytes))
        .serve(listeners, shutdown)
        .await;
    db.close().await;
    Ok(result?)
}
