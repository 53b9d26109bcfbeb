//! `__heartbeat__`'s checks: Redis (reachable and taking writes), its memory, queue depth, dead letters and live workers, cached and run once for concurrent callers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadence::{CountedExt, StatsdClient};
use serde::Serialize;
use tokio::sync::Mutex;
use wharf_queue::health::{memory, takes_writes, MemoryUse, NodeMemory};
use wharf_queue::QueueStats;
use wharf_queue::Redis;

/// Check levels, ordered so that the overall status is the worst one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The check passed.
    Ok,
    /// Worth a look, but `__heartbeat__` still answers 200: every web node shares the Redis, so a
    /// queue-wide condition must not take them all out of the load balancer.
    Warning,
    /// Redis refuses writes, or a check's Redis call failed or timed out: `__heartbeat__` answers
    /// 500, so the load balancer stops sending this node submissions it would refuse.
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// The body of `__heartbeat__`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The worst level among the checks; `error` makes the answer 500.
    pub status: Level,
    /// Each check's level, by name: `redis`, `redis_memory`, `queue_depth`, `dead_letters`,
    /// `workers`.
    pub checks: BTreeMap<&'static str, Level>,
    /// Per check, a JSON object with its figures or a `message` saying what failed.
    pub details: BTreeMap<&'static str, serde_json::Value>,
}

/// Thresholds the checks compare against.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// `QUEUE_DEPTH_WARNING`: a backlog from here on makes `queue_depth` a warning.
    pub depth_warning: u64,
    /// `MAX_QUEUE_DEPTH`: shown as `refusing_at`, the backlog from which submissions get 507.
    pub max_depth: u64,
    /// `REDIS_TIMEOUT_MS`: the longest each Redis step of a run may take before its check fails.
    pub redis_timeout: Duration,
    /// `QUEUE_SHARDS`: the statistics cover these and every shard a web node registered.
    pub shards: u16,
    /// `REDIS_MEMORY_HIGH_WATER_PERCENT`: submissions get 507 from here.
    pub memory_high_water_percent: u8,
}

/// Runs the checks at most once per cache interval, however many requests arrive.
pub struct Heartbeat {
    conn: Redis,
    thresholds: Thresholds,
    cache_for: Duration,
    metrics: Arc<StatsdClient>,
    last: Mutex<Option<(Instant, Report)>>,
}

impl Heartbeat {
    /// Checks run on `conn`, and a report is reused for `cache_for` (`HEARTBEAT_CACHE_MS`); each
    /// run counts its checks' levels as `heartbeat.check` on `metrics`.
    pub fn new(
        conn: Redis,
        thresholds: Thresholds,
        cache_for: Duration,
        metrics: Arc<StatsdClient>,
    ) -> Self {
        Self {
            conn,
            thresholds,
            cache_for,
            metrics,
            last: Mutex::new(None),
        }
    }

    /// The current report. Callers that arrive while a run is under way wait for it and share its
    /// result: the lock is held across the run on purpose.
    pub async fn report(&self) -> Report {
        let mut last = self.last.lock().await;
        if let Some((at, report)) = last.as_ref() {
            if at.elapsed() < self.cache_for {
                return report.clone();
            }
        }
        let report = self.run_checks().await;
        for (check, level) in &report.checks {
            self.metrics
                .incr_with_tags("heartbeat.check")
                .with_tag("check", check)
                .with_tag("level", level.as_str())
                .send();
        }
        *last = Some((Instant::now(), report.clone()));
        report
    }

    async fn run_checks(&self) -> Report {
        let mut checks = BTreeMap::new();
        let mut details = BTreeMap::new();
        let mut conn = self.conn.clone();
        let timeout = self.thresholds.redis_timeout;

        let reachable = match tokio::time::timeout(timeout, takes_writes(&mut conn)).await {
            Ok(Ok(true)) => true,
            Ok(Ok(false)) => {
                // A demoted primary answers PING and reads but refuses every write: report it,
                // so a load balancer takes this node out, and follow the failover.
                conn.reconnect();
                details.insert(
                    "redis",
                    serde_json::json!({"message": "the Redis node is a replica (ROLE): writes fail; reconnecting to follow the failover"}),
                );
                false
            }
            Ok(Err(e)) => {
                details.insert(
                    "redis",
                    serde_json::json!({"message": format!("Redis did not answer ROLE: {e}")}),
                );
                false
            }
            Err(_) => {
                details.insert(
                    "redis",
                    serde_json::json!({"message": format!("Redis did not answer ROLE after {timeout:?}")}),
                );
                false
            }
        };
        checks.insert("redis", if reachable { Level::Ok } else { Level::Error });
        if !reachable {
            fail_queue_checks(&mut checks, &mut details, "redis unavailable".into());
            return finish(checks, details);
        }

        let (level, detail) = match tokio::time::timeout(timeout, memory(&mut conn)).await {
            Ok(Ok(nodes)) => memory_check(&nodes, self.thresholds.memory_high_water_percent),
            Ok(Err(e)) => (
                Level::Error,
                serde_json::json!({"message": format!("INFO memory failed: {e}")}),
            ),
            Err(_) => (
                Level::Error,
                serde_json::json!({"message": "INFO memory timed out"}),
            ),
        };
        checks.insert("redis_memory", level);
        details.insert("redis_memory", detail);

        let stats = QueueStats::fetch_known(&mut conn, self.thresholds.shards);
        match tokio::time::timeout(timeout, stats).await {
            Ok(Ok(stats)) => {
                let t = self.thresholds;
                let depth_level = if stats.backlog >= t.depth_warning {
                    Level::Warning
                } else {
                    Level::Ok
                };
                checks.insert("queue_depth", depth_level);
                details.insert(
                    "queue_depth",
                    serde_json::json!({
                        "backlog": stats.backlog,
                        "waiting": stats.waiting,
                        "inflight": stats.inflight,
                        "warning_at": t.depth_warning,
                        "refusing_at": t.max_depth,
                    }),
                );
                checks.insert(
                    "dead_letters",
                    if stats.dead > 0 {
                        Level::Warning
                    } else {
                        Level::Ok
                    },
                );
                details.insert(
                    "dead_letters",
                    serde_json::json!({"dead": stats.dead, "redrive": "wharf redrive"}),
                );
                checks.insert(
                    "workers",
                    if stats.live_workers == 0 {
                        Level::Warning
                    } else {
                        Level::Ok
                    },
                );
                details.insert("workers", serde_json::json!({"live": stats.live_workers}));
            }
            Ok(Err(e)) => fail_queue_checks(
                &mut checks,
                &mut details,
                format!("queue statistics failed: {e}"),
            ),
            Err(_) => fail_queue_checks(
                &mut checks,
                &mut details,
                "queue statistics timed out".into(),
            ),
        }
        finish(checks, details)
    }
}

/// `redis_memory`: a warning from the high-water mark on, when submissions get 507 (every web
/// node sees the same Redis, so it must not take them all out of the load balancer).
fn memory_check(nodes: &[NodeMemory], high_water: u8) -> (Level, serde_json::Value) {
    match MemoryUse::fullest(nodes) {
        None => (
            Level::Ok,
            serde_json::json!({"message": "no maxmemory: MAX_QUEUE_DEPTH is the only limit"}),
        ),
        Some(fullest) => {
            let percent = fullest.percent();
            let level = if percent >= f64::from(high_water) {
                Level::Warning
            } else {
                Level::Ok
            };
            (
                level,
                serde_json::json!({
                    "used_bytes": fullest.used,
                    "maxmemory_bytes": fullest.max,
                    "used_percent": (percent * 10.0).round() / 10.0,
                    "refusing_at_percent": high_water,
                }),
            )
        }
    }
}

/// Marks every check that needs queue statistics as failed, with the same reason.
fn fail_queue_checks(
    checks: &mut BTreeMap<&'static str, Level>,
    details: &mut BTreeMap<&'static str, serde_json::Value>,
    message: String,
) {
    for name in ["redis_memory", "queue_depth", "dead_letters", "workers"] {
        checks.insert(name, Level::Error);
        details.insert(name, serde_json::json!({ "message": message }));
    }
}

fn finish(
    checks: BTreeMap<&'static str, Level>,
    details: BTreeMap<&'static str, serde_json::Value>,
) -> Report {
    let status = checks.values().copied().max().unwrap_or(Level::Ok);
    Report {
        status,
        checks,
        details,
    }
}
