//! Probing what every server provides around its API: gRPC health,
//! reflection, and the admin HTTP port.

use std::net::SocketAddr;

use emporium_common::rpc::Channel;

/// What the gRPC health service of `channel`'s server says of `service` (`""`
/// is the server as a whole).
pub async fn health_status(
    channel: Channel,
    service: &str,
) -> Result<
    emporium_common::rpc::health::health_check_response::ServingStatus,
    emporium_common::rpc::Status,
> {
    use emporium_common::rpc::health::{HealthCheckRequest, health_client::HealthClient};
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status())
}

/// The services `channel`'s server lists through reflection, sorted.
pub async fn reflected_services(channel: Channel) -> Vec<String> {
    use emporium_common::rpc::reflection::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection answers")
        .into_inner();
    let r = responses
        .message()
        .await
        .expect("a reflection response")
        .expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = r.message_response else {
        panic!("{r:?}")
    };
    let mut names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

/// A plain HTTP/1.1 GET against an admin port: `(status, body)`.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin port");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
