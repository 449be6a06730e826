//! `emporium`, the command line for people who use Emporium: sign up, log in,
//! manage the catalogue and stock, place, read, cancel and watch orders, and run
//! a narrated end-to-end demo against a running stack.
//!
//! It is a thin client: every rule lives in the services, which it reaches over
//! gRPC with the generated clients of `emporium-proto`. It is not a library for
//! programs (call the services directly) and it keeps no state but the access
//! token that `emporium login` stores.
//!
//! Reading order: [`cli`] (flags and subcommands) → [`session`] (endpoints,
//! channels, the token file) → [`commands`] (one function per subcommand) →
//! [`format`] (money, times, tables, order lines) → [`error`] (how failures are
//! printed) → [`demo`] (the scripted story) → [`certs`] (`dev-certs`, local only).

/// Writes one line to stdout, turning a closed pipe (`emporium order list | head`)
/// into [`error::CliError::BrokenPipe`] instead of a panic.
macro_rules! outln {
    () => {
        $crate::format::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::format::write_line(format_args!($($arg)*))
    };
}

pub mod certs;
pub mod cli;
pub mod commands;
pub mod demo;
pub mod error;
pub mod format;
pub mod session;

pub use cli::Cli;
pub use commands::run;
pub use error::CliError;
