//! StreamUsers lives past the call that opened it (issue 10): each operation
//! checks the token's expiry, the caller's current rights and the caller's
//! rate limit again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use emporium_common::{
    auth::{Role, Tokens},
    config::AuthConfig,
    rpc::{Code, Streaming},
};
use emporium_testkit::{TestDb, auth_config, backend_tests, bearer};
use futures::StreamExt as _;
use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{app_with, pb};

backend_tests!(
    an_admins_stream_ends_unauthenticated_once_the_token_expires,
    an_admin_demoted_mid_stream_is_refused_admin_operations,
    each_operation_takes_a_permit_from_the_callers_rate_limit,
);

fn get(id: &str, user_id: &str) -> pb::StreamUsersRequest {
    pb::StreamUsersRequest {
        operation_id: id.into(),
        operation: Some(Operation::Get(pb::GetUserRequest {
            user_id: user_id.into(),
        })),
    }
}

/// The next answer, bounded.
async fn next(
    results: &mut Streaming<pb::StreamUsersResponse>,
) -> Option<Result<pb::StreamUsersResponse, emporium_common::rpc::Status>> {
    tokio::time::timeout(Duration::from_secs(10), results.next())
        .await
        .expect("an answer within 10 s")
}

fn error_code(r: &pb::StreamUsersResponse) -> Option<Code> {
    match &r.result {
        Some(Out::Error(s)) => Some(Code::from_i32(s.code)),
        _ => None,
    }
}

/// The outside reproduction of issue 10, shortened: an admin's stream kept
/// answering as admin after the token expired.
async fn an_admins_stream_ends_unauthenticated_once_the_token_expires(db: TestDb) {
    let mut app = app_with(db, |c| c.base.auth.leeway_secs = 0).await;
    let (customer, _) = app.customer("expiry@example.com").await;
    let admin = uuid::Uuid::parse_str(&app.admin_id).unwrap();
    let short = Tokens::new(&AuthConfig {
        token_ttl_secs: 3,
        leeway_secs: 0,
        ..auth_config()
    })
    .unwrap()
    .issue(admin, &[Role::Customer, Role::Admin])
    .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut results = app
        .client
        .stream_users(bearer(ReceiverStream::new(rx), &short.token))
        .await
        .unwrap()
        .into_inner();

    // Before expiry: answered as admin (another user's account).
    tx.send(get("before", &customer.id)).await.unwrap();
    let before = next(&mut results).await.unwrap().unwrap();
    assert!(
        matches!(&before.result, Some(Out::User(u)) if u.id == customer.id),
        "{before:?}"
    );

    // Wait out the token (the expiry is what is under test), then ask again.
    let expired_at = UNIX_EPOCH + Duration::from_secs(short.expires_at + 1);
    if let Ok(left) = expired_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    // The server may already have ended the stream; the send may then fail.
    let _ = tx.send(get("after", &customer.id)).await;
    match next(&mut results).await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("answered after the token expired: {other:?}"),
    }
    assert!(
        SystemTime::now() >= UNIX_EPOCH + Duration::from_secs(short.expires_at),
        "ended only after the expiry"
    );
}

async fn an_admin_demoted_mid_stream_is_refused_admin_operations(db: TestDb) {
    let mut app = app_with(db, |_| {}).await;
    let (customer, _) = app.customer("demoted@example.com").await;
    let (tx, rx) = mpsc::channel(8);
    let mut results = app
        .client
        .stream_users(bearer(ReceiverStream::new(rx), &app.admin_token.clone()))
        .await
        .unwrap()
        .into_inner();
    tx.send(get("as-admin", &customer.id)).await.unwrap();
    let r = next(&mut results).await.unwrap().unwrap();
    assert!(matches!(&r.result, Some(Out::User(_))), "{r:?}");

    // Another admin demotes the streaming one to customer.
    app.client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: app.admin_id.clone(),
                roles: Some(pb::RoleSet {
                    roles: vec![pb::Role::Customer as i32],
                }),
                ..Default::default()
            },
            &emporium_testkit::admin_token(),
        ))
        .await
        .unwrap();
    tx.send(get("demoted", &customer.id)).await.unwrap();
    let r = next(&mut results).await.unwrap().unwrap();
    assert_eq!(error_code(&r), Some(Code::PermissionDenied), "{r:?}");
    // Still themself: their own account is theirs.
    tx.send(get("self", &app.admin_id)).await.unwrap();
    let r = next(&mut results).await.unwrap().unwrap();
    assert!(matches!(&r.result, Some(Out::User(_))), "{r:?}");

    // Deactivated: the account's tokens stop working, per operation.
    app.client
        .update_user(bearer(
            pb::UpdateUserRequest {
                user_id: app.admin_id.clone(),
                active: Some(false),
                ..Default::default()
            },
            &emporium_testkit::admin_token(),
        ))
        .await
        .unwrap();
    tx.send(get("deactivated", &app.admin_id)).await.unwrap();
    let r = next(&mut results).await.unwrap().unwrap();
    assert_eq!(error_code(&r), Some(Code::Unauthenticated), "{r:?}");
}

async fn each_operation_takes_a_permit_from_the_callers_rate_limit(db: TestDb) {
    let mut app = app_with(db, |c| {
        c.base.server.rate_limit_per_sec = 1;
        c.base.server.rate_limit_burst = 3;
    })
    .await;
    let admin_id = app.admin_id.clone();
    let (tx, rx) = mpsc::channel(16);
    // Opening the stream takes one permit of the admin's three.
    let mut results = app
        .client
        .stream_users(bearer(ReceiverStream::new(rx), &app.admin_token.clone()))
        .await
        .unwrap()
        .into_inner();
    for i in 0..8 {
        tx.send(get(&i.to_string(), &admin_id)).await.unwrap();
    }
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(next(&mut results).await.unwrap().unwrap());
    }
    let ids: Vec<_> = answers.iter().map(|r| r.operation_id.as_str()).collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4", "5", "6", "7"], "in order");
    assert!(matches!(&answers[0].result, Some(Out::User(_))));
    let refused: Vec<_> = answers
        .iter()
        .filter_map(|r| match &r.result {
            Some(Out::Error(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        refused.len() >= 3,
        "at most the burst plus a refill answered: {answers:?}"
    );
    for s in &refused {
        assert_eq!(Code::from_i32(s.code), Code::ResourceExhausted, "{s:?}");
        assert!(
            s.details
                .iter()
                .any(|d| d.type_url.ends_with("google.rpc.RetryInfo")),
            "refusals say when to come back: {s:?}"
        );
    }
    // The stream goes on: once the bucket refills, operations run again.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        tx.send(get("later", &admin_id)).await.unwrap();
        let r = next(&mut results).await.unwrap().unwrap();
        match error_code(&r) {
            None => break,
            Some(Code::ResourceExhausted) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("{r:?}"),
        }
    }
}

/// The outside reproduction against the real binary, configured through the
/// environment as in production: an admin's stream stops answering as admin
/// when the token expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ends_an_admins_stream_when_the_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = crate::process::command(dir.path());
    cmd.env("EMPORIUM_AUTH__LEEWAY_SECS", "0");
    let process = emporium_testkit::process::Process::start(cmd);
    let mut client = pb::user_service_client::UserServiceClient::new(process.channel().await);
    let admin = client
        .authenticate(pb::AuthenticateRequest {
            email: crate::ADMIN_EMAIL.into(),
            password: crate::ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    let short = Tokens::new(&AuthConfig {
        jwt_secret: emporium_common::config::Secret::new("process-test-secret-0123456789abcdef"),
        token_ttl_secs: 3,
        leeway_secs: 0,
        ..AuthConfig::default()
    })
    .unwrap()
    .issue(uuid::Uuid::parse_str(&admin).unwrap(), &[Role::Admin])
    .unwrap();
    let (tx, rx) = mpsc::channel(8);
    let mut results = client
        .stream_users(bearer(ReceiverStream::new(rx), &short.token))
        .await
        .unwrap()
        .into_inner();
    tx.send(get("before", &admin)).await.unwrap();
    let before = next(&mut results).await.unwrap().unwrap();
    assert!(matches!(&before.result, Some(Out::User(_))), "{before:?}");
    let expired_at = UNIX_EPOCH + Duration::from_secs(short.expires_at + 1);
    if let Ok(left) = expired_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }
    let _ = tx.send(get("after", &admin)).await;
    match next(&mut results).await {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unauthenticated, "{status:?}"),
        other => panic!("answered after the token expired: {other:?}"),
    }
}
