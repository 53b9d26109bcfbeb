//! Admission control: a sampled view of the queue backlog, so the 507 check costs no Redis call per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use wharf_queue::{QueueStats, Shard};

/// How often the backlog is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// The latest backlog sample, shared by every request.
#[derive(Clone, Default)]
pub struct BacklogGauge {
    backlog: Arc<AtomicU64>,
    known: Arc<AtomicBool>,
}

impl BacklogGauge {
    /// The last sampled backlog, if a sample has succeeded since the last failure.
    pub fn backlog(&self) -> Option<u64> {
        self.known
            .load(Ordering::Relaxed)
            .then(|| self.backlog.load(Ordering::Relaxed))
    }

    fn record(&self, sample: Option<u64>) {
        match sample {
            Some(b) => {
                self.backlog.store(b, Ordering::Relaxed);
                self.known.store(true, Ordering::Relaxed);
            }
            None => self.known.store(false, Ordering::Relaxed),
        }
    }

    /// Samples the backlog of shards `0..shards` forever; spawn it once per process.
    pub async fn run_sampler(self, mut conn: ConnectionManager, shards: u16) {
        let shards: Vec<Shard> = Shard::all(shards).collect();
        let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            self.record(QueueStats::backlog(&mut conn, &shards).await.ok());
        }
    }
}
