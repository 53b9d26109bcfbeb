//! Puts submissions on the queue through apalis-redis's own push script, in one round trip per call.

use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_redis::RedisTask;
use redis::aio::ConnectionManager;

use crate::{apalis_config, QueueError, QueueTuning, Submission};

/// Enqueues submissions exactly as an apalis `RedisStorage<Submission>` would, without running a worker.
#[derive(Clone)]
pub struct Enqueuer {
    conn: ConnectionManager,
    config: apalis_redis::Config,
}

impl Enqueuer {
    pub fn new(conn: ConnectionManager) -> Self {
        Self {
            conn,
            config: apalis_config(QueueTuning::default()),
        }
    }

    /// Enqueues every submission in one Redis round trip; returns once Redis has them all.
    pub async fn enqueue(&self, submissions: &[Submission]) -> Result<Vec<TaskId>, QueueError> {
        let mut tasks: Vec<RedisTask> = Vec::with_capacity(submissions.len());
        let mut ids = Vec::with_capacity(submissions.len());
        for submission in submissions {
            let id = TaskId::from_ulid(ulid::Ulid::generate());
            ids.push(id.clone());
            tasks.push(TaskBuilder::new(submission.to_json()?).task_id(id).build());
        }
        let mut conn = self.conn.clone();
        apalis_redis::queries::push_tasks(&mut conn, &self.config, &tasks).await?;
        Ok(ids)
    }
}
