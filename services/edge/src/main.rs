//! `emporium-edge`: the shared service `main` (config, telemetry, serve until
//! SIGTERM/SIGINT).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-edge", emporium_edge::serve).await
}
