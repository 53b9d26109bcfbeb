//! The docId ledger: drops a document already landed within `DEDUP_WINDOW_MS`, including after a worker died between PutObject and its acknowledgement.
//!
//! Before a batch is written, each of its documents is recorded in Redis, in the hash
//! `wharf:{<shard>}:landed:<docId>` (its shard's hash slot, so one pipeline per shard reaches
//! every record a batch needs, on a cluster too): one field per digest of route and body, whose
//! value names the batch (its id and compression). The hash expires `DEDUP_WINDOW_MS` after the
//! docId was last seen. Recording comes first, so a worker that cannot reach Redis writes
//! nothing, and a crash at any point leaves a record naming the object that may hold the
//! document. When a document comes back (a client's retry, or an entry redelivered after a
//! crash or a takeover):
//!
//! - a digest not seen for this docId: a different document under the same docId (another body
//!   or route); it is kept, and counted as a conflict when the docId had other digests;
//! - the same digest, recorded by this very batch: a retry of the same upload, which overwrites
//!   the same object, so it is kept;
//! - the same digest, recorded by another batch: that object is checked (`HeadObject`). If it
//!   exists, the document landed and is dropped; if not, that upload never happened, and the
//!   record moves to this batch. An upload of that batch still running in this worker is
//!   waited for first.
//!
//! What remains possible is written up in docs/worker.md, "Deduplication".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use wharf_queue::{QueueError, Redis, Shard};
use wharf_settings::Compression;

use crate::batch::{Batch, Entry, EntryRef};
use crate::sink::{S3Failure, S3Sink};

/// What the ledger decided for one document of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not seen within the window, or its earlier upload never landed: write it.
    Write,
    /// The same document already landed (or is earlier in this batch): drop it.
    Duplicate,
    /// The same docId with another digest: a different document, written and counted.
    Conflict,
}

/// Why the ledger could not decide; the batch waits and asks again.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Redis could not record or read the batch's records: an outage, a timeout, an error reply.
    #[error("docId ledger: {0}")]
    Redis(#[from] QueueError),
    /// `HeadObject` of an object an earlier record names failed, so whether that copy landed is
    /// unknown.
    #[error("checking an earlier object: {}", .0.message())]
    S3(S3Failure),
}

/// One ledger record, the value of a docId's field for one digest: `<batch id, 32 hex><g|z>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    batch_id: String,
    compression: Compression,
}

impl Record {
    fn encode(&self) -> String {
        let mark = match self.compression {
            Compression::Gzip => 'g',
            Compression::Zstd => 'z',
        };
        format!("{}{mark}", self.batch_id)
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        if text.len() != 33 || !text.is_ascii() {
            return None;
        }
        let compression = match &text[32..] {
            "g" => Compression::Gzip,
            "z" => Compression::Zstd,
            _ => return None,
        };
        Some(Self {
            batch_id: text[..32].to_string(),
            compression,
        })
    }
}

/// The ledger: Redis for the records, S3 to check the objects they name.
#[derive(Clone)]
pub struct Ledger {
    conn: Redis,
    sink: S3Sink,
    window: Duration,
    compression: Compression,
    uploading: Uploading,
    admitting: Arc<tokio::sync::Mutex<()>>,
}

impl Ledger {
    /// A ledger keeping records for `window`; `None` when the window is zero (deduplication off).
    pub fn new(
        conn: Redis,
        sink: S3Sink,
        window: Duration,
        compression: Compression,
    ) -> Option<Self> {
        (!window.is_zero()).then(|| Self {
            conn,
            sink,
            window,
            compression,
            uploading: Uploading::default(),
            admitting: Arc::default(),
        })
    }

    /// Records the batch's documents as landing in batch `batch_id`, decides, document by
    /// document (in `batch.entries` order), which to write, and marks the batch as uploading
    /// until the returned guard is dropped.
    ///
    /// One batch at a time per worker: two batches holding copies of one document (a client's
    /// quick retry) must not both find no record or no object. The second waits for the first
    /// to be marked, then for its upload to end, then checks the object.
    pub async fn admit(
        &self,
        batch: &Batch<EntryRef>,
        batch_id: &str,
    ) -> Result<(Vec<Verdict>, UploadGuard), LedgerError> {
        let _one_at_a_time = self.admitting.lock().await;
        let verdicts = self.check(batch, batch_id).await?;
        Ok((verdicts, self.uploading.enter(batch_id)))
    }

    async fn check(
        &self,
        batch: &Batch<EntryRef>,
        batch_id: &str,
    ) -> Result<Vec<Verdict>, LedgerError> {
        let entries = &batch.entries;
        let mut verdicts = vec![Verdict::Write; entries.len()];
        // The same document twice in one batch: only its first copy is looked up and recorded.
        let mut first: HashMap<(&str, [u8; 8]), usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            let doc = &entry.doc;
            if first.contains_key(&(doc.doc_id.as_str(), doc.digest)) {
                verdicts[i] = Verdict::Duplicate;
            } else {
                first.insert((&doc.doc_id, doc.digest), i);
            }
        }
        let ours = Record {
            batch_id: batch_id.to_string(),
            compression: self.compression,
        }
        .encode();
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let by_shard = group_by_shard(entries, first.values().copied());
        let shards: Vec<Shard> = by_shard.keys().copied().collect();
        // Per document: claim its digest's field, read whoever holds it, count the docId's
        // digests, and restart the docId's window.
        let replies = self
            .conn
            .per_shard(&shards, |shard, pipe| {
                for &i in by_shard.get(&shard).into_iter().flatten() {
                    let doc = &entries[i].doc;
                    let key = shard.landed(&doc.doc_id);
                    let field = hex::encode(doc.digest);
                    pipe.cmd("HSETNX").arg(&key).arg(&field).arg(&ours);
                    pipe.cmd("HGET").arg(&key).arg(&field);
                    pipe.cmd("HLEN").arg(&key);
                    pipe.cmd("PEXPIRE").arg(&key).arg(window_ms);
                }
            })
            .await?;

        // Earlier copies recorded in another batch, by the object that batch wrote.
        let mut to_check: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut rewrite: Vec<usize> = Vec::new();
        for (shard, values) in shards.iter().zip(replies) {
            let indices = by_shard.get(shard).map(Vec::as_slice).unwrap_or(&[]);
            for (&i, replies) in indices.iter().zip(values.chunks(4)) {
                if let Some(Value::ServerError(e)) =
                    replies.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    return Err(LedgerError::Redis(QueueError::Redis(e.clone().into())));
                }
                let new_field = matches!(replies.first(), Some(Value::Int(1)));
                if new_field {
                    if matches!(replies.get(2), Some(Value::Int(n)) if *n > 1) {
                        verdicts[i] = Verdict::Conflict;
                    }
                    continue;
                }
                let earlier = match replies.get(1) {
                    Some(Value::BulkString(raw)) => Record::decode(raw),
                    _ => None,
                };
                match earlier {
                    Some(r) if r.batch_id == batch_id => {}
                    Some(r) => {
                        let key =
                            batch
                                .key
                                .object_key(self.sink.prefix(), &r.batch_id, r.compression);
                        self.uploading.wait_for(&r.batch_id).await;
                        to_check.entry(key).or_default().push(i);
                    }
                    None => rewrite.push(i),
                }
            }
        }
        for (key, indices) in to_check {
            if self.sink.exists(&key).await.map_err(LedgerError::S3)? {
                for i in indices {
                    verdicts[i] = Verdict::Duplicate;
                }
            } else {
                rewrite.extend(indices);
            }
        }
        if !rewrite.is_empty() {
            let by_shard = group_by_shard(entries, rewrite);
            let shards: Vec<Shard> = by_shard.keys().copied().collect();
            self.conn
                .per_shard(&shards, |shard, pipe| {
                    for &i in by_shard.get(&shard).into_iter().flatten() {
                        let doc = &entries[i].doc;
                        pipe.cmd("HSET")
                            .arg(shard.landed(&doc.doc_id))
                            .arg(hex::encode(doc.digest))
                            .arg(&ours);
                    }
                })
                .await?;
        }
        Ok(verdicts)
    }
}

/// Entry indices by the shard their docId hashes to (the hash slot of their ledger records).
fn group_by_shard(
    entries: &[Entry<EntryRef>],
    indices: impl IntoIterator<Item = usize>,
) -> BTreeMap<Shard, Vec<usize>> {
    let mut by_shard: BTreeMap<Shard, Vec<usize>> = BTreeMap::new();
    for i in indices {
        by_shard.entry(entries[i].ack.0).or_default().push(i);
    }
    by_shard
}

/// The batches this worker is uploading right now.
#[derive(Clone, Default)]
struct Uploading {
    ids: Arc<Mutex<HashSet<String>>>,
    done: Arc<Notify>,
}

impl Uploading {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, batch_id: &str) -> UploadGuard {
        self.lock().insert(batch_id.to_string());
        UploadGuard {
            uploading: self.clone(),
            batch_id: batch_id.to_string(),
        }
    }

    async fn wait_for(&self, batch_id: &str) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            done.as_mut().enable();
            if !self.lock().contains(batch_id) {
                return;
            }
            done.await;
        }
    }
}

/// Ends an upload's mark when dropped (written, dead-lettered, or the task ended).
pub struct UploadGuard {
    uploading: Uploading,
    batch_id: String,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.uploading.lock().remove(&self.batch_id);
        self.uploading.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = Record {
            batch_id: "0123456789abcdef0123456789abcdef".into(),
            compression: Compression::Zstd,
        };
        let raw = record.encode();
        assert_eq!(raw.len(), 33);
        assert_eq!(Record::decode(raw.as_bytes()), Some(record));
        assert_eq!(Record::decode(b"short"), None);
        let mut bad = raw.clone().into_bytes();
        bad[32] = b'x';
        assert_eq!(Record::decode(&bad), None);
    }
}
