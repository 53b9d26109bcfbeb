//! Per-request plumbing: the 414 path limit, and one `request.summary` log line plus metrics per request.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, Request};
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
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let agent = header_text(&request, header::USER_AGENT.as_str());
    let rid = header_text(&request, "x-request-id");

    let response = next.run(request).await;

    let elapsed = started.elapsed();
    let code = response.status().as_u16();
    tracing::info!(
        type = "request.summary",
        agent = %agent,
        path = %path,
        method = %method,
        code = code,
        t = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        rid = %rid,
    );
    let status = code.to_string();
    metrics
        .incr_with_tags("request.count")
        .with_tag("route", &route)
        .with_tag("method", method.as_str())
        .with_tag("status", &status)
        .send();
    metrics
        .time_with_tags("request.duration", elapsed)
        .with_tag("route", &route)
        .with_tag("method", method.as_str())
        .with_tag("status", &status)
        .send();
    response
}

fn header_text(request: &Request<Body>, name: &str) -> String {
    request
        .headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default()
}
