//! `emporium-payment`: parse config, start telemetry, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use emporium_common::{config, server::shutdown_signal, telemetry};
use emporium_payment::Config;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match config::Args::from_env() {
        Ok(args) if args.help => {
            println!("{}", config::Args::usage("emporium-payment"));
            return ExitCode::SUCCESS;
        }
        Ok(args) => args,
        Err(e) => return fail(&e),
    };
    let config = match config::load(Config::default(), &args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if args.print_config {
        println!("{}", config::redacted_json(&config));
        return ExitCode::SUCCESS;
    }
    let _telemetry = telemetry::init(&config.telemetry);
    config::warn_if_dev_secret(&config.auth);
    match emporium_payment::run(config, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
    }
}

fn fail(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("emporium-payment: {e}");
    ExitCode::from(2)
}
