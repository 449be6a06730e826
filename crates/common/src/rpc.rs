//! The gRPC vocabulary services use, re-exported so that tonic is named in one
//! place: when its successor crate lands, services should not need to change.

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
