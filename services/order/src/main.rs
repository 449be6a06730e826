//! `emporium-order`: the shared service `main` (config, telemetry, serve until
//! SIGTERM/SIGINT; `health` to probe a running one).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-order", emporium_order::serve).await
}
