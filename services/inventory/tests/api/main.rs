//! API tests of the inventory service: a real server on a real socket, a real
//! tonic client, a fresh database per test, on SQLite and PostgreSQL.

mod adjust;
mod catalogue;
mod concurrency;
mod hostile;
mod import;
mod listing;
mod process;
mod reservations;
mod server;
mod store;

use emporium_common::{
    auth::Role,
    config::DatabaseConfig,
    rpc::{Channel, Code, Status, StatusExt as _},
};
use emporium_inventory::{Config, StockLevel};
use emporium_proto::{common::v1 as pb_common, inventory::v1 as pb};
use emporium_testkit::{Spawned, TestDb, base_config, bearer, tokens};
use pb::inventory_service_client::InventoryServiceClient;
use uuid::Uuid;

/// A running inventory service, a client, and tokens for an admin and a customer.
pub(crate) struct App {
    pub(crate) svc: Spawned,
    pub(crate) client: InventoryServiceClient<Channel>,
    pub(crate) admin: String,
    pub(crate) customer: String,
    /// The order service (acting for a customer): the only caller of the
    /// reservation RPCs.
    pub(crate) order: String,
    database: DatabaseConfig,
}

pub(crate) async fn app(db: TestDb) -> App {
    let database = db.config();
    let svc = emporium_testkit::spawn(db, |database, listeners, stop| {
        emporium_inventory::serve(
            Config {
                base: base_config(database),
                ..Config::default()
            },
            listeners,
            stop,
        )
    })
    .await;
    let client = InventoryServiceClient::new(svc.channel().await);
    App {
        svc,
        client,
        admin: token(&[Role::Customer, Role::Admin]),
        customer: token(&[Role::Customer]),
        order: tokens()
            .issue_service("order", Uuid::now_v7(), &[Role::Customer])
            .unwrap()
            .token,
        database,
    }
}

/// A token for a new user with `roles`; no user service needed.
pub(crate) fn token(roles: &[Role]) -> String {
    tokens().issue(Uuid::now_v7(), roles).unwrap().token
}

pub(crate) fn eur(units: i64) -> Option<pb_common::Money> {
    Some(pb_common::Money {
        currency_code: "EUR".into(),
        units,
    })
}

pub(crate) fn by_sku(sku: &str) -> Option<pb::reserve_stock_item::Product> {
    Some(pb::reserve_stock_item::Product::Sku(sku.into()))
}

pub(crate) fn item(sku: &str, quantity: i64) -> pb::ReserveStockItem {
    pb::ReserveStockItem {
        product: by_sku(sku),
        quantity,
    }
}

pub(crate) fn new_order() -> String {
    Uuid::now_v7().to_string()
}

impl App {
    /// Creates a product priced `price` EUR cents with no stock.
    pub(crate) async fn create(&mut self, sku: &str, price: i64) -> pb::Product {
        self.client
            .create_product(bearer(
                pb::CreateProductRequest {
                    sku: sku.into(),
                    name: format!("Product {sku}"),
                    description: String::new(),
                    unit_price: eur(price),
                },
                &self.admin,
            ))
            .await
            .expect("create product")
            .into_inner()
            .product
            .expect("product")
    }

    pub(crate) async fn adjust(
        &mut self,
        sku: &str,
        delta: i64,
        key: &str,
    ) -> Result<pb::Product, Status> {
        self.client
            .adjust_stock(bearer(
                pb::AdjustStockRequest {
                    product: Some(pb::adjust_stock_request::Product::Sku(sku.into())),
                    delta,
                    reason: "test".into(),
                    idempotency_key: key.into(),
                },
                &self.admin,
            ))
            .await
            .map(|r| r.into_inner().product.expect("product"))
    }

    /// Creates a product and receives `stock` units of it.
    pub(crate) async fn stocked(&mut self, sku: &str, price: i64, stock: i64) -> pb::Product {
        let created = self.create(sku, price).await;
        if stock == 0 {
            return created;
        }
        self.adjust(sku, stock, &format!("initial-{sku}"))
            .await
            .expect("initial stock")
    }

    pub(crate) async fn product(&mut self, sku: &str) -> pb::Product {
        self.client
            .get_product(bearer(
                pb::GetProductRequest {
                    product: Some(pb::get_product_request::Product::Sku(sku.into())),
                },
                &self.customer,
            ))
            .await
            .expect("get product")
            .into_inner()
            .product
            .expect("product")
    }

    pub(crate) async fn reserve(
        &mut self,
        order_id: &str,
        items: Vec<pb::ReserveStockItem>,
    ) -> Result<pb::Reservation, Status> {
        self.client
            .reserve_stock(bearer(
                pb::ReserveStockRequest {
                    order_id: order_id.into(),
                    items,
                },
                &self.order,
            ))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }

    pub(crate) async fn commit(&mut self, order_id: &str) -> Result<pb::Reservation, Status> {
        self.client
            .commit_reservation(bearer(
                pb::CommitReservationRequest {
                    order_id: order_id.into(),
                },
                &self.order,
            ))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }

    pub(crate) async fn release(&mut self, order_id: &str) -> Result<pb::Reservation, Status> {
        self.client
            .release_reservation(bearer(
                pb::ReleaseReservationRequest {
                    order_id: order_id.into(),
                },
                &self.order,
            ))
            .await
            .map(|r| r.into_inner().reservation.expect("reservation"))
    }

    /// Every product's counters, read from the database; asserts that each one
    /// balances (received = on hand + sold, 0 <= reserved <= on hand).
    pub(crate) async fn levels(&self) -> Vec<StockLevel> {
        let levels = emporium_inventory::stock_levels(&self.database)
            .await
            .expect("read stock levels");
        for l in &levels {
            assert!(l.is_balanced(), "unbalanced stock: {l:?}");
        }
        levels
    }

    /// The balanced counters of one product.
    pub(crate) async fn level(&self, sku: &str) -> StockLevel {
        self.levels()
            .await
            .into_iter()
            .find(|l| l.sku == sku)
            .unwrap_or_else(|| panic!("no product {sku}"))
    }
}

/// `(on_hand, reserved, received, sold)` of a level, for compact assertions.
pub(crate) fn counters(l: &StockLevel) -> (i64, i64, i64, i64) {
    (l.on_hand, l.reserved, l.received, l.sold)
}

/// Asserts the code, and that the message leaks nothing internal.
#[track_caller]
pub(crate) fn assert_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code) -> Status {
    let s = r.expect_err("expected an error status");
    assert_eq!(s.code(), code, "{s:?}");
    for leak in [
        "SELECT", "INSERT", "UPDATE ", "sqlx", "panicked", "/src/", ".rs:",
    ] {
        assert!(!s.message().contains(leak), "status leaks internals: {s:?}");
    }
    s
}

/// The fields named by a status's BadRequest detail.
pub(crate) fn violated_fields(s: &Status) -> Vec<String> {
    s.get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// `(type, subject, description)` of a status's PreconditionFailure detail.
pub(crate) fn preconditions(s: &Status) -> Vec<(String, String, String)> {
    s.get_details_precondition_failure()
        .map(|p| {
            p.violations
                .into_iter()
                .map(|v| (v.r#type, v.subject, v.description))
                .collect()
        })
        .unwrap_or_default()
}

/// A timestamp as microseconds, to compare times.
pub(crate) fn micros(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("timestamp");
    t.seconds * 1_000_000 + i64::from(t.nanos) / 1_000
}
