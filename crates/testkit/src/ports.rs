//! Loopback ports for processes that are told where to listen before they start.

use std::{
    net::TcpListener,
    sync::atomic::{AtomicU32, Ordering},
};

/// A loopback port that is free now and lies below the kernel's ephemeral
/// range. A port from `bind(0)` comes from that range, where any outgoing
/// connection (to PostgreSQL, between the services) can take it before the
/// process told to listen on it binds it: "Address already in use", seen in
/// the bench. Successive calls in one process never give the same port; other
/// processes start at another place (their pid). Falls back to `bind(0)` when
/// the range starts too low to leave room below it.
pub fn free_port() -> std::io::Result<u16> {
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = ephemeral_start().saturating_sub(LOWEST);
    if span >= 1_000 {
        let _ = NEXT.compare_exchange(
            u32::MAX,
            std::process::id() % span,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        for _ in 0..span {
            let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
            if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return Ok(port as u16);
            }
        }
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_start() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_free_distinct_and_not_ephemeral() {
        let ephemeral = ephemeral_start();
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        for p in ports {
            assert!(u32::from(p) < ephemeral, "{p} is in the ephemeral range");
            TcpListener::bind(("127.0.0.1", p)).unwrap();
        }
    }
}
