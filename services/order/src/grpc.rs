//! Transport: the generated `OrderService` trait over [`Orders`]: proto → domain
//! (collecting field violations), call the domain, domain → proto, `?` through
//! `From<Error> for Status`. No SQL, no rules.

use std::{collections::HashSet, pin::Pin, time::Instant};

use emporium_common::{
    auth::{Caller, caller},
    paging,
    rpc::{Request, Response, RpcResult, Status, async_trait},
    stack::Deadline,
    status::Violations,
    time::timestamp_from_micros,
};
use emporium_proto::{common::v1 as pb_common, order::v1 as pb};
use futures::{Stream, StreamExt as _};
use uuid::Uuid;

use crate::{
    domain::{
        self, CancelReason, Currency, IdempotencyKey, Line, MAX_ITEMS, MAX_QUANTITY, Money,
        NewOrder, Order, PaymentMethod, Sku, Status as OrderStatus,
    },
    error::Error,
    service::{Orders, WatchTarget},
};

const LISTING: &str = "orders.v1";

/// The gRPC face of the order service.
#[derive(Debug, Clone)]
pub struct OrderApi {
    orders: Orders,
}

impl OrderApi {
    /// Wraps the domain service.
    pub fn new(orders: Orders) -> Self {
        Self { orders }
    }

    /// The generated server, with message limits from configuration.
    pub fn into_server(
        self,
        max_message_bytes: usize,
    ) -> pb::order_service_server::OrderServiceServer<Self> {
        pb::order_service_server::OrderServiceServer::new(self)
            .max_decoding_message_size(max_message_bytes)
            .max_encoding_message_size(max_message_bytes)
    }
}

fn deadline<T>(req: &Request<T>) -> Instant {
    req.extensions().get::<Deadline>().map_or_else(
        || Instant::now() + std::time::Duration::from_secs(10),
        |d| d.0,
    )
}

fn order_id(raw: &str) -> Result<Uuid, Error> {
    domain::parse_uuid(raw).map_err(|e| Error::InvalidArgument(Violations::one("order_id", e)))
}

fn new_order(caller: &Caller, r: pb::CreateOrderRequest) -> Result<NewOrder, Violations> {
    let mut v = Violations::new();
    let user_id = if r.user_id.is_empty() {
        Some(caller.user_id)
    } else {
        v.check("user_id", domain::parse_uuid(&r.user_id))
    };
    if r.items.is_empty() {
        v.add("items", "must contain at least one item");
    } else if r.items.len() > MAX_ITEMS {
        v.add("items", format!("must contain at most {MAX_ITEMS} items"));
    }
    let mut lines = Vec::new();
    let mut seen = HashSet::new();
    // Past the limit the request is refused whole; don't validate 10,000 lines.
    for (i, item) in r.items.iter().enumerate().take(MAX_ITEMS) {
        let sku = v.check(&format!("items[{i}].sku"), Sku::parse(&item.sku));
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            v.add(
                format!("items[{i}].quantity"),
                format!("must be between 1 and {MAX_QUANTITY}"),
            );
        }
        if let Some(sku) = sku {
            if !seen.insert(sku.clone()) {
                v.add(format!("items[{i}].sku"), "appears more than once");
            }
            lines.push(Line {
                sku,
                quantity: item.quantity,
            });
        }
    }
    let payment_method = v.check("payment_method", PaymentMethod::parse(&r.payment_method));
    let idempotency_key = v.check("idempotency_key", IdempotencyKey::parse(&r.idempotency_key));
    let (user_id, (payment_method, idempotency_key)) =
        v.finish_with(user_id.zip(payment_method.zip(idempotency_key)))?;
    Ok(NewOrder {
        user_id,
        lines,
        payment_method,
        idempotency_key,
    })
}

fn money(units: i64, currency: &Option<Currency>) -> Option<pb_common::Money> {
    currency
        .as_ref()
        .map(|c| Money::new(c.clone(), units).to_proto())
}

fn status_to_pb(s: OrderStatus) -> pb::OrderStatus {
    match s {
        OrderStatus::Pending => pb::OrderStatus::Pending,
        OrderStatus::Confirmed => pb::OrderStatus::Confirmed,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
    }
}

fn reason_to_pb(r: CancelReason) -> pb::CancelReason {
    match r {
        CancelReason::UserNotFound => pb::CancelReason::UserNotFound,
        CancelReason::UserInactive => pb::CancelReason::UserInactive,
        CancelReason::ProductNotFound => pb::CancelReason::ProductNotFound,
        CancelReason::OutOfStock => pb::CancelReason::OutOfStock,
        CancelReason::PaymentDeclined => pb::CancelReason::PaymentDeclined,
        CancelReason::PaymentMethodInvalid => pb::CancelReason::PaymentMethodInvalid,
        CancelReason::PaymentFailed => pb::CancelReason::PaymentFailed,
        CancelReason::CustomerRequested => pb::CancelReason::CustomerRequested,
        CancelReason::AdminRequested => pb::CancelReason::AdminRequested,
        CancelReason::InternalError => pb::CancelReason::InternalError,
    }
}

impl From<Order> for pb::Order {
    fn from(o: Order) -> Self {
        // The reason is shown only once the order is cancelled: while compensating
        // it is still PENDING.
        let cancelled = o.status == OrderStatus::Cancelled;
        pb::Order {
            id: o.id.to_string(),
            user_id: o.user_id.to_string(),
            items: o
                .items
                .iter()
                .map(|i| pb::OrderItem {
                    sku: i.sku.clone(),
                    quantity: i.quantity,
                    product_id: i.product_id.clone().unwrap_or_default(),
                    name: i.name.clone().unwrap_or_default(),
                    unit_price: i.unit_price.and_then(|p| money(p, &o.currency)),
                    line_total: i
                        .unit_price
                        .and_then(|p| money(p * i.quantity, &o.currency)),
                })
                .collect(),
            total: o.total.and_then(|t| money(t, &o.currency)),
            status: status_to_pb(o.status) as i32,
            cancel_reason: o
                .cancel_reason
                .filter(|_| cancelled)
                .map_or(pb::CancelReason::Unspecified, reason_to_pb)
                as i32,
            cancel_detail: if cancelled {
                o.cancel_detail.unwrap_or_default()
            } else {
                String::new()
            },
            payment_method: o.payment_method,
            payment_id: o.payment_id.unwrap_or_default(),
            create_time: Some(timestamp_from_micros(o.created_at)),
            update_time: Some(timestamp_from_micros(o.updated_at)),
        }
    }
}

type UpdateStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchOrderUpdatesResponse, Status>> + Send>>;

#[async_trait]
impl pb::order_service_server::OrderService for OrderApi {
    async fn create_order(
        &self,
        req: Request<pb::CreateOrderRequest>,
    ) -> RpcResult<pb::CreateOrderResponse> {
        let caller = caller(&req)?;
        let deadline = deadline(&req);
        let new = new_order(&caller, req.into_inner()).map_err(Error::InvalidArgument)?;
        let order = self.orders.create(&caller, new, deadline).await?;
        Ok(Response::new(pb::CreateOrderResponse {
            order: Some(order.into()),
        }))
    }

    async fn get_order(
        &self,
        req: Request<pb::GetOrderRequest>,
    ) -> RpcResult<pb::GetOrderResponse> {
        let caller = caller(&req)?;
        let id = order_id(&req.get_ref().order_id)?;
        let order = self.orders.get(&caller, id).await?;
        Ok(Response::new(pb::GetOrderResponse {
            order: Some(order.into()),
        }))
    }

    async fn list_orders(
        &self,
        req: Request<pb::ListOrdersRequest>,
    ) -> RpcResult<pb::ListOrdersResponse> {
        let caller = caller(&req)?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let user_id = if r.user_id.is_empty() {
            None
        } else {
            v.check("user_id", domain::parse_uuid(&r.user_id))
        };
        let status = match pb::OrderStatus::try_from(r.status) {
            Ok(pb::OrderStatus::Unspecified) => None,
            Ok(pb::OrderStatus::Pending) => Some(OrderStatus::Pending),
            Ok(pb::OrderStatus::Confirmed) => Some(OrderStatus::Confirmed),
            Ok(pb::OrderStatus::Cancelled) => Some(OrderStatus::Cancelled),
            Err(_) => {
                v.add("status", "is not a known order status");
                None
            }
        };
        let page = paging::time_page(&mut v, LISTING, r.page_size, &r.page_token);
        let (size, before) = v.finish_with(page).map_err(Error::InvalidArgument)?;
        let page = self
            .orders
            .list(&caller, user_id, status, before, size)
            .await?;
        Ok(Response::new(pb::ListOrdersResponse {
            orders: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.map(|c| c.encode(LISTING)).unwrap_or_default(),
        }))
    }

    async fn cancel_order(
        &self,
        req: Request<pb::CancelOrderRequest>,
    ) -> RpcResult<pb::CancelOrderResponse> {
        let caller = caller(&req)?;
        let deadline = deadline(&req);
        let r = req.into_inner();
        let id = order_id(&r.order_id)?;
        if r.reason.chars().count() > 500 {
            return Err(Error::InvalidArgument(Violations::one(
                "reason",
                "must be at most 500 characters",
            ))
            .into());
        }
        // The reason is stored and shown as the order's cancel_detail: no NUL
        // (PostgreSQL refuses it in text) nor other control characters.
        if r.reason.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(Violations::one(
                "reason",
                "must not contain control characters",
            ))
            .into());
        }
        let order = self.orders.cancel(&caller, id, &r.reason, deadline).await?;
        Ok(Response::new(pb::CancelOrderResponse {
            order: Some(order.into()),
        }))
    }

    type WatchOrderUpdatesStream = UpdateStream;

    async fn watch_order_updates(
        &self,
        req: Request<pb::WatchOrderUpdatesRequest>,
    ) -> RpcResult<Self::WatchOrderUpdatesStream> {
        use pb::watch_order_updates_request::Target;
        let caller = caller(&req)?;
        let target = match req.into_inner().target {
            Some(Target::OrderId(id)) => WatchTarget::Order(order_id(&id)?),
            None => WatchTarget::User(caller.user_id),
            Some(Target::UserOrders(u)) if u.user_id.is_empty() => {
                WatchTarget::User(caller.user_id)
            }
            Some(Target::UserOrders(u)) => {
                WatchTarget::User(domain::parse_uuid(&u.user_id).map_err(|e| {
                    Error::InvalidArgument(Violations::one("user_orders.user_id", e))
                })?)
            }
        };
        let updates = self.orders.watch(&caller, target).await?;
        let stream = updates.map(|u| {
            u.map(|u| pb::WatchOrderUpdatesResponse {
                // When the order changed, not when the update was sent.
                event_time: Some(timestamp_from_micros(u.order.updated_at)),
                order: Some(u.order.into()),
                initial_state: u.initial,
            })
            .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
