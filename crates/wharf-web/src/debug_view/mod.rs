//! The live debug view: documents sent with an `X-Debug-ID` header, kept briefly in Redis and shown, as they arrive, to whoever holds `DEBUG_VIEW_TOKEN`.
//!
//! Off unless `DEBUG_VIEW_TOKEN` is set: then nothing is kept and no `/debug` path exists.
//!
//! Redis layout (every command touches one key, so it works the same on a Redis Cluster):
//!
//! - `wharf:debug:{<tag>}`: a stream per tag, capped at `DEBUG_VIEW_MAX_ENTRIES`, expiring
//!   `DEBUG_VIEW_TTL_MS` after the tag's last document. The braces are a hash tag: one tag's key
//!   is one slot.
//! - `wharf:debug:tags`: a sorted set of tags scored by their last document's time (ms), holding
//!   the newest `DEBUG_VIEW_MAX_TAGS`; a tag pushed out of it has its stream deleted, so what the
//!   view holds stays within tags × entries × the body cap.

mod auth;
mod body;
mod html;
mod keep;
mod pages;
mod read;

use std::sync::Arc;
use std::time::Duration;

use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use cadence::StatsdClient;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use wharf_queue::Redis;
use wharf_settings::{DebugViewSettings, Secret};

use crate::middleware::insert_static_headers;

pub use body::{decode, BodyView, MAX_DECODED_BYTES};
pub use keep::{DebugCopy, MAX_KEPT_BODY_BYTES};
pub use read::EntryView;

/// The sorted set of recently seen tags.
pub const TAGS_KEY: &str = "wharf:debug:tags";

/// Debug writes in flight at once; past it a document is not kept (and counted), so a burst of
/// tagged submissions can never pile up tasks or memory behind a slow Redis.
const MAX_WRITES_IN_FLIGHT: usize = 16;

/// The policy sent with every `/debug` answer: only this origin's own script and stylesheet run,
/// nothing can frame the pages, so even a client string that escaped escaping could not execute.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'";

/// The stream holding one tag's documents.
pub fn stream_key(tag: &str) -> String {
    format!("wharf:debug:{{{tag}}}")
}

/// Whether `tag` is an `X-Debug-ID` the view keeps: 1 to 20 of `[a-zA-Z0-9-]`, Glean's rule for
/// debug view tags. Anything else is neither kept nor routed.
pub fn is_valid_tag(tag: &str) -> bool {
    (1..=20).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The debug view's settings, its Redis connection and the bound on its writes.
pub struct DebugView {
    settings: DebugViewSettings,
    /// `DEBUG_VIEW_TOKEN`: the view exists only when it is set.
    token: Secret,
    conn: Redis,
    /// The `wharf_debug` cookie's value: derived from the token, so the cookie never holds the
    /// token itself, and rotating the token signs everyone out.
    cookie_value: String,
    writes: Arc<Semaphore>,
    /// Longest a debug write or a page's Redis read may take.
    redis_timeout: Duration,
    metrics: Arc<StatsdClient>,
}

impl DebugView {
    /// `conn` is the web role's shared connection: a debug write is one more command on it,
    /// never awaited by a submission.
    pub fn new(
        settings: DebugViewSettings,
        token: Secret,
        conn: Redis,
        redis_timeout: Duration,
        metrics: Arc<StatsdClient>,
    ) -> Self {
        let cookie_value = cookie_value(token.expose());
        Self {
            settings,
            token,
            conn,
            cookie_value,
            writes: Arc::new(Semaphore::new(MAX_WRITES_IN_FLIGHT)),
            redis_timeout,
            metrics,
        }
    }
}

/// The cookie value for a token: hex SHA-256 of it, with a prefix so the digest is of no use
/// anywhere else.
fn cookie_value(token: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(b"wharf-debug-view\0");
    digest.update(token.as_bytes());
    hex::encode(digest.finalize())
}

/// The `/debug` routes. Mounted only when the view is on, so with it off every `/debug` path
/// gets the router's 404, like any unknown path.
pub fn routes<S: Clone + Send + Sync + 'static>(view: Arc<DebugView>) -> Router<S> {
    Router::new()
        .route("/debug", get(pages::to_index))
        .route("/debug/", get(pages::index))
        .route("/debug/login", get(auth::login_form).post(auth::login))
        .route("/debug/logout", post(auth::logout))
        .route("/debug/assets/{file}", get(pages::asset))
        .route("/debug/{tag}", get(pages::tag))
        .route("/debug/{tag}/entries", get(read::entries))
        // A login form is a few dozen bytes; nothing else here takes a body.
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .layer(axum::middleware::map_response(protect))
        .with_state(view)
}

/// Headers on every `/debug` answer: the content security policy, no MIME sniffing, never
/// cached (pages hold submitted data), no referrer leaving the view, no framing.
async fn protect(mut response: Response) -> Response {
    insert_static_headers(
        response.headers_mut(),
        [
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_glean_rule() {
        let valid = |tag: &&str| is_valid_tag(tag);
        let good = ["a", "my-tag-1", "ABCDEFGHIJ0123456789"];
        assert!(good.iter().all(valid), "{good:?}");
        // Too long, characters outside [A-Za-z0-9-], markup, non-ASCII, a path.
        let bad = [
            "",
            "ABCDEFGHIJ0123456789x",
            "under_score",
            "dot.ted",
            "sp ace",
        ];
        let worse = ["<script>", "é", "a/b"];
        for tag in bad.iter().chain(&worse) {
            assert!(!valid(tag), "{tag}");
        }
    }

    #[test]
    fn one_tag_is_one_cluster_slot() {
        assert_eq!(stream_key("abc"), "wharf:debug:{abc}");
    }

    #[test]
    fn the_cookie_is_not_the_token() {
        let value = cookie_value("s3cret");
        assert_eq!(value.len(), 64);
        assert!(!value.contains("s3cret"));
        assert_ne!(value, cookie_value("s3cret2"));
    }
}
