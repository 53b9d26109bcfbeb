//! Start-up checks: Redis (PING, then its eviction policy) and the S3 bucket (HeadBucket), retried with backoff, one error event per failing dependency.

use std::time::Duration;

use wharf_queue::Redis;
use wharf_settings::RedisSettings;

use crate::backoff::Backoff;
use crate::sink::S3Sink;
use crate::stop::Stop;

/// Tracks one dependency so that a failure is reported once (log line + Sentry event) until it recovers.
struct Dependency {
    /// The log lines' Type: `startup.redis` as the web role's, or `startup.s3`.
    log_type: &'static str,
    reported: Option<String>,
    ok: bool,
}

impl Dependency {
    fn new(log_type: &'static str) -> Self {
        Self {
            log_type,
            reported: None,
            ok: false,
        }
    }

    fn failed(&mut self, name: &str, kind: &str, message: &str) {
        self.ok = false;
        if self.reported.as_deref() != Some(kind) {
            tracing::error!(
                type = self.log_type,
                dependency = name,
                problem = kind,
                "{message}; retrying with backoff"
            );
            self.reported = Some(kind.to_string());
        } else {
            tracing::debug!(
                type = self.log_type,
                dependency = name,
                problem = kind,
                "{message}; still retrying"
            );
        }
    }

    fn succeeded(&mut self, name: &str) {
        if self.reported.take().is_some() {
            tracing::info!(type = self.log_type, dependency = name, "{name} is available again");
        }
        self.ok = true;
    }
}

/// Waits until Redis answers PING and the bucket answers HeadBucket. Returns `Ok(false)` if
/// `stop` fired first, and an error that no waiting can fix: a Redis that may evict queued
/// documents (unless `REDIS_ALLOW_EVICTION_DATA_LOSS` accepts that).
pub async fn wait_for_dependencies(
    redis: &mut Redis,
    redis_settings: &RedisSettings,
    sink: &S3Sink,
    stop: &Stop,
) -> Result<bool, wharf_queue::QueueError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut redis_dep = Dependency::new("startup.redis");
    let mut s3_dep = Dependency::new("startup.s3");
    loop {
        if !redis_dep.ok {
            let probe = match wharf_queue::connection::ping(redis).await {
                Ok(()) => eviction_guard(redis, redis_settings.allow_eviction_data_loss).await,
                Err(e) => Err(e),
            };
            match probe {
                Ok(()) => redis_dep.succeeded("redis"),
                Err(e) if e.is_misconfiguration() => return Err(e),
                Err(e) => redis_dep.failed(
                    "redis",
                    "unreachable",
                    &format!(
                        "cannot reach Redis at {}:{} (db {}): {e}",
                        redis_settings.host, redis_settings.port, redis_settings.db
                    ),
                ),
            }
        }
        if !s3_dep.ok {
            match sink.check_bucket().await {
                Ok(()) => s3_dep.succeeded("s3"),
                Err(problem) => s3_dep.failed("s3", problem.kind(), &problem.to_string()),
            }
        }
        if redis_dep.ok && s3_dep.ok {
            return Ok(true);
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.wait() => return Ok(false),
        }
    }
}

/// Checks Redis's eviction policy on every master: an error if it may evict queued documents,
/// or a loud warning if the operator accepted that risk.
async fn eviction_guard(redis: &mut Redis, allow: bool) -> Result<(), wharf_queue::QueueError> {
    if let Some(risk) = wharf_queue::health::check_eviction(redis, allow).await? {
        tracing::error!(type = "startup.redis", error = %risk, "{}", wharf_queue::health::EVICTION_RISK_ACCEPTED);
    }
    Ok(())
}
