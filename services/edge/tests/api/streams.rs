//! Server streams at the edge: Server-Sent Events and WebSocket, with the
//! token in a header or (for browsers) the `access_token` query parameter.

use std::time::Duration;

use emporium_testkit::{Stack, TestDb};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, protocol::frame::coding::CloseCode};

use super::{http, spawn_edge, wire};

const WAIT: Duration = Duration::from_secs(10);

/// Places an order of one WIDGET over REST and returns its id.
async fn place(at: std::net::SocketAddr, token: &str, key: &str) -> String {
    let order = json!({
        "items": [{"sku": "WIDGET", "quantity": 1}],
        "paymentMethod": "pm_card_ok",
        "idempotencyKey": key,
    })
    .to_string();
    let placed = http(at, "POST", "/v1/orders", Some(token), Some(&order)).await;
    assert_eq!(placed.status, 200, "{:?}", placed.json);
    placed.json["order"]["id"].as_str().unwrap().to_owned()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The next frame that is not a ping or pong (heartbeats come every 200 ms
/// here).
async fn next_data(
    socket: &mut Socket,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    let frame = async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => return other,
            }
        }
    };
    tokio::time::timeout(WAIT, frame)
        .await
        .expect("a frame in time")
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_followed_over_sse_from_its_state_to_its_cancellation() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    stack.product("WIDGET", 1250, 10).await;
    let token = stack.customer_token.clone();
    let order_id = place(at, &token, "sse-1").await;

    // EventSource cannot set headers: the token rides in the query.
    let path = format!("/v1/orders/{order_id}:watch?access_token={token}");
    let reading = wire::send(at, "GET", &path, &[("Accept", "text/event-stream")], b"").await;
    assert_eq!(reading.head.status, 200);
    assert_eq!(
        reading.head.header("content-type"),
        Some("text/event-stream")
    );
    let mut events = wire::Events::new(reading);

    // First the current state, then heartbeats while nothing happens.
    let first = events.next_event(WAIT).await.expect("the current state");
    assert_eq!(first.kind, "update");
    let first = json_of(&first.data);
    assert_eq!(first["initialState"], true);
    assert_eq!(first["order"]["id"], order_id.as_str());
    assert_eq!(first["order"]["status"], "ORDER_STATUS_CONFIRMED");
    let beat = events.next(WAIT).await.expect("a heartbeat");
    assert_eq!(
        (beat.kind.as_str(), beat.data.as_str()),
        ("comment", "keep-alive")
    );

    // A change made elsewhere arrives, then the stream ends cleanly.
    let cancel = json!({"reason": "watching it go"}).to_string();
    let path = format!("/v1/orders/{order_id}:cancel");
    let cancelled = http(at, "POST", &path, Some(&token), Some(&cancel)).await;
    assert_eq!(cancelled.status, 200, "{:?}", cancelled.json);
    // Refunding may show as a change of a still CONFIRMED order first.
    loop {
        let change = events.next_event(WAIT).await.expect("the cancellation");
        assert_eq!(change.kind, "update", "{change:?}");
        let change = json_of(&change.data);
        // proto3 JSON leaves out false: absent means a change, not the state.
        assert_eq!(change.get("initialState"), None, "{change}");
        if change["order"]["status"] == "ORDER_STATUS_CANCELLED" {
            assert_eq!(
                change["order"]["cancelReason"],
                "CANCEL_REASON_CUSTOMER_REQUESTED"
            );
            break;
        }
        assert_eq!(change["order"]["status"], "ORDER_STATUS_CONFIRMED");
    }
    let end = events.next_event(WAIT).await.expect("the end");
    assert_eq!(end.kind, "end");
    assert!(
        events.next_event(WAIT).await.is_none(),
        "nothing after the end"
    );

    // Errors before the first message are plain HTTP errors.
    let path = format!("/v1/orders/{order_id}:watch");
    let anonymous = http(at, "GET", &path, None, None).await;
    assert_eq!(
        (anonymous.status, anonymous.error().0),
        (401, "UNAUTHENTICATED")
    );
    let path = format!("/v1/orders/{}:watch", uuid::Uuid::now_v7());
    let missing = http(at, "GET", &path, Some(&token), None).await;
    // Someone else's order and no order look the same to a customer.
    assert_eq!(
        (missing.status, missing.error().0),
        (403, "PERMISSION_DENIED")
    );
    let bad = http(at, "GET", "/v1/orders/not-a-uuid:watch", Some(&token), None).await;
    assert_eq!(bad.status, 400, "{:?}", bad.json);
    assert_eq!(bad.error().1, vec!["order_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_orders_are_followed_over_sse_including_new_ones() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    stack.product("WIDGET", 1250, 10).await;
    let token = stack.customer_token.clone();
    let auth = format!("Bearer {token}");
    let reading = wire::send(
        at,
        "GET",
        "/v1/orders:watch",
        &[("Authorization", &auth), ("Accept", "text/event-stream")],
        b"",
    )
    .await;
    assert_eq!(reading.head.status, 200);
    let mut events = wire::Events::new(reading);
    // The stream is open once the first heartbeat comes (no order is pending).
    let beat = events.next(WAIT).await.expect("a heartbeat");
    assert_eq!(beat.kind, "comment");

    let order_id = place(at, &token, "sse-mine").await;
    loop {
        let e = events
            .next_event(WAIT)
            .await
            .expect("the new order's updates");
        assert_eq!(e.kind, "update", "{e:?}");
        let update = json_of(&e.data);
        assert_eq!(update["order"]["id"], order_id.as_str());
        if update["order"]["status"] == "ORDER_STATUS_CONFIRMED" {
            break;
        }
        assert_eq!(update["order"]["status"], "ORDER_STATUS_PENDING");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_followed_over_websocket_and_errors_close_with_their_status() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    stack.product("WIDGET", 1250, 10).await;
    let token = stack.customer_token.clone();
    let order_id = place(at, &token, "ws-1").await;

    let connect = |path: String| async move {
        let tcp = tokio::net::TcpStream::connect(at).await.unwrap();
        let (socket, resp) = tokio_tungstenite::client_async(format!("ws://{at}{path}"), tcp)
            .await
            .expect("the upgrade");
        assert_eq!(resp.status(), 101);
        socket
    };
    let mut socket = connect(format!("/v1/orders/{order_id}:watch?access_token={token}")).await;
    let text = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(t))) => json_of(&t),
        other => panic!("expected a text frame, got {other:?}"),
    };
    let first = text(tokio::time::timeout(WAIT, socket.next()).await.unwrap());
    assert_eq!(first["initialState"], true);
    assert_eq!(first["order"]["status"], "ORDER_STATUS_CONFIRMED");

    let cancel = json!({"reason": "over a socket"}).to_string();
    let path = format!("/v1/orders/{order_id}:cancel");
    assert_eq!(
        http(at, "POST", &path, Some(&token), Some(&cancel))
            .await
            .status,
        200
    );
    loop {
        let change = text(next_data(&mut socket).await);
        if change["order"]["status"] == "ORDER_STATUS_CANCELLED" {
            break;
        }
        assert_eq!(change["order"]["status"], "ORDER_STATUS_CONFIRMED");
    }
    match next_data(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected a normal close, got {other:?}"),
    }

    // An order that is not the caller's: the error as a text frame, then
    // close code 4000 + 403.
    let mut socket = connect(format!(
        "/v1/orders/{}:watch?access_token={token}",
        uuid::Uuid::now_v7()
    ))
    .await;
    let error = text(next_data(&mut socket).await);
    assert_eq!(error["error"]["status"], "PERMISSION_DENIED");
    match next_data(&mut socket).await {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 4403),
        other => panic!("expected close 4403, got {other:?}"),
    }

    // The client leaving ends the stream without fuss.
    let mut socket = connect(format!("/v1/orders:watch?access_token={token}")).await;
    socket.send(Message::Close(None)).await.unwrap();
    let _ = tokio::time::timeout(WAIT, socket.next()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_stops_tells_open_streams_to_reconnect_and_exits() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let mut edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    let auth = format!("Bearer {}", stack.customer_token);
    let reading = wire::send(
        at,
        "GET",
        "/v1/orders:watch",
        &[("Authorization", &auth)],
        b"",
    )
    .await;
    assert_eq!(reading.head.status, 200);
    let mut events = wire::Events::new(reading);
    assert_eq!(
        events.next(WAIT).await.expect("a heartbeat").kind,
        "comment"
    );

    // The stream does not hold the shutdown open for the grace period: it
    // ends with UNAVAILABLE, which a client takes as "reconnect".
    let stopping = tokio::spawn(async move { edge.stop().await });
    let error = events.next_event(WAIT).await.expect("the reason it ended");
    assert_eq!(error.kind, "error");
    let body = json_of(&error.data);
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert!(events.next_event(WAIT).await.is_none());
    let stopped = tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("the edge stops well within its 5 s grace period");
    stopped.unwrap().unwrap();
}
