//! Hostile input: malformed protobuf, wrong wire types, oversized messages,
//! extreme integers, empty, overlong, NUL and unicode text, in unary and
//! client-streaming calls. Every answer is a proper gRPC status whose message
//! leaks nothing internal, nothing is applied, and a normal call on the same
//! connection works right after.

use emporium_common::rpc::Code;
use emporium_testkit::{
    TestDb, admin_token, assert_no_leak, backend_tests, bearer,
    hostile::{
        self, LIMIT, MalformedAs, bad_keys, compressed_without_encoding, expected_refusal,
        four_gib_prefix, garbage, page_tokens, paging, proptest_config, random_garbage,
        refuse_malformed_each, runtime, short_frame, with_token,
    },
    invalid, order_service_token,
    raw::{frame, framed, raw},
    refused, scan,
};
use pb::inventory_service_client::InventoryServiceClient;
use proptest::prelude::*;
use prost::Message as _;
use uuid::Uuid;

use crate::{App, app, eur, item, new_order, pb, pb_common};

backend_tests!(
    hostile_values_are_refused_field_by_field,
    hostile_import_rows_are_reported_and_nothing_else_changes,
);

const SVC: &str = "/emporium.inventory.v1.InventoryService";

/// Money with field 2 (`units`, an int64) sent as a string.
#[derive(Clone, PartialEq, prost::Message)]
struct UnitsAsText {
    #[prost(string, tag = "1")]
    currency_code: String,
    #[prost(string, tag = "2")]
    units: String,
}

/// CreateProductRequest whose `unit_price` (field 4, a Money) is a Money with
/// a wrongly typed field inside.
#[derive(Clone, PartialEq, prost::Message)]
struct BadNestedPrice {
    #[prost(string, tag = "1")]
    sku: String,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, optional, tag = "4")]
    unit_price: Option<UnitsAsText>,
}

/// ReserveStockRequest whose `items` (field 2, repeated messages) are raw bytes.
#[derive(Clone, PartialEq, prost::Message)]
struct ItemsAsBytes {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(bytes = "vec", repeated, tag = "2")]
    items: Vec<Vec<u8>>,
}

/// GetProductRequest whose oneof member `product_id` (field 1) is a varint.
#[derive(Clone, PartialEq, prost::Message)]
struct OneofAsVarint {
    #[prost(int64, tag = "1")]
    product_id: i64,
}

impl App {
    /// Asserts the product still has exactly `on_hand` units, none reserved,
    /// and that every product's counters balance.
    async fn untouched(&mut self, sku: &str, on_hand: i64) {
        let p = self.product(sku).await;
        assert_eq!((p.stock_on_hand, p.stock_reserved), (on_hand, 0), "{sku}");
        self.levels().await;
    }
}

// ---- 1. malformed bytes through a real socket ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_get_a_grpc_error_and_the_connection_keeps_working() {
    let mut app = app(TestDb::sqlite()).await;
    app.stocked("MUG", 1299, 10).await;
    let channel = app.svc.channel().await;
    let mut client = InventoryServiceClient::new(channel.clone());
    let admin = admin_token();
    let for_user = Uuid::now_v7();
    // Each call needs its own order-service token: a second use is a replay.
    let order = || order_service_token("inventory", for_user);
    let (order_1, order_2, order_3) = (order(), order(), order());
    let path = |m: &str| format!("{SVC}/{m}");

    let nested_price = BadNestedPrice {
        sku: "NEW".into(),
        name: "New".into(),
        unit_price: Some(UnitsAsText {
            currency_code: "EUR".into(),
            units: "100".into(),
        }),
    }
    .encode_to_vec();
    let items_garbage = ItemsAsBytes {
        order_id: new_order(),
        items: vec![garbage(40, 7), vec![0x12, 0x7f, b'M']],
    }
    .encode_to_vec();
    let oneof_varint = OneofAsVarint { product_id: -1 }.encode_to_vec();
    // AdjustStockRequest.delta (field 3, int64) as a 64-bit fixed value.
    let delta_fixed = [vec![0x19], i64::MAX.to_le_bytes().to_vec()].concat();
    // ReserveStockRequest.items[0] claims 200 bytes; 2 follow.
    let truncated_item = vec![0x12, 200, 0x18, 0x01];
    let message = pb::GetProductRequest::default().encode_to_vec();

    // (what, method, token, request body, code tonic answers).
    let cases: Vec<MalformedAs<'_>> = vec![
        (
            "int64 inside a nested message as a string",
            "CreateProduct",
            Some(&admin),
            framed(&nested_price),
            Code::Internal,
        ),
        (
            "garbage repeated messages",
            "ReserveStock",
            Some(&order_1),
            framed(&items_garbage),
            Code::Internal,
        ),
        (
            "truncated repeated message",
            "ReserveStock",
            Some(&order_2),
            framed(&truncated_item),
            Code::Internal,
        ),
        (
            "oneof string as varint",
            "GetProduct",
            Some(&admin),
            framed(&oneof_varint),
            Code::Internal,
        ),
        (
            "int64 as fixed64",
            "AdjustStock",
            Some(&admin),
            framed(&delta_fixed),
            Code::Internal,
        ),
        with_token(
            Some(&admin),
            random_garbage("random garbage", "CreateProduct", 4096, 0x5eed),
        ),
        with_token(Some(&admin), short_frame("GetProduct", 64, &message)),
        with_token(Some(&admin), compressed_without_encoding("GetProduct")),
        with_token(Some(&order_3), four_gib_prefix("ReserveStock")),
    ];
    refuse_malformed_each(&channel, path, cases, |what| {
        let (mut client, admin) = (client.clone(), admin.clone());
        async move {
            let p = client
                .get_product(bearer(
                    pb::GetProductRequest {
                        product: Some(pb::get_product_request::Product::Sku("MUG".into())),
                    },
                    &admin,
                ))
                .await
                .unwrap_or_else(|e| panic!("normal call after {what}: {e:?}"));
            assert_eq!(p.into_inner().product.unwrap().stock_on_hand, 10);
        }
    })
    .await;

    // A client stream whose second message is garbage: the whole import fails
    // and nothing of the good first row is applied.
    let good = pb::ImportStockRequest {
        idempotency_key: "garbage-import".into(),
        sku: "MUG".into(),
        quantity: 5,
        ..Default::default()
    }
    .encode_to_vec();
    let stream = [framed(&good), framed(&[0x18, 0xff, 0xff])].concat();
    let s = raw(&channel, &path("ImportStock"), Some(&admin), stream)
        .await
        .expect_err("a broken stream");
    assert_eq!(s.code(), Code::Internal, "{s:?}");
    scan(&s);
    // A stream cut in the middle of a frame: the same.
    let cut = [framed(&good), frame(0, 100, &good)].concat();
    let s = raw(&channel, &path("ImportStock"), Some(&admin), cut)
        .await
        .expect_err("a cut stream");
    assert_eq!(s.code(), Code::Internal, "{s:?}");
    scan(&s);
    app.untouched("MUG", 10).await;

    // The key stayed unused: the same import, sent whole, applies once.
    let whole = client
        .import_stock(bearer(
            futures::stream::iter([pb::ImportStockRequest::decode(good.as_slice()).unwrap()]),
            &admin,
        ))
        .await
        .expect("the import, sent properly")
        .into_inner();
    assert_eq!((whole.rows_applied, whole.units_added), (1, 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_out_of_range_and_the_connection_keeps_working() {
    let mut app = app(TestDb::sqlite()).await;
    app.stocked("MUG", 1299, 10).await;
    let mut client = app.client.clone();
    let admin = admin_token();
    let for_user = Uuid::now_v7();
    // Each call needs its own order-service token: a second use is a replay.
    let order = || order_service_token("inventory", for_user);

    // Unary: 5 MiB of items.
    let big = pb::ReserveStockRequest {
        order_id: new_order(),
        items: vec![item(&"M".repeat(LIMIT + 1), 1)],
    };
    refused(
        client.reserve_stock(bearer(big, &order())).await,
        Code::OutOfRange,
    );
    // Client stream: a good row, then one over the limit. Nothing is applied.
    let rows = vec![
        pb::ImportStockRequest {
            idempotency_key: "big-import".into(),
            sku: "MUG".into(),
            quantity: 1,
            ..Default::default()
        },
        pb::ImportStockRequest {
            sku: "MUG".into(),
            quantity: 1,
            description: Some("d".repeat(LIMIT)),
            ..Default::default()
        },
    ];
    refused(
        client
            .import_stock(bearer(futures::stream::iter(rows), &admin))
            .await,
        Code::OutOfRange,
    );
    // Just under the limit: decoded, then refused by validation.
    let under = pb::CreateProductRequest {
        sku: "BIG".into(),
        name: "Big".into(),
        description: "d".repeat(LIMIT - 64),
        unit_price: eur(1),
    };
    invalid(
        client.create_product(bearer(under, &admin)).await,
        &["description"],
    );
    app.untouched("MUG", 10).await;
    let r = client
        .reserve_stock(bearer(
            pb::ReserveStockRequest {
                order_id: new_order(),
                items: vec![item("MUG", 2)],
            },
            &order(),
        ))
        .await
        .expect("a normal call after oversized ones");
    assert_eq!(r.into_inner().reservation.unwrap().lines.len(), 1);
}

// ---- 2. hostile values through the generated client ----

/// Ids that are not the canonical hyphenated UUID, in every hostile shape,
/// the empty one included.
fn bad_ids(valid: &str) -> Vec<String> {
    let mut ids = hostile::bad_ids(valid);
    ids.insert(0, String::new());
    ids
}

/// SKUs outside `A-Z 0-9 - _`, 1 to 64.
fn bad_skus() -> Vec<String> {
    vec![
        String::new(),
        "\0".into(),
        "MUG\0".into(),
        "mug".into(),
        "MUG ".into(),
        "ＭＵＧ".into(),
        "M\u{0301}UG".into(),
        "\u{202E}GUM".into(),
        "🦀".into(),
        "M".repeat(65),
        "M".repeat(1 << 20),
        "MUG'--".into(),
    ]
}

async fn hostile_values_are_refused_field_by_field(db: TestDb) {
    let mut app = app(db).await;
    let mug = app.stocked("MUG", 1299, 10).await;
    let admin = admin_token();
    let for_user = Uuid::now_v7();
    // Each call needs its own order-service token: a second use is a replay.
    let order = || order_service_token("inventory", for_user);
    let mut c = app.client.clone();

    // CreateProduct: every field, one at a time.
    let create = |sku: &str, name: &str, description: &str, price: Option<pb_common::Money>| {
        pb::CreateProductRequest {
            sku: sku.into(),
            name: name.into(),
            description: description.into(),
            unit_price: price,
        }
    };
    for sku in bad_skus() {
        let r = c
            .create_product(bearer(create(&sku, "Ok", "", eur(1)), &admin))
            .await;
        invalid(r, &["sku"]);
    }
    let money = |code: &str, units: i64| {
        Some(pb_common::Money {
            currency_code: code.into(),
            units,
        })
    };
    let ten_k = "x".repeat(10_000);
    let cases: Vec<(pb::CreateProductRequest, &[&str])> = vec![
        (create("N1", "", "", eur(1)), &["name"]),
        (create("N1", "\0", "", eur(1)), &["name"]),
        (create("N1", &ten_k, "", eur(1)), &["name"]),
        (create("N1", "Ok", "nul\0", eur(1)), &["description"]),
        (create("N1", "Ok", &ten_k, eur(1)), &["description"]),
        (create("N1", "Ok", "", None), &["unit_price"]),
        (
            create("N1", "Ok", "", money("", 1)),
            &["unit_price.currency_code"],
        ),
        (
            create("N1", "Ok", "", money("\0\0\0", 1)),
            &["unit_price.currency_code"],
        ),
        (
            create("N1", "Ok", "", money("€", 1)),
            &["unit_price.currency_code"],
        ),
        (
            create("N1", "Ok", "", money("eur", 1)),
            &["unit_price.currency_code"],
        ),
        (
            create("N1", "Ok", "", money("EUR", 0)),
            &["unit_price.units"],
        ),
        (
            create("N1", "Ok", "", money("EUR", -1)),
            &["unit_price.units"],
        ),
        (
            create("N1", "Ok", "", money("EUR", i64::MIN)),
            &["unit_price.units"],
        ),
        (
            create("N1", "Ok", "", money("EUR", i64::MAX)),
            &["unit_price.units"],
        ),
        (
            create("", "", "\u{7}", money("€", i64::MIN)),
            &[
                "sku",
                "name",
                "description",
                "unit_price.currency_code",
                "unit_price.units",
            ],
        ),
    ];
    for (req, fields) in cases {
        invalid(c.create_product(bearer(req, &admin)).await, fields);
    }
    // Unicode display text is kept exactly.
    let fancy = "Tasse ☕ e\u{301} 日本 👩‍👩‍👧‍👦";
    let p = c
        .create_product(bearer(create("FANCY", fancy, fancy, eur(1)), &admin))
        .await
        .expect("unicode names are fine")
        .into_inner()
        .product
        .unwrap();
    assert_eq!((p.name.as_str(), p.description.as_str()), (fancy, fancy));

    // GetProduct: ids and SKUs.
    use pb::get_product_request::Product as Get;
    for id in bad_ids(&mug.id) {
        let r = c
            .get_product(bearer(
                pb::GetProductRequest {
                    product: Some(Get::ProductId(id)),
                },
                &admin,
            ))
            .await;
        invalid(r, &["product_id"]);
    }
    for sku in bad_skus() {
        let r = c
            .get_product(bearer(
                pb::GetProductRequest {
                    product: Some(Get::Sku(sku)),
                },
                &admin,
            ))
            .await;
        invalid(r, &["sku"]);
    }
    invalid(
        c.get_product(bearer(pb::GetProductRequest { product: None }, &admin))
            .await,
        &["product"],
    );

    // AdjustStock: extreme deltas, hostile reasons and keys.
    use pb::adjust_stock_request::Product as Adj;
    let adjust = |delta: i64, reason: &str, key: &str| pb::AdjustStockRequest {
        product: Some(Adj::Sku("MUG".into())),
        delta,
        reason: reason.into(),
        idempotency_key: key.into(),
    };
    for delta in [
        0,
        i64::MIN,
        i64::MAX,
        i64::MIN + 1,
        1_000_000_001,
        -1_000_000_001,
    ] {
        let r = c
            .adjust_stock(bearer(adjust(delta, "r", "k-delta"), &admin))
            .await;
        invalid(r, &["delta"]);
    }
    for reason in ["", " ", "\0", "line\nbreak", &"r".repeat(501)] {
        let r = c
            .adjust_stock(bearer(adjust(1, reason, "k-reason"), &admin))
            .await;
        invalid(r, &["reason"]);
    }
    for key in bad_keys() {
        let r = c.adjust_stock(bearer(adjust(1, "r", &key), &admin)).await;
        invalid(r, &["idempotency_key"]);
    }
    // Within range but more than there is: a precondition, not an error.
    let r = c
        .adjust_stock(bearer(adjust(-1_000_000_000, "r", "k-neg"), &admin))
        .await;
    refused(r, Code::FailedPrecondition);

    // ReserveStock: order ids, item counts, quantities, products.
    let reserve = |order_id: &str, items: Vec<pb::ReserveStockItem>| pb::ReserveStockRequest {
        order_id: order_id.into(),
        items,
    };
    for id in bad_ids(&new_order()) {
        let r = c
            .reserve_stock(bearer(reserve(&id, vec![item("MUG", 1)]), &order()))
            .await;
        invalid(r, &["order_id"]);
        let r = c
            .commit_reservation(bearer(
                pb::CommitReservationRequest {
                    order_id: id.clone(),
                },
                &order(),
            ))
            .await;
        invalid(r, &["order_id"]);
        let r = c
            .release_reservation(bearer(
                pb::ReleaseReservationRequest { order_id: id },
                &order(),
            ))
            .await;
        invalid(r, &["order_id"]);
    }
    for q in [0, -1, i64::MIN, i64::MAX, 10_001] {
        let r = c
            .reserve_stock(bearer(
                reserve(&new_order(), vec![item("MUG", q)]),
                &order(),
            ))
            .await;
        invalid(r, &["items[0].quantity"]);
    }
    for sku in bad_skus() {
        let r = c
            .reserve_stock(bearer(reserve(&new_order(), vec![item(&sku, 1)]), &order()))
            .await;
        invalid(r, &["items[0].sku"]);
    }
    let no_product = pb::ReserveStockItem {
        product: None,
        quantity: 1,
    };
    let r = c
        .reserve_stock(bearer(reserve(&new_order(), vec![no_product]), &order()))
        .await;
    invalid(r, &["items[0].product"]);
    let r = c
        .reserve_stock(bearer(reserve(&new_order(), vec![]), &order()))
        .await;
    invalid(r, &["items"]);
    for n in [101, 10_000] {
        let many = (0..n).map(|i| item(&format!("S{i}"), 1)).collect();
        let r = c
            .reserve_stock(bearer(reserve(&new_order(), many), &order()))
            .await;
        invalid(r, &["items"]);
    }

    // ListProducts: sizes and tokens (a cursor is a SKU, checked as one).
    let tokens = page_tokens("products.v1", &["\0", "mug", "MUG\0", "🦀"]);
    let list = |page_size, page_token| {
        let (mut c, admin) = (c.clone(), admin.clone());
        async move {
            let req = pb::ListProductsRequest {
                page_size,
                page_token,
            };
            c.list_products(bearer(req, &admin))
                .await
                .map(|r| r.into_inner().products.len())
        }
    };
    paging(list, 2, tokens, 1).await;

    // Nothing of it changed any stock, and the service answers normally.
    app.untouched("MUG", 10).await;
    let r = c
        .reserve_stock(bearer(
            reserve(&new_order(), vec![item("MUG", 10)]),
            &order(),
        ))
        .await
        .expect("a normal reservation after all of it");
    assert_eq!(r.into_inner().reservation.unwrap().lines[0].quantity, 10);
}

async fn hostile_import_rows_are_reported_and_nothing_else_changes(db: TestDb) {
    let mut app = app(db).await;
    app.stocked("MUG", 1299, 10).await;
    let admin = admin_token();
    let mut c = app.client.clone();
    let row = |sku: &str, quantity: i64| pb::ImportStockRequest {
        sku: sku.into(),
        quantity,
        ..Default::default()
    };
    let creating =
        |sku: &str, name: &str, price: Option<pb_common::Money>| pb::ImportStockRequest {
            name: Some(name.into()),
            description: Some("\0".into()),
            unit_price: price,
            ..row(sku, 1)
        };
    let mut rows = vec![pb::ImportStockRequest {
        idempotency_key: "hostile-import".into(),
        ..row("MUG", 1)
    }];
    rows.extend(bad_skus().into_iter().map(|s| row(&s, 1)));
    rows.extend([i64::MIN, -1, i64::MAX, 1_000_000_001].map(|q| row("MUG", q)));
    rows.push(creating("NEW", "\0", eur(i64::MAX)));
    rows.push(creating(
        "NEW",
        "New",
        Some(pb_common::Money {
            currency_code: "\0".into(),
            units: 1,
        }),
    ));
    rows.push(pb::ImportStockRequest {
        idempotency_key: "hostile-import".into(),
        ..row("MUG", 2)
    });
    let received = rows.len() as i64;
    let summary = c
        .import_stock(bearer(futures::stream::iter(rows), &admin))
        .await
        .expect("bad rows are reported, not fatal")
        .into_inner();
    assert_eq!(summary.rows_received, received);
    assert_eq!((summary.rows_applied, summary.units_added), (2, 3));
    assert_eq!(summary.failed_rows.len() as i64, received - 2);
    for f in &summary.failed_rows {
        let e = f.error.as_ref().expect("each failed row says why");
        assert!(
            [Code::InvalidArgument, Code::NotFound].contains(&Code::from_i32(e.code)),
            "row {}: {e:?}",
            f.row_number
        );
        assert_no_leak(&e.message);
    }
    // The failed rows' SKUs come back exactly as sent, NUL and all.
    assert_eq!(summary.failed_rows[1].sku, "\0");

    // Whole-call errors: a hostile key in the first message, or a second key.
    for key in bad_keys() {
        let r = c
            .import_stock(bearer(
                futures::stream::iter([pb::ImportStockRequest {
                    idempotency_key: key,
                    ..row("MUG", 1)
                }]),
                &admin,
            ))
            .await;
        invalid(r, &["idempotency_key"]);
    }
    let r = c
        .import_stock(bearer(
            futures::stream::iter([
                pb::ImportStockRequest {
                    idempotency_key: "k1".into(),
                    ..row("MUG", 1)
                },
                pb::ImportStockRequest {
                    idempotency_key: "k1\0".into(),
                    ..row("MUG", 1)
                },
            ]),
            &admin,
        ))
        .await;
    invalid(r, &["idempotency_key"]);

    // A replay of the hostile import returns the stored summary, byte for byte.
    let mut rows = vec![pb::ImportStockRequest {
        idempotency_key: "hostile-import".into(),
        ..row("MUG", 1)
    }];
    rows.extend(bad_skus().into_iter().map(|s| row(&s, 1)));
    rows.extend([i64::MIN, -1, i64::MAX, 1_000_000_001].map(|q| row("MUG", q)));
    rows.push(creating("NEW", "\0", eur(i64::MAX)));
    rows.push(creating(
        "NEW",
        "New",
        Some(pb_common::Money {
            currency_code: "\0".into(),
            units: 1,
        }),
    ));
    rows.push(pb::ImportStockRequest {
        idempotency_key: "hostile-import".into(),
        ..row("MUG", 2)
    });
    let replay = c
        .import_stock(bearer(futures::stream::iter(rows), &admin))
        .await
        .expect("a replay")
        .into_inner();
    assert_eq!(replay, summary);
    app.untouched("MUG", 13).await;
}

// ---- 3. generated hostile requests ----

/// Hostile text, with a fullwidth SKU among the nasties.
fn text(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    hostile::text_with(&["ＭＵＧ"], valid)
}

/// Integers: the extremes, the edges of every range in the API, anything.
fn int() -> BoxedStrategy<i64> {
    prop_oneof![
        2 => prop::sample::select(vec![
            i64::MIN, i64::MIN + 1, -1_000_000_001, -1_000_000_000, -1, 0, 1, 10_000, 10_001,
            1_000_000_000, 1_000_000_001, 1_000_000_000_000, 1_000_000_000_001, i64::MAX,
        ]),
        2 => any::<i64>(),
        3 => 1..20i64,
    ]
    .boxed()
}

fn sku() -> BoxedStrategy<String> {
    text(prop_oneof![Just("MUG".to_owned()), "[A-Z0-9_-]{1,8}"])
}

fn key() -> BoxedStrategy<String> {
    text("[ -~]{1,24}")
}

fn price() -> BoxedStrategy<Option<pb_common::Money>> {
    prop::option::weighted(
        0.9,
        (text(prop_oneof![Just("EUR".to_owned()), "[A-Z]{3}"]), int()).prop_map(
            |(currency_code, units)| pb_common::Money {
                currency_code,
                units,
            },
        ),
    )
    .boxed()
}

#[derive(Debug, Clone)]
enum Op {
    Create(pb::CreateProductRequest),
    Get(pb::GetProductRequest),
    List(pb::ListProductsRequest),
    Adjust(pb::AdjustStockRequest),
    Import(Vec<pb::ImportStockRequest>),
    Reserve(pb::ReserveStockRequest),
    Commit(pb::CommitReservationRequest),
    Release(pb::ReleaseReservationRequest),
}

fn op(product_id: String, order_id: String) -> impl Strategy<Value = Op> {
    let id = move |known: String| {
        text(prop_oneof![
            Just(known),
            any::<u128>().prop_map(|n| Uuid::from_u128(n).to_string()),
        ])
    };
    let create = (sku(), text("[A-Za-z ]{1,20}"), text("[ -~]{0,40}"), price()).prop_map(
        |(sku, name, description, unit_price)| {
            Op::Create(pb::CreateProductRequest {
                sku,
                name,
                description,
                unit_price,
            })
        },
    );
    use pb::{adjust_stock_request as adj, get_product_request as get, reserve_stock_item as res};
    let get = prop::option::of(prop_oneof![
        id(product_id.clone()).prop_map(get::Product::ProductId),
        sku().prop_map(get::Product::Sku),
    ])
    .prop_map(|product| Op::Get(pb::GetProductRequest { product }));
    let list = (
        prop_oneof![any::<i32>(), -2..600i32],
        text(Just(String::new())),
    )
        .prop_map(|(page_size, page_token)| {
            Op::List(pb::ListProductsRequest {
                page_size,
                page_token,
            })
        });
    let adjust_product = prop::option::of(prop_oneof![
        id(product_id.clone()).prop_map(adj::Product::ProductId),
        sku().prop_map(adj::Product::Sku),
    ]);
    let adjust = (adjust_product, int(), text("[a-z ]{1,20}"), key()).prop_map(
        |(product, delta, reason, idempotency_key)| {
            Op::Adjust(pb::AdjustStockRequest {
                product,
                delta,
                reason,
                idempotency_key,
            })
        },
    );
    let import_row = (
        key(),
        sku(),
        int(),
        prop::option::of(text("[A-Za-z]{1,9}")),
        prop::option::of(text("[a-z]{0,9}")),
        price(),
    )
        .prop_map(
            |(idempotency_key, sku, quantity, name, description, unit_price)| {
                pb::ImportStockRequest {
                    idempotency_key,
                    sku,
                    quantity,
                    name,
                    description,
                    unit_price,
                }
            },
        );
    let import = prop::collection::vec(import_row, 0..6).prop_map(Op::Import);
    let item = (
        prop::option::of(prop_oneof![
            id(product_id).prop_map(res::Product::ProductId),
            sku().prop_map(res::Product::Sku),
        ]),
        int(),
    )
        .prop_map(|(product, quantity)| pb::ReserveStockItem { product, quantity });
    let items = prop_oneof![
        8 => prop::collection::vec(item, 0..4),
        1 => (0usize..300).prop_map(|n| (0..n).map(|i| crate::item(&format!("S{i}"), 1)).collect()),
    ];
    let reserve = (id(order_id.clone()), items)
        .prop_map(|(order_id, items)| Op::Reserve(pb::ReserveStockRequest { order_id, items }));
    let commit = id(order_id.clone())
        .prop_map(|order_id| Op::Commit(pb::CommitReservationRequest { order_id }));
    let release =
        id(order_id).prop_map(|order_id| Op::Release(pb::ReleaseReservationRequest { order_id }));
    prop_oneof![create, get, list, adjust, import, reserve, commit, release]
}

#[test]
fn generated_hostile_requests_never_fail_internally() {
    let rt = runtime();
    let mut app = rt.block_on(app(TestDb::sqlite()));
    let mug = rt.block_on(app.stocked("MUG", 1299, 1_000));
    let order_id = new_order();
    let admin = admin_token();
    let for_user = Uuid::now_v7();
    // Each call needs its own order-service token: a second use is a replay.
    let order = || order_service_token("inventory", for_user);
    let client = app.client.clone();

    proptest!(proptest_config(0x5EED_0002, 256), |(op in op(mug.id.clone(), order_id.clone()))| {
        let mut c = client.clone();
        let (result, failed_rows) = rt.block_on(async {
            match op {
                Op::Create(r) => (c.create_product(bearer(r, &admin)).await.map(drop), vec![]),
                Op::Get(r) => (c.get_product(bearer(r, &admin)).await.map(drop), vec![]),
                Op::List(r) => (c.list_products(bearer(r, &admin)).await.map(drop), vec![]),
                Op::Adjust(r) => (c.adjust_stock(bearer(r, &admin)).await.map(drop), vec![]),
                Op::Import(rows) => {
                    let r = c.import_stock(bearer(futures::stream::iter(rows), &admin)).await;
                    match r {
                        Ok(r) => (Ok(()), r.into_inner().failed_rows),
                        Err(s) => (Err(s), vec![]),
                    }
                }
                Op::Reserve(r) => (c.reserve_stock(bearer(r, &order())).await.map(drop), vec![]),
                Op::Commit(r) => (c.commit_reservation(bearer(r, &order())).await.map(drop), vec![]),
                Op::Release(r) => (c.release_reservation(bearer(r, &order())).await.map(drop), vec![]),
            }
        });
        if let Err(s) = result {
            expected_refusal(&s, None)?;
        }
        for f in failed_rows {
            let e = f.error.expect("each failed row says why");
            prop_assert!(
                [Code::InvalidArgument, Code::NotFound].contains(&Code::from_i32(e.code)),
                "unexpected row error {e:?}"
            );
            assert_no_leak(&e.message);
        }
    });

    // Every counter still balances, and a normal call works.
    rt.block_on(async {
        app.levels().await;
        let p = app.product("MUG").await;
        assert_eq!(p.id, mug.id);
    });
}
