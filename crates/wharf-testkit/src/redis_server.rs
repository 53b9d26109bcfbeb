//! A real `redis-server` child process on a free port, in a temporary directory, killed on drop.
//!
//! Extra `redis-server` arguments can be passed ([`RedisServer::start_with`]) and survive a restart,
//! and servers can be chained into primary and replica ([`RedisServer::replica_of`],
//! [`RedisServer::promote`], [`RedisServer::demote_to`]) to test failover by hand.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The log file every server writes its stdout to, inside its directory: quoted when it fails to start.
const LOG_FILE: &str = "redis.log";

/// A running `redis-server`; it can be stopped and restarted on the same port to simulate outages.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts `redis-server` (from PATH, or `$REDIS_SERVER_BIN`) on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts `redis-server` on `port`, for a test that told the code under test the port first.
    pub fn start_on(port: u16) -> Self {
        Self::start_on_with(port, &[])
    }

    /// Starts `redis-server` on a free port with extra arguments after the defaults (so they win),
    /// e.g. `&["--maxmemory", "32mb", "--maxmemory-policy", "noeviction"]`.
    pub fn start_with(args: &[&str]) -> Self {
        Self::start_on_with(free_port(), args)
    }

    /// [`RedisServer::start_with`] on `port`.
    pub fn start_on_with(port: u16, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut server = Self {
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
        };
        server.restart();
        server
    }

    /// The port it listens on (kept across [`RedisServer::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`, for a client.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The extra arguments the server was started with (and is restarted with).
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server again (on the same port, with the same extra arguments) after
    /// [`RedisServer::stop`]; blocks until it answers PING.
    ///
    /// A server started with `--replicaof` comes back as a replica even if it was promoted since.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server already running");
        self.child = Some(spawn_server(self.port, self.dir.path(), &self.args));
        if let Err(e) = wait_until_ready(self.port, &mut self.child, self.dir.path()) {
            panic!("{e}");
        }
    }

    /// Kills the server (SIGKILL): clients see connection errors until [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A synchronous connection for test assertions.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connect to test redis: {e}"))
    }

    /// Its working directory (RDB and AOF files), removed on drop.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// One section of `INFO` (`"replication"`, `"server"`, ...), as text.
    pub fn info(&self, section: &str) -> String {
        info(self.port, section)
            .unwrap_or_else(|e| panic!("INFO {section} on redis {}: {e}", self.port))
    }

    /// Starts a new server replicating this one and returns it once this server reports it
    /// `state=online` (the first sync done: whatever was written before is on the replica).
    pub fn replica_of(&self) -> RedisServer {
        let primary_port = self.port.to_string();
        let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &primary_port]);
        self.wait_for_replica(replica.port(), Duration::from_secs(30));
        replica
    }

    /// Blocks until the replica on `replica_port` is usable: this server lists it as
    /// `state=online`, and a write here is confirmed by `WAIT 1` and readable there. `online`
    /// alone comes as soon as the snapshot is sent, while the replica may still be loading it
    /// (and acknowledges nothing), which made `WAIT 1` return 0 on a loaded machine. Panics after
    /// `timeout`.
    pub fn wait_for_replica(&self, replica_port: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match info(self.port, "replication") {
                Ok(text) if replica_online(&text, replica_port) => {
                    match self.replicates_to(replica_port) {
                        Ok(true) => return,
                        Ok(false) => last = "online, but a probe write did not reach it".into(),
                        Err(e) => last = e.to_string(),
                    }
                }
                Ok(text) => last = text,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis {} did not list replica {replica_port} as online within {timeout:?}; INFO replication:\n{last}",
            self.port
        );
    }

    /// Writes a probe key here, waits for one replica to confirm it, reads it on
    /// `replica_port`, and deletes it again.
    fn replicates_to(&self, replica_port: u16) -> redis::RedisResult<bool> {
        const PROBE: &str = "testkit:replication-probe";
        let mut conn = connect(self.port)?;
        let value = format!("{}", std::process::id());
        let _: () = redis::cmd("SET").arg(PROBE).arg(&value).query(&mut conn)?;
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut conn)?;
        let seen: Option<String> = query(replica_port, redis::cmd("GET").arg(PROBE))?;
        let _: () = redis::cmd("DEL").arg(PROBE).query(&mut conn)?;
        let _: i64 = redis::cmd("WAIT").arg(1).arg(200).query(&mut conn)?;
        Ok(acked >= 1 && seen.as_deref() == Some(value.as_str()))
    }

    /// Makes this server a primary (`REPLICAOF NO ONE`): it keeps its data and accepts writes.
    pub fn promote(&self) {
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg("NO").arg("ONE");
        query::<()>(self.port, &cmd)
            .unwrap_or_else(|e| panic!("REPLICAOF NO ONE on redis {}: {e}", self.port));
    }

    /// Makes this server a replica of `host:port` (`REPLICAOF host port`); it drops its data for
    /// the primary's. Returns at once: see [`RedisServer::wait_for_replica`] on the primary.
    pub fn demote_to(&self, host: &str, port: u16) {
        let mut cmd = redis::cmd("REPLICAOF");
        cmd.arg(host).arg(port);
        query::<()>(self.port, &cmd)
            .unwrap_or_else(|e| panic!("REPLICAOF {host} {port} on redis {}: {e}", self.port));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `redis-server` to run: `$REDIS_SERVER_BIN`, or the one on PATH.
pub(crate) fn server_bin() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into())
}

/// The `redis-cli` to run: `$REDIS_CLI_BIN`, or the one on PATH (installed with redis-server).
pub(crate) fn cli_bin() -> String {
    std::env::var("REDIS_CLI_BIN").unwrap_or_else(|_| "redis-cli".into())
}

/// Arguments every test server gets after `--port`: loopback only, nothing written to disk but
/// the log, and no delay before a full sync (redis 7 otherwise waits 5 s for more replicas to
/// share a diskless sync, which only slows tests down).
pub(crate) fn base_args(dir: &Path) -> Vec<String> {
    [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain(std::iter::once(dir.to_string_lossy().into_owned()))
    .collect()
}

/// The server's stdout, appended to across restarts so an earlier run's log stays readable.
pub(crate) fn log_file(dir: &Path) -> Stdio {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .map(Stdio::from)
        .unwrap_or_else(|e| panic!("open redis log in {}: {e}", dir.display()))
}

/// The end of a server's log, for the panic message when it would not start.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Blocks until the server on `port` answers PING; fails early (with its log) if the process exits,
/// say because the port was taken between [`free_port`] and its bind.
pub(crate) fn wait_until_ready(
    port: u16,
    child: &mut Option<Child>,
    dir: &Path,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(c) = child.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                *child = None;
                return Err(format!(
                    "redis-server on port {port} exited ({status}) before answering PING; its log:\n{}",
                    log_tail(dir)
                ));
            }
        }
        if query::<String>(port, &redis::cmd("PING")).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "redis-server on port {port} did not answer PING within 10 s; its log:\n{}",
        log_tail(dir)
    ))
}

/// A fresh connection to the server on `port`, with timeouts so a hung server fails the test
/// instead of hanging it.
pub(crate) fn connect(port: u16) -> redis::RedisResult<redis::Connection> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(conn)
}

/// Runs one command on a fresh connection to `port`.
pub(crate) fn query<T: redis::FromRedisValue>(
    port: u16,
    cmd: &redis::Cmd,
) -> redis::RedisResult<T> {
    cmd.query(&mut connect(port)?)
}

/// Starts `redis-server` on `port` in `dir` with the shared base arguments, then `extra`; its
/// output goes to the log file in `dir`. Does not wait for it to answer.
pub(crate) fn spawn_server(
    port: u16,
    dir: &std::path::Path,
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> Child {
    let bin = server_bin();
    Command::new(&bin)
        .arg("--port")
        .arg(port.to_string())
        .args(base_args(dir))
        .args(extra)
        .stdout(log_file(dir))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("could not start {bin} (install redis-server, or set REDIS_SERVER_BIN): {e}")
        })
}

/// One section of `INFO` from the server on `port`.
pub(crate) fn info(port: u16, section: &str) -> redis::RedisResult<String> {
    let mut cmd = redis::cmd("INFO");
    cmd.arg(section);
    query(port, &cmd)
}

/// The value of `name` in `INFO` (or `CLUSTER INFO`) text: the part after `name:` on its line.
pub(crate) fn info_field<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Whether a primary's `INFO replication` lists the replica on `replica_port` as `state=online`
/// (lines like `slave0:ip=127.0.0.1,port=7001,state=online,offset=..,lag=0`).
pub(crate) fn replica_online(replication_info: &str, replica_port: u16) -> bool {
    let port = format!("port={replica_port}");
    replication_info.lines().any(|line| {
        line.starts_with("slave")
            && line.contains(':')
            && line.split([':', ',']).any(|part| part == port)
            && line.split([':', ',']).any(|part| part == "state=online")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_online_replicas() {
        let text = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\nslave0:ip=127.0.0.1,port=7001,state=online,offset=42,lag=0\r\nslave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n";
        assert_eq!(info_field(text, "role"), Some("master"));
        assert_eq!(info_field(text, "connected_slaves"), Some("2"));
        assert_eq!(info_field(text, "connected"), None);
        assert!(replica_online(text, 7001));
        assert!(!replica_online(text, 7002));
        assert!(!replica_online(text, 700));
    }
}
