//! Queue statistics read from the shard streams themselves: `XLEN`, `XINFO GROUPS` (lag and pending) and the dead-letter streams.

use redis::Value;
use serde::Serialize;

use crate::connection::Redis;
use crate::keys::{Shard, GROUP};
use crate::liveness;
use crate::QueueError;

/// A snapshot of the queue, summed over shards, as `__heartbeat__` and the worker's gauges report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Entries not yet written to S3: waiting plus in flight. Acknowledged entries are deleted
    /// in the same `MULTI`, so this is the shard streams' total `XLEN`.
    pub backlog: u64,
    /// Entries no worker has read yet (the consumer group's lag).
    pub waiting: u64,
    /// Entries read by a worker and not yet acknowledged (the group's pending entries).
    pub inflight: u64,
    /// Dead letters (`XLEN wharf:{<n>}:dead`).
    pub dead: u64,
    /// Workers whose liveness record has not expired.
    pub live_workers: u64,
}

impl QueueStats {
    /// The backlog only (`XLEN` of every shard): one round trip, cheap enough for a sampled
    /// admission check.
    pub async fn backlog(conn: &mut Redis, shards: &[Shard]) -> Result<u64, QueueError> {
        let replies = conn
            .per_shard(shards, |shard, pipe| {
                pipe.cmd("XLEN").arg(shard.stream());
            })
            .await?;
        Ok(replies.iter().flatten().map(number).sum())
    }

    /// Every figure over `0..configured` and every shard a web node registered: what
    /// `__heartbeat__` and the worker's gauges report.
    pub async fn fetch_known(conn: &mut Redis, configured: u16) -> Result<Self, QueueError> {
        let shards = crate::streams::known_shards(conn, configured).await?;
        Self::fetch(conn, &shards).await
    }

    /// Every figure: two round trips, three with `XINFO GROUPS` of non-empty shards.
    pub async fn fetch(conn: &mut Redis, shards: &[Shard]) -> Result<Self, QueueError> {
        let lengths = conn
            .per_shard(shards, |shard, pipe| {
                pipe.cmd("XLEN").arg(shard.stream());
                pipe.cmd("XLEN").arg(shard.dead());
            })
            .await?;
        let mut stats = QueueStats::default();
        let mut busy = Vec::new();
        for (shard, pair) in shards.iter().zip(lengths) {
            let length = pair.first().map(number).unwrap_or(0);
            stats.backlog += length;
            stats.dead += pair.get(1).map(number).unwrap_or(0);
            if length > 0 {
                busy.push((*shard, length));
            }
        }
        if !busy.is_empty() {
            // XINFO GROUPS only on shards that exist (it fails on a missing key).
            let busy_shards: Vec<Shard> = busy.iter().map(|(shard, _)| *shard).collect();
            let groups = conn
                .per_shard(&busy_shards, |shard, pipe| {
                    pipe.cmd("XINFO").arg("GROUPS").arg(shard.stream());
                })
                .await?;
            for ((_, length), reply) in busy.iter().zip(groups.into_iter().flatten()) {
                let (pending, lag) = group_figures(reply);
                stats.inflight += pending;
                // Lag is unknown before any worker created the group (everything waits) and,
                // in Redis 7, when it cannot be computed: then whatever is not pending waits.
                stats.waiting += lag.unwrap_or(length.saturating_sub(pending));
            }
        }
        stats.live_workers = liveness::live_count(conn).await?;
        Ok(stats)
    }
}

/// An integer reply as a count (anything else counts as 0).
fn number(value: &Value) -> u64 {
    match value {
        Value::Int(n) => u64::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// `pending` and `lag` of Wharf's group in an `XINFO GROUPS` reply.
fn group_figures(reply: Value) -> (u64, Option<u64>) {
    let groups = match reply {
        Value::Array(groups) => groups,
        _ => return (0, None),
    };
    for group in groups {
        let fields: Vec<(Value, Value)> = match group {
            Value::Array(flat) => {
                let mut it = flat.into_iter();
                let mut out = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    out.push((k, v));
                }
                out
            }
            Value::Map(kvs) => kvs,
            _ => continue,
        };
        let get = |name: &str| {
            fields.iter().find_map(|(k, v)| match k {
                Value::BulkString(b) if b == name.as_bytes() => Some(v.clone()),
                Value::SimpleString(s) if s == name => Some(v.clone()),
                _ => None,
            })
        };
        let is_ours = matches!(get("name"), Some(Value::BulkString(b)) if b == GROUP.as_bytes())
            || matches!(get("name"), Some(Value::SimpleString(s)) if s == GROUP);
        if !is_ours {
            continue;
        }
        let number = |v: Option<Value>| match v {
            Some(Value::Int(n)) => u64::try_from(n).ok(),
            _ => None,
        };
        return (number(get("pending")).unwrap_or(0), number(get("lag")));
    }
    (0, None)
}
