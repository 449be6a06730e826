//! What every Emporium server provides around the API: health, reflection, the
//! admin port, request ids, metrics, and a graceful drain.

use emporium_common::rpc::{
    Code, Request,
    health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
    reflection::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    },
};
use emporium_testkit::{TestDb, bearer, http_get};
use futures::StreamExt as _;
use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{app, pb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving_for_the_server_and_the_service() {
    let app = app(TestDb::sqlite()).await;
    let mut health = HealthClient::new(app.svc.channel().await);
    for service in ["", "emporium.user.v1.UserService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let s = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_only_what_is_served() {
    let app = app(TestDb::sqlite()).await;
    let mut client = ServerReflectionClient::new(app.svc.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
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
            "emporium.user.v1.UserService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_serves_probes_and_metrics() {
    let mut app = app(TestDb::sqlite()).await;
    let admin = app.svc.admin_addr;
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(http_get(admin, "/readyz").await, (200, "ready\n".into()));
    let token = app.admin_token.clone();
    let id = app.admin_id.clone();
    app.get(&id, &token).await.unwrap();
    app.get("bad-id", &token).await.unwrap_err();
    let (status, body) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for series in [
        r#"rpc_server_requests_total{rpc_service="emporium.user.v1.UserService",rpc_method="GetUser",rpc_grpc_status_code="OK"}"#,
        r#"rpc_server_requests_total{rpc_service="emporium.user.v1.UserService",rpc_method="GetUser",rpc_grpc_status_code="INVALID_ARGUMENT"}"#,
        "rpc_server_duration_seconds_bucket",
    ] {
        assert!(body.contains(series), "missing {series} in\n{body}");
    }
    assert_eq!(http_get(admin, "/nope").await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_or_generated() {
    let mut app = app(TestDb::sqlite()).await;
    let token = app.admin_token.clone();
    let mut req = bearer(
        pb::GetUserRequest {
            user_id: app.admin_id.clone(),
        },
        &token,
    );
    req.metadata_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    let r = app.client.get_user(req).await.unwrap();
    assert_eq!(r.metadata().get("x-request-id").unwrap(), "abc-123");
    // Errors carry one too, and a hostile id is replaced.
    let mut req = Request::new(pb::GetUserRequest::default());
    req.metadata_mut()
        .insert("x-request-id", "has spaces".parse().unwrap());
    let s = app.client.get_user(req).await.unwrap_err();
    let id = s.metadata().get("x-request-id").unwrap().to_str().unwrap();
    assert_ne!(id, "has spaces");
    assert_eq!(id.len(), 36);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_not_serving_and_finishes_in_flight_calls() {
    let mut app = app(TestDb::sqlite()).await;
    let mut health = HealthClient::new(app.svc.channel().await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "emporium.user.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    // An in-flight call: a bulk stream with one operation answered.
    let token = app.admin_token.clone();
    let (tx, rx) = mpsc::channel(4);
    let mut results = app
        .client
        .stream_users(bearer(ReceiverStream::new(rx), &token))
        .await
        .unwrap()
        .into_inner();
    let get = |id: &str| pb::StreamUsersRequest {
        operation_id: id.into(),
        operation: Some(Operation::Get(pb::GetUserRequest {
            user_id: app.admin_id.clone(),
        })),
    };
    tx.send(get("before")).await.unwrap();
    assert!(matches!(
        results.next().await.unwrap().unwrap().result,
        Some(Out::User(_))
    ));

    let svc = app.svc;
    let stopping = tokio::spawn(svc.shutdown());
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );

    // Draining: the call in flight is still served to its end...
    tx.send(get("during")).await.unwrap();
    let r = results.next().await.unwrap().unwrap();
    assert_eq!(r.operation_id, "during");
    assert!(matches!(r.result, Some(Out::User(_))));
    assert!(
        !stopping.is_finished(),
        "server must wait for the open call"
    );
    // ...and once it ends (the health watch is a call too), the server stops cleanly.
    drop(watch);
    drop(tx);
    assert!(results.next().await.is_none());
    stopping.await.unwrap().expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_caller_is_rate_limited_on_its_own() {
    use emporium_common::rpc::StatusExt as _;
    let svc = emporium_testkit::spawn_user(TestDb::sqlite(), |c| {
        c.base.server.rate_limit_per_sec = 1;
        c.base.server.rate_limit_burst = 2;
    })
    .await;
    let mut client = pb::user_service_client::UserServiceClient::new(svc.channel().await);
    let tokens = emporium_testkit::tokens();
    let (alice, bob) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    let token = |u| {
        tokens
            .issue(u, &[emporium_common::auth::Role::Customer])
            .unwrap()
            .token
    };
    let get = |u: uuid::Uuid, t: &str| {
        bearer(
            pb::GetUserRequest {
                user_id: u.to_string(),
            },
            t,
        )
    };
    let (ta, tb) = (token(alice), token(bob));
    // The burst passes (NOT_FOUND: the users do not exist, but the calls ran)...
    for _ in 0..2 {
        assert_eq!(
            client.get_user(get(alice, &ta)).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    // ...the next call is refused with a retry delay...
    let s = client.get_user(get(alice, &ta)).await.unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    let retry = s
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("retry info");
    assert!(retry > std::time::Duration::ZERO && retry <= std::time::Duration::from_secs(1));
    // ...while another user is unaffected.
    assert_eq!(
        client.get_user(get(bob, &tb)).await.unwrap_err().code(),
        Code::NotFound
    );
}

/// Anonymous Authenticate calls (wrong passwords) from two clients behind one
/// proxy: with the proxy trusted, each client has its own bucket; a caller that
/// is not a trusted proxy cannot pick its bucket by forging the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_callers_behind_a_trusted_proxy_are_limited_per_real_client() {
    let login = |client: &str| {
        let mut req = emporium_common::rpc::Request::new(pb::AuthenticateRequest {
            email: "nobody@example.com".into(),
            password: "wrong password".into(),
        });
        req.metadata_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        req
    };
    for trusted in [true, false] {
        let svc = emporium_testkit::spawn_user(TestDb::sqlite(), |c| {
            c.base.server.rate_limit_per_sec = 1;
            c.base.server.rate_limit_burst = 2;
            if trusted {
                c.base.server.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
            }
        })
        .await;
        let mut client = pb::user_service_client::UserServiceClient::new(svc.channel().await);
        // One client uses up its burst...
        for _ in 0..2 {
            let s = client
                .authenticate(login("198.51.100.1"))
                .await
                .unwrap_err();
            assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        }
        let s = client
            .authenticate(login("198.51.100.1"))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        // ...and another one behind the same proxy: its own bucket when the proxy
        // is trusted; the same (exhausted) bucket of the TCP peer when it is not,
        // whatever the header claims.
        let s = client
            .authenticate(login("198.51.100.2"))
            .await
            .unwrap_err();
        let expected = if trusted {
            Code::Unauthenticated
        } else {
            Code::ResourceExhausted
        };
        assert_eq!(s.code(), expected, "trusted proxy: {trusted}: {s:?}");
    }
}
