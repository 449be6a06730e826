//! End-to-end tests of the order saga: all four services in-process on real
//! sockets, each with its own database, on SQLite and on PostgreSQL. After every
//! scenario `check_invariants` reads each service's own database.

mod crash;
mod hostile;
mod invariants;
mod matrix;
mod oversell;
mod saga;
mod support;
mod watch;

pub(crate) use invariants::check_invariants;
pub(crate) use support::*;
