//! The Dockerflow endpoints: `__lbheartbeat__`, `__heartbeat__`, `__version__`, and the token-guarded `__error__`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::heartbeat::Level;
use crate::state::AppState;
use crate::token::constant_time_eq;

/// 200 with an empty body; touches no backing service, so the load balancer only tests this process.
pub async fn lbheartbeat() -> StatusCode {
    StatusCode::OK
}

/// The checks report: 200 for ok or warning, 500 for error.
pub async fn heartbeat(State(state): State<AppState>) -> Response {
    let report = state.heartbeat.report().await;
    let status = if report.status == Level::Error {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (status, Json(report)).into_response()
}

/// The deployed version object.
pub async fn version(State(state): State<AppState>) -> Response {
    Json(state.version.as_ref().clone()).into_response()
}

/// The header that carries `ERROR_ENDPOINT_TOKEN`.
pub const ERROR_TOKEN_HEADER: &str = "x-error-token";

/// Panics on purpose so operators can see an event arrive in Sentry.
///
/// Disabled (404) unless `ERROR_ENDPOINT_TOKEN` is set; then the `X-Error-Token` header must
/// carry it. A header, not the query string: URLs end up in access logs and error reports.
pub async fn error(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(expected) = state.settings.error_endpoint_token.as_ref() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let given = headers
        .get(ERROR_TOKEN_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !constant_time_eq(given, expected.expose().as_bytes()) {
        return (StatusCode::FORBIDDEN, "a valid token is required\n").into_response();
    }
    panic!("__error__ called: test error for Sentry");
}
