//! `emporium-payment`: parse config, start telemetry, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-payment", |config, shutdown| {
        emporium_payment::run(config, shutdown)
    })
    .await
}
