//! Wharf's worker role: reads submissions from the shard streams and lands them in S3 as gzip or zstd NDJSON, at least once, with copies dropped within `DEDUP_WINDOW_MS`.
//!
//! The path is a straight line: the [`reader`] takes entries from the streams (`XREADGROUP`, and
//! `XAUTOCLAIM` of dead workers' entries) → apalis runs [`handler::handle`] on each
//! ([`consumer`]) → the [`batcher`] groups them ([`batch`]) and uploads closed batches with retry
//! and backoff ([`sink`]) → only after `PutObject` succeeds are the batch's entries acknowledged
//! and deleted. A crash anywhere before that leaves them pending in Redis, and another worker
//! takes them over once they have been idle for `WORKER_CLAIM_IDLE_MS` ([`held`]).

pub mod backoff;
pub mod batch;
pub mod batcher;
pub mod canary;
pub mod consumer;
pub mod handler;
pub mod held;
pub mod housekeeping;
pub mod ledger;
pub mod naming;
pub mod objects;
pub mod reader;
pub mod sink;
pub mod startup;
pub mod stop;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cadence::StatsdClient;
use tokio::sync::mpsc;
use wharf_queue::{streams, Enqueuer};
use wharf_settings::Settings;

use crate::batch::Limits;
use crate::held::{Budget, Held};
use crate::reader::Reader;
use crate::sink::S3Sink;
use crate::stop::Stop;

/// Errors that stop the worker role.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Redis is unusable as configured: its address does not parse, or its eviction policy may
    /// lose queued documents (`wharf` exits 2 for that). From [`redrive`], any failed command.
    #[error("queue: {0}")]
    Queue(#[from] wharf_queue::QueueError),
}

/// Runs the worker until `shutdown` resolves, then stops fetching, flushes every open batch,
/// acknowledges what was written, and returns within `SHUTDOWN_GRACE_MS`.
///
/// Dependencies that are missing at start-up (Redis, the bucket) are waited for with backoff,
/// each reported once; losing Redis later is retried by the reading loop without a restart.
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
        type = "worker.stop",
        grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        "stop requested: no more fetching; flushing open batches"
    );
    stop.trigger();
    match tokio::time::timeout(grace, body).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(type = "worker.stop", "shutdown grace period over; unacknowledged entries go to another worker after WORKER_CLAIM_IDLE_MS");
            Ok(())
        }
    }
}

/// Moves every dead letter back to its shard stream; returns how many.
pub async fn redrive(settings: &Settings) -> Result<u64, WorkerError> {
    let mut conn = wharf_queue::connect(&settings.redis)?;
    let shards = streams::known_shards(&mut conn, settings.redis.queue_shards).await?;
    Ok(streams::redrive(&mut conn, &shards).await?)
}

async fn supervise(
    settings: Settings,
    metrics: Arc<StatsdClient>,
    stop: Stop,
) -> Result<(), WorkerError> {
    let ws = settings.worker.clone();
    let conn = wharf_queue::connect(&settings.redis)?;
    let sink = S3Sink::new(&ws.s3).await;
    let mut probe = conn.clone();
    if !startup::wait_for_dependencies(&mut probe, &settings.redis, &sink, &stop).await? {
        return Ok(());
    }

    let name = naming::process_name();
    let shards = settings.redis.queue_shards;
    tracing::info!(
        type = "worker.start",
        worker = %name,
        bucket = %ws.s3.bucket,
        prefix = %ws.s3.prefix,
        shards,
        fetch_size = ws.fetch_size,
        max_held_documents = ws.max_held_documents,
        claim_idle_ms = u64::try_from(ws.claim_idle.as_millis()).unwrap_or(u64::MAX),
        dedup_window_ms = u64::try_from(ws.dedup_window.as_millis()).unwrap_or(u64::MAX),
        compression = ?ws.output_compression,
        "worker started: reading the shard streams as consumer {name}"
    );

    let held = Held::new(Budget {
        documents: ws.max_held_documents,
        bytes: ws.max_held_bytes,
    });
    let limits = Limits {
        max_documents: ws.batch_max_documents,
        max_bytes: ws.batch_max_bytes,
        max_age: ws.batch_max_age,
        max_open: ws.max_open_batches,
    };
    let (batcher, batcher_task) = batcher::spawn(
        limits,
        batcher::Delivery {
            sink: sink.clone(),
            compression: ws.output_compression,
            ledger: ledger::Ledger::new(
                conn.clone(),
                sink.clone(),
                ws.dedup_window,
                ws.output_compression,
            ),
            conn: conn.clone(),
            held: held.clone(),
            metrics: Arc::clone(&metrics),
            max_attempts: ws.max_attempts,
            refusal_grace: ws.refusal_grace,
        },
        ws.fetch_size,
        stop.receiver(),
    );
    let mut chores = tokio::task::JoinSet::new();
    chores.spawn(housekeeping::liveness_loop(
        conn.clone(),
        name.clone(),
        ws.liveness_ttl,
    ));
    chores.spawn(housekeeping::gauges_loop(
        conn.clone(),
        Arc::clone(&metrics),
        shards,
        Duration::from_secs(5),
    ));
    chores.spawn(held::renew_loop(
        conn.clone(),
        held.clone(),
        name.clone(),
        ws.claim_idle,
    ));

    let (deliveries_tx, deliveries) = mpsc::channel(ws.fetch_size.max(1));
    let reader = Reader {
        conn: wharf_queue::connection::connect_blocking(&settings.redis, ws.poll_interval)?,
        ops: conn.clone(),
        configured_shards: shards,
        consumer: name.clone(),
        fetch_size: ws.fetch_size,
        block: ws.poll_interval,
        claim_idle: ws.claim_idle,
        held: held.clone(),
        metrics: Arc::clone(&metrics),
    };
    let reading = tokio::spawn(reader.run(deliveries_tx, stop.clone()));
    let enqueuer = Enqueuer::new(conn.clone(), shards);
    if let Err(e) = consumer::run(
        &name,
        deliveries,
        enqueuer,
        batcher,
        ws.fetch_size,
        stop.clone(),
    )
    .await
    {
        tracing::error!(type = "worker.stop", error = %e, "the apalis worker stopped on an error");
    }
    // Every handler has returned and the batcher handle is gone: the batcher flushes what it
    // has, uploads and acknowledges, then ends.
    let _ = reading.await;
    let _ = batcher_task.await;

    // Entries delivered but never batched (in apalis's buffer at the stop) go back at once,
    // rather than after the claim idle time.
    let mut cleanup = conn.clone();
    for (shard, ids) in held.snapshot() {
        match streams::hand_back(&mut cleanup, shard, &name, &ids, ws.claim_idle).await {
            Ok(()) => {
                tracing::info!(type = "worker.stop", shard = shard.0, entries = ids.len(), "handed unwritten entries back to the queue")
            }
            Err(e) => {
                tracing::warn!(type = "worker.stop", error = %e, "could not hand entries back; another worker takes them after WORKER_CLAIM_IDLE_MS")
            }
        }
    }
    let _ = wharf_queue::liveness::withdraw(&mut cleanup, &name).await;
    chores.abort_all();
    tracing::info!(type = "worker.stop", worker = %name, "worker stopped");
    Ok(())
}
