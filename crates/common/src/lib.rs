//! The platform kit every Emporium service stands on.
//!
//! It owns everything that is not a service's business: configuration, logs and
//! metrics, the gRPC server bootstrap (health, reflection, graceful shutdown, the
//! admin HTTP port), the tower stack every request passes through, access tokens,
//! the mapping of errors to gRPC statuses, the database pool and the channels to
//! peers. It holds no business rules and no SQL of any service.
//!
//! Services reach tonic through [`rpc`], so the gRPC library stays pinned here.
//!
//! Reading order: [`config`] → [`telemetry`] (and [`trace`]) → [`server`] (and the [`layers`] it
//! stacks) → [`auth`] → [`error`] → [`db`] → [`client`] → [`binary`] (the
//! shared `main`); [`paging`] and [`time`]
//! are small helpers for the transport layer; [`tls`] is the optional (mutual) TLS
//! of the gRPC port and of the channels to peers.

pub mod auth;
pub mod binary;
pub mod client;
pub mod config;
pub mod db;
pub mod error;
pub mod layers;
pub mod paging;
pub mod rpc;
pub mod server;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod trace;
