//! Contract types: the values every service's contract speaks in, defined once
//! so their rules cannot drift apart — ids ([`uuid_id!`], [`parse_uuid`]),
//! money ([`Currency`], validated against ISO 4217; [`Money`], and its proto
//! form converted in one place), and the [`IdempotencyKey`] that makes a
//! retried write a replay. Paging lives beside them in `crate::paging`.
//!
//! Each parses ("parse, don't validate"): a value of the type is valid, and the
//! error is a lowercase description a field violation can carry.

mod ids;
mod key;
mod money;

pub use self::{
    ids::{UUID_HINT, parse_uuid},
    key::IdempotencyKey,
    money::{Currency, Money},
};
