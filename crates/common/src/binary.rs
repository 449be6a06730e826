//! The `main` every service binary shares, and its command line:
//!
//! ```text
//! emporium-<svc> [--config FILE] [--print-config]      serve until SIGTERM/SIGINT
//! emporium-<svc> health [--addr HOST:PORT] [--service NAME]   probe a running one
//! ```
//!
//! Serving: arguments → configuration → telemetry → bind → the service's
//! `serve` until a signal. A bad setting exits 2 with one line naming it.
//! `health` asks `grpc.health.v1` on the configured gRPC address (or `--addr`)
//! and exits 0 only for SERVING: the container HEALTHCHECK, with nothing to
//! download and no shell needed.

use std::{
    future::Future,
    io::Write as _,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    pin::Pin,
    process::ExitCode,
    time::Duration,
};

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use serde::Serialize;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    BoxError,
    config::{self, BaseConfig, FromLayers, Validate},
    server::{Listeners, shutdown_signal},
    telemetry,
};

/// What a service's `Config` offers the shared `main`.
pub trait ServiceConfig: Serialize + FromLayers + Validate + Default {
    /// The blocks every service has.
    fn base(&self) -> &BaseConfig;

    /// Whether this process signs or verifies tokens with the `auth` keys, so
    /// that production must be given real ones. A process that only forwards
    /// its callers' tokens (the edge) holds no key worth refusing.
    fn uses_auth_keys(&self) -> bool {
        true
    }
}

/// The shutdown future handed to a service: SIGTERM or SIGINT.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, Parser)]
#[command(
    about = "An Emporium service.",
    long_about = "An Emporium service. Settings come from defaults, then FILE (or $EMPORIUM_CONFIG), \
                  then EMPORIUM_* variables (nested keys joined by `__`, e.g. \
                  EMPORIUM_SERVER__GRPC_ADDR); --print-config shows them all."
)]
struct Cli {
    /// A TOML file of settings, between the defaults and the EMPORIUM_* variables.
    #[arg(long, value_name = "FILE", env = "EMPORIUM_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask a running service's gRPC health; exit 0 when SERVING, 1 otherwise.
    Health(HealthArgs),
}

#[derive(Debug, clap::Args)]
struct HealthArgs {
    /// The gRPC address to ask [default: the configured server.grpc_addr, with
    /// an unspecified address (0.0.0.0, ::) asked on loopback].
    #[arg(long, value_name = "HOST:PORT")]
    addr: Option<SocketAddr>,
    /// The health service name: empty for the whole server, `liveness` for a
    /// liveness probe that stays SERVING while draining.
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for the answer.
    #[arg(long, value_name = "MS", default_value_t = 2_000)]
    timeout_ms: u64,
}

/// Runs a service binary named `binary`: `serve` gets the configuration, the
/// bound listeners and the shutdown future.
pub async fn main<C, F, Fut, E>(binary: &'static str, serve: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(C, Listeners, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Into<BoxError>,
{
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("{binary}: {e}");
        ExitCode::from(2)
    };
    let cli = match Cli::command()
        .name(binary)
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let loaded = match config::load(C::default(), cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    let config = loaded.config;
    if cli.print_config {
        // A closed pipe (`| head`) is not worth a panic.
        let _ = writeln!(std::io::stdout(), "{}", config::redacted_json(&config));
        return ExitCode::SUCCESS;
    }
    if let Some(Command::Health(args)) = cli.command {
        return health(binary, config.base(), &args).await;
    }
    let development_keys = if config.uses_auth_keys() {
        match config.base().check_development_keys() {
            Ok(keys) => keys,
            Err(e) => return fail(&e),
        }
    } else {
        Vec::new()
    };
    let service = binary.strip_prefix("emporium-").unwrap_or(binary);
    let _telemetry = telemetry::init(&config.base().telemetry, service);
    for name in &loaded.unknown {
        tracing::warn!(variable = %name, "ignoring {name}: this service has no such setting");
    }
    if config.base().dev_mode {
        tracing::warn!(
            keys = ?development_keys,
            "DEVELOPMENT MODE (EMPORIUM_DEV_MODE): built-in development keys are allowed; \
             never run this way in production"
        );
    }
    let listeners = match Listeners::bind(&config.base().server).await {
        Ok(l) => l,
        Err(e) => return fail(&e),
    };
    tracing::info!(
        grpc = %listeners.grpc_addr(),
        admin = %listeners.admin_addr(),
        "{binary} listening"
    );
    match serve(config, listeners, Box::pin(shutdown_signal())).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&crate::status::chain(&*e.into())),
    }
}

/// The `health` subcommand.
async fn health(binary: &str, base: &BaseConfig, args: &HealthArgs) -> ExitCode {
    let mut addr = args.addr.unwrap_or(base.server.grpc_addr);
    if addr.ip().is_unspecified() {
        addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    let answer = tokio::time::timeout(timeout, check(base, addr, &args.service)).await;
    match answer {
        Ok(Ok(ServingStatus::Serving)) => {
            println!("{binary} at {addr}: SERVING");
            ExitCode::SUCCESS
        }
        Ok(Ok(status)) => {
            println!("{binary} at {addr}: {}", status.as_str_name());
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            println!("{binary} at {addr}: {e}");
            ExitCode::from(1)
        }
        Err(_) => {
            println!(
                "{binary} at {addr}: no answer within {} ms",
                args.timeout_ms
            );
            ExitCode::from(1)
        }
    }
}

async fn check(
    base: &BaseConfig,
    addr: SocketAddr,
    service: &str,
) -> Result<ServingStatus, BoxError> {
    let tls = &base.server.tls;
    let scheme = if tls.enabled { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if tls.enabled {
        // The probe presents the service's own certificate, which its CA signed:
        // a server that requires client certificates accepts it.
        endpoint = endpoint.tls_config(tls.probe_tls_config()?)?;
    }
    let channel = endpoint.connect().await?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?;
    Ok(answer.into_inner().status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_parses() {
        let cli =
            Cli::try_parse_from(["emporium-user", "--config", "x.toml", "--print-config"]).unwrap();
        assert_eq!(cli.config.unwrap(), PathBuf::from("x.toml"));
        assert!(cli.print_config);
        assert!(cli.command.is_none());
        let cli = Cli::try_parse_from([
            "emporium-user",
            "health",
            "--addr",
            "127.0.0.1:50051",
            "--service",
            "liveness",
        ])
        .unwrap();
        let Some(Command::Health(h)) = cli.command else {
            panic!("health expected")
        };
        assert_eq!(h.addr.unwrap().port(), 50051);
        assert_eq!(h.service, "liveness");
        assert!(Cli::try_parse_from(["emporium-user", "--bogus"]).is_err());
    }
}
