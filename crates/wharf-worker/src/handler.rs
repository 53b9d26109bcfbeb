//! The apalis job handler: decodes a submission, hands it to the batcher and returns only once its batch is in S3.

use std::sync::Arc;

use apalis::prelude::{AbortError, Attempt, BoxDynError, Data, TaskId};
use base64::Engine;
use cadence::prelude::*;
use cadence::StatsdClient;
use chrono::{DateTime, TimeZone, Utc};
use wharf_queue::{Submission, SCHEMA_VERSION};

use crate::batch::{BatchKey, Line};
use crate::batcher::BatcherHandle;

/// What every handler call shares.
#[derive(Clone)]
pub struct HandlerContext {
    pub batcher: BatcherHandle,
    pub metrics: Arc<StatsdClient>,
    /// Attempts before a job is dead-lettered (at most apalis-redis's hard-coded 25).
    pub max_attempts: usize,
}

/// Why a job failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("malformed submission: {0}")]
    Malformed(String),
    #[error("submission schema version {found} is newer than this worker understands ({supported}); an upgraded worker will take it")]
    NewerSchema { found: u32, supported: u32 },
    #[error("{0}")]
    Upload(#[from] crate::batcher::UploadError),
    #[error("the worker is stopping")]
    Stopping,
}

/// Handles one job: `Ok` (and so the apalis acknowledgement) only after PutObject succeeded.
pub async fn handle(
    job: serde_json::Value,
    attempt: Attempt,
    task_id: TaskId,
    ctx: Data<HandlerContext>,
) -> Result<(), BoxDynError> {
    let task_id = task_id.to_string();
    let attempt = attempt.current();
    let namespace = job
        .pointer("/route/namespace")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_string();
    let result = land(job, &task_id, &ctx).await;
    match result {
        Ok(()) => {
            ctx.metrics
                .incr_with_tags("worker.jobs.processed")
                .with_tag("namespace", &namespace)
                .send();
            Ok(())
        }
        Err(JobError::Stopping) => Err(JobError::Stopping.into()),
        Err(error) => {
            let permanent = matches!(error, JobError::Malformed(_));
            if permanent || attempt >= ctx.max_attempts {
                ctx.metrics
                    .incr_with_tags("worker.jobs.dead_lettered")
                    .with_tag("namespace", &namespace)
                    .send();
                tracing::error!(
                    task_id = %task_id,
                    namespace = %namespace,
                    attempt,
                    max_attempts = ctx.max_attempts,
                    error = %error,
                    "job dead-lettered; fix the cause, then run `wharf redrive`"
                );
                Err(AbortError::new(error).into())
            } else {
                ctx.metrics
                    .incr_with_tags("worker.jobs.retried")
                    .with_tag("namespace", &namespace)
                    .send();
                tracing::warn!(
                    task_id = %task_id,
                    namespace = %namespace,
                    attempt,
                    max_attempts = ctx.max_attempts,
                    error = %error,
                    "job failed; apalis will retry it"
                );
                Err(error.into())
            }
        }
    }
}

async fn land(job: serde_json::Value, task_id: &str, ctx: &HandlerContext) -> Result<(), JobError> {
    let (key, line, body_bytes) = prepare(job, task_id)?;
    let ack = ctx
        .batcher
        .submit(key, task_id.to_string(), line, body_bytes)
        .await
        .map_err(|_| JobError::Stopping)?;
    match ack.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(JobError::Stopping),
    }
}

/// Turns a job into what its batch keeps: the batch key, the NDJSON line and the body's size.
///
/// Everything decoded is dropped here, before the handler waits for its batch: up to
/// 2 x `WORKER_FETCH_SIZE` handlers wait at once, and keeping the job (as a JSON tree and a
/// decoded copy) alive through the wait made a held 1 KB document cost the worker about 13 KB.
fn prepare(job: serde_json::Value, task_id: &str) -> Result<(BatchKey, Vec<u8>, usize), JobError> {
    let version = job.get("v").and_then(|v| v.as_u64()).unwrap_or(0);
    if version > u64::from(SCHEMA_VERSION) {
        return Err(JobError::NewerSchema {
            found: u32::try_from(version).unwrap_or(u32::MAX),
            supported: SCHEMA_VERSION,
        });
    }
    let submission: Submission =
        serde_json::from_value(job).map_err(|e| JobError::Malformed(e.to_string()))?;
    let body_bytes = base64::engine::general_purpose::STANDARD
        .decode(&submission.data)
        .map_err(|e| JobError::Malformed(format!("data is not base64: {e}")))?
        .len();
    // Sized up front, then trimmed, so the line held in the batch carries no spare capacity.
    let mut line = Vec::with_capacity(submission.json_size_hint());
    serde_json::to_writer(
        &mut line,
        &Line {
            attributes: &submission.attributes,
            data: &submission.data,
        },
    )
    .map_err(|e| JobError::Malformed(e.to_string()))?;
    line.shrink_to_fit();
    let route = &submission.route;
    let key = BatchKey::new(
        &route.namespace,
        &route.doc_type,
        &route.doc_version,
        submitted_at(&submission, task_id),
    );
    Ok((key, line, body_bytes))
}

/// The submission time: the edge-spec `submission_timestamp` attribute when present, else the
/// time encoded in the job's ULID (set when it was enqueued), else now.
fn submitted_at(submission: &Submission, task_id: &str) -> DateTime<Utc> {
    if let Some(ts) = submission.attributes.get("submission_timestamp") {
        if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
            return t.with_timezone(&Utc);
        }
    }
    if let Ok(id) = ulid::Ulid::from_string(task_id) {
        if let Some(t) = Utc
            .timestamp_millis_opt(i64::try_from(id.timestamp_ms()).unwrap_or(0))
            .single()
        {
            return t;
        }
    }
    Utc::now()
}
