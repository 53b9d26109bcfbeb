//! Opens Wharf's Redis connection, one Redis or a Redis Cluster, with bounded timeouts and a fresh connection after a failover.
//!
//! Both roles talk to Redis through [`Redis`], so every caller gets the same failover handling:
//!
//! - One Redis: a reconnecting connection manager. redis-rs reconnects it after an I/O error, but
//!   not after `READONLY` (the node was demoted to a replica), `LOADING` or `MASTERDOWN`; then
//!   it would answer that error for as long as the connection lives. [`Redis`] replaces the
//!   connection on those errors, so the next command resolves the address again (a DNS name or
//!   a proxy that now points at the new primary) and recovery needs no restart.
//! - A cluster: redis-rs's cluster client, which follows `MOVED`/`ASK`, refreshes its slot map on
//!   `READONLY` and connection errors, and waits and retries on `CLUSTERDOWN`, `MASTERDOWN`,
//!   `LOADING` and `TRYAGAIN`, within the configured timeout.
//! - Both: a link that dies silently (a partition, a peer that vanished without a reset) would
//!   otherwise keep its socket for the kernel's full retransmission time, about 15 minutes, with
//!   every command timing out meanwhile. Every socket gets TCP keepalive and `TCP_USER_TIMEOUT`,
//!   so the kernel gives up on it within seconds, and a standalone connection is also replaced
//!   after a response timeout.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};
use wharf_settings::RedisSettings;

use crate::keys::Shard;
use crate::QueueError;

/// Wharf's connection to Redis: cheap to clone, every clone shares the same connections.
#[derive(Clone)]
pub struct Redis {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single(Arc<Single>),
    Cluster(ClusterConnection),
}

/// A standalone Redis: the current connection manager, replaced after a failover error.
struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    db: i64,
    /// (generation, manager): the generation tells a failed command whether someone already
    /// replaced the manager it used, so one failover makes one new connection, not one per caller.
    current: Mutex<(u64, ConnectionManager)>,
}

impl Single {
    fn current(&self) -> Result<(u64, ConnectionManager), RedisError> {
        match self.current.lock() {
            Ok(guard) => Ok((guard.0, guard.1.clone())),
            Err(_) => Err(RedisError::from((
                redis::ErrorKind::Client,
                "redis connection state poisoned",
            ))),
        }
    }

    /// Replaces the manager of generation `used` with a fresh one, unless that was done already.
    fn replace(&self, used: u64) {
        let Ok(mut guard) = self.current.lock() else {
            return;
        };
        if guard.0 != used {
            return;
        }
        // On failure the old manager stays, and the next failover error tries again.
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *guard = (used + 1, fresh);
        }
    }
}

/// Error codes that mean this connection's node no longer takes writes, so a new connection (to
/// whatever the address now names) is needed. I/O errors are not listed: the connection manager
/// already reconnects after those.
const FAILOVER_CODES: [&str; 6] = [
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
];

/// Whether an error calls for a new connection: the node no longer takes writes, or it did not
/// answer in time (a connection whose link died silently keeps timing out until replaced).
fn needs_new_connection(e: &RedisError) -> bool {
    e.is_timeout() || e.code().is_some_and(|code| FAILOVER_CODES.contains(&code))
}

/// Whether a command's outcome calls for a new connection.
fn is_failover(result: &Result<Value, RedisError>) -> bool {
    match result {
        Err(e) => needs_new_connection(e),
        Ok(Value::ServerError(e)) => FAILOVER_CODES.contains(&e.code()),
        Ok(_) => false,
    }
}

/// Whether a pipeline's outcome, or any of its replies, calls for a new connection.
fn is_failover_any(result: &Result<Vec<Value>, RedisError>) -> bool {
    match result {
        Err(e) => needs_new_connection(e),
        Ok(values) => values
            .iter()
            .any(|v| matches!(v, Value::ServerError(e) if FAILOVER_CODES.contains(&e.code()))),
    }
}

impl Redis {
    /// Sends the commands `build` adds for each shard and returns each shard's replies, in the
    /// order of `shards`. One Redis gets them all in one pipeline; a cluster gets one pipeline
    /// per shard (one slot, so one node), concurrently, because a cluster pipeline must stay
    /// within one slot. `build` must not mark commands `ignore()`: replies are split by count.
    pub async fn per_shard(
        &self,
        shards: &[Shard],
        build: impl Fn(Shard, &mut Pipeline),
    ) -> Result<Vec<Vec<Value>>, QueueError> {
        if shards.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_cluster() {
            let pipes: Vec<Pipeline> = shards
                .iter()
                .map(|shard| {
                    let mut pipe = redis::pipe();
                    build(*shard, &mut pipe);
                    pipe
                })
                .collect();
            let replies = futures::future::join_all(pipes.iter().map(|pipe| {
                let mut conn = self.clone();
                async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
            }))
            .await;
            return replies
                .into_iter()
                .map(|r| r.map_err(QueueError::from))
                .collect();
        }
        let mut pipe = redis::pipe();
        let mut counts = Vec::with_capacity(shards.len());
        for shard in shards {
            let before = pipe.cmd_iter().count();
            build(*shard, &mut pipe);
            counts.push(pipe.cmd_iter().count() - before);
        }
        let mut replies = pipe
            .query_async::<Vec<Value>>(&mut self.clone())
            .await?
            .into_iter();
        Ok(counts
            .into_iter()
            .map(|n| replies.by_ref().take(n).collect())
            .collect())
    }

    /// Whether this is a Redis Cluster connection: every multi-key command and pipeline must
    /// then stay within one shard (one hash tag).
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }

    /// Drops the standalone connection for a fresh one, for a caller that learnt another way
    /// (`ROLE`) that the node no longer takes writes. A cluster client refreshes by itself.
    pub fn reconnect(&self) {
        if let Inner::Single(single) = &self.inner {
            if let Ok((generation, _)) = single.current() {
                single.replace(generation);
            }
        }
    }

    /// How many times the standalone connection was replaced after a failover error (0 for a
    /// cluster, whose client refreshes its own connections).
    pub fn replacements(&self) -> u64 {
        match &self.inner {
            Inner::Single(s) => s.current().map(|(g, _)| g).unwrap_or(0),
            Inner::Cluster(_) => 0,
        }
    }

    /// Sends `cmd` to every master (a cluster) or to the one Redis, and returns each node's reply.
    /// For start-up checks and `INFO`, which must cover every master.
    pub async fn on_every_master(&mut self, cmd: &Cmd) -> Result<Vec<Value>, QueueError> {
        match &mut self.inner {
            Inner::Single(_) => Ok(vec![cmd.query_async(self).await?]),
            Inner::Cluster(conn) => {
                use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
                let reply = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await?;
                Ok(match reply {
                    Value::Map(per_node) => per_node.into_iter().map(|(_, v)| v).collect(),
                    Value::Array(per_node) => per_node,
                    other => vec![other],
                })
            }
        }
    }
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Cluster(conn) => conn.req_packed_command(cmd),
            Inner::Single(single) => Box::pin(async move {
                let (generation, mut conn) = single.current()?;
                let result = conn.req_packed_command(cmd).await;
                if is_failover(&result) {
                    single.replace(generation);
                }
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Inner::Single(single) => Box::pin(async move {
                let (generation, mut conn) = single.current()?;
                let result = conn.req_packed_commands(pipeline, offset, count).await;
                // redis-rs hands a pipeline's per-command errors back as values.
                if is_failover_any(&result) {
                    single.replace(generation);
                }
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(single) => single.db,
            Inner::Cluster(_) => 0,
        }
    }
}

/// A connection that connects lazily and reconnects by itself after an outage or a failover.
///
/// It never blocks start-up: the first command (or the start-up probe) establishes the
/// connection, and every command fails within the configured timeout while Redis is away, so
/// callers can answer 503 instead of hanging.
pub fn connect(settings: &RedisSettings) -> Result<Redis, QueueError> {
    open(settings, settings.timeout)
}

/// One PING, bounded by the connection's timeouts.
pub async fn ping(conn: &mut Redis) -> Result<(), QueueError> {
    let _: String = redis::cmd("PING").query_async(conn).await?;
    Ok(())
}

/// Runs `cmd` for its effect alone, discarding whatever it replies; an error reply still fails.
pub(crate) async fn run(conn: &mut Redis, cmd: &Cmd) -> Result<(), QueueError> {
    let _: () = cmd.query_async(conn).await?;
    Ok(())
}

/// A connection for blocking reads (`XREADGROUP ... BLOCK`): its response timeout is the block
/// time plus the usual timeout, so an idle read is never mistaken for an outage.
pub fn connect_blocking(settings: &RedisSettings, block: Duration) -> Result<Redis, QueueError> {
    open(settings, block + settings.timeout)
}

/// Keepalive probes after this much idle time, then every [`KEEPALIVE_INTERVAL`], give up after
/// [`KEEPALIVE_RETRIES`]: an idle connection (a worker blocked in `XREADGROUP`) to a vanished
/// peer fails within about 11 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEPALIVE_RETRIES: u32 = 3;

/// TCP settings for every connection: keepalive for idle links, and `TCP_USER_TIMEOUT` (data
/// sent but unacknowledged by the peer's kernel for longer than that closes the socket), never
/// shorter than the response timeout so a slow answer is not mistaken for a dead link.
fn tcp_settings(response_timeout: Duration) -> redis::io::tcp::TcpSettings {
    use redis::io::tcp::socket2::TcpKeepalive;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    redis::io::tcp::TcpSettings::default()
        .set_keepalive(keepalive)
        .set_user_timeout(response_timeout.max(Duration::from_secs(5)))
}

fn open(settings: &RedisSettings, response_timeout: Duration) -> Result<Redis, QueueError> {
    use redis::IntoConnectionInfo;
    let tcp = tcp_settings(response_timeout);
    if settings.cluster {
        // The seed is any node (an ElastiCache configuration endpoint): the client reads the
        // slot map from it and connects to the masters it names.
        let client = ClusterClient::builder(vec![settings.url()])
            .connection_timeout(settings.timeout)
            .response_timeout(response_timeout)
            // Retries cover a failover (CLUSTERDOWN, MOVED, a refused connection while the
            // replica is promoted) but never outlast the caller's own timeout.
            .retries(6)
            .min_retry_wait(20)
            .max_retry_wait(u64::try_from(settings.timeout.as_millis() / 2).unwrap_or(500))
            .overall_response_timeout(Some(response_timeout))
            .tcp_settings(tcp)
            .build()?;
        let config = ClusterConfig::new()
            .set_connection_timeout(settings.timeout)
            .set_response_timeout(response_timeout);
        let conn = client.get_pending_async_connection_with_config(config);
        return Ok(Redis {
            inner: Inner::Cluster(conn),
        });
    }
    let info = settings.url().into_connection_info()?.set_tcp_settings(tcp);
    let client = redis::Client::open(info)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(response_timeout))
        .set_number_of_retries(1)
        .set_max_delay(settings.timeout);
    let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
    Ok(Redis {
        inner: Inner::Single(Arc::new(Single {
            client,
            config,
            db: settings.db,
            current: Mutex::new((0, manager)),
        })),
    })
}
