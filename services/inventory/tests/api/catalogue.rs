//! CreateProduct and GetProduct: validation, uniqueness, who may do what.

use emporium_common::rpc::{Code, Request};
use emporium_testkit::{TestDb, backend_tests, bearer};

use crate::{app, eur, pb, pb_common, refused, violated_fields};

backend_tests!(
    create_then_get_by_id_and_by_sku,
    create_names_every_invalid_field,
    prices_must_be_in_the_catalogue_currency,
    skus_are_unique,
    writes_are_admin_only_and_reads_need_a_token,
    get_validates_and_reports_not_found,
);

async fn create_then_get_by_id_and_by_sku(db: TestDb) {
    let mut app = app(db).await;
    let created = app
        .client
        .create_product(bearer(
            pb::CreateProductRequest {
                sku: "MUG-01".into(),
                name: "  Coffee mug ".into(),
                description: "Holds coffee.\nDishwasher safe.".into(),
                unit_price: eur(1299),
            },
            &app.admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .product
        .unwrap();
    assert_eq!(created.id.len(), 36);
    assert_eq!(created.sku, "MUG-01");
    assert_eq!(created.name, "Coffee mug");
    assert_eq!(created.description, "Holds coffee.\nDishwasher safe.");
    assert_eq!(created.unit_price, eur(1299));
    assert_eq!(
        (
            created.stock_on_hand,
            created.stock_reserved,
            created.stock_available
        ),
        (0, 0, 0)
    );
    assert!(created.create_time.is_some() && created.create_time == created.update_time);

    let customer = app.customer.clone();
    for which in [
        pb::get_product_request::Product::ProductId(created.id.clone()),
        pb::get_product_request::Product::Sku("MUG-01".into()),
    ] {
        let got = app
            .client
            .get_product(bearer(
                pb::GetProductRequest {
                    product: Some(which),
                },
                &customer,
            ))
            .await
            .unwrap()
            .into_inner()
            .product
            .unwrap();
        assert_eq!(got, created);
    }
}

async fn create_names_every_invalid_field(db: TestDb) {
    let mut app = app(db).await;
    let s = refused(
        app.client
            .create_product(bearer(
                pb::CreateProductRequest {
                    sku: "mug-01".into(),
                    name: " ".into(),
                    description: "bell\u{7}".into(),
                    unit_price: Some(pb_common::Money {
                        currency_code: "eu".into(),
                        units: 0,
                    }),
                },
                &app.admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        [
            "sku",
            "name",
            "description",
            "unit_price.currency_code",
            "unit_price.units"
        ]
    );
    assert!(
        s.message()
            .contains("sku: must contain only A-Z, 0-9, - and _"),
        "{s:?}"
    );

    let s = refused(
        app.client
            .create_product(bearer(
                pb::CreateProductRequest {
                    sku: "A".repeat(65),
                    name: "x".repeat(201),
                    description: "d".repeat(4001),
                    unit_price: None,
                },
                &app.admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(
        violated_fields(&s),
        ["sku", "name", "description", "unit_price"]
    );
    assert!(app.levels().await.is_empty(), "nothing was created");
}

async fn prices_must_be_in_the_catalogue_currency(db: TestDb) {
    let mut app = app(db).await;
    let s = refused(
        app.client
            .create_product(bearer(
                pb::CreateProductRequest {
                    sku: "USD-ITEM".into(),
                    name: "Dollar item".into(),
                    description: String::new(),
                    unit_price: Some(pb_common::Money {
                        currency_code: "USD".into(),
                        units: 100,
                    }),
                },
                &app.admin,
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&s), ["unit_price.currency_code"]);
    assert!(s.message().contains("EUR"), "{s:?}");
}

async fn skus_are_unique(db: TestDb) {
    let mut app = app(db).await;
    let first = app.create("DUP", 100).await;
    let s = refused(
        app.client
            .create_product(bearer(
                pb::CreateProductRequest {
                    sku: "DUP".into(),
                    name: "Second".into(),
                    description: String::new(),
                    unit_price: eur(200),
                },
                &app.admin,
            ))
            .await,
        Code::AlreadyExists,
    );
    assert_eq!(s.message(), "a product with this sku already exists");
    assert_eq!(app.product("DUP").await, first);
}

async fn writes_are_admin_only_and_reads_need_a_token(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("KEEP", 100, 5).await;
    let customer = app.customer.clone();
    let create = pb::CreateProductRequest {
        sku: "NEW".into(),
        name: "New".into(),
        description: String::new(),
        unit_price: eur(100),
    };
    let s = refused(
        app.client
            .create_product(bearer(create.clone(), &customer))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(s.message(), "only admins may change the catalogue or stock");
    refused(
        app.client
            .adjust_stock(bearer(
                pb::AdjustStockRequest {
                    product: Some(pb::adjust_stock_request::Product::Sku("KEEP".into())),
                    delta: 5,
                    reason: "mine".into(),
                    idempotency_key: "k".into(),
                },
                &customer,
            ))
            .await,
        Code::PermissionDenied,
    );
    let rows = futures::stream::iter([pb::ImportStockRequest {
        idempotency_key: "k".into(),
        sku: "KEEP".into(),
        quantity: 5,
        ..Default::default()
    }]);
    refused(
        app.client.import_stock(bearer(rows, &customer)).await,
        Code::PermissionDenied,
    );

    // Reads are open to any signed-in user, but not to anonymous callers.
    assert_eq!(app.product("KEEP").await.stock_on_hand, 5);
    refused(
        app.client
            .get_product(Request::new(pb::GetProductRequest {
                product: Some(pb::get_product_request::Product::Sku("KEEP".into())),
            }))
            .await,
        Code::Unauthenticated,
    );
    refused(
        app.client
            .list_products(Request::new(pb::ListProductsRequest::default()))
            .await,
        Code::Unauthenticated,
    );
    refused(
        app.client
            .reserve_stock(Request::new(pb::ReserveStockRequest {
                order_id: crate::new_order(),
                items: vec![crate::item("KEEP", 1)],
            }))
            .await,
        Code::Unauthenticated,
    );
    refused(
        app.client.create_product(Request::new(create)).await,
        Code::Unauthenticated,
    );
    let levels = app.levels().await;
    assert_eq!(levels.len(), 1);
    assert_eq!(crate::counters(&levels[0]), (5, 0, 5, 0));
}

async fn get_validates_and_reports_not_found(db: TestDb) {
    let mut app = app(db).await;
    let customer = app.customer.clone();
    use pb::get_product_request::Product as P;
    for (which, field) in [
        (None, "product"),
        (Some(P::ProductId(String::new())), "product_id"),
        (Some(P::ProductId("nope".into())), "product_id"),
        (
            Some(P::ProductId("0190b1d48b9c7def8123456789abcdef".into())),
            "product_id",
        ),
        (Some(P::Sku(String::new())), "sku"),
        (Some(P::Sku("lower".into())), "sku"),
    ] {
        let s = refused(
            app.client
                .get_product(bearer(pb::GetProductRequest { product: which }, &customer))
                .await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&s), [field]);
    }
    for which in [
        P::ProductId(uuid::Uuid::now_v7().to_string()),
        P::Sku("NO-SUCH".into()),
    ] {
        let s = refused(
            app.client
                .get_product(bearer(
                    pb::GetProductRequest {
                        product: Some(which),
                    },
                    &customer,
                ))
                .await,
            Code::NotFound,
        );
        assert_eq!(s.message(), "product not found");
    }
}
