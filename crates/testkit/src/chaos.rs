//! The chaos run (`make chaos`): the four service binaries as real processes,
//! a bounded mixed load, and faults injected all along — SIGKILL and restart of
//! a random service every few seconds, SIGSTOP of a peer past the callers'
//! deadlines, a payment process killed right after it commits a charge and
//! before it replies (its test-only failpoint), and with `--postgres` two order
//! replicas and one restart of PostgreSQL. When the load ends it waits for
//! recovery and checks every invariant from each service's own database, and
//! that every duplicate submission was answered with the same order.
//!
//! The service binaries must be built with the `testing` feature (the
//! failpoints): `make chaos` builds them so, into `target/chaos`.

use std::{
    collections::{BTreeMap, HashMap},
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use emporium_common::auth::Role;
use emporium_proto::{inventory::v1 as inv, order::v1 as ord, user::v1 as usr};
use tonic::transport::Channel;
use uuid::Uuid;

use crate::{
    auth_config, bearer,
    invariants::{Dbs, check_invariants},
    postgres::PgCluster,
    process::{Process, command},
    tokens,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds every random choice (load and faults).
    pub seed: u64,
    /// How long the load runs.
    pub duration: Duration,
    /// PostgreSQL (a throwaway cluster) with two order replicas, instead of SQLite.
    pub postgres: bool,
    /// Where the service binaries are.
    pub bin_dir: PathBuf,
    /// A fault every this long.
    pub fault_every: Duration,
    /// Concurrent callers.
    pub callers: usize,
    /// Longest wait for every order to settle once the load stops.
    pub settle: Duration,
    /// Which faults to inject.
    pub faults: Faults,
    /// Where to keep every service process's log lines (`<service>.log`).
    pub logs: Option<PathBuf>,
}

/// The fault mix.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// SIGKILL a service and start it again.
    pub kill: bool,
    /// SIGSTOP a service for 5 s (past every caller's deadline), then SIGCONT.
    pub stop: bool,
    /// Start payment armed to abort right after its next committed charge.
    pub payment_crash: bool,
    /// Restart PostgreSQL once, half-way (`--postgres` only).
    pub pg_restart: bool,
}

impl Faults {
    /// Parses `kill,stop,payment-crash,pg-restart` (any subset; `all`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut f = Faults {
            kill: false,
            stop: false,
            payment_crash: false,
            pg_restart: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => {
                    f = Faults {
                        kill: true,
                        stop: true,
                        payment_crash: true,
                        pg_restart: true,
                    }
                }
                "kill" => f.kill = true,
                "stop" => f.stop = true,
                "payment-crash" => f.payment_crash = true,
                "pg-restart" => f.pg_restart = true,
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (kill, stop, payment-crash, pg-restart, all)"
                    ));
                }
            }
        }
        Ok(f)
    }
}

/// One service process and how to start it again.
struct Service {
    name: &'static str,
    bin: PathBuf,
    vars: Vec<(String, String)>,
    admin: SocketAddr,
    process: Option<Process>,
    kills: u32,
    /// Started with a failpoint.
    armed: bool,
    /// Where its log lines go, if anywhere.
    log_file: Option<PathBuf>,
}

impl Service {
    fn start(&mut self, extra: &[(&str, &str)]) {
        self.armed = !extra.is_empty();
        let mut vars = self.vars.clone();
        for (k, v) in extra {
            vars.push(((*k).into(), (*v).into()));
        }
        self.process = Some(Process::start(command(
            self.bin.to_str().expect("a UTF-8 path"),
            vars,
        )));
    }

    fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let _ = std::process::Command::new("kill")
                .args([sig, &pid.to_string()])
                .status();
        }
    }

    fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
            self.kills += 1;
            self.keep_logs(&p);
        }
    }

    /// Appends a finished process's log lines to the service's log file.
    fn keep_logs(&self, p: &Process) {
        if let Some(path) = &self.log_file
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            for line in p.logs() {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    /// Restarts it if it died on its own (a failpoint).
    fn revive_if_dead(&mut self) -> bool {
        let dead = self
            .process
            .as_mut()
            .is_some_and(|p| p.try_status().is_some());
        if dead {
            if let Some(p) = self.process.take() {
                self.keep_logs(&p);
            }
            self.kills += 1;
            self.start(&[]);
        }
        dead
    }
}

fn free_addr() -> SocketAddr {
    let port = crate::ports::free_port().expect("a free port");
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Outcomes of the load, by kind.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    /// Every order id each idempotency key was answered with.
    answers: HashMap<String, Vec<String>>,
    /// Confirmed orders that may be cancelled, with their owner's token.
    confirmed: Vec<(String, String)>,
}

/// What the run saw.
#[derive(Debug, Default)]
pub struct Summary {
    /// Answers by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Kills per service (failpoint deaths included).
    pub kills: BTreeMap<String, u32>,
    /// Other faults by kind.
    pub faults: BTreeMap<String, u32>,
    /// Retries and breaker openings the order replicas reported.
    pub retries: f64,
    /// See [`Self::retries`].
    pub breaker_openings: f64,
    /// From the end of the load until every order settled.
    pub recovery: Duration,
    /// Orders checked at the end.
    pub orders: (usize, usize),
    /// Broken invariants (empty: none).
    pub violations: Vec<String>,
}

impl Summary {
    /// The summary as a table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("\n| outcome | answers |\n|---|---|\n");
        for (k, v) in &self.outcomes {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\n| service | kills |\n|---|---|\n");
        for (k, v) in &self.kills {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str("\n| fault | count |\n|---|---|\n");
        for (k, v) in &self.faults {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        out.push_str(&format!(
            "\n| figure | value |\n|---|---|\n| orders confirmed / cancelled | {} / {} |\n\
             | peer-call retries (order replicas) | {} |\n| breaker openings | {} |\n\
             | time to recover | {:.1} s |\n| violations | {} |\n",
            self.orders.0,
            self.orders.1,
            self.retries,
            self.breaker_openings,
            self.recovery.as_secs_f64(),
            self.violations.len()
        ));
        for v in &self.violations {
            out.push_str(&format!("\nVIOLATION: {v}\n"));
        }
        out
    }
}

/// The stack under test.
struct World {
    services: Vec<Service>,
    dbs: Dbs,
    order_urls: Vec<String>,
    user_url: String,
    inventory_url: String,
    _dir: tempfile::TempDir,
}

fn database_urls(opts: &Options, dir: &std::path::Path) -> Result<[String; 4], String> {
    if opts.postgres {
        let cluster = PgCluster::shared().ok_or("PostgreSQL is not installed")?;
        Ok(std::array::from_fn(|_| cluster.create_database()))
    } else {
        Ok(["user", "inventory", "payment", "order"]
            .map(|s| format!("sqlite://{}/{s}.db", dir.display())))
    }
}

fn build_world(opts: &Options) -> Result<World, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let [user_db, inventory_db, payment_db, order_db] = database_urls(opts, dir.path())?;
    let secret = auth_config().jwt_secret.expose().to_owned();
    let mut services = Vec::new();
    let mut make = |name: &'static str, db: &str, extra: Vec<(String, String)>| {
        let grpc = free_addr();
        let admin = free_addr();
        let mut vars = vec![
            ("EMPORIUM_DATABASE__URL".to_owned(), db.to_owned()),
            ("EMPORIUM_AUTH__JWT_SECRET".to_owned(), secret.clone()),
            ("EMPORIUM_SERVER__GRPC_ADDR".to_owned(), grpc.to_string()),
            ("EMPORIUM_SERVER__ADMIN_ADDR".to_owned(), admin.to_string()),
            ("EMPORIUM_SERVER__DRAIN_DELAY_MS".to_owned(), "0".to_owned()),
            // The load is many callers from one address with few users.
            (
                "EMPORIUM_SERVER__RATE_LIMIT_PER_SEC".to_owned(),
                "100000".to_owned(),
            ),
            (
                "EMPORIUM_SERVER__RATE_LIMIT_BURST".to_owned(),
                "100000".to_owned(),
            ),
        ];
        vars.extend(extra);
        services.push(Service {
            name,
            bin: opts.bin_dir.join(format!(
                "emporium-{}",
                name.trim_end_matches(['1', '2', '-'])
            )),
            vars,
            admin,
            process: None,
            kills: 0,
            armed: false,
            log_file: opts.logs.as_ref().map(|d| d.join(format!("{name}.log"))),
        });
        format!("http://{grpc}")
    };
    let user_url = make("user", &user_db, vec![]);
    let inventory_url = make("inventory", &inventory_db, vec![]);
    let payment_url = make(
        "payment",
        &payment_db,
        vec![("EMPORIUM_PAYMENT__CLAIM_LEASE_MS".into(), "1000".into())],
    );
    let saga = |peers: [&String; 3]| {
        vec![
            ("EMPORIUM_PEERS__USER__URL".to_owned(), peers[0].clone()),
            (
                "EMPORIUM_PEERS__INVENTORY__URL".to_owned(),
                peers[1].clone(),
            ),
            ("EMPORIUM_PEERS__PAYMENT__URL".to_owned(), peers[2].clone()),
            (
                "EMPORIUM_SAGA__RETRY_BUDGET_MS".to_owned(),
                "2000".to_owned(),
            ),
            ("EMPORIUM_SAGA__LEASE_MS".to_owned(), "3000".to_owned()),
            (
                "EMPORIUM_SAGA__SWEEP_INTERVAL_MS".to_owned(),
                "200".to_owned(),
            ),
            ("EMPORIUM_SAGA__MAX_PAUSE_MS".to_owned(), "2000".to_owned()),
            (
                "EMPORIUM_SAGA__CREATE_WAIT_MS".to_owned(),
                "3000".to_owned(),
            ),
        ]
    };
    let peers = [&user_url, &inventory_url, &payment_url];
    let mut order_urls = vec![make("order-1", &order_db, saga(peers))];
    if opts.postgres {
        order_urls.push(make("order-2", &order_db, saga(peers)));
    }
    Ok(World {
        services,
        dbs: Dbs {
            order: order_db,
            inventory: inventory_db,
            payment: payment_db,
        },
        order_urls,
        user_url,
        inventory_url,
        _dir: dir,
    })
}

fn channel(url: &str) -> Channel {
    Channel::from_shared(url.to_owned())
        .expect("a valid URL")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

fn admin() -> String {
    tokens()
        .issue(Uuid::now_v7(), &[Role::Admin])
        .expect("test keys sign")
        .token
}

/// Products: plenty of three, five units of a scarce one.
async fn stock_up(inventory_url: &str) -> Result<(), String> {
    let mut client =
        inv::inventory_service_client::InventoryServiceClient::new(channel(inventory_url));
    for (sku, units) in [
        ("PLENTY-1", 100_000),
        ("PLENTY-2", 100_000),
        ("PLENTY-3", 100_000),
        ("SCARCE-1", 5),
    ] {
        client
            .create_product(bearer(
                inv::CreateProductRequest {
                    sku: sku.into(),
                    name: format!("Chaos {sku}"),
                    description: String::new(),
                    unit_price: Some(emporium_proto::common::v1::Money {
                        currency_code: "EUR".into(),
                        units: 700,
                    }),
                },
                &admin(),
            ))
            .await
            .map_err(|s| format!("create {sku}: {s:?}"))?;
        client
            .adjust_stock(bearer(
                inv::AdjustStockRequest {
                    product: Some(inv::adjust_stock_request::Product::Sku(sku.into())),
                    delta: units,
                    reason: "received".into(),
                    idempotency_key: format!("chaos-stock-{sku}"),
                },
                &admin(),
            ))
            .await
            .map_err(|s| format!("stock {sku}: {s:?}"))?;
    }
    Ok(())
}

/// Signs up `n` customers; returns their ids.
async fn customers(user_url: &str, n: usize) -> Result<Vec<Uuid>, String> {
    let mut client = usr::user_service_client::UserServiceClient::new(channel(user_url));
    let mut ids = Vec::new();
    for i in 0..n {
        let user = client
            .create_user(usr::CreateUserRequest {
                email: format!("chaos-{i}-{}@example.com", Uuid::now_v7().simple()),
                name: format!("Chaos {i}"),
                password: "chaos-password-1".into(),
            })
            .await
            .map_err(|s| format!("sign-up: {s:?}"))?
            .into_inner()
            .user
            .ok_or("sign-up answered without a user")?;
        ids.push(Uuid::parse_str(&user.id).map_err(|e| e.to_string())?);
    }
    Ok(ids)
}

fn customer_token(id: Uuid) -> String {
    tokens()
        .issue(id, &[Role::Customer])
        .expect("test keys sign")
        .token
}

fn outcome(answer: &Result<ord::Order, tonic::Status>) -> String {
    match answer {
        Ok(o) => match ord::OrderStatus::try_from(o.status).unwrap_or_default() {
            ord::OrderStatus::Cancelled => format!(
                "cancelled {}",
                ord::CancelReason::try_from(o.cancel_reason)
                    .map(|r| r
                        .as_str_name()
                        .trim_start_matches("CANCEL_REASON_")
                        .to_owned())
                    .unwrap_or_default()
            ),
            s => s
                .as_str_name()
                .trim_start_matches("ORDER_STATUS_")
                .to_lowercase(),
        },
        Err(s) => format!("error {:?}", s.code()),
    }
}

/// One caller's loop until `until`.
async fn caller(
    worker: usize,
    seed: u64,
    order_urls: Vec<String>,
    users: Vec<Uuid>,
    until: Instant,
    tally: Arc<Mutex<Tally>>,
) {
    // Seeded: the run is reproducible from its seed.
    let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(worker as u64 * 7919));
    let clients: Vec<_> = order_urls
        .iter()
        .map(|u| ord::order_service_client::OrderServiceClient::new(channel(u)))
        .collect();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let user = users[rng.usize(..users.len())];
        let token = customer_token(user);
        let mut client = clients[rng.usize(..clients.len())].clone();
        let roll = rng.usize(..100);
        let (sku, qty, card) = match roll {
            0..=54 => (
                format!("PLENTY-{}", 1 + rng.usize(..3)),
                1 + rng.usize(..3),
                "pm_card_ok",
            ),
            55..=64 => ("PLENTY-1".into(), 1, "pm_card_declined"),
            65..=69 => ("PLENTY-2".into(), 1, "pm_card_error"),
            70..=84 => ("SCARCE-1".into(), 1 + rng.usize(..2), "pm_card_ok"),
            _ => ("PLENTY-3".into(), 1, "pm_card_ok"),
        };
        if (85..=92).contains(&roll) {
            // Cancel a confirmed order, if there is one.
            let pick = {
                let mut t = tally.lock().unwrap();
                let len = t.confirmed.len();
                (len > 0).then(|| t.confirmed.swap_remove(rng.usize(..len)))
            };
            if let Some((id, owner)) = pick {
                let mut req = bearer(
                    ord::CancelOrderRequest {
                        order_id: id,
                        reason: "chaos".into(),
                    },
                    &owner,
                );
                req.set_timeout(Duration::from_secs(4));
                let answer = client
                    .cancel_order(req)
                    .await
                    .map(|r| r.into_inner().order.unwrap_or_default());
                let kind = format!("cancel: {}", outcome(&answer));
                *tally.lock().unwrap().outcomes.entry(kind).or_default() += 1;
                continue;
            }
        }
        let key = format!("chaos-{seed}-{worker}-{n}");
        let request = ord::CreateOrderRequest {
            user_id: String::new(),
            items: vec![ord::CreateOrderItem {
                sku,
                quantity: qty as i64,
            }],
            payment_method: card.into(),
            idempotency_key: key.clone(),
        };
        // Duplicates: the same submission twice at once (and to either replica).
        let copies = if roll >= 93 { 2 } else { 1 };
        let mut calls = Vec::new();
        for _ in 0..copies {
            let mut client = clients[rng.usize(..clients.len())].clone();
            let mut req = bearer(request.clone(), &token);
            req.set_timeout(Duration::from_secs(4));
            calls.push(tokio::spawn(async move {
                client
                    .create_order(req)
                    .await
                    .map(|r| r.into_inner().order.unwrap_or_default())
            }));
        }
        let mut failed = false;
        for call in calls {
            let answer = call
                .await
                .unwrap_or_else(|e| Err(tonic::Status::internal(e.to_string())));
            failed |= answer.is_err();
            let mut t = tally.lock().unwrap();
            *t.outcomes.entry(outcome(&answer)).or_default() += 1;
            if let Ok(o) = &answer {
                t.answers.entry(key.clone()).or_default().push(o.id.clone());
                if o.status == ord::OrderStatus::Confirmed as i32 {
                    t.confirmed.push((o.id.clone(), token.clone()));
                }
            }
        }
        let _ = &mut client;
        if failed {
            // The service is away: a caller that got no answer waits a moment,
            // as a client with backoff would.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Sums a counter over a Prometheus text page.
fn counter(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn scrape(admin: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.ok()?;
        s.write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(Duration::from_secs(1), fetch)
        .await
        .ok()
        .flatten()
}

/// Runs the whole thing.
pub async fn run(opts: Options) -> Result<Summary, String> {
    if let Some(dir) = &opts.logs {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let world = build_world(&opts)?;
    let World {
        services,
        dbs,
        order_urls,
        user_url,
        inventory_url,
        _dir,
    } = world;
    let services = Arc::new(Mutex::new(services));
    {
        let services = services.clone();
        tokio::task::spawn_blocking(move || {
            for s in services.lock().unwrap().iter_mut() {
                s.start(&[]);
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    stock_up(&inventory_url).await?;
    let users = customers(&user_url, 8).await?;

    let started = Instant::now();
    let until = started + opts.duration;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut callers = Vec::new();
    for w in 0..opts.callers {
        callers.push(tokio::spawn(caller(
            w,
            opts.seed,
            order_urls.clone(),
            users.clone(),
            until,
            tally.clone(),
        )));
    }

    let mut summary = Summary::default();
    let mut rng = fastrand::Rng::with_seed(opts.seed ^ 0xC0FF_EE00);
    let mut next_fault = Instant::now() + opts.fault_every;
    let mut fault_no = 0u32;
    let mut order_metrics: HashMap<usize, (f64, f64)> = HashMap::new();
    let (mut retries, mut openings) = (0.0, 0.0);
    let mut pg_restarted = !(opts.postgres && opts.faults.pg_restart);
    let mut in_effect = String::from("none");
    let mut stopped: Option<(usize, Instant)> = None;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut next_log = 0.0;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        // Metrics of the order replicas, summed across their restarts.
        let admins: Vec<(usize, SocketAddr)> = services
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name.starts_with("order"))
            .map(|(i, s)| (i, s.admin))
            .collect();
        for (i, admin) in admins {
            if let Some(page) = scrape(admin).await {
                let now = (
                    counter(&page, "rpc_client_retries_total"),
                    counter(&page, "rpc_client_breaker_openings_total"),
                );
                let last = order_metrics.entry(i).or_insert((0.0, 0.0));
                retries += (now.0 - last.0).max(0.0);
                openings += (now.1 - last.1).max(0.0);
                *last = now;
            }
        }
        // A paused process is woken after 5 s: past the callers' deadlines
        // (4 s for the load, 2 s per saga step).
        if let Some((i, since)) = stopped
            && since.elapsed() >= Duration::from_secs(5)
        {
            services.lock().unwrap()[i].signal("-CONT");
            stopped = None;
            in_effect = "none".into();
        }
        // Failpoint deaths are restarted at once.
        {
            let services = services.clone();
            let revived = tokio::task::spawn_blocking(move || {
                services
                    .lock()
                    .unwrap()
                    .iter_mut()
                    .filter_map(|s| s.revive_if_dead().then_some(s.name))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for name in revived {
                *summary
                    .faults
                    .entry(format!("{name} died at its failpoint"))
                    .or_default() += 1;
            }
        }
        if !pg_restarted && started.elapsed() >= opts.duration / 2 {
            pg_restarted = true;
            in_effect = "PostgreSQL restarting".into();
            let cluster = PgCluster::shared().ok_or("PostgreSQL vanished")?;
            tokio::task::spawn_blocking(move || cluster.restart())
                .await
                .map_err(|e| e.to_string())??;
            *summary
                .faults
                .entry("PostgreSQL restarted".into())
                .or_default() += 1;
        }
        if Instant::now() >= next_fault && stopped.is_none() {
            next_fault += opts.fault_every;
            fault_no += 1;
            let count = services.lock().unwrap().len();
            // Every service in turn, in an order the seed shuffles.
            let victim = (fault_no as usize + rng.usize(..count)) % count;
            let name = services.lock().unwrap()[victim].name;
            if opts.faults.stop && (fault_no.is_multiple_of(5) || !opts.faults.kill) {
                services.lock().unwrap()[victim].signal("-STOP");
                stopped = Some((victim, Instant::now()));
                in_effect = format!("{name} stopped (SIGSTOP)");
                *summary
                    .faults
                    .entry(format!("SIGSTOP {name} for 5 s"))
                    .or_default() += 1;
            } else {
                let armed = name == "payment" && fault_no.is_multiple_of(3);
                let services = services.clone();
                let pause = Duration::from_millis(200 + rng.usize(..1_000) as u64);
                in_effect = format!("{name} killed");
                tokio::task::spawn_blocking(move || {
                    services.lock().unwrap()[victim].kill();
                    std::thread::sleep(pause);
                    let extra: &[(&str, &str)] = if armed {
                        &[("EMPORIUM_PAYMENT__CRASH_AFTER", "charge_committed")]
                    } else {
                        &[]
                    };
                    services.lock().unwrap()[victim].start(extra);
                })
                .await
                .map_err(|e| e.to_string())?;
                if armed {
                    *summary
                        .faults
                        .entry("payment armed to die after its next commit".into())
                        .or_default() += 1;
                }
            }
        }
        let (done, kills) = {
            let t = tally.lock().unwrap();
            let done: u64 = t.outcomes.values().sum();
            let kills: Vec<String> = services
                .lock()
                .unwrap()
                .iter()
                .map(|s| format!("{}:{}", s.name, s.kills))
                .collect();
            (done, kills.join(" "))
        };
        // One live line on a terminal; a line every 10 s in a log.
        let elapsed = started.elapsed().as_secs_f64();
        let line = format!("{elapsed:>5.1}s  answers {done:>5}  kills {kills}  fault: {in_effect}");
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if elapsed >= next_log {
            next_log += 10.0;
            eprintln!("{line}");
        }
    }
    if tty {
        eprintln!();
    }
    for c in callers {
        let _ = c.await;
    }
    // Everything up and unarmed again, then wait for the sagas to settle.
    if let Some((i, _)) = stopped {
        services.lock().unwrap()[i].signal("-CONT");
    }
    {
        let services = services.clone();
        tokio::task::spawn_blocking(move || {
            for s in services.lock().unwrap().iter_mut() {
                s.revive_if_dead();
                if s.armed {
                    // Disarmed for the check: not a fault.
                    if let Some(mut p) = s.process.take() {
                        p.kill();
                    }
                    s.start(&[]);
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let load_end = Instant::now();
    let checked = tokio::spawn({
        let dbs = dbs.clone();
        let settle = opts.settle;
        async move { check_invariants(&dbs, settle).await }
    })
    .await;
    // From the moment the load stopped (its last callers may still have been
    // waiting for answers) until every order was settled and checked.
    summary.recovery = Instant::now().duration_since(until.min(load_end));
    match checked {
        Ok(totals) => summary.orders = (totals.confirmed, totals.cancelled),
        Err(e) => {
            let text = e
                .try_into_panic()
                .ok()
                .and_then(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                })
                .unwrap_or_else(|| "the invariant check failed".into());
            summary.violations.push(text);
        }
    }
    let t = tally.lock().unwrap();
    for (key, ids) in &t.answers {
        if ids.iter().any(|id| id != &ids[0]) {
            summary.violations.push(format!(
                "key {key} was answered with different orders: {ids:?}"
            ));
        }
    }
    summary.outcomes = t.outcomes.clone();
    for s in services.lock().unwrap().iter() {
        summary.kills.insert(s.name.to_owned(), s.kills);
    }
    summary.retries = retries;
    summary.breaker_openings = openings;
    if opts.logs.is_some() {
        for s in services.lock().unwrap().iter() {
            if let Some(p) = &s.process {
                s.keep_logs(p);
            }
        }
    }
    Ok(summary)
}
