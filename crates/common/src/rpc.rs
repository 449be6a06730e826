//! The gRPC vocabulary services use, re-exported so that tonic is named in one
//! place: when its successor crate lands, services should not need to change.

use std::time::{Duration, Instant};

pub use tonic::{
    Code, Request, Response, Status, Streaming, async_trait,
    metadata::{self, MetadataValue},
    transport::Channel,
};

/// The result type of every RPC handler.
pub type RpcResult<T> = Result<Response<T>, Status>;

/// `grpc.health.v1` messages and client, for probes and tests.
pub use tonic_health::pb as health;

/// `grpc.reflection.v1` messages and client, for tools and tests.
pub use tonic_reflection::pb::v1 as reflection;

/// Reading rich error details (`google.rpc.BadRequest` …) off a status.
pub use tonic_types::{ErrorDetail, ErrorDetails, StatusExt};

/// Parses a `grpc-timeout` header value (`1S`, `250m`, …).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The `grpc-timeout` a request carries, if any and well-formed.
pub fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

tokio::task_local! {
    static SERVING_DEADLINE: Instant;
}

/// Runs `fut` (a handler) knowing the deadline of the call it serves, so the
/// calls it makes to peers inherit it (see `client::deadline`).
pub fn with_serving_deadline<F: std::future::Future>(
    deadline: Instant,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<Instant, F> {
    SERVING_DEADLINE.scope(deadline, fut)
}

/// The deadline of the call being served, inside a handler.
pub fn serving_deadline() -> Option<Instant> {
    SERVING_DEADLINE.try_with(|d| *d).ok()
}

/// `/pkg.Service/Method` split into service and method.
pub fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split() {
        assert_eq!(
            split_path("/emporium.user.v1.UserService/GetUser"),
            Some(("emporium.user.v1.UserService", "GetUser"))
        );
        assert_eq!(split_path("/nope"), None);
        assert_eq!(split_path("/a/b/c"), None);
    }
}
