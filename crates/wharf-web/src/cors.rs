//! CORS for `/submit`: answers browser preflights, puts the allowed origin on every submission answer, and refuses (403) a page whose origin is not allowed.
//!
//! Browsers send Glean.js's `sendBeacon` pings as "simple" requests, without a preflight, so a
//! browser's CORS check only hides the answer from the page: the document would already be
//! stored. Only the server can keep a disallowed page from storing data, so a `/submit` request
//! whose `Origin` is not allowed is refused before anything is read. Requests without `Origin`
//! (SDKs, pingsender, servers, curl) are not browsers' and pass untouched.
//!
//! Two small middlewares rather than tower-http's `CorsLayer`: that layer answers *every*
//! `OPTIONS` as a preflight (the Dockerflow paths must keep their 405), never refuses a simple
//! request, and to label the answers made by the outer layers (the request timeout's 503, the
//! ambiguous-request 400) it would have to wrap the whole router, `/__heartbeat__` included.
//! [`label`] wraps everything and touches only `/submit` answers; [`gate`] sits at route level,
//! inside the request summary, so refusals and preflights are logged and counted like any answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cadence::{CountedExt, StatsdClient};
use wharf_settings::CorsOrigins;

use crate::middleware::insert_static_headers;
use crate::rejection::Rejection;
use crate::routes::submit::declares_body;

/// Request headers a page may set on a submission: the edge-spec headers Wharf stores that a
/// browser lets a script set (Glean.js sends `Date`, `X-Telemetry-Agent`, `X-Debug-ID`,
/// `X-Source-Tags`, `Content-Encoding` when it gzips), and the content headers. Headers a proxy
/// sets (`X-Forwarded-For`, `X-Pipeline-Proxy`, `X-LB-Tags`) are not a page's to send.
pub const ALLOWED_HEADERS: &str = "content-type, content-encoding, date, x-debug-id, x-source-tags, x-telemetry-agent, x-pingsender-version";

/// The methods a page may submit with.
pub const ALLOWED_METHODS: &str = "POST, PUT";

/// `CORS_ALLOWED_ORIGINS` and `CORS_MAX_AGE_MS`, ready to answer with.
pub struct Cors {
    origins: CorsOrigins,
    /// `Access-Control-Max-Age`, whole seconds.
    max_age: HeaderValue,
    metrics: Arc<StatsdClient>,
}

/// What a request's `Origin` means for it.
enum Origin {
    /// Not a submission, or no `Origin`: CORS does not apply.
    NotApplicable,
    Allowed(HeaderValue),
    Refused,
}

impl Cors {
    /// `max_age` (`CORS_MAX_AGE_MS`) is sent in whole seconds, rounded down; `metrics` counts
    /// submissions refused for their origin as `submission.rejected` (preflights are not counted).
    pub fn new(origins: CorsOrigins, max_age: Duration, metrics: Arc<StatsdClient>) -> Self {
        Self {
            origins,
            max_age: HeaderValue::from(max_age.as_secs()),
            metrics,
        }
    }

    fn origin(&self, request: &Request<Body>) -> Origin {
        if !is_submit(request.uri().path()) {
            return Origin::NotApplicable;
        }
        match request.headers().get(header::ORIGIN) {
            None => Origin::NotApplicable,
            Some(value) => match value.to_str() {
                Ok(origin) if self.origins.allows(origin) => Origin::Allowed(value.clone()),
                _ => Origin::Refused,
            },
        }
    }

    /// `Access-Control-Allow-Origin` for an allowed origin: `*` when every origin is allowed
    /// (no credentials are ever allowed, so `*` is enough), else the origin itself, and then the
    /// answer depends on the request's `Origin`, which caches must know.
    fn allow(&self, headers: &mut HeaderMap, origin: HeaderValue) {
        match self.origins {
            CorsOrigins::Any => {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
            CorsOrigins::List(_) => {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.append(header::VARY, HeaderValue::from_static("Origin"));
            }
        }
    }
}

fn is_submit(path: &str) -> bool {
    path == "/submit" || path.starts_with("/submit/")
}

fn is_preflight(request: &Request<Body>) -> bool {
    request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Outermost layer: every answer to a `/submit` request from an allowed origin carries
/// `Access-Control-Allow-Origin`, whoever made it (a handler, a middleware, the request
/// timeout, a caught panic), so the page can read the status and a Glean client can tell "delete
/// the ping" (4xx) from "retry" (5xx). Without it the browser reports a network error.
pub async fn label(State(cors): State<Arc<Cors>>, request: Request<Body>, next: Next) -> Response {
    let Origin::Allowed(origin) = cors.origin(&request) else {
        return next.run(request).await;
    };
    let mut response = next.run(request).await;
    cors.allow(response.headers_mut(), origin);
    response
}

/// Route level: refuses a `/submit` request from an origin that is not allowed (403, before
/// the body is read, so nothing is stored), and answers an allowed origin's preflight (204).
/// A preflight from a refused origin gets the 403 too, without CORS headers, so the browser
/// never sends the request itself.
pub async fn gate(State(cors): State<Arc<Cors>>, request: Request<Body>, next: Next) -> Response {
    match cors.origin(&request) {
        Origin::NotApplicable => next.run(request).await,
        Origin::Allowed(_) if is_preflight(&request) => preflight(&cors),
        Origin::Allowed(_) => next.run(request).await,
        Origin::Refused => {
            let rejection = Rejection::OriginNotAllowed;
            if !is_preflight(&request) {
                cors.metrics
                    .incr_with_tags("submission.rejected")
                    .with_tag("reason", rejection.reason())
                    .send();
            }
            if declares_body(request.headers()) {
                rejection.closing()
            } else {
                rejection.into_response()
            }
        }
    }
}

/// The preflight answer; [`label`] adds the origin on the way out.
fn preflight(cors: &Cors) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    insert_static_headers(
        headers,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, ALLOWED_METHODS),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS),
        ],
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, cors.max_age.clone());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: CorsOrigins) -> Cors {
        let metrics = StatsdClient::builder("t", cadence::NopMetricSink).build();
        Cors::new(
            origins,
            Duration::from_millis(86_400_999),
            Arc::new(metrics),
        )
    }

    fn request(method: Method, path: &str, origin: Option<&str>) -> Request<Body> {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_submissions_carrying_an_origin_are_concerned() {
        let list = cors(CorsOrigins::List(vec!["https://app.example".into()]));
        let allowed = |m, p, o| matches!(list.origin(&request(m, p, o)), Origin::Allowed(_));
        let refused = |m, p, o| matches!(list.origin(&request(m, p, o)), Origin::Refused);
        assert!(allowed(
            Method::POST,
            "/submit/a/b/1/x",
            Some("https://app.example")
        ));
        assert!(allowed(
            Method::POST,
            "/submit",
            Some("HTTPS://APP.EXAMPLE")
        ));
        assert!(refused(
            Method::POST,
            "/submit/a",
            Some("https://evil.example")
        ));
        assert!(refused(Method::POST, "/submit/a", Some("null")));
        assert!(
            !allowed(Method::POST, "/submit/a", None) && !refused(Method::POST, "/submit/a", None)
        );
        assert!(!refused(
            Method::GET,
            "/__heartbeat__",
            Some("https://evil.example")
        ));
        assert!(!refused(
            Method::POST,
            "/submitted",
            Some("https://evil.example")
        ));
        let any = cors(CorsOrigins::Any);
        assert!(matches!(
            any.origin(&request(Method::POST, "/submit/a", Some("null"))),
            Origin::Allowed(_)
        ));
    }

    #[test]
    fn max_age_is_whole_seconds() {
        assert_eq!(cors(CorsOrigins::Any).max_age, "86400");
    }
}
