//! Every service in this process: one spawn function per service, and
//! [`Stack`], the whole platform on fresh databases of one backend with an
//! admin and a signed-up customer.

use std::{future::Future, sync::Arc, time::Duration};

use emporium_common::{
    auth::Role,
    config::DatabaseConfig,
    rpc::{Channel, Status},
    server::Listeners,
};

use emporium_order::config::{Peers, SagaConfig};
use emporium_payment::processor::Processor;
use emporium_proto::order::v1 as pb;
use emporium_proto::{common::v1::Money, inventory::v1 as inv, user::v1 as usr};
use uuid::Uuid;

use crate::{
    BoxError, Spawned, StopSignal, TestDb, base_config, bearer,
    invariants::{self, check_invariants},
    spawn, spawn_user, tokens,
};

/// The whole platform, in this process: each service on a database of its
/// own, all on the backend of `db`.
pub struct Stack {
    /// The user service.
    pub user: Spawned,
    /// The inventory service.
    pub inventory: Spawned,
    /// The payment service (`None` once a test took it away).
    pub payment: Option<Spawned>,
    /// The order service, calling the three others.
    pub order: Spawned,
    /// The order service's database URL.
    pub order_db: String,
    /// The database the stack was asked for: [`TestDb::another`] gives more on
    /// the same backend.
    pub db: TestDb,
    /// An admin token (inventory writes, reading anything).
    pub admin: String,
    /// A signed-up customer.
    pub customer: Uuid,
    /// The customer's token.
    pub customer_token: String,
}

/// Saga timing for tests: short budgets so failure paths finish quickly.
pub fn saga_config() -> SagaConfig {
    SagaConfig {
        retry_budget_ms: 1_500,
        lease_ms: 3_000,
        sweep_interval_ms: 200,
        create_wait_ms: 8_000,
        max_pause_ms: 2_000,
        // Tests of a peer that stays away want the order cancelled soon.
        give_up_after_ms: 1_000,
        crash_at: None,
    }
}

/// Peer settings for an order service calling these services.
pub fn peers(user: &Spawned, inventory: &Spawned, payment_url: String) -> Peers {
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

/// Starts the inventory service over `db` with its default settings.
pub async fn spawn_inventory(db: TestDb) -> Spawned {
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

/// Starts the payment service over `db` with the simulated processor, as the
/// binary starts it.
pub async fn spawn_payment(db: TestDb) -> Spawned {
    spawn(db, serve_payment).await
}

fn serve_payment(
    database: DatabaseConfig,
    listeners: Listeners,
    stop: StopSignal,
) -> impl Future<Output = Result<(), BoxError>> + Send + 'static {
    emporium_payment::serve(
        emporium_payment::Config {
            base: base_config(database),
            ..Default::default()
        },
        listeners,
        stop,
    )
}

/// Starts the payment service over `db`, charging through `processor`.
pub async fn spawn_payment_with_processor(db: TestDb, processor: Arc<dyn Processor>) -> Spawned {
    spawn(db, |database, listeners, stop| {
        emporium_payment::serve_with_processor(
            emporium_payment::Config {
                base: base_config(database),
                ..Default::default()
            },
            processor,
            listeners,
            stop,
        )
    })
    .await
}

/// Starts the payment service over `db`, charging through `processor`;
/// `tweak` adjusts its config first (a short claim lease, for instance).
pub async fn spawn_payment_with(
    db: TestDb,
    processor: Arc<dyn Processor>,
    tweak: impl FnOnce(&mut emporium_payment::Config),
) -> Spawned {
    spawn(db, |database, listeners, stop| {
        let mut config = emporium_payment::Config {
            base: base_config(database),
            ..Default::default()
        };
        tweak(&mut config);
        emporium_payment::serve_with_processor(config, processor, listeners, stop)
    })
    .await
}

/// Starts the order service over `db`, calling `peers`, with saga timing `saga`.
pub async fn spawn_order(db: TestDb, peers: Peers, saga: SagaConfig) -> Spawned {
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

/// Starts the order service over `db` alone, its peers unreachable, with
/// `tweak` applied to its config: for tests of what needs only its own
/// database and server settings (watching a user's orders, stream limits).
pub async fn spawn_order_alone(
    db: TestDb,
    tweak: impl FnOnce(&mut emporium_order::Config),
) -> Spawned {
    spawn(db, |database, listeners, stop| {
        let nobody = emporium_common::config::PeerConfig::local(1);
        let mut config = emporium_order::Config {
            base: base_config(database),
            peers: Peers {
                user: nobody.clone(),
                inventory: nobody.clone(),
                payment: nobody,
            },
            saga: saga_config(),
        };
        tweak(&mut config);
        emporium_order::serve(config, listeners, stop)
    })
    .await
}

impl Stack {
    /// Starts the four services with [`saga_config`], an admin token and a
    /// signed-up customer.
    pub async fn start(db: TestDb) -> Stack {
        Self::start_with(db, saga_config()).await
    }

    /// [`Self::start`] with saga timing of the test's own.
    pub async fn start_with(db: TestDb, saga: SagaConfig) -> Stack {
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

    /// Starts the stopped payment service again, on its old address over its
    /// database, as a restarted pod comes back.
    pub async fn restart_payment(&mut self) {
        let payment = self
            .payment
            .as_mut()
            .expect("the stack has a payment service");
        payment
            .restart(serve_payment)
            .await
            .expect("payment restarts");
    }

    /// A client of the order service.
    pub async fn orders(&self) -> pb::order_service_client::OrderServiceClient<Channel> {
        pb::order_service_client::OrderServiceClient::new(self.order.channel().await)
    }

    /// A client of the inventory service.
    pub async fn inventory(
        &self,
    ) -> inv::inventory_service_client::InventoryServiceClient<Channel> {
        inv::inventory_service_client::InventoryServiceClient::new(self.inventory.channel().await)
    }

    /// Creates a product priced `price` minor units with `quantity` in stock.
    pub async fn product(&self, sku: &str, price: i64, quantity: i64) {
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
    pub async fn stock(&self, sku: &str) -> (i64, i64) {
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
    pub async fn place(
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
    pub async fn settle_and_check(&self) -> invariants::Totals {
        check_invariants(&self.dbs(), Duration::from_secs(20)).await
    }

    /// Settles every saga, checks every invariant, and asserts how many orders
    /// were confirmed and cancelled.
    pub async fn settled(&self, confirmed: usize, cancelled: usize) {
        let t = self.settle_and_check().await;
        assert_eq!((t.confirmed, t.cancelled), (confirmed, cancelled));
    }

    /// Where each service of the stack keeps its data.
    pub fn dbs(&self) -> invariants::Dbs {
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

/// An order's status.
pub fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap()
}

/// Why an order was cancelled.
pub fn reason(o: &pb::Order) -> pb::CancelReason {
    pb::CancelReason::try_from(o.cancel_reason).unwrap()
}

#[cfg(test)]
mod tests {
    /// The testkit builds the order service with its `testing` feature, so
    /// the crash failpoint is a setting in every test build.
    #[test]
    fn the_order_service_under_test_has_the_crash_failpoint() {
        let saga = serde_json::to_value(super::saga_config()).unwrap();
        assert_eq!(saga["crash_at"], serde_json::Value::Null, "{saga}");
        assert!(saga.as_object().unwrap().contains_key("crash_at"));
    }
}
