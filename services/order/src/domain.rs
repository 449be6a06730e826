//! The order domain: newtypes that only hold valid values, the order, and the
//! saga's steps. Knows nothing of gRPC or SQL.

use std::fmt;

pub use emporium_common::types::{Currency, IdempotencyKey, Money, parse_uuid};
use uuid::Uuid;

/// Most lines one order may have.
pub const MAX_ITEMS: usize = 100;
/// Most units of one SKU in one order.
pub const MAX_QUANTITY: i64 = 10_000;

/// A stock-keeping unit: 1–64 characters of `A-Z 0-9 - _`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sku(String);

impl Sku {
    /// Parses a SKU (the inventory's rule, so a bad one fails here, not in the saga).
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > 64 {
            return Err("must be at most 64 characters");
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err("must contain only A-Z, 0-9, - and _");
        }
        Ok(Self(s.to_owned()))
    }

    /// The SKU.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A payment method name (`pm_card_ok`, …): 1–64 printable ASCII characters.
/// Whether the processor knows it is the payment service's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentMethod(String);

impl PaymentMethod {
    /// Parses a method name.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        if s.len() > 64 || !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be 1 to 64 printable ASCII characters");
        }
        Ok(Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One requested line: a SKU and how many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// What.
    pub sku: Sku,
    /// How many, 1..=10000.
    pub quantity: i64,
}

/// A validated CreateOrder.
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// Who the order is for.
    pub user_id: Uuid,
    /// The lines, distinct SKUs, in the client's order.
    pub lines: Vec<Line>,
    /// How to pay.
    pub payment_method: PaymentMethod,
    /// The client's key for safe retries.
    pub idempotency_key: IdempotencyKey,
}

impl NewOrder {
    /// The canonical text of everything but the key: equal for a true replay.
    pub fn fingerprint(&self) -> String {
        let mut s = format!("{}|{}|", self.user_id, self.payment_method.as_str());
        for l in &self.lines {
            s.push_str(l.sku.as_str());
            s.push(':');
            s.push_str(&l.quantity.to_string());
            s.push(',');
        }
        s
    }
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The saga is running or will be resumed.
    Pending,
    /// Paid and stock committed.
    Confirmed,
    /// Compensated or cancelled; `cancel_reason` says why.
    Cancelled,
}

impl Status {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Confirmed => "CONFIRMED",
            Status::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "PENDING" => Some(Status::Pending),
            "CONFIRMED" => Some(Status::Confirmed),
            "CANCELLED" => Some(Status::Cancelled),
            _ => None,
        }
    }
}

/// Why an order was cancelled: machine-readable, mirrored by the proto enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The user does not exist.
    UserNotFound,
    /// The user is deactivated.
    UserInactive,
    /// A SKU is unknown to the inventory.
    ProductNotFound,
    /// Not enough stock for at least one SKU.
    OutOfStock,
    /// The card was declined.
    PaymentDeclined,
    /// The payment method is not one the processor knows.
    PaymentMethodInvalid,
    /// The payment service failed or could not be reached in time.
    PaymentFailed,
    /// The customer cancelled a confirmed order.
    CustomerRequested,
    /// An admin cancelled the order.
    AdminRequested,
    /// Anything else (a peer unreachable, an unexpected answer).
    InternalError,
}

impl CancelReason {
    /// Stored form (the proto enum's suffix).
    pub fn as_str(self) -> &'static str {
        match self {
            CancelReason::UserNotFound => "USER_NOT_FOUND",
            CancelReason::UserInactive => "USER_INACTIVE",
            CancelReason::ProductNotFound => "PRODUCT_NOT_FOUND",
            CancelReason::OutOfStock => "OUT_OF_STOCK",
            CancelReason::PaymentDeclined => "PAYMENT_DECLINED",
            CancelReason::PaymentMethodInvalid => "PAYMENT_METHOD_INVALID",
            CancelReason::PaymentFailed => "PAYMENT_FAILED",
            CancelReason::CustomerRequested => "CUSTOMER_REQUESTED",
            CancelReason::AdminRequested => "ADMIN_REQUESTED",
            CancelReason::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        use CancelReason::*;
        [
            UserNotFound,
            UserInactive,
            ProductNotFound,
            OutOfStock,
            PaymentDeclined,
            PaymentMethodInvalid,
            PaymentFailed,
            CustomerRequested,
            AdminRequested,
            InternalError,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The next thing the saga has to do for an order. Stored after every step, so a
/// restarted process continues exactly where the last one stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Check that the user exists and is active.
    CheckUser,
    /// Reserve the stock (idempotent by order id).
    Reserve,
    /// Charge the card (idempotent by a key derived from the order id).
    Charge,
    /// Commit the reservation; then the order is CONFIRMED.
    Commit,
    /// Undo what was done (void or refund the charge, release the stock), then
    /// CANCELLED with the stored reason.
    Compensate,
    /// A confirmed order is being cancelled: refund, return the stock, CANCELLED.
    CancelConfirmed,
    /// Nothing left to do.
    Done,
}

impl Step {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::CheckUser => "check_user",
            Step::Reserve => "reserve",
            Step::Charge => "charge",
            Step::Commit => "commit",
            Step::Compensate => "compensate",
            Step::CancelConfirmed => "cancel_confirmed",
            Step::Done => "done",
        }
    }

    /// Parses the stored form.
    pub fn parse(s: &str) -> Option<Self> {
        use Step::*;
        [
            CheckUser,
            Reserve,
            Charge,
            Commit,
            Compensate,
            CancelConfirmed,
            Done,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of a stored order; price fields come from the reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// SKU as ordered.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Inventory's product id, once reserved.
    pub product_id: Option<String>,
    /// Product name, once reserved.
    pub name: Option<String>,
    /// Unit price in minor units, once reserved.
    pub unit_price: Option<i64>,
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Id (UUID v7).
    pub id: Uuid,
    /// Owner.
    pub user_id: Uuid,
    /// Lines.
    pub items: Vec<Item>,
    /// Where it stands.
    pub status: Status,
    /// The saga's next step.
    pub step: Step,
    /// How the customer pays.
    pub payment_method: String,
    /// The captured payment, once charged.
    pub payment_id: Option<String>,
    /// Currency of the total, once reserved.
    pub currency: Option<Currency>,
    /// Total in minor units, once reserved.
    pub total: Option<i64>,
    /// A Charge is about to be sent or was sent, and its outcome is not known.
    pub charge_unknown: bool,
    /// Why it was cancelled (also set while compensating).
    pub cancel_reason: Option<CancelReason>,
    /// Human-readable detail of the reason.
    pub cancel_detail: Option<String>,
    /// Bumped on every change.
    pub version: i64,
    /// Creation time, µs.
    pub created_at: i64,
    /// Last change, µs.
    pub updated_at: i64,
}

impl Order {
    /// A new order for `new`, PENDING before its first step, at `now` (µs).
    pub fn pending(new: &NewOrder, now: i64) -> Self {
        Order {
            id: Uuid::now_v7(),
            user_id: new.user_id,
            items: new
                .lines
                .iter()
                .map(|l| Item {
                    sku: l.sku.as_str().to_owned(),
                    quantity: l.quantity,
                    product_id: None,
                    name: None,
                    unit_price: None,
                })
                .collect(),
            status: Status::Pending,
            step: Step::CheckUser,
            payment_method: new.payment_method.as_str().to_owned(),
            payment_id: None,
            currency: None,
            total: None,
            charge_unknown: false,
            cancel_reason: None,
            cancel_detail: None,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    /// The key the saga charges with: one per order, so retries and recovery can
    /// never charge twice.
    pub fn charge_key(&self) -> String {
        format!("order-{}-charge", self.id)
    }

    /// The key of the refund that compensates or cancels the order.
    pub fn refund_key(&self) -> String {
        format!("order-{}-refund", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_keys_and_methods() {
        assert!(Sku::parse("ABC-123_X").is_ok());
        for bad in ["", "abc", "A B", "Ü", &"A".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IdempotencyKey::parse("k-1").is_ok());
        assert!(IdempotencyKey::parse("has space").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
        assert!(PaymentMethod::parse("pm_card_ok").is_ok());
        assert!(PaymentMethod::parse("").is_err());
    }

    #[test]
    fn stored_forms_round_trip() {
        for s in [Status::Pending, Status::Confirmed, Status::Cancelled] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for st in [
            "check_user",
            "reserve",
            "charge",
            "commit",
            "compensate",
            "cancel_confirmed",
            "done",
        ] {
            assert_eq!(Step::parse(st).unwrap().as_str(), st);
        }
        assert_eq!(
            CancelReason::parse("OUT_OF_STOCK"),
            Some(CancelReason::OutOfStock)
        );
        assert_eq!(CancelReason::parse("nope"), None);
    }
}
