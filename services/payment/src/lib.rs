//! Emporium's payment service: idempotent charges and refunds against a
//! simulated card processor, and VoidCharge, which settles a charge key without
//! charging.
//!
//! It owns the payments database and calls no other service; in the order saga
//! only the order service calls it. It is not a real payment gateway: the
//! [`processor`] decides by the test payment method's name. What it guarantees
//! is what the saga relies on: a retried Charge or Refund with the same key is a
//! replay that changes nothing, an order is charged successfully at most once
//! (the database holds that, not only the code), and refunds never add up to
//! more than the charge. [`ledger`] lets other services' tests check those
//! invariants on this service's database.
//!
//! Reading order: [`config`] → [`domain`] (newtypes, payments and replay
//! snapshots) → [`processor`] → [`service`] (the operations and the key claim
//! protocol) → [`store`] (SQL) → [`grpc`] (the transport) → [`error`] (how
//! failures become gRPC statuses). [`serve`] wires them together.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod processor;
pub mod service;
pub mod store;

use std::{future::Future, sync::Arc};

use emporium_common::{
    BoxError,
    db::Db,
    server::{Listeners, Server},
};

pub use config::Config;
pub use store::{OrderLedger, ledger};

use processor::{Processor, Simulated};

/// Opens the database, applies migrations, and serves on `listeners` with the
/// [`Simulated`] processor until `shutdown` completes and the drain is over.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    serve_with_processor(config, Arc::new(Simulated), listeners, shutdown).await
}

/// [`serve`] with another card processor (tests, chaos runs).
pub async fn serve_with_processor(
    config: Config,
    processor: Arc<dyn Processor>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let base = &config.base;
    let db = Db::connect(&base.database).await?;
    db.migrate(&store::MIGRATOR).await?;
    let payments = service::Payments::new(
        store::Store::new(db.clone()),
        processor,
        config.payment.claim_lease(),
    );
    #[cfg(feature = "testing")]
    let payments = payments.crash_after(config.payment.crash_point());

    let result = Server::for_service("payment", base)?
        .readiness(db.readiness())
        .add_service(grpc::PaymentApi::new(payments).into_server(base.server.max_message_bytes))
        .serve(listeners, shutdown)
        .await;
    db.close().await;
    Ok(result?)
}
