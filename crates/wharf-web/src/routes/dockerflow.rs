//! The Dockerflow endpoints: `__lbheartbeat__`, `__heartbeat__`, `__version__`, and the token-guarded `__error__`.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::heartbeat::Level;
use crate::state::AppState;

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

/// Panics on purpose so operators can see an event arrive in Sentry.
///
/// Disabled (404) unless `ERROR_ENDPOINT_TOKEN` is set; then the `token` query parameter must match.
pub async fn error(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let Some(expected) = state.settings.error_endpoint_token.as_ref() else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let given = query.get("token").map(String::as_str).unwrap_or_default();
    if !constant_time_eq(given.as_bytes(), expected.expose().as_bytes()) {
        return (StatusCode::FORBIDDEN, "a valid token is required\n").into_response();
    }
    panic!("__error__ called: test error for Sentry");
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
