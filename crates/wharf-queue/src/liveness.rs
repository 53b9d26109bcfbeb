//! Worker liveness records: each worker keeps its name in a sorted set scored by its expiry time.
//!
//! A sorted set rather than one key per worker lets `__heartbeat__` count live workers in one
//! `ZCOUNT` without `SCAN`. The web role only reads; workers refresh their own entry and prune
//! expired ones.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::keys::LIVENESS_KEY;
use crate::QueueError;

/// Records `worker` as live until `now_ms + ttl`, and drops entries that have expired.
pub async fn publish(
    conn: &mut ConnectionManager,
    worker: &str,
    now_ms: u64,
    ttl: Duration,
) -> Result<(), QueueError> {
    let expiry = now_ms + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let _: () = redis::pipe()
        .zadd(LIVENESS_KEY, worker, expiry)
        .ignore()
        .zrembyscore(LIVENESS_KEY, "-inf", format!("({now_ms}"))
        .ignore()
        .query_async(conn)
        .await?;
    Ok(())
}

/// Removes `worker`'s record, for a clean shutdown.
pub async fn withdraw(conn: &mut ConnectionManager, worker: &str) -> Result<(), QueueError> {
    let _: () = redis::cmd("ZREM")
        .arg(LIVENESS_KEY)
        .arg(worker)
        .query_async(conn)
        .await?;
    Ok(())
}

/// How many workers are live at `now_ms`.
pub async fn live_count(conn: &mut ConnectionManager, now_ms: u64) -> Result<u64, QueueError> {
    Ok(redis::cmd("ZCOUNT")
        .arg(LIVENESS_KEY)
        .arg(now_ms)
        .arg("+inf")
        .query_async(conn)
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
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    let mut conn = redis::Client::open(settings.url())?.get_connection_with_timeout(timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    let live: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(LIVENESS_KEY)
        .arg(now_ms)
        .arg("+inf")
        .query(&mut conn)?;
    Ok(live.iter().any(|name| name.starts_with(prefix)))
}
