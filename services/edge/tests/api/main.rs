//! The edge over real sockets: the four services in this process (the
//! testkit's `Stack`), the edge in front of them, and a plain HTTP/1.1 client.

mod grpc_web;
mod streams;
mod wire;

use std::net::SocketAddr;

use emporium_common::config::PeerConfig;
use emporium_edge::config::{Config, EdgeConfig, Peers};
use emporium_testkit::{Spawned, Stack, TestDb, base_config, spawn, spawn_user, tokens};
use serde_json::{Value, json};

/// A peer block for a spawned service.
fn peer(s: &Spawned) -> PeerConfig {
    PeerConfig {
        url: s.url(),
        ..PeerConfig::local(0)
    }
}

/// The edge in front of `stack`, with a body limit of 4 KiB.
async fn spawn_edge(stack: &Stack) -> Spawned {
    spawn_edge_with(Peers {
        user: peer(&stack.user),
        inventory: peer(&stack.inventory),
        payment: peer(stack.payment.as_ref().expect("payment runs")),
        order: peer(&stack.order),
    })
    .await
}

/// The edge in front of `peers`, with a body limit of 4 KiB, CORS for
/// `https://shop.example.com` and stream heartbeats every 200 ms.
async fn spawn_edge_with(peers: Peers) -> Spawned {
    spawn(TestDb::sqlite(), move |database, listeners, stop| {
        let config = Config {
            base: base_config(database),
            peers,
            edge: EdgeConfig {
                max_body_bytes: 4096,
                cors_allowed_origins: vec!["https://shop.example.com".into()],
                stream_heartbeat_ms: 200,
            },
        };
        emporium_edge::serve(config, listeners, stop)
    })
    .await
}

/// An HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    json: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The error body's status name, and the fields of its violations.
    fn error(&self) -> (&str, Vec<&str>) {
        let e = &self.json["error"];
        let fields = e["details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|d| d["fieldViolations"].as_array().into_iter().flatten())
            .filter_map(|v| v["field"].as_str())
            .collect();
        (e["status"].as_str().unwrap_or(""), fields)
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http_with(addr, method, path, &headers, body).await
}

/// [`http`] with headers of the caller's choosing.
async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Answer {
    let body = body.unwrap_or("");
    let mut all = headers.to_vec();
    if !body.is_empty() || method == "POST" {
        all.push(("Content-Type", "application/json"));
    }
    let reading = wire::send(addr, method, path, &all, body.as_bytes()).await;
    let head = reading.head.clone();
    let body = String::from_utf8_lossy(&reading.body().await).into_owned();
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    Answer {
        status: head.status,
        headers: head.headers,
        json,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_log_in_browse_order_and_cancel_over_rest() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    stack.product("WIDGET", 1250, 10).await;

    // Sign up (snake_case accepted on input), then the same email again.
    let email = format!("rest-{}@example.com", uuid::Uuid::now_v7().simple());
    let signup =
        json!({"email": email, "name": "Rest Shopper", "password": "rest-password"}).to_string();
    let created = http(at, "POST", "/v1/users", None, Some(&signup)).await;
    assert_eq!(created.status, 200, "{:?}", created.json);
    assert!(created.header("x-request-id").is_some());
    let user_id = created.json["user"]["id"].as_str().unwrap().to_owned();
    assert_eq!(created.json["user"]["roles"], json!(["ROLE_CUSTOMER"]));
    assert!(
        created.json["user"]["createTime"].is_string(),
        "lowerCamelCase out"
    );
    let again = http(at, "POST", "/v1/users", None, Some(&signup)).await;
    assert_eq!((again.status, again.error().0), (409, "ALREADY_EXISTS"));

    // Log in; a wrong password is 401.
    let login = json!({"email": email, "password": "rest-password"}).to_string();
    let auth = http(at, "POST", "/v1/users:authenticate", None, Some(&login)).await;
    assert_eq!(auth.status, 200, "{:?}", auth.json);
    let token = auth.json["accessToken"].as_str().unwrap().to_owned();
    let wrong = json!({"email": email, "password": "not-the-password"}).to_string();
    let denied = http(at, "POST", "/v1/users:authenticate", None, Some(&wrong)).await;
    assert_eq!((denied.status, denied.error().0), (401, "UNAUTHENTICATED"));

    // Me, and someone else (403).
    let me = http(
        at,
        "GET",
        &format!("/v1/users/{user_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(me.json["user"]["email"], email.as_str());
    let other = http(
        at,
        "GET",
        &format!("/v1/users/{}", stack.customer),
        Some(&token),
        None,
    )
    .await;
    assert_eq!((other.status, other.error().0), (403, "PERMISSION_DENIED"));

    // The catalogue: 401 without a token, query parameters in both spellings.
    let anon = http(at, "GET", "/v1/products", None, None).await;
    assert_eq!((anon.status, anon.error().0), (401, "UNAUTHENTICATED"));
    let products = http(
        at,
        "GET",
        "/v1/products?pageSize=10&page_token=",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(products.status, 200, "{:?}", products.json);
    let widget = &products.json["products"][0];
    assert_eq!(widget["sku"], "WIDGET");
    assert_eq!(
        widget["stockAvailable"], "10",
        "int64 is a string in proto3 JSON"
    );
    let product_id = widget["id"].as_str().unwrap().to_owned();
    let one = http(
        at,
        "GET",
        &format!("/v1/products/{product_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(one.json["product"]["unitPrice"]["units"], "1250");
    let missing = format!("/v1/products/{}", uuid::Uuid::now_v7());
    let missing = http(at, "GET", &missing, Some(&token), None).await;
    assert_eq!((missing.status, missing.error().0), (404, "NOT_FOUND"));

    // An order, CONFIRMED by the saga; read back, listed, its payment, cancelled.
    let order = json!({
        "items": [{"sku": "WIDGET", "quantity": 2}],
        "paymentMethod": "pm_card_ok",
        "idempotency_key": "rest-order-1",
    })
    .to_string();
    let placed = http(at, "POST", "/v1/orders", Some(&token), Some(&order)).await;
    assert_eq!(placed.status, 200, "{:?}", placed.json);
    assert_eq!(placed.json["order"]["status"], "ORDER_STATUS_CONFIRMED");
    assert_eq!(placed.json["order"]["total"]["units"], "2500");
    let order_id = placed.json["order"]["id"].as_str().unwrap().to_owned();
    let got = http(
        at,
        "GET",
        &format!("/v1/orders/{order_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(got.json["order"]["id"], order_id.as_str());
    let listed = http(
        at,
        "GET",
        "/v1/orders?status=ORDER_STATUS_CONFIRMED",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(listed.json["orders"][0]["id"], order_id.as_str());
    let payment_id = placed.json["order"]["paymentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let payment = http(
        at,
        "GET",
        &format!("/v1/payments/{payment_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(payment.status, 200, "{:?}", payment.json);
    let payments = http(at, "GET", "/v1/payments", Some(&token), None).await;
    assert_eq!(
        payments.json["payments"][0]["id"],
        payment_id.as_str(),
        "{:?}",
        payments.json
    );
    let cancel = json!({"reason": "changed my mind"}).to_string();
    let cancelled = http(
        at,
        "POST",
        &format!("/v1/orders/{order_id}:cancel"),
        Some(&token),
        Some(&cancel),
    )
    .await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.json);
    assert_eq!(cancelled.json["order"]["status"], "ORDER_STATUS_CANCELLED");

    // Field violations from the service come back as BadRequest details.
    let bad = json!({"items": [{"sku": "WIDGET", "quantity": 0}], "paymentMethod": "pm_card_ok", "idempotencyKey": "k2"}).to_string();
    let refused = http(at, "POST", "/v1/orders", Some(&token), Some(&bad)).await;
    assert_eq!(refused.status, 400, "{:?}", refused.json);
    let (status, fields) = refused.error();
    assert_eq!(status, "INVALID_ARGUMENT");
    assert!(fields.iter().any(|f| f.contains("quantity")), "{fields:?}");

    // Admin writes: a customer is refused, an admin is not.
    let product = json!({"sku": "GADGET", "name": "Gadget", "unitPrice": {"currencyCode": "EUR", "units": "990"}}).to_string();
    let forbidden = http(at, "POST", "/v1/products", Some(&token), Some(&product)).await;
    assert_eq!(
        (forbidden.status, forbidden.error().0),
        (403, "PERMISSION_DENIED")
    );
    let made = http(
        at,
        "POST",
        "/v1/products",
        Some(&stack.admin),
        Some(&product),
    )
    .await;
    assert_eq!(made.status, 200, "{:?}", made.json);
    let gadget = made.json["product"]["id"].as_str().unwrap().to_owned();
    let adjust = json!({"delta": 5, "reason": "received", "idempotencyKey": "adj-1"}).to_string();
    let adjusted = http(
        at,
        "POST",
        &format!("/v1/products/{gadget}:adjustStock"),
        Some(&stack.admin),
        Some(&adjust),
    )
    .await;
    assert_eq!(adjusted.status, 200, "{:?}", adjusted.json);
    assert_eq!(adjusted.json["product"]["stockOnHand"], "5");
    let too_much = json!({"delta": -50, "reason": "lost", "idempotencyKey": "adj-2"}).to_string();
    let refused = http(
        at,
        "POST",
        &format!("/v1/products/{gadget}:adjustStock"),
        Some(&stack.admin),
        Some(&too_much),
    )
    .await;
    assert_eq!(
        (refused.status, refused.error().0),
        (400, "FAILED_PRECONDITION")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_refuses_what_it_cannot_route_or_read() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    let token = stack.customer_token.as_str();

    let nowhere = http(at, "GET", "/v1/nowhere", None, None).await;
    assert_eq!((nowhere.status, nowhere.error().0), (404, "NOT_FOUND"));
    let wrong = http(at, "DELETE", "/v1/orders", Some(token), None).await;
    assert_eq!(wrong.status, 405);
    let allow = wrong.header("allow").unwrap();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // Internal RPCs have no route, by REST path or by gRPC path.
    for path in [
        "/emporium.inventory.v1.InventoryService/ReserveStock",
        "/emporium.payment.v1.PaymentService/Charge",
        "/v1/reservations",
        "/v1/charges",
    ] {
        let r = http(at, "POST", path, Some(&stack.admin), Some("{}")).await;
        assert_eq!(r.status, 404, "{path}");
    }

    let unknown = http(
        at,
        "POST",
        "/v1/users",
        None,
        Some(r#"{"email":"a@b.co","isAdmin":true}"#),
    )
    .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(unknown.error().1, ["isAdmin"]);
    let unknown_query = http(at, "GET", "/v1/products?colour=red", Some(token), None).await;
    assert_eq!(
        (unknown_query.status, unknown_query.error().1),
        (400, vec!["colour"])
    );

    let malformed = http(at, "POST", "/v1/users", None, Some(r#"{"email": "#)).await;
    assert_eq!(malformed.status, 400);
    let message = malformed.json["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("malformed JSON: EOF while parsing"),
        "{message}"
    );

    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(5000));
    let large = http(at, "POST", "/v1/users", None, Some(&big)).await;
    assert_eq!(large.status, 413);

    // Validation in the service: every bad field named.
    let invalid = http(
        at,
        "POST",
        "/v1/users",
        None,
        Some(r#"{"email":"nope","name":"","password":"x"}"#),
    )
    .await;
    assert_eq!(invalid.status, 400);
    let (status, mut fields) = invalid.error();
    fields.sort();
    assert_eq!(
        (status, fields),
        ("INVALID_ARGUMENT", vec!["email", "name", "password"])
    );

    // The admin port.
    let (status, _) = emporium_testkit::http_get(edge.admin_addr, "/healthz").await;
    assert_eq!(status, 200);
    let (status, _) = emporium_testkit::http_get(edge.admin_addr, "/readyz").await;
    assert_eq!(status, 200);
    let (status, metrics) = emporium_testkit::http_get(edge.admin_addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("http_server_requests_total"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_429_with_retry_after_and_a_missing_service_is_503() {
    // A user service that allows one anonymous call a second per client, and
    // believes the edge (on loopback) about who the client is.
    let user = spawn_user(TestDb::sqlite(), |c| {
        c.base.server.rate_limit_per_sec = 1;
        c.base.server.rate_limit_burst = 1;
        c.base.server.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    // Nothing listens where the payment service should be.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let nowhere = PeerConfig {
        url: gone,
        call_timeout_ms: 1_000,
        ..PeerConfig::local(0)
    };
    let edge = spawn_edge_with(Peers {
        user: peer(&user),
        inventory: nowhere.clone(),
        payment: nowhere.clone(),
        order: nowhere,
    })
    .await;
    let at = edge.grpc_addr;

    let login = r#"{"email":"someone@example.com","password":"wrong-password"}"#;
    let from = |client: &'static str| async move {
        let headers = [("X-Forwarded-For", client)];
        http_with(at, "POST", "/v1/users:authenticate", &headers, Some(login)).await
    };
    let mut limited = None;
    for _ in 0..5 {
        let r = from("203.0.113.1").await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 401, "{:?}", r.json);
    }
    let limited = limited.expect("the fifth call at the latest is limited");
    assert_eq!(limited.error().0, "RESOURCE_EXHAUSTED");
    let after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "{after}");
    assert_eq!(
        limited.json["error"]["details"][0]["@type"],
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    // Another client behind the same edge has a bucket of its own: the edge
    // told the service who is calling.
    let other = from("203.0.113.2").await;
    assert_eq!(other.status, 401, "{:?}", other.json);

    // Ready: one upstream of four answers.
    let (status, body) = emporium_testkit::http_get(edge.admin_addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");

    let token = tokens()
        .issue(
            uuid::Uuid::now_v7(),
            &[emporium_common::auth::Role::Customer],
        )
        .unwrap()
        .token;
    let path = format!("/v1/payments/{}", uuid::Uuid::now_v7());
    let unavailable = http(at, "GET", &path, Some(&token), None).await;
    assert_eq!(
        (unavailable.status, unavailable.error().0),
        (503, "UNAVAILABLE"),
        "{:?}",
        unavailable.json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_no_upstream_is_not_ready() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = PeerConfig {
        url: format!("http://{}", closed.local_addr().unwrap()),
        ..PeerConfig::local(0)
    };
    drop(closed);
    let edge = spawn_edge_with(Peers {
        user: nowhere.clone(),
        inventory: nowhere.clone(),
        payment: nowhere.clone(),
        order: nowhere,
    })
    .await;
    let (status, body) = emporium_testkit::http_get(edge.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("no upstream is serving (") && body.contains("order: "),
        "{body}"
    );
}

/// The document `/openapi.json` serves is the one in `docs/api/` (validated
/// in CI by tools/check-openapi); `make openapi` rewrites it after a contract
/// changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_openapi_document_is_the_committed_one() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let reading = wire::send(edge.grpc_addr, "GET", "/openapi.json", &[], b"").await;
    assert_eq!(reading.head.status, 200);
    assert_eq!(
        reading.head.header("content-type"),
        Some("application/json")
    );
    let served = String::from_utf8(reading.body().await).unwrap();
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/v1/orders",
        "/v1/orders/{order_id}:cancel",
        "/v1/orders:watch",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is not documented");
    }
    let committed = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api/openapi.json");
    if std::env::var_os("EMPORIUM_UPDATE_OPENAPI").is_some() {
        std::fs::write(committed, format!("{served}\n")).unwrap();
    }
    let on_disk = std::fs::read_to_string(committed).unwrap_or_default();
    assert!(
        on_disk.trim_end() == served,
        "docs/api/openapi.json is not what the edge serves: run `make openapi`"
    );
}

/// The edge signs nothing and stores nothing: started as production runs it
/// (no development mode, no keys, no database settings) it serves, where each
/// service refuses to start without real keys. Its `health` subcommand asks
/// the edge's own gRPC health on its port, as the services' probes do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_starts_in_production_without_keys_and_answers_its_probe() {
    let bin = env!("CARGO_BIN_EXE_emporium-edge");
    let mut cmd = emporium_testkit::process::command(
        bin,
        [
            ("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0"),
            ("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0"),
        ],
    );
    cmd.env_remove("EMPORIUM_DEV_MODE");
    let mut edge = emporium_testkit::process::Process::start(cmd);
    let logs = edge.logs().join("\n");
    assert!(!logs.contains("DEVELOPMENT MODE"), "{logs}");
    let probe = std::process::Command::new(bin)
        .env_clear()
        .args(["health", "--addr", &edge.grpc.to_string()])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&probe.stdout);
    assert!(probe.status.success(), "{said}");
    assert!(said.contains("SERVING"), "{said}");
    let status = edge.terminate(std::time::Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}
