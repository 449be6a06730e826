//! `emporium-inventory`: parse config, start telemetry, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-inventory", |config, shutdown| {
        emporium_inventory::run(config, shutdown)
    })
    .await
}
