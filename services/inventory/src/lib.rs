//! Emporium's inventory service: the product catalogue, stock levels and the
//! stock reservations of the order saga.
//!
//! It owns the inventory database and calls no other service. Its one promise is
//! that nothing is ever oversold: stock is changed only by conditional updates
//! inside transactions, never read and written back. It is not a pricing engine
//! (one catalogue currency, one price per product) nor a warehouse system.
//!
//! Reading order: [`config`] → [`domain`] (newtypes and rules) → [`service`] (the
//! operations) → [`store`] (SQL and transactions) → [`grpc`] (the transport) →
//! [`error`] (how failures become gRPC statuses). [`serve`] wires them together.

pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod service;
pub mod store;

use std::future::Future;

use emporium_common::{
    BoxError,
    config::DatabaseConfig,
    db::Db,
    server::{Listeners, Server},
};

pub use config::Config;
pub use store::StockLevel;

/// Opens the database, applies migrations, checks the catalogue currency, and
/// serves on `listeners` until `shutdown` completes and the drain is over.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), BoxError> {
    let base = &config.base;
    let db = Db::connect(&base.database).await?;
    db.migrate(&store::MIGRATOR).await?;
    let inventory = service::Inventory::new(
        store::Store::new(db.clone()),
        config.inventory.currency.clone(),
    );
    inventory.check_catalogue_currency().await?;

    let result = Server::for_service(base)?
        .readiness(db.readiness())
        .add_service(grpc::InventoryApi::new(inventory).into_server(base.server.max_message_bytes))
        .serve(listeners, shutdown)
        .await;
    db.close().await;
    Ok(result?)
}

/// Every product's stock counters, read straight from the database in
/// `database`. For invariant checks in tests and by operators: each level's
/// [`StockLevel::is_balanced`] must hold at all times.
pub async fn stock_levels(database: &DatabaseConfig) -> Result<Vec<StockLevel>, BoxError> {
    let db = Db::connect(database).await?;
    let levels = store::Store::new(db.clone()).stock_levels().await;
    db.close().await;
    Ok(levels?)
}
