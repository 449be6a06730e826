//! The whole platform in this process, for the order tests (shared by the
//! `api` and `observability` test binaries).

use std::time::Duration;

use emporium_common::{
    auth::Role,
    rpc::{Channel, Code, Status},
};
use emporium_order::config::{Peers, SagaConfig};
pub(crate) use emporium_proto::order::v1 as pb;
use emporium_proto::{common::v1::Money, inventory::v1 as inv, user::v1 as usr};
use emporium_testkit::{Spawned, TestDb, base_config, bearer, spawn, spawn_user, tokens};
use uuid::Uuid;

use crate::invariants::{self, check_invariants};

/// The whole platform, in this process.
pub(crate) struct Stack {
    pub(crate) user: Spawned,
    pub(crate) inventory: Spawned,
    pub(crate) payment: Option<Spawned>,
    pub(crate) order: Spawned,
    pub(crate) order_db: String,
    pub(crate) db: TestDb,
    /// An admin token (inventory writes, reading anything).
    pub(crate) admin: String,
    /// A signed-up customer and their token.
    pub(crate) customer: Uuid,
    pub(crate) customer_token: String,
}

/// Saga timing for tests: short budgets so failure paths finish quickly.
pub(crate) fn saga_config() -> SagaConfig {
    SagaConfig {
        retry_budget_ms: 1_500,
        retry_backoff_ms: 20,
        lease_ms: 3_000,
        sweep_interval_ms: 200,
        create_wait_ms: 8_000,
        crash_after: None,
    }
}

pub(crate) fn peers(user: &Spawned, inventory: &Spawned, payment_url: String) -> Peers {
    let peer = |url: String| emporium_common::config::PeerConfig {
        url,
        ..emporium_common::config::PeerConfig::local(0)
    };
    Peers {
        user: peer(user.url()),
        inventory: peer(inventory.url()),
        payment: peer(payment_url),
    }
}

pub(crate) async fn spawn_inventory(db: TestDb) -> Spawned {
    spawn(db, |database, listeners, stop| {
        emporium_inventory::serve(
            emporium_inventory::Config {
                base: base_config(database),
                ..Default::default()
            },
            listeners,
            stop,
        )
    })
    .await
}

pub(crate) async fn spawn_payment(db: TestDb) -> Spawned {
    spawn(db, |database, listeners, stop| {
        emporium_payment::serve(
            emporium_payment::Config {
                base: base_config(database),
                ..Default::default()
            },
            listeners,
            stop,
        )
    })
    .await
}

pub(crate) async fn spawn_order(db: TestDb, peers: Peers, saga: SagaConfig) -> Spawned {
    spawn(db, |database, listeners, stop| {
        emporium_order::serve(
            emporium_order::Config {
                base: base_config(database),
                peers,
                saga,
            },
            listeners,
            stop,
        )
    })
    .await
}

pub(crate) async fn stack(db: TestDb) -> Stack {
    stack_with(db, saga_config()).await
}

pub(crate) async fn stack_with(db: TestDb, saga: SagaConfig) -> Stack {
    let user = spawn_user(db.another(), |_| {}).await;
    let inventory = spawn_inventory(db.another()).await;
    let payment = spawn_payment(db.another()).await;
    let order_db = db.another();
    let order_db_url = order_db.url().to_owned();
    let order = spawn_order(order_db, peers(&user, &inventory, payment.url()), saga).await;
    let admin = tokens()
        .issue(Uuid::now_v7(), &[Role::Admin])
        .unwrap()
        .token;
    let mut users = usr::user_service_client::UserServiceClient::new(user.channel().await);
    let email = format!("shopper-{}@example.com", Uuid::now_v7().simple());
    let created = users
        .create_user(usr::CreateUserRequest {
            email: email.clone(),
            name: "Shopper".into(),
            password: "shopper-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let token = users
        .authenticate(usr::AuthenticateRequest {
            email,
            password: "shopper-password".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    Stack {
        user,
        inventory,
        payment: Some(payment),
        order,
        order_db: order_db_url,
        db,
        admin,
        customer: Uuid::parse_str(&created.id).unwrap(),
        customer_token: token,
    }
}

impl Stack {
    pub(crate) async fn orders(&self) -> pb::order_service_client::OrderServiceClient<Channel> {
        pb::order_service_client::OrderServiceClient::new(self.order.channel().await)
    }

    pub(crate) async fn inventory(
        &self,
    ) -> inv::inventory_service_client::InventoryServiceClient<Channel> {
        inv::inventory_service_client::InventoryServiceClient::new(self.inventory.channel().await)
    }

    /// Creates a product priced `price` minor units with `quantity` in stock.
    pub(crate) async fn product(&self, sku: &str, price: i64, quantity: i64) {
        let mut inv = self.inventory().await;
        inv.create_product(bearer(
            inv::CreateProductRequest {
                sku: sku.into(),
                name: format!("Product {sku}"),
                description: String::new(),
                unit_price: Some(Money {
                    currency_code: "EUR".into(),
                    units: price,
                }),
            },
            &self.admin,
        ))
        .await
        .unwrap();
        if quantity > 0 {
            inv.adjust_stock(bearer(
                inv::AdjustStockRequest {
                    product: Some(inv::adjust_stock_request::Product::Sku(sku.into())),
                    delta: quantity,
                    reason: "received".into(),
                    idempotency_key: Uuid::now_v7().to_string(),
                },
                &self.admin,
            ))
            .await
            .unwrap();
        }
    }

    /// `(on hand, reserved)` of a SKU.
    pub(crate) async fn stock(&self, sku: &str) -> (i64, i64) {
        let p = self
            .inventory()
            .await
            .get_product(bearer(
                inv::GetProductRequest {
                    product: Some(inv::get_product_request::Product::Sku(sku.into())),
                },
                &self.admin,
            ))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        (p.stock_on_hand, p.stock_reserved)
    }

    /// Places an order for the customer.
    pub(crate) async fn place(
        &self,
        items: &[(&str, i64)],
        method: &str,
        key: &str,
    ) -> Result<pb::Order, Status> {
        let req = pb::CreateOrderRequest {
            user_id: String::new(),
            items: items
                .iter()
                .map(|(sku, q)| pb::CreateOrderItem {
                    sku: (*sku).into(),
                    quantity: *q,
                })
                .collect(),
            payment_method: method.into(),
            idempotency_key: key.into(),
        };
        self.orders()
            .await
            .create_order(bearer(req, &self.customer_token))
            .await
            .map(|r| r.into_inner().order.unwrap())
    }

    /// Waits (bounded) until no order is PENDING, then checks every invariant.
    pub(crate) async fn settle_and_check(&self) -> invariants::Totals {
        check_invariants(&self.dbs(), Duration::from_secs(20)).await
    }

    pub(crate) fn dbs(&self) -> invariants::Dbs {
        invariants::Dbs {
            order: self.order_db.clone(),
            inventory: self.inventory.db_url.clone(),
            payment: self
                .payment
                .as_ref()
                .expect("payment service")
                .db_url
                .clone(),
        }
    }
}

pub(crate) fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap()
}

pub(crate) fn reason(o: &pb::Order) -> pb::CancelReason {
    pb::CancelReason::try_from(o.cancel_reason).unwrap()
}

#[track_caller]
pub(crate) fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let s = r.expect_err("expected an error");
    assert_eq!(s.code(), code, "{s:?}");
    s
}
