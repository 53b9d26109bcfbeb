//! Every way a submission can be refused, with its status code, short message and metric reason.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Seconds a client is told to wait when Wharf cannot take a submission right now.
pub const RETRY_AFTER_SECONDS: u64 = 30;

/// A refused request. Every variant answers with a short plain-text reason.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(&'static str),
    #[error("Content-Length is required (or use chunked transfer encoding)")]
    LengthRequired,
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("request path longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("queue is full, retry later")]
    QueueFull,
    #[error("queue storage is nearly full, retry later")]
    MemoryFull,
    #[error("queue replicas did not confirm in time, retry later")]
    NotReplicated,
    #[error("queue unavailable, retry later")]
    QueueUnavailable,
    #[error("could not read the request body")]
    BodyRead,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) | Rejection::BodyRead => StatusCode::BAD_REQUEST,
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            Rejection::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Rejection::QueueFull | Rejection::MemoryFull => StatusCode::INSUFFICIENT_STORAGE,
            Rejection::QueueUnavailable | Rejection::NotReplicated => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The `reason` tag of the `submission.rejected` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_path",
            Rejection::NotFound(_) => "not_found",
            Rejection::LengthRequired => "length_required",
            Rejection::PayloadTooLarge { .. } => "body_too_large",
            Rejection::UriTooLong { .. } => "path_too_long",
            Rejection::QueueFull => "queue_full",
            Rejection::MemoryFull => "redis_memory",
            Rejection::NotReplicated => "not_replicated",
            Rejection::QueueUnavailable => "queue_unavailable",
            Rejection::BodyRead => "body_read",
        }
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, format!("{self}\n")).into_response();
        if matches!(
            self,
            Rejection::QueueFull
                | Rejection::MemoryFull
                | Rejection::QueueUnavailable
                | Rejection::NotReplicated
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}
