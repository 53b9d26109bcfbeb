//! The apalis task handler: turns a delivered entry into its NDJSON line and batch key, and puts it in a batch. It never waits for S3.

use apalis::prelude::{BoxDynError, Data};
use base64::Engine;
use chrono::{DateTime, TimeZone, Utc};

use crate::batch::{BatchKey, DocIdentity, Entry};
use crate::batcher::BatcherHandle;
use crate::reader::Delivery;

/// Why a delivery could not be put in a batch.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The attributes could not be serialized as JSON; with string names and values, not
    /// expected to happen.
    #[error("could not write the NDJSON line: {0}")]
    Line(#[from] serde_json::Error),
    /// The base64 of the body did not fit the room sized for it: a fault in that sizing, not in
    /// the submission.
    #[error("could not encode the body: {0}")]
    Encode(String),
    /// The batcher has ended, so the entry was not batched and stays unacknowledged.
    #[error("the batcher has stopped (the worker is stopping); the entry stays pending for another worker")]
    Stopping,
}

/// Hands one delivery to the batcher. `Ok` means "in a batch", not "in S3": the batch is the
/// unit of acknowledgement.
pub async fn handle(delivery: Delivery, batcher: Data<BatcherHandle>) -> Result<(), BoxDynError> {
    let (key, line) = prepare(&delivery)?;
    let submission = &delivery.submission;
    let entry = Entry {
        task_id: format!("{}/{}", delivery.shard, delivery.id),
        doc: DocIdentity::new(&submission.route, &submission.body),
        line,
        body_bytes: submission.body.len(),
        ack: (delivery.shard, delivery.id),
    };
    batcher
        .submit(key, entry, delivery.taken_over)
        .await
        .map_err(|_| HandleError::Stopping)?;
    Ok(())
}

/// The batch key and the NDJSON line (`{"attributes": {...}, "data": "<base64 body>"}`).
pub fn prepare(delivery: &Delivery) -> Result<(BatchKey, Vec<u8>), HandleError> {
    let submission = &delivery.submission;
    let line = ndjson_line(&submission.attributes, &submission.body)?;
    let route = &submission.route;
    let at = submitted_at(delivery);
    let key = if route.namespace == wharf_queue::CANARY_NAMESPACE {
        BatchKey::canary(&route.doc_type, &route.doc_version, &route.doc_id, at)
    } else {
        BatchKey::new(&route.namespace, &route.doc_type, &route.doc_version, at)
    };
    Ok((key, line))
}

/// `{"attributes":{...},"data":"<base64 of the body>"}`, written straight into one buffer of the
/// right size: base64 never needs escaping, and passing it through the JSON serializer checked
/// every character of every body (about a tenth of a worker's instructions).
pub fn ndjson_line(
    attributes: &std::collections::BTreeMap<String, String>,
    body: &[u8],
) -> Result<Vec<u8>, HandleError> {
    let attributes = serde_json::to_vec(attributes)?;
    let mut line = Vec::with_capacity(attributes.len() + body.len().div_ceil(3) * 4 + 26);
    line.extend_from_slice(b"{\"attributes\":");
    line.extend_from_slice(&attributes);
    line.extend_from_slice(b",\"data\":\"");
    let start = line.len();
    line.resize(start + body.len().div_ceil(3) * 4, 0);
    let written = base64::engine::general_purpose::STANDARD
        .encode_slice(body, &mut line[start..])
        .map_err(|e| HandleError::Encode(e.to_string()))?;
    line.truncate(start + written);
    line.extend_from_slice(b"\"}");
    Ok(line)
}

/// The submission time: the edge-spec `submission_timestamp` attribute when present, else the
/// time Redis added the entry (the stream id's milliseconds), else now.
fn submitted_at(delivery: &Delivery) -> DateTime<Utc> {
    if let Some(ts) = delivery.submission.attributes.get("submission_timestamp") {
        if let Ok(t) = DateTime::parse_from_rfc3339(ts) {
            return t.with_timezone(&Utc);
        }
    }
    wharf_queue::streams::added_ms(&delivery.id)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .unwrap_or_else(Utc::now)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// The line as the JSON serializer writes it (the format before it was written by hand).
    #[derive(serde::Serialize)]
    struct Line<'a> {
        attributes: &'a BTreeMap<String, String>,
        data: &'a str,
    }

    #[test]
    fn the_line_is_what_the_json_serializer_would_write() {
        let mut attributes = BTreeMap::new();
        attributes.insert("uri".to_string(), "/submit/a/b/1/x?q=\"\\".to_string());
        attributes.insert("user_agent".to_string(), "ua\u{7f}\u{1}é".to_string());
        for len in [0usize, 1, 2, 3, 4, 255, 1000] {
            let body: Vec<u8> = (0..len).map(|i| (i * 37 % 256) as u8).collect();
            let data = base64::engine::general_purpose::STANDARD.encode(&body);
            let expected = serde_json::to_vec(&Line {
                attributes: &attributes,
                data: &data,
            })
            .unwrap();
            let line = ndjson_line(&attributes, &body).unwrap();
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }
}
