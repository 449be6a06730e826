//! The payment domain: newtypes that can only hold valid values (parse, don't
//! validate), payments and refunds, and the snapshots that idempotent replays
//! return. Knows nothing of gRPC or SQL.

pub use emporium_common::types::{Currency, IdempotencyKey, Money};

emporium_common::uuid_id!(
    /// A payment's id, generated here.
    PaymentId
);
emporium_common::uuid_id!(
    /// A refund's id, generated here.
    RefundId
);
emporium_common::uuid_id!(
    /// The order a payment is for; the order service owns it.
    OrderId
);
emporium_common::uuid_id!(
    /// The customer who pays; the user service owns it.
    UserId
);

/// The test payment methods of the simulated processor (see the proto). Any
/// other name is refused before anything is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentMethod {
    /// `pm_card_ok`: approved.
    CardOk,
    /// `pm_card_declined`: declined, CARD_DECLINED.
    CardDeclined,
    /// `pm_card_insufficient_funds`: declined, INSUFFICIENT_FUNDS.
    CardInsufficientFunds,
    /// `pm_card_error`: the processor fails transiently, every time.
    CardError,
}

impl PaymentMethod {
    /// Every method, for error messages and tests.
    pub const ALL: [PaymentMethod; 4] = [
        PaymentMethod::CardOk,
        PaymentMethod::CardDeclined,
        PaymentMethod::CardInsufficientFunds,
        PaymentMethod::CardError,
    ];

    /// Parses a method name.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.is_empty() {
            return Err("is required");
        }
        Self::ALL.into_iter().find(|m| m.as_str() == s).ok_or(
            "unknown payment method: use pm_card_ok, pm_card_declined, \
             pm_card_insufficient_funds or pm_card_error",
        )
    }

    /// The name as sent and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentMethod::CardOk => "pm_card_ok",
            PaymentMethod::CardDeclined => "pm_card_declined",
            PaymentMethod::CardInsufficientFunds => "pm_card_insufficient_funds",
            PaymentMethod::CardError => "pm_card_error",
        }
    }
}

/// Why money is given back: 1 to 500 characters, not all blank, no control
/// characters. Kept exactly as sent: Refund.reason echoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundReason(String);

impl RefundReason {
    /// Parses a reason.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if s.trim().is_empty() {
            return Err("is required");
        }
        if s.chars().count() > 500 {
            return Err("must be at most 500 characters");
        }
        if s.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        Ok(Self(s.to_owned()))
    }

    /// The reason.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a card was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeclineReason {
    /// The issuer refused without saying why.
    CardDeclined,
    /// The card lacks the funds.
    InsufficientFunds,
}

impl DeclineReason {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            DeclineReason::CardDeclined => "CARD_DECLINED",
            DeclineReason::InsufficientFunds => "INSUFFICIENT_FUNDS",
        }
    }

    /// Parses the stored form.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "CARD_DECLINED" => Some(DeclineReason::CardDeclined),
            "INSUFFICIENT_FUNDS" => Some(DeclineReason::InsufficientFunds),
            _ => None,
        }
    }

    /// Words for messages.
    pub fn describe(self) -> &'static str {
        match self {
            DeclineReason::CardDeclined => "the card was declined",
            DeclineReason::InsufficientFunds => "the card has insufficient funds",
        }
    }
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentStatus {
    /// Money taken, nothing refunded.
    Captured,
    /// Card declined, no money taken (final).
    Declined,
    /// Some of the money given back.
    PartiallyRefunded,
    /// All of the money given back (final).
    Refunded,
}

impl PaymentStatus {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Captured => "CAPTURED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::PartiallyRefunded => "PARTIALLY_REFUNDED",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses the stored form.
    pub fn from_db(s: &str) -> Option<Self> {
        match s {
            "CAPTURED" => Some(PaymentStatus::Captured),
            "DECLINED" => Some(PaymentStatus::Declined),
            "PARTIALLY_REFUNDED" => Some(PaymentStatus::PartiallyRefunded),
            "REFUNDED" => Some(PaymentStatus::Refunded),
            _ => None,
        }
    }

    /// The status of a captured payment of `amount` after `refunded` came back.
    pub fn after_refunds(amount: i64, refunded: i64) -> Self {
        match refunded {
            0 => PaymentStatus::Captured,
            r if r >= amount => PaymentStatus::Refunded,
            _ => PaymentStatus::PartiallyRefunded,
        }
    }
}

/// Money given back from a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// Id.
    pub id: RefundId,
    /// The payment it belongs to.
    pub payment_id: PaymentId,
    /// Its place among the payment's refunds, from 1, in the order they were
    /// applied.
    pub seq: i64,
    /// The amount, in the payment's currency.
    pub amount: Money,
    /// Why.
    pub reason: String,
    /// When, µs since the epoch.
    pub created_at: i64,
}

/// One charge attempt that reached a decision, with its refunds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Id.
    pub id: PaymentId,
    /// The order paid for.
    pub order_id: OrderId,
    /// The customer who pays.
    pub user_id: UserId,
    /// The amount charged (or asked for, when declined).
    pub amount: Money,
    /// Sum of `refunds`, minor units of `amount`'s currency.
    pub amount_refunded: i64,
    /// Where it is in its life.
    pub status: PaymentStatus,
    /// Set exactly when `status` is DECLINED.
    pub decline_reason: Option<DeclineReason>,
    /// The method charged.
    pub payment_method: PaymentMethod,
    /// Refunds, in the order they were applied.
    pub refunds: Vec<Refund>,
    /// When the charge was decided, µs since the epoch.
    pub created_at: i64,
    /// Last change, µs since the epoch.
    pub updated_at: i64,
}

impl Payment {
    /// The payment as Charge first returned it: refunds come later, so they are
    /// left out. Everything else a charge records never changes, which is what
    /// makes a replay byte-identical to the first answer.
    pub fn as_charged(&self) -> Payment {
        let status = if self.status == PaymentStatus::Declined {
            PaymentStatus::Declined
        } else {
            PaymentStatus::Captured
        };
        Payment {
            amount_refunded: 0,
            status,
            refunds: Vec::new(),
            updated_at: self.created_at,
            ..self.clone()
        }
    }

    /// The payment as it was right after refund number `seq` (what that Refund
    /// call returned), or `None` when there is no such refund.
    pub fn as_of_refund(&self, seq: i64) -> Option<Payment> {
        let refunds: Vec<Refund> = self
            .refunds
            .iter()
            .filter(|r| r.seq <= seq)
            .cloned()
            .collect();
        let last = refunds.last().filter(|r| r.seq == seq)?;
        let refunded = refunds.iter().map(|r| r.amount.units()).sum();
        Some(Payment {
            amount_refunded: refunded,
            status: PaymentStatus::after_refunds(self.amount.units(), refunded),
            updated_at: last.created_at,
            refunds,
            ..self.clone()
        })
    }
}

/// A validated Charge request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCharge {
    /// The order to pay for.
    pub order_id: OrderId,
    /// Who pays.
    pub user_id: UserId,
    /// How much.
    pub amount: Money,
    /// With what.
    pub payment_method: PaymentMethod,
    /// The caller's key for this logical charge.
    pub idempotency_key: IdempotencyKey,
}

impl NewCharge {
    /// Everything that makes two requests "the same request" for an idempotency
    /// key, in one canonical string (the key itself excluded).
    pub fn fingerprint(&self) -> String {
        format!(
            "charge/v1 order_id={} user_id={} amount={} payment_method={}",
            self.order_id,
            self.user_id,
            self.amount,
            self.payment_method.as_str()
        )
    }
}

/// A validated VoidCharge request: settle a charge key without charging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeVoid {
    /// The order the charge key is for.
    pub order_id: OrderId,
    /// The order's customer.
    pub user_id: UserId,
    /// The key the Charge was (or would have been) sent with.
    pub idempotency_key: IdempotencyKey,
}

/// How VoidCharge settled a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// A Charge with the key was decided: this payment (as it is now).
    Charged(Payment),
    /// No Charge was decided with the key, and none ever will be.
    Voided,
}

/// A validated Refund request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefund {
    /// The payment to refund.
    pub payment_id: PaymentId,
    /// How much; `None` is everything that is left.
    pub amount: Option<Money>,
    /// Why.
    pub reason: RefundReason,
    /// The caller's key for this logical refund.
    pub idempotency_key: IdempotencyKey,
}

impl NewRefund {
    /// The canonical form of the request for its idempotency key. "The rest" and
    /// an explicit amount are different requests even when they come to the same
    /// number.
    pub fn fingerprint(&self) -> String {
        let amount = match &self.amount {
            Some(m) => m.to_string(),
            None => "rest".to_owned(),
        };
        format!(
            "refund/v1 payment_id={} amount={amount} reason={:?}",
            self.payment_id,
            self.reason.as_str()
        )
    }
}

/// Filters of a listing; `None` is "any".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only this user's payments.
    pub user_id: Option<UserId>,
    /// Only this order's payments.
    pub order_id: Option<OrderId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(units: i64) -> Money {
        Money::new(Currency::parse("EUR").unwrap(), units)
    }

    #[test]
    fn ids() {
        let id = PaymentId::generate();
        assert_eq!(PaymentId::parse(&id.to_string()), Ok(id));
        assert_eq!(PaymentId::parse(""), Err("is required"));
        assert!(OrderId::parse("not-a-uuid").is_err());
        assert!(UserId::parse(&id.0.simple().to_string()).is_err());
    }

    #[test]
    fn money_and_currency() {
        assert!(Currency::parse("EUR").is_ok());
        for bad in ["", "eur", "EU", "EURO", "E1R", "ÄUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(eur(1999).to_string(), "EUR 1999");
        assert!(Money::positive_units(0).is_err());
        assert!(Money::positive_units(-5).is_err());
    }

    #[test]
    fn methods_keys_and_reasons() {
        for m in PaymentMethod::ALL {
            assert_eq!(PaymentMethod::parse(m.as_str()), Ok(m));
        }
        assert!(PaymentMethod::parse("pm_card_visa").is_err());
        assert!(PaymentMethod::parse("").is_err());

        // One rule for every key (emporium_common::types): no spaces.
        assert!(IdempotencyKey::parse("order-1/charge#2").is_ok());
        assert!(IdempotencyKey::parse("order-1/charge #2").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(129),
            "tab\there".into(),
            "ü".into(),
        ] {
            assert!(IdempotencyKey::parse(&bad).is_err(), "{bad:?}");
        }

        assert_eq!(
            RefundReason::parse(" cancelled ").unwrap().as_str(),
            " cancelled "
        );
        assert!(RefundReason::parse("   ").is_err());
        assert!(RefundReason::parse(&"r".repeat(501)).is_err());
        assert!(RefundReason::parse("a\nb").is_err());
    }

    fn refunded_payment() -> Payment {
        let id = PaymentId::generate();
        let refund = |seq: i64, units: i64, at: i64| Refund {
            id: RefundId::generate(),
            payment_id: id,
            seq,
            amount: eur(units),
            reason: "r".into(),
            created_at: at,
        };
        Payment {
            id,
            order_id: OrderId::generate(),
            user_id: UserId::generate(),
            amount: eur(1000),
            amount_refunded: 1000,
            status: PaymentStatus::Refunded,
            decline_reason: None,
            payment_method: PaymentMethod::CardOk,
            refunds: vec![refund(1, 300, 20), refund(2, 700, 30)],
            created_at: 10,
            updated_at: 30,
        }
    }

    #[test]
    fn snapshots_rebuild_what_each_call_returned() {
        let p = refunded_payment();
        let charged = p.as_charged();
        assert_eq!(
            (charged.status, charged.amount_refunded, charged.updated_at),
            (PaymentStatus::Captured, 0, 10)
        );
        assert!(charged.refunds.is_empty());

        let first = p.as_of_refund(1).unwrap();
        assert_eq!(
            (first.status, first.amount_refunded, first.updated_at),
            (PaymentStatus::PartiallyRefunded, 300, 20)
        );
        assert_eq!(first.refunds.len(), 1);
        assert_eq!(p.as_of_refund(2).unwrap(), p);
        assert_eq!(p.as_of_refund(3), None);
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let charge = NewCharge {
            order_id: OrderId::generate(),
            user_id: UserId::generate(),
            amount: eur(100),
            payment_method: PaymentMethod::CardOk,
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
        };
        let other_key = NewCharge {
            idempotency_key: IdempotencyKey::parse("other").unwrap(),
            ..charge.clone()
        };
        assert_eq!(charge.fingerprint(), other_key.fingerprint());
        let more = NewCharge {
            amount: eur(101),
            ..charge.clone()
        };
        assert_ne!(charge.fingerprint(), more.fingerprint());

        let refund = NewRefund {
            payment_id: PaymentId::generate(),
            amount: None,
            reason: RefundReason::parse("x").unwrap(),
            idempotency_key: IdempotencyKey::parse("k").unwrap(),
        };
        let explicit = NewRefund {
            amount: Some(eur(100)),
            ..refund.clone()
        };
        assert_ne!(refund.fingerprint(), explicit.fingerprint());
    }
}
