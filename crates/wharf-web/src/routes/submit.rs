//! `POST`/`PUT /submit/...`: validate the request, wrap the body with its attributes, enqueue, answer 200 once Redis has it.

use std::net::SocketAddr;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Request, StatusCode};
use cadence::{CountedExt, Timed};
use wharf_queue::Submission;

use crate::edge::{self, PathError, RequestMeta};
use crate::rejection::Rejection;
use crate::state::AppState;

/// Handles one submission. The body is read as opaque bytes and never decompressed or parsed.
pub async fn submit(
    State(state): State<AppState>,
    request: Request<Body>,
) -> Result<StatusCode, Rejection> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let result = accept(&state, peer, request).await;
    match &result {
        Ok(_) => state.metrics.incr_with_tags("submission.accepted").send(),
        Err(rejection) => state
            .metrics
            .incr_with_tags("submission.rejected")
            .with_tag("reason", rejection.reason())
            .send(),
    }
    result
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
    let route = edge::parse_route(rest, &settings.allowed_namespaces).map_err(|e| match e {
        PathError::NotFound(why) => Rejection::NotFound(why),
        PathError::BadRequest(why) => Rejection::BadRequest(why),
    })?;

    check_length(&parts.headers, settings.max_body_bytes)?;
    if let Some(backlog) = state.backlog.backlog() {
        if backlog >= settings.max_queue_depth {
            return Err(Rejection::QueueFull);
        }
    }
    if state.backlog.memory_full(state.memory_high_water_percent) {
        return Err(Rejection::MemoryFull);
    }

    let body = axum::body::to_bytes(body, settings.max_body_bytes)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                Rejection::PayloadTooLarge {
                    limit: settings.max_body_bytes,
                }
            } else {
                Rejection::BodyRead
            }
        })?;

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
    );
    let submission = Submission::new(route, attributes, body);
    let encoded = submission.encoded_len();

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
        EnqueueError::Queue(QueueError::NotReplicated { .. }) => true,
        EnqueueError::Group { source, .. } => {
            matches!(source.as_ref(), QueueError::NotReplicated { .. })
        }
        _ => false,
    }
}

/// 411 without a length, 413 when the declared length is already over the limit.
fn check_length(headers: &HeaderMap, limit: usize) -> Result<(), Rejection> {
    let chunked = headers.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.to_ascii_lowercase().contains("chunked"))
    });
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
            Ok(())
        }
        None if chunked => Ok(()),
        None => Err(Rejection::LengthRequired),
    }
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}
