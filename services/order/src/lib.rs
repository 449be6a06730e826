//! Emporium's order service: places orders through the order saga across the
//! user, inventory and payment services, and lets customers read, cancel and
//! watch them.
//!
//! It owns the orders database and calls its peers only over gRPC, through the
//! small traits in [`ports`]. The saga's progress is stored at every step, so an
//! order service stopped at any point resumes or compensates every unfinished
//! order when it (or another replica) runs again.
//!
//! Reading order: [`config`] → [`domain`] (steps, reasons, newtypes) → [`saga`]
//! (the heart) → [`ports`] (the peers, in the saga's words) → [`lease`] (who
//! drives which saga) → [`service`] (the operations) → [`store`] (SQL) →
//! [`grpc`] (the transport) → [`error`].

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod lease;
pub mod ports;
pub mod saga;
pub mod service;
pub mod store;

use std::{future::Future, time::Duration};

use emporium_common::{
    BoxError,
    auth::Tokens,
    db::Db,
    server::{Listeners, Server},
};
use tokio::sync::{broadcast, watch};

pub use config::Config;

/// Serves with the real gRPC peers from `config.peers`.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let peers = ports::GrpcPeers::new(
        Tokens::new(&config.auth())?,
        &config.peers.user,
        &config.peers.inventory,
        &config.peers.payment,
    )?
    .into_peers();
    serve_with_peers(config, peers, listeners, shutdown).await
}

/// Opens the database, applies migrations, resumes unfinished sagas, and serves
/// on `listeners` until `shutdown` completes and the drain is over.
pub async fn serve_with_peers(
    config: Config,
    peers: ports::Peers,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let base = &config.base;
    let db = Db::connect(&base.database).await?;
    db.migrate(&store::MIGRATOR).await?;
    let (events, _) = broadcast::channel(1024);
    let s = &config.saga;
    let timing = saga::Timing {
        retry_budget: Duration::from_millis(s.retry_budget_ms),
        patience: Duration::from_millis(s.give_up_after_ms),
        #[cfg(feature = "testing")]
        crash_at: s.crash_at.clone(),
    };
    let leases = lease::Leases::new(
        db.clone(),
        Duration::from_millis(s.lease_ms),
        Duration::from_millis(s.sweep_interval_ms),
        Duration::from_millis(s.max_pause_ms),
    );
    let store = store::Store::new(db.clone());
    let saga = saga::Saga::new(store.clone(), leases, peers, timing, events.clone());
    let (halting, stopping) = (saga.clone(), saga.clone());

    // The sweeper: at start (recovery after a crash) and then periodically.
    let sweeper = {
        let saga = saga.clone();
        let every = Duration::from_millis(config.saga.sweep_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match saga.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(resumed = n, "sweeper resumed unfinished orders"),
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        })
    };

    // Other replicas' changes reach this one's watchers (PostgreSQL).
    let follower = tokio::spawn(service::follow_changes(
        db.clone(),
        store.clone(),
        events.clone(),
    ));

    let (draining_tx, draining) = watch::channel(false);
    let orders = service::Orders::new(
        store,
        saga,
        events,
        Duration::from_millis(config.saga.create_wait_ms),
        draining,
    );
    let grace = base.server.shutdown_grace();
    let result = Server::for_service("order", base)?
        .readiness(db.readiness())
        .add_service(grpc::OrderApi::new(orders).into_server(base.server.max_message_bytes))
        .serve(listeners, async move {
            shutdown.await;
            // Open watches end now, so they do not hold the drain open.
            let _ = draining_tx.send(true);
            // No new claims; runs hand their orders off at their next saved step.
            halting.halt();
        })
        .await;
    // Sagas reach a saved step and hand their orders off, so another replica
    // resumes them at once rather than when the leases run out.
    sweeper.abort();
    stopping.wait_idle(grace).await;
    follower.abort();
    db.close().await;
    Ok(result?)
}
