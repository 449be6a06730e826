//! The auth matrix: every method of every Emporium service, read from the file
//! descriptor set (so a new RPC is covered without anyone remembering), against
//! every kind of bad token and every caller that must be refused, on real sockets.
//! A method missing from `rule` fails the test until someone decides who may call it.

use std::pin::Pin;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use emporium_common::{
    auth::{Role, Tokens},
    config::{AuthConfig, Secret},
    rpc::{Channel, Code, Status},
};
use emporium_proto::{order::v1 as ord, payment::v1 as pay, user::v1 as usr};
use emporium_testkit::{TestDb, assert_no_leak, auth_config, raw::Once};
use http_body::Body as _;
use prost::Message as _;
use tonic::body::Body;
use tower::ServiceExt as _;
use uuid::Uuid;

use crate::Stack;

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    /// No token needed.
    Public,
    /// Any valid user token.
    AnyUser,
    /// Admins only.
    Admin,
    /// The owner (or an admin); the request names an owner.
    Owner,
    /// The order service's token only.
    Internal,
}

fn rule(method: &str) -> Option<Rule> {
    use Rule::*;
    Some(match method {
        "emporium.user.v1.UserService/CreateUser" | "emporium.user.v1.UserService/Authenticate" => {
            Public
        }
        "emporium.user.v1.UserService/GetUser"
        | "emporium.user.v1.UserService/UpdateUser"
        | "emporium.user.v1.UserService/DeleteUser"
        | "emporium.payment.v1.PaymentService/GetPayment"
        | "emporium.payment.v1.PaymentService/ListPayments"
        | "emporium.order.v1.OrderService/CreateOrder"
        | "emporium.order.v1.OrderService/GetOrder"
        | "emporium.order.v1.OrderService/ListOrders"
        | "emporium.order.v1.OrderService/CancelOrder"
        | "emporium.order.v1.OrderService/WatchOrderUpdates" => Owner,
        "emporium.user.v1.UserService/ListUsers"
        | "emporium.inventory.v1.InventoryService/CreateProduct"
        | "emporium.inventory.v1.InventoryService/AdjustStock"
        | "emporium.inventory.v1.InventoryService/ImportStock" => Admin,
        "emporium.user.v1.UserService/StreamUsers"
        | "emporium.inventory.v1.InventoryService/GetProduct"
        | "emporium.inventory.v1.InventoryService/ListProducts" => AnyUser,
        "emporium.inventory.v1.InventoryService/ReserveStock"
        | "emporium.inventory.v1.InventoryService/CommitReservation"
        | "emporium.inventory.v1.InventoryService/ReleaseReservation"
        | "emporium.payment.v1.PaymentService/Charge"
        | "emporium.payment.v1.PaymentService/Refund"
        | "emporium.payment.v1.PaymentService/VoidCharge" => Internal,
        _ => return None,
    })
}

/// Resources of one user, as owner-only requests name them.
struct Owned {
    user: Uuid,
    order_id: String,
    payment_id: String,
}

/// A request that names a resource of `owned.user` (for owner-only methods),
/// valid in every other way so that only the ownership check can refuse it.
fn on_behalf_of(method: &str, owned: &Owned) -> Vec<u8> {
    let other = owned.user.to_string();
    let (order, payment) = (owned.order_id.clone(), owned.payment_id.clone());
    let random = Uuid::now_v7().to_string();
    match method.rsplit('/').next().unwrap() {
        "GetUser" => usr::GetUserRequest { user_id: other }.encode_to_vec(),
        "UpdateUser" => usr::UpdateUserRequest {
            user_id: other,
            name: Some("Mallory".into()),
            ..Default::default()
        }
        .encode_to_vec(),
        "DeleteUser" => usr::DeleteUserRequest { user_id: other }.encode_to_vec(),
        "GetPayment" => pay::GetPaymentRequest {
            payment_id: payment,
        }
        .encode_to_vec(),
        "ListPayments" => pay::ListPaymentsRequest {
            user_id: other,
            ..Default::default()
        }
        .encode_to_vec(),
        "CreateOrder" => ord::CreateOrderRequest {
            user_id: other,
            items: vec![ord::CreateOrderItem {
                sku: "MUG-1".into(),
                quantity: 1,
            }],
            payment_method: "pm_card_ok".into(),
            idempotency_key: random,
        }
        .encode_to_vec(),
        "GetOrder" => ord::GetOrderRequest { order_id: order }.encode_to_vec(),
        "ListOrders" => ord::ListOrdersRequest {
            user_id: other,
            ..Default::default()
        }
        .encode_to_vec(),
        "CancelOrder" => ord::CancelOrderRequest {
            order_id: order,
            reason: String::new(),
        }
        .encode_to_vec(),
        "WatchOrderUpdates" => ord::WatchOrderUpdatesRequest {
            target: Some(ord::watch_order_updates_request::Target::OrderId(order)),
        }
        .encode_to_vec(),
        m => panic!("no owner request for {m}"),
    }
}

/// Every `/pkg.Service/Method` of the Emporium packages.
fn methods() -> Vec<String> {
    let fds = prost_types::FileDescriptorSet::decode(emporium_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in fds.file {
        if !file.package().starts_with("emporium.") {
            continue;
        }
        for svc in &file.service {
            for m in &svc.method {
                out.push(format!("{}.{}/{}", file.package(), svc.name(), m.name()));
            }
        }
    }
    out.sort();
    out
}

/// A token with hand-made header and claims, signed with `secret` (HS256), or
/// unsigned for `alg: none`.
fn forge(alg: &str, claims: serde_json::Value, secret: Option<&str>) -> String {
    let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT","kid":"dev"}}"#));
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    match secret {
        None => format!("{header}.{payload}."),
        Some(secret) => {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
            h.kid = Some("dev".into());
            jsonwebtoken::encode(
                &h,
                &claims,
                &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        }
    }
}

/// Every kind of token that must be UNAUTHENTICATED, by name.
fn bad_tokens(user: Uuid) -> Vec<(&'static str, Option<String>)> {
    let cfg = auth_config();
    let secret = cfg.jwt_secret.expose().to_owned();
    let now = jsonwebtoken::get_current_timestamp();
    let claims = |iat: u64, nbf: u64, exp: u64| {
        serde_json::json!({
            "sub": user.to_string(), "roles": ["admin"], "iss": cfg.issuer, "aud": cfg.audience,
            "iat": iat, "nbf": nbf, "exp": exp,
        })
    };
    let other = |c: AuthConfig| {
        Tokens::new(&c)
            .unwrap()
            .issue(user, &[Role::Admin])
            .unwrap()
            .token
    };
    vec![
        ("no token", None),
        (
            "expired",
            Some(forge(
                "HS256",
                claims(now - 7200, now - 7200, now - 3600),
                Some(&secret),
            )),
        ),
        (
            "not yet valid",
            Some(forge(
                "HS256",
                claims(now, now + 3600, now + 7200),
                Some(&secret),
            )),
        ),
        (
            "wrong signature",
            Some(other(AuthConfig {
                jwt_secret: Secret::new("not-the-platform-secret-0123456789"),
                ..auth_config()
            })),
        ),
        (
            "alg none",
            Some(forge("none", claims(now, now, now + 600), None)),
        ),
        (
            "wrong issuer",
            Some(other(AuthConfig {
                issuer: "evil".into(),
                ..auth_config()
            })),
        ),
        (
            "wrong audience",
            Some(other(AuthConfig {
                audience: "evil".into(),
                ..auth_config()
            })),
        ),
        ("garbage", Some("not.a.token".into())),
    ]
}

/// Sends one framed message to `path` and returns the final gRPC status (OK for
/// a successful call, streams included).
async fn call(channel: &Channel, path: &str, token: Option<&str>, message: Vec<u8>) -> Status {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("/{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", "2S");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = channel
        .clone()
        .oneshot(req.body(Body::new(Once(Some(body.into())))).unwrap())
        .await
        .expect("a gRPC answer");
    if let Some(s) = Status::from_header_map(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    let mut trailers = None;
    // A watch that stays open got past the gate; stop reading after a while.
    let read = std::time::Duration::from_secs(2);
    while let Ok(Some(frame)) = tokio::time::timeout(
        read,
        std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
    )
    .await
    {
        match frame {
            Ok(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers = Some(t);
                }
            }
            // A watch cut short by the deadline: it got past the gate.
            Err(s) => return s,
        }
    }
    match trailers {
        Some(t) => Status::from_header_map(&t).expect("grpc-status"),
        None => Status::ok("stream still open"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_every_caller_it_must() {
    let s = Stack::start(TestDb::sqlite()).await;
    let channels = [
        ("emporium.user.v1.", s.user.channel().await),
        ("emporium.inventory.v1.", s.inventory.channel().await),
        (
            "emporium.payment.v1.",
            s.payment.as_ref().unwrap().channel().await,
        ),
        ("emporium.order.v1.", s.order.channel().await),
    ];
    let channel = |m: &str| &channels.iter().find(|(p, _)| m.starts_with(p)).unwrap().1;
    let me = s.customer;
    let customer = s.customer_token.clone();
    let admin = s.admin.clone();
    // Real resources of the customer, and of someone else (who needs none: a
    // customer is refused the same for ids that do not exist).
    s.product("MUG-1", 1_000, 10).await;
    let placed = s
        .place(&[("MUG-1", 1)], "pm_card_ok", "matrix")
        .await
        .unwrap();
    let mine = Owned {
        user: me,
        order_id: placed.id.clone(),
        payment_id: placed.payment_id.clone(),
    };
    let theirs = Owned {
        user: Uuid::now_v7(),
        order_id: Uuid::now_v7().to_string(),
        payment_id: Uuid::now_v7().to_string(),
    };
    let gate = [Code::Unauthenticated, Code::PermissionDenied];

    let all = methods();
    assert!(all.len() >= 24, "the descriptor set lost methods: {all:?}");
    let unclassified: Vec<_> = all.iter().filter(|m| rule(m).is_none()).collect();
    assert!(
        unclassified.is_empty(),
        "decide who may call {unclassified:?}"
    );

    let mut checked = 0;
    for m in &all {
        let rule = rule(m).unwrap();
        let ch = channel(m);
        let expect = |who: &str, status: &Status, code: Option<Code>| {
            assert_no_leak(status.message());
            match code {
                Some(c) => assert_eq!(status.code(), c, "{m} as {who}: {status:?}"),
                None => assert!(
                    !gate.contains(&status.code()),
                    "{m} as {who} must pass the gate: {status:?}"
                ),
            }
        };
        // Bad tokens: UNAUTHENTICATED everywhere but on public methods, which ignore them.
        for (what, token) in bad_tokens(me) {
            let st = call(ch, m, token.as_deref(), Vec::new()).await;
            let code = (rule != Rule::Public).then_some(Code::Unauthenticated);
            expect(what, &st, code);
            checked += 1;
        }
        // Who is refused, who gets through. The order service's token is minted
        // for this method's service and this one call, as the saga does.
        let peer = m
            .trim_start_matches('/')
            .strip_prefix("emporium.")
            .and_then(|rest| rest.split('.').next())
            .expect("an emporium method");
        let order_service = emporium_testkit::order_service_token(peer, me);
        let empty = Vec::new;
        let cases: Vec<(&str, &str, Vec<u8>, Option<Code>)> = match rule {
            Rule::Public => vec![("customer", &customer, empty(), None)],
            Rule::AnyUser => vec![
                ("customer", &customer, empty(), None),
                ("admin", &admin, empty(), None),
            ],
            Rule::Admin => vec![
                ("customer", &customer, empty(), Some(Code::PermissionDenied)),
                (
                    "the order service",
                    &order_service,
                    empty(),
                    Some(Code::PermissionDenied),
                ),
                ("admin", &admin, empty(), None),
            ],
            Rule::Owner => vec![
                (
                    "a customer on another's resource",
                    &customer,
                    on_behalf_of(m, &theirs),
                    Some(Code::PermissionDenied),
                ),
                (
                    "an admin on another's resource",
                    &admin,
                    on_behalf_of(m, &theirs),
                    None,
                ),
                ("the owner", &customer, on_behalf_of(m, &mine), None),
            ],
            Rule::Internal => vec![
                ("customer", &customer, empty(), Some(Code::PermissionDenied)),
                ("admin", &admin, empty(), Some(Code::PermissionDenied)),
                ("the order service", &order_service, empty(), None),
            ],
        };
        for (who, token, message, code) in cases {
            let st = call(ch, m, Some(token), message).await;
            expect(who, &st, code);
            checked += 1;
        }
    }
    eprintln!(
        "auth matrix: {} methods, {checked} calls checked",
        all.len()
    );
}
