//! Keeping a copy of each tagged submission for the view, after Redis has the submission itself, in a bounded background task that never holds up the answer.

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use cadence::CountedExt;
use redis::{Script, Value};
use wharf_queue::{Route, Submission};

use super::{is_valid_tag, stream_key, DebugView, TAGS_KEY};

/// Body bytes kept per document; the rest is cut and the copy marked `truncated`.
pub const MAX_KEPT_BODY_BYTES: usize = 32 * 1024;

/// Adds a tag to the index, pushes the oldest out past the limit and returns those, so their
/// streams can be deleted. One key: one slot on a Redis Cluster. A script, so two web nodes
/// trimming at once cannot each read a list the other is changing.
///
/// KEYS[1] the index; ARGV: score (ms), tag, tags kept, TTL (ms).
const INDEX_TAG: &str = r"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
local beyond = -tonumber(ARGV[3]) - 1
local gone = redis.call('ZRANGE', KEYS[1], 0, beyond)
if #gone > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, beyond)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return gone
";

static INDEX_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(INDEX_TAG));

/// What the view keeps of one submission, taken before the submission goes to the queue.
pub struct DebugCopy {
    tag: String,
    received_ms: i64,
    route: Route,
    /// The attributes as one JSON object, as the queue entry stores them.
    attributes: String,
    /// At most [`MAX_KEPT_BODY_BYTES`], copied out so the whole body is not held past the answer.
    body: Bytes,
    truncated: bool,
    /// The body's size as received.
    size: usize,
}

impl DebugView {
    /// A copy of `submission` for the view, when it carries a valid `X-Debug-ID`.
    pub fn copy(
        &self,
        submission: &Submission,
        received_at: chrono::DateTime<chrono::Utc>,
    ) -> Option<DebugCopy> {
        let tag = submission
            .attributes
            .get("x_debug_id")
            .filter(|t| is_valid_tag(t))?;
        let attributes = serde_json::to_string(&submission.attributes).ok()?;
        let size = submission.body.len();
        let cut = size.min(MAX_KEPT_BODY_BYTES);
        Some(DebugCopy {
            tag: tag.clone(),
            received_ms: received_at.timestamp_millis(),
            route: submission.route.clone(),
            attributes,
            body: Bytes::copy_from_slice(&submission.body[..cut]),
            truncated: cut < size,
            size,
        })
    }

    /// Writes `copy` to Redis in the background. Returns at once: when the writes in flight are
    /// at their limit the copy is dropped, and a write that fails or outlasts the Redis timeout
    /// is abandoned; either way it is counted, and the submission it came from is unaffected.
    pub fn keep(self: &Arc<Self>, copy: DebugCopy) {
        let Ok(slot) = Arc::clone(&self.writes).try_acquire_owned() else {
            self.dropped("saturated");
            return;
        };
        let view = Arc::clone(self);
        tokio::spawn(async move {
            let written = tokio::time::timeout(view.redis_timeout, view.write(&copy)).await;
            drop(slot);
            match written {
                Ok(Ok(())) => view.metrics.incr_with_tags("debug_view.kept").send(),
                Ok(Err(e)) => {
                    tracing::warn!(type = "debug_view.dropped", error = %e, "could not keep a document for the debug view");
                    view.dropped("failed");
                }
                Err(_) => view.dropped("timeout"),
            }
        });
    }

    fn dropped(&self, reason: &'static str) {
        self.metrics
            .incr_with_tags("debug_view.dropped")
            .with_tag("reason", reason)
            .send();
    }

    async fn write(&self, copy: &DebugCopy) -> Result<(), redis::RedisError> {
        let key = stream_key(&copy.tag);
        let ttl_ms = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        // An exact MAXLEN: with `~` Redis trims whole stream nodes only (up to 100 small
        // entries each), so the cap would not hold for small documents.
        pipe.cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg(self.settings.max_entries)
            .arg("*")
            .arg("received_ms")
            .arg(copy.received_ms)
            .arg("namespace")
            .arg(&copy.route.namespace)
            .arg("doc_type")
            .arg(&copy.route.doc_type)
            .arg("doc_version")
            .arg(&copy.route.doc_version)
            .arg("doc_id")
            .arg(&copy.route.doc_id)
            .arg("attributes")
            .arg(&copy.attributes)
            .arg("body")
            .arg(copy.body.as_ref())
            .arg("truncated")
            .arg(u8::from(copy.truncated))
            .arg("bytes")
            .arg(copy.size);
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms);
        let replies: Vec<Value> = pipe.query_async(&mut conn).await?;
        // A pipeline hands each command's error back as a value.
        if let Some(Value::ServerError(e)) =
            replies.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(e.clone().into());
        }
        let gone: Vec<String> = INDEX_SCRIPT
            .key(TAGS_KEY)
            .arg(copy.received_ms)
            .arg(&copy.tag)
            .arg(self.settings.max_tags)
            .arg(ttl_ms)
            .invoke_async(&mut conn)
            .await?;
        for tag in gone.iter().filter(|t| **t != copy.tag) {
            let _: i64 = redis::cmd("UNLINK")
                .arg(stream_key(tag))
                .query_async(&mut conn)
                .await?;
        }
        Ok(())
    }
}
