//! The peers the saga calls, as small traits that speak the saga's language,
//! and their gRPC adapters.
//!
//! A port answers with a domain outcome (the user is missing, these SKUs are out
//! of stock, the card was declined) or with a [`Failure`] that says only what the
//! saga may conclude: the call did not run, it may have run, or the peer refused
//! it for a reason the saga cannot act on. gRPC codes and peers' messages stay in
//! the adapters; the saga never reads a status.
//!
//! Every call carries a short-lived token for the order's user (the order acts on
//! the customer's behalf; ownership checks in the peers apply) and a
//! `grpc-timeout` no longer than what is left of the step's budget.

use std::{sync::Arc, time::Duration};

use emporium_common::{
    auth::{ORDER_SERVICE, Tokens},
    client::PeerChannel,
    config::PeerConfig,
    rpc::{Code, MetadataValue, Request, Status, StatusExt as _, async_trait},
};
use emporium_proto::{inventory::v1 as inv, payment::v1 as pay, user::v1 as usr};
use uuid::Uuid;

use crate::domain::{Currency, Money};

/// How much longer than its call a service token lives: the peer checks it on
/// arrival, which a slow network may delay a little past the deadline.
const TOKEN_MARGIN: Duration = Duration::from_secs(2);

/// A call that ended without a domain answer, by what the saga may conclude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The peer did not run the call (unreachable, overloaded, a conflict it
    /// asks to retry): retrying is safe and nothing needs settling.
    Unavailable(String),
    /// The call may have taken effect (timed out, connection lost mid-call, an
    /// internal error, or the same request is still running there).
    Unknown(String),
    /// The peer refused the call for a reason the saga cannot act on (a token
    /// it does not accept, a request it finds malformed): a bug or a
    /// misconfiguration, not something retrying fixes. Nothing was done.
    Rejected(String),
}

impl Failure {
    /// What an operator reads in the log; never shown to the customer.
    pub fn describe(&self) -> &str {
        match self {
            Failure::Unavailable(m) | Failure::Unknown(m) | Failure::Rejected(m) => m,
        }
    }

    /// Whether trying again may get a domain answer.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Failure::Rejected(_))
    }

    /// The failure a status means when the RPC has no special reading of it.
    fn from_status(peer: &str, s: &Status) -> Self {
        let text = format!("{peer}: {:?}: {}", s.code(), s.message());
        match s.code() {
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted => {
                Failure::Unavailable(text)
            }
            Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::DataLoss => Failure::Unknown(text),
            _ => Failure::Rejected(text),
        }
    }
}

/// Where the customer stands with the user service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStanding {
    /// Exists and may order.
    Active,
    /// Exists but is deactivated.
    Inactive,
    /// No such user.
    Missing,
}

/// One reserved line with its authoritative price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedLine {
    /// SKU.
    pub sku: String,
    /// Inventory's product id.
    pub product_id: String,
    /// Product name.
    pub name: String,
    /// Unit price, minor units.
    pub unit_price: i64,
}

/// A reservation as the saga uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Lines with prices.
    pub lines: Vec<ReservedLine>,
    /// Currency of all prices.
    pub currency: Currency,
    /// Sum of the lines, minor units.
    pub total: i64,
}

/// What reserving the order's stock came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Every line is held, at these prices.
    Reserved(Reservation),
    /// Not enough stock of these SKUs; nothing is held.
    OutOfStock(Vec<String>),
    /// The inventory knows none of these SKUs; nothing is held.
    UnknownProducts(Vec<String>),
    /// The order's reservation was released before this call (a compensation
    /// got there first); nothing is held.
    Released,
}

/// What committing the order's reservation came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The stock is sold.
    Committed,
    /// There is no held reservation to commit (it was released).
    NotHeld,
}

/// Why a card was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// The issuer said no without a reason.
    CardDeclined,
    /// Not enough funds.
    InsufficientFunds,
}

impl Decline {
    /// The customer-facing words.
    pub fn describe(self) -> &'static str {
        match self {
            Decline::CardDeclined => "the card was declined",
            Decline::InsufficientFunds => "the card was declined for insufficient funds",
        }
    }
}

/// What a charge came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// The money was taken: this payment holds it.
    Captured(String),
    /// The card was declined; no money was taken.
    Declined(Decline),
    /// The processor does not know the payment method; nothing was recorded.
    MethodInvalid,
    /// The key was voided before this charge could run; no money was taken.
    Voided,
}

/// What settling a charge key without charging came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Void {
    /// No charge was ever decided with the key, and now none ever can be.
    Voided,
    /// A charge with the key captured this payment.
    Captured(String),
    /// A charge with the key was declined; no money was taken.
    Declined,
}

/// The user service as the saga sees it.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// Whether the customer exists and may order.
    async fn standing(&self, user_id: Uuid, timeout: Duration) -> Result<UserStanding, Failure>;
}

/// The inventory service as the saga sees it. Every call is idempotent by
/// order id.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Reserves all lines or nothing.
    async fn reserve(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        lines: &[(String, i64)],
        timeout: Duration,
    ) -> Result<Reserve, Failure>;
    /// Commits the order's reservation.
    async fn commit(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<Commit, Failure>;
    /// Releases (or returns) the order's stock; afterwards a late reserve for
    /// the order holds nothing.
    async fn release(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), Failure>;
}

/// A charge request.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The order paid for.
    pub order_id: Uuid,
    /// Who pays.
    pub user_id: Uuid,
    /// Minor units.
    pub amount: i64,
    /// ISO code.
    pub currency: Currency,
    /// Test card name.
    pub payment_method: String,
    /// One key per order.
    pub idempotency_key: String,
}

/// The payment service as the saga sees it. Every call is idempotent by key.
#[async_trait]
pub trait Payments: Send + Sync + 'static {
    /// Charges and captures.
    async fn charge(&self, req: &ChargeRequest, timeout: Duration) -> Result<Charge, Failure>;
    /// Settles a charge key without charging: learns what a charge with it did,
    /// or makes sure none ever will.
    async fn void(
        &self,
        order_id: Uuid,
        user_id: Uuid,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<Void, Failure>;
    /// Refunds what is left of a payment (nothing, if it is already refunded).
    async fn refund(
        &self,
        user_id: Uuid,
        payment_id: &str,
        reason: &str,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<(), Failure>;
}

/// The three peers together.
#[derive(Clone)]
pub struct Peers {
    /// User service.
    pub users: Arc<dyn Users>,
    /// Inventory service.
    pub inventory: Arc<dyn Inventory>,
    /// Payment service.
    pub payments: Arc<dyn Payments>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

/// The gRPC adapters over one long-lived channel per peer (each call traced and
/// measured by [`PeerChannel`]).
#[derive(Clone)]
pub struct GrpcPeers {
    tokens: Tokens,
    users: PeerChannel,
    inventory: PeerChannel,
    payments: PeerChannel,
}

impl GrpcPeers {
    /// Lazily connecting channels to the configured peers.
    pub fn new(
        tokens: Tokens,
        user: &PeerConfig,
        inventory: &PeerConfig,
        payment: &PeerConfig,
    ) -> Result<Self, emporium_common::client::ChannelError> {
        Ok(Self {
            tokens,
            users: emporium_common::client::channel("user", user)?,
            inventory: emporium_common::client::channel("inventory", inventory)?,
            payments: emporium_common::client::channel("payment", payment)?,
        })
    }

    /// All three as [`Peers`].
    pub fn into_peers(self) -> Peers {
        let this = Arc::new(self);
        Peers {
            users: this.clone(),
            inventory: this.clone(),
            payments: this,
        }
    }

    /// A request to `peer` acting for `user_id`, bounded by `timeout`.
    fn request<T>(
        &self,
        peer: &str,
        user_id: Uuid,
        msg: T,
        timeout: Duration,
    ) -> Result<Request<T>, Failure> {
        // The order service's own identity, acting for the order's user, for
        // this one call to this one peer: minted per call, living as long as the
        // call may (the peer refuses it anywhere else, or a second time).
        let token = self
            .tokens
            .issue_service(ORDER_SERVICE, peer, user_id, timeout + TOKEN_MARGIN)
            .map_err(|e| Failure::Rejected(format!("cannot sign a token for {peer}: {e}")))?;
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        let value = MetadataValue::try_from(format!("Bearer {}", token.token))
            .map_err(|_| Failure::Rejected("the token is not valid metadata".into()))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

/// A success that lacks what the contract promises: the peer did something,
/// but we cannot tell what.
fn malformed(peer: &str, what: &str) -> Failure {
    Failure::Unknown(format!("{peer}: answered without {what}"))
}

/// The subjects of a FAILED_PRECONDITION's violations (inventory names the
/// short SKUs there).
fn violation_subjects(s: &Status) -> Vec<String> {
    s.get_details_precondition_failure()
        .map(|p| p.violations.into_iter().map(|v| v.subject).collect())
        .unwrap_or_default()
}

/// The resource names of a NOT_FOUND's details (inventory names the unknown
/// products there, `sku:…` or `id:…`).
fn missing_resources(s: &Status) -> Vec<String> {
    s.get_error_details_vec()
        .into_iter()
        .filter_map(|d| match d {
            emporium_common::rpc::ErrorDetail::ResourceInfo(r) => Some(r.resource_name),
            _ => None,
        })
        .collect()
}

/// The ErrorInfo reason of a status, if it has one.
fn error_reason(s: &Status) -> Option<String> {
    s.get_details_error_info().map(|i| i.reason)
}

#[async_trait]
impl Users for GrpcPeers {
    async fn standing(&self, user_id: Uuid, timeout: Duration) -> Result<UserStanding, Failure> {
        let req = self.request(
            "user",
            user_id,
            usr::GetUserRequest {
                user_id: user_id.to_string(),
            },
            timeout,
        )?;
        let answer = usr::user_service_client::UserServiceClient::new(self.users.clone())
            .get_user(req)
            .await;
        match answer {
            Ok(r) => match r.into_inner().user {
                Some(u) if u.active => Ok(UserStanding::Active),
                Some(_) => Ok(UserStanding::Inactive),
                None => Err(malformed("user", "a user")),
            },
            Err(s) if s.code() == Code::NotFound => Ok(UserStanding::Missing),
            Err(s) => Err(Failure::from_status("user", &s)),
        }
    }
}

#[async_trait]
impl Inventory for GrpcPeers {
    async fn reserve(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        lines: &[(String, i64)],
        timeout: Duration,
    ) -> Result<Reserve, Failure> {
        let items = lines
            .iter()
            .map(|(sku, quantity)| inv::ReserveStockItem {
                product: Some(inv::reserve_stock_item::Product::Sku(sku.clone())),
                quantity: *quantity,
            })
            .collect();
        let req = self.request(
            "inventory",
            user_id,
            inv::ReserveStockRequest {
                order_id: order_id.to_string(),
                items,
            },
            timeout,
        )?;
        let answer =
            inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
                .reserve_stock(req)
                .await;
        let r = match answer {
            Ok(r) => r
                .into_inner()
                .reservation
                .ok_or_else(|| malformed("inventory", "a reservation"))?,
            Err(s) if s.code() == Code::FailedPrecondition => {
                return Ok(Reserve::OutOfStock(violation_subjects(&s)));
            }
            Err(s) if s.code() == Code::NotFound => {
                let missing = missing_resources(&s)
                    .into_iter()
                    .map(|r| r.strip_prefix("sku:").map(str::to_owned).unwrap_or(r))
                    .collect();
                return Ok(Reserve::UnknownProducts(missing));
            }
            Err(s) => return Err(Failure::from_status("inventory", &s)),
        };
        match r.status() {
            inv::ReservationStatus::Reserved | inv::ReservationStatus::Committed => {}
            _ => return Ok(Reserve::Released),
        }
        let total = r
            .total
            .ok_or_else(|| malformed("inventory", "a reservation total"))?;
        let currency = Currency::parse(&total.currency_code)
            .map_err(|_| malformed("inventory", "a valid currency"))?;
        Ok(Reserve::Reserved(Reservation {
            lines: r
                .lines
                .into_iter()
                .map(|l| ReservedLine {
                    sku: l.sku,
                    product_id: l.product_id,
                    name: l.name,
                    unit_price: l.unit_price.map(|m| m.units).unwrap_or_default(),
                })
                .collect(),
            currency,
            total: total.units,
        }))
    }

    async fn commit(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<Commit, Failure> {
        let req = self.request(
            "inventory",
            user_id,
            inv::CommitReservationRequest {
                order_id: order_id.to_string(),
            },
            timeout,
        )?;
        let answer =
            inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
                .commit_reservation(req)
                .await;
        match answer {
            Ok(_) => Ok(Commit::Committed),
            // Released (or never reserved): the contract's FAILED_PRECONDITION
            // and NOT_FOUND both mean nothing is held to commit.
            Err(s) if matches!(s.code(), Code::FailedPrecondition | Code::NotFound) => {
                Ok(Commit::NotHeld)
            }
            Err(s) => Err(Failure::from_status("inventory", &s)),
        }
    }

    async fn release(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let req = self.request(
            "inventory",
            user_id,
            inv::ReleaseReservationRequest {
                order_id: order_id.to_string(),
            },
            timeout,
        )?;
        inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
            .release_reservation(req)
            .await
            .map_err(|s| Failure::from_status("inventory", &s))?;
        Ok(())
    }
}

/// A decline's reason from the ErrorInfo payment attaches.
fn decline(s: &Status) -> Decline {
    match error_reason(s).as_deref() {
        Some("DECLINE_REASON_INSUFFICIENT_FUNDS") => Decline::InsufficientFunds,
        _ => Decline::CardDeclined,
    }
}

/// Payment answers ABORTED while the first call with the key is still running:
/// for a charge or a void that is an unknown outcome, not a conflict that
/// left nothing done.
fn payment_failure(s: &Status) -> Failure {
    match s.code() {
        Code::Aborted => Failure::Unknown(format!("payment: still running: {}", s.message())),
        _ => Failure::from_status("payment", s),
    }
}

#[async_trait]
impl Payments for GrpcPeers {
    async fn charge(&self, c: &ChargeRequest, timeout: Duration) -> Result<Charge, Failure> {
        let req = self.request(
            "payment",
            c.user_id,
            pay::ChargeRequest {
                order_id: c.order_id.to_string(),
                user_id: c.user_id.to_string(),
                amount: Some(Money::new(c.currency.clone(), c.amount).to_proto()),
                payment_method: c.payment_method.clone(),
                idempotency_key: c.idempotency_key.clone(),
            },
            timeout,
        )?;
        let answer = pay::payment_service_client::PaymentServiceClient::new(self.payments.clone())
            .charge(req)
            .await;
        match answer {
            Ok(r) => r
                .into_inner()
                .payment
                .map(|p| Charge::Captured(p.id))
                .ok_or_else(|| malformed("payment", "a payment")),
            Err(s) if s.code() == Code::FailedPrecondition => {
                if error_reason(&s).as_deref() == Some("CHARGE_VOIDED") {
                    Ok(Charge::Voided)
                } else {
                    Ok(Charge::Declined(decline(&s)))
                }
            }
            // The only INVALID_ARGUMENT a well-formed saga request can get: the
            // processor does not know the method.
            Err(s) if s.code() == Code::InvalidArgument => Ok(Charge::MethodInvalid),
            // The order already has a capture under another key: that one holds
            // the money (the metadata names it).
            Err(s) if s.code() == Code::AlreadyExists => s
                .get_details_error_info()
                .and_then(|i| i.metadata.get("payment_id").cloned())
                .map(Charge::Captured)
                .ok_or_else(|| malformed("payment", "the payment that holds the money")),
            Err(s) => Err(payment_failure(&s)),
        }
    }

    async fn void(
        &self,
        order_id: Uuid,
        user_id: Uuid,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<Void, Failure> {
        let req = self.request(
            "payment",
            user_id,
            pay::VoidChargeRequest {
                order_id: order_id.to_string(),
                user_id: user_id.to_string(),
                idempotency_key: idempotency_key.to_owned(),
            },
            timeout,
        )?;
        let r = pay::payment_service_client::PaymentServiceClient::new(self.payments.clone())
            .void_charge(req)
            .await
            .map_err(|s| payment_failure(&s))?
            .into_inner();
        match (r.voided, r.payment) {
            (true, _) => Ok(Void::Voided),
            (false, Some(p)) if p.status() == pay::PaymentStatus::Declined => Ok(Void::Declined),
            (false, Some(p)) => Ok(Void::Captured(p.id)),
            (false, None) => Err(malformed("payment", "a payment or a void")),
        }
    }

    async fn refund(
        &self,
        user_id: Uuid,
        payment_id: &str,
        reason: &str,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let req = self.request(
            "payment",
            user_id,
            pay::RefundRequest {
                payment_id: payment_id.to_owned(),
                amount: None,
                reason: reason.to_owned(),
                idempotency_key: idempotency_key.to_owned(),
            },
            timeout,
        )?;
        let answer = pay::payment_service_client::PaymentServiceClient::new(self.payments.clone())
            .refund(req)
            .await;
        match answer {
            Ok(_) => Ok(()),
            // Nothing left to give back: the payment is already fully refunded.
            Err(s) if s.code() == Code::FailedPrecondition => Ok(()),
            Err(s) => Err(payment_failure(&s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_sort_into_what_the_saga_may_conclude() {
        let kind = |c| Failure::from_status("p", &Status::new(c, "m"));
        for c in [Code::Unavailable, Code::ResourceExhausted, Code::Aborted] {
            assert!(matches!(kind(c), Failure::Unavailable(_)), "{c:?}");
        }
        for c in [
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
            Code::DataLoss,
        ] {
            assert!(matches!(kind(c), Failure::Unknown(_)), "{c:?}");
        }
        for c in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Unimplemented,
        ] {
            assert!(matches!(kind(c), Failure::Rejected(_)), "{c:?}");
        }
        // Payment's ABORTED is "the first call with this key is still running".
        assert!(matches!(
            payment_failure(&Status::aborted("running")),
            Failure::Unknown(_)
        ));
    }
}
