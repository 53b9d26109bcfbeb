//! Periodic chores while the worker runs: its liveness record and the queue gauges.

use std::sync::Arc;
use std::time::Duration;

use cadence::prelude::*;
use cadence::StatsdClient;
use wharf_queue::Redis;
use wharf_queue::{liveness, QueueStats};

/// Publishes this worker's liveness record every `ttl / 3`.
pub async fn liveness_loop(mut conn: Redis, name: String, ttl: Duration) {
    let mut tick = tokio::time::interval(ttl / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = liveness::publish(&mut conn, &name, ttl).await {
            tracing::debug!(type = "worker.liveness", error = %e, "could not publish the liveness record");
        }
    }
}

/// Samples backlog, waiting, in-flight, dead and live-worker counts as gauges every `period`.
pub async fn gauges_loop(
    mut conn: Redis,
    metrics: Arc<StatsdClient>,
    configured_shards: u16,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match QueueStats::fetch_known(&mut conn, configured_shards).await {
            Ok(stats) => {
                metrics.gauge("queue.backlog", stats.backlog).ok();
                metrics.gauge("queue.waiting", stats.waiting).ok();
                metrics.gauge("queue.inflight", stats.inflight).ok();
                metrics.gauge("queue.dead", stats.dead).ok();
                metrics.gauge("workers.live", stats.live_workers).ok();
            }
            Err(e) => {
                tracing::debug!(type = "worker.gauges", error = %e, "could not sample queue statistics")
            }
        }
    }
}
