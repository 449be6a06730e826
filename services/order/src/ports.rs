//! The peers the saga calls, as small traits (so tests can put a real in-process
//! peer or a fake behind them), and their gRPC implementations.
//!
//! Every call carries a short-lived token for the order's user (the order acts on
//! the customer's behalf; ownership checks in the peers apply) and a
//! `grpc-timeout` no longer than what is left of the saga's budget.

use std::time::Duration;

use emporium_common::{
    auth::{Role, Tokens},
    client::PeerChannel,
    config::PeerConfig,
    rpc::{Code, MetadataValue, Request, Status, async_trait},
};
use emporium_proto::{inventory::v1 as inv, payment::v1 as pay, user::v1 as usr};
use uuid::Uuid;

use crate::domain::{Currency, Money};

/// How a peer call failed, by what the saga may conclude from it.
#[derive(Debug, Clone)]
pub enum PeerError {
    /// A definitive refusal: the call had no effect and retrying cannot help.
    Refused(Status),
    /// Not executed (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED): safe to retry.
    Transient(Status),
    /// The outcome is unknown (deadline, cancelled, internal): the call may
    /// have taken effect.
    Unknown(Status),
}

impl PeerError {
    /// Sorts a status into the three kinds.
    pub fn from_status(s: Status) -> Self {
        match s.code() {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unauthenticated
            | Code::Unimplemented => PeerError::Refused(s),
            Code::Unavailable | Code::ResourceExhausted | Code::Aborted => PeerError::Transient(s),
            _ => PeerError::Unknown(s),
        }
    }

    /// The status behind the error.
    pub fn status(&self) -> &Status {
        match self {
            PeerError::Refused(s) | PeerError::Transient(s) | PeerError::Unknown(s) => s,
        }
    }
}

/// What the saga needs to know about a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// Whether the user may order.
    pub active: bool,
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

/// The user service as the saga sees it.
#[async_trait]
pub trait Users: Send + Sync + 'static {
    /// Looks the user up.
    async fn get(&self, user_id: Uuid, timeout: Duration) -> Result<UserInfo, PeerError>;
}

/// The inventory service as the saga sees it.
#[async_trait]
pub trait Inventory: Send + Sync + 'static {
    /// Reserves all lines or nothing; idempotent by order id.
    async fn reserve(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        lines: &[(String, i64)],
        timeout: Duration,
    ) -> Result<Reservation, PeerError>;
    /// Commits the order's reservation; idempotent.
    async fn commit(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), PeerError>;
    /// Releases (or returns) the order's stock; idempotent.
    async fn release(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), PeerError>;
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

/// The payment service as the saga sees it.
#[async_trait]
pub trait Payments: Send + Sync + 'static {
    /// Charges; idempotent by key. Returns the payment id.
    async fn charge(&self, req: &ChargeRequest, timeout: Duration) -> Result<String, PeerError>;
    /// Refunds the rest of a payment; idempotent by key.
    async fn refund(
        &self,
        user_id: Uuid,
        payment_id: &str,
        reason: &str,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<(), PeerError>;
}

/// The three peers together.
#[derive(Clone)]
pub struct Peers {
    /// User service.
    pub users: std::sync::Arc<dyn Users>,
    /// Inventory service.
    pub inventory: std::sync::Arc<dyn Inventory>,
    /// Payment service.
    pub payments: std::sync::Arc<dyn Payments>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Peers")
    }
}

/// The gRPC implementations over one long-lived channel per peer (each call
/// traced and measured by [`PeerChannel`]).
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
        let this = std::sync::Arc::new(self);
        Peers {
            users: this.clone(),
            inventory: this.clone(),
            payments: this,
        }
    }

    /// A request acting for `user_id`, bounded by `timeout`.
    fn request<T>(
        &self,
        user_id: Uuid,
        msg: T,
        timeout: Duration,
    ) -> Result<Request<T>, PeerError> {
        // The order service's own identity, acting for the order's user.
        let token = self
            .tokens
            .issue_service("order", user_id, &[Role::Customer])
            .map_err(|e| PeerError::Refused(Status::internal(e.to_string())))?;
        let mut req = Request::new(msg);
        req.set_timeout(timeout);
        let value = MetadataValue::try_from(format!("Bearer {}", token.token))
            .map_err(|_| PeerError::Refused(Status::internal("token is not valid metadata")))?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

#[async_trait]
impl Users for GrpcPeers {
    async fn get(&self, user_id: Uuid, timeout: Duration) -> Result<UserInfo, PeerError> {
        let req = self.request(
            user_id,
            usr::GetUserRequest {
                user_id: user_id.to_string(),
            },
            timeout,
        )?;
        let user = usr::user_service_client::UserServiceClient::new(self.users.clone())
            .get_user(req)
            .await
            .map_err(PeerError::from_status)?
            .into_inner()
            .user
            .ok_or_else(|| {
                PeerError::Unknown(Status::internal("user service answered without a user"))
            })?;
        Ok(UserInfo {
            active: user.active,
        })
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
    ) -> Result<Reservation, PeerError> {
        let items = lines
            .iter()
            .map(|(sku, quantity)| inv::ReserveStockItem {
                product: Some(inv::reserve_stock_item::Product::Sku(sku.clone())),
                quantity: *quantity,
            })
            .collect();
        let req = self.request(
            user_id,
            inv::ReserveStockRequest {
                order_id: order_id.to_string(),
                items,
            },
            timeout,
        )?;
        let r = inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
            .reserve_stock(req)
            .await
            .map_err(PeerError::from_status)?
            .into_inner()
            .reservation
            .ok_or_else(|| PeerError::Unknown(Status::internal("no reservation in the answer")))?;
        if r.status() != inv::ReservationStatus::Reserved
            && r.status() != inv::ReservationStatus::Committed
        {
            // A release got there first (the order was compensated meanwhile).
            return Err(PeerError::Refused(Status::failed_precondition(
                "reservation was released",
            )));
        }
        let total = r.total.unwrap_or_default();
        Ok(Reservation {
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
            currency: Currency::parse(&total.currency_code).map_err(|_| {
                PeerError::Unknown(Status::internal(
                    "the reservation's total has no valid currency",
                ))
            })?,
            total: total.units,
        })
    }

    async fn commit(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let req = self.request(
            user_id,
            inv::CommitReservationRequest {
                order_id: order_id.to_string(),
            },
            timeout,
        )?;
        inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
            .commit_reservation(req)
            .await
            .map_err(PeerError::from_status)?;
        Ok(())
    }

    async fn release(
        &self,
        user_id: Uuid,
        order_id: Uuid,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let req = self.request(
            user_id,
            inv::ReleaseReservationRequest {
                order_id: order_id.to_string(),
            },
            timeout,
        )?;
        inv::inventory_service_client::InventoryServiceClient::new(self.inventory.clone())
            .release_reservation(req)
            .await
            .map_err(PeerError::from_status)?;
        Ok(())
    }
}

#[async_trait]
impl Payments for GrpcPeers {
    async fn charge(&self, c: &ChargeRequest, timeout: Duration) -> Result<String, PeerError> {
        let req = self.request(
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
        let payment = pay::payment_service_client::PaymentServiceClient::new(self.payments.clone())
            .charge(req)
            .await
            .map_err(PeerError::from_status)?
            .into_inner()
            .payment
            .ok_or_else(|| PeerError::Unknown(Status::internal("no payment in the answer")))?;
        Ok(payment.id)
    }

    async fn refund(
        &self,
        user_id: Uuid,
        payment_id: &str,
        reason: &str,
        idempotency_key: &str,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let req = self.request(
            user_id,
            pay::RefundRequest {
                payment_id: payment_id.to_owned(),
                amount: None,
                reason: reason.to_owned(),
                idempotency_key: idempotency_key.to_owned(),
            },
            timeout,
        )?;
        pay::payment_service_client::PaymentServiceClient::new(self.payments.clone())
            .refund(req)
            .await
            .map_err(PeerError::from_status)?;
        Ok(())
    }
}
