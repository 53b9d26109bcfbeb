//! Per-request plumbing: the 414 path limit, and one `request.summary` log line plus metrics per request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderValue, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cadence::{CountedExt, StatsdClient, Timed};

use crate::rejection::Rejection;

/// Refuses paths (with query) longer than the limit before any routing work.
pub async fn limit_path_length(
    State(limit): State<usize>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str().len())
        .unwrap_or_default();
    if length > limit {
        return Rejection::UriTooLong { limit }.into_response();
    }
    next.run(request).await
}

/// Logs `request.summary` (MozLog) and sends `request.count` / `request.duration` tagged by route and status.
///
/// The client address, `Authorization` and cookies are never logged.
pub async fn summarize(
    State(metrics): State<Arc<StatsdClient>>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    // Shared clones (reference counts, no copies): this runs on every request.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let agent = request.headers().get(header::USER_AGENT).cloned();
    let rid = request.headers().get("x-request-id").cloned();

    let response = next.run(request).await;

    let elapsed = started.elapsed();
    let status = response.status();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    tracing::info!(
        type = "request.summary",
        agent = %header_text(agent.as_ref()),
        path = uri.path(),
        method = method.as_str(),
        code = status.as_u16(),
        t = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        rid = %header_text(rid.as_ref()),
    );
    metrics
        .incr_with_tags("request.count")
        .with_tag("route", route)
        .with_tag("method", method.as_str())
        .with_tag("status", status.as_str())
        .send();
    metrics
        .time_with_tags("request.duration", elapsed)
        .with_tag("route", route)
        .with_tag("method", method.as_str())
        .with_tag("status", status.as_str())
        .send();
    response
}

fn header_text(value: Option<&HeaderValue>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes()))
}
