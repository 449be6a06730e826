//! The `server` block: listeners and how requests are bounded.

use std::{net::SocketAddr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{ConfigError, TlsConfig, Validate};

/// The gRPC and admin listeners and how requests are bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerConfig {
    /// Address of the gRPC port (the API, `grpc.health.v1.Health`, reflection).
    pub grpc_addr: SocketAddr,
    /// Address of the admin HTTP port (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    /// Longest a request may run when the client sends no `grpc-timeout`, in
    /// milliseconds; a shorter client deadline always wins.
    pub request_timeout_ms: u64,
    /// After SIGTERM/SIGINT: how long health reports NOT_SERVING while new calls are
    /// still accepted, so load balancers stop routing here first (milliseconds).
    pub drain_delay_ms: u64,
    /// After the drain delay: how long in-flight calls get to finish before the
    /// process exits anyway (milliseconds).
    pub shutdown_grace_ms: u64,
    /// Most requests handled at once across all connections; the excess is refused
    /// with RESOURCE_EXHAUSTED instead of queueing.
    pub max_in_flight: usize,
    /// Also limit each unary method's calls from users (not peer services,
    /// not health checks) to a concurrency that adapts to its latency (TCP
    /// Vegas: the limit shrinks when calls queue, grows while they do not), and
    /// refuse the excess at once with RESOURCE_EXHAUSTED and a retry delay, so
    /// that under overload the admitted calls stay fast instead of everyone
    /// waiting in one growing queue. The current limits are the
    /// `rpc_server_concurrency_limit` gauge.
    #[serde(default = "default_adaptive_concurrency")]
    pub adaptive_concurrency: bool,
    /// Most concurrent HTTP/2 streams one client connection may open.
    pub max_concurrent_streams: u32,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Requests per second each caller (a user, or an address for calls without
    /// a token) may make, refilled continuously; the excess gets
    /// RESOURCE_EXHAUSTED with a retry delay. 0 turns the limit off. Calls from
    /// peer services are not limited here (the order service bounds its own).
    pub rate_limit_per_sec: u32,
    /// How many requests a caller may make at once above that rate (bucket size).
    pub rate_limit_burst: u32,
    /// Most server streams (WatchOrderUpdates, StreamUsers, …) one caller may
    /// have open at once on this process; one more is refused with
    /// RESOURCE_EXHAUSTED until one of them ends.
    #[serde(default = "default_max_streams_per_caller")]
    pub max_streams_per_caller: usize,
    /// Most server streams open at once on this process, all callers together;
    /// beyond it new streams are refused with RESOURCE_EXHAUSTED (streams are
    /// long-lived, so they are bounded here rather than by `max_in_flight`).
    #[serde(default = "default_max_open_streams")]
    pub max_open_streams: usize,
    /// Longest a server stream may stay open, in milliseconds (at most a day);
    /// it then ends with UNAVAILABLE "stream reached its maximum age;
    /// reconnect" (watchers get the current state again when they reconnect).
    #[serde(default = "default_stream_max_age_ms")]
    pub stream_max_age_ms: u64,
    /// Networks of the proxies in front of this service (the edge, an ingress),
    /// e.g. `["10.0.0.0/8"]`: only a caller inside one of them is believed when
    /// its `x-forwarded-for` names the client, so calls without a token are
    /// limited per real client rather than per proxy. Anyone else's
    /// `x-forwarded-for` is ignored. Empty: the TCP peer is the client.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Testing aid, compiled only into test builds: a response whose status
    /// message contains internals (SQL, paths, panic text, tokens; see
    /// `testing::LEAK_MARKERS`) aborts its connection and logs an error. The
    /// test harness turns it on, so every error of every test is scanned.
    #[cfg(any(test, feature = "testing"))]
    #[serde(default)]
    pub leak_guard: bool,
    /// TLS on the gRPC port (off by default).
    #[serde(default)]
    pub tls: TlsConfig,
}

impl ServerConfig {
    /// Defaults for a service on the given local ports.
    pub fn local(grpc_port: u16, admin_port: u16) -> Self {
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            admin_addr: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            request_timeout_ms: 10_000,
            drain_delay_ms: 1_000,
            shutdown_grace_ms: 20_000,
            max_in_flight: 1_024,
            adaptive_concurrency: default_adaptive_concurrency(),
            max_concurrent_streams: 256,
            max_message_bytes: 4 * 1024 * 1024,
            rate_limit_per_sec: 50,
            rate_limit_burst: 100,
            max_streams_per_caller: default_max_streams_per_caller(),
            max_open_streams: default_max_open_streams(),
            stream_max_age_ms: default_stream_max_age_ms(),
            trusted_proxies: Vec::new(),
            #[cfg(any(test, feature = "testing"))]
            leak_guard: false,
            tls: TlsConfig::default(),
        }
    }

    /// [`Self::request_timeout_ms`] as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// [`Self::stream_max_age_ms`] as a duration.
    pub fn stream_max_age(&self) -> Duration {
        Duration::from_millis(self.stream_max_age_ms)
    }

    /// [`Self::drain_delay_ms`] as a duration.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    /// [`Self::shutdown_grace_ms`] as a duration.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

fn default_adaptive_concurrency() -> bool {
    true
}

fn default_max_streams_per_caller() -> usize {
    8
}

fn default_max_open_streams() -> usize {
    512
}

fn default_stream_max_age_ms() -> u64 {
    30 * 60 * 1000
}

impl Validate for ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.request_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_ms",
                "must be > 0",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::invalid("server.max_in_flight", "must be > 0"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "server.max_concurrent_streams",
                "must be > 0",
            ));
        }
        if self.max_streams_per_caller == 0 {
            return Err(ConfigError::invalid(
                "server.max_streams_per_caller",
                "must be > 0",
            ));
        }
        if self.max_open_streams < self.max_streams_per_caller {
            return Err(ConfigError::invalid(
                "server.max_open_streams",
                "must be >= server.max_streams_per_caller",
            ));
        }
        // Tokens live a day at most (auth.token_ttl_secs), and a stream ends
        // with its token anyway.
        if !(1..=86_400_000).contains(&self.stream_max_age_ms) {
            return Err(ConfigError::invalid(
                "server.stream_max_age_ms",
                "must be between 1 and 86400000 (a day)",
            ));
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            return Err(ConfigError::invalid(
                "server.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if self.rate_limit_per_sec > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::invalid(
                "server.rate_limit_burst",
                "must be > 0 when server.rate_limit_per_sec is",
            ));
        }
        if self.grpc_addr == self.admin_addr && self.grpc_addr.port() != 0 {
            return Err(ConfigError::invalid(
                "server.admin_addr",
                "must differ from server.grpc_addr",
            ));
        }
        self.tls.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_limits_have_sensible_defaults_and_are_validated() {
        let ok = ServerConfig::local(0, 0);
        assert_eq!(
            (
                ok.max_streams_per_caller,
                ok.max_open_streams,
                ok.stream_max_age()
            ),
            (8, 512, Duration::from_secs(30 * 60))
        );
        assert!(ok.validate().is_ok());
        let bad = [
            (
                ServerConfig {
                    max_streams_per_caller: 0,
                    ..ok.clone()
                },
                "server.max_streams_per_caller",
            ),
            (
                ServerConfig {
                    max_open_streams: 7,
                    ..ok.clone()
                },
                "server.max_open_streams",
            ),
            (
                ServerConfig {
                    stream_max_age_ms: 0,
                    ..ok.clone()
                },
                "server.stream_max_age_ms",
            ),
            (
                ServerConfig {
                    stream_max_age_ms: u64::MAX,
                    ..ok.clone()
                },
                "server.stream_max_age_ms",
            ),
        ];
        for (config, key) in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn stream_limits_may_be_left_out_of_a_file() {
        let mut value = serde_json::to_value(ServerConfig::local(0, 0)).unwrap();
        let fields = value.as_object_mut().unwrap();
        for key in [
            "max_streams_per_caller",
            "max_open_streams",
            "stream_max_age_ms",
        ] {
            fields.remove(key);
        }
        let back: ServerConfig = serde_json::from_value(value).unwrap();
        assert_eq!(back.max_streams_per_caller, 8);
    }
}
