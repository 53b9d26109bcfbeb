//! Worker liveness records: each worker keeps its name in a sorted set scored by its expiry, by the Redis server's clock.
//!
//! A sorted set rather than one key per worker lets `__heartbeat__` count live workers in one
//! call without `SCAN`. Scores are computed inside Redis from `TIME`, so a host whose clock is
//! off by minutes neither looks dead nor keeps others looking alive.

use std::time::Duration;

use redis::Script;

use crate::connection::{run, Redis};
use crate::keys::LIVENESS_KEY;
use crate::QueueError;

/// KEYS[1] = the set, ARGV[1] = worker, ARGV[2] = ttl ms: records the worker as live until
/// now + ttl and drops expired records.
const PUBLISH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return now
"#;

/// KEYS[1] = the set, ARGV[1] = name prefix or '': live records (matching the prefix).
const LIVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local names = redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')
local n = 0
for _, name in ipairs(names) do
    if string.sub(name, 1, #ARGV[1]) == ARGV[1] then
        n = n + 1
    end
end
return n
"#;

/// Records `worker` as live for `ttl` from now (Redis time), and drops expired records.
pub async fn publish(conn: &mut Redis, worker: &str, ttl: Duration) -> Result<(), QueueError> {
    let _: i64 = Script::new(PUBLISH)
        .key(LIVENESS_KEY)
        .arg(worker)
        .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .invoke_async(conn)
        .await?;
    Ok(())
}

/// Removes `worker`'s record, for a clean shutdown.
pub async fn withdraw(conn: &mut Redis, worker: &str) -> Result<(), QueueError> {
    run(conn, redis::cmd("ZREM").arg(LIVENESS_KEY).arg(worker)).await
}

/// How many workers are live now (Redis time).
pub async fn live_count(conn: &mut Redis) -> Result<u64, QueueError> {
    Ok(Script::new(LIVE)
        .key(LIVENESS_KEY)
        .arg("")
        .invoke_async(conn)
        .await?)
}

/// Whether a live record starts with `prefix`, over a short-lived blocking connection.
///
/// For `wharf check` in a worker container, which runs once and exits: no async runtime needed.
pub fn is_live_blocking(
    settings: &wharf_settings::RedisSettings,
    prefix: &str,
    timeout: Duration,
) -> Result<bool, QueueError> {
    let script = Script::new(LIVE);
    let live: u64 = if settings.cluster {
        let client = redis::cluster::ClusterClient::builder(vec![settings.url()])
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .build()?;
        script
            .key(LIVENESS_KEY)
            .arg(prefix)
            .invoke(&mut client.get_connection()?)?
    } else {
        let mut conn = redis::Client::open(settings.url())?.get_connection_with_timeout(timeout)?;
        conn.set_read_timeout(Some(timeout))?;
        script.key(LIVENESS_KEY).arg(prefix).invoke(&mut conn)?
    };
    Ok(live > 0)
}
