//! Batching: groups submissions by (namespace, docType, docVersion, hour) and decides when a batch is flushed.
//!
//! This module is pure bookkeeping (no I/O), so its flushing rules are unit-tested directly; the
//! [`crate::batcher`] task drives it and uploads what it hands out.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};
use wharf_settings::Compression;

/// The object name's suffix for each output compression.
pub fn extension(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => ".ndjson.gz",
        Compression::Zstd => ".ndjson.zst",
    }
}

/// The object's `Content-Encoding`.
pub fn content_encoding(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
    }
}

/// zstd's own default level: on NDJSON of base64 bodies it compresses better than gzip's
/// fastest level for less CPU (docs/benchmarks.md, "Output compression").
const ZSTD_LEVEL: i32 = 3;

/// The group a submission lands in: one S3 prefix per group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchKey {
    /// The namespace from the submission URL: the first level of the object key.
    pub namespace: String,
    /// The docType from the submission URL: the second level of the object key.
    pub doc_type: String,
    /// The docVersion from the submission URL: the third level of the object key.
    pub doc_version: String,
    /// Submission hour, UTC, formatted `YYYY-MM-DD/HH`.
    pub hour: String,
    /// Set for a canary document: it is a batch of its own, in an object named by its docId,
    /// so that `wharf canary` reads that one object instead of listing the prefix.
    pub canary_doc_id: Option<String>,
}

impl BatchKey {
    /// The key of an ordinary document submitted at `at`, which picks its hour.
    pub fn new(namespace: &str, doc_type: &str, doc_version: &str, at: DateTime<Utc>) -> Self {
        Self {
            namespace: namespace.to_string(),
            doc_type: doc_type.to_string(),
            doc_version: doc_version.to_string(),
            hour: at.format("%Y-%m-%d/%H").to_string(),
            canary_doc_id: None,
        }
    }

    /// The key of a canary document ([`wharf_queue::CANARY_NAMESPACE`]): a batch of its own.
    pub fn canary(doc_type: &str, doc_version: &str, doc_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            canary_doc_id: Some(doc_id.to_string()),
            ..Self::new(wharf_queue::CANARY_NAMESPACE, doc_type, doc_version, at)
        }
    }

    /// `{prefix}{namespace}/{docType}/{docVersion}/{YYYY-MM-DD}/{HH}/{batch id}.ndjson.gz`
    /// (`.ndjson.zst` with zstd), or for a canary document [`canary_object_key`].
    pub fn object_key(&self, prefix: &str, batch_id: &str, compression: Compression) -> String {
        if let Some(doc_id) = &self.canary_doc_id {
            return canary_object_key(
                prefix,
                &self.doc_type,
                &self.doc_version,
                doc_id,
                compression,
            );
        }
        format!(
            "{prefix}{}/{}/{}/{}/{batch_id}{}",
            self.namespace,
            self.doc_type,
            self.doc_version,
            self.hour,
            extension(compression)
        )
    }
}

/// `{prefix}wharf-canary/{docType}/{docVersion}/{docId}.ndjson.gz` (or `.zst`): known to the
/// canary before the document lands, so it needs no listing to find it.
pub fn canary_object_key(
    prefix: &str,
    doc_type: &str,
    doc_version: &str,
    doc_id: &str,
    compression: Compression,
) -> String {
    format!(
        "{prefix}{}/{doc_type}/{doc_version}/{doc_id}{}",
        wharf_queue::CANARY_NAMESPACE,
        extension(compression)
    )
}

/// Limits that close a batch.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A batch closes when it holds this many documents (`BATCH_MAX_DOCUMENTS`).
    pub max_documents: usize,
    /// A batch closes when its bodies, as received, total this many bytes (`BATCH_MAX_BYTES`).
    pub max_bytes: usize,
    /// A batch closes this long after its earliest arrival (`BATCH_MAX_AGE_MS`).
    pub max_age: Duration,
    /// Most batches open at once; a document for one more group flushes the oldest
    /// (`MAX_OPEN_BATCHES`).
    pub max_open: usize,
}

/// Why a batch was flushed (the `reason` tag of `worker.batch.*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// It reached `BATCH_MAX_DOCUMENTS`, or it holds a canary document, which goes at once.
    Count,
    /// Its bodies reached `BATCH_MAX_BYTES`.
    Bytes,
    /// Its earliest document has waited `BATCH_MAX_AGE_MS` (taken-over entries count as having
    /// waited most of it already).
    Age,
    /// More than `max_open` batches were open: the oldest one goes.
    OpenBatches,
    /// The worker holds as much as `WORKER_MAX_HELD_*` allow: its biggest batch goes, so that
    /// it can fetch more.
    Held,
    /// Graceful shutdown.
    Drain,
}

impl FlushReason {
    /// The `reason` tag value, in snake_case.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Count => "count",
            FlushReason::Bytes => "bytes",
            FlushReason::Age => "age",
            FlushReason::OpenBatches => "open_batches",
            FlushReason::Held => "held",
            FlushReason::Drain => "drain",
        }
    }
}

/// The stream entry a batched document came from: what acknowledges it.
pub type EntryRef = (wharf_queue::Shard, String);

/// A document waiting in a batch, with whatever the caller needs to acknowledge it (`A`).
#[derive(Debug)]
pub struct Entry<A> {
    /// `{shard}/{stream entry id}`: orders the object's lines and determines [`Batch::id`].
    pub task_id: String,
    /// The document's identity for the docId ledger ([`crate::ledger`]).
    pub doc: DocIdentity,
    /// The NDJSON line, without its newline ([`crate::handler::ndjson_line`]).
    pub line: Vec<u8>,
    /// Size of the body as received (before base64): what counts toward `BATCH_MAX_BYTES`.
    pub body_bytes: usize,
    /// Handed back with the closed batch to acknowledge the document: an [`EntryRef`] in the
    /// worker.
    pub ack: A,
}

/// What makes two submissions the same document: the docId, and a digest of the route and the
/// body. A client's retry has both equal; the same docId with another body has only the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocIdentity {
    /// The docId from the submission URL: it names the document's ledger hash.
    pub doc_id: String,
    /// The route and body digest of [`DocIdentity::new`]; hex-encoded, it is the ledger field.
    pub digest: [u8; 8],
}

impl DocIdentity {
    /// The first 8 bytes of SHA-256 over `namespace/docType/docVersion/docId`, a newline and
    /// the body as received.
    pub fn new(route: &wharf_queue::Route, body: &[u8]) -> Self {
        let mut hash = Sha256::new();
        for part in [
            &route.namespace,
            &route.doc_type,
            &route.doc_version,
            &route.doc_id,
        ] {
            hash.update(part.as_bytes());
            hash.update(b"/");
        }
        hash.update(b"\n");
        hash.update(body);
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&hash.finalize()[..8]);
        Self {
            doc_id: route.doc_id.clone(),
            digest,
        }
    }
}

/// A closed batch, ready to upload.
#[derive(Debug)]
pub struct Batch<A> {
    /// The group every document in it shares: names its object ([`BatchKey::object_key`]).
    pub key: BatchKey,
    /// Its documents, in arrival order until [`Batch::encode`] sorts them by task id.
    pub entries: Vec<Entry<A>>,
    /// The entries' `body_bytes` summed: bodies as received, not the object's size.
    pub body_bytes: usize,
    /// What closed it: the `reason` tag of `worker.batch.documents` and `worker.batch.bytes`.
    pub reason: FlushReason,
}

impl<A> Batch<A> {
    /// Derived from the batch's contents (its sorted task ids), so that uploading the same batch
    /// again overwrites the same object.
    pub fn id(&self) -> String {
        let mut ids: Vec<&str> = self.entries.iter().map(|e| e.task_id.as_str()).collect();
        ids.sort_unstable();
        let mut hash = Sha256::new();
        for id in ids {
            hash.update(id.as_bytes());
            hash.update(b"\n");
        }
        hex::encode(&hash.finalize()[..16])
    }

    /// The compressed NDJSON object: lines ordered by task id, so the bytes are the same on
    /// every retry.
    pub fn encode(&mut self, compression: Compression) -> std::io::Result<Vec<u8>> {
        self.entries.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let raw_len: usize = self.entries.iter().map(|e| e.line.len() + 1).sum();
        // One write of the whole NDJSON text: flate2 zero-fills its 32 KiB output buffer's spare
        // room on every write, so two writes per line made that zero-filling 40 % of a
        // worker's instructions.
        let mut raw = Vec::with_capacity(raw_len);
        for entry in &self.entries {
            raw.extend_from_slice(&entry.line);
            raw.push(b'\n');
        }
        match compression {
            Compression::Gzip => {
                let mut gz = GzEncoder::new(
                    Vec::with_capacity(raw_len / 3 + 64),
                    flate2::Compression::fast(),
                );
                gz.write_all(&raw)?;
                gz.finish()
            }
            Compression::Zstd => zstd::bulk::compress(&raw, ZSTD_LEVEL),
        }
    }
}

struct Open<A> {
    opened: Instant,
    entries: Vec<Entry<A>>,
    body_bytes: usize,
}

/// The open batches and the rules that close them.
pub struct Batches<A> {
    limits: Limits,
    open: HashMap<BatchKey, Open<A>>,
    /// Documents in open batches.
    waiting: usize,
}

impl<A> Batches<A> {
    /// No batch open yet; `limits` decide when each one closes.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            open: HashMap::new(),
            waiting: 0,
        }
    }

    /// Batches open now: at most [`Limits::max_open`].
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Documents in open batches, not yet handed out for upload.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// Adds a document that arrived at `arrived`; returns the batches that must be flushed now.
    ///
    /// A batch's age runs from its earliest arrival, so a document that arrives "in the past"
    /// (one taken over from a dead worker, which has already waited) brings its batch's
    /// deadline forward.
    pub fn add(&mut self, key: BatchKey, entry: Entry<A>, arrived: Instant) -> Vec<Batch<A>> {
        let now = arrived;
        let mut out = Vec::new();
        if !self.open.contains_key(&key) && self.open.len() >= self.limits.max_open {
            if let Some(oldest) = self.oldest() {
                out.extend(self.take(&oldest, FlushReason::OpenBatches));
            }
        }
        let batch = self.open.entry(key.clone()).or_insert_with(|| Open {
            opened: now,
            entries: Vec::new(),
            body_bytes: 0,
        });
        batch.opened = batch.opened.min(now);
        batch.body_bytes += entry.body_bytes;
        batch.entries.push(entry);
        self.waiting += 1;
        let reason =
            if batch.entries.len() >= self.limits.max_documents || key.canary_doc_id.is_some() {
                Some(FlushReason::Count)
            } else if batch.body_bytes >= self.limits.max_bytes {
                Some(FlushReason::Bytes)
            } else {
                None
            };
        if let Some(reason) = reason {
            out.extend(self.take(&key, reason));
        }
        out
    }

    /// The open batch holding the most documents, closed with `reason`.
    pub fn take_biggest(&mut self, reason: FlushReason) -> Option<Batch<A>> {
        let biggest = self.biggest()?;
        self.take(&biggest, reason)
    }

    /// When the next batch reaches its maximum age.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .map(|b| b.opened + self.limits.max_age)
            .min()
    }

    /// The batches that have reached their maximum age.
    pub fn expired(&mut self, now: Instant) -> Vec<Batch<A>> {
        let max_age = self.limits.max_age;
        let keys: Vec<BatchKey> = self
            .open
            .iter()
            .filter(|(_, b)| b.opened + max_age <= now)
            .map(|(k, _)| k.clone())
            .collect();
        keys.iter()
            .filter_map(|k| self.take(k, FlushReason::Age))
            .collect()
    }

    /// Every open batch (graceful shutdown).
    pub fn drain(&mut self) -> Vec<Batch<A>> {
        let keys: Vec<BatchKey> = self.open.keys().cloned().collect();
        keys.iter()
            .filter_map(|k| self.take(k, FlushReason::Drain))
            .collect()
    }

    fn oldest(&self) -> Option<BatchKey> {
        self.open
            .iter()
            .min_by_key(|(_, b)| b.opened)
            .map(|(k, _)| k.clone())
    }

    fn biggest(&self) -> Option<BatchKey> {
        self.open
            .iter()
            .max_by_key(|(_, b)| b.entries.len())
            .map(|(k, _)| k.clone())
    }

    fn take(&mut self, key: &BatchKey, reason: FlushReason) -> Option<Batch<A>> {
        let open = self.open.remove(key)?;
        self.waiting -= open.entries.len();
        Some(Batch {
            key: key.clone(),
            entries: open.entries,
            body_bytes: open.body_bytes,
            reason,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_documents: 3,
            max_bytes: 100,
            max_age: Duration::from_secs(10),
            max_open: 2,
        }
    }

    fn key(ns: &str) -> BatchKey {
        BatchKey {
            namespace: ns.into(),
            doc_type: "t".into(),
            doc_version: "1".into(),
            hour: "2024-05-06/07".into(),
            canary_doc_id: None,
        }
    }

    fn entry(id: &str, bytes: usize) -> Entry<()> {
        Entry {
            task_id: id.into(),
            doc: DocIdentity {
                doc_id: id.into(),
                digest: [0; 8],
            },
            line: id.as_bytes().to_vec(),
            body_bytes: bytes,
            ack: (),
        }
    }

    /// Batches holding one-byte documents `(namespace, task id)`, all arrived at `at`.
    fn holding(docs: &[(&str, &str)], at: Instant) -> Batches<()> {
        let mut b = Batches::new(limits());
        for (ns, id) in docs {
            b.add(key(ns), entry(id, 1), at);
        }
        b
    }

    #[test]
    fn flushes_by_count() {
        let mut b = Batches::new(limits());
        let now = Instant::now();
        assert!(b.add(key("a"), entry("1", 1), now).is_empty());
        assert!(b.add(key("a"), entry("2", 1), now).is_empty());
        let out = b.add(key("a"), entry("3", 1), now);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reason, FlushReason::Count);
        assert_eq!(out[0].entries.len(), 3);
        assert_eq!(b.waiting(), 0);
    }

    #[test]
    fn flushes_by_bytes() {
        let mut b = Batches::new(limits());
        let now = Instant::now();
        assert!(b.add(key("a"), entry("1", 60), now).is_empty());
        let out = b.add(key("a"), entry("2", 40), now);
        assert_eq!(out[0].reason, FlushReason::Bytes);
    }

    #[test]
    fn flushes_by_age() {
        let now = Instant::now();
        let mut b = holding(&[("a", "1")], now);
        assert_eq!(b.next_deadline(), Some(now + Duration::from_secs(10)));
        assert!(b.expired(now + Duration::from_secs(9)).is_empty());
        let out = b.expired(now + Duration::from_secs(10));
        assert_eq!(out[0].reason, FlushReason::Age);
        assert_eq!(b.open_count(), 0);
    }

    #[test]
    fn an_earlier_arrival_brings_the_deadline_forward() {
        let now = Instant::now();
        let mut b = holding(&[("a", "1")], now);
        let earlier = now - Duration::from_secs(9);
        b.add(key("a"), entry("2", 1), earlier);
        assert_eq!(b.next_deadline(), Some(earlier + Duration::from_secs(10)));
        assert_eq!(b.expired(now + Duration::from_secs(1)).len(), 1);
    }

    #[test]
    fn bounds_open_batches_by_flushing_the_oldest() {
        let mut b = Batches::new(limits());
        let t0 = Instant::now();
        b.add(key("a"), entry("1", 1), t0);
        b.add(key("b"), entry("2", 1), t0 + Duration::from_millis(1));
        let out = b.add(key("c"), entry("3", 1), t0 + Duration::from_millis(2));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key, key("a"));
        assert_eq!(out[0].reason, FlushReason::OpenBatches);
        assert_eq!(b.open_count(), 2);
    }

    #[test]
    fn takes_the_biggest_batch_on_demand() {
        let mut b = holding(&[("a", "1"), ("a", "2"), ("b", "3")], Instant::now());
        let out = b.take_biggest(FlushReason::Held).unwrap();
        assert_eq!(out.key, key("a"));
        assert_eq!(out.reason, FlushReason::Held);
        assert_eq!(b.waiting(), 1);
    }

    #[test]
    fn batch_id_depends_on_contents_only() {
        let now = Instant::now();
        let mut one = holding(&[("a", "x"), ("a", "y")], now).drain().remove(0);
        let mut two = holding(&[("a", "y"), ("a", "x")], now).drain().remove(0);
        assert_eq!(one.id(), two.id());
        for compression in [Compression::Gzip, Compression::Zstd] {
            assert_eq!(
                one.encode(compression).unwrap(),
                two.encode(compression).unwrap()
            );
        }
    }

    #[test]
    fn object_key_layout() {
        let k = BatchKey::new(
            "telemetry",
            "main",
            "4",
            DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        assert_eq!(
            k.object_key("landing/", "abc", Compression::Gzip),
            "landing/telemetry/main/4/2024-05-06/07/abc.ndjson.gz"
        );
        assert_eq!(
            k.object_key("landing/", "abc", Compression::Zstd),
            "landing/telemetry/main/4/2024-05-06/07/abc.ndjson.zst"
        );
    }

    #[test]
    fn a_canary_document_is_a_batch_of_its_own_named_by_its_doc_id() {
        let mut batches = Batches::new(limits());
        let at = DateTime::parse_from_rfc3339("2024-05-06T07:08:09Z")
            .unwrap()
            .with_timezone(&Utc);
        let key = BatchKey::canary("canary", "1", "d0c1d", at);
        let flushed = batches.add(key, entry("x", 1), Instant::now());
        assert_eq!(flushed.len(), 1, "flushed at once");
        assert_eq!(
            flushed[0]
                .key
                .object_key("landing/", "ignored", Compression::Gzip),
            "landing/wharf-canary/canary/1/d0c1d.ndjson.gz"
        );
    }
}
