//! Periodic chores while the worker runs: liveness record, queue gauges, purging finished jobs.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cadence::prelude::*;
use cadence::StatsdClient;
use redis::aio::ConnectionManager;
use wharf_queue::{liveness, QueueStats};

use crate::queue_ops;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Publishes this worker's liveness record every `ttl / 3`.
pub async fn liveness_loop(mut conn: ConnectionManager, name: String, ttl: Duration) {
    let period = (ttl / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if let Err(e) = liveness::publish(&mut conn, &name, now_ms(), ttl).await {
            tracing::debug!(error = %e, "could not publish the liveness record");
        }
    }
}

/// Samples queue backlog, in-flight, dead and live-worker counts as gauges.
pub async fn gauges_loop(
    mut conn: ConnectionManager,
    metrics: Arc<StatsdClient>,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        match QueueStats::fetch(&mut conn, now_ms()).await {
            Ok(stats) => {
                metrics.gauge("queue.backlog", stats.backlog).ok();
                metrics.gauge("queue.inflight", stats.inflight).ok();
                metrics.gauge("queue.dead", stats.dead).ok();
                metrics.gauge("workers.live", stats.live_workers).ok();
            }
            Err(e) => tracing::debug!(error = %e, "could not sample queue statistics"),
        }
    }
}

/// Deletes acknowledged jobs from Redis every `period`, and the metadata of vanished workers
/// every few minutes, so Redis memory does not grow with the number of jobs ever processed.
pub async fn purge_loop(mut conn: ConnectionManager, period: Duration) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(100)));
    let mut rounds: u64 = 0;
    loop {
        tick.tick().await;
        match queue_ops::purge_done(&mut conn, 1000).await {
            Ok(n) if n > 0 => tracing::debug!(purged = n, "purged acknowledged jobs"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "could not purge acknowledged jobs"),
        }
        if rounds.is_multiple_of(60) {
            if let Err(e) = queue_ops::prune_worker_metadata(&mut conn).await {
                tracing::debug!(error = %e, "could not prune worker metadata");
            }
        }
        rounds += 1;
    }
}

/// Promotes due scheduled jobs in chunks every `period` (see [`queue_ops::promote_due`]).
pub async fn promote_loop(mut conn: ConnectionManager, period: Duration) {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    loop {
        tick.tick().await;
        if let Err(e) = queue_ops::promote_due(&mut conn).await {
            tracing::debug!(error = %e, "could not promote scheduled jobs");
        }
    }
}
