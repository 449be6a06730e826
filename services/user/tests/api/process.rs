//! The real binary as a real process: configuration errors, SIGTERM handling.

use std::{process::Command, time::Duration};

use emporium_common::rpc::health::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use emporium_testkit::{bearer, process::Process};
use futures::StreamExt as _;
use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, pb};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-user");

/// The binary over a SQLite file in `dir`, on ephemeral ports, with a drain
/// delay, a bootstrapped admin and test keys.
pub(crate) fn command(dir: &std::path::Path) -> Command {
    emporium_testkit::process::command(
        BIN,
        [
            (
                "EMPORIUM_DATABASE__URL",
                format!("sqlite://{}/user.db", dir.display()),
            ),
            ("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0".into()),
            ("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0".into()),
            ("EMPORIUM_SERVER__DRAIN_DELAY_MS", "1500".into()),
            ("EMPORIUM_SERVER__SHUTDOWN_GRACE_MS", "10000".into()),
            (
                "EMPORIUM_AUTH__JWT_SECRET",
                "process-test-secret-0123456789abcdef".into(),
            ),
            ("EMPORIUM_USER__ADMIN_EMAIL", ADMIN_EMAIL.into()),
            ("EMPORIUM_USER__ADMIN_PASSWORD", ADMIN_PASSWORD.into()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path());
    cmd.env("EMPORIUM_TELEMETRY__LOG_FILTER", "debug");
    let mut process = Process::start(cmd);
    let channel = process.channel().await;
    let mut client = pb::user_service_client::UserServiceClient::new(channel);
    let auth = client
        .authenticate(pb::AuthenticateRequest {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = auth.user.unwrap().id;
    // A good token, a forged one, and a failed sign-in, all at debug level.
    client
        .get_user(bearer(
            pb::GetUserRequest {
                user_id: id.clone(),
            },
            &auth.access_token,
        ))
        .await
        .unwrap();
    let forged = format!("{}x", auth.access_token);
    client
        .get_user(bearer(pb::GetUserRequest { user_id: id }, &forged))
        .await
        .unwrap_err();
    client
        .authenticate(pb::AuthenticateRequest {
            email: ADMIN_EMAIL.into(),
            password: "wrong-password-123".into(),
        })
        .await
        .unwrap_err();
    process.terminate(Duration::from_secs(10)).await;
    let lines = process.logs();
    assert!(
        lines.iter().any(|l| l.contains("GetUser")),
        "the calls were logged"
    );
    let signature = auth.access_token.rsplit('.').next().unwrap().to_owned();
    for line in &lines {
        for secret in [
            signature.as_str(),
            "authorization",
            ADMIN_PASSWORD,
            "wrong-password-123",
        ] {
            assert!(!line.contains(secret), "log line leaks {secret:?}: {line}");
        }
    }
}

#[test]
fn a_bad_setting_stops_the_process_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("EMPORIUM_SERVER__MAX_IN_FLIGHT", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("max_in_flight"), "{err}");
}

#[test]
fn print_config_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path()).arg("--print-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["auth"]["jwt_secret"], "[redacted]");
    assert_eq!(v["user"]["admin_password"], "[redacted]");
    assert_eq!(v["user"]["admin_email"], ADMIN_EMAIL);
    assert!(!text.contains(ADMIN_PASSWORD) && !text.contains("process-test-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut process = Process::start(command(dir.path()));
    let channel = process.channel().await;
    let mut client = pb::user_service_client::UserServiceClient::new(channel.clone());
    let auth = client
        .authenticate(pb::AuthenticateRequest {
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let admin_id = auth.user.unwrap().id;

    let (tx, rx) = mpsc::channel(4);
    let mut results = client
        .stream_users(bearer(ReceiverStream::new(rx), &auth.access_token))
        .await
        .unwrap()
        .into_inner();
    let get = |id: &str| pb::StreamUsersRequest {
        operation_id: id.into(),
        operation: Some(Operation::Get(pb::GetUserRequest {
            user_id: admin_id.clone(),
        })),
    };
    tx.send(get("before")).await.unwrap();
    assert!(matches!(
        results.next().await.unwrap().unwrap().result,
        Some(Out::User(_))
    ));

    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    process.sigterm();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    drop(watch);

    // During the drain delay a fresh client (a load balancer's probe) still
    // connects and is told NOT_SERVING.
    let fresh = process.channel().await;
    let r = HealthClient::new(fresh)
        .check(HealthCheckRequest {
            service: "emporium.user.v1.UserService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::NotServing);

    // The call in flight is still answered, then the process exits 0.
    tx.send(get("during")).await.unwrap();
    let r = results.next().await.unwrap().unwrap();
    assert_eq!(r.operation_id, "during");
    assert!(
        process.try_status().is_none(),
        "must not exit with a call open"
    );
    drop(tx);
    assert!(results.next().await.is_none());
    let status = process.exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}
