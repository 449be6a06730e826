//! The bound gRPC and admin sockets. Bind first, then serve: tests bind
//! `127.0.0.1:0` and read the ports without guessing or sleeping.

use std::{io, net::SocketAddr};

use tokio::net::TcpListener;

use crate::config::ServerConfig;

/// The bound gRPC and admin sockets. Bind first, then serve: tests bind
/// `127.0.0.1:0` and read the ports without guessing or sleeping.
#[derive(Debug)]
pub struct Listeners {
    pub(super) grpc: TcpListener,
    pub(super) admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses in `config`.
    pub async fn bind(config: &ServerConfig) -> io::Result<Self> {
        let grpc = TcpListener::bind(config.grpc_addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("bind gRPC {}: {e}", config.grpc_addr))
        })?;
        let admin = TcpListener::bind(config.admin_addr).await.map_err(|e| {
            io::Error::new(e.kind(), format!("bind admin {}: {e}", config.admin_addr))
        })?;
        Ok(Self { grpc, admin })
    }

    /// Binds both on `127.0.0.1` with ports chosen by the OS.
    pub async fn ephemeral() -> io::Result<Self> {
        Ok(Self {
            grpc: TcpListener::bind("127.0.0.1:0").await?,
            admin: TcpListener::bind("127.0.0.1:0").await?,
        })
    }

    /// The gRPC address actually bound.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The two sockets, main port first: for a process that serves something
    /// other than gRPC on its main port (the edge serves HTTP/JSON there).
    pub fn into_parts(self) -> (TcpListener, TcpListener) {
        (self.grpc, self.admin)
    }

    /// The admin HTTP address actually bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
            .local_addr()
            .expect("bound listener has an address")
    }
}
