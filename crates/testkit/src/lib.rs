//! Test harness for Emporium: real services on real sockets over real databases.
//!
//! - [`TestDb`]: a fresh database per test — a temp SQLite file, or a database
//!   in a throwaway PostgreSQL cluster ([`postgres::PgCluster`]) that the harness
//!   starts itself from the PostgreSQL binaries.
//! - [`spawn_user`], [`spawn_inventory`], [`spawn_payment`], [`spawn_order`]:
//!   one service in-process on `127.0.0.1:0` (bound before it serves, so no
//!   port guessing and no sleeps), stopped on drop; [`Stack`]: all four, wired
//!   together, with an admin and a customer; [`invariants`]: the platform's
//!   invariants read from each service's own database.
//! - [`process`]: a service binary as a real process (SIGTERM, kill, logs).
//! - [`eventually`]: polls for a condition, bounded, instead of sleeping.
//! - [`backend_tests!`]: declares each test once per backend.
//! - [`hostile`]: the shared pieces of the hostile-input tests (bad ids and
//!   keys, garbage, proptest strategies and config, the expected codes);
//!   [`raw`]: hand-made gRPC frames.
//! - [`otel`]: every span of the process in memory, with the JSON log lines,
//!   for trace tests; [`prometheus`]: `/metrics` parsed for metric tests.
//!
//! When PostgreSQL binaries are missing, PostgreSQL tests print a loud SKIPPED
//! banner and return; with `EMPORIUM_REQUIRE_POSTGRES=1` (CI) they fail instead.

pub mod chaos;
pub mod hostile;
pub mod invariants;
pub mod otel;
pub mod ports;
pub mod postgres;
pub mod probe;
pub mod process;
pub mod prometheus;
pub mod raw;
pub mod stack;
pub mod stall;
pub mod status;
pub mod wait;

use std::net::SocketAddr;

use emporium_common::{
    config::{AuthConfig, BaseConfig, DatabaseConfig, Secret, ServerConfig},
    rpc::{Channel, MetadataValue, Request},
    server::Listeners,
};
use tokio::{sync::oneshot, task::JoinHandle};

pub use emporium_common::testing::init_for_tests as init_logs;

/// A database for one test. Dropping it removes a SQLite file; PostgreSQL
/// databases go away with the cluster at process exit.
#[derive(Debug)]
pub struct TestDb {
    url: String,
    backend: &'static str,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A new SQLite file in a temp directory.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create temp dir");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url,
            backend: "sqlite",
            _dir: Some(dir),
        }
    }

    /// A new database in the shared throwaway cluster, or `None` (after a loud
    /// warning) when PostgreSQL is not installed and not required.
    pub fn postgres() -> Option<Self> {
        let cluster = postgres::PgCluster::shared()?;
        Some(Self {
            url: cluster.create_database(),
            backend: "postgres",
            _dir: None,
        })
    }

    /// A fresh database on the same backend (a stack of services needs one each).
    pub fn another(&self) -> Self {
        match self.backend {
            "postgres" => Self::postgres().expect("the cluster that made self is running"),
            _ => Self::sqlite(),
        }
    }

    /// Another handle to this very database (PostgreSQL), for a second replica
    /// of a service: dropping either handle leaves the database in place.
    pub fn same(&self) -> Self {
        assert_eq!(
            self.backend, "postgres",
            "replicas share a PostgreSQL database"
        );
        Self {
            url: self.url.clone(),
            backend: self.backend,
            _dir: None,
        }
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// Database settings for a service under test.
    pub fn config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: Secret::new(self.url.clone()),
            max_connections: 8,
            acquire_timeout_ms: 5_000,
        }
    }
}

/// Auth settings shared by every service in a test (and by [`tokens`]).
pub fn auth_config() -> AuthConfig {
    AuthConfig {
        jwt_secret: Secret::new("emporium-test-secret-0123456789abcdef"),
        // Every service under test may mint service tokens, so tests can act as
        // the order service.
        service_private_key: Some(Secret::new(
            emporium_common::config::DEV_SERVICE_PRIVATE_KEY,
        )),
        ..AuthConfig::default()
    }
}

/// Issues tokens that the spawned services accept.
pub fn tokens() -> emporium_common::auth::Tokens {
    emporium_common::auth::Tokens::new(&auth_config()).expect("test keys are valid")
}

/// A token of a new user who is a customer and an admin.
pub fn admin_token() -> String {
    tokens()
        .issue(
            uuid::Uuid::now_v7(),
            &[
                emporium_common::auth::Role::Customer,
                emporium_common::auth::Role::Admin,
            ],
        )
        .expect("test keys sign")
        .token
}

/// A service token of the order service acting for customer `user`, for one
/// call to `peer` (`inventory`, `payment`, `user`): the only caller the
/// reservation, charge and refund RPCs accept. Each call needs its own (a
/// second use is a replay, refused).
pub fn order_service_token(peer: &str, user: uuid::Uuid) -> String {
    tokens()
        .issue_service("order", peer, user, std::time::Duration::from_secs(30))
        .expect("test keys sign service tokens")
        .token
}

/// Server settings for tests: ephemeral ports, no drain delay.
pub fn server_config() -> ServerConfig {
    ServerConfig {
        drain_delay_ms: 0,
        shutdown_grace_ms: 5_000,
        // Tests hammer one server as one user on purpose (200 concurrent
        // orders); the limiter has tests of its own.
        rate_limit_per_sec: 0,
        // Every status any test provokes is scanned for leaked internals.
        leak_guard: true,
        ..ServerConfig::local(0, 0)
    }
}

/// The shared blocks of a service under test over `database`: test server
/// settings, test keys.
pub fn base_config(database: DatabaseConfig) -> BaseConfig {
    BaseConfig {
        server: server_config(),
        database,
        auth: auth_config(),
        ..BaseConfig::local("test", 0, 0)
    }
}

/// A service running in this process. Dropping it stops the service.
#[derive(Debug)]
pub struct Spawned {
    /// Where its gRPC port listens.
    pub grpc_addr: SocketAddr,
    /// Where its admin HTTP port listens.
    pub admin_addr: SocketAddr,
    /// Its database, for tests that check what was stored.
    pub db_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
    /// `None` only while [`Spawned::restart`] moves it to the new run.
    db: Option<TestDb>,
}

impl Spawned {
    /// `http://127.0.0.1:PORT` of the gRPC port.
    pub fn url(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// A connected channel to the gRPC port.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("valid url")
            .connect()
            .await
            .expect("connect to spawned service")
    }

    /// Starts a graceful shutdown and waits for the service to finish; the
    /// database stays (for checks after a service went down).
    pub async fn stop(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(|e| e.to_string())?,
            None => Ok(()),
        }
    }

    /// A handle to this service's database (PostgreSQL), for a second replica.
    pub fn same_db(&self) -> TestDb {
        self.db
            .as_ref()
            .expect("a spawned service has its database")
            .same()
    }

    /// [`Self::stop`], then drops the database too.
    pub async fn shutdown(mut self) -> Result<(), String> {
        self.stop().await
    }

    /// Stops the service (if it runs) and starts it again with `start` on the
    /// same ports over the same database, as a restarted pod would come back
    /// behind the same address: its clients' channels reconnect to it.
    pub async fn restart<F, Fut>(&mut self, start: F) -> Result<(), String>
    where
        F: FnOnce(DatabaseConfig, Listeners, StopSignal) -> Fut,
        Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        self.stop().await?;
        let server = emporium_common::config::ServerConfig {
            grpc_addr: self.grpc_addr,
            admin_addr: self.admin_addr,
            ..emporium_common::config::ServerConfig::local(0, 0)
        };
        let listeners = Listeners::bind(&server).await.map_err(|e| e.to_string())?;
        let db = self.db.take().expect("a spawned service has its database");
        // The old run is stopped and holds nothing: dropping it does nothing.
        drop(std::mem::replace(self, run(db, listeners, start)));
        Ok(())
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What a service's `serve` function returns.
pub use emporium_common::BoxError;

/// The future that tells a spawned service to drain and stop.
pub type StopSignal = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts a service in this process on ephemeral ports: `start` gets the
/// database settings for `db`, the bound listeners and the stop signal, and
/// returns the service's `serve` future.
pub async fn spawn<F, Fut>(db: TestDb, start: F) -> Spawned
where
    F: FnOnce(DatabaseConfig, Listeners, StopSignal) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    init_logs();
    let listeners = Listeners::ephemeral().await.expect("bind ephemeral ports");
    run(db, listeners, start)
}

/// Runs `start` on `listeners` over `db`.
fn run<F, Fut>(db: TestDb, listeners: Listeners, start: F) -> Spawned
where
    F: FnOnce(DatabaseConfig, Listeners, StopSignal) -> Fut,
    Fut: std::future::Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let (grpc_addr, admin_addr) = (listeners.grpc_addr(), listeners.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let fut = start(
        db.config(),
        listeners,
        Box::pin(async {
            let _ = stopped.await;
        }),
    );
    let task = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
    Spawned {
        grpc_addr,
        admin_addr,
        db_url: db.url().to_owned(),
        stop: Some(stop),
        task: Some(task),
        db: Some(db),
    }
}

/// Starts the user service over `db`; `tweak` adjusts its config first.
pub async fn spawn_user(db: TestDb, tweak: impl FnOnce(&mut emporium_user::Config)) -> Spawned {
    spawn(db, |database, listeners, stop| {
        let mut config = emporium_user::Config {
            base: base_config(database),
            ..emporium_user::Config::default()
        };
        tweak(&mut config);
        emporium_user::serve(config, listeners, stop)
    })
    .await
}

pub use probe::{health_status, http_get, reflected_services};
pub use stack::spawn_payment_with;
pub use stack::{
    Stack, peers, saga_config, spawn_inventory, spawn_order, spawn_order_alone, spawn_payment,
    spawn_payment_with_processor,
};
pub use status::{LEAK_MARKERS, assert_no_leak, invalid, refused, scan, violated_fields};
pub use wait::{eventually, poll_until};

/// Wraps `msg` in a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token"),
    );
    req
}

/// Declares each listed `async fn name(db: TestDb)` as two tests, `sqlite::name`
/// and `postgres::name`, on a multi-thread runtime (a single-thread runtime hides
/// races).
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestDb::sqlite()).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = $crate::TestDb::postgres() else { return };
                    super::$name(db).await
                }
            )*
        }
    };
}
