//! The contract between Wharf's web and worker roles: the submission job, Redis keys, queue statistics and worker liveness.
//!
//! Everything both roles must agree on lives here, so that a rolling deploy changes it in one place.

pub mod connection;
pub mod enqueue;
pub mod job;
pub mod keys;
pub mod liveness;
pub mod stats;

pub use connection::connect;
pub use enqueue::Enqueuer;
pub use job::{Route, Submission, SCHEMA_VERSION};
pub use keys::{apalis_config, QueueTuning, CANARY_NAMESPACE, QUEUE_NAME};
pub use stats::QueueStats;

/// Errors talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("apalis-redis: {0}")]
    Apalis(#[from] apalis_redis::Error),
    #[error("job encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("job schema version {found} is newer than this build understands ({supported})")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
}
