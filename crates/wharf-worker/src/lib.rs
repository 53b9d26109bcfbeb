//! Wharf's worker role: consumes submissions from Redis (apalis) and lands them in S3 as gzip NDJSON, at least once.
//!
//! The path is a straight line: apalis fetches jobs → [`handler::handle`] hands each one to the
//! [`batcher`] and waits → the batcher groups them ([`batch`]) and uploads closed batches with
//! retry and backoff ([`sink`]) → only then do the handlers return `Ok`, so apalis acknowledges
//! them. A crash anywhere before that leaves the jobs in Redis for another worker.

pub mod backoff;
pub mod batch;
pub mod batcher;
pub mod canary;
pub mod handler;
pub mod housekeeping;
pub mod naming;
pub mod objects;
pub mod queue_ops;
pub mod sink;
pub mod startup;
pub mod stop;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis::prelude::{BackendExt, Monitor, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::RedisStorage;
use cadence::StatsdClient;
use redis::aio::ConnectionManager;
use wharf_queue::{apalis_config, QueueTuning};
use wharf_settings::Settings;

use crate::backoff::Backoff;
use crate::batch::Limits;
use crate::handler::HandlerContext;
use crate::sink::S3Sink;
use crate::stop::Stop;

/// apalis-redis dead-letters a failing job at its 25th attempt whatever it is told; settings
/// validation refuses a larger `MAX_ATTEMPTS`.
pub const APALIS_REDIS_MAX_ATTEMPTS: usize = wharf_settings::MAX_ATTEMPTS_LIMIT as usize;

/// Errors that stop the worker role.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the worker needs S3 settings: set S3_BUCKET")]
    MissingS3Settings,
    #[error("queue: {0}")]
    Queue(#[from] wharf_queue::QueueError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Runs the worker until `shutdown` resolves, then stops fetching, flushes every open batch,
/// lets apalis acknowledge, and returns within `SHUTDOWN_GRACE_MS`.
///
/// Dependencies that are missing at start-up (Redis, the bucket) are waited for with backoff,
/// each reported once; losing Redis later restarts the consumer under a fresh name.
pub async fn run(
    settings: Settings,
    metrics: StatsdClient,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let stop = Stop::new();
    let grace = settings.shutdown_grace;
    let body = supervise(settings, Arc::new(metrics), stop.clone());
    tokio::pin!(body);
    tokio::pin!(shutdown);
    tokio::select! {
        result = &mut body => return result,
        () = &mut shutdown => {}
    }
    tracing::info!(
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "stop requested: no more fetching; flushing open batches"
    );
    stop.trigger();
    match tokio::time::timeout(grace, body).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("shutdown grace period over; unacknowledged jobs return to the queue after the orphan timeout");
            Ok(())
        }
    }
}

/// Moves every dead-lettered job back to the queue with its attempts reset; returns how many.
pub async fn redrive(settings: &Settings) -> Result<u64, WorkerError> {
    let mut conn = wharf_queue::connect(&settings.redis)?;
    Ok(queue_ops::redrive_all(&mut conn).await?)
}

/// The attempts after which a job is dead-lettered, capped at apalis-redis's own limit.
pub fn effective_max_attempts(configured: u32) -> usize {
    let configured = usize::try_from(configured).unwrap_or(usize::MAX).max(1);
    if configured > APALIS_REDIS_MAX_ATTEMPTS {
        tracing::warn!(
            configured,
            used = APALIS_REDIS_MAX_ATTEMPTS,
            "MAX_ATTEMPTS above apalis-redis's hard-coded limit; using the limit"
        );
    }
    configured.min(APALIS_REDIS_MAX_ATTEMPTS)
}

async fn supervise(
    settings: Settings,
    metrics: Arc<StatsdClient>,
    stop: Stop,
) -> Result<(), WorkerError> {
    let ws = settings
        .worker
        .clone()
        .ok_or(WorkerError::MissingS3Settings)?;
    let conn = wharf_queue::connect(&settings.redis)?;
    let sink = S3Sink::new(&ws.s3).await;
    let mut probe = conn.clone();
    if !startup::wait_for_dependencies(&mut probe, &settings.redis, &sink, &stop).await {
        return Ok(());
    }

    let grace = settings.shutdown_grace;
    // Leave time after the drain to hand back what could not be flushed and to unregister.
    let drain_budget = grace.saturating_sub((grace / 4).min(Duration::from_millis(1500)));
    let process = naming::process_name();
    let max_attempts = effective_max_attempts(ws.max_attempts);
    let concurrency = ws.fetch_size.max(1);
    tracing::info!(
        worker = %process,
        bucket = %ws.s3.bucket,
        prefix = %ws.s3.prefix,
        fetch_size = concurrency,
        max_attempts,
        "worker started: consuming {}",
        wharf_queue::QUEUE_NAME
    );
    if ws.batch_max_documents > concurrency {
        tracing::info!(
            batch_max_documents = ws.batch_max_documents,
            fetch_size = concurrency,
            "a batch never holds more documents than WORKER_FETCH_SIZE (the jobs a worker holds at once)"
        );
    }

    let limits = Limits {
        max_documents: ws.batch_max_documents,
        max_bytes: ws.batch_max_bytes,
        max_age: ws.batch_max_age,
        max_open: ws.max_open_batches,
        capacity: concurrency,
    };
    let (batcher, batcher_task) =
        batcher::spawn(limits, sink.clone(), Arc::clone(&metrics), stop.receiver());
    let mut chores = tokio::task::JoinSet::new();
    chores.spawn(housekeeping::liveness_loop(
        conn.clone(),
        process.clone(),
        ws.liveness_ttl,
    ));
    chores.spawn(housekeeping::gauges_loop(
        conn.clone(),
        Arc::clone(&metrics),
        ws.heartbeat,
    ));
    chores.spawn(housekeeping::purge_loop(conn.clone(), ws.heartbeat));
    chores.spawn(housekeeping::promote_loop(
        conn.clone(),
        ws.poll_interval / 2,
    ));

    let ctx = HandlerContext {
        batcher,
        metrics: Arc::clone(&metrics),
        max_attempts,
    };
    let consumer = Consumer {
        conn: conn.clone(),
        tuning: QueueTuning {
            fetch_size: concurrency,
            heartbeat: ws.heartbeat,
            missed_heartbeats: ws.missed_heartbeats,
        },
        poll_interval: ws.poll_interval,
        ctx,
        drain_budget,
    };

    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut names = Vec::new();
    let mut reported = false;
    for generation in 0.. {
        let name = naming::generation_name(&process, generation);
        names.push(name.clone());
        let started = Instant::now();
        // Before apalis's first fetch: its own promotion fails on a large due backlog.
        let mut promote = conn.clone();
        if let Err(e) = queue_ops::promote_due(&mut promote).await {
            tracing::warn!(error = %e, "could not promote scheduled jobs before starting");
        }
        consumer.run(&name, &stop).await;
        if stop.is_triggered() {
            break;
        }
        // The consumer ended by itself: apalis marks its backend dead on a Redis error.
        if !reported {
            tracing::error!(worker = %name, "the apalis consumer stopped (Redis unavailable?); restarting it under a new name");
            reported = true;
        } else {
            tracing::warn!(worker = %name, "the apalis consumer stopped again; restarting");
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff.reset();
            reported = false;
        }
        let mut release_conn = conn.clone();
        if let Ok(n) = queue_ops::release_worker(&mut release_conn, &name).await {
            if n > 0 {
                tracing::info!(worker = %name, jobs = n, "returned the stopped consumer's jobs to the queue");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = stop.wait() => break,
        }
        let mut probe = conn.clone();
        if !startup::wait_for_dependencies(&mut probe, &settings.redis, &sink, &stop).await {
            break;
        }
    }

    // Every handler has returned: the batcher ends once its last uploads are done.
    drop(consumer);
    let _ = tokio::time::timeout(Duration::from_millis(500), batcher_task).await;
    let mut cleanup = conn.clone();
    for name in &names {
        match queue_ops::release_worker(&mut cleanup, name).await {
            Ok(n) if n > 0 => {
                tracing::warn!(worker = %name, jobs = n, "returned unacknowledged jobs to the queue")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, "could not unregister; its jobs return after the orphan timeout")
            }
        }
    }
    let _ = wharf_queue::liveness::withdraw(&mut cleanup, &process).await;
    chores.abort_all();
    tracing::info!(worker = %process, "worker stopped");
    Ok(())
}

/// Builds and runs one apalis consumer (one worker name) until it fails or the worker stops.
struct Consumer {
    conn: ConnectionManager,
    tuning: QueueTuning,
    poll_interval: Duration,
    ctx: HandlerContext,
    drain_budget: Duration,
}

impl Consumer {
    async fn run(&self, name: &str, stop: &Stop) {
        let conn = self.conn.clone();
        let config = apalis_config(self.tuning);
        let poll = self.poll_interval.max(Duration::from_millis(10));
        let concurrency = self.tuning.fetch_size;
        let ctx = self.ctx.clone();
        let worker_name = name.to_string();
        let monitor = Monitor::new()
            .register(move |_restarts| {
                let storage = RedisStorage::<serde_json::Value>::new(conn.clone())
                    .with_config(config.clone())
                    .poll_with_interval(poll);
                WorkerBuilder::new(worker_name.clone())
                    .backend(storage)
                    .concurrency(concurrency)
                    .data(ctx.clone())
                    .build(handler::handle)
            })
            .shutdown_timeout(self.drain_budget);
        let signal = stop.clone();
        // With a shutdown timeout set, apalis's Monitor reports a failed worker as Ok: the
        // caller tells the two apart by whether a stop was requested.
        let _ = monitor
            .run_with_signal(async move {
                signal.wait().await;
                Ok(())
            })
            .await;
    }
}
