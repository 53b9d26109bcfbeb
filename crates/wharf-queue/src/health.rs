//! What Redis says about its own fitness for the queue: whether the node takes writes, how full its memory is, and whether it may evict queued documents.

use redis::Value;

use crate::connection::Redis;
use crate::QueueError;

/// One master's memory as `INFO memory` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMemory {
    /// `used_memory`, bytes.
    pub used: u64,
    /// `maxmemory`, bytes; 0 means no limit.
    pub max: u64,
    /// `maxmemory_policy`.
    pub policy: String,
}

impl NodeMemory {
    /// Parses the `key:value` lines of `INFO memory`.
    pub fn parse(info: &str) -> Self {
        let mut memory = NodeMemory {
            used: 0,
            max: 0,
            policy: String::new(),
        };
        for line in info.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            match key {
                "used_memory" => memory.used = value.parse().unwrap_or(0),
                "maxmemory" => memory.max = value.parse().unwrap_or(0),
                "maxmemory_policy" => memory.policy = value.to_string(),
                _ => {}
            }
        }
        memory
    }
}

/// The fullest master's memory, for admission and `__heartbeat__`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryUse {
    /// That master's `used_memory`, bytes.
    pub used: u64,
    /// That master's `maxmemory`, bytes; never 0 (a master without a limit is never the fullest).
    pub max: u64,
}

impl MemoryUse {
    /// The master with the highest `used / max`, among those with a `maxmemory`; `None` when no
    /// master has one (admission then relies on the depth limit alone).
    pub fn fullest(nodes: &[NodeMemory]) -> Option<Self> {
        nodes
            .iter()
            .filter(|n| n.max > 0)
            .map(|n| MemoryUse {
                used: n.used,
                max: n.max,
            })
            .max_by(|a, b| {
                (u128::from(a.used) * u128::from(b.max))
                    .cmp(&(u128::from(b.used) * u128::from(a.max)))
            })
    }

    /// Used memory as a percentage of `maxmemory`.
    pub fn percent(self) -> f64 {
        if self.max == 0 {
            return 0.0;
        }
        self.used as f64 * 100.0 / self.max as f64
    }
}

/// `INFO memory` of every master (of the one Redis, standalone).
pub async fn memory(conn: &mut Redis) -> Result<Vec<NodeMemory>, QueueError> {
    let replies = conn
        .on_every_master(redis::cmd("INFO").arg("memory"))
        .await?;
    Ok(replies
        .into_iter()
        .filter_map(|v| text(v).map(|s| NodeMemory::parse(&s)))
        .collect())
}

/// What a role logs when it starts on a Redis that may evict, because the operator said so.
pub const EVICTION_RISK_ACCEPTED: &str = "REDIS_ALLOW_EVICTION_DATA_LOSS=true: starting anyway; Redis may silently delete queued documents that were answered 200";

/// Refuses to run on a Redis that may evict keys: anything but `noeviction` lets Redis delete
/// queued documents under memory pressure. Reads `INFO` rather than `CONFIG GET`, which
/// ElastiCache does not allow, on every master.
///
/// With `allow` (`REDIS_ALLOW_EVICTION_DATA_LOSS`), the risk is returned as `Ok(Some(_))` for the
/// caller to log loudly, instead of as an error.
pub async fn check_eviction(
    conn: &mut Redis,
    allow: bool,
) -> Result<Option<QueueError>, QueueError> {
    let cluster = conn.is_cluster();
    match judge_eviction(&memory(conn).await?, cluster) {
        Ok(()) => Ok(None),
        Err(risk) if allow => Ok(Some(risk)),
        Err(risk) => Err(risk),
    }
}

/// [`check_eviction`] on figures already read.
pub fn judge_eviction(nodes: &[NodeMemory], cluster: bool) -> Result<(), QueueError> {
    for (index, node) in nodes.iter().enumerate() {
        // An empty policy means a server that does not report one; nothing to judge.
        if !node.policy.is_empty() && node.policy != "noeviction" {
            return Err(QueueError::EvictionPolicy {
                policy: node.policy.clone(),
                node: if cluster {
                    format!("master {} of {} in the cluster", index + 1, nodes.len())
                } else {
                    "the Redis server".into()
                },
            });
        }
    }
    Ok(())
}

/// Whether the node behind a standalone connection takes writes (`ROLE` says `master`). A
/// demoted primary still answers `PING` and reads, so this is what tells `__heartbeat__` that
/// writes fail. A cluster client routes each write to its slot's current master, so there it is
/// a `PING`; a missing master shows up as its shards' commands failing.
pub async fn takes_writes(conn: &mut Redis) -> Result<bool, QueueError> {
    if conn.is_cluster() {
        crate::connection::ping(conn).await?;
        return Ok(true);
    }
    let role: Value = redis::cmd("ROLE").query_async(conn).await?;
    let first = match role {
        Value::Array(mut parts) if !parts.is_empty() => text(parts.swap_remove(0)),
        _ => None,
    };
    Ok(first.as_deref() == Some("master"))
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b).ok(),
        Value::SimpleString(s) | Value::VerbatimString { text: s, .. } => Some(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info_memory() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:33554432\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(
            NodeMemory::parse(info),
            NodeMemory {
                used: 1_048_576,
                max: 33_554_432,
                policy: "allkeys-lru".into()
            }
        );
    }

    #[test]
    fn the_fullest_master_is_the_highest_ratio_not_the_most_bytes() {
        let nodes = [
            NodeMemory {
                used: 900,
                max: 1000,
                policy: "noeviction".into(),
            },
            NodeMemory {
                used: 5000,
                max: 100_000,
                policy: "noeviction".into(),
            },
            NodeMemory {
                used: 10,
                max: 0,
                policy: "noeviction".into(),
            },
        ];
        assert_eq!(
            MemoryUse::fullest(&nodes),
            Some(MemoryUse {
                used: 900,
                max: 1000
            })
        );
        assert_eq!(MemoryUse::fullest(&nodes[2..]), None);
    }
}
