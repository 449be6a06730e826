//! `emporium-user`: parse config, start telemetry, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-user", |config, shutdown| {
        emporium_user::run(config, shutdown)
    })
    .await
}
