//! `emporium-bench`: Emporium's load generator. It starts a bare tonic echo
//! server and the five release binaries on one CPU, drives them from the
//! other, and reports each scenario against the echo server measured in the
//! same run: throughput, latency percentiles, server CPU per call and memory.
//! `make bench` runs the standard set and rewrites docs/performance.md.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use clap::{Parser, Subcommand};

use emporium_bench::{
    echo, load,
    load::Outcome,
    procs,
    report::{Cell, Report, Run},
    scenarios,
    scenarios::Scenario,
    world,
    world::{Backend, Setup, World},
};

#[derive(Debug, Parser)]
#[command(
    name = "emporium-bench",
    about = "Load generator: every scenario against a bare tonic server in the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenarios, comma-separated (echo, health, get-user, list-products,
    /// create-order, edge-get, grpc-get, mixed); echo is always measured.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "health,get-user,list-products,create-order,edge-get,grpc-get,mixed"
    )]
    scenarios: Vec<String>,
    /// Seconds of load per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// At most this many calls per run.
    #[arg(long, default_value_t = u64::MAX)]
    max_calls: u64,
    /// Concurrent callers (closed loop).
    #[arg(long, default_value_t = 32)]
    callers: usize,
    /// Connections per process the callers share.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Open loop at this many calls per second instead of the closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// Runs per cell (the report gives medians).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Customers to sign up (callers spread over them).
    #[arg(long, default_value_t = 64)]
    customers: usize,
    /// Where the service binaries are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Also measure create-order on this PostgreSQL server
    /// (`postgres://user@host:port`; the bench creates its databases).
    #[arg(long)]
    postgres: Option<String>,
    /// The overload run: create-order open loop at ½, 1, 2 and 4 times the
    /// closed loop's throughput.
    #[arg(long)]
    overload: bool,
    /// CPUs of the processes under test (`taskset -c`); empty: no pinning.
    #[arg(long, default_value = "0")]
    service_cpus: String,
    /// CPUs of the load generator.
    #[arg(long, default_value = "1")]
    bench_cpus: String,
    /// Run echo and this scenario back to back and print the ratios.
    #[arg(long)]
    compare: Option<String>,
    /// A setting for every service under test, as `NAME=VALUE` (repeatable;
    /// e.g. `EMPORIUM_TELEMETRY__ACCESS_LOG=false`), to measure what it costs.
    /// The services otherwise start with a clean environment.
    #[arg(long = "service-env", value_name = "NAME=VALUE", value_parser = parse_env)]
    service_env: Vec<(String, String)>,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Rewrite the table in this Markdown file (between its bench markers).
    #[arg(long)]
    doc: Option<PathBuf>,
    /// Write the SVG picture here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// A quick pass of every scenario: 1 s runs, once each, 8 customers.
    #[arg(long)]
    smoke: bool,
    /// Measure nothing: write the table and the picture from a report saved
    /// with --json (to change how they look without measuring again).
    #[arg(long, value_name = "REPORT")]
    from_json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The bare tonic server the bench starts as its ceiling.
    #[command(hide = true)]
    ServeEcho {
        #[arg(long)]
        addr: SocketAddr,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Some(Command::ServeEcho { addr }) = cli.command {
        return match runtime.block_on(echo::serve(addr)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("emporium-bench serve-echo: {e}");
                ExitCode::from(2)
            }
        };
    }
    if cli.smoke {
        cli.seconds = cli.seconds.min(1.0);
        cli.repeats = 1;
        cli.customers = cli.customers.min(8);
    }
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emporium-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A progress line on stderr, rewritten in place on a terminal.
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let line = format!("[{}/{}] {what}", self.done, self.total);
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    if let Some(path) = &cli.from_json {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let report: Report =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        return write_out(&cli, &report);
    }
    let mut scenarios: Vec<Scenario> = cli
        .scenarios
        .iter()
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    if let Some(other) = &cli.compare {
        scenarios = vec![other.parse()?];
    }
    scenarios.retain(|s| *s != Scenario::Echo);
    scenarios.insert(0, Scenario::Echo);
    let pin = !cli.service_cpus.is_empty();
    if pin {
        procs::pin_self(&cli.bench_cpus)?;
    }
    let pinning = if pin {
        format!(
            "processes under test on CPU {}, load generator on CPU {}",
            cli.service_cpus, cli.bench_cpus
        )
    } else {
        "not pinned".to_owned()
    };
    let mut backends = vec![Backend::Sqlite];
    if let Some(url) = &cli.postgres {
        backends.push(Backend::Postgres(url.clone()));
    }
    let overload_steps = if cli.overload { 4 } else { 0 };
    let mut progress = Progress {
        total: (scenarios.len() + usize::from(cli.postgres.is_some()) + overload_steps)
            * cli.repeats
            + backends.len(),
        done: 0,
        tty: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let bench_bin = std::env::current_exe().map_err(|e| e.to_string())?;
    let duration = Duration::from_secs_f64(cli.seconds);
    let mut report = Report {
        machine: procs::machine(),
        command: command_line(),
        pinning,
        repeats: cli.repeats,
        cells: Vec::new(),
        rss_idle: BTreeMap::new(),
        start_ms: BTreeMap::new(),
    };
    let mut run_no = 0u64;
    for backend in backends {
        progress.step(&format!("starting the stack ({})", backend.name()));
        let setup = Setup {
            bin_dir: cli.bin_dir.clone(),
            bench_bin: bench_bin.clone(),
            backend: backend.clone(),
            cpus: pin.then(|| cli.service_cpus.clone()),
            customers: cli.customers,
            service_env: cli.service_env.clone(),
        };
        let world = world::start(&setup).await?;
        let on_pg = matches!(backend, Backend::Postgres(_));
        if !on_pg {
            for (name, rss) in &world.idle_rss {
                report.rss_idle.insert(name.clone(), *rss);
            }
            for (name, took) in &world.restart_times {
                report
                    .start_ms
                    .insert(name.clone(), took.as_secs_f64() * 1000.0);
            }
        }
        let cells: Vec<Scenario> = if on_pg {
            vec![Scenario::CreateOrder]
        } else {
            scenarios.clone()
        };
        for scenario in cells {
            let load = match cli.rate {
                Some(rate) => format!("open, {rate:.0}/s"),
                None => format!("closed, {} callers", cli.callers),
            };
            let mut cell = Cell {
                scenario: scenario.name().into(),
                backend: backend.name().into(),
                load,
                offered: None,
                runs: Vec::new(),
            };
            for r in 0..cli.repeats {
                progress.step(&format!(
                    "{} ({}) run {}/{}",
                    scenario.name(),
                    backend.name(),
                    r + 1,
                    cli.repeats
                ));
                run_no += 1;
                let call = scenarios::call(scenario, &world, cli.connections, run_no).await;
                // Warm up connections, caches and the allocator, unmeasured.
                load::closed(cli.callers, Duration::from_millis(300), 2_000, call.clone()).await;
                let outcome = measure(&world, scenario, || async {
                    match cli.rate {
                        Some(rate) => load::open(rate, duration, cli.max_calls, 50_000, call).await,
                        None => load::closed(cli.callers, duration, cli.max_calls, call).await,
                    }
                })
                .await;
                cell.runs.push(outcome);
            }
            report.cells.push(cell);
        }
        if cli.overload && !on_pg {
            overload(
                &cli,
                &world,
                &mut report,
                &mut progress,
                &mut run_no,
                duration,
            )
            .await;
        }
    }
    progress.finish();
    println!("{}", report.markdown());
    if let Some(other) = &cli.compare {
        compare(&report, other);
    }
    if let Some(path) = &cli.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    write_out(&cli, &report)
}

/// The command as a reader would type it: the program by name, paths
/// relative to the current directory, and no throwaway PostgreSQL port.
fn command_line() -> String {
    let here = std::env::current_dir()
        .map(|d| format!("{}/", d.display()))
        .unwrap_or_default();
    let mut args: Vec<String> = vec!["emporium-bench".into()];
    let mut raw = std::env::args().skip(1);
    while let Some(arg) = raw.next() {
        if arg == "--postgres" {
            raw.next();
            args.push("--postgres URL".into());
        } else {
            let arg = match arg.strip_prefix(&here) {
                Some(relative) if !here.is_empty() => relative.to_owned(),
                _ => arg,
            };
            args.push(arg);
        }
    }
    args.join(" ")
}

/// The table into the doc and the picture, where asked.
fn write_out(cli: &Cli, report: &Report) -> Result<(), String> {
    if let Some(path) = &cli.doc {
        report.write_doc(path)?;
    }
    if let Some(path) = &cli.svg {
        report.write_svg(path)?;
    }
    Ok(())
}

/// Runs the load, and reads CPU and memory of the processes it costs.
async fn measure<F, Fut>(world: &World, scenario: Scenario, load: F) -> Run
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let procs: Vec<&procs::Proc> = scenario
        .processes()
        .iter()
        .map(|n| {
            if *n == "echo" {
                &world.echo
            } else {
                world.service(n)
            }
        })
        .collect();
    let pids: Vec<(String, u32)> = procs.iter().map(|p| (p.name.clone(), p.pid())).collect();
    let before: Vec<Duration> = procs.iter().map(|p| p.cpu()).collect();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let pids = pids.clone();
        tokio::spawn(async move {
            let mut peak: BTreeMap<String, u64> = BTreeMap::new();
            while sampling.load(Ordering::Relaxed) {
                for (name, pid) in &pids {
                    let rss = procs::rss(*pid);
                    let e = peak.entry(name.clone()).or_default();
                    *e = (*e).max(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let outcome = load().await;
    sampling.store(false, Ordering::Relaxed);
    let rss_peak = sampler.await.unwrap_or_default();
    let ok = outcome.ok.len().max(1) as f64;
    let cpu_us = procs
        .iter()
        .zip(before)
        .map(|(p, b)| {
            (
                p.name.clone(),
                p.cpu().saturating_sub(b).as_secs_f64() * 1e6 / ok,
            )
        })
        .collect();
    let h = &outcome.ok;
    Run {
        throughput: outcome.goodput(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        errors: outcome.errors.clone(),
        sent: outcome.sent,
        cpu_us,
        rss_peak,
    }
}

/// create-order at ½, 1, 2 and 4 times what the closed loop served.
async fn overload(
    cli: &Cli,
    world: &World,
    report: &mut Report,
    progress: &mut Progress,
    run_no: &mut u64,
    duration: Duration,
) {
    let peak = report
        .cells
        .iter()
        .find(|c| c.scenario == "create-order" && c.backend == "sqlite")
        .map_or(200.0, |c| c.median().throughput)
        .max(10.0);
    for factor in [0.5, 1.0, 2.0, 4.0] {
        let rate = peak * factor;
        let mut cell = Cell {
            scenario: "create-order".into(),
            backend: "sqlite".into(),
            load: format!("open, {rate:.0}/s ({factor}× peak)"),
            offered: Some(rate),
            runs: Vec::new(),
        };
        for r in 0..cli.repeats {
            progress.step(&format!(
                "overload {factor}× ({rate:.0}/s) run {}/{}",
                r + 1,
                cli.repeats
            ));
            *run_no += 1;
            let call =
                scenarios::call(Scenario::CreateOrder, world, cli.connections, *run_no).await;
            let outcome = measure(world, Scenario::CreateOrder, || async {
                load::open(rate, duration, cli.max_calls, 20_000, call).await
            })
            .await;
            cell.runs.push(outcome);
        }
        report.cells.push(cell);
    }
}

fn compare(report: &Report, other: &str) {
    let find = |name: &str| {
        report
            .cells
            .iter()
            .find(|c| c.scenario == name && c.offered.is_none())
            .map(Cell::median)
    };
    if let (Some(echo), Some(m)) = (find("echo"), find(other)) {
        println!(
            "{other} against echo: CPU per call {:.2}×, throughput {:.2}×, p50 {:.2}×, p99 {:.2}×",
            m.cpu_us / echo.cpu_us.max(1e-9),
            m.throughput / echo.throughput.max(1e-9),
            m.p50 as f64 / echo.p50.max(1) as f64,
            m.p99 as f64 / echo.p99.max(1) as f64,
        );
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}
