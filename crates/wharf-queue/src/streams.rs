//! The worker's side of the shard streams: the consumer group, reading and claiming entries, renewing leases, acknowledging a batch, dead letters and redrive.
//!
//! Replies are parsed from raw values rather than redis-rs's typed stream replies, because an
//! entry written by anyone (a bug, an operator, a fuzzer) may hold field names that are not UTF-8,
//! and one such entry must never make a whole read fail.

use std::time::Duration;

use redis::{Script, Value};

use crate::connection::{run, Redis};
use crate::keys::{Shard, GROUP, SHARDS_KEY};
use crate::QueueError;

/// One stream entry as Redis returned it, fields still raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The shard whose stream (`wharf:{<n>}:submissions`, or its dead letters) held it.
    pub shard: Shard,
    /// The stream entry id, `<ms>-<seq>` by the Redis server's clock.
    pub id: String,
    /// Field/value pairs, or `None` when the reply's shape was not a field list.
    pub fields: Option<Vec<(Vec<u8>, Vec<u8>)>>,
}

/// Milliseconds since the epoch at which Redis added the entry with stream id `id`
/// (`<ms>-<seq>`, by the Redis server's clock).
pub fn added_ms(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// Creates the consumer group on each shard stream (and the stream, if missing).
///
/// The group starts at `0`, so entries written before any worker existed are read too.
pub async fn ensure_groups(conn: &mut Redis, shards: &[Shard]) -> Result<(), QueueError> {
    for shard in shards {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(shard.stream())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Records that web nodes write to `0..count`, so workers read those shards even if their own
/// `QUEUE_SHARDS` is smaller.
pub async fn register_shards(conn: &mut Redis, count: u16) -> Result<(), QueueError> {
    let members: Vec<u16> = (0..count.max(1)).collect();
    run(conn, redis::cmd("SADD").arg(SHARDS_KEY).arg(members)).await
}

/// Shards `0..configured` and every shard a web node registered, in order.
pub async fn known_shards(conn: &mut Redis, configured: u16) -> Result<Vec<Shard>, QueueError> {
    let registered: Vec<u16> = redis::cmd("SMEMBERS")
        .arg(SHARDS_KEY)
        .query_async(conn)
        .await?;
    let mut shards: Vec<Shard> = Shard::all(configured)
        .chain(registered.into_iter().map(Shard))
        .collect();
    shards.sort_unstable();
    shards.dedup();
    Ok(shards)
}

/// The shards to cover, `0..configured` and every shard a web node registered, re-read from
/// the registry at most every `every`: for the worker's reads and the web's admission sampler.
#[derive(Debug, Clone)]
pub struct KnownShards {
    configured: u16,
    every: Duration,
    shards: Vec<Shard>,
    read_at: Option<tokio::time::Instant>,
}

impl KnownShards {
    /// Starts with `0..configured`, until the first [`KnownShards::refresh`].
    pub fn new(configured: u16, every: Duration) -> Self {
        Self {
            configured,
            every,
            shards: Shard::all(configured).collect(),
            read_at: None,
        }
    }

    /// The shards as last read, sorted and without repeats; `0..configured` until the first
    /// successful [`KnownShards::refresh`].
    pub fn current(&self) -> &[Shard] {
        &self.shards
    }

    /// Re-reads the registry if it was never read or `every` has passed; returns whether it did.
    /// On an error the list stays as it was, and the next call tries again.
    pub async fn refresh(&mut self, conn: &mut Redis) -> Result<bool, QueueError> {
        if self.read_at.is_some_and(|t| t.elapsed() < self.every) {
            return Ok(false);
        }
        self.shards = known_shards(conn, self.configured).await?;
        self.read_at = Some(tokio::time::Instant::now());
        Ok(true)
    }
}

/// How often a cluster reader polls its shards while they are all empty.
const CLUSTER_POLL: Duration = Duration::from_millis(100);

/// New entries for `consumer`, at most `count` per shard, waiting up to `block` for some.
///
/// One Redis: `XREADGROUP ... COUNT count BLOCK block STREAMS <every shard> >`, one blocking
/// call. A cluster cannot read streams of different slots in one call, and a blocking read
/// would hold the node's shared connection, so it reads every shard without blocking,
/// concurrently, and polls every 100 ms until something arrives or `block` has passed.
pub async fn read_new(
    conn: &mut Redis,
    shards: &[Shard],
    consumer: &str,
    count: usize,
    block: Duration,
) -> Result<Vec<RawEntry>, QueueError> {
    if !conn.is_cluster() {
        return read_group(conn, shards, consumer, count, Some(block)).await;
    }
    let started = tokio::time::Instant::now();
    loop {
        let reads = futures::future::join_all(shards.iter().map(|shard| {
            let mut conn = conn.clone();
            async move {
                read_group(
                    &mut conn,
                    std::slice::from_ref(shard),
                    consumer,
                    count,
                    None,
                )
                .await
            }
        }))
        .await;
        let mut out = Vec::new();
        let mut first_error = None;
        for read in reads {
            match read {
                Ok(entries) => out.extend(entries),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Entries read from healthy shards are delivered even while another shard fails: they
        // are pending for this consumer now, and must not wait for the claim idle time.
        if !out.is_empty() {
            return Ok(out);
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if started.elapsed() >= block {
            return Ok(out);
        }
        tokio::time::sleep(CLUSTER_POLL.min(block.saturating_sub(started.elapsed()))).await;
    }
}

/// One `XREADGROUP` over `shards`, blocking for `block` if given.
async fn read_group(
    conn: &mut Redis,
    shards: &[Shard],
    consumer: &str,
    count: usize,
    block: Option<Duration>,
) -> Result<Vec<RawEntry>, QueueError> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(GROUP)
        .arg(consumer)
        .arg("COUNT")
        .arg(count.max(1));
    if let Some(block) = block {
        cmd.arg("BLOCK")
            .arg(u64::try_from(block.as_millis()).unwrap_or(u64::MAX));
    }
    cmd.arg("STREAMS");
    for shard in shards {
        cmd.arg(shard.stream());
    }
    for _ in shards {
        cmd.arg(">");
    }
    let reply: Value = cmd.query_async(conn).await?;
    let mut out = Vec::new();
    // Nil when BLOCK ran out; else [[key, [entry...]]...] (RESP2) or a map (RESP3).
    for (key, entries) in pairs(reply) {
        let Some(shard) = shard_of(&key, shards) else {
            continue;
        };
        out.extend(entries_of(shard, entries));
    }
    Ok(out)
}

/// One page of `XAUTOCLAIM`: entries idle longer than `min_idle` (by the Redis clock) handed to
/// `consumer`. Returns the cursor to continue from (`0-0` when done), the entries, and the ids
/// that were pending but no longer exist (Redis drops them from the pending list itself).
pub async fn autoclaim(
    conn: &mut Redis,
    shard: Shard,
    consumer: &str,
    min_idle: Duration,
    cursor: &str,
    count: usize,
) -> Result<(String, Vec<RawEntry>, usize), QueueError> {
    let reply: Value = redis::cmd("XAUTOCLAIM")
        .arg(shard.stream())
        .arg(GROUP)
        .arg(consumer)
        .arg(u64::try_from(min_idle.as_millis()).unwrap_or(u64::MAX))
        .arg(cursor)
        .arg("COUNT")
        .arg(count.max(1))
        .query_async(conn)
        .await?;
    let Value::Array(mut parts) = reply else {
        return Ok(("0-0".into(), Vec::new(), 0));
    };
    let deleted = match parts.get(2) {
        Some(Value::Array(ids)) => ids.len(),
        _ => 0,
    };
    let entries = if parts.len() > 1 {
        entries_of(shard, parts.swap_remove(1))
    } else {
        Vec::new()
    };
    let next = parts
        .into_iter()
        .next()
        .and_then(text)
        .unwrap_or_else(|| "0-0".into());
    Ok((next, entries, deleted))
}

/// Resets the idle time of `consumer`'s own pending entries (`XCLAIM ... 0 <ids> JUSTID`), so no
/// other worker claims entries that are only waiting for a slow batch or an S3 outage. Does not
/// count as a delivery.
pub async fn renew(
    conn: &mut Redis,
    shard: Shard,
    consumer: &str,
    ids: &[String],
) -> Result<usize, QueueError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let renewed: Vec<Value> = redis::cmd("XCLAIM")
        .arg(shard.stream())
        .arg(GROUP)
        .arg(consumer)
        .arg(0)
        .arg(ids)
        .arg("JUSTID")
        .query_async(conn)
        .await?;
    Ok(renewed.len())
}

/// Hands `ids` back at once: marks them idle for `idle`, so the next `XAUTOCLAIM` of any worker
/// takes them (a stopping worker's entries that never reached a batch).
pub async fn hand_back(
    conn: &mut Redis,
    shard: Shard,
    consumer: &str,
    ids: &[String],
    idle: Duration,
) -> Result<(), QueueError> {
    if ids.is_empty() {
        return Ok(());
    }
    run(
        conn,
        redis::cmd("XCLAIM")
            .arg(shard.stream())
            .arg(GROUP)
            .arg(consumer)
            .arg(0)
            .arg(ids)
            .arg("IDLE")
            .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
            .arg("JUSTID"),
    )
    .await
}

/// KEYS[1] = a shard stream, ARGV[1] = the group, ARGV[2..] = entry ids: acknowledges and
/// deletes them in one atomic step; returns how many were still pending. A script rather than
/// `MULTI`: once Redis is over `maxmemory`, it refuses every `MULTI` block, which would leave a
/// full Redis unable to drain, while `XACK` and `XDEL` in a script still run. Chunked, because
/// Lua's `unpack` is limited to a few thousand values.
const ACK: &str = r#"
local acked = 0
for i = 2, #ARGV, 500 do
    local last = math.min(i + 499, #ARGV)
    acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, i, last))
    redis.call('XDEL', KEYS[1], unpack(ARGV, i, last))
end
return acked
"#;

/// Acknowledges and deletes a written batch's entries: per shard, `XACK` and `XDEL` in one
/// script (`ACK`), all shards in one round trip (one per shard, concurrently, on a cluster).
/// Returns how many entries were still pending (an entry another worker acknowledged first is
/// not counted twice).
pub async fn ack(conn: &mut Redis, by_shard: &[(Shard, Vec<String>)]) -> Result<u64, QueueError> {
    let busy: Vec<(Shard, &Vec<String>)> = by_shard
        .iter()
        .filter(|(_, ids)| !ids.is_empty())
        .map(|(shard, ids)| (*shard, ids))
        .collect();
    if busy.is_empty() {
        return Ok(0);
    }
    let shards: Vec<Shard> = busy.iter().map(|(shard, _)| *shard).collect();
    let replies = conn
        .per_shard(&shards, |shard, pipe| {
            let Some((_, ids)) = busy.iter().find(|(s, _)| *s == shard) else {
                return;
            };
            pipe.cmd("EVAL")
                .arg(ACK)
                .arg(1)
                .arg(shard.stream())
                .arg(GROUP)
                .arg(*ids);
        })
        .await?;
    Ok(replies
        .iter()
        .flatten()
        .filter_map(|r| match r {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        })
        .sum())
}

/// Moves entries from a shard stream to its dead letters, atomically: each is copied with the
/// reason (`dead_reason`) and its old id (`dead_from`), then acknowledged and deleted. An id that
/// is already gone is skipped. Returns how many moved.
const DEAD_LETTER: &str = r#"
local moved = 0
for i = 3, #ARGV do
    local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
    if #found == 1 then
        local fields = found[1][2]
        table.insert(fields, 'dead_reason')
        table.insert(fields, ARGV[2])
        table.insert(fields, 'dead_from')
        table.insert(fields, ARGV[i])
        redis.call('XADD', KEYS[2], '*', unpack(fields))
        moved = moved + 1
    end
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    redis.call('XDEL', KEYS[1], ARGV[i])
end
return moved
"#;

/// See the `DEAD_LETTER` script.
pub async fn dead_letter(
    conn: &mut Redis,
    shard: Shard,
    ids: &[String],
    reason: &str,
) -> Result<u64, QueueError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let reason: String = reason.chars().take(500).collect();
    let script = Script::new(DEAD_LETTER);
    let mut invocation = script.key(shard.stream());
    invocation.key(shard.dead()).arg(GROUP).arg(reason);
    for id in ids {
        invocation.arg(id);
    }
    Ok(invocation.invoke_async(conn).await?)
}

/// Moves up to ARGV[1] dead letters back to the shard stream, without the `dead_*` fields, as
/// new entries; returns how many moved.
const REDRIVE: &str = r#"
local found = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[1]))
for _, entry in ipairs(found) do
    local fields = {}
    local raw = entry[2]
    for i = 1, #raw, 2 do
        if raw[i] ~= 'dead_reason' and raw[i] ~= 'dead_from' then
            table.insert(fields, raw[i])
            table.insert(fields, raw[i + 1])
        end
    end
    if #fields == 0 then
        fields = {'dead_empty', '1'}
    end
    redis.call('XADD', KEYS[2], '*', unpack(fields))
    redis.call('XDEL', KEYS[1], entry[1])
end
return #found
"#;

/// Moves every dead letter of `shards` back to its shard stream; returns how many moved.
pub async fn redrive(conn: &mut Redis, shards: &[Shard]) -> Result<u64, QueueError> {
    const CHUNK: u64 = 200;
    let script = Script::new(REDRIVE);
    let mut total = 0;
    for shard in shards {
        loop {
            let moved: u64 = script
                .key(shard.dead())
                .key(shard.stream())
                .arg(CHUNK)
                .invoke_async(conn)
                .await?;
            total += moved;
            if moved < CHUNK {
                break;
            }
        }
    }
    Ok(total)
}

/// A queued entry as Redis holds it, with its decoding (or why it cannot be decoded).
pub type Queued = (RawEntry, Result<crate::Submission, crate::Poison>);

/// Every entry of shards `0..shards`, decoded where possible, oldest first per shard (for tools
/// and tests; it reads whole streams).
pub fn queued_blocking(
    conn: &mut redis::Connection,
    shards: u16,
) -> Result<Vec<Queued>, QueueError> {
    let mut out = Vec::new();
    for shard in Shard::all(shards) {
        let reply: Value = redis::cmd("XRANGE")
            .arg(shard.stream())
            .arg("-")
            .arg("+")
            .query(conn)?;
        for entry in entries_of(shard, reply) {
            let decoded = match entry.fields.clone() {
                Some(fields) => crate::Submission::decode(fields),
                None => Err(crate::Poison::Shape),
            };
            out.push((entry, decoded));
        }
    }
    Ok(out)
}

/// (key, entries) pairs of an `XREADGROUP` reply, whether RESP2 arrays or a RESP3 map.
fn pairs(reply: Value) -> Vec<(Vec<u8>, Value)> {
    match reply {
        Value::Array(streams) => streams
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let entries = kv.pop()?;
                    let key = bytes(kv.pop()?)?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(kvs) => kvs
            .into_iter()
            .filter_map(|(k, v)| Some((bytes(k)?, v)))
            .collect(),
        _ => Vec::new(),
    }
}

fn shard_of(key: &[u8], shards: &[Shard]) -> Option<Shard> {
    shards
        .iter()
        .copied()
        .find(|s| s.stream().as_bytes() == key)
}

/// Entries of a `[[id, [f, v, ...]], ...]` reply (`XRANGE`, `XREADGROUP`'s per-stream list); an
/// entry whose fields are missing or odd keeps its id with `fields: None`, so it can be
/// dead-lettered rather than lost or retried forever.
pub fn entries_of(shard: Shard, value: Value) -> Vec<RawEntry> {
    let Value::Array(items) = value else {
        return Vec::new();
    };
    items
        .into_iter()
        .filter_map(|item| {
            let Value::Array(mut parts) = item else {
                return None;
            };
            if parts.is_empty() {
                return None;
            }
            let fields_value = if parts.len() > 1 {
                parts.swap_remove(1)
            } else {
                Value::Nil
            };
            let id = text(parts.swap_remove(0))?;
            let fields = match fields_value {
                Value::Array(flat) if flat.len() % 2 == 0 => {
                    let mut out = Vec::with_capacity(flat.len() / 2);
                    let mut it = flat.into_iter();
                    let mut ok = true;
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        match (bytes(k), bytes(v)) {
                            (Some(k), Some(v)) => out.push((k, v)),
                            _ => ok = false,
                        }
                    }
                    ok.then_some(out)
                }
                Value::Map(kvs) => kvs
                    .into_iter()
                    .map(|(k, v)| Some((bytes(k)?, bytes(v)?)))
                    .collect(),
                _ => None,
            };
            Some(RawEntry { shard, id, fields })
        })
        .collect()
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(n) => Some(n.to_string().into_bytes()),
        Value::Okay => Some(b"OK".to_vec()),
        _ => None,
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b).ok())
}
