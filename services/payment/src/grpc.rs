//! Transport: the generated `PaymentService` trait over [`Payments`]. Every RPC
//! runs the same four steps: proto → domain (collecting field violations), call
//! the domain, domain → proto, and `?` through `From<Error> for Status`. No SQL,
//! no rules.

use emporium_common::{
    auth::caller,
    paging,
    rpc::{Request, Response, RpcResult, async_trait},
    status::Violations,
    time::timestamp_from_micros,
};
use emporium_proto::payment::v1 as pb;

use crate::{
    domain::{
        ChargeVoid, DeclineReason, IdempotencyKey, ListFilter, Money, NewCharge, NewRefund,
        OrderId, Payment, PaymentId, PaymentMethod, PaymentStatus, Refund, RefundReason, Settled,
        UserId,
    },
    error::Error,
    service::Payments,
};

const LISTING: &str = "payments.v1";

/// The gRPC face of the payment service.
#[derive(Debug, Clone)]
pub struct PaymentApi {
    payments: Payments,
}

impl PaymentApi {
    /// Wraps the domain service.
    pub fn new(payments: Payments) -> Self {
        Self { payments }
    }

    /// The generated server, with message limits from configuration.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::payment_service_server::PaymentServiceServer<Self> {
        pb::payment_service_server::PaymentServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

/// An optional id filter: empty means none.
fn filter<T>(
    v: &mut Violations,
    field: &str,
    raw: &str,
    parse: fn(&str) -> Result<T, &'static str>,
) -> Option<T> {
    if raw.is_empty() {
        None
    } else {
        v.check(field, parse(raw))
    }
}

impl TryFrom<pb::ChargeRequest> for NewCharge {
    type Error = Violations;
    fn try_from(r: pb::ChargeRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let order_id = v.check("order_id", OrderId::parse(&r.order_id));
        let user_id = v.check("user_id", UserId::parse(&r.user_id));
        let amount = Money::from_proto(&mut v, "amount", r.amount.as_ref(), Money::positive_units);
        let payment_method = v.check("payment_method", PaymentMethod::parse(&r.payment_method));
        let idempotency_key = v.check("idempotency_key", IdempotencyKey::parse(&r.idempotency_key));
        match (order_id, user_id, amount, payment_method, idempotency_key) {
            (
                Some(order_id),
                Some(user_id),
                Some(amount),
                Some(payment_method),
                Some(idempotency_key),
            ) if v.is_empty() => Ok(NewCharge {
                order_id,
                user_id,
                amount,
                payment_method,
                idempotency_key,
            }),
            _ => Err(v),
        }
    }
}

impl TryFrom<pb::VoidChargeRequest> for ChargeVoid {
    type Error = Violations;
    fn try_from(r: pb::VoidChargeRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let order_id = v.check("order_id", OrderId::parse(&r.order_id));
        let user_id = v.check("user_id", UserId::parse(&r.user_id));
        let idempotency_key = v.check("idempotency_key", IdempotencyKey::parse(&r.idempotency_key));
        match (order_id, user_id, idempotency_key) {
            (Some(order_id), Some(user_id), Some(idempotency_key)) if v.is_empty() => {
                Ok(ChargeVoid {
                    order_id,
                    user_id,
                    idempotency_key,
                })
            }
            _ => Err(v),
        }
    }
}

impl From<Settled> for pb::VoidChargeResponse {
    fn from(s: Settled) -> Self {
        match s {
            Settled::Charged(payment) => pb::VoidChargeResponse {
                payment: Some(payment.into()),
                voided: false,
            },
            Settled::Voided => pb::VoidChargeResponse {
                payment: None,
                voided: true,
            },
        }
    }
}

impl TryFrom<pb::RefundRequest> for NewRefund {
    type Error = Violations;
    fn try_from(r: pb::RefundRequest) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let payment_id = v.check("payment_id", PaymentId::parse(&r.payment_id));
        let amount = r
            .amount
            .as_ref()
            .map(|m| Money::from_proto(&mut v, "amount", Some(m), Money::positive_units));
        let reason = v.check("reason", RefundReason::parse(&r.reason));
        let idempotency_key = v.check("idempotency_key", IdempotencyKey::parse(&r.idempotency_key));
        match (payment_id, amount, reason, idempotency_key) {
            (Some(payment_id), amount, Some(reason), Some(idempotency_key)) if v.is_empty() => {
                Ok(NewRefund {
                    payment_id,
                    amount: amount.flatten(),
                    reason,
                    idempotency_key,
                })
            }
            _ => Err(v),
        }
    }
}

impl From<DeclineReason> for pb::DeclineReason {
    fn from(r: DeclineReason) -> Self {
        match r {
            DeclineReason::CardDeclined => pb::DeclineReason::CardDeclined,
            DeclineReason::InsufficientFunds => pb::DeclineReason::InsufficientFunds,
        }
    }
}

impl From<PaymentStatus> for pb::PaymentStatus {
    fn from(s: PaymentStatus) -> Self {
        match s {
            PaymentStatus::Captured => pb::PaymentStatus::Captured,
            PaymentStatus::Declined => pb::PaymentStatus::Declined,
            PaymentStatus::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        }
    }
}

impl From<Refund> for pb::Refund {
    fn from(r: Refund) -> Self {
        pb::Refund {
            id: r.id.to_string(),
            amount: Some(r.amount.to_proto()),
            reason: r.reason,
            create_time: Some(timestamp_from_micros(r.created_at)),
        }
    }
}

impl From<Payment> for pb::Payment {
    fn from(p: Payment) -> Self {
        let currency = p.amount.currency();
        pb::Payment {
            id: p.id.to_string(),
            order_id: p.order_id.to_string(),
            user_id: p.user_id.to_string(),
            amount: Some(p.amount.to_proto()),
            amount_refunded: Some(Money::new(currency.clone(), p.amount_refunded).to_proto()),
            status: pb::PaymentStatus::from(p.status) as i32,
            decline_reason: p
                .decline_reason
                .map_or(pb::DeclineReason::Unspecified, Into::into)
                as i32,
            payment_method: p.payment_method.as_str().to_owned(),
            refunds: p.refunds.into_iter().map(Into::into).collect(),
            create_time: Some(timestamp_from_micros(p.created_at)),
            update_time: Some(timestamp_from_micros(p.updated_at)),
        }
    }
}

#[async_trait]
impl pb::payment_service_server::PaymentService for PaymentApi {
    async fn charge(&self, req: Request<pb::ChargeRequest>) -> RpcResult<pb::ChargeResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let charge = NewCharge::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let payment = self.payments.charge(&caller, charge).await?;
        Ok(Response::new(pb::ChargeResponse {
            payment: Some(payment.into()),
        }))
    }

    async fn refund(&self, req: Request<pb::RefundRequest>) -> RpcResult<pb::RefundResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let refund = NewRefund::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let (payment, refund) = self.payments.refund(&caller, refund).await?;
        Ok(Response::new(pb::RefundResponse {
            payment: Some(payment.into()),
            refund: Some(refund.into()),
        }))
    }

    async fn void_charge(
        &self,
        req: Request<pb::VoidChargeRequest>,
    ) -> RpcResult<pb::VoidChargeResponse> {
        let caller = caller(&req)?;
        // Who may call comes before what the request says.
        caller
            .ensure_order_service()
            .map_err(Error::PermissionDenied)?;
        let void = ChargeVoid::try_from(req.into_inner()).map_err(Error::InvalidArgument)?;
        let settled = self.payments.void_charge(&caller, void).await?;
        Ok(Response::new(settled.into()))
    }

    async fn get_payment(
        &self,
        req: Request<pb::GetPaymentRequest>,
    ) -> RpcResult<pb::GetPaymentResponse> {
        let caller = caller(&req)?;
        let id = PaymentId::parse(&req.get_ref().payment_id)
            .map_err(|e| Error::InvalidArgument(Violations::one("payment_id", e)))?;
        let payment = self.payments.get(&caller, id).await?;
        Ok(Response::new(pb::GetPaymentResponse {
            payment: Some(payment.into()),
        }))
    }

    async fn list_payments(
        &self,
        req: Request<pb::ListPaymentsRequest>,
    ) -> RpcResult<pb::ListPaymentsResponse> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let user_id = filter(&mut v, "user_id", &r.user_id, UserId::parse);
        let order_id = filter(&mut v, "order_id", &r.order_id, OrderId::parse);
        // The filters are part of the listing's name, so a token only pages the
        // listing that issued it.
        let listing = format!("{LISTING} user={} order={}", r.user_id, r.order_id);
        let page = paging::time_page(&mut v, &listing, r.page_size, &r.page_token);
        let (size, before) = v.finish_with(page).map_err(Error::InvalidArgument)?;
        let page = self
            .payments
            .list(&caller, ListFilter { user_id, order_id }, before, size)
            .await?;
        Ok(Response::new(pb::ListPaymentsResponse {
            payments: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.map(|c| c.encode(&listing)).unwrap_or_default(),
        }))
    }
}
