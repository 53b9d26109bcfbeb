//! The view's HTML pages (tag list, a tag's live page) and its embedded script and stylesheet; every client string is escaped here, and the script builds the live page's nodes with `textContent` only.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::auth::{authorized, unauthorized_page};
use super::html::{escape, page};
use super::read::TagSeen;
use super::{is_valid_tag, DebugView};

const SCRIPT: &str = include_str!("../../assets/debug/debug.js");
const STYLESHEET: &str = include_str!("../../assets/debug/debug.css");

const SIGN_OUT: &str = r#"<form class="sign-out" method="post" action="/debug/logout"><button type="submit" class="quiet">Sign out</button></form>"#;

/// `GET /debug`: the list lives at `/debug/`.
pub async fn to_index() -> Redirect {
    Redirect::permanent("/debug/")
}

/// `GET /debug/`: the tags seen recently, newest first.
pub async fn index(State(view): State<Arc<DebugView>>, headers: HeaderMap) -> Response {
    if !authorized(&view, &headers) {
        return unauthorized_page(None);
    }
    match tokio::time::timeout(view.redis_timeout, view.read_tags()).await {
        Ok(Ok(tags)) => index_page(&tags, chrono::Utc::now().timestamp_millis()).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(type = "debug_view.read_failed", error = %e, "could not read the debug view's tags");
            unavailable()
        }
        Err(_) => unavailable(),
    }
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Unavailable",
            "",
            SIGN_OUT,
            r#"<section class="card"><h1>Redis did not answer</h1><p>Reload in a moment.</p></section>"#,
        ),
    )
        .into_response()
}

fn index_page(tags: &[TagSeen], now_ms: i64) -> Html<String> {
    let mut rows = String::new();
    for seen in tags {
        let tag = escape(&seen.tag);
        // A member that is not a valid tag can only have been written by hand; it is listed,
        // escaped, but not linked, as its page would not exist.
        let name = if is_valid_tag(&seen.tag) {
            format!(r#"<a href="/debug/{tag}">{tag}</a>"#)
        } else {
            tag
        };
        let _ = writeln!(
            rows,
            r#"<tr><td class="tag">{name}</td><td><time datetime="{iso}">{when}</time> <span class="age">{age}</span></td><td class="num">{documents}</td></tr>"#,
            iso = iso_time(seen.last_ms),
            when = readable_time(seen.last_ms),
            age = age(now_ms.saturating_sub(seen.last_ms)),
            documents = seen.documents,
        );
    }
    let listing = if tags.is_empty() {
        r#"<p class="empty">No tagged documents yet. Send a submission with an <code>X-Debug-ID</code> header (1 to 20 letters, digits or <code>-</code>), or open a tag below and wait for it.</p>"#.to_string()
    } else {
        format!(
            r#"<table class="tags">
<thead><tr><th>Tag</th><th>Last document</th><th class="num">Documents</th></tr></thead>
<tbody>
{rows}</tbody>
</table>"#
        )
    };
    page(
        "Tags",
        r#" class="index-page""#,
        SIGN_OUT,
        &format!(
            r#"<section class="card">
<h1>Recent debug tags</h1>
{listing}
</section>
<section class="card">
<h2>Watch a tag</h2>
<form id="open-tag" class="open-tag">
<label for="tag">X-Debug-ID</label>
<input id="tag" name="tag" pattern="[A-Za-z0-9\-]{{1,20}}" maxlength="20" required placeholder="my-debug-tag">
<button type="submit">Open</button>
</form>
</section>"#
        ),
    )
}

/// `GET /debug/<tag>`: the live page; its script fetches the documents.
pub async fn tag(
    State(view): State<Arc<DebugView>>,
    Path(tag): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !is_valid_tag(&tag) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    if !authorized(&view, &headers) {
        return unauthorized_page(None);
    }
    tag_page(&tag).into_response()
}

fn tag_page(tag: &str) -> Html<String> {
    let tag = escape(tag);
    page(
        &tag,
        &format!(r#" class="tag-page" data-tag="{tag}""#),
        &format!(
            r#"<h1 class="current-tag" title="X-Debug-ID">{tag}</h1>
<span id="status" class="status" data-state="connecting">connecting</span>
<span id="count" class="count">0 documents</span>
<button id="pause" type="button" class="quiet">Pause</button>
{SIGN_OUT}"#
        ),
        &format!(
            r#"<p id="empty" class="empty">Waiting for documents sent with <code>X-Debug-ID: {tag}</code>. They appear here as they arrive, newest on top.</p>
<div id="docs" class="docs"></div>"#
        ),
    )
}

/// `GET /debug/assets/<file>`: the script and the stylesheet, compiled in.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, content_type) = match file.as_str() {
        "debug.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "debug.css" => (STYLESHEET, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response()
}

fn iso_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn readable_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn age(ms: i64) -> String {
    let seconds = ms.max(0) / 1000;
    match seconds {
        0..=59 => format!("{seconds} s ago"),
        60..=3599 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::login_page;
    use super::*;

    #[test]
    fn escapes_everything_that_could_open_markup() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn the_tag_list_escapes_what_it_shows() {
        let tags = [
            TagSeen {
                tag: "<img src=x onerror=alert(1)>".into(),
                last_ms: 1_700_000_000_000,
                documents: 1,
            },
            TagSeen {
                tag: "good-tag".into(),
                last_ms: 1_700_000_000_000,
                documents: 3,
            },
        ];
        let Html(html) = index_page(&tags, 1_700_000_090_000);
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(html.contains(r#"<a href="/debug/good-tag">good-tag</a>"#));
        assert!(html.contains("1 min ago"));
    }

    #[test]
    fn the_dom_contract_holds() {
        let Html(html) = tag_page("my-tag");
        assert!(html.contains(r#"<body class="tag-page" data-tag="my-tag">"#));
        assert!(html.contains(r#"id="status""#) && html.contains(r#"id="docs""#));
        let Html(login) = login_page(Some("<b>no</b>"));
        assert!(login.contains(r#"<input name="token" id="token""#));
        assert!(login.contains(r#"<button id="login" type="submit">"#));
        assert!(login.contains("&lt;b&gt;no&lt;/b&gt;"));
        assert!(
            !html.contains("style=") && !login.contains("style="),
            "CSP forbids inline styles"
        );
    }
}
