//! Per-request plumbing: refusing ambiguous framing and over-long paths, and one `request.summary` log line plus metrics per request.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Version};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cadence::{CountedExt, StatsdClient, Timed};

use crate::framing::FramedBothWays;
use crate::rejection::Rejection;

/// Refuses paths (with query) longer than the limit. A `Router::layer` runs after routing, so
/// this spares the handlers, not the router.
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

/// Refuses (400) what a proxy and Wharf could read differently: a transfer coding other than
/// plain `chunked` (whose body Wharf would store still coded), and an HTTP/1.1 request without
/// exactly one `Host` (RFC 9112, section 3.2).
///
/// A request framed by both `Content-Length` and `Transfer-Encoding` is refused too, but hyper
/// drops its `Content-Length`, so [`crate::framing`] spots it in the raw bytes and marks it.
///
/// Every answer closes the connection: the body, if any, is left unread.
pub async fn refuse_ambiguous_requests(request: Request<Body>, next: Next) -> Response {
    let refuse = |why: &str| Rejection::BadRequest(why.into()).closing();
    if request.extensions().get::<FramedBothWays>().is_some() {
        return refuse("a request may not carry both Content-Length and Transfer-Encoding");
    }
    let headers = request.headers();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        let plain_chunked = first
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked");
        if !plain_chunked || codings.next().is_some() {
            return refuse("the only transfer coding accepted is `chunked` on its own");
        }
    }
    if request.version() == Version::HTTP_11
        && request.uri().authority().is_none()
        && headers.get_all(header::HOST).iter().count() != 1
    {
        return refuse("an HTTP/1.1 request needs exactly one Host header");
    }
    next.run(request).await
}

/// The `method` tag: a client can send any token as a method, and each new one would start a
/// new metric series, so anything outside the methods HTTP defines is `OTHER`.
pub fn method_tag(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
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
        method = method_tag(&method),
        code = status.as_u16(),
        t = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        rid = %header_text(rid.as_ref()),
    );
    metrics
        .incr_with_tags("request.count")
        .with_tag("route", route)
        .with_tag("method", method_tag(&method))
        .with_tag("status", status.as_str())
        .send();
    metrics
        .time_with_tags("request.duration", elapsed)
        .with_tag("route", route)
        .with_tag("method", method_tag(&method))
        .with_tag("status", status.as_str())
        .send();
    response
}

/// Sets each header to its fixed value, replacing any value a handler gave it.
pub(crate) fn insert_static_headers(
    headers: &mut HeaderMap,
    pairs: impl IntoIterator<Item = (HeaderName, &'static str)>,
) {
    for (name, value) in pairs {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn header_text(value: Option<&HeaderValue>) -> Cow<'_, str> {
    value.map_or(Cow::Borrowed(""), |v| String::from_utf8_lossy(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_share_one_tag() {
        assert_eq!(method_tag(&Method::POST), "POST");
        for invented in ["FOO", "PROPFIND", "post"] {
            let method = Method::from_bytes(invented.as_bytes()).unwrap();
            assert_eq!(method_tag(&method), "OTHER", "{invented}");
        }
    }
}
