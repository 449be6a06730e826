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
    auth::Tokens,
    db::Db,
    server::{Listeners, Server},
};

pub use config::Config;

/// What stops the service from starting or serving.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Opens the database, applies migrations, bootstraps the admin, and serves on
/// `listeners` until `shutdown` completes and the drain is over.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let db = Db::connect(&config.database).await?;
    db.migrate(&store::MIGRATOR).await?;
    let users = service::Users::new(
        store::Store::new(db.clone()),
        Tokens::new(&config.auth)?,
        password::Hasher::new()?,
    );
    if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
        let admin = service::admin_from_config(email, password.expose())?;
        users.bootstrap_admin(admin).await?;
    }

    let ready_db = db.clone();
    let result = Server::new(&config.server, Tokens::new(&config.auth)?)
        .public_methods(grpc::PUBLIC_METHODS)
        .access_log(config.telemetry.access_log)
        .readiness(move || {
            let db = ready_db.clone();
            async move {
                db.ping()
                    .await
                    .map_err(|_| "database unavailable".to_owned())
            }
        })
        .add_service(grpc::UserApi::new(users).into_server(config.server.max_message_bytes))
        .serve(listeners, shutdown)
        .await;
    db.close().await;
    Ok(result?)
}

/// Binds the configured addresses and serves (what the binary runs).
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let listeners = Listeners::bind(&config.server).await?;
    tracing::info!(
        grpc = %listeners.grpc_addr(),
        admin = %listeners.admin_addr(),
        "emporium-user listening"
    );
    serve(config, listeners, shutdown).await
}
