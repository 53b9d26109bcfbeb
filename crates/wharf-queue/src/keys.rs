//! Redis key names and the apalis-redis configuration both roles must share.

use std::time::Duration;

/// The apalis-redis queue. No ':' in it: apalis-redis's pub/sub channel parsing breaks on colons.
pub const QUEUE_NAME: &str = "wharf_submissions";

/// The namespace `wharf canary` submits to; the web role accepts it even with an allow-list.
pub const CANARY_NAMESPACE: &str = "wharf-canary";

/// Sorted set of live workers: member = worker name, score = expiry time in unix milliseconds.
pub const LIVENESS_KEY: &str = "wharf:workers:live";

/// The worker-side knobs that end up in the apalis-redis configuration.
#[derive(Debug, Clone, Copy)]
pub struct QueueTuning {
    pub fetch_size: usize,
    pub heartbeat: Duration,
    pub missed_heartbeats: usize,
}

impl Default for QueueTuning {
    fn default() -> Self {
        Self {
            fetch_size: 10,
            heartbeat: Duration::from_secs(5),
            missed_heartbeats: 3,
        }
    }
}

/// The apalis-redis configuration for Wharf's queue, set explicitly everywhere.
///
/// apalis-redis's `Config::default()` waits ten missed 30 s heartbeats (about five minutes) before
/// re-queueing a dead worker's jobs, and keeps results forever; both are overridden here.
pub fn apalis_config(tuning: QueueTuning) -> apalis_redis::Config {
    apalis_redis::Config::default()
        .queue(QUEUE_NAME)
        .batch_size(tuning.fetch_size.max(1))
        .heartbeat_interval(tuning.heartbeat)
        .missed_heartbeats(tuning.missed_heartbeats.max(1))
        .emit_events(false)
}

/// Names of the apalis-redis keys Wharf reads for statistics.
pub struct QueueKeys {
    pub active: String,
    pub scheduled: String,
    pub workers: String,
    pub inflight_prefix: String,
    pub dead: String,
    pub done: String,
    pub data: String,
    pub meta: String,
}

impl QueueKeys {
    pub fn new() -> Self {
        let config = apalis_config(QueueTuning::default());
        Self {
            active: config.active_jobs_list(),
            scheduled: config.scheduled_jobs_set(),
            workers: config.workers_set(),
            inflight_prefix: config.inflight_jobs_set(),
            dead: config.dead_jobs_set(),
            done: config.done_jobs_set(),
            data: config.job_data_hash(),
            meta: config.job_meta_hash(),
        }
    }
}

impl Default for QueueKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_the_documented_ones() {
        let keys = QueueKeys::new();
        assert_eq!(keys.active, "wharf_submissions:active");
        assert_eq!(keys.scheduled, "wharf_submissions:scheduled");
        assert_eq!(keys.dead, "wharf_submissions:dead");
        assert_eq!(keys.inflight_prefix, "wharf_submissions:inflight");
    }
}
