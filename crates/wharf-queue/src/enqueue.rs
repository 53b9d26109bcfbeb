//! Puts submissions on the queue through apalis-redis's own push script, one round trip per call or grouped across callers (group commit).

use std::sync::Arc;

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_redis::RedisTask;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::{apalis_config, QueueError, QueueTuning, Submission};

/// Bounds of one group commit: how many submissions one push may carry, and how many pushes may
/// be in flight at once.
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
    /// The push carrying this submission failed; every submission in it gets this error.
    #[error("group push of {jobs} submissions failed: {source}")]
    Group {
        jobs: usize,
        source: Arc<QueueError>,
    },
    #[error("the group committer has stopped")]
    Stopped,
}

/// One submission waiting for a push, and who to tell how it went.
struct Waiting {
    task: RedisTask,
    bytes: usize,
    done: oneshot::Sender<Result<(), (usize, Arc<QueueError>)>>,
}

/// Enqueues submissions exactly as an apalis `RedisStorage<Submission>` would, without running a worker.
#[derive(Clone)]
pub struct Enqueuer {
    conn: ConnectionManager,
    config: apalis_redis::Config,
    group: Option<mpsc::Sender<Waiting>>,
}

impl Enqueuer {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            config: apalis_config(QueueTuning::default()),
            group: None,
        }
    }

    /// Makes [`Enqueuer::enqueue_one`] group concurrent submissions into shared pushes; starts the
    /// committing task, so it must be called inside a tokio runtime. The task ends when the last
    /// clone of this enqueuer is dropped.
    pub fn with_group_commit(mut self, limits: GroupCommitLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_waiting.max(1));
        tokio::spawn(commit_loop(
            self.conn.clone(),
            self.config.clone(),
            rx,
            limits,
        ));
        self.group = Some(tx);
        self
    }

    /// Enqueues every submission in one Redis round trip; returns once Redis has them all.
    pub async fn enqueue(&self, submissions: &[Submission]) -> Result<Vec<TaskId>, QueueError> {
        let mut tasks: Vec<RedisTask> = Vec::with_capacity(submissions.len());
        let mut ids = Vec::with_capacity(submissions.len());
        for submission in submissions {
            let (id, task, _) = task_for(submission)?;
            ids.push(id);
            tasks.push(task);
        }
        let mut conn = self.conn.clone();
        apalis_redis::queries::push_tasks(&mut conn, &self.config, &tasks).await?;
        Ok(ids)
    }

    /// Enqueues one submission; returns once Redis has acknowledged the push that carried it.
    ///
    /// With group commit on, that push may carry other callers' submissions too, and if it fails
    /// every one of them gets the error. Without it, this is [`Enqueuer::enqueue`] of one.
    pub async fn enqueue_one(&self, submission: &Submission) -> Result<TaskId, EnqueueError> {
        let Some(group) = &self.group else {
            let mut ids = self.enqueue(std::slice::from_ref(submission)).await?;
            return ids.pop().ok_or(EnqueueError::Stopped);
        };
        let (id, task, bytes) = task_for(submission)?;
        let (done, answer) = oneshot::channel();
        group
            .send(Waiting { task, bytes, done })
            .await
            .map_err(|_| EnqueueError::Stopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(id),
            Ok(Err((jobs, source))) => Err(EnqueueError::Group { jobs, source }),
            Err(_) => Err(EnqueueError::Stopped),
        }
    }
}

/// The apalis task for one submission, with a fresh id, and its encoded size.
fn task_for(submission: &Submission) -> Result<(TaskId, RedisTask, usize), QueueError> {
    let id = TaskId::from_ulid(ulid::Ulid::generate());
    let json = submission.to_json()?;
    let bytes = json.len();
    let task = TaskBuilder::new(json).task_id(id.clone()).build();
    Ok((id, task, bytes))
}

/// Takes whatever is waiting (within the limits) whenever a push slot is free, and pushes it.
async fn commit_loop(
    conn: ConnectionManager,
    config: apalis_redis::Config,
    mut waiting: mpsc::Receiver<Waiting>,
    limits: GroupCommitLimits,
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
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < max_jobs && bytes < limits.max_bytes {
            match waiting.try_recv() {
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let mut conn = conn.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let jobs = batch.len();
            let mut tasks = Vec::with_capacity(jobs);
            let mut answers = Vec::with_capacity(jobs);
            for w in batch {
                tasks.push(w.task);
                answers.push(w.done);
            }
            let result = apalis_redis::queries::push_tasks(&mut conn, &config, &tasks)
                .await
                .map(|_| ())
                .map_err(|e| (jobs, Arc::new(QueueError::from(e))));
            drop(slot);
            for answer in answers {
                // A caller that gave up (timeout, client gone) no longer listens; nothing to do.
                let _ = answer.send(result.clone());
            }
        });
    }
}
