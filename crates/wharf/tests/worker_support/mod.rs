//! Shared helpers for the worker integration tests: real redis-server, real s3s-fs, submissions
//! through the `Enqueuer`, the shard streams read back with plain Redis commands, and S3 decoding.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use base64::Engine;
use redis::Value;
use wharf_queue::streams::{self, RawEntry};
use wharf_queue::{Enqueuer, EntryId, QueueStats, Route, Shard, Submission};
use wharf_settings::{Role, Settings};
use wharf_testkit::harness::{self, role_env, FAST_WORKER};
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;

pub use wharf_testkit::harness::BUCKET;

/// Deadline for anything that should happen "soon" on a loaded 2-core host.
pub const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Settings and environments
// ---------------------------------------------------------------------------------------------

/// The AWS SDK reads credentials from the process environment; every test sets the same values.
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", wharf_testkit::s3::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", wharf_testkit::s3::SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/wharf-test"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wharf-test"),
        ] {
            std::env::set_var(k, v);
        }
    });
}

/// Worker environment with every timing at its shipped default: Redis and S3 from the test
/// servers, JSON logs, `extra` on top.
pub fn shipped_env(
    redis_port: u16,
    s3: &S3Server,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    role_env(harness::Role::Worker, redis_port, Some(s3))
        .set_all(extra)
        .vars()
}

/// Worker environment for a test: [`shipped_env`] with the harness's fast timings, `extra` on top.
pub fn worker_env(redis_port: u16, s3: &S3Server, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    role_env(harness::Role::Worker, redis_port, Some(s3))
        .set_all(&FAST_WORKER)
        .set_all(extra)
        .vars()
}

pub fn settings(vars: &[(String, String)]) -> Settings {
    wharf_settings::from_vars(Role::Worker, vars.iter().cloned())
        .unwrap_or_else(|e| panic!("test settings: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Submissions
// ---------------------------------------------------------------------------------------------

/// A submission whose `uri` attribute carries a unique document id, with an arbitrary binary body.
pub fn submission(
    namespace: &str,
    doc_type: &str,
    version: &str,
    n: usize,
    size: usize,
) -> Submission {
    let doc_id = doc_id(n);
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "uri".to_string(),
        format!("/submit/{namespace}/{doc_type}/{version}/{doc_id}"),
    );
    attributes.insert(
        "submission_timestamp".to_string(),
        "2024-05-06T07:08:09.123Z".to_string(),
    );
    attributes.insert("user_agent".to_string(), format!("test-agent/{n}"));
    if n.is_multiple_of(3) {
        attributes.insert("x_debug_id".to_string(), "dbg".to_string());
    }
    let body: Vec<u8> = (0..size).map(|i| ((i * 7 + n * 13) % 256) as u8).collect();
    Submission::new(
        Route {
            namespace: namespace.into(),
            doc_type: doc_type.into(),
            doc_version: version.into(),
            doc_id,
        },
        attributes,
        body.into(),
    )
}

/// The docId of test document `n`: unique, and with varied hex digits as random UUIDs have
/// (the shard hash only sees the low bits of each byte, so ids that differ in one repeated
/// digit would all go to the same shard).
pub fn doc_id(n: usize) -> String {
    let mixed = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    format!("{:08x}-0000-4000-8000-{:012x}", n, mixed)
}

/// `count` submissions of `size` bytes, spread round-robin over `doc_types` in namespace `ns`.
pub fn submissions(ns: &str, doc_types: &[&str], count: usize, size: usize) -> Vec<Submission> {
    (0..count)
        .map(|n| submission(ns, doc_types[n % doc_types.len()], "1", n, size))
        .collect()
}

/// Enqueues through the web role's own `Enqueuer`, with the settings' `QUEUE_SHARDS`.
pub async fn enqueue(settings: &Settings, subs: &[Submission]) -> Vec<EntryId> {
    let conn = wharf_queue::connect(&settings.redis).unwrap_or_else(|e| panic!("connect: {e}"));
    Enqueuer::new(conn, settings.redis.queue_shards)
        .enqueue(subs)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"))
}

// ---------------------------------------------------------------------------------------------
// What landed in S3
// ---------------------------------------------------------------------------------------------

/// One decoded NDJSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub key: String,
    pub attributes: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Every document in the bucket, decoded (gunzip or zstd by the key's suffix, NDJSON, base64).
pub fn landed(s3: &S3Server) -> Vec<Landed> {
    let mut out = Vec::new();
    for key in s3.keys() {
        let bytes = s3.object(&key);
        let mut text = String::new();
        let read = if key.ends_with(".ndjson.zst") {
            zstd::stream::read::Decoder::new(&bytes[..])
                .and_then(|mut d| d.read_to_string(&mut text))
        } else {
            flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut text)
        };
        if read.is_err() {
            continue; // an object being written right now
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad NDJSON line in {key}: {e}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("line is not an object"));
            assert_eq!(
                obj.len(),
                2,
                "a line holds exactly attributes and data: {line}"
            );
            let attributes: BTreeMap<String, String> =
                serde_json::from_value(v["attributes"].clone())
                    .unwrap_or_else(|e| panic!("attributes: {e}"));
            let body = base64::engine::general_purpose::STANDARD
                .decode(
                    v["data"]
                        .as_str()
                        .unwrap_or_else(|| panic!("data not a string")),
                )
                .unwrap_or_else(|e| panic!("data not base64: {e}"));
            out.push(Landed {
                key: key.clone(),
                attributes,
                body,
            });
        }
    }
    out
}

/// Documents per `uri` attribute (the document identity in these tests).
pub fn by_uri(docs: &[Landed]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in docs {
        *counts.entry(d.attributes["uri"].clone()).or_insert(0) += 1;
    }
    counts
}

/// The documents written more than once, with how often, sorted.
pub fn duplicates(docs: &[Landed]) -> Vec<(String, usize)> {
    let mut twice: Vec<(String, usize)> =
        by_uri(docs).into_iter().filter(|(_, n)| *n > 1).collect();
    twice.sort();
    twice
}

pub async fn wait_landed(s3: &S3Server, n: usize, timeout: Duration) -> bool {
    wharf_testkit::eventually(timeout, || {
        let count = by_uri(&landed(s3)).len();
        async move { count >= n }
    })
    .await
}

/// Every submission is in S3 exactly once, byte-identical with every attribute.
pub fn assert_landed_exactly_once(s3: &S3Server, subs: &[Submission]) {
    let docs = landed(s3);
    let twice = duplicates(&docs);
    assert!(
        twice.is_empty(),
        "{} documents written more than once, for example {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(docs.len(), subs.len(), "documents in S3");
    let by_uri: HashMap<&str, &Landed> = docs
        .iter()
        .map(|d| (d.attributes["uri"].as_str(), d))
        .collect();
    for sub in subs {
        let uri = &sub.attributes["uri"];
        let doc = by_uri
            .get(uri.as_str())
            .unwrap_or_else(|| panic!("{uri} not in S3"));
        assert_eq!(doc.attributes, sub.attributes, "attributes of {uri}");
        assert_eq!(doc.body, sub.body.as_ref(), "body of {uri}");
    }
}

// ---------------------------------------------------------------------------------------------
// The shard streams, read with plain Redis commands
// ---------------------------------------------------------------------------------------------

pub fn redis_query<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &[&str]) -> T {
    let mut conn = redis.connection();
    let mut c = redis::cmd(cmd[0]);
    for a in &cmd[1..] {
        c.arg(*a);
    }
    c.query(&mut conn)
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// The shard numbers that have a key `wharf:{<n>}:<suffix>` (`submissions` or `dead`), sorted.
pub fn shards_with(redis: &RedisServer, suffix: &str) -> Vec<Shard> {
    let keys: Vec<String> = redis_query(redis, &["KEYS", &format!("wharf:{{*}}:{suffix}")]);
    let mut shards: Vec<Shard> = keys
        .iter()
        .filter_map(|k| {
            k.strip_prefix("wharf:{")?
                .strip_suffix(&format!("}}:{suffix}"))?
                .parse()
                .ok()
        })
        .map(Shard)
        .collect();
    shards.sort();
    shards
}

/// Entries not yet written to S3: the shard streams' total `XLEN`.
pub fn backlog(redis: &RedisServer) -> u64 {
    shards_with(redis, "submissions")
        .iter()
        .map(|s| redis_query::<u64>(redis, &["XLEN", &s.stream()]))
        .sum()
}

/// In-flight entries: delivered to a worker, not acknowledged (`XPENDING` of the group, summed).
pub fn inflight(redis: &RedisServer) -> u64 {
    let mut conn = redis.connection();
    shards_with(redis, "submissions")
        .iter()
        .map(|s| {
            let summary: Result<Value, _> = redis::cmd("XPENDING")
                .arg(s.stream())
                .arg(wharf_queue::GROUP)
                .query(&mut conn);
            match summary {
                Ok(Value::Array(parts)) => match parts.first() {
                    Some(Value::Int(n)) => *n as u64,
                    _ => 0,
                },
                // No group yet: no worker has read this shard.
                Err(e) if e.code() == Some("NOGROUP") => 0,
                other => panic!("XPENDING {}: {other:?}", s.stream()),
            }
        })
        .sum()
}

/// Pending entries per consumer (worker name), summed over shards.
pub fn pending_by_consumer(redis: &RedisServer) -> BTreeMap<String, u64> {
    let mut conn = redis.connection();
    let mut out = BTreeMap::new();
    for shard in shards_with(redis, "submissions") {
        let summary: Result<Value, _> = redis::cmd("XPENDING")
            .arg(shard.stream())
            .arg(wharf_queue::GROUP)
            .query(&mut conn);
        let Ok(Value::Array(parts)) = summary else {
            continue;
        };
        let Some(Value::Array(consumers)) = parts.get(3) else {
            continue;
        };
        for consumer in consumers {
            let pair: (String, u64) = redis::from_redis_value(consumer.clone())
                .unwrap_or_else(|e| panic!("XPENDING consumer {consumer:?}: {e}"));
            *out.entry(pair.0).or_insert(0) += pair.1;
        }
    }
    out
}

/// Every dead letter, shard by shard, oldest first.
pub fn dead_letters(redis: &RedisServer) -> Vec<RawEntry> {
    let mut conn = redis.connection();
    shards_with(redis, "dead")
        .into_iter()
        .flat_map(|shard| {
            let reply: Value = redis::cmd("XRANGE")
                .arg(shard.dead())
                .arg("-")
                .arg("+")
                .query(&mut conn)
                .unwrap_or_else(|e| panic!("XRANGE {}: {e}", shard.dead()));
            streams::entries_of(shard, reply)
        })
        .collect()
}

/// How many dead letters there are (`XLEN` of every dead-letter stream).
pub fn dead_count(redis: &RedisServer) -> u64 {
    shards_with(redis, "dead")
        .iter()
        .map(|s| redis_query::<u64>(redis, &["XLEN", &s.dead()]))
        .sum()
}

/// The value of field `name` of an entry, as text (lossy).
pub fn field(entry: &RawEntry, name: &str) -> Option<String> {
    entry
        .fields
        .as_ref()?
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// `entries-added` of `XINFO STREAM` for one shard: every entry ever written to it.
pub fn entries_added(redis: &RedisServer, shard: Shard) -> u64 {
    let info: HashMap<String, Value> = redis_query(redis, &["XINFO", "STREAM", &shard.stream()]);
    match info.get("entries-added") {
        Some(Value::Int(n)) => *n as u64,
        other => panic!("entries-added of {}: {other:?}", shard.stream()),
    }
}

/// Workers whose liveness record is in `wharf:workers:live`.
pub fn live_workers(redis: &RedisServer) -> u64 {
    redis_query(redis, &["ZCARD", "wharf:workers:live"])
}

/// Waits until at least `n` workers are live.
pub async fn wait_live(redis: &RedisServer, n: u64) -> bool {
    wharf_testkit::eventually(LONG, || {
        let live = live_workers(redis);
        async move { live >= n }
    })
    .await
}

/// `QueueStats::fetch` over every known shard, as `__heartbeat__` and the gauges see it.
pub async fn queue_stats(settings: &Settings) -> QueueStats {
    let mut conn = wharf_queue::connect(&settings.redis).unwrap_or_else(|e| panic!("connect: {e}"));
    QueueStats::fetch_known(&mut conn, settings.redis.queue_shards)
        .await
        .unwrap_or_else(|e| panic!("queue stats: {e}"))
}

/// Waits until the queue is empty: nothing in the streams, nothing pending.
pub async fn wait_drained(redis: &RedisServer, timeout: Duration) -> bool {
    wharf_testkit::eventually(timeout, || {
        let empty = backlog(redis) == 0 && inflight(redis) == 0;
        async move { empty }
    })
    .await
}

/// Polls `check` until `until`, failing the test the first time it does not hold.
pub async fn assert_throughout(
    until: std::time::Instant,
    what: &str,
    mut check: impl FnMut() -> bool,
) {
    loop {
        assert!(check(), "{what}");
        if std::time::Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

pub fn nop_metrics() -> cadence::StatsdClient {
    cadence::StatsdClient::from_sink("wharf", cadence::NopMetricSink)
}

pub fn udp_metrics(port: u16) -> cadence::StatsdClient {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let sink = cadence::UdpMetricSink::from(("127.0.0.1", port), socket)
        .unwrap_or_else(|e| panic!("sink: {e}"));
    cadence::StatsdClient::from_sink("wharf", sink)
}

/// The sum of the values of StatsD lines `name:<value>|...` (counters with their counts).
pub fn metric_sum(lines: &[String]) -> i64 {
    wharf_testkit::statsd::sum_of(lines)
}

/// Lines that carry the tag `tag` (`key:value`).
pub fn tagged<'a>(lines: &'a [String], tag: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| {
            l.split("|#")
                .nth(1)
                .is_some_and(|tags| tags.split(',').any(|t| t == tag))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Workers and other wharf processes
// ---------------------------------------------------------------------------------------------

/// An in-process worker (`wharf_worker::run`) stopped by [`InProcessWorker::stop`].
///
/// It runs on its own thread and runtime, as in the binary: rustc cannot prove the worker's
/// future `Send` for `tokio::spawn` (a higher-ranked lifetime limitation), and `block_on` needs
/// no such proof.
pub struct InProcessWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), wharf_worker::WorkerError>>>,
}

impl InProcessWorker {
    pub fn start(settings: Settings, metrics: cadence::StatsdClient) -> Self {
        aws_env();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("worker runtime: {e}"))
                .block_on(wharf_worker::run(settings, metrics, async move {
                    let _ = rx.await;
                }))
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Asks the worker to stop (as SIGTERM does) and waits for it.
    pub async fn stop(mut self) -> Result<(), wharf_worker::WorkerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let thread = self
            .thread
            .take()
            .unwrap_or_else(|| panic!("stopped twice"));
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|_| panic!("the worker thread panicked"))
    }
}

impl Drop for InProcessWorker {
    /// A test that failed half-way still stops its worker (the thread ends with the process).
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The `wharf` binary under test.
pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

pub use wharf_testkit::process::WharfProcess;

/// Starts `wharf worker` with exactly `vars` in its environment.
pub fn spawn_worker(vars: &[(String, String)]) -> WharfProcess {
    WharfProcess::spawn(WHARF, &["worker"], vars)
}

/// Starts `wharf {role}` with exactly `vars` in its environment.
pub fn spawn_role(role: &str, vars: &[(String, String)]) -> WharfProcess {
    WharfProcess::spawn(WHARF, &[role], vars)
}

/// `wharf ARGS` with exactly `vars` in its environment ([`wharf_testkit::process::command`]).
pub fn wharf_command(args: &[&str], vars: &[(String, String)]) -> Command {
    wharf_testkit::process::command(WHARF.as_ref(), args, vars)
}

/// Runs `wharf ARGS` to completion off the async runtime: (success, stdout + stderr).
pub async fn run_wharf(args: &[&str], vars: &[(String, String)]) -> (bool, String) {
    let out = wharf_testkit::process::run(WHARF, args, vars).await;
    (out.status.success(), wharf_testkit::process::text(&out))
}

/// Environment of `wharf web` on a port of its choosing against `redis_port`, `extra` on top.
pub fn web_env(redis_port: u16, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    role_env(harness::Role::Web, redis_port, None)
        .set_all(extra)
        .vars()
}

/// Starts `wharf web` on a free port against `redis_port` and waits until it listens.
pub async fn start_web(redis_port: u16, extra: &[(&str, &str)]) -> (WharfProcess, u16) {
    let web = spawn_role("web", &web_env(redis_port, extra));
    let addr = web
        .listening_on(LONG)
        .await
        .unwrap_or_else(|| panic!("{} never listened: {:?}", web.name(), web.output()));
    (web, addr.port())
}
