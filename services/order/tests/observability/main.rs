//! One order is one trace across the four services, and `/metrics` counts what
//! happened — checked with no collector: the process-wide subscriber exports
//! spans to memory ([`emporium_testkit::otel`]). A test binary of its own, since
//! a process has one subscriber and one metrics registry; the tests here take
//! turns so counter deltas are exact.
//!
//! `cargo test -p emporium-order --test observability -- --nocapture` prints
//! the span trees.

#[allow(dead_code)]
#[path = "../api/invariants.rs"]
mod invariants;
#[allow(dead_code)]
#[path = "../api/support.rs"]
mod support;

use std::{collections::HashSet, time::Duration};

use emporium_common::{client::channel, config::PeerConfig, telemetry::trace};
use emporium_proto::order::v1 as pb;
use emporium_testkit::{
    TestDb, bearer, http_get,
    otel::{self, attr, one, render_tree},
    prometheus::Scrape,
};
use opentelemetry::trace::{SpanKind, Status, TraceId};
use opentelemetry_sdk::trace::SpanData;
use support::{Stack, stack};
use tracing::Instrument as _;
use uuid::Uuid;

/// The tests share the process's spans and counters: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ORDER: &str = "emporium.order.v1.OrderService";
const USER: &str = "emporium.user.v1.UserService";
const INVENTORY: &str = "emporium.inventory.v1.InventoryService";
const PAYMENT: &str = "emporium.payment.v1.PaymentService";

/// Places an order as a traced client would: inside a root span of the test's
/// own, through a [`emporium_common::client::PeerChannel`] that injects it.
async fn traced_order(s: &Stack, sku: &str, method: &str) -> (TraceId, pb::Order) {
    let root = tracing::info_span!(target: "emporium::test", "checkout");
    let trace_id = TraceId::from_hex(&trace::trace_id(&root).expect("root span is traced"))
        .expect("hex trace id");
    let peer = PeerConfig {
        url: s.order.url(),
        ..PeerConfig::local(0)
    };
    let mut orders =
        pb::order_service_client::OrderServiceClient::new(channel("order", &peer).unwrap());
    let req = pb::CreateOrderRequest {
        user_id: String::new(),
        items: vec![pb::CreateOrderItem {
            sku: sku.into(),
            quantity: 2,
        }],
        payment_method: method.into(),
        idempotency_key: Uuid::now_v7().to_string(),
    };
    let order = async { orders.create_order(bearer(req, &s.customer_token)).await }
        .instrument(root)
        .await
        .expect("CreateOrder answers")
        .into_inner()
        .order
        .unwrap();
    (trace_id, order)
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn is_error(s: &SpanData) -> bool {
    matches!(s.status, Status::Error { .. })
}

/// The trace is complete once the order's server span and the saga have ended.
fn saga_finished(spans: &[SpanData]) -> bool {
    let done = |name: &str| spans.iter().any(|s| s.name == name);
    done(&format!("{ORDER}/CreateOrder")) && done("saga") && done("checkout")
}

/// Every client span has exactly one server span as its child, for the same
/// method; every server span but the first hop's has a client span as parent.
fn assert_hops_join(spans: &[SpanData]) {
    let tree = render_tree(spans);
    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Client && attr(s, "rpc.system").is_some())
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .collect();
    assert!(!clients.is_empty(), "no client spans:\n{tree}");
    for c in &clients {
        let children: Vec<_> = servers
            .iter()
            .filter(|s| s.parent_span_id == c.span_context.span_id())
            .collect();
        assert_eq!(
            children.len(),
            1,
            "client span {} has {} server children:\n{tree}",
            c.name,
            children.len()
        );
        assert_eq!(children[0].name, c.name, "{tree}");
        assert!(children[0].parent_span_is_remote, "{tree}");
        assert_eq!(
            attr(children[0], "rpc.grpc.status_code"),
            attr(c, "rpc.grpc.status_code"),
            "both sides record the same code:\n{tree}"
        );
    }
    for s in &servers {
        assert!(
            clients
                .iter()
                .any(|c| c.span_context.span_id() == s.parent_span_id),
            "server span {} has no client parent:\n{tree}",
            s.name
        );
        assert_eq!(attr(s, "rpc.system").as_deref(), Some("grpc"));
        assert!(attr(s, "rpc.service").is_some() && attr(s, "rpc.method").is_some());
    }
}

/// The saga step span named `step`, and its RPCs.
fn step<'a>(spans: &'a [SpanData], step: &str) -> (&'a SpanData, Vec<&'a SpanData>) {
    let span = one(spans, &format!("saga.{step}"), SpanKind::Internal);
    assert_eq!(attr(span, "saga.step").as_deref(), Some(step));
    let calls = spans
        .iter()
        .filter(|s| {
            s.parent_span_id == span.span_context.span_id()
                && s.span_kind == SpanKind::Client
                && attr(s, "rpc.system").is_some()
        })
        .collect();
    (span, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_four_services() {
    one_order_is_one_trace(TestDb::sqlite(), "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_four_services_on_postgres() {
    let Some(db) = TestDb::postgres() else { return };
    one_order_is_one_trace(db, "postgresql").await;
}

async fn one_order_is_one_trace(db: TestDb, system: &str) {
    let captured = otel::capture();
    let _turn = SERIAL.lock().await;
    let s = stack(db).await;
    s.product("TRACE-1", 1_250, 10).await;

    let (trace_id, order) = traced_order(&s, "TRACE-1", "pm_card_ok").await;
    assert_eq!(support::status(&order), pb::OrderStatus::Confirmed);
    let spans = captured
        .wait_for(trace_id, Duration::from_secs(10), saga_finished)
        .await;
    let tree = render_tree(&spans);
    println!("CreateOrder on {system}, card approved — trace {trace_id}:\n{tree}");

    // One trace: every span of this order's work carries the test's trace id.
    let strays: Vec<_> = captured
        .all()
        .into_iter()
        .filter(|s| attr(s, "order.id").as_deref() == Some(order.id.as_str()))
        .filter(|s| s.span_context.trace_id() != trace_id)
        .map(|s| s.name)
        .collect();
    assert!(
        strays.is_empty(),
        "spans of the order outside its trace: {strays:?}"
    );

    // Spans from all four services.
    let services: HashSet<_> = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .filter_map(|s| attr(s, "rpc.service"))
        .collect();
    for svc in [ORDER, USER, INVENTORY, PAYMENT] {
        assert!(services.contains(svc), "no server span of {svc}:\n{tree}");
    }
    assert_hops_join(&spans);

    // The saga's steps, each with its call, all under the CreateOrder server span.
    let create = one(&spans, &format!("{ORDER}/CreateOrder"), SpanKind::Server);
    let saga = one(&spans, "saga", SpanKind::Internal);
    assert_eq!(saga.parent_span_id, create.span_context.span_id(), "{tree}");
    for (name, call) in [
        ("check_user", format!("{USER}/GetUser")),
        ("reserve", format!("{INVENTORY}/ReserveStock")),
        ("charge", format!("{PAYMENT}/Charge")),
        ("commit", format!("{INVENTORY}/CommitReservation")),
    ] {
        let (span, calls) = step(&spans, name);
        assert_eq!(span.parent_span_id, saga.span_context.span_id(), "{tree}");
        assert!(!is_error(span), "step {name} failed:\n{tree}");
        assert_eq!(calls.len(), 1, "step {name} calls:\n{tree}");
        assert_eq!(calls[0].name, call);
    }
    // Database transactions, on both sides of the calls.
    for name in [
        "db.insert",
        "db.save",
        "db.reserve",
        "db.record_charge",
        "db.commit",
    ] {
        let found = named(&spans, name);
        assert!(!found.is_empty(), "no {name} span:\n{tree}");
        for s in found {
            assert_eq!(attr(s, "db.system.name").as_deref(), Some(system));
            assert!(!is_error(s), "{name} rolled back:\n{tree}");
        }
    }
    assert!(
        spans.iter().all(|s| !is_error(s)),
        "an approved order has no failed span:\n{tree}"
    );

    // The logs of the trace: every line carries the trace, its span and the
    // request; one access line per server span.
    let lines: Vec<_> = captured
        .logs
        .json()
        .into_iter()
        .filter(|l| l["trace_id"] == trace_id.to_string())
        .collect();
    let access: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "rpc finished")
        .collect();
    let server_spans = spans
        .iter()
        .filter(|s| s.span_kind == SpanKind::Server)
        .count();
    assert_eq!(access.len(), server_spans, "{lines:#?}");
    let span_ids: HashSet<_> = spans
        .iter()
        .map(|s| s.span_context.span_id().to_string())
        .collect();
    for line in &lines {
        assert!(line["request_id"].is_string(), "{line}");
        let span_id = line["span_id"].as_str().expect("span_id");
        assert!(
            span_ids.contains(span_id),
            "{line} names a span not in the trace"
        );
    }
    // At INFO an order writes nothing but the access lines.
    let chatty: Vec<_> = lines
        .iter()
        .filter(|l| l["level"] == "INFO" && l["message"] != "rpc finished")
        .collect();
    assert!(chatty.is_empty(), "per-request INFO lines: {chatty:#?}");
    for line in &access {
        assert!(
            line["code"] == "OK" && line["duration_ms"].is_number(),
            "{line}"
        );
        assert!(line["rpc.method"].is_string(), "{line}");
    }
}

/// Traces must not mix under concurrency: every one of many orders placed at
/// once is its own complete trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_orders_are_separate_complete_traces() {
    let captured = otel::capture();
    let _turn = SERIAL.lock().await;
    let s = stack(TestDb::sqlite()).await;
    s.product("TRACE-N", 100, 100).await;
    let placed =
        futures::future::join_all((0..12).map(|_| traced_order(&s, "TRACE-N", "pm_card_ok"))).await;
    for (trace_id, order) in placed {
        assert_eq!(support::status(&order), pb::OrderStatus::Confirmed);
        let spans = captured
            .wait_for(trace_id, Duration::from_secs(10), saga_finished)
            .await;
        let tree = render_tree(&spans);
        assert_hops_join(&spans);
        for name in ["check_user", "reserve", "charge", "commit"] {
            step(&spans, name);
        }
        for name in ["db.insert", "db.reserve", "db.record_charge", "db.commit"] {
            assert!(!named(&spans, name).is_empty(), "no {name} span:\n{tree}");
        }
        // Exactly this order's work: one CreateOrder, one of each call.
        assert_eq!(
            named(&spans, &format!("{INVENTORY}/ReserveStock")).len(),
            2,
            "{tree}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_card_is_one_trace_with_the_error_and_the_compensation() {
    let captured = otel::capture();
    let _turn = SERIAL.lock().await;
    let s = stack(TestDb::sqlite()).await;
    s.product("TRACE-2", 990, 10).await;

    let (trace_id, order) = traced_order(&s, "TRACE-2", "pm_card_declined").await;
    assert_eq!(support::status(&order), pb::OrderStatus::Cancelled);
    assert_eq!(support::reason(&order), pb::CancelReason::PaymentDeclined);
    let spans = captured
        .wait_for(trace_id, Duration::from_secs(10), saga_finished)
        .await;
    let tree = render_tree(&spans);
    println!("CreateOrder, card declined — trace {trace_id}:\n{tree}");
    assert_hops_join(&spans);

    // The charge step failed, and says why; the call shows the refusal.
    let (charge, calls) = step(&spans, "charge");
    assert_eq!(
        charge.status,
        Status::error("PAYMENT_DECLINED"),
        "charge step:\n{tree}"
    );
    assert_eq!(calls.len(), 1);
    assert!(
        is_error(calls[0]),
        "the client span of a refused charge fails"
    );
    assert_eq!(attr(calls[0], "rpc.grpc.status_code").as_deref(), Some("9"));
    // The payment service did its job (a decline is an answer, not a fault).
    let server = one(&spans, &format!("{PAYMENT}/Charge"), SpanKind::Server);
    assert!(!is_error(server), "{tree}");

    // Compensation ran in the same trace and released the stock; no commit.
    let (compensate, calls) = step(&spans, "compensate");
    assert!(!is_error(compensate), "{tree}");
    let released: Vec<_> = calls
        .iter()
        .filter(|c| c.name == format!("{INVENTORY}/ReleaseReservation"))
        .collect();
    assert_eq!(released.len(), 1, "{tree}");
    assert!(!is_error(released[0]), "{tree}");
    assert!(named(&spans, "saga.commit").is_empty(), "{tree}");
    assert!(!named(&spans, "db.release").is_empty(), "{tree}");
    assert_eq!(s.stock("TRACE-2").await, (10, 0));
    let chatty: Vec<_> = captured
        .logs
        .json()
        .into_iter()
        .filter(|l| l["trace_id"] == trace_id.to_string())
        .filter(|l| l["level"] == "INFO" && l["message"] != "rpc finished")
        .collect();
    assert!(chatty.is_empty(), "per-request INFO lines: {chatty:#?}");
}

async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    Scrape::parse(&body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_rpcs_peers_pools_and_saga_outcomes() {
    let _ = otel::capture();
    let _turn = SERIAL.lock().await;
    let s = stack(TestDb::sqlite()).await;
    s.product("METRIC-1", 500, 7).await;
    let before = scrape(s.order.admin_addr).await;

    // 3 confirmed, 1 declined, 1 out of stock (asks for 2 when 1 is left).
    let plan = [
        (2, "pm_card_ok", None),
        (2, "pm_card_ok", None),
        (2, "pm_card_ok", None),
        (
            1,
            "pm_card_declined",
            Some(pb::CancelReason::PaymentDeclined),
        ),
        (2, "pm_card_ok", Some(pb::CancelReason::OutOfStock)),
    ];
    for (quantity, method, cancelled) in plan {
        let key = Uuid::now_v7().to_string();
        let o = s
            .place(&[("METRIC-1", quantity)], method, &key)
            .await
            .unwrap();
        match cancelled {
            None => assert_eq!(support::status(&o), pb::OrderStatus::Confirmed),
            Some(reason) => assert_eq!(support::reason(&o), reason),
        }
    }
    s.settle_and_check().await;

    let after = scrape(s.order.admin_addr).await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };

    // Server side: count by code, a histogram with real buckets, nothing in flight.
    let create = [("rpc_service", ORDER), ("rpc_method", "CreateOrder")];
    let ok = [create[0], create[1], ("rpc_grpc_status_code", "OK")];
    assert_eq!(delta("rpc_server_requests_total", &ok), 5.0);
    assert_eq!(after.types["rpc_server_duration_seconds"], "histogram");
    assert_eq!(delta("rpc_server_duration_seconds_count", &create), 5.0);
    let buckets: Vec<_> = after
        .matching("rpc_server_duration_seconds_bucket", &create)
        .collect();
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].value <= w[1].value),
        "buckets are cumulative: {buckets:?}"
    );
    assert_eq!(
        after.value(
            "rpc_server_duration_seconds_bucket",
            &[create[0], create[1], ("le", "+Inf")]
        ),
        after.value("rpc_server_duration_seconds_count", &create)
    );
    assert_eq!(after.value("rpc_server_in_flight", &create), 0.0);

    // Client side, per peer.
    let calls = |peer: &str, method: &str, code: &str| {
        delta(
            "rpc_client_requests_total",
            &[
                ("peer", peer),
                ("rpc_method", method),
                ("rpc_grpc_status_code", code),
            ],
        )
    };
    assert_eq!(calls("user", "GetUser", "OK"), 5.0);
    assert_eq!(calls("inventory", "ReserveStock", "OK"), 4.0);
    assert_eq!(
        calls("inventory", "ReserveStock", "FAILED_PRECONDITION"),
        1.0
    );
    assert_eq!(calls("payment", "Charge", "OK"), 3.0);
    assert_eq!(calls("payment", "Charge", "FAILED_PRECONDITION"), 1.0);
    assert_eq!(calls("inventory", "CommitReservation", "OK"), 3.0);
    assert_eq!(calls("inventory", "ReleaseReservation", "OK"), 2.0);
    let charge = [("peer", "payment"), ("rpc_method", "Charge")];
    assert_eq!(delta("rpc_client_duration_seconds_count", &charge), 4.0);
    assert_eq!(after.value("rpc_client_in_flight", &charge), 0.0);

    // Saga outcomes by result and reason; step latencies.
    let outcome = |result: &str, reason: &str| {
        delta(
            "order_saga_outcomes_total",
            &[("result", result), ("reason", reason)],
        )
    };
    assert_eq!(outcome("confirmed", "none"), 3.0);
    assert_eq!(outcome("cancelled", "PAYMENT_DECLINED"), 1.0);
    assert_eq!(outcome("cancelled", "OUT_OF_STOCK"), 1.0);
    assert_eq!(
        delta(
            "order_saga_step_duration_seconds_count",
            &[("step", "charge")]
        ),
        4.0
    );

    // The order database's pool (one SQLite writer) and its transactions.
    let db = emporium_common::db::database_name(&s.order_db);
    let writer = [("db", db.as_str()), ("pool", "writer")];
    assert_eq!(after.value("db_pool_max_connections", &writer), 1.0);
    assert!(after.has(
        "db_pool_connections",
        &[writer[0], writer[1], ("state", "idle")]
    ));
    assert_eq!(
        after.value(
            "db_pool_connections",
            &[writer[0], writer[1], ("state", "in_use")]
        ),
        0.0
    );
    assert_eq!(
        delta(
            "db_transaction_duration_seconds_count",
            &[
                ("db", db.as_str()),
                ("operation", "insert"),
                ("outcome", "commit")
            ]
        ),
        5.0
    );

    // The peers' own business metrics, on their own admin ports.
    let inventory = scrape(s.inventory.admin_addr).await;
    assert_eq!(
        inventory.value(
            "inventory_reservation_failures_total",
            &[("reason", "OUT_OF_STOCK")]
        ) - before.value(
            "inventory_reservation_failures_total",
            &[("reason", "OUT_OF_STOCK")]
        ),
        1.0
    );
    let payment = scrape(s.payment.as_ref().unwrap().admin_addr).await;
    assert_eq!(
        payment.value("payment_declines_total", &[("reason", "CARD_DECLINED")])
            - before.value("payment_declines_total", &[("reason", "CARD_DECLINED")]),
        1.0
    );
}
