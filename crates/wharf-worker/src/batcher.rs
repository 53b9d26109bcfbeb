//! The batcher task: collects documents from the handlers, uploads closed batches to S3 with retry and backoff, then acknowledges their entries.
//!
//! This is where a submission's path ends: `PutObject` succeeds, then the batch's entries are
//! acknowledged and deleted in one round trip. A batch S3 keeps refusing (after
//! `S3_REFUSAL_GRACE_MS` and `MAX_ATTEMPTS`) goes to dead letters instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cadence::prelude::*;
use cadence::StatsdClient;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use wharf_queue::Redis;
use wharf_queue::{streams, Shard};
use wharf_settings::Compression;
use wharf_telemetry::metrics::BoundedTag;

use crate::backoff::Backoff;
use crate::batch;
use crate::batch::{Batch, BatchKey, Batches, Entry, EntryRef, FlushReason, Limits};
use crate::held::{self, Held};
use crate::ledger::{Ledger, UploadGuard, Verdict};
use crate::sink::{S3Failure, S3Sink};

/// Uploads running at once; each holds at most one batch in memory.
const MAX_CONCURRENT_UPLOADS: usize = 4;
/// How long a batch holding entries taken over from a dead worker stays open: long enough to
/// gather the rest of the same claim, short enough that recovery does not wait a batch age.
const TAKEN_OVER_BATCH_DELAY: Duration = Duration::from_millis(250);

/// The batcher is gone (the worker is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct BatcherClosed;

struct Doc {
    key: BatchKey,
    entry: Entry<EntryRef>,
    taken_over: bool,
}

/// Where handlers send their documents.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::Sender<Doc>,
}

impl BatcherHandle {
    /// Puts a document in its batch; returns once the batcher has it (not once it is in S3).
    /// `taken_over` marks an entry claimed from a dead worker: its batch closes sooner.
    pub async fn submit(
        &self,
        key: BatchKey,
        entry: Entry<EntryRef>,
        taken_over: bool,
    ) -> Result<(), BatcherClosed> {
        self.tx
            .send(Doc {
                key,
                taken_over,
                entry,
            })
            .await
            .map_err(|_| BatcherClosed)
    }
}

/// Namespaces come from clients' URLs (every one is accepted when `ALLOWED_NAMESPACES` is
/// empty), so the `namespace` tag keeps the first few and calls the rest `other`.
static NAMESPACE_TAG: std::sync::LazyLock<BoundedTag> =
    std::sync::LazyLock::new(|| BoundedTag::new(MAX_NAMESPACE_TAGS));

/// Distinct `namespace` tag values one worker sends.
pub const MAX_NAMESPACE_TAGS: usize = 100;

/// How uploads are retried, acknowledged and given up.
#[derive(Clone)]
pub struct Delivery {
    /// Where batches are written; its prefix starts every object key.
    pub sink: S3Sink,
    /// The objects' encoding (`OUTPUT_COMPRESSION`): their extension and `Content-Encoding`.
    pub compression: Compression,
    /// The docId ledger; `None` when `DEDUP_WINDOW_MS` is 0.
    pub ledger: Option<Ledger>,
    /// Acknowledgements and dead letters (never the reading connection).
    pub conn: Redis,
    /// Released as batches are acknowledged or dead-lettered; once it is full, the biggest open
    /// batch is flushed.
    pub held: Held,
    /// Receives the `s3.put.*`, `worker.batch.*`, `worker.dedup.*` and `worker.entries.*` metrics.
    pub metrics: Arc<StatsdClient>,
    /// Counted refusals of one batch before its documents are dead-lettered (`MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// How long S3 must keep refusing a batch before refusals count (`S3_REFUSAL_GRACE_MS`).
    pub refusal_grace: Duration,
}

/// Starts the batcher. Setting `drain` to true flushes every open batch and every later
/// document at once (graceful shutdown); dropping every handle ends the task after its uploads.
pub fn spawn(
    limits: Limits,
    delivery: Delivery,
    capacity: usize,
    drain: watch::Receiver<bool>,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let task = tokio::spawn(run(rx, limits, delivery, drain));
    (BatcherHandle { tx }, task)
}

async fn run(
    mut rx: mpsc::Receiver<Doc>,
    limits: Limits,
    delivery: Delivery,
    mut drain: watch::Receiver<bool>,
) {
    let mut batches: Batches<EntryRef> = Batches::new(limits);
    let uploader = Uploader {
        delivery,
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        failing: Arc::new(AtomicBool::new(false)),
    };
    let mut uploads = JoinSet::new();
    let mut draining = *drain.borrow();
    loop {
        while uploads.try_join_next().is_some() {}
        let deadline = batches.next_deadline();
        tokio::select! {
            doc = rx.recv() => match doc {
                Some(doc) => {
                    let now = Instant::now();
                    let arrived = if doc.taken_over {
                        let already = limits.max_age.saturating_sub(TAKEN_OVER_BATCH_DELAY);
                        now.checked_sub(already).unwrap_or(now)
                    } else {
                        now
                    };
                    for batch in batches.add(doc.key, doc.entry, arrived) {
                        uploader.start(&mut uploads, batch);
                    }
                    // The reader fetches nothing more until something is released: without
                    // this flush, a full budget would wait for the age limit. Only when no
                    // upload is running, though: a running upload releases its documents when
                    // it ends, and flushing on every arrival meanwhile wrote a deep backlog as
                    // objects of one to three documents (docs/benchmarks.md).
                    if uploader.delivery.held.is_full() && uploads.is_empty() {
                        if let Some(batch) = batches.take_biggest(FlushReason::Held) {
                            uploader.start(&mut uploads, batch);
                        }
                    }
                }
                None => break,
            },
            () = sleep_until(deadline), if deadline.is_some() => {
                for batch in batches.expired(Instant::now()) {
                    uploader.start(&mut uploads, batch);
                }
            }
            changed = drain.changed(), if !draining => {
                draining = changed.is_err() || *drain.borrow();
            }
        }
        if draining {
            for batch in batches.drain() {
                uploader.start(&mut uploads, batch);
            }
        }
    }
    for batch in batches.drain() {
        uploader.start(&mut uploads, batch);
    }
    while uploads.join_next().await.is_some() {}
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

#[derive(Clone)]
struct Uploader {
    delivery: Delivery,
    permits: Arc<Semaphore>,
    /// Whether the last PutObject failed: one error event per outage, not per retry.
    failing: Arc<AtomicBool>,
}

impl Uploader {
    fn start(&self, uploads: &mut JoinSet<()>, batch: Batch<EntryRef>) {
        let this = self.clone();
        uploads.spawn(async move { this.upload(batch).await });
    }

    async fn upload(&self, mut batch: Batch<EntryRef>) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let d = &self.delivery;
        let id = batch.id();
        let key = batch.key.object_key(d.sink.prefix(), &id, d.compression);
        let refs = held::by_shard(batch.entries.iter().map(|e| (e.ack.0, &e.ack.1)));
        // A canary's object is named by its docId: writing it again overwrites it.
        let ledger = d
            .ledger
            .as_ref()
            .filter(|_| batch.key.canary_doc_id.is_none());
        let _uploading = match ledger {
            Some(ledger) => {
                let guard = self.drop_duplicates(ledger, &mut batch, &id, &key).await;
                if batch.entries.is_empty() {
                    return self.acknowledge(&refs, &key).await;
                }
                Some(guard)
            }
            None => None,
        };
        let body = match batch.encode(d.compression) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                return self
                    .dead_letter(&refs, &format!("could not encode batch {key}: {e}"))
                    .await;
            }
        };
        let docs = batch.entries.len();
        let namespace = NAMESPACE_TAG.get(&batch.key.namespace).to_string();
        let reason = batch.reason.as_str();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut refused_since: Option<Instant> = None;
        let mut counted_refusals = 0u32;
        loop {
            let started = Instant::now();
            let result = d
                .sink
                .put(&key, body.clone(), batch::content_encoding(d.compression))
                .await;
            d.metrics
                .time_with_tags("s3.put.duration", started.elapsed())
                .with_tag("outcome", if result.is_ok() { "ok" } else { "error" })
                .send();
            let failure = match result {
                Ok(()) => break,
                Err(failure) => failure,
            };
            d.metrics
                .incr_with_tags("s3.put.errors")
                .with_tag("kind", failure.kind())
                .send();
            if !self.failing.swap(true, Ordering::SeqCst) {
                tracing::error!(
                    type = "worker.s3",
                    object = %key,
                    kind = failure.kind(),
                    error = failure.message(),
                    "S3 PutObject failed; retrying with backoff, the entries stay unacknowledged in Redis"
                );
            } else {
                tracing::debug!(type = "worker.s3", object = %key, kind = failure.kind(), error = failure.message(), "S3 PutObject failed again");
            }
            if let S3Failure::Refused(message) = &failure {
                let since = *refused_since.get_or_insert(started);
                if since.elapsed() >= d.refusal_grace {
                    counted_refusals += 1;
                    if counted_refusals >= d.max_attempts {
                        let why = format!(
                            "S3 refused the batch for {:?} and {counted_refusals} counted attempts: {message}",
                            since.elapsed()
                        );
                        return self.dead_letter(&refs, &why).await;
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
        if self.failing.swap(false, Ordering::SeqCst) {
            tracing::info!(type = "worker.s3", object = %key, "S3 PutObject succeeding again");
        }
        d.metrics
            .histogram_with_tags("worker.batch.documents", docs as u64)
            .with_tag("namespace", &namespace)
            .with_tag("reason", reason)
            .send();
        d.metrics
            .histogram_with_tags("worker.batch.bytes", batch.body_bytes as u64)
            .with_tag("namespace", &namespace)
            .with_tag("reason", reason)
            .send();
        tracing::debug!(type = "worker.batch", object = %key, documents = docs, reason, "batch written");
        self.acknowledge(&refs, &key).await;
    }

    /// Asks the docId ledger about every document (waiting out Redis or S3 trouble, the
    /// entries stay held meanwhile), then takes out those already landed. Their entries are
    /// still acknowledged with the batch's. The guard marks the batch as uploading.
    async fn drop_duplicates(
        &self,
        ledger: &Ledger,
        batch: &mut Batch<EntryRef>,
        id: &str,
        key: &str,
    ) -> UploadGuard {
        let d = &self.delivery;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut reported = false;
        let (verdicts, guard) = loop {
            match ledger.admit(batch, id).await {
                Ok(admitted) => break admitted,
                Err(e) => {
                    if !reported {
                        tracing::error!(type = "worker.dedup", object = %key, error = %e, "could not consult the docId ledger; the batch waits, its entries stay unacknowledged");
                        reported = true;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        if reported {
            tracing::info!(type = "worker.dedup", object = %key, "docId ledger answering again");
        }
        let conflicts = verdicts.iter().filter(|v| **v == Verdict::Conflict).count();
        let mut dropped = Vec::new();
        let entries = std::mem::take(&mut batch.entries);
        for (entry, verdict) in entries.into_iter().zip(verdicts) {
            if verdict == Verdict::Duplicate {
                batch.body_bytes = batch.body_bytes.saturating_sub(entry.body_bytes);
                dropped.push(entry.doc.doc_id);
            } else {
                batch.entries.push(entry);
            }
        }
        if conflicts > 0 {
            d.metrics
                .count_with_tags("worker.dedup.conflicts", conflicts as i64)
                .send();
            tracing::info!(type = "worker.dedup", object = %key, conflicts, "documents reuse a docId seen within DEDUP_WINDOW_MS with another body or route; kept");
        }
        if !dropped.is_empty() {
            let count = dropped.len();
            d.metrics
                .count_with_tags("worker.dedup.dropped", count as i64)
                .send();
            dropped.truncate(10);
            tracing::info!(type = "worker.dedup", object = %key, dropped = count, doc_ids = ?dropped, "documents already landed within DEDUP_WINDOW_MS were dropped (doc_ids lists at most 10)");
        }
        guard
    }

    /// `XACK` + `XDEL` the batch's entries, retrying while Redis is away: the object is in S3,
    /// so giving up here would only make another worker write the documents again.
    async fn acknowledge(&self, refs: &[(Shard, Vec<String>)], key: &str) {
        let d = &self.delivery;
        let mut conn = d.conn.clone();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        let mut reported = false;
        loop {
            match streams::ack(&mut conn, refs).await {
                Ok(acked) => {
                    let documents: usize = refs.iter().map(|(_, ids)| ids.len()).sum();
                    if (acked as usize) < documents {
                        // Another worker took some over (this one was cut off from Redis for
                        // longer than WORKER_CLAIM_IDLE_MS): those documents may land twice.
                        tracing::warn!(type = "worker.ack", object = %key, documents, acked, "some entries were no longer this worker's; they may be written twice");
                        d.metrics
                            .count_with_tags(
                                "worker.entries.lost_lease",
                                (documents as u64 - acked) as i64,
                            )
                            .send();
                    }
                    d.metrics
                        .count_with_tags("worker.entries.acked", acked as i64)
                        .send();
                    break;
                }
                Err(e) => {
                    if !reported {
                        tracing::error!(type = "worker.ack", object = %key, error = %e, "batch written but not yet acknowledged; retrying");
                        reported = true;
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
        for (shard, ids) in refs {
            d.held.release(*shard, ids);
        }
    }

    async fn dead_letter(&self, refs: &[(Shard, Vec<String>)], reason: &str) {
        let d = &self.delivery;
        let mut conn = d.conn.clone();
        let documents: usize = refs.iter().map(|(_, ids)| ids.len()).sum();
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
        for (shard, ids) in refs {
            loop {
                match streams::dead_letter(&mut conn, *shard, ids, reason).await {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!(type = "worker.dead_letter", error = %e, "could not dead-letter a refused batch yet; retrying");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
            d.held.release(*shard, ids);
        }
        d.metrics
            .count_with_tags("worker.entries.dead_lettered", documents as i64)
            .with_tag("reason", "refused")
            .send();
        tracing::error!(
            type = "worker.dead_letter",
            documents,
            reason,
            "documents dead-lettered; fix the cause, then run `wharf redrive`"
        );
    }
}
