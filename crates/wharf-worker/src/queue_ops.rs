//! Redis maintenance apalis-redis leaves undone: purging finished jobs, releasing a stopped worker's jobs, re-driving dead letters.

use redis::aio::ConnectionManager;
use redis::Script;
use wharf_queue::keys::QueueKeys;

/// apalis-redis keeps every finished job's data (`{q}:data`), meta hash (`{q}:meta:{id}`) and id
/// (`{q}:done`) forever. This pops up to ARGV[1] ids from the done set and deletes the data and
/// meta of those whose status is `Done`.
const PURGE_DONE: &str = r#"
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
local purged = 0
for _, id in ipairs(ids) do
    local meta = KEYS[3] .. ':' .. id
    local status = redis.call('HGET', meta, 'status')
    if status == 'Done' or status == false then
        redis.call('HDEL', KEYS[2], id)
        redis.call('DEL', meta)
        purged = purged + 1
    end
end
return {#ids, purged}
"#;

/// Puts a worker's in-flight jobs back at the head of the queue and unregisters it (apalis-redis's
/// own graceful stop removes the wrong member and leaves the jobs for the orphan sweep).
const RELEASE_WORKER: &str = r#"
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
    redis.call('LPUSH', KEYS[2], id)
    local meta = KEYS[6] .. ':' .. id
    if redis.call('EXISTS', meta) == 1 then
        redis.call('HSET', meta, 'status', 'Pending')
        redis.call('HDEL', meta, 'locked_at', 'locked_by')
    end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
if #ids > 0 then
    redis.call('DEL', KEYS[5])
    redis.call('LPUSH', KEYS[5], 1)
end
return #ids
"#;

/// Moves up to ARGV[1] dead jobs back to the queue with their attempt count reset.
const REDRIVE: &str = r#"
local ids = redis.call('SPOP', KEYS[1], tonumber(ARGV[1]))
local moved = 0
for _, id in ipairs(ids) do
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
        local meta = KEYS[3] .. ':' .. id
        redis.call('HSET', meta, 'attempts', 0, 'status', 'Pending')
        redis.call('HDEL', meta, 'locked_at', 'locked_by', 'result', 'done_at')
        redis.call('RPUSH', KEYS[4], id)
        moved = moved + 1
    end
end
if moved > 0 then
    redis.call('DEL', KEYS[5])
    redis.call('LPUSH', KEYS[5], 1)
end
return {#ids, moved}
"#;

/// Moves up to ARGV[2] due jobs from `{q}:scheduled` to `{q}:active`. apalis-redis's fetch script
/// promotes *every* due job with one `RPUSH ... unpack(ids)`, which fails in Lua above about 8000
/// ids ("too many results to unpack"): a backlog built up while no worker ran would block every
/// fetch for good. Promoting in chunks first keeps that set small.
const PROMOTE_DUE: &str = r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], 0, ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #ids > 0 then
    redis.call('RPUSH', KEYS[2], unpack(ids))
    redis.call('ZREM', KEYS[1], unpack(ids))
    redis.call('DEL', KEYS[3])
    redis.call('LPUSH', KEYS[3], 1)
end
return #ids
"#;

fn signal_key() -> String {
    format!("{}:signal", wharf_queue::QUEUE_NAME)
}

fn worker_metadata_key(worker: &str) -> String {
    format!("{}:workers:metadata:{worker}", wharf_queue::QUEUE_NAME)
}

/// Promotes every due scheduled job to the active list, 1000 per script call; returns how many.
pub async fn promote_due(conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
    const CHUNK: u64 = 1000;
    let keys = QueueKeys::new();
    let script = Script::new(PROMOTE_DUE);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut total = 0;
    loop {
        let moved: u64 = script
            .key(&keys.scheduled)
            .key(&keys.active)
            .key(signal_key())
            .arg(now)
            .arg(CHUNK)
            .invoke_async(conn)
            .await?;
        total += moved;
        if moved < CHUNK {
            return Ok(total);
        }
    }
}

/// Deletes the data and meta of acknowledged jobs; returns how many were purged.
pub async fn purge_done(conn: &mut ConnectionManager, chunk: usize) -> redis::RedisResult<u64> {
    let keys = QueueKeys::new();
    let script = Script::new(PURGE_DONE);
    let mut total = 0;
    loop {
        let (popped, purged): (u64, u64) = script
            .key(&keys.done)
            .key(&keys.data)
            .key(&keys.meta)
            .arg(chunk)
            .invoke_async(conn)
            .await?;
        total += purged;
        if popped < chunk as u64 {
            return Ok(total);
        }
    }
}

/// Releases `worker`'s in-flight jobs to the queue and unregisters it; returns how many jobs.
pub async fn release_worker(conn: &mut ConnectionManager, worker: &str) -> redis::RedisResult<u64> {
    let keys = QueueKeys::new();
    Script::new(RELEASE_WORKER)
        .key(format!("{}:{worker}", keys.inflight_prefix))
        .key(&keys.active)
        .key(&keys.workers)
        .key(worker_metadata_key(worker))
        .key(signal_key())
        .key(&keys.meta)
        .arg(worker)
        .invoke_async(conn)
        .await
}

/// Moves every dead job back to the queue; returns how many moved.
pub async fn redrive_all(conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
    const CHUNK: u64 = 500;
    let keys = QueueKeys::new();
    let script = Script::new(REDRIVE);
    let mut total = 0;
    loop {
        let (popped, moved): (u64, u64) = script
            .key(&keys.dead)
            .key(&keys.data)
            .key(&keys.meta)
            .key(&keys.active)
            .key(signal_key())
            .arg(CHUNK)
            .invoke_async(conn)
            .await?;
        total += moved;
        if popped < CHUNK {
            return Ok(total);
        }
    }
}

/// Deletes the metadata hashes of workers no longer registered (crashed workers leave one each,
/// and every worker process has a unique name). Uses SCAN: run it rarely.
pub async fn prune_worker_metadata(conn: &mut ConnectionManager) -> redis::RedisResult<u64> {
    let keys = QueueKeys::new();
    let prefix = worker_metadata_key("");
    let mut cursor: u64 = 0;
    let mut pruned = 0;
    loop {
        let (next, found): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(500)
            .query_async(conn)
            .await?;
        for key in found {
            let name = key.trim_start_matches(&prefix);
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(&keys.workers)
                .arg(name)
                .query_async(conn)
                .await?;
            if score.is_none() {
                let _: () = redis::cmd("DEL").arg(&key).query_async(conn).await?;
                pruned += 1;
            }
        }
        if next == 0 {
            return Ok(pruned);
        }
        cursor = next;
    }
}
