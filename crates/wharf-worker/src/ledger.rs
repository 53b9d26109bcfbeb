//! The docId ledger: drops a document already landed within `DEDUP_WINDOW_MS`, including after a worker died between PutObject and its acknowledgement.
//!
//! Before a batch is written, each of its documents is recorded in Redis, under
//! `wharf:{<shard>}:landed:<docId>` for `DEDUP_WINDOW_MS`, as "digest of this document, batch
//! id, compression". Recording comes first, so a worker that cannot reach Redis writes nothing,
//! and a crash at any point leaves a record naming the object that may hold the document. When a
//! docId comes back (a client's retry, or an entry redelivered after a crash or a takeover):
//!
//! - another digest: the same docId with another body (or another route) is a different
//!   document; it is kept, counted as a conflict, and the record now names it;
//! - the same digest in this very batch: a retry of the same upload, which overwrites the same
//!   object, so it is kept;
//! - the same digest in another batch: that object is checked (`HeadObject`). If it exists,
//!   the document landed and is dropped; if not, that upload never happened, and the record
//!   moves to this batch. An upload of that batch still running in this worker is waited for
//!   first.
//!
//! What remains possible is written up in docs/worker.md, "Deduplication".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::Value;
use tokio::sync::Notify;
use wharf_queue::{QueueError, Redis, Shard};
use wharf_settings::Compression;

use crate::batch::{Batch, DocIdentity};
use crate::batcher::EntryRef;
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
    #[error("docId ledger: {0}")]
    Redis(#[from] QueueError),
    #[error("checking an earlier object: {}", .0.message())]
    S3(S3Failure),
}

/// One ledger record: `<digest, 16 hex><batch id, 32 hex><g|z>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    digest: [u8; 8],
    batch_id: String,
    compression: Compression,
}

impl Record {
    fn encode(&self) -> String {
        let mark = match self.compression {
            Compression::Gzip => 'g',
            Compression::Zstd => 'z',
        };
        format!("{}{}{mark}", hex::encode(self.digest), self.batch_id)
    }

    fn decode(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?;
        if text.len() != 49 || !text.is_ascii() {
            return None;
        }
        let mut digest = [0u8; 8];
        hex::decode_to_slice(&text[..16], &mut digest).ok()?;
        let compression = match &text[48..] {
            "g" => Compression::Gzip,
            "z" => Compression::Zstd,
            _ => return None,
        };
        Some(Self {
            digest,
            batch_id: text[16..48].to_string(),
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
        })
    }

    /// Records the batch's documents as landing in batch `batch_id`, and decides, document by
    /// document (in `batch.entries` order), which to write.
    pub async fn check(
        &self,
        batch: &Batch<EntryRef>,
        batch_id: &str,
    ) -> Result<Vec<Verdict>, LedgerError> {
        let entries = &batch.entries;
        let mut verdicts = vec![Verdict::Write; entries.len()];
        // A docId twice in one batch: only its first occurrence is looked up and recorded.
        let mut first: HashMap<&str, usize> = HashMap::new();
        for (i, entry) in entries.iter().enumerate() {
            match first.get(entry.doc.doc_id.as_str()) {
                Some(&j) if entries[j].doc.digest == entry.doc.digest => {
                    verdicts[i] = Verdict::Duplicate
                }
                Some(_) => verdicts[i] = Verdict::Conflict,
                None => {
                    first.insert(&entry.doc.doc_id, i);
                }
            }
        }
        let ours = |doc: &DocIdentity| Record {
            digest: doc.digest,
            batch_id: batch_id.to_string(),
            compression: self.compression,
        };
        let mut by_shard: BTreeMap<Shard, Vec<usize>> = BTreeMap::new();
        for &i in first.values() {
            by_shard.entry(entries[i].ack.0).or_default().push(i);
        }
        let shards: Vec<Shard> = by_shard.keys().copied().collect();
        let window_ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        let replies = self
            .conn
            .per_shard(&shards, |shard, pipe| {
                for &i in by_shard.get(&shard).into_iter().flatten() {
                    let doc = &entries[i].doc;
                    let key = shard.landed(&doc.doc_id);
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(ours(doc).encode())
                        .arg("NX")
                        .arg("PX")
                        .arg(window_ms);
                    pipe.cmd("GET").arg(&key);
                }
            })
            .await?;

        // Earlier records with this digest in another batch, by the object that batch wrote.
        let mut to_check: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut rewrite: Vec<usize> = Vec::new();
        for (shard, values) in shards.iter().zip(replies) {
            let indices = by_shard.get(shard).map(Vec::as_slice).unwrap_or(&[]);
            for (&i, pair) in indices.iter().zip(values.chunks(2)) {
                if let Some(Value::ServerError(e)) =
                    pair.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    return Err(LedgerError::Redis(QueueError::Redis(e.clone().into())));
                }
                if matches!(pair.first(), Some(Value::Okay)) {
                    continue;
                }
                let earlier = match pair.get(1) {
                    Some(Value::BulkString(raw)) => Record::decode(raw),
                    _ => None,
                };
                match earlier {
                    Some(r) if r.batch_id == batch_id => {}
                    Some(r) if r.digest != entries[i].doc.digest => {
                        verdicts[i] = Verdict::Conflict;
                        rewrite.push(i);
                    }
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
            let mut by_shard: BTreeMap<Shard, Vec<usize>> = BTreeMap::new();
            for i in rewrite {
                by_shard.entry(entries[i].ack.0).or_default().push(i);
            }
            let shards: Vec<Shard> = by_shard.keys().copied().collect();
            self.conn
                .per_shard(&shards, |shard, pipe| {
                    for &i in by_shard.get(&shard).into_iter().flatten() {
                        let doc = &entries[i].doc;
                        pipe.cmd("SET")
                            .arg(shard.landed(&doc.doc_id))
                            .arg(ours(doc).encode())
                            .arg("PX")
                            .arg(window_ms);
                    }
                })
                .await?;
        }
        Ok(verdicts)
    }

    /// Marks batch `batch_id` as being uploaded by this worker until the guard is dropped, so
    /// that a retry of one of its documents waits for the upload instead of finding no object.
    pub fn uploading(&self, batch_id: &str) -> UploadGuard {
        self.uploading.enter(batch_id)
    }
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
            digest: [1, 2, 3, 4, 5, 6, 7, 8],
            batch_id: "0123456789abcdef0123456789abcdef".into(),
            compression: Compression::Zstd,
        };
        let raw = record.encode();
        assert_eq!(raw.len(), 49);
        assert_eq!(Record::decode(raw.as_bytes()), Some(record));
        assert_eq!(Record::decode(b"short"), None);
        let mut bad = raw.clone().into_bytes();
        bad[48] = b'x';
        assert_eq!(Record::decode(&bad), None);
    }
}
