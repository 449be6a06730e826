//! The platform kit every Emporium service stands on.
//!
//! It owns everything that is not a service's business: configuration, logs,
//! traces and metrics, the gRPC server bootstrap (health, reflection, graceful
//! shutdown, the admin HTTP port), the tower stack every request passes
//! through, access tokens, the mapping of errors to gRPC statuses, the database
//! pool and the channels to peers. It holds no business rules and no SQL of any
//! service.
//!
//! Rooms, and the order to read them in; a room uses only rooms listed before
//! it (docs/architecture.md draws the arrows):
//!
//! 1. [`rpc`], [`time`], [`tls`], [`status`] — leaves: the gRPC vocabulary,
//!    time as stored and sent, TLS material, errors as gRPC statuses;
//! 2. [`config`] — settings, defaults < file < environment;
//! 3. [`telemetry`] — logs, traces, metrics, and how a call's end is observed;
//! 4. [`auth`] — access tokens and the verified [`auth::Caller`];
//! 5. [`db`] — the database handle and transactions;
//! 6. [`stack`] — the server's tower layers, one file per concern;
//! 7. [`client`] — channels to peers;
//! 8. [`server`] — the bootstrap that serves a service behind the stack;
//! 9. [`binary`] — the `main` (and `health` probe) of every service binary.
//!
//! [`types`] holds the contract types (ids, money, idempotency keys) and
//! [`paging`] the page sizes and tokens of List RPCs; both are leaves.
//! [`testing`] exists only in test builds (the `testing` feature).

pub mod auth;
pub mod binary;
pub mod client;
pub mod config;
pub mod db;
pub mod paging;
pub mod rpc;
pub mod server;
pub mod stack;
pub mod status;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time;
pub mod tls;
pub mod types;

/// The error type of start-up and serving: anything, with its cause chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
