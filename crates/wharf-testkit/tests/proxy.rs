//! `TcpProxy` in front of real redis-servers: it forwards, switches target on a cut, holds and
//! refuses connections, from plain tests and from tokio tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use wharf_testkit::proxy::TcpProxy;
use wharf_testkit::redis_server::RedisServer;

/// A server that says which one it is when asked for `name`.
fn named(name: &str) -> RedisServer {
    let redis = RedisServer::start();
    redis::cmd("SET")
        .arg("name")
        .arg(name)
        .query::<()>(&mut redis.connection())
        .unwrap_or_else(|e| panic!("SET: {e}"));
    redis
}

fn connect(proxy: &TcpProxy) -> redis::Connection {
    redis::Client::open(proxy.redis_url())
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .unwrap_or_else(|e| panic!("connect through proxy: {e}"))
}

fn name(conn: &mut redis::Connection) -> redis::RedisResult<String> {
    redis::cmd("GET").arg("name").query(conn)
}

/// PING in the inline protocol over a raw socket; the reply, or the read error.
fn raw_ping(socket: &mut TcpStream) -> std::io::Result<String> {
    socket.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    socket.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn forwards_and_moves_clients_to_the_new_target_on_a_cut() {
    let a = named("a");
    let b = named("b");
    let proxy = TcpProxy::start(a.port());
    assert_eq!(proxy.target().port(), a.port());

    let mut first = connect(&proxy);
    let pong: String = redis::cmd("PING")
        .query(&mut first)
        .unwrap_or_else(|e| panic!("PING: {e}"));
    assert_eq!(pong, "PONG");
    assert_eq!(name(&mut first).ok().as_deref(), Some("a"));

    // A new target only affects new connections...
    proxy.set_target(b.port());
    assert_eq!(name(&mut first).ok().as_deref(), Some("a"));
    assert_eq!(proxy.connections(), 1);

    // ...until the cut closes the old ones.
    proxy.cut();
    assert_eq!(proxy.connections(), 0);
    assert!(name(&mut first).is_err(), "a cut connection fails");
    let mut second = connect(&proxy);
    assert_eq!(name(&mut second).ok().as_deref(), Some("b"));
    assert_eq!(proxy.accepted(), 2);
}

#[test]
fn refuses_and_holds_new_connections_until_resumed() {
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port());
    let mut live = TcpStream::connect(proxy.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    assert_eq!(raw_ping(&mut live).ok().as_deref(), Some("+PONG\r\n"));

    proxy.refuse();
    let refused = TcpStream::connect(proxy.addr())
        .map(|_| ())
        .map_err(|e| e.kind());
    assert_eq!(refused, Err(ErrorKind::ConnectionRefused));
    assert_eq!(
        raw_ping(&mut live).ok().as_deref(),
        Some("+PONG\r\n"),
        "live ones flow"
    );

    proxy.pause();
    let mut held = TcpStream::connect(proxy.addr()).unwrap_or_else(|e| panic!("connect: {e}"));
    held.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let waited = raw_ping(&mut held).map_err(|e| e.kind());
    assert!(
        matches!(waited, Err(ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "no answer while paused: {waited:?}"
    );

    proxy.resume();
    held.set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("timeout: {e}"));
    let mut reply = [0u8; 7];
    held.read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("the held PING is answered on resume: {e}"));
    assert_eq!(&reply, b"+PONG\r\n");
}

#[tokio::test]
async fn works_from_a_tokio_test() {
    let a = named("a");
    let b = named("b");
    let proxy = TcpProxy::start(a.port());
    let client = redis::Client::open(proxy.redis_url()).unwrap_or_else(|e| panic!("url: {e}"));
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let got: String = redis::cmd("GET")
        .arg("name")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(got, "a");

    proxy.set_target(b.port());
    proxy.cut();
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("reconnect: {e}"));
    let got: String = redis::cmd("GET")
        .arg("name")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(got, "b");
}
