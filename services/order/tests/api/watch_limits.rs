//! WatchOrderUpdates lives past the call that opened it (issue 10): watches
//! are capped per caller, end at their maximum age, when the caller's token
//! expires, and at the client's deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emporium_common::{
    auth::{Role, Tokens},
    config::AuthConfig,
    rpc::{Channel, Code, Request, Status, Streaming},
    stack::MAX_AGE_REACHED,
};
use emporium_testkit::{
    TestDb, auth_config, backend_tests, bearer, http_get, poll_until, prometheus::Scrape,
    spawn_order_alone,
};
use futures::StreamExt as _;
use uuid::Uuid;

use crate::pb;

backend_tests!(
    a_caller_may_hold_only_so_many_watches_and_closing_one_frees_a_slot,
    a_watch_ends_unavailable_at_its_maximum_age,
    a_watch_ends_unauthenticated_when_the_token_expires,
    a_watch_ends_at_the_clients_deadline,
);

type Client = pb::order_service_client::OrderServiceClient<Channel>;

/// A watch of the caller's own orders.
fn mine(token: &str) -> Request<pb::WatchOrderUpdatesRequest> {
    bearer(
        pb::WatchOrderUpdatesRequest {
            target: Some(pb::watch_order_updates_request::Target::UserOrders(
                pb::UserOrders {
                    user_id: String::new(),
                },
            )),
        },
        token,
    )
}

fn customer_token() -> String {
    emporium_testkit::tokens()
        .issue(Uuid::now_v7(), &[Role::Customer])
        .unwrap()
        .token
}

async fn watch(
    client: &mut Client,
    token: &str,
) -> Result<Streaming<pb::WatchOrderUpdatesResponse>, Status> {
    client
        .watch_order_updates(mine(token))
        .await
        .map(|r| r.into_inner())
}

/// How the watch ended (it sends nothing before: the user has no orders).
async fn end_of(mut stream: Streaming<pb::WatchOrderUpdatesResponse>) -> Status {
    match tokio::time::timeout(Duration::from_secs(15), stream.next()).await {
        Ok(Some(Err(status))) => status,
        other => panic!("the watch did not end with an error: {other:?}"),
    }
}

async fn a_caller_may_hold_only_so_many_watches_and_closing_one_frees_a_slot(db: TestDb) {
    let svc = spawn_order_alone(db, |c| c.base.server.max_streams_per_caller = 3).await;
    let mut client = Client::new(svc.channel().await);
    let token = customer_token();
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(watch(&mut client, &token).await.expect("within the cap"));
    }
    let refused = watch(&mut client, &token)
        .await
        .expect_err("one over the cap");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("too many open streams"),
        "{refused:?}"
    );
    // Counted in the gauge (process-wide: other tests' watches may add to it).
    let (code, body) = http_get(svc.admin_addr, "/metrics").await;
    assert_eq!(code, 200);
    let open_now = Scrape::parse(&body).value(
        "rpc_server_open_streams",
        &[
            ("rpc_service", "emporium.order.v1.OrderService"),
            ("rpc_method", "WatchOrderUpdates"),
        ],
    );
    assert!(open_now >= 3.0, "rpc_server_open_streams = {open_now}");
    // Someone else is not affected.
    let other = watch(&mut client, &customer_token())
        .await
        .expect("another caller");

    // Closing one frees its slot (once the server has seen it go).
    drop(open.pop());
    let reopened = poll_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        let token = token.clone();
        async move { watch(&mut client, &token).await.ok() }
    })
    .await
    .expect("a slot is free again after closing a watch");
    open.push(reopened);
    let refused = watch(&mut client, &token).await.expect_err("full again");
    assert_eq!(refused.code(), Code::ResourceExhausted);
    drop((open, other));
}

async fn a_watch_ends_unavailable_at_its_maximum_age(db: TestDb) {
    let svc = spawn_order_alone(db, |c| c.base.server.stream_max_age_ms = 1_000).await;
    let mut client = Client::new(svc.channel().await);
    let token = customer_token();
    let stream = watch(&mut client, &token).await.unwrap();
    let status = end_of(stream).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), MAX_AGE_REACHED);
    // Reconnecting works: the slot was given back.
    let again = watch(&mut client, &token).await.expect("reconnect");
    assert_eq!(end_of(again).await.code(), Code::Unavailable);
}

async fn a_watch_ends_unauthenticated_when_the_token_expires(db: TestDb) {
    let svc = spawn_order_alone(db, |c| c.base.auth.leeway_secs = 0).await;
    let mut client = Client::new(svc.channel().await);
    let short = Tokens::new(&AuthConfig {
        token_ttl_secs: 3,
        leeway_secs: 0,
        ..auth_config()
    })
    .unwrap()
    .issue(Uuid::now_v7(), &[Role::Customer])
    .unwrap();
    let stream = watch(&mut client, &short.token).await.unwrap();
    let status = end_of(stream).await;
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(short.expires_at),
        "not before the token expired"
    );
}

async fn a_watch_ends_at_the_clients_deadline(db: TestDb) {
    let svc = spawn_order_alone(db, |_| {}).await;
    let mut client = Client::new(svc.channel().await);
    let mut req = mine(&customer_token());
    req.set_timeout(Duration::from_millis(500));
    let stream = client.watch_order_updates(req).await.unwrap().into_inner();
    let status = end_of(stream).await;
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
}
