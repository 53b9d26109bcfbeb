//! `__heartbeat__`'s checks: Redis, queue depth, dead letters and live workers, cached and run once for concurrent callers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cadence::{CountedExt, StatsdClient};
use redis::aio::ConnectionManager;
use serde::Serialize;
use tokio::sync::Mutex;
use wharf_queue::connection::ping;
use wharf_queue::QueueStats;

/// Check levels, ordered so that the overall status is the worst one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warning,
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
    pub status: Level,
    pub checks: BTreeMap<&'static str, Level>,
    pub details: BTreeMap<&'static str, serde_json::Value>,
}

/// Thresholds the checks compare against.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub depth_warning: u64,
    pub max_depth: u64,
    pub redis_timeout: Duration,
    /// `QUEUE_SHARDS`: the statistics cover these and every shard a web node registered.
    pub shards: u16,
}

/// Runs the checks at most once per cache interval, however many requests arrive.
pub struct Heartbeat {
    conn: ConnectionManager,
    thresholds: Thresholds,
    cache_for: Duration,
    metrics: Arc<StatsdClient>,
    last: Mutex<Option<(Instant, Report)>>,
}

impl Heartbeat {
    pub fn new(
        conn: ConnectionManager,
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

        let reachable = match tokio::time::timeout(timeout, ping(&mut conn)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                details.insert(
                    "redis",
                    serde_json::json!({"message": format!("PING failed: {e}")}),
                );
                false
            }
            Err(_) => {
                details.insert(
                    "redis",
                    serde_json::json!({"message": format!("PING timed out after {timeout:?}")}),
                );
                false
            }
        };
        checks.insert("redis", if reachable { Level::Ok } else { Level::Error });
        if !reachable {
            fail_queue_checks(&mut checks, &mut details, "redis unreachable".into());
            return finish(checks, details);
        }

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

/// Marks every check that needs queue statistics as failed, with the same reason.
fn fail_queue_checks(
    checks: &mut BTreeMap<&'static str, Level>,
    details: &mut BTreeMap<&'static str, serde_json::Value>,
    message: String,
) {
    for name in ["queue_depth", "dead_letters", "workers"] {
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
