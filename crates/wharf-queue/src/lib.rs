//! The contract between Wharf's web and worker roles: the queue entry, the shard streams and their keys, queue statistics and worker liveness.
//!
//! Everything both roles must agree on lives here, so that a rolling deploy changes it in one place.

pub mod connection;
pub mod enqueue;
pub mod entry;
pub mod health;
pub mod keys;
pub mod liveness;
pub mod stats;
pub mod streams;

pub use connection::{connect, Redis};
pub use enqueue::{Enqueuer, EntryId};
pub use entry::{Poison, Route, Submission, SCHEMA_VERSION};
pub use keys::{Shard, CANARY_NAMESPACE, CANARY_TOKEN_HEADER, GROUP};
pub use stats::QueueStats;

/// Errors talking to the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// A Redis command failed: the connection, a timeout, or an error reply.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The attributes could not be encoded as JSON for the entry's `at` field.
    #[error("entry encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// Not written: a route part is empty or holds '/', so the `r` field could not be split back
    /// into the four parts. Holds the route joined with '/'.
    #[error("route `{0}`: a part is empty or holds '/'")]
    Route(String),
    /// `WAIT` confirmed fewer replicas than `REDIS_MIN_REPLICAS_ACK` within its timeout.
    #[error("write reached {reached} of the {wanted} replica(s) REDIS_MIN_REPLICAS_ACK asks for")]
    NotReplicated {
        /// Replicas asked for: `REDIS_MIN_REPLICAS_ACK`.
        wanted: u8,
        /// Replicas `WAIT` counted; 0 when it gave no count, or when a cluster master no longer
        /// held the write (a failover between the `XADD` and the `WAIT`).
        reached: i64,
    },
    /// Redis may evict keys, so queued documents could vanish; see [`health::check_eviction`].
    #[error("Redis maxmemory-policy is `{policy}` (on {node}): under memory pressure Redis would silently delete queued documents. Set maxmemory-policy to noeviction (on ElastiCache, in the cluster's parameter group), or set REDIS_ALLOW_EVICTION_DATA_LOSS=true to start anyway and accept that loss")]
    EvictionPolicy {
        /// The node's `maxmemory_policy`, as `INFO memory` reports it.
        policy: String,
        /// Which node: `the Redis server`, or `master <i> of <n> in the cluster`.
        node: String,
    },
}

impl QueueError {
    /// Whether this error is the operator's to fix before the role can run (exit code 2), not
    /// an outage to wait out.
    pub fn is_misconfiguration(&self) -> bool {
        matches!(self, QueueError::EvictionPolicy { .. })
    }
}
