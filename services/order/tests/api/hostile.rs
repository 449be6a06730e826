//! Hostile input: malformed protobuf, wrong wire types, unknown enum values,
//! oversized messages, extreme integers, empty, overlong, NUL and unicode text,
//! in unary and server-streaming calls. Every answer is a proper gRPC status
//! whose message leaks nothing internal, no saga starts for a refused request,
//! and a normal call on the same connection works right after.

use emporium_common::rpc::Code;
use emporium_testkit::{
    Stack, TestDb, admin_token, assert_no_leak, backend_tests, bearer,
    hostile::{
        LIMIT, Malformed, bad_ids, bad_keys, compressed_without_encoding, expected_refusal,
        four_gib_prefix, id, page_tokens, paging, proptest_config, random_garbage,
        refuse_malformed, runtime, short_frame, text,
    },
    invalid,
    raw::{framed, raw},
    refused, scan, violated_fields,
};
use pb::order_service_client::OrderServiceClient;
use proptest::prelude::*;
use prost::Message as _;
use uuid::Uuid;

use crate::{pb, status};

backend_tests!(hostile_values_are_refused_field_by_field);

const SVC: &str = "/emporium.order.v1.OrderService";

/// CreateOrderRequest with `items` (field 2, repeated messages) as a varint and
/// `payment_method` (field 3, a string) as a fixed32.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongTypes {
    #[prost(uint64, tag = "2")]
    items: u64,
    #[prost(fixed32, tag = "3")]
    payment_method: u32,
}

/// ListOrdersRequest with `status` (field 2, an enum) as a string.
#[derive(Clone, PartialEq, prost::Message)]
struct StatusAsText {
    #[prost(string, tag = "2")]
    status: String,
}

/// ListOrdersRequest as the wire carries it: an enum is a plain varint, so any
/// number arrives.
#[derive(Clone, PartialEq, prost::Message)]
struct RawListOrders {
    #[prost(int64, tag = "2")]
    status: i64,
}

fn create(items: &[(&str, i64)], method: &str, key: &str) -> pb::CreateOrderRequest {
    pb::CreateOrderRequest {
        user_id: String::new(),
        items: items
            .iter()
            .map(|(sku, quantity)| pb::CreateOrderItem {
                sku: (*sku).into(),
                quantity: *quantity,
            })
            .collect(),
        payment_method: method.into(),
        idempotency_key: key.into(),
    }
}

// ---- 1. malformed bytes through a real socket ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bytes_get_a_grpc_error_and_the_connection_keeps_working() {
    let s = Stack::start(TestDb::sqlite()).await;
    s.product("MUG-1", 1_000, 5).await;
    let placed = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "raw-1")
        .await
        .unwrap();
    let channel = s.order.channel().await;
    let client = OrderServiceClient::new(channel.clone());
    let token = s.customer_token.clone();
    let path = |m: &str| format!("{SVC}/{m}");

    let wrong_types = WrongTypes {
        items: 1,
        payment_method: 2,
    }
    .encode_to_vec();
    let status_text = StatusAsText {
        status: "ORDER_STATUS_CONFIRMED".into(),
    }
    .encode_to_vec();
    // CreateOrderRequest.items[0] whose quantity (field 2) is an unterminated varint.
    let item_garbage = vec![0x12, 0x03, 0x10, 0xff, 0xff];
    // WatchOrderUpdatesRequest.user_orders (field 2) claims 80 bytes; 2 follow.
    let truncated = vec![0x12, 80, 0x0a, 0x00];
    let message = pb::GetOrderRequest::default().encode_to_vec();

    // (what, method, request body, code tonic answers).
    let cases: Vec<Malformed> = vec![
        (
            "repeated message as varint, string as fixed32",
            "CreateOrder",
            framed(&wrong_types),
            Code::Internal,
        ),
        (
            "unterminated varint in a repeated message",
            "CreateOrder",
            framed(&item_garbage),
            Code::Internal,
        ),
        (
            "enum as a string",
            "ListOrders",
            framed(&status_text),
            Code::Internal,
        ),
        (
            "truncated oneof message, server streaming",
            "WatchOrderUpdates",
            framed(&truncated),
            Code::Internal,
        ),
        random_garbage(
            "random garbage, server streaming",
            "WatchOrderUpdates",
            2048,
            0x5eed,
        ),
        random_garbage("random garbage", "CreateOrder", 2048, 0xbad),
        short_frame("GetOrder", 64, &message),
        compressed_without_encoding("CancelOrder"),
        four_gib_prefix("CreateOrder"),
    ];
    refuse_malformed(
        &channel,
        path,
        || Some(token.clone()),
        cases,
        |what| {
            let (mut client, token, id) = (client.clone(), token.clone(), placed.id.clone());
            async move {
                let got = client
                    .get_order(bearer(
                        pb::GetOrderRequest {
                            order_id: id.clone(),
                        },
                        &token,
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("normal call after {what}: {e:?}"));
                assert_eq!(got.into_inner().order.unwrap().id, id);
            }
        },
    )
    .await;

    // Enums travel as plain varints: an unknown status reaches the handler and
    // is refused by name. Wider values are cut to 32 bits as protobuf says
    // (2^31 becomes i32::MIN, -2^31 - 1 becomes i32::MAX; i64::MIN would become
    // 0, "any status").
    for n in [42, -1, i64::from(i32::MAX) + 1, i64::from(i32::MIN) - 1] {
        let body = framed(&RawListOrders { status: n }.encode_to_vec());
        let st = raw(&channel, &path("ListOrders"), Some(&token), body)
            .await
            .expect_err("an unknown status");
        assert_eq!(st.code(), Code::InvalidArgument, "{n}: {st:?}");
        assert_eq!(violated_fields(&st), ["status"], "{n}");
        scan(&st);
    }
    s.settled(1, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_out_of_range_and_the_connection_keeps_working() {
    let s = Stack::start(TestDb::sqlite()).await;
    s.product("MUG-1", 1_000, 5).await;
    let mut client = s.orders().await;
    let token = s.customer_token.clone();

    let big = create(&[("MUG-1", 1)], "pm_card_ok", &"k".repeat(LIMIT + 1));
    refused(
        client.create_order(bearer(big, &token)).await,
        Code::OutOfRange,
    );
    let reason = "r".repeat(LIMIT + 1);
    let cancel = pb::CancelOrderRequest {
        order_id: Uuid::now_v7().to_string(),
        reason,
    };
    refused(
        client.cancel_order(bearer(cancel, &token)).await,
        Code::OutOfRange,
    );
    // Just under the limit: decoded, then refused by validation.
    let under = create(&[("MUG-1", 1)], &"p".repeat(LIMIT - 64), "k");
    invalid(
        client.create_order(bearer(under, &token)).await,
        &["payment_method"],
    );
    // The same connection places a normal order.
    let o = client
        .create_order(bearer(
            create(&[("MUG-1", 2)], "pm_card_ok", "after-big"),
            &token,
        ))
        .await
        .expect("a normal order after oversized ones")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&o), pb::OrderStatus::Confirmed);
    s.settled(1, 0).await;
}

// ---- 2. hostile values through the generated client ----

async fn hostile_values_are_refused_field_by_field(db: TestDb) {
    let s = Stack::start(db).await;
    s.product("MUG-1", 1_000, 100).await;
    let mut c = s.orders().await;
    let token = s.customer_token.clone();
    let admin = admin_token();
    let me = s.customer.to_string();
    let confirmed = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "k-ok")
        .await
        .unwrap();

    // CreateOrder: ids, items, quantities, SKUs, methods, keys.
    let ok = |key: &str| create(&[("MUG-1", 1)], "pm_card_ok", key);
    for id in bad_ids(&me) {
        let r = c
            .create_order(bearer(
                pb::CreateOrderRequest {
                    user_id: id.clone(),
                    ..ok("k-user")
                },
                &token,
            ))
            .await;
        invalid(r, &["user_id"]);
    }
    for q in [0, -1, i64::MIN, i64::MAX, 10_001] {
        let r = c
            .create_order(bearer(create(&[("MUG-1", q)], "pm_card_ok", "k-q"), &token))
            .await;
        invalid(r, &["items[0].quantity"]);
    }
    for sku in [
        "",
        "\0",
        "MUG-1\0",
        "mug-1",
        "ＭＵＧ",
        "M\u{0301}UG",
        "\u{202E}1-GUM",
        "🦀",
        &"M".repeat(65),
        &"M".repeat(1 << 20),
    ] {
        let r = c
            .create_order(bearer(create(&[(sku, 1)], "pm_card_ok", "k-sku"), &token))
            .await;
        invalid(r, &["items[0].sku"]);
    }
    invalid(
        c.create_order(bearer(create(&[], "pm_card_ok", "k-none"), &token))
            .await,
        &["items"],
    );
    let many: Vec<String> = (0..10_000).map(|i| format!("S-{i}")).collect();
    for n in [101, 10_000] {
        let items: Vec<(&str, i64)> = many[..n].iter().map(|s| (s.as_str(), 1)).collect();
        let r = c
            .create_order(bearer(create(&items, "pm_card_ok", "k-many"), &token))
            .await;
        invalid(r, &["items"]);
    }
    for method in [
        "",
        "\0",
        "pm_card_ok\0",
        "pm card ok",
        "pm_card_οk", // Greek omicron
        "\u{202E}ko_drac_mp",
        &"p".repeat(65),
    ] {
        let r = c
            .create_order(bearer(create(&[("MUG-1", 1)], method, "k-method"), &token))
            .await;
        invalid(r, &["payment_method"]);
    }
    for key in bad_keys() {
        let r = c.create_order(bearer(ok(&key), &token)).await;
        invalid(r, &["idempotency_key"]);
    }
    // A well-formed method the payment service does not know is a business
    // failure: the order is cancelled, and says why without internals.
    let odd = s
        .place(&[("MUG-1", 1)], "pm_card_$(rm)", "k-odd")
        .await
        .expect("an order with an unknown method");
    assert_eq!(status(&odd), pb::OrderStatus::Cancelled);
    assert_eq!(
        pb::CancelReason::try_from(odd.cancel_reason).unwrap(),
        pb::CancelReason::PaymentMethodInvalid
    );
    assert_no_leak(&odd.cancel_detail);

    // GetOrder, CancelOrder and WatchOrderUpdates name the bad id.
    use pb::watch_order_updates_request::Target;
    for id in bad_ids(&confirmed.id) {
        let r = c
            .get_order(bearer(
                pb::GetOrderRequest {
                    order_id: id.clone(),
                },
                &token,
            ))
            .await;
        invalid(r, &["order_id"]);
        let r = c
            .cancel_order(bearer(
                pb::CancelOrderRequest {
                    order_id: id.clone(),
                    reason: String::new(),
                },
                &token,
            ))
            .await;
        invalid(r, &["order_id"]);
        let watch = |target| pb::WatchOrderUpdatesRequest {
            target: Some(target),
        };
        let r = c
            .watch_order_updates(bearer(watch(Target::OrderId(id.clone())), &token))
            .await;
        invalid(r, &["order_id"]);
        let r = c
            .watch_order_updates(bearer(
                watch(Target::UserOrders(pb::UserOrders { user_id: id })),
                &token,
            ))
            .await;
        invalid(r, &["user_orders.user_id"]);
    }
    // No target watches the caller's own orders (the REST route
    // `GET /v1/orders:watch` sends none).
    let mine = c
        .watch_order_updates(bearer(
            pb::WatchOrderUpdatesRequest { target: None },
            &token,
        ))
        .await;
    assert!(mine.is_ok(), "no target is the caller's orders: {mine:?}");
    drop(mine);

    // CancelOrder reasons: overlong and control characters are refused, and
    // nothing is cancelled; unicode text is kept exactly.
    for reason in ["\0", "a\0b", "bell\u{7}", &"r".repeat(501)] {
        let r = c
            .cancel_order(bearer(
                pb::CancelOrderRequest {
                    order_id: confirmed.id.clone(),
                    reason: reason.into(),
                },
                &token,
            ))
            .await;
        invalid(r, &["reason"]);
    }
    let got = c
        .get_order(bearer(
            pb::GetOrderRequest {
                order_id: confirmed.id.clone(),
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&got), pb::OrderStatus::Confirmed);
    let reason = "Zu spät 🕰 e\u{301} 注文";
    let cancelled = c
        .cancel_order(bearer(
            pb::CancelOrderRequest {
                order_id: confirmed.id.clone(),
                reason: reason.into(),
            },
            &token,
        ))
        .await
        .expect("a unicode reason")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(status(&cancelled), pb::OrderStatus::Cancelled);
    assert_eq!(cancelled.cancel_detail, reason);

    // ListOrders: unknown statuses, page sizes, page tokens.
    for st in [42, -1, i32::MAX, i32::MIN] {
        let r = c
            .list_orders(bearer(
                pb::ListOrdersRequest {
                    status: st,
                    ..Default::default()
                },
                &token,
            ))
            .await;
        invalid(r, &["status"]);
    }
    // The largest page is read as an admin, the refusals as the customer.
    let hostile_cursor = format!("{}/{}\0", i64::MAX, confirmed.id);
    let tokens = page_tokens(
        "orders.v1",
        &["garbage", "1/\0", &hostile_cursor, "1/\u{202E}🦀"],
    );
    let list = |page_size, page_token| {
        let mut c = c.clone();
        let as_who = if page_size == i32::MAX {
            &admin
        } else {
            &token
        }
        .clone();
        async move {
            let req = pb::ListOrdersRequest {
                page_size,
                page_token,
                ..Default::default()
            };
            c.list_orders(bearer(req, &as_who))
                .await
                .map(|r| r.into_inner().orders.len())
        }
    };
    paging(list, 2, tokens, 10).await;

    // Only the valid orders ran their sagas; every invariant holds.
    s.settled(0, 2).await;
    let o = s
        .place(&[("MUG-1", 3)], "pm_card_ok", "k-after")
        .await
        .expect("a normal order after all of it");
    assert_eq!(status(&o), pb::OrderStatus::Confirmed);
}

// ---- 3. generated hostile requests ----

fn quantity() -> BoxedStrategy<i64> {
    prop_oneof![
        2 => prop::sample::select(vec![i64::MIN, -1, 0, 1, 10_000, 10_001, i64::MAX]),
        1 => any::<i64>(),
        6 => 1..4i64,
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Op {
    Create(pb::CreateOrderRequest),
    Get(pb::GetOrderRequest),
    List(pb::ListOrdersRequest),
    Cancel(pb::CancelOrderRequest),
    Watch(pb::WatchOrderUpdatesRequest),
}

fn op(me: String, order: String) -> impl Strategy<Value = Op> {
    let item = (
        text(prop::sample::select(vec![
            "MUG-1".to_owned(),
            "MUG-2".to_owned(),
            "NOPE".to_owned(),
        ])),
        quantity(),
    )
        .prop_map(|(sku, quantity)| pb::CreateOrderItem { sku, quantity });
    let items = prop_oneof![
        12 => prop::collection::vec(item, 0..4),
        1 => (90usize..120).prop_map(|n| {
            (0..n)
                .map(|i| pb::CreateOrderItem { sku: format!("S-{i}"), quantity: 1 })
                .collect()
        }),
    ];
    let create = (
        prop_oneof![3 => Just(String::new()), 1 => id(vec![me.clone()])],
        items,
        text(prop::sample::select(vec![
            "pm_card_ok".to_owned(),
            "pm_card_declined".to_owned(),
            "pm_card_unknown".to_owned(),
        ])),
        text(prop_oneof![Just("fixed-key".to_owned()), "[!-~]{1,24}"]),
    )
        .prop_map(|(user_id, items, payment_method, idempotency_key)| {
            Op::Create(pb::CreateOrderRequest {
                user_id,
                items,
                payment_method,
                idempotency_key,
            })
        });
    let get =
        id(vec![order.clone()]).prop_map(|order_id| Op::Get(pb::GetOrderRequest { order_id }));
    let list = (
        text(Just(String::new())),
        prop_oneof![0..4i32, any::<i32>()],
        prop_oneof![any::<i32>(), -2..600i32],
        text(Just(String::new())),
    )
        .prop_map(|(user_id, status, page_size, page_token)| {
            Op::List(pb::ListOrdersRequest {
                user_id,
                status,
                page_size,
                page_token,
            })
        });
    let cancel = (id(vec![order.clone()]), text("[a-z ]{0,20}"))
        .prop_map(|(order_id, reason)| Op::Cancel(pb::CancelOrderRequest { order_id, reason }));
    use pb::watch_order_updates_request::Target;
    let watch = prop::option::of(prop_oneof![
        id(vec![order]).prop_map(Target::OrderId),
        text(prop_oneof![Just(String::new()), Just(me)])
            .prop_map(|user_id| Target::UserOrders(pb::UserOrders { user_id })),
    ])
    .prop_map(|target| Op::Watch(pb::WatchOrderUpdatesRequest { target }));
    prop_oneof![create, get, list, cancel, watch]
}

#[test]
fn generated_hostile_requests_never_fail_internally() {
    let rt = runtime();
    let s = rt.block_on(Stack::start(TestDb::sqlite()));
    let first = rt.block_on(async {
        s.product("MUG-1", 1_000, 10_000).await;
        s.product("MUG-2", 2_500, 3).await;
        s.place(&[("MUG-1", 1)], "pm_card_ok", "first")
            .await
            .unwrap()
    });
    let client = rt.block_on(s.orders());
    let token = s.customer_token.clone();

    proptest!(proptest_config(0x5EED_0004, 128), |(op in op(s.customer.to_string(), first.id.clone()))| {
        let mut c = client.clone();
        let result = rt.block_on(async {
            match op {
                Op::Create(r) => c.create_order(bearer(r, &token)).await.map(|r| r.into_inner().order),
                Op::Get(r) => c.get_order(bearer(r, &token)).await.map(|r| r.into_inner().order),
                Op::List(r) => c.list_orders(bearer(r, &token)).await.map(|_| None),
                Op::Cancel(r) => c.cancel_order(bearer(r, &token)).await.map(|r| r.into_inner().order),
                // The stream's first answer; the stream itself is dropped.
                Op::Watch(r) => c.watch_order_updates(bearer(r, &token)).await.map(|_| None),
            }
        });
        match result {
            Ok(order) => {
                // Business failures say why in words: those must not leak either.
                if let Some(o) = order {
                    assert_no_leak(&o.cancel_detail);
                }
            }
            Err(st) => {
                expected_refusal(&st, None)?;
            }
        }
    });

    // Every saga settled with every invariant holding, and a normal call works.
    rt.block_on(async {
        s.settle_and_check().await;
        let o = client
            .clone()
            .create_order(bearer(
                create(&[("MUG-1", 1)], "pm_card_ok", "last"),
                &token,
            ))
            .await
            .expect("a normal order after the run")
            .into_inner()
            .order
            .unwrap();
        assert_eq!(status(&o), pb::OrderStatus::Confirmed);
    });
}
