//! `emporium-chaos`: see [`emporium_testkit::chaos`]. Exits 1 on any violation.

use std::{path::PathBuf, time::Duration};

use clap::Parser;
use emporium_testkit::chaos::{Faults, Options, run};

/// Runs the four services as real processes under a mixed load while killing,
/// pausing and failing them, then checks every invariant.
#[derive(Debug, Parser)]
#[command(name = "emporium-chaos", version)]
struct Args {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of load and faults.
    #[arg(long, default_value_t = 120)]
    seconds: u64,
    /// PostgreSQL (a throwaway cluster) with two order replicas.
    #[arg(long)]
    postgres: bool,
    /// Where the service binaries (built with the `testing` feature) are.
    #[arg(long, default_value = "target/chaos/debug")]
    bin_dir: PathBuf,
    /// Milliseconds between faults.
    #[arg(long, default_value_t = 3_000)]
    fault_every_ms: u64,
    /// Concurrent callers.
    #[arg(long, default_value_t = 8)]
    callers: usize,
    /// Longest wait, in seconds, for every order to settle after the load.
    #[arg(long, default_value_t = 120)]
    settle_seconds: u64,
    /// The fault mix: any of kill, stop, payment-crash, pg-restart, or all.
    #[arg(long, default_value = "all", value_parser = Faults::parse)]
    faults: Faults,
    /// Keep every service process's log lines in this directory.
    #[arg(long)]
    logs: Option<PathBuf>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let opts = Options {
        seed: args.seed,
        duration: Duration::from_secs(args.seconds),
        postgres: args.postgres,
        bin_dir: args.bin_dir,
        fault_every: Duration::from_millis(args.fault_every_ms),
        callers: args.callers,
        settle: Duration::from_secs(args.settle_seconds),
        faults: args.faults,
        logs: args.logs,
    };
    let backend = if opts.postgres {
        "PostgreSQL, two order replicas"
    } else {
        "SQLite"
    };
    eprintln!(
        "chaos: seed {}, {} s, {backend}, a fault every {} ms",
        opts.seed, args.seconds, args.fault_every_ms
    );
    match run(opts).await {
        Ok(summary) => {
            println!("{}", summary.render());
            if !summary.violations.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("chaos: could not run: {e}");
            std::process::exit(2);
        }
    }
}
