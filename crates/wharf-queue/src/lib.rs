//! The contract between Wharf's web and worker roles: the queue entry, the shard streams and their keys, queue statistics and worker liveness.
//!
//! Everything both roles must agree on lives here, so that a rolling deploy changes it in one place.

pub mod connection;
pub mod enqueue;
pub mod entry;
pub mod keys;
pub mod liveness;
pub mod stats;
pub mod streams;

pub use connection::connect;
pub use enqueue::{Enqueuer, EntryId};
pub use entry::{Poison, Route, Submission, SCHEMA_VERSION};
pub use keys::{Shard, CANARY_NAMESPACE, GROUP};
pub use stats::QueueStats;

/// Errors talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("entry encoding: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("route `{0}`: a part is empty or holds '/'")]
    Route(String),
}
