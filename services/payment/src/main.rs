//! `emporium-payment`: the shared service `main` (config, telemetry, serve
//! until SIGTERM/SIGINT; `health` to probe a running one).

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    emporium_common::binary::main("emporium-payment", emporium_payment::serve).await
}
