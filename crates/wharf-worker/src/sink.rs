//! The S3 sink: the aws-sdk-s3 client (standard credential chain, optional path-style endpoint), PutObject and HeadBucket with errors classified.

use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Region};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use wharf_settings::S3Settings;

/// How a failed S3 call should be treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S3Failure {
    /// Network trouble, timeouts, 5xx, throttling, clock skew, expired credentials: retried
    /// forever with backoff; never counts toward `MAX_ATTEMPTS`.
    Transient(String),
    /// S3 refuses the request itself (AccessDenied, NoSuchBucket, an invalid request): counts
    /// toward `MAX_ATTEMPTS` once it has lasted `S3_REFUSAL_GRACE_MS`.
    Refused(String),
}

impl S3Failure {
    /// What failed, as logged: the operation and key, then the HTTP status and S3 error code
    /// when S3 answered, else the SDK's error.
    pub fn message(&self) -> &str {
        match self {
            S3Failure::Transient(m) | S3Failure::Refused(m) => m,
        }
    }

    /// The `kind` tag of `s3.put.errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            S3Failure::Transient(_) => "transient",
            S3Failure::Refused(_) => "refused",
        }
    }
}

/// S3 error codes that say "try again later" whatever their HTTP status: a 400
/// `RequestTimeout` or a 403 `RequestTimeTooSkewed` is no reason to give a document up.
const TRANSIENT_CODES: &[&str] = &[
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "TokenRefreshRequired",
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
    "IDPCommunicationError",
];

/// Whether an S3 error answer is transient: by its error code first, then by its status.
pub fn is_transient(status: u16, code: Option<&str>) -> bool {
    if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return true;
    }
    status >= 500 || status == 408 || status == 429
}

/// Why the bucket check at start-up failed, worded for an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketProblem {
    /// HeadBucket answered 404: no such bucket at this endpoint.
    #[error(
        "S3 bucket {bucket:?} does not exist (HeadBucket answered 404); create it or fix S3_BUCKET"
    )]
    Missing {
        /// The bucket checked (`S3_BUCKET`).
        bucket: String,
    },
    /// HeadBucket answered 401 or 403: the credentials may not use the bucket.
    #[error("S3 refused access to bucket {bucket:?} (HTTP {status}): check the worker's AWS credentials and the bucket policy")]
    AccessDenied {
        /// The bucket checked (`S3_BUCKET`).
        bucket: String,
        /// 401 or 403, as S3 answered.
        status: u16,
    },
    /// HeadBucket answered with another error status (a 400, a 5xx).
    #[error("S3 bucket {bucket:?} check failed with HTTP {status}: {detail}")]
    Other {
        /// The bucket checked (`S3_BUCKET`).
        bucket: String,
        /// The HTTP status S3 answered.
        status: u16,
        /// The SDK's error with its causes.
        detail: String,
    },
    /// No answer at all: DNS, connection, TLS or a timeout on the way to the endpoint.
    #[error("S3 endpoint unreachable while checking bucket {bucket:?}: {detail}")]
    Unreachable {
        /// The bucket checked (`S3_BUCKET`).
        bucket: String,
        /// The SDK's error with its causes, which say what broke.
        detail: String,
    },
    /// The request could not even be built, typically for want of credentials or a region.
    #[error("S3 client misconfigured (credentials or region?): {detail}")]
    Client {
        /// The SDK's error with its causes.
        detail: String,
    },
}

impl BucketProblem {
    /// A short, stable name for the kind of problem (log field and metric tag).
    pub fn kind(&self) -> &'static str {
        match self {
            BucketProblem::Missing { .. } => "bucket_missing",
            BucketProblem::AccessDenied { .. } => "access_denied",
            BucketProblem::Other { .. } => "http_error",
            BucketProblem::Unreachable { .. } => "unreachable",
            BucketProblem::Client { .. } => "client",
        }
    }
}

/// An S3 client bound to the destination bucket.
#[derive(Clone, Debug)]
pub struct S3Sink {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

impl S3Sink {
    /// Builds the client from the standard AWS chain (environment, profile, container or
    /// instance role); `S3_ENDPOINT_URL` switches to that endpoint with path-style addressing.
    ///
    /// The SDK's own retries are off: [`crate::batcher`] retries with its own backoff and
    /// keeps the jobs unacknowledged meanwhile.
    pub async fn new(settings: &S3Settings) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest()).load().await;
        let region = shared
            .region()
            .cloned()
            .unwrap_or_else(|| Region::new("us-east-1"));
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .region(region)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            );
        if let Some(url) = &settings.endpoint_url {
            builder = builder.endpoint_url(url).force_path_style(true);
        }
        Self {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
        }
    }

    /// The destination bucket (`S3_BUCKET`).
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// What every object key starts with (`S3_PREFIX`); may be empty.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The configured client, for the calls this type does not wrap (listing, reading and
    /// deleting objects); like every call here, it never retries on its own.
    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    /// HeadBucket, with the failure explained.
    pub async fn check_bucket(&self) -> Result<(), BucketProblem> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                let bucket = self.bucket.clone();
                Err(match status {
                    404 => BucketProblem::Missing { bucket },
                    401 | 403 => BucketProblem::AccessDenied { bucket, status },
                    _ => BucketProblem::Other {
                        bucket,
                        status,
                        detail: DisplayErrorContext(&e.into_err()).to_string(),
                    },
                })
            }
            Err(e @ SdkError::ConstructionFailure(_)) => Err(BucketProblem::Client {
                detail: DisplayErrorContext(&e).to_string(),
            }),
            Err(e) => Err(BucketProblem::Unreachable {
                bucket: self.bucket.clone(),
                detail: DisplayErrorContext(&e).to_string(),
            }),
        }
    }

    /// Whether object `key` exists (`HeadObject`): the docId ledger's check of an earlier upload.
    pub async fn exists(&self, key: &str) -> Result<bool, S3Failure> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if e.raw().status().as_u16() == 404 => Ok(false),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                let message = format!("HeadObject {key}: HTTP {status}");
                if is_transient(status, None) {
                    Err(S3Failure::Transient(message))
                } else {
                    Err(S3Failure::Refused(message))
                }
            }
            Err(e) => Err(S3Failure::Transient(format!(
                "HeadObject {key}: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }

    /// One PutObject of an NDJSON object compressed with `content_encoding`.
    pub async fn put(
        &self,
        key: &str,
        body: bytes::Bytes,
        content_encoding: &str,
    ) -> Result<(), S3Failure> {
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .content_encoding(content_encoding)
            .body(ByteStream::from(body))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(e)) => {
                let status = e.raw().status().as_u16();
                let code = e.err().code().map(str::to_string);
                let message = format!(
                    "PutObject {key}: HTTP {status} {}: {}",
                    code.as_deref().unwrap_or("(no code)"),
                    DisplayErrorContext(e.err())
                );
                if is_transient(status, code.as_deref()) {
                    Err(S3Failure::Transient(message))
                } else {
                    Err(S3Failure::Refused(message))
                }
            }
            Err(e @ SdkError::ConstructionFailure(_)) => Err(S3Failure::Refused(format!(
                "PutObject {key}: {}",
                DisplayErrorContext(&e)
            ))),
            Err(e) => Err(S3Failure::Transient(format!(
                "PutObject {key}: {}",
                DisplayErrorContext(&e)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_code_before_status() {
        assert!(is_transient(400, Some("RequestTimeout")));
        assert!(is_transient(403, Some("RequestTimeTooSkewed")));
        assert!(is_transient(400, Some("ExpiredToken")));
        assert!(is_transient(503, Some("SlowDown")));
        assert!(is_transient(503, None));
        assert!(is_transient(429, None));
        assert!(!is_transient(403, Some("AccessDenied")));
        assert!(!is_transient(404, Some("NoSuchBucket")));
        assert!(!is_transient(400, Some("InvalidRequest")));
        assert!(!is_transient(400, None));
    }
}
