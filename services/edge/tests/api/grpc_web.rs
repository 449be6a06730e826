//! gRPC-Web and gRPC through the edge: only the public methods, the edge's
//! own health, and CORS for the configured origin.

use std::time::Duration;

use base64::Engine as _;
use emporium_proto::inventory::v1 as pb;
use emporium_testkit::{Stack, TestDb};
use prost::Message as _;
use tonic::{Code, Request};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{spawn_edge, wire};

/// A gRPC-Web message frame.
fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

/// The data frames and the trailers of a gRPC-Web answer.
fn split(mut body: &[u8]) -> (Vec<Vec<u8>>, String) {
    let (mut messages, mut trailers) = (Vec::new(), String::new());
    while body.len() >= 5 {
        let flag = body[0];
        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        let payload = body[5..5 + len].to_vec();
        body = &body[5 + len..];
        if flag & 0x80 != 0 {
            trailers = String::from_utf8(payload).unwrap();
        } else {
            messages.push(payload);
        }
    }
    (messages, trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_reaches_public_methods_only_with_cors_for_the_allowed_origin() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    let at = edge.grpc_addr;
    stack.product("WIDGET", 1250, 10).await;
    let auth = format!("Bearer {}", stack.customer_token);
    let request = pb::ListProductsRequest {
        page_size: 10,
        page_token: String::new(),
    }
    .encode_to_vec();

    // Binary gRPC-Web, from a page on the allowed origin.
    let reading = wire::send(
        at,
        "POST",
        "/emporium.inventory.v1.InventoryService/ListProducts",
        &[
            ("Content-Type", "application/grpc-web+proto"),
            ("X-Grpc-Web", "1"),
            ("Authorization", &auth),
            ("Origin", "https://shop.example.com"),
        ],
        &frame(&request),
    )
    .await;
    assert_eq!(reading.head.status, 200);
    assert_eq!(
        reading.head.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    let exposed = reading
        .head
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(exposed.contains("grpc-status"), "{exposed}");
    assert!(
        reading
            .head
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/grpc-web")),
        "{:?}",
        reading.head
    );
    let (messages, trailers) = split(&reading.body().await);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    let answer = pb::ListProductsResponse::decode(messages[0].as_slice()).unwrap();
    assert_eq!(answer.products[0].sku, "WIDGET");

    // gRPC-Web text (base64), as grpc-web's default mode sends it.
    let b64 = base64::engine::general_purpose::STANDARD;
    let reading = wire::send(
        at,
        "POST",
        "/emporium.inventory.v1.InventoryService/ListProducts",
        &[
            ("Content-Type", "application/grpc-web-text"),
            ("Accept", "application/grpc-web-text"),
            ("Authorization", &auth),
        ],
        b64.encode(frame(&request)).as_bytes(),
    )
    .await;
    assert_eq!(reading.head.status, 200);
    let text = reading.body().await;
    // Each frame may be base64 on its own: decode piecewise at padding.
    let mut decoded = Vec::new();
    for part in String::from_utf8(text).unwrap().split_inclusive('=') {
        let part = part.trim_start_matches('=');
        if !part.is_empty() {
            let padded = format!("{part}{}", "=".repeat((4 - part.len() % 4) % 4));
            decoded.extend(b64.decode(padded.trim_end_matches("====")).unwrap());
        }
    }
    let (messages, trailers) = split(&decoded);
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
    assert_eq!(messages.len(), 1);

    // Internal methods are not there, whoever asks.
    let reading = wire::send(
        at,
        "POST",
        "/emporium.inventory.v1.InventoryService/ReserveStock",
        &[
            ("Content-Type", "application/grpc-web+proto"),
            ("Authorization", &auth),
        ],
        &frame(&[]),
    )
    .await;
    let status = reading
        .head
        .header("grpc-status")
        .map(str::to_owned)
        .unwrap_or_default();
    let (_, trailers) = split(&reading.body().await);
    assert!(
        status == "12" || trailers.contains("grpc-status:12"),
        "UNIMPLEMENTED expected: {status} {trailers}"
    );

    // CORS preflight: the allowed origin gets its headers, another does not.
    let preflight = |origin: &'static str| async move {
        wire::send(
            at,
            "OPTIONS",
            "/emporium.inventory.v1.InventoryService/ListProducts",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "content-type,x-grpc-web,authorization",
                ),
            ],
            b"",
        )
        .await
        .head
    };
    let allowed = preflight("https://shop.example.com").await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://shop.example.com")
    );
    let headers = allowed
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("x-grpc-web") && headers.contains("authorization"),
        "{headers}"
    );
    let other = preflight("https://evil.example.net").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_clients_reach_public_methods_and_the_edges_health_on_its_port() {
    let stack = Stack::start(TestDb::sqlite()).await;
    let edge = spawn_edge(&stack).await;
    stack.product("WIDGET", 1250, 10).await;
    let channel = tonic::transport::Endpoint::from_shared(edge.url())
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap();
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(
        health.get_ref().status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let mut inventory = pb::inventory_service_client::InventoryServiceClient::new(channel);
    fn bearer<T>(message: T, token: &str) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }
    let token = stack.customer_token.as_str();
    let listed = inventory
        .list_products(bearer(pb::ListProductsRequest::default(), token))
        .await
        .unwrap();
    assert_eq!(listed.get_ref().products[0].sku, "WIDGET");
    let internal = inventory
        .reserve_stock(bearer(pb::ReserveStockRequest::default(), token))
        .await
        .unwrap_err();
    assert_eq!(internal.code(), Code::Unimplemented);
}
