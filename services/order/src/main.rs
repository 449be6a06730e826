//! `emporium-order`: parse config, start telemetry, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-order", |config, shutdown| {
        emporium_order::run(config, shutdown)
    })
    .await
}
