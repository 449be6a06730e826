//! The real binary as a real process: configuration errors, SIGTERM handling.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use emporium_common::rpc::{
    Channel,
    health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
};
use emporium_testkit::bearer;
use futures::StreamExt as _;
use pb::{stream_users_request::Operation, stream_users_response::Result as Out};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{ADMIN_EMAIL, ADMIN_PASSWORD, pb};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-user");

pub(crate) fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The test keys include the development service key pair.
        .env("EMPORIUM_DEV_MODE", "true")
        .env(
            "EMPORIUM_DATABASE__URL",
            format!("sqlite://{}/user.db", dir.display()),
        )
        .env("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_SERVER__DRAIN_DELAY_MS", "1500")
        .env("EMPORIUM_SERVER__SHUTDOWN_GRACE_MS", "10000")
        .env("EMPORIUM_TELEMETRY__LOG_FORMAT", "json")
        .env(
            "EMPORIUM_AUTH__JWT_SECRET",
            "process-test-secret-0123456789abcdef",
        )
        .env("EMPORIUM_USER__ADMIN_EMAIL", ADMIN_EMAIL)
        .env("EMPORIUM_USER__ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Kills the process if the test fails before it exits by itself.
pub(crate) struct Reaper(pub(crate) Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and waits for its "listening" log line: (child, gRPC addr).
fn start(dir: &std::path::Path) -> (Reaper, SocketAddr) {
    let mut child = command(dir).spawn().expect("spawn emporium-user");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("process exited before listening")
            .expect("read stdout");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "emporium-user listening" {
            break v["grpc"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (Reaper(child), addr)
}

/// Like [`start`], but keeps every log line for the test to read afterwards.
fn start_capturing(
    dir: &std::path::Path,
) -> (Reaper, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut cmd = command(dir);
    cmd.env("EMPORIUM_TELEMETRY__LOG_FILTER", "debug");
    start_command(cmd)
}

/// Starts `cmd` (from [`command`]) and keeps every log line.
pub(crate) fn start_command(
    mut cmd: Command,
) -> (Reaper, SocketAddr, std::sync::mpsc::Receiver<String>) {
    let mut child = cmd.spawn().expect("spawn emporium-user");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = loop {
        let line = lines.next().expect("exited before listening").unwrap();
        let _ = tx.send(line.clone());
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "emporium-user listening" {
            break v["grpc"].as_str().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (Reaper(child), addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_reach_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut reaper, addr, logs) = start_capturing(dir.path());
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
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
    Command::new("kill")
        .args(["-TERM", &reaper.0.id().to_string()])
        .status()
        .unwrap();
    tokio::task::spawn_blocking(move || wait_exit(&mut reaper.0, Duration::from_secs(10)))
        .await
        .unwrap();
    let lines: Vec<String> = logs.try_iter().collect();
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

pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
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
    let (mut reaper, addr) = start(dir.path());
    let url = format!("http://{addr}");
    let channel = Channel::from_shared(url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
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

    let killed = Command::new("kill")
        .args(["-TERM", &reaper.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    drop(watch);

    // During the drain delay a fresh client (a load balancer's probe) still
    // connects and is told NOT_SERVING.
    let fresh = Channel::from_shared(url).unwrap().connect().await.unwrap();
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
        reaper.0.try_wait().unwrap().is_none(),
        "must not exit with a call open"
    );
    drop(tx);
    assert!(results.next().await.is_none());
    let status =
        tokio::task::spawn_blocking(move || wait_exit(&mut reaper.0, Duration::from_secs(10)))
            .await
            .unwrap();
    assert!(status.success(), "{status:?}");
}
