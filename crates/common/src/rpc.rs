//! The gRPC vocabulary services use, re-exported so that tonic is named in one
//! place: when its successor crate lands, services should not need to change.

pub use tonic::{Code, Request, Response, Status, Streaming, async_trait};

/// The result type of every RPC handler.
pub type RpcResult<T> = Result<Response<T>, Status>;
