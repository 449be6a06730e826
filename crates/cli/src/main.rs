//! `emporium`: parse the command line, run it on a small runtime, print any
//! failure as `error: <code>: <message>` and exit 1.

use std::process::ExitCode;

use clap::Parser;
use emporium_cli::{Cli, CliError};

fn main() -> ExitCode {
    // On a bad flag or `--help`, clap prints and exits itself (2 for usage errors).
    let cli = Cli::parse();
    // One worker: it drives the span exporter while the guard flushes at the end.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Usage(format!("cannot start the runtime: {e}"))),
    };
    let result = runtime.block_on(async {
        let _telemetry = emporium_common::telemetry::init_client("emporium-cli");
        emporium_cli::run(cli).await
    });
    match result {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprint!("{}", e.report());
    ExitCode::from(1)
}
