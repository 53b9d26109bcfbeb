//! Free loopback ports for test servers.

use std::net::TcpListener;

/// A port that was free a moment ago (bind to port 0, read it, release it).
///
/// For programs we spawn (redis-server, nginx) that must be told a port; in-process servers bind
/// port 0 themselves and report the port instead.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
