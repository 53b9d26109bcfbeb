//! Who may use the debug view: `Authorization: Bearer <token>`, or the `wharf_debug` cookie the login form sets.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use serde::Deserialize;

use super::html::{escape, page};
use super::DebugView;
use crate::token::constant_time_eq;

/// The cookie that carries a signed-in browser.
pub const COOKIE: &str = "wharf_debug";

/// Whether the request carries the token (as a bearer token) or the cookie derived from it.
pub fn authorized(view: &DebugView, headers: &HeaderMap) -> bool {
    let token = view.token.expose().as_bytes();
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| bearer_token(v.as_bytes()))
        .any(|given| constant_time_eq(given, token));
    bearer
        || cookie_values(headers, COOKIE)
            .any(|given| constant_time_eq(given, view.cookie_value.as_bytes()))
}

/// The credentials of `Bearer <credentials>` (the scheme is case-insensitive, RFC 9110 11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Every value of cookie `name` in the request's `Cookie` headers.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|b| *b == b'=')?;
            (pair[..at].trim_ascii() == name.as_bytes()).then(|| pair[at + 1..].trim_ascii())
        })
}

/// The 401 for the JSON endpoints.
pub fn unauthorized_json() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "unauthorized" })),
    )
        .into_response();
    challenge(&mut response);
    response
}

/// The 401 for the pages: the login form, so a person can sign in from where they landed.
pub fn unauthorized_page(message: Option<&str>) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, login_page(message)).into_response();
    challenge(&mut response);
    response
}

fn challenge(response: &mut Response) {
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wharf debug view\""),
    );
}

/// The login form, with an optional message saying why the last attempt failed.
pub fn login_page(message: Option<&str>) -> Html<String> {
    let message = message
        .map(|m| format!(r#"<p class="error" role="alert">{}</p>"#, escape(m)))
        .unwrap_or_default();
    page(
        "Sign in",
        r#" class="login-page""#,
        "",
        &format!(
            r#"<section class="card login">
<h1>Sign in</h1>
<p class="hint">The debug view shows submitted documents. Enter the token the operators set as <code>DEBUG_VIEW_TOKEN</code>.</p>
{message}<form method="post" action="/debug/login">
<label for="token">Token</label>
<input name="token" id="token" type="password" autocomplete="current-password" required autofocus>
<button id="login" type="submit">Sign in</button>
</form>
</section>"#
        ),
    )
}

/// `GET /debug/login`.
pub async fn login_form() -> Response {
    login_page(None).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    #[serde(default)]
    token: String,
}

/// `POST /debug/login`: the right token sets the cookie and goes to the tag list (303, so a
/// reload does not post the token again); anything else is the form again, with a 401.
pub async fn login(
    State(view): State<Arc<DebugView>>,
    headers: HeaderMap,
    form: Result<Form<Login>, FormRejection>,
) -> Response {
    let login = match form {
        Ok(Form(login)) => login,
        Err(refused) if refused.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refused.into_response()
        }
        Err(_) => return unauthorized_page(Some("Send the token from the form.")),
    };
    if !constant_time_eq(login.token.as_bytes(), view.token.expose().as_bytes()) {
        return unauthorized_page(Some("That token is not the debug view's token."));
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/debug; HttpOnly; SameSite=Strict{}",
        view.cookie_value,
        secure_attribute(&headers)
    );
    with_cookie(Redirect::to("/debug/").into_response(), &cookie)
}

/// `POST /debug/logout`: forgets the cookie.
pub async fn logout(headers: HeaderMap) -> Response {
    let cookie = format!(
        "{COOKIE}=; Path=/debug; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_attribute(&headers)
    );
    with_cookie(Redirect::to("/debug/login").into_response(), &cookie)
}

/// `; Secure` when the browser reached nginx over HTTPS (nginx sets `X-Forwarded-Proto` from
/// what it knows, never from the client). Not always: the development stack is plain HTTP, and
/// a Secure cookie would never come back there.
fn secure_attribute(headers: &HeaderMap) -> &'static str {
    let https = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    if https {
        "; Secure"
    } else {
        ""
    }
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    // The value is hex and fixed text, always a valid header value; checked all the same.
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_and_cookies_are_found() {
        assert_eq!(bearer_token(b"Bearer abc"), Some(b"abc".as_slice()));
        assert_eq!(bearer_token(b"bearer  abc "), Some(b"abc".as_slice()));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bear"), None);
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; wharf_debug=xyz; b=2".parse().unwrap());
        headers.append(header::COOKIE, "wharf_debug =second".parse().unwrap());
        headers.append(
            header::COOKIE,
            "not_wharf_debug=no; broken".parse().unwrap(),
        );
        let found: Vec<&[u8]> = cookie_values(&headers, COOKIE).collect();
        assert_eq!(found, vec![b"xyz".as_slice(), b"second".as_slice()]);
    }
}
