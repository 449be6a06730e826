//! End-to-end tests of the order saga: all four services in-process on real
//! sockets, each with its own database, on SQLite and on PostgreSQL (the
//! testkit's [`Stack`]). After every scenario the platform's invariants are
//! checked against each service's own database.

mod crash;
mod hostile;
mod matrix;
mod oversell;
mod replicas;
mod saga;
mod shedding;
mod watch;
mod watch_limits;

pub(crate) use emporium_proto::order::v1 as pb;
pub(crate) use emporium_testkit::{
    Stack,
    stack::{reason, status},
};
