//! The apalis task handler: turns a delivered entry into its NDJSON line and batch key, and puts it in a batch. It never waits for S3.

use apalis::prelude::{BoxDynError, Data};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};

use crate::batch::{BatchKey, Line};
use crate::batcher::BatcherHandle;
use crate::reader::Delivery;

/// Why a delivery could not be put in a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("could not write the NDJSON line: {0}")]
    Line(#[from] serde_json::Error),
    #[error("the batcher has stopped (the worker is stopping); the entry stays pending for another worker")]
    Stopping,
}

/// Hands one delivery to the batcher. `Ok` means "in a batch", not "in S3": the batch is the
/// unit of acknowledgement.
pub async fn handle(delivery: Delivery, batcher: Data<BatcherHandle>) -> Result<(), BoxDynError> {
    let (key, line) = prepare(&delivery)?;
    let body_bytes = delivery.submission.body.len();
    batcher
        .submit(
            key,
            delivery.shard,
            delivery.id,
            line,
            body_bytes,
            delivery.taken_over,
        )
        .await
        .map_err(|_| HandleError::Stopping)?;
    Ok(())
}

/// The batch key and the NDJSON line (`{"attributes": {...}, "data": "<base64 body>"}`).
pub fn prepare(delivery: &Delivery) -> Result<(BatchKey, Vec<u8>), HandleError> {
    let submission = &delivery.submission;
    let data = base64::engine::general_purpose::STANDARD.encode(&submission.body);
    let mut line = Vec::with_capacity(submission.encoded_len() + data.len());
    serde_json::to_writer(
        &mut line,
        &Line {
            attributes: &submission.attributes,
            data: &data,
        },
    )?;
    line.shrink_to_fit();
    let route = &submission.route;
    let key = BatchKey::new(
        &route.namespace,
        &route.doc_type,
        &route.doc_version,
        submitted_at(delivery),
    );
    Ok((key, line))
}

/// The submission time: the edge-spec `submission_timestamp` attribute when present, else the
/// time Redis added the entry (the stream id's milliseconds), else now.
fn submitted_at(delivery: &Delivery) -> DateTime<Utc> {
    if let Some(ts) = delivery.submission.attributes.get("submission_timestamp") {
        if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
            return t.with_timezone(&Utc);
        }
    }
    let added = delivery
        .id
        .split('-')
        .next()
        .and_then(|ms| ms.parse::<i64>().ok());
    added
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Utc::now)
}
