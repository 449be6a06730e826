//! The real binary as a real process: configuration errors, SIGTERM handling.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use emporium_common::rpc::{
    Channel,
    health::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    },
};

const BIN: &str = env!("CARGO_BIN_EXE_emporium-inventory");

fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // The test keys include the development service key pair.
        .env("EMPORIUM_DEV_MODE", "true")
        .env(
            "EMPORIUM_DATABASE__URL",
            format!("sqlite://{}/inventory.db", dir.display()),
        )
        .env("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0")
        .env("EMPORIUM_SERVER__DRAIN_DELAY_MS", "0")
        .env("EMPORIUM_TELEMETRY__LOG_FORMAT", "json")
        .env(
            "EMPORIUM_AUTH__JWT_SECRET",
            "process-test-secret-0123456789abcdef",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_bad_currency_stops_the_process_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("EMPORIUM_INVENTORY__CURRENCY", "euro")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("EMPORIUM_INVENTORY__CURRENCY"), "{err}");
}

#[test]
fn print_config_shows_the_currency_and_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("EMPORIUM_INVENTORY__CURRENCY", "CHF")
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["inventory"]["currency"], "CHF");
    assert_eq!(v["auth"]["jwt_secret"], "[redacted]");
    assert_eq!(v["server"]["grpc_addr"], "127.0.0.1:0");
    assert!(!text.contains("process-test-secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_until_sigterm_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = command(dir.path())
        .spawn()
        .expect("spawn emporium-inventory");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr: std::net::SocketAddr = loop {
        let line = lines
            .next()
            .expect("process exited before listening")
            .expect("read stdout");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["message"] == "emporium-inventory listening" {
            break v["grpc"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "emporium.inventory.v1.InventoryService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status(), ServingStatus::Serving);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}

/// A key pair made for this test alone (not the built-in development pair).
const TEST_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAjWqflosjhsXT5i3MlZCNLYgwJVSifjIZLA/wpjztVDI=
-----END PUBLIC KEY-----
";

#[test]
fn without_development_mode_every_development_key_is_refused_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // Production: no EMPORIUM_DEV_MODE, and each step provides one more key.
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "EMPORIUM_DATABASE__URL",
                format!("sqlite://{}/inventory.db", dir.path().display()),
            )
            .env("EMPORIUM_SERVER__GRPC_ADDR", "127.0.0.1:0")
            .env("EMPORIUM_SERVER__ADMIN_ADDR", "127.0.0.1:0");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        err
    };
    let err = run(&[]);
    assert!(err.contains("EMPORIUM_AUTH__JWT_SECRET"), "{err}");
    assert!(err.contains("built-in development key"), "{err}");
    // The user-token secret alone leaves the world-known service key pair.
    let secret = (
        "EMPORIUM_AUTH__JWT_SECRET",
        "a-real-secret-of-at-least-32-bytes-0123",
    );
    let err = run(&[secret]);
    assert!(err.contains("EMPORIUM_AUTH__SERVICE_PUBLIC_KEY"), "{err}");
    // The development private key is refused even when given explicitly.
    let public = ("EMPORIUM_AUTH__SERVICE_PUBLIC_KEY", TEST_PUBLIC_KEY);
    let err = run(&[
        secret,
        public,
        (
            "EMPORIUM_AUTH__SERVICE_PRIVATE_KEY",
            emporium_common::config::DEV_SERVICE_PRIVATE_KEY,
        ),
    ]);
    assert!(err.contains("EMPORIUM_AUTH__SERVICE_PRIVATE_KEY"), "{err}");
    // Real keys pass the gate: what stops this run is the database it cannot open.
    let err = run(&[
        secret,
        public,
        ("EMPORIUM_DATABASE__URL", "sqlite:///proc/no-such-dir/x.db"),
    ]);
    assert!(!err.contains("development"), "{err}");
    assert!(err.contains("database"), "{err}");
}
