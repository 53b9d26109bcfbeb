//! Queue statistics computed directly from apalis-redis's keys (its own metrics query fails).

use redis::aio::ConnectionManager;
use serde::Serialize;

use crate::keys::{QueueKeys, LIVENESS_KEY};
use crate::QueueError;

/// A snapshot of the queue, as `__heartbeat__` and the worker's gauges report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Jobs waiting: `LLEN {q}:active + ZCARD {q}:scheduled` (scheduled includes retries).
    pub backlog: u64,
    /// Jobs fetched by a worker and not yet acknowledged.
    pub inflight: u64,
    /// Jobs dead-lettered after exhausting their attempts.
    pub dead: u64,
    /// Workers whose liveness record has not expired.
    pub live_workers: u64,
}

impl QueueStats {
    /// Reads the backlog only: one round trip, cheap enough for a sampled admission check.
    pub async fn backlog(conn: &mut ConnectionManager) -> Result<u64, QueueError> {
        let keys = QueueKeys::new();
        let (active, scheduled): (u64, u64) = redis::pipe()
            .llen(&keys.active)
            .zcard(&keys.scheduled)
            .query_async(conn)
            .await?;
        Ok(active + scheduled)
    }

    /// Reads every figure: two round trips.
    pub async fn fetch(conn: &mut ConnectionManager, now_ms: u64) -> Result<Self, QueueError> {
        let keys = QueueKeys::new();
        let (active, scheduled, dead, workers, live): (u64, u64, u64, Vec<String>, u64) =
            redis::pipe()
                .llen(&keys.active)
                .zcard(&keys.scheduled)
                .scard(&keys.dead)
                .zrange(&keys.workers, 0, -1)
                .zcount(LIVENESS_KEY, now_ms, "+inf")
                .query_async(conn)
                .await?;
        let inflight = if workers.is_empty() {
            0
        } else {
            let mut pipe = redis::pipe();
            for worker in &workers {
                pipe.scard(format!("{}:{worker}", keys.inflight_prefix));
            }
            let counts: Vec<u64> = pipe.query_async(conn).await?;
            counts.iter().sum()
        };
        Ok(Self {
            backlog: active + scheduled,
            inflight,
            dead,
            live_workers: live,
        })
    }
}
