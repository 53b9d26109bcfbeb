//! Admission control: sampled views of the queue backlog and of Redis memory, so the 507 checks cost no Redis call per request.
//!
//! Memory is what runs out first: with 1 MiB bodies allowed, a few thousand documents fill a
//! small cache node long before any depth limit. So besides the backlog, the sampler reads
//! `INFO memory` on every master, and a submission is refused (507) once the fullest master's
//! `used_memory`, plus every byte admitted since that sample, passes
//! `REDIS_MEMORY_HIGH_WATER_PERCENT` of `maxmemory`. The rest is headroom that Redis never
//! refuses to the workers' `XACK`/`XDEL`, so a full Redis always drains.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wharf_queue::health::{self, MemoryUse};
use wharf_queue::streams::KnownShards;
use wharf_queue::{QueueStats, Redis};

/// How often the backlog and memory are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);

/// How often the list of shards to sample is read again.
const SHARD_REFRESH: Duration = Duration::from_secs(5);

/// The latest samples, shared by every request.
#[derive(Clone, Default)]
pub struct BacklogGauge {
    backlog: Arc<AtomicU64>,
    known: Arc<AtomicBool>,
    /// The fullest master at the last sample; `max == 0` when no master has a `maxmemory`.
    memory_used: Arc<AtomicU64>,
    memory_max: Arc<AtomicU64>,
    /// Encoded bytes of every submission admitted since start, and its value when the last
    /// memory sample was taken: their difference is what the sample cannot have seen yet.
    admitted_bytes: Arc<AtomicU64>,
    admitted_at_sample: Arc<AtomicU64>,
}

impl BacklogGauge {
    /// The last sampled backlog, if a sample has succeeded since the last failure.
    pub fn backlog(&self) -> Option<u64> {
        self.known
            .load(Ordering::Relaxed)
            .then(|| self.backlog.load(Ordering::Relaxed))
    }

    /// Whether the fullest master, counting what was admitted since it was sampled, is at or
    /// over `percent` of its `maxmemory`. Never true without a `maxmemory`.
    pub fn memory_full(&self, percent: u8) -> bool {
        let max = self.memory_max.load(Ordering::Relaxed);
        if max == 0 {
            return false;
        }
        let unseen = self
            .admitted_bytes
            .load(Ordering::Relaxed)
            .saturating_sub(self.admitted_at_sample.load(Ordering::Relaxed));
        let used = self
            .memory_used
            .load(Ordering::Relaxed)
            .saturating_add(unseen);
        u128::from(used) * 100 >= u128::from(max) * u128::from(percent)
    }

    /// Counts a submission Redis accepted, until the next memory sample includes it.
    pub fn admitted(&self, bytes: usize) {
        self.admitted_bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
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

    /// Records a memory sample taken when the admitted-bytes counter stood at `admitted`. A
    /// failed sample keeps the previous one: Redis being unreachable already fails submissions.
    fn record_memory(&self, memory: Option<MemoryUse>, admitted: u64) {
        let memory = memory.unwrap_or(MemoryUse { used: 0, max: 0 });
        self.memory_used.store(memory.used, Ordering::Relaxed);
        self.memory_max.store(memory.max, Ordering::Relaxed);
        self.admitted_at_sample.store(admitted, Ordering::Relaxed);
    }

    /// Samples the backlog (of shards `0..configured` and every shard a web node registered)
    /// and every master's memory forever; spawn it once per process.
    pub async fn run_sampler(self, mut conn: Redis, configured: u16) {
        let mut known = KnownShards::new(configured, SHARD_REFRESH);
        let mut ticker = tokio::time::interval(SAMPLE_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // Another web node may write to more shards than this one: their backlog counts too.
            // A failed read keeps the previous list and is tried again next tick.
            let _ = known.refresh(&mut conn).await;
            self.record(QueueStats::backlog(&mut conn, known.current()).await.ok());
            // Read before INFO is sent: bytes admitted from here on may be missing from it.
            let admitted = self.admitted_bytes.load(Ordering::Relaxed);
            if let Ok(nodes) = health::memory(&mut conn).await {
                self.record_memory(MemoryUse::fullest(&nodes), admitted);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_admitted_after_a_sample_count_until_the_next_one() {
        let gauge = BacklogGauge::default();
        assert!(
            !gauge.memory_full(80),
            "no sample and no maxmemory: never full"
        );
        gauge.record_memory(
            Some(MemoryUse {
                used: 700,
                max: 1000,
            }),
            0,
        );
        assert!(!gauge.memory_full(80));
        gauge.admitted(99);
        assert!(!gauge.memory_full(80), "799 of 1000 is under 80 %");
        gauge.admitted(1);
        assert!(gauge.memory_full(80), "800 of 1000 is at 80 %");
        // The next sample saw those bytes: only its own figure counts.
        gauge.record_memory(
            Some(MemoryUse {
                used: 750,
                max: 1000,
            }),
            100,
        );
        assert!(!gauge.memory_full(80));
        gauge.record_memory(None, 100);
        assert!(
            !gauge.memory_full(80),
            "without maxmemory the depth limit rules"
        );
    }
}
