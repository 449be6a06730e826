//! The stack under measurement: the bare echo server and the five binaries
//! on the services' CPU, each over its own database, and what the scenarios
//! need in it (customers with tokens, products with plenty of stock).

use std::{path::PathBuf, time::Duration};

use emporium_common::{
    auth::{Role, Tokens},
    config::AuthConfig,
};
use emporium_proto::{
    common::v1::Money,
    inventory::v1::{self as inv, inventory_service_client::InventoryServiceClient},
    user::v1::{self as usr, user_service_client::UserServiceClient},
};
use tonic::{Request, transport::Channel};

use crate::procs::{self, Proc, Spec};

/// Where the databases are.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file per service in the run's directory.
    Sqlite,
    /// A database per service on this PostgreSQL server (`postgres://…/`),
    /// made with `createdb`-like SQL through `psql`.
    Postgres(String),
}

impl Backend {
    /// `sqlite` or `postgres`, for the report.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// How to build the world.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// The bench binary itself (for the echo server).
    pub bench_bin: PathBuf,
    /// The databases.
    pub backend: Backend,
    /// The CPUs the processes under test run on (`taskset -c`), if pinned.
    pub cpus: Option<String>,
    /// Customers to sign up.
    pub customers: usize,
    /// More settings for every service (`EMPORIUM_…` variables), to measure
    /// the effect of one.
    pub service_env: Vec<(String, String)>,
}

/// The running stack.
pub struct World {
    /// The bare tonic server: the ceiling.
    pub echo: Proc,
    /// user, inventory, payment, order, edge.
    pub services: Vec<Proc>,
    /// Customers: (user id, access token).
    pub customers: Vec<(String, String)>,
    /// A product with plenty of stock.
    pub product_id: String,
    /// Its SKU.
    pub sku: String,
    /// Start to SERVING of each service, restarted over its migrated
    /// database.
    pub restart_times: Vec<(String, Duration)>,
    /// Resident memory of each process just after it started, before any
    /// data or load, bytes.
    pub idle_rss: Vec<(String, u64)>,
    _dir: tempfile::TempDir,
}

impl World {
    /// The process named `name`.
    pub fn service(&self, name: &str) -> &Proc {
        self.services
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// A new channel to `name`'s main port.
    pub async fn channel(&self, name: &str) -> Channel {
        let addr = if name == "echo" {
            self.echo.addr
        } else {
            self.service(name).addr
        };
        channel(&format!("http://{addr}")).await
    }
}

async fn channel(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("a valid url")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("connect")
}

/// The development keys every service runs with here (development mode).
pub fn tokens() -> Tokens {
    Tokens::new(&AuthConfig::default()).expect("the development keys are valid")
}

/// `message` with `token` as its bearer token.
pub fn bearer<T>(message: T, token: &str) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ASCII"),
    );
    r
}

fn database_url(setup: &Setup, dir: &std::path::Path, service: &str) -> Result<String, String> {
    match &setup.backend {
        Backend::Sqlite => Ok(format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{service}.db")).display()
        )),
        Backend::Postgres(base) => {
            let name = format!("bench_{service}_{}", uuid::Uuid::now_v7().simple());
            let status = std::process::Command::new("psql")
                .args([
                    base.as_str(),
                    "-q",
                    "-c",
                    &format!("CREATE DATABASE {name}"),
                ])
                .status()
                .map_err(|e| format!("psql: {e}"))?;
            if !status.success() {
                return Err(format!("psql could not create {name} on {base}"));
            }
            Ok(format!("{}/{name}", base.trim_end_matches('/')))
        }
    }
}

/// Starts the echo server and the stack, then seeds it.
pub async fn start(setup: &Setup) -> Result<World, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cpus = setup.cpus.as_deref();
    let echo_addr = procs::free_addr();
    let echo = Spec {
        name: "echo".into(),
        program: setup.bench_bin.clone(),
        args: vec!["serve-echo".into(), "--addr".into(), echo_addr.to_string()],
        vars: vec![],
        addr: echo_addr,
        log: dir.path().join("echo.log"),
    }
    .start(cpus)
    .await?;

    let mut specs: Vec<Spec> = Vec::new();
    let mut urls = Vec::new();
    for name in ["user", "inventory", "payment", "order", "edge"] {
        let addr = procs::free_addr();
        let mut vars = vec![
            ("EMPORIUM_DEV_MODE".to_owned(), "true".to_owned()),
            ("EMPORIUM_TELEMETRY__LOG_FORMAT".into(), "json".into()),
            ("EMPORIUM_SERVER__GRPC_ADDR".into(), addr.to_string()),
            (
                "EMPORIUM_SERVER__ADMIN_ADDR".into(),
                procs::free_addr().to_string(),
            ),
            ("EMPORIUM_SERVER__DRAIN_DELAY_MS".into(), "0".into()),
            // Many callers from one address: the per-caller limits are not
            // what is measured.
            (
                "EMPORIUM_SERVER__RATE_LIMIT_PER_SEC".into(),
                "1000000".into(),
            ),
            ("EMPORIUM_SERVER__RATE_LIMIT_BURST".into(), "1000000".into()),
        ];
        vars.extend(setup.service_env.iter().cloned());
        if name != "edge" {
            vars.push((
                "EMPORIUM_DATABASE__URL".into(),
                database_url(setup, dir.path(), name)?,
            ));
        }
        if name == "order" || name == "edge" {
            for (peer, url) in ["user", "inventory", "payment"].iter().zip(&urls) {
                vars.push((
                    format!("EMPORIUM_PEERS__{}__URL", peer.to_ascii_uppercase()),
                    String::clone(url),
                ));
            }
        }
        if name == "edge" {
            vars.push(("EMPORIUM_PEERS__ORDER__URL".into(), urls[3].clone()));
        }
        urls.push(format!("http://{addr}"));
        specs.push(Spec {
            name: name.into(),
            program: procs::binary(&setup.bin_dir, name)?,
            args: vec![],
            vars,
            addr,
            log: dir.path().join(format!("{name}.log")),
        });
    }
    // Each service starts once to migrate its database, then again: the
    // second start is the one timed.
    let mut services = Vec::new();
    let mut restart_times = Vec::new();
    for spec in &specs {
        drop(spec.start(cpus).await?);
        let p = spec.start(cpus).await?;
        restart_times.push((spec.name.clone(), p.started_in));
        services.push(p);
    }
    let idle_rss = std::iter::once(&echo)
        .chain(&services)
        .map(|p| (p.name.clone(), p.rss()))
        .collect();
    let mut world = World {
        idle_rss,
        echo,
        services,
        customers: Vec::new(),
        product_id: String::new(),
        sku: "BENCH-1".into(),
        restart_times,
        _dir: dir,
    };
    seed(&mut world, setup.customers).await?;
    Ok(world)
}

async fn seed(world: &mut World, customers: usize) -> Result<(), String> {
    let tokens = tokens();
    let admin = tokens
        .issue(uuid::Uuid::now_v7(), &[Role::Customer, Role::Admin])
        .map_err(|e| e.to_string())?
        .token;
    let mut inventory = InventoryServiceClient::new(world.channel("inventory").await);
    let product = inventory
        .create_product(bearer(
            inv::CreateProductRequest {
                sku: world.sku.clone(),
                name: "Bench mug".into(),
                description: String::new(),
                unit_price: Some(Money {
                    currency_code: "EUR".into(),
                    units: 1250,
                }),
            },
            &admin,
        ))
        .await
        .map_err(|s| format!("create product: {s:?}"))?
        .into_inner()
        .product
        .ok_or("no product")?;
    world.product_id = product.id;
    inventory
        .adjust_stock(bearer(
            inv::AdjustStockRequest {
                product: Some(inv::adjust_stock_request::Product::Sku(world.sku.clone())),
                delta: 1_000_000_000,
                reason: "received".into(),
                idempotency_key: "bench-stock".into(),
            },
            &admin,
        ))
        .await
        .map_err(|s| format!("stock: {s:?}"))?;
    let mut users = UserServiceClient::new(world.channel("user").await);
    for i in 0..customers {
        let user = users
            .create_user(usr::CreateUserRequest {
                email: format!("bench-{i}-{}@example.com", uuid::Uuid::now_v7().simple()),
                name: format!("Bench {i}"),
                password: "bench-password-1".into(),
            })
            .await
            .map_err(|s| format!("sign-up: {s:?}"))?
            .into_inner()
            .user
            .ok_or("sign-up answered without a user")?;
        let id: uuid::Uuid = user.id.parse().map_err(|e| format!("{e}"))?;
        let token = tokens
            .issue(id, &[Role::Customer])
            .map_err(|e| e.to_string())?
            .token;
        world.customers.push((user.id, token));
    }
    Ok(())
}
