//! `emporium`: parse the command line, run it on a small runtime, print any
//! failure as `error: <code>: <message>` and exit 1.

use std::process::ExitCode;

use clap::Parser;
use emporium_cli::{Cli, CliError};

fn main() -> ExitCode {
    // On a bad flag or `--help`, clap prints and exits itself (2 for usage errors).
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Usage(format!("cannot start the runtime: {e}"))),
    };
    match runtime.block_on(emporium_cli::run(cli)) {
        Ok(()) | Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &CliError) -> ExitCode {
    eprint!("{}", e.report());
    ExitCode::from(1)
}
