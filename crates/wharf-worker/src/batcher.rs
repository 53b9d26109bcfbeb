//! The batcher task: collects documents from the handlers, uploads closed batches to S3 with retry and backoff, then releases their handlers.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cadence::prelude::*;
use cadence::StatsdClient;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;

use crate::backoff::Backoff;
use crate::batch::{Batch, BatchKey, Batches, Entry, Limits};
use crate::sink::{S3Failure, S3Sink};

/// Uploads running at once; each holds at most one batch in memory.
const MAX_CONCURRENT_UPLOADS: usize = 4;
/// A permanent S3 refusal is retried this many times in place before the jobs are failed.
const PERMANENT_TRIES: u32 = 3;

/// What a handler learns about its document.
pub type Ack = oneshot::Sender<Result<(), UploadError>>;

/// Why a document's batch could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    #[error("S3 refused the batch: {0}")]
    Refused(String),
    #[error("could not encode the batch: {0}")]
    Encode(String),
}

/// The batcher is gone (the worker is stopping).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the batcher has stopped")]
pub struct BatcherClosed;

struct Doc {
    key: BatchKey,
    entry: Entry<Ack>,
}

/// Where handlers send their documents.
#[derive(Clone)]
pub struct BatcherHandle {
    tx: mpsc::Sender<Doc>,
}

impl BatcherHandle {
    /// Queues a document; the receiver answers once its batch is in S3 (or was refused).
    pub async fn submit(
        &self,
        key: BatchKey,
        task_id: String,
        line: Vec<u8>,
        body_bytes: usize,
    ) -> Result<oneshot::Receiver<Result<(), UploadError>>, BatcherClosed> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Doc {
                key,
                entry: Entry {
                    task_id,
                    line,
                    body_bytes,
                    ack,
                },
            })
            .await
            .map_err(|_| BatcherClosed)?;
        Ok(rx)
    }
}

/// Starts the batcher. Setting `drain` to true flushes every open batch and every later
/// document at once (graceful shutdown); dropping every handle ends the task after its uploads.
pub fn spawn(
    limits: Limits,
    sink: S3Sink,
    metrics: Arc<StatsdClient>,
    drain: watch::Receiver<bool>,
) -> (BatcherHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.capacity.max(1));
    let task = tokio::spawn(run(rx, limits, sink, metrics, drain));
    (BatcherHandle { tx }, task)
}

async fn run(
    mut rx: mpsc::Receiver<Doc>,
    limits: Limits,
    sink: S3Sink,
    metrics: Arc<StatsdClient>,
    mut drain: watch::Receiver<bool>,
) {
    let mut batches: Batches<Ack> = Batches::new(limits);
    let uploader = Uploader {
        sink,
        metrics,
        permits: Arc::new(Semaphore::new(MAX_CONCURRENT_UPLOADS)),
        uploading: Arc::new(AtomicUsize::new(0)),
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
                    let uploading = uploader.uploading.load(Ordering::SeqCst);
                    for batch in batches.add(doc.key, doc.entry, Instant::now(), uploading) {
                        uploader.start(&mut uploads, batch);
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
    sink: S3Sink,
    metrics: Arc<StatsdClient>,
    permits: Arc<Semaphore>,
    /// Documents in batches being uploaded (they still occupy handler slots).
    uploading: Arc<AtomicUsize>,
    /// Whether the last PutObject failed: one error event per outage, not per retry.
    failing: Arc<AtomicBool>,
}

struct Uploading {
    counter: Arc<AtomicUsize>,
    docs: usize,
}

impl Drop for Uploading {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.docs, Ordering::SeqCst);
    }
}

impl Uploader {
    fn start(&self, uploads: &mut JoinSet<()>, batch: Batch<Ack>) {
        let docs = batch.entries.len();
        self.uploading.fetch_add(docs, Ordering::SeqCst);
        let guard = Uploading {
            counter: Arc::clone(&self.uploading),
            docs,
        };
        let this = self.clone();
        uploads.spawn(async move {
            let _guard = guard;
            this.upload(batch).await;
        });
    }

    async fn upload(&self, mut batch: Batch<Ack>) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        let id = batch.id();
        let key = batch.key.object_key(self.sink.prefix(), &id);
        let body = match batch.encode() {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(object = %key, error = %e, "could not encode a batch");
                return release(batch, Err(UploadError::Encode(e.to_string())));
            }
        };
        let docs = batch.entries.len();
        let namespace = batch.key.namespace.clone();
        let reason = batch.reason.as_str();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        let mut refusals = 0;
        loop {
            let started = Instant::now();
            match self.sink.put(&key, body.clone()).await {
                Ok(()) => {
                    self.metrics
                        .time_with_tags("s3.put.duration", started.elapsed())
                        .with_tag("outcome", "ok")
                        .send();
                    self.metrics
                        .histogram_with_tags("worker.batch.documents", docs as u64)
                        .with_tag("namespace", &namespace)
                        .with_tag("reason", reason)
                        .send();
                    self.metrics
                        .histogram_with_tags("worker.batch.bytes", batch.body_bytes as u64)
                        .with_tag("namespace", &namespace)
                        .with_tag("reason", reason)
                        .send();
                    if self.failing.swap(false, Ordering::SeqCst) {
                        tracing::info!(object = %key, "S3 PutObject succeeding again");
                    }
                    tracing::debug!(object = %key, documents = docs, reason, "batch written");
                    return release(batch, Ok(()));
                }
                Err(failure) => {
                    let kind = match failure {
                        S3Failure::Transient(_) => "transient",
                        S3Failure::Permanent(_) => "refused",
                    };
                    self.metrics
                        .incr_with_tags("s3.put.errors")
                        .with_tag("kind", kind)
                        .send();
                    if !self.failing.swap(true, Ordering::SeqCst) {
                        tracing::error!(
                            object = %key,
                            kind,
                            error = failure.message(),
                            "S3 PutObject failed; retrying with backoff, the jobs stay unacknowledged in Redis"
                        );
                    } else {
                        tracing::debug!(object = %key, kind, error = failure.message(), "S3 PutObject failed again");
                    }
                    if let S3Failure::Permanent(message) = failure {
                        refusals += 1;
                        if refusals >= PERMANENT_TRIES {
                            return release(batch, Err(UploadError::Refused(message)));
                        }
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }
}

fn release(batch: Batch<Ack>, outcome: Result<(), UploadError>) {
    for entry in batch.entries {
        let _ = entry.ack.send(outcome.clone());
    }
}
