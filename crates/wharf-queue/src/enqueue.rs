//! Puts submissions on their shard streams with one `XADD` each, one round trip per call or grouped across callers (group commit).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::keys::Shard;
use crate::{QueueError, Submission};

/// Bounds of one group commit: how many submissions one pipeline may carry, and how many
/// pipelines may be in flight at once.
///
/// A submission waits only while every allowed push is already in flight; the moment one
/// finishes, everything that queued up meanwhile (up to these bounds) goes in the next push. So at
/// light load every submission gets its own push, and under load the pushes grow instead of the
/// number of round trips.
#[derive(Debug, Clone, Copy)]
pub struct GroupCommitLimits {
    /// Most submissions in one push.
    pub max_jobs: usize,
    /// Most encoded job bytes in one push (a push always carries at least one job).
    pub max_bytes: usize,
    /// Most pushes in flight at once.
    pub max_in_flight: usize,
    /// Most submissions waiting for a push; callers beyond it wait (their own timeout applies).
    pub max_waiting: usize,
}

impl Default for GroupCommitLimits {
    fn default() -> Self {
        Self {
            max_jobs: 256,
            max_bytes: 4 * 1024 * 1024,
            max_in_flight: 2,
            max_waiting: 8192,
        }
    }
}

/// Why one submission could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The pipeline carrying this submission failed; every submission in it gets this error.
    #[error("pipeline of {jobs} submissions failed: {source}")]
    Group {
        jobs: usize,
        source: Arc<QueueError>,
    },
    #[error("the group committer has stopped")]
    Stopped,
}

/// One submission waiting for a push, and who to tell how it went.
struct Waiting {
    submission: Submission,
    done: oneshot::Sender<Result<EntryId, (usize, Arc<QueueError>)>>,
}

/// Where an enqueued submission landed: its shard and its stream entry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryId {
    pub shard: Shard,
    pub id: String,
}

/// Adds submissions to their shard streams, one `XADD` each, pipelined.
#[derive(Clone)]
pub struct Enqueuer {
    conn: ConnectionManager,
    shards: u16,
    group: Option<mpsc::Sender<Waiting>>,
    /// Pipelines sent by the group committer: with the submissions served, the group size.
    pipelines: Arc<AtomicU64>,
}

impl Enqueuer {
    pub fn new(conn: ConnectionManager, shards: u16) -> Self {
        Self {
            conn,
            shards: shards.max(1),
            group: None,
            pipelines: Arc::default(),
        }
    }

    /// Makes [`Enqueuer::enqueue_one`] group concurrent submissions into shared pipelines;
    /// starts the committing task, so it must be called inside a tokio runtime. The task ends
    /// when the last clone of this enqueuer is dropped.
    pub fn with_group_commit(mut self, limits: GroupCommitLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_waiting.max(1));
        tokio::spawn(commit_loop(
            self.conn.clone(),
            self.shards,
            rx,
            limits,
            Arc::clone(&self.pipelines),
        ));
        self.group = Some(tx);
        self
    }

    /// How many pipelines the group committer has sent so far.
    pub fn pipelines_sent(&self) -> u64 {
        self.pipelines.load(Ordering::Relaxed)
    }

    /// Enqueues every submission in one Redis round trip; returns once Redis has them all.
    pub async fn enqueue(&self, submissions: &[Submission]) -> Result<Vec<EntryId>, QueueError> {
        let mut conn = self.conn.clone();
        push(&mut conn, self.shards, submissions.iter()).await
    }

    /// Enqueues one submission; returns once Redis has acknowledged the pipeline that carried it.
    ///
    /// With group commit on, that pipeline may carry other callers' submissions too, and if it
    /// fails every one of them gets the error. Without it, this is [`Enqueuer::enqueue`] of one.
    pub async fn enqueue_one(&self, submission: Submission) -> Result<EntryId, EnqueueError> {
        let Some(group) = &self.group else {
            let mut ids = self.enqueue(std::slice::from_ref(&submission)).await?;
            return ids.pop().ok_or(EnqueueError::Stopped);
        };
        let (done, answer) = oneshot::channel();
        group
            .send(Waiting { submission, done })
            .await
            .map_err(|_| EnqueueError::Stopped)?;
        match answer.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err((jobs, source))) => Err(EnqueueError::Group { jobs, source }),
            Err(_) => Err(EnqueueError::Stopped),
        }
    }
}

/// One pipeline of `XADD wharf:{<shard>}:submissions * ...`, one per submission, in order.
async fn push<'a>(
    conn: &mut ConnectionManager,
    shards: u16,
    submissions: impl Iterator<Item = &'a Submission>,
) -> Result<Vec<EntryId>, QueueError> {
    let mut pipe = redis::pipe();
    let mut placed = Vec::new();
    for submission in submissions {
        let shard = Shard::for_doc(&submission.route.doc_id, shards);
        pipe.add_command(submission.xadd(&shard.stream())?);
        placed.push(shard);
    }
    if placed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = pipe.query_async(conn).await?;
    Ok(placed
        .into_iter()
        .zip(ids)
        .map(|(shard, id)| EntryId { shard, id })
        .collect())
}

/// Takes whatever is waiting (within the limits) whenever a pipeline slot is free, and sends it.
async fn commit_loop(
    conn: ConnectionManager,
    shards: u16,
    mut waiting: mpsc::Receiver<Waiting>,
    limits: GroupCommitLimits,
    pipelines: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight.max(1)));
    let max_jobs = limits.max_jobs.max(1);
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Some(first) = waiting.recv().await else {
            return;
        };
        let mut bytes = first.submission.encoded_len();
        let mut batch = vec![first];
        while batch.len() < max_jobs && bytes < limits.max_bytes {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += next.submission.encoded_len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let mut conn = conn.clone();
        pipelines.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let jobs = batch.len();
            let result = push(&mut conn, shards, batch.iter().map(|w| &w.submission)).await;
            drop(slot);
            match result {
                Ok(ids) => {
                    for (w, id) in batch.into_iter().zip(ids) {
                        // A caller that gave up (timeout, client gone) no longer listens.
                        let _ = w.done.send(Ok(id));
                    }
                }
                Err(e) => {
                    let e = Arc::new(e);
                    for w in batch {
                        let _ = w.done.send(Err((jobs, Arc::clone(&e))));
                    }
                }
            }
        });
    }
}
