//! `POST`/`PUT /submit/...`: validate the request, wrap the body with its attributes, enqueue, answer 200 once Redis has it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use cadence::{CountedExt, Timed};
use http_body_util::BodyExt;
use wharf_queue::{Submission, CANARY_TOKEN_HEADER};

use crate::budget::Held;
use crate::edge::{self, CanaryAccess, PathError, RequestMeta};
use crate::rejection::Rejection;
use crate::state::AppState;
use crate::token::constant_time_eq;

/// Handles one submission. The body is read as opaque bytes and never decompressed or parsed.
pub async fn submit(State(state): State<AppState>, request: Request<Body>) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let has_body = declares_body(request.headers());
    match accept(&state, peer, request).await {
        Ok(status) => {
            state.metrics.incr_with_tags("submission.accepted").send();
            status.into_response()
        }
        Err(rejection) => {
            state
                .metrics
                .incr_with_tags("submission.rejected")
                .with_tag("reason", rejection.reason())
                .send();
            // Every refusal but the queue's comes before the body has been read to its end.
            // hyper then drops the connection rather than read the rest, so saying so keeps a
            // client from sending its next request on a connection about to close.
            let body_left = has_body
                && !matches!(
                    rejection,
                    Rejection::QueueUnavailable | Rejection::NotReplicated
                );
            if body_left {
                rejection.closing()
            } else {
                rejection.into_response()
            }
        }
    }
}

/// Whether a request says a body follows (chunked, or a non-zero `Content-Length`): refusing it
/// before reading that body leaves the connection unusable for another request.
pub(crate) fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

async fn accept(
    state: &AppState,
    peer: Option<SocketAddr>,
    request: Request<Body>,
) -> Result<StatusCode, Rejection> {
    let received_at = chrono::Utc::now();
    let settings = &state.settings;
    let (parts, body) = request.into_parts();

    let rest = parts
        .uri
        .path()
        .strip_prefix("/submit/")
        .unwrap_or_default();
    let canary = match &settings.canary_token {
        None => CanaryAccess::AsAnyOther,
        Some(token) => {
            let given = parts.headers.get(CANARY_TOKEN_HEADER).map(|v| v.as_bytes());
            if given.is_some_and(|g| constant_time_eq(g, token.expose().as_bytes())) {
                CanaryAccess::Granted
            } else {
                CanaryAccess::Refused
            }
        }
    };
    let route =
        edge::parse_route(rest, &settings.allowed_namespaces, canary).map_err(|e| match e {
            PathError::NotFound(why) => Rejection::NotFound(why),
            PathError::BadRequest(why) => Rejection::BadRequest(why),
        })?;

    let declared = check_length(&parts.headers, settings.max_body_bytes)?;
    if let Some(backlog) = state.backlog.backlog() {
        if backlog >= settings.max_queue_depth {
            return Err(Rejection::QueueFull);
        }
    }
    if state.backlog.memory_full(state.memory_high_water_percent) {
        return Err(Rejection::MemoryFull);
    }
    // Checked before the body is read, so that every refusal once it has been read is the
    // queue's (which `submit` relies on to keep the connection open).
    let attributes = edge::attributes(
        &RequestMeta {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            peer,
            received_at,
        },
        settings.drop_client_ip,
    )
    .map_err(Rejection::HeaderNotUtf8)?;
    // Held until the answer is decided: the body, its encoded copy and the pipeline carrying it
    // are all alive until then.
    let mut held = state.budget.admit().ok_or(Rejection::Overloaded)?;
    if let Some(declared) = declared {
        if !held.cover(declared) {
            return Err(Rejection::Overloaded);
        }
    }
    let body = read_body(
        body,
        settings.max_body_bytes,
        declared,
        &mut held,
        settings.body_timeout,
    )
    .await?;

    let submission = Submission::new(route, attributes, body);
    let encoded = submission.encoded_len();
    // Copied before the submission goes to the queue, and kept only once Redis has it.
    let debug_copy = state
        .debug
        .as_ref()
        .and_then(|view| view.copy(&submission, received_at));

    let started = Instant::now();
    let enqueued = tokio::time::timeout(
        state.enqueue_timeout,
        state.enqueuer.enqueue_one(submission),
    )
    .await;
    state
        .metrics
        .time_with_tags("enqueue.duration", started.elapsed())
        .send();
    match enqueued {
        Ok(Ok(_)) => {
            state.backlog.admitted(encoded);
            if let (Some(view), Some(copy)) = (&state.debug, debug_copy) {
                view.keep(copy);
            }
            Ok(StatusCode::OK)
        }
        Ok(Err(e)) => {
            tracing::warn!(type = "submission.enqueue_failed", error = %e, "could not enqueue a submission");
            // The write may exist on the primary without its replicas: the client's retry can
            // make a duplicate, which the worker lands like any other document.
            if is_not_replicated(&e) {
                state.backlog.admitted(encoded);
                return Err(Rejection::NotReplicated);
            }
            Err(Rejection::QueueUnavailable)
        }
        Err(_) => {
            tracing::warn!(type = "submission.enqueue_failed", error = "timeout", "enqueue timed out");
            Err(Rejection::QueueUnavailable)
        }
    }
}

fn is_not_replicated(e: &wharf_queue::enqueue::EnqueueError) -> bool {
    use wharf_queue::enqueue::EnqueueError;
    use wharf_queue::QueueError;
    match e {
        EnqueueError::Group { source, .. } => {
            matches!(source.as_ref(), QueueError::NotReplicated { .. })
        }
        EnqueueError::Stopped => false,
    }
}

/// 411 without a length, 413 when the declared length is already over the limit; the declared
/// length, or `None` for a chunked body. Requests framed both ways were refused earlier
/// ([`crate::middleware::refuse_ambiguous_requests`]).
fn check_length(headers: &HeaderMap, limit: usize) -> Result<Option<usize>, Rejection> {
    match headers.get(header::CONTENT_LENGTH) {
        Some(value) => {
            let length: usize = value
                .to_str()
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| Rejection::BadRequest("invalid Content-Length".into()))?;
            if length > limit {
                return Err(Rejection::PayloadTooLarge { limit });
            }
            Ok(Some(length))
        }
        None if headers.contains_key(header::TRANSFER_ENCODING) => Ok(None),
        None => Err(Rejection::LengthRequired),
    }
}

/// Reads the whole body, refusing it once it passes `limit` (413), goes `idle` without a byte
/// (503: a stalled upload is as likely the network's fault as the client's), or grows past what
/// the in-flight budget can cover (503). A declared length was covered, and allocated, before.
async fn read_body(
    mut body: Body,
    limit: usize,
    declared: Option<usize>,
    held: &mut Held,
    idle: Duration,
) -> Result<Bytes, Rejection> {
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(0));
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(Rejection::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(Rejection::BodyRead),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing Wharf stores
        };
        let total = buffer.len() + data.len();
        if total > limit {
            return Err(Rejection::PayloadTooLarge { limit });
        }
        if total > buffer.capacity() {
            // A chunked body: grow the buffer here, by doubling up to the limit, and count what
            // is allocated rather than what has arrived, or the budget would see half the memory.
            let grown = total.max(buffer.capacity() * 2).min(limit);
            if !held.cover(grown) {
                return Err(Rejection::Overloaded);
            }
            buffer.reserve(grown - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok(buffer.freeze())
}
