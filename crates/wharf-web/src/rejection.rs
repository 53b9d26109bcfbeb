//! Every way a submission can be refused, with its status code, short message and metric reason.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Seconds a client is told to wait when Wharf cannot take a submission right now.
pub const RETRY_AFTER_SECONDS: u64 = 30;

/// A refused request. Every variant answers with a short plain-text reason.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// 400: a malformed path part, an unparsable `Content-Length`, or ambiguous framing; holds
    /// the message sent.
    #[error("{0}")]
    BadRequest(String),
    /// 404: not a submission URL for its namespace, or a namespace not accepted here
    /// (`ALLOWED_NAMESPACES`, `CANARY_TOKEN`); holds the message sent.
    #[error("{0}")]
    NotFound(&'static str),
    /// 400: a header stored as an attribute is not UTF-8; holds the header's name.
    #[error("header {0} is not valid UTF-8")]
    HeaderNotUtf8(&'static str),
    /// 411: neither `Content-Length` nor chunked `Transfer-Encoding`.
    #[error("Content-Length is required (or use chunked transfer encoding)")]
    LengthRequired,
    /// 413: the body, declared or as read so far, is over `MAX_BODY_BYTES`.
    #[error("body larger than {limit} bytes")]
    PayloadTooLarge {
        /// `MAX_BODY_BYTES`.
        limit: usize,
    },
    /// 414: the path and query are longer than `MAX_PATH_BYTES`.
    #[error("request path longer than {limit} bytes")]
    UriTooLong {
        /// `MAX_PATH_BYTES`.
        limit: usize,
    },
    /// 507 with `Retry-After`: the last sampled queue backlog is at or over `MAX_QUEUE_DEPTH`.
    #[error("queue is full, retry later")]
    QueueFull,
    /// 507 with `Retry-After`: the fullest Redis master, with what was admitted since it was
    /// sampled, is at or over `REDIS_MEMORY_HIGH_WATER_PERCENT` of its `maxmemory`.
    #[error("queue storage is nearly full, retry later")]
    MemoryFull,
    /// 503 with `Retry-After`: the entry may be on the primary, but fewer replicas than
    /// `REDIS_MIN_REPLICAS_ACK` confirmed it in time, so a retry may store a duplicate.
    #[error("queue replicas did not confirm in time, retry later")]
    NotReplicated,
    /// 503 with `Retry-After`: Redis failed or did not answer the enqueue within twice
    /// `REDIS_TIMEOUT_MS`.
    #[error("queue unavailable, retry later")]
    QueueUnavailable,
    /// 400: reading the body failed (the connection broke, or its chunked coding was malformed).
    #[error("could not read the request body")]
    BodyRead,
    /// 503 with `Retry-After`: `MAX_INFLIGHT_REQUESTS` or `MAX_INFLIGHT_BYTES` is used up.
    #[error("too many submissions in flight, retry later")]
    Overloaded,
    /// 503 with `Retry-After`: no body byte arrived for `BODY_TIMEOUT_MS`.
    #[error("the request body stopped arriving, retry later")]
    BodyTimeout,
    /// A browser page whose origin is not in `CORS_ALLOWED_ORIGINS`.
    #[error("submissions from this origin are not allowed")]
    OriginNotAllowed,
}

impl Rejection {
    /// The status this refusal answers with; 503 and 507 also get `Retry-After` from
    /// [`retry_after_when_unavailable`].
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadRequest(_) | Rejection::HeaderNotUtf8(_) | Rejection::BodyRead => {
                StatusCode::BAD_REQUEST
            }
            Rejection::NotFound(_) => StatusCode::NOT_FOUND,
            Rejection::OriginNotAllowed => StatusCode::FORBIDDEN,
            Rejection::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Rejection::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Rejection::QueueFull | Rejection::MemoryFull => StatusCode::INSUFFICIENT_STORAGE,
            Rejection::QueueUnavailable
            | Rejection::NotReplicated
            | Rejection::Overloaded
            | Rejection::BodyTimeout => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `reason` tag of the `submission.rejected` metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadRequest(_) => "bad_path",
            Rejection::HeaderNotUtf8(_) => "bad_header",
            Rejection::NotFound(_) => "not_found",
            Rejection::LengthRequired => "length_required",
            Rejection::PayloadTooLarge { .. } => "body_too_large",
            Rejection::UriTooLong { .. } => "path_too_long",
            Rejection::QueueFull => "queue_full",
            Rejection::MemoryFull => "redis_memory",
            Rejection::NotReplicated => "not_replicated",
            Rejection::QueueUnavailable => "queue_unavailable",
            Rejection::BodyRead => "body_read",
            Rejection::Overloaded => "overloaded",
            Rejection::BodyTimeout => "body_timeout",
            Rejection::OriginNotAllowed => "origin_not_allowed",
        }
    }

    /// The answer, saying `Connection: close`: for a refusal that leaves the request's body
    /// unread, which hyper will not read to its end, so the client must not send another
    /// request on this connection.
    pub fn closing(self) -> Response {
        let mut response = self.into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

/// Every 503 and 507, whoever wrote it (a handler, or the request timeout), tells the client
/// when to retry: these answers mean "not now", never "not this".
pub async fn retry_after_when_unavailable(mut response: Response) -> Response {
    if matches!(
        response.status(),
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::INSUFFICIENT_STORAGE
    ) {
        response
            .headers_mut()
            .entry(header::RETRY_AFTER)
            .or_insert(HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    response
}
