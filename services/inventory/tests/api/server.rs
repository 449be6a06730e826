//! What the inventory server provides around the API (health, reflection, the
//! admin port) and what stops it from starting.

use std::future::pending;

use emporium_common::{
    db::Db,
    rpc::{
        Code,
        health::{
            HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
        },
        reflection::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        },
    },
    server::Listeners,
};
use emporium_inventory::{
    Config,
    domain::{Currency, Product, ProductId, Sku},
    store::{MIGRATOR, Store},
};
use emporium_testkit::{TestDb, base_config, http_get};
use futures::StreamExt as _;

use crate::app;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reflection_and_admin_port() {
    let mut app = app(TestDb::sqlite()).await;
    let mut health = HealthClient::new(app.svc.channel().await);
    for service in ["", "emporium.inventory.v1.InventoryService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(app.svc.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let r = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = r.message_response else {
        panic!("{r:?}")
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "emporium.inventory.v1.InventoryService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );

    let admin = app.svc.admin_addr;
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
    app.create("METRIC", 100).await;
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let series = r#"rpc_server_requests_total{rpc_service="emporium.inventory.v1.InventoryService",rpc_method="CreateProduct",rpc_grpc_status_code="OK"}"#;
    assert!(body.contains(series), "missing {series} in\n{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalogue_in_another_currency_stops_the_start() {
    let db = TestDb::sqlite();
    let pool = Db::connect(&db.config()).await.unwrap();
    pool.migrate(&MIGRATOR).await.unwrap();
    Store::new(pool.clone())
        .insert_product(&Product {
            id: ProductId::generate(),
            sku: Sku::parse("EURO-ITEM").unwrap(),
            name: "Euro item".into(),
            description: String::new(),
            unit_price: emporium_inventory::domain::price(100, Currency::parse("EUR").unwrap())
                .unwrap(),
            on_hand: 0,
            reserved: 0,
            created_at: 1,
            updated_at: 1,
        })
        .await
        .unwrap();
    pool.close().await;

    let config = Config {
        base: base_config(db.config()),
        inventory: emporium_inventory::config::InventorySettings {
            currency: Currency::parse("USD").unwrap(),
        },
    };
    let listeners = Listeners::ephemeral().await.unwrap();
    let err = emporium_inventory::serve(config, listeners, pending())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "the catalogue holds prices in EUR but currency is set to USD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_a_token() {
    let mut app = app(TestDb::sqlite()).await;
    let s = app
        .client
        .commit_reservation(crate::pb::CommitReservationRequest {
            order_id: crate::new_order(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = app
        .client
        .release_reservation(emporium_testkit::bearer(
            crate::pb::ReleaseReservationRequest {
                order_id: crate::new_order(),
            },
            "forged.token.here",
        ))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
}
