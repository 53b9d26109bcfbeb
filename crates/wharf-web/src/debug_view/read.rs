//! Reading what the view keeps: the recent tags, and a tag's documents as JSON for the live page.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{authorized, unauthorized_json};
use super::body::{decode, BodyView};
use super::{is_valid_tag, stream_key, DebugView, TAGS_KEY};

/// A kept document, as `GET /debug/<tag>/entries` sends it.
#[derive(Debug, Serialize)]
pub struct EntryView {
    /// The stream entry id: what the page passes back as `after`.
    pub id: String,
    /// When the web node received it, milliseconds since the epoch; 0 when missing or garbled.
    pub received_ms: i64,
    /// The route's namespace, as in the submission URL; empty when the field is missing.
    pub namespace: String,
    /// The route's docType; empty when the field is missing.
    pub doc_type: String,
    /// The route's docVersion (`unversioned` for telemetry); empty when the field is missing.
    pub doc_version: String,
    /// The route's docId; empty when the field is missing.
    pub doc_id: String,
    /// The edge-spec attributes stored with it; empty when missing or not valid JSON.
    pub attributes: BTreeMap<String, String>,
    /// The kept body (its first [`super::MAX_KEPT_BODY_BYTES`]), decoded for reading.
    pub body: BodyView,
}

/// A tag in the index, with the time of its last document.
pub struct TagSeen {
    pub tag: String,
    pub last_ms: i64,
    pub documents: u64,
}

#[derive(Deserialize)]
pub struct After {
    after: Option<String>,
}

/// A stream entry id as `XADD *` makes them (`ms-seq`), or its first half.
fn is_entry_id(id: &str) -> bool {
    let mut parts = id.splitn(2, '-');
    let digits = |s: &str| (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    parts.next().is_some_and(digits) && parts.next().is_none_or(digits)
}

/// `GET /debug/<tag>/entries[?after=<id>]`: the tag's documents oldest first, at most
/// `DEBUG_VIEW_MAX_ENTRIES`: the newest ones, or those after `after`.
pub async fn entries(
    State(view): State<Arc<DebugView>>,
    Path(tag): Path<String>,
    Query(query): Query<After>,
    headers: HeaderMap,
) -> Response {
    if !is_valid_tag(&tag) {
        return json_error(StatusCode::NOT_FOUND, "no such tag");
    }
    if !authorized(&view, &headers) {
        return unauthorized_json();
    }
    let after = query.after.filter(|a| !a.is_empty());
    if after.as_deref().is_some_and(|a| !is_entry_id(a)) {
        return json_error(StatusCode::BAD_REQUEST, "after must be a stream entry id");
    }
    match tokio::time::timeout(
        view.redis_timeout,
        view.read_entries(&tag, after.as_deref()),
    )
    .await
    {
        Ok(Ok(entries)) => Json(serde_json::json!({ "entries": entries })).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(type = "debug_view.read_failed", error = %e, "could not read the debug view's documents");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "redis unavailable")
        }
        Err(_) => json_error(StatusCode::SERVICE_UNAVAILABLE, "redis timed out"),
    }
}

pub(super) fn json_error(status: StatusCode, error: &str) -> Response {
    (status, Json(serde_json::json!({ "error": error }))).into_response()
}

type RawEntry = (String, Vec<Vec<u8>>);

impl DebugView {
    async fn read_entries(
        &self,
        tag: &str,
        after: Option<&str>,
    ) -> Result<Vec<EntryView>, redis::RedisError> {
        let key = stream_key(tag);
        let mut conn = self.conn.clone();
        let raw: Vec<RawEntry> = match after {
            Some(after) => {
                redis::cmd("XRANGE")
                    .arg(&key)
                    .arg(format!("({after}"))
                    .arg("+")
                    .arg("COUNT")
                    .arg(self.settings.max_entries)
                    .query_async(&mut conn)
                    .await?
            }
            None => {
                let mut newest: Vec<RawEntry> = redis::cmd("XREVRANGE")
                    .arg(&key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(self.settings.max_entries)
                    .query_async(&mut conn)
                    .await?;
                newest.reverse();
                newest
            }
        };
        Ok(raw.into_iter().map(entry_view).collect())
    }

    /// The tags seen within the TTL, newest first, with their document counts.
    pub(super) async fn read_tags(&self) -> Result<Vec<TagSeen>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let last = isize::try_from(self.settings.max_tags).unwrap_or(isize::MAX) - 1;
        let listed: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
            .arg(TAGS_KEY)
            .arg(0)
            .arg(last)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        let ttl_ms = i64::try_from(self.settings.ttl.as_millis()).unwrap_or(i64::MAX);
        let oldest = chrono::Utc::now().timestamp_millis().saturating_sub(ttl_ms);
        let mut tags = Vec::with_capacity(listed.len());
        for (tag, score) in listed {
            // Scores are whole milliseconds, well inside f64's exact integers.
            let last_ms = score as i64;
            if last_ms < oldest {
                continue;
            }
            // One key per command: on a cluster each tag's stream may live on another node.
            let documents: u64 = if is_valid_tag(&tag) {
                redis::cmd("XLEN")
                    .arg(stream_key(&tag))
                    .query_async(&mut conn)
                    .await?
            } else {
                0
            };
            tags.push(TagSeen {
                tag,
                last_ms,
                documents,
            });
        }
        Ok(tags)
    }
}

/// One stream entry as the page shows it; missing or garbled fields read as empty, so one odd
/// entry never hides the others.
fn entry_view((id, fields): RawEntry) -> EntryView {
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut pairs = fields.into_iter();
    while let (Some(name), Some(value)) = (pairs.next(), pairs.next()) {
        map.insert(name, value);
    }
    let text = |name: &str| {
        map.get(name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let number = |name: &str| text(name).parse::<i64>().unwrap_or_default();
    let attributes = map
        .get(b"attributes".as_slice())
        .and_then(|a| serde_json::from_slice(a).ok())
        .unwrap_or_default();
    let size = usize::try_from(number("bytes")).unwrap_or_default();
    let kept = map
        .get(b"body".as_slice())
        .map(Vec::as_slice)
        .unwrap_or_default();
    EntryView {
        received_ms: number("received_ms"),
        namespace: text("namespace"),
        doc_type: text("doc_type"),
        doc_version: text("doc_version"),
        doc_id: text("doc_id"),
        attributes,
        body: decode(kept, text("truncated") == "1", size),
        id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids() {
        for good in ["1700000000000-0", "0", "1-99"] {
            assert!(is_entry_id(good), "{good}");
        }
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "1-2-3",
            "a-1",
            "1 -1",
            "(1-0",
            "+",
            "99999999999999999999999",
        ] {
            assert!(!is_entry_id(bad), "{bad}");
        }
    }

    #[test]
    fn an_entry_missing_fields_still_reads() {
        let view = entry_view(("1-0".into(), vec![b"doc_id".to_vec(), b"x".to_vec()]));
        assert_eq!(view.doc_id, "x");
        assert_eq!(view.namespace, "");
        assert_eq!(view.body.kind, "text");
    }
}
