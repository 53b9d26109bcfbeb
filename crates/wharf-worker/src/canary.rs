//! `wharf canary`: submits a uniquely identified document through the web role and waits until the worker has landed it in S3.
//!
//! The document goes to the reserved namespace [`NAMESPACE`]: with `CANARY_TOKEN` set (on the web
//! role and here), only requests carrying that token may write there; without it, the namespace
//! follows `ALLOWED_NAMESPACES` like any other. Once found, the canary deletes the object that holds it, so canaries leave
//! nothing behind. Run it with the worker's S3 settings and credentials.

use std::time::{Duration, Instant};

use wharf_settings::Settings;

use crate::batch::canary_object_key;
use crate::objects;
use crate::sink::S3Sink;

/// The reserved namespace canary documents are sent to.
pub const NAMESPACE: &str = wharf_queue::CANARY_NAMESPACE;
/// The docType of canary documents: the second level of their object keys.
pub const DOC_TYPE: &str = "canary";
/// The docVersion of canary documents: the third level of their object keys.
pub const DOC_VERSION: &str = "1";

/// What a successful canary found.
#[derive(Debug, Clone)]
pub struct CanaryReport {
    /// The random (UUID v4) docId submitted, also the `canary` value of the document's body.
    pub doc_id: String,
    /// The key the document was found under; the object has been deleted since.
    pub object_key: String,
    /// From the submission to finding it in S3.
    pub elapsed: Duration,
}

/// Why the canary failed, worded for a deploy pipeline's log.
#[derive(Debug, thiserror::Error)]
pub enum CanaryError {
    /// The web role gave no answer: DNS, connection or TLS trouble, or none within 10 s.
    #[error("submitting to {url} failed: {detail}")]
    Submit {
        /// The full submission URL, `/submit/{NAMESPACE}/{DOC_TYPE}/{DOC_VERSION}/{docId}`.
        url: String,
        /// The HTTP client's error.
        detail: String,
    },
    /// The web role answered with an error status instead of accepting the document.
    #[error("the web role answered {status} to {url}: {body}")]
    Rejected {
        /// The full submission URL, `/submit/{NAMESPACE}/{DOC_TYPE}/{DOC_VERSION}/{docId}`.
        url: String,
        /// 404 when the canary namespace is refused (`CANARY_TOKEN` differs, or unset and not in
        /// `ALLOWED_NAMESPACES`), 507 when the queue is full.
        status: u16,
        /// The first 500 characters of the answer's body.
        body: String,
    },
    /// Accepted, but not in S3 before the timeout: no worker running, one that cannot write, or
    /// a backlog longer than the timeout.
    #[error("document {doc_id} was accepted by the web role but did not reach s3://{bucket}/{key} within {waited:?}: is a worker running, and can it write to the bucket?")]
    NotLanded {
        /// The docId submitted, to look for in the worker's logs.
        doc_id: String,
        /// The bucket polled (`S3_BUCKET`).
        bucket: String,
        /// The key polled: the worker names a canary's object by its docId.
        key: String,
        /// From the submission to giving up.
        waited: Duration,
    },
    /// Reading or deleting the canary's object failed for another reason than its absence
    /// (credentials, permissions, the endpoint); holds the SDK's error.
    #[error("reading S3 failed: {0}")]
    S3(String),
}

/// Submits one canary document to `url` and waits up to `timeout` for it to land in S3.
pub async fn run(
    settings: &Settings,
    url: &str,
    timeout: Duration,
) -> Result<CanaryReport, CanaryError> {
    let ws = &settings.worker;
    let sink = S3Sink::new(&ws.s3).await;
    let doc_id = uuid::Uuid::new_v4().to_string();
    let body = format!("{{\"canary\":\"{doc_id}\"}}");
    let started = Instant::now();
    let submit_url = format!(
        "{}/submit/{NAMESPACE}/{DOC_TYPE}/{DOC_VERSION}/{doc_id}",
        url.trim_end_matches('/')
    );
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CanaryError::Submit {
            url: submit_url.clone(),
            detail: e.to_string(),
        })?;
    let mut request = client
        .post(&submit_url)
        .header("content-type", "application/json")
        .body(body.clone());
    if let Some(token) = &settings.web.canary_token {
        request = request.header(wharf_queue::CANARY_TOKEN_HEADER, token.expose());
    }
    let response = request.send().await.map_err(|e| CanaryError::Submit {
        url: submit_url.clone(),
        detail: e.to_string(),
    })?;
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(CanaryError::Rejected {
            url: submit_url,
            status: status.as_u16(),
            body: text.chars().take(500).collect(),
        });
    }
    // The worker names a canary document's object by its docId: one GET per poll, however
    // many other objects the prefix holds.
    let key = canary_object_key(
        sink.prefix(),
        DOC_TYPE,
        DOC_VERSION,
        &doc_id,
        ws.output_compression,
    );
    let deadline = started + timeout;
    loop {
        if holds(&sink, &key, body.as_bytes()).await? {
            sink.client()
                .delete_object()
                .bucket(sink.bucket())
                .key(&key)
                .send()
                .await
                .map_err(|e| {
                    CanaryError::S3(aws_sdk_s3::error::DisplayErrorContext(&e).to_string())
                })?;
            return Ok(CanaryReport {
                doc_id,
                object_key: key,
                elapsed: started.elapsed(),
            });
        }
        if Instant::now() >= deadline {
            return Err(CanaryError::NotLanded {
                doc_id,
                bucket: sink.bucket().to_string(),
                key,
                waited: started.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the object `key` exists and holds a document whose body is `body`.
async fn holds(sink: &S3Sink, key: &str, body: &[u8]) -> Result<bool, CanaryError> {
    let object = sink
        .client()
        .get_object()
        .bucket(sink.bucket())
        .key(key)
        .send()
        .await;
    let object = match object {
        Ok(object) => object,
        Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(false),
        Err(e) => {
            return Err(CanaryError::S3(
                aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
            ))
        }
    };
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| CanaryError::S3(e.to_string()))?
        .into_bytes();
    let Ok(decoded) = objects::decode(&bytes) else {
        return Ok(false);
    };
    Ok(decoded.documents.iter().any(|d| d.body == body))
}
