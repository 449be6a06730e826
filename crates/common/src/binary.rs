//! The `main` every service binary shares: arguments → configuration →
//! telemetry → serve until SIGTERM/SIGINT. A bad setting exits 2 with one line.

use std::{future::Future, pin::Pin, process::ExitCode};

use serde::{Serialize, de::DeserializeOwned};

use crate::{
    config::{self, AuthConfig, TelemetryConfig, Validate},
    server::shutdown_signal,
    telemetry,
};

/// What a service's `Config` offers the shared `main`.
pub trait ServiceConfig: Serialize + DeserializeOwned + Validate + Default {
    /// Logging settings.
    fn telemetry(&self) -> &TelemetryConfig;
    /// Token settings.
    fn auth(&self) -> &AuthConfig;
}

/// The shutdown future handed to a service: SIGTERM or SIGINT.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs a service binary named `binary`; `run` binds and serves until the
/// shutdown future completes.
pub async fn main<C, F, Fut, E>(binary: &str, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{binary}: {e}");
        ExitCode::from(2)
    };
    let args = match config::Args::from_env() {
        Ok(args) if args.help => {
            println!("{}", config::Args::usage(binary));
            return ExitCode::SUCCESS;
        }
        Ok(args) => args,
        Err(e) => return fail(&e),
    };
    let config = match config::load(C::default(), &args) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if args.print_config {
        println!("{}", config::redacted_json(&config));
        return ExitCode::SUCCESS;
    }
    let service = binary.strip_prefix("emporium-").unwrap_or(binary);
    let _telemetry = telemetry::init(config.telemetry(), service);
    config::warn_if_dev_secret(config.auth());
    match run(config, Box::pin(shutdown_signal())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}
