//! Puts submissions on their shard streams with one `XADD` each, one round trip per call or grouped across callers (group commit), confirmed on replicas with `WAIT` when asked.
//!
//! One Redis takes a whole group in one pipeline. A Redis Cluster takes one pipeline per shard
//! (a shard is one slot, so one node), sent concurrently; a shard whose node is down fails only
//! its own submissions. With `REDIS_MIN_REPLICAS_ACK=N`, each pipeline ends with `WAIT N t`, so
//! a submission is answered only once N replicas hold its write.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::Redis;
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
    /// The pipeline carrying this submission failed; every submission in it gets this error.
    #[error("pipeline of {jobs} submissions failed: {source}")]
    Group {
        /// Submissions the failed pipeline carried, this one included.
        jobs: usize,
        /// The pipeline's error, shared by every submission it carried.
        source: Arc<QueueError>,
    },
    /// No answer came: the group commit task, or the push carrying this submission, ended without
    /// one (a runtime shutting down), so whether Redis has the submission is unknown.
    #[error("the group committer has stopped")]
    Stopped,
}

/// One submission waiting for a push, and who to tell how it went.
struct Waiting {
    submission: Submission,
    done: oneshot::Sender<Placed>,
}

/// How one submission of a push went: its entry, or the error of the pipeline that carried it
/// with that pipeline's size.
type Placed = Result<EntryId, (usize, Arc<QueueError>)>;

/// `WAIT` after each pipeline: how many replicas, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Replication {
    /// Replicas that must hold each write: the `N` of `WAIT N t` (`REDIS_MIN_REPLICAS_ACK`).
    pub replicas: u8,
    /// How long `WAIT` may block, sent as whole milliseconds (half `REDIS_TIMEOUT_MS` in the web
    /// role); fewer replicas by then fails the push with [`QueueError::NotReplicated`].
    pub timeout: std::time::Duration,
}

/// Where an enqueued submission landed: its shard and its stream entry id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryId {
    /// The shard whose stream took it, from the docId.
    pub shard: Shard,
    /// The stream entry id `XADD *` returned, `<ms>-<seq>` by the Redis server's clock.
    pub id: String,
}

/// Adds submissions to their shard streams, one `XADD` each, pipelined.
#[derive(Clone)]
pub struct Enqueuer {
    conn: Redis,
    shards: u16,
    replication: Option<Replication>,
    group: Option<mpsc::Sender<Waiting>>,
    /// Pipelines sent by the group committer: with the submissions served, the group size.
    pipelines: Arc<AtomicU64>,
}

impl Enqueuer {
    /// Spreads submissions over `shards` shard streams (at least one), one round trip per call,
    /// with no replica confirmation until [`Enqueuer::with_replication`].
    pub fn new(conn: Redis, shards: u16) -> Self {
        Self {
            conn,
            shards: shards.max(1),
            replication: None,
            group: None,
            pipelines: Arc::default(),
        }
    }

    /// Makes every push wait until `replicas` replicas hold it (`WAIT`), failing with
    /// [`QueueError::NotReplicated`] after `timeout`. Zero replicas turns it off. Call it before
    /// [`Enqueuer::with_group_commit`].
    pub fn with_replication(mut self, replicas: u8, timeout: std::time::Duration) -> Self {
        self.replication = (replicas > 0).then_some(Replication { replicas, timeout });
        self
    }

    /// Makes [`Enqueuer::enqueue_one`] group concurrent submissions into shared pipelines;
    /// starts the committing task, so it must be called inside a tokio runtime. The task ends
    /// when the last clone of this enqueuer is dropped.
    pub fn with_group_commit(mut self, limits: GroupCommitLimits) -> Self {
        let (tx, rx) = mpsc::channel(limits.max_waiting.max(1));
        tokio::spawn(commit_loop(
            Target {
                conn: self.conn.clone(),
                shards: self.shards,
                replication: self.replication,
            },
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

    /// Enqueues every submission in one Redis round trip (one per shard on a cluster); returns
    /// once Redis has them all, or the first error.
    pub async fn enqueue(&self, submissions: &[Submission]) -> Result<Vec<EntryId>, EnqueueError> {
        let target = Target {
            conn: self.conn.clone(),
            shards: self.shards,
            replication: self.replication,
        };
        let mut out = Vec::with_capacity(submissions.len());
        for placed in target.push(submissions.iter().collect()).await {
            match placed {
                Ok(id) => out.push(id),
                Err((jobs, source)) => return Err(EnqueueError::Group { jobs, source }),
            }
        }
        Ok(out)
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

/// One submission of a push: its position among the caller's, its shard, and itself.
type Member<'a> = (usize, Shard, &'a Submission);

/// Where pushes go: the connection, the shard count and the replication each push waits for.
#[derive(Clone)]
struct Target {
    conn: Redis,
    shards: u16,
    replication: Option<Replication>,
}

impl Target {
    /// Pushes `submissions` and returns how each went, in their order: one pipeline of
    /// `XADD wharf:{<shard>}:submissions * ...` (then `WAIT`) on one Redis, one per shard on a
    /// cluster, sent concurrently.
    async fn push(&self, submissions: Vec<&Submission>) -> Vec<Placed> {
        let count = submissions.len();
        let mut groups: Vec<(Option<Shard>, Vec<Member>)> = Vec::new();
        for (index, submission) in submissions.into_iter().enumerate() {
            let shard = Shard::for_doc(&submission.route.doc_id, self.shards);
            let key = self.conn.is_cluster().then_some(shard);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push((index, shard, submission)),
                None => groups.push((key, vec![(index, shard, submission)])),
            }
        }
        let mut results =
            futures::future::join_all(groups.iter().map(|(_, members)| self.push_group(members)))
                .await;
        // A cluster's WAITs go only after every shard's XADDs were answered. Sent with them, each
        // shard's WAIT blocked the node's one connection, so the next shard's XADDs queued behind
        // it and waited for their own replication: one replica round trip per shard, in turn.
        // Sent after, the first WAIT on a node covers every write before it on that connection,
        // and the others on that node return at once.
        if let (Some(replication), true) = (self.replication, self.conn.is_cluster()) {
            let confirmed = futures::future::join_all(groups.iter().zip(&results).map(
                |((shard, _), pushed)| async move {
                    match (shard, pushed.as_ref().ok().and_then(|ids| ids.last())) {
                        (Some(shard), Some(last)) => {
                            Some(self.confirm(*shard, last, replication).await)
                        }
                        _ => None,
                    }
                },
            ))
            .await;
            for (result, confirmation) in results.iter_mut().zip(confirmed) {
                if let Some(Err(e)) = confirmation {
                    *result = Err(e);
                }
            }
        }
        let mut out: Vec<(usize, Placed)> = Vec::with_capacity(count);
        for ((_, members), result) in groups.iter().zip(results) {
            match result {
                Ok(ids) => out.extend(
                    members
                        .iter()
                        .zip(ids)
                        .map(|((index, shard, _), id)| (*index, Ok(EntryId { shard: *shard, id }))),
                ),
                Err(e) => {
                    let e = Arc::new(e);
                    out.extend(
                        members
                            .iter()
                            .map(|(index, _, _)| (*index, Err((members.len(), Arc::clone(&e))))),
                    );
                }
            }
        }
        out.sort_unstable_by_key(|(index, _)| *index);
        out.into_iter().map(|(_, placed)| placed).collect()
    }

    /// One pipeline: the group's `XADD`s, then `WAIT` if replication is asked for.
    async fn push_group(&self, members: &[Member<'_>]) -> Result<Vec<String>, QueueError> {
        let mut pipe = redis::pipe();
        for (_, shard, submission) in members {
            pipe.add_command(submission.xadd(&shard.stream())?);
        }
        let mut conn = self.conn.clone();
        // A cluster confirms replication afterwards, for all shards at once (see `push`).
        let Some(replication) = self.replication.filter(|_| !self.conn.is_cluster()) else {
            return Ok(pipe.query_async(&mut conn).await?);
        };
        wait(&mut pipe, replication);
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        check_replicas(replies.pop(), replication)?;
        Ok(redis::from_redis_value(redis::Value::Array(replies))
            .map_err(redis::RedisError::from)?)
    }

    /// `WAIT` on the master of `shard`'s slot, behind an `XRANGE` of the group's last entry,
    /// which routes the pipeline there and proves the writes are on that master: `WAIT` only
    /// covers writes made on its own connection, so after a reconnect (a failover between the
    /// two round trips) it would confirm writes the new master never had.
    async fn confirm(
        &self,
        shard: Shard,
        last: &str,
        replication: Replication,
    ) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XRANGE").arg(shard.stream()).arg(last).arg(last);
        wait(&mut pipe, replication);
        let mut replies: Vec<redis::Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let waited = replies.pop();
        match replies.pop() {
            Some(redis::Value::Array(found)) if !found.is_empty() => {
                check_replicas(waited, replication)
            }
            _ => Err(QueueError::NotReplicated {
                wanted: replication.replicas,
                reached: 0,
            }),
        }
    }
}

/// Appends `WAIT <replicas> <timeout ms>`.
fn wait(pipe: &mut redis::Pipeline, replication: Replication) {
    pipe.cmd("WAIT")
        .arg(replication.replicas)
        .arg(u64::try_from(replication.timeout.as_millis()).unwrap_or(u64::MAX));
}

/// Whether `WAIT`'s reply reached the replicas asked for.
fn check_replicas(reply: Option<redis::Value>, replication: Replication) -> Result<(), QueueError> {
    let reached = match reply {
        Some(redis::Value::Int(n)) => n,
        _ => 0,
    };
    if reached < i64::from(replication.replicas) {
        // The writes are on the primary and may still reach a replica, or be lost in a
        // failover: the caller answers 503, and a client retry may make a duplicate.
        return Err(QueueError::NotReplicated {
            wanted: replication.replicas,
            reached,
        });
    }
    Ok(())
}

/// Takes whatever is waiting (within the limits) whenever a pipeline slot is free, and sends it.
async fn commit_loop(
    target: Target,
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
        let target = target.clone();
        pipelines.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let placed = target
                .push(batch.iter().map(|w| &w.submission).collect())
                .await;
            drop(slot);
            for (w, result) in batch.into_iter().zip(placed) {
                // A caller that gave up (timeout, client gone) no longer listens.
                let _ = w.done.send(result);
            }
        });
    }
}
