//! Reading back what the worker landed: list objects, fetch them, decode their gzip or zstd NDJSON documents.
//!
//! Shared by `wharf canary` (find its own document) and `wharf landed` (show the newest objects
//! and their documents). Decoding is the inverse of [`crate::batch`]: gunzip, one JSON object per
//! line, `data` base64 of the body exactly as received.

use std::collections::BTreeMap;
use std::io::Read;

use aws_sdk_s3::error::DisplayErrorContext;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Why S3 could not be listed or read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// A page of `ListObjectsV2` failed (a missing bucket, denied access, an unreachable
    /// endpoint); no partial listing is returned.
    #[error("listing s3://{bucket}/{prefix} failed: {detail}")]
    List {
        /// The bucket listed (`S3_BUCKET`).
        bucket: String,
        /// The key prefix listed under; empty for the whole bucket.
        prefix: String,
        /// The SDK's error with its causes, which tell the kinds of failure apart.
        detail: String,
    },
    /// `GetObject` failed, or the object's body broke off while it was read.
    #[error("reading s3://{bucket}/{key} failed: {detail}")]
    Get {
        /// The bucket read (`S3_BUCKET`).
        bucket: String,
        /// The object's full key, prefix included.
        key: String,
        /// The SDK's error with its causes, or the body stream's error.
        detail: String,
    },
}

/// Why an object is not gzip or zstd NDJSON as the worker writes it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not a whole zstd frame (when it starts with zstd's magic number) or gzip stream, e.g. a
    /// truncated object or one the worker did not write; holds the decompressor's error.
    #[error("not gzip or zstd: {0}")]
    NotCompressed(std::io::Error),
    /// Decompressed, but not UTF-8, so it cannot be NDJSON.
    #[error("not UTF-8 text once decompressed")]
    NotText,
}

/// One line of an object that is not a document, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct LineError {
    /// 1-based, as an editor shows it.
    pub line: usize,
    /// Not JSON of the document shape, or `data` not base64, with the parser's message.
    pub reason: String,
}

/// One object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The full key, `S3_PREFIX` included.
    pub key: String,
    /// Stored (compressed) size in bytes; 0 when the listing gave none.
    pub size: u64,
    /// When S3 last wrote the object; `None` when the listing gave no time.
    pub last_modified: Option<DateTime<Utc>>,
}

/// One stored submission: its attributes and its body, base64-decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// What the web role recorded about the request (`uri`, `submission_timestamp`, ...), by name.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// The body exactly as the client sent it: still gzip if it came gzip ([`view_body`]).
    pub body: Vec<u8>,
}

/// An object's documents, and the lines that could not be read as one.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// The lines that read as documents, in the object's order.
    pub documents: Vec<Document>,
    /// The lines that did not, by line number; empty lines are skipped, not reported.
    pub bad_lines: Vec<LineError>,
}

#[derive(Deserialize)]
struct RawLine {
    attributes: BTreeMap<String, serde_json::Value>,
    data: String,
}

/// Every object under `prefix` in `bucket`, in S3's (key) order.
pub async fn list(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, ObjectsError> {
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut objects = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ObjectsError::List {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            detail: DisplayErrorContext(&e).to_string(),
        })?;
        objects.extend(page.contents().iter().filter_map(|o| {
            Some(ObjectInfo {
                key: o.key()?.to_string(),
                size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                last_modified: o
                    .last_modified()
                    .and_then(|t| DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
            })
        }));
    }
    Ok(objects)
}

/// The `limit` most recently modified objects, newest first; equal times in key order.
pub fn newest(mut objects: Vec<ObjectInfo>, limit: usize) -> Vec<ObjectInfo> {
    objects.sort_by(|a, b| {
        b.last_modified
            .cmp(&a.last_modified)
            .then_with(|| a.key.cmp(&b.key))
    });
    objects.truncate(limit);
    objects
}

/// The bytes of one object.
pub async fn read(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, ObjectsError> {
    let fail = |detail: String| ObjectsError::Get {
        bucket: bucket.to_string(),
        key: key.to_string(),
        detail,
    };
    let object = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(|e| fail(DisplayErrorContext(&e).to_string()))?;
    let bytes = object
        .body
        .collect()
        .await
        .map_err(|e| fail(e.to_string()))?;
    Ok(bytes.into_bytes().to_vec())
}

/// The zstd frame magic number (RFC 8878).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// The documents of a gzip or zstd NDJSON object (told apart by their magic numbers, so objects
/// written before and after an `OUTPUT_COMPRESSION` change both read); lines that are not
/// documents are reported, not fatal.
pub fn decode(object: &[u8]) -> Result<Decoded, DecodeError> {
    let mut raw = Vec::new();
    if object.starts_with(&ZSTD_MAGIC) {
        zstd::stream::read::Decoder::new(object)
            .and_then(|mut d| d.read_to_end(&mut raw))
            .map_err(DecodeError::NotCompressed)?;
    } else {
        flate2::read::MultiGzDecoder::new(object)
            .read_to_end(&mut raw)
            .map_err(DecodeError::NotCompressed)?;
    }
    let text = String::from_utf8(raw).map_err(|_| DecodeError::NotText)?;
    let mut decoded = Decoded::default();
    for (index, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |reason: String| LineError {
            line: index + 1,
            reason,
        };
        match serde_json::from_str::<RawLine>(line) {
            Ok(raw) => match base64::engine::general_purpose::STANDARD.decode(&raw.data) {
                Ok(body) => decoded.documents.push(Document {
                    attributes: raw.attributes,
                    body,
                }),
                Err(e) => decoded
                    .bad_lines
                    .push(bad(format!("data is not base64: {e}"))),
            },
            Err(e) => decoded
                .bad_lines
                .push(bad(format!("not a document line: {e}"))),
        }
    }
    Ok(decoded)
}

/// How a body is shown to a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyView {
    /// Valid UTF-8 (after gunzip when `gzip`): the text, control characters other than
    /// newline and tab escaped so a body cannot drive the terminal.
    Text {
        /// The body's text, escaped as above.
        text: String,
        /// Whether the body was gzip and this is its gunzipped text.
        gzip: bool,
    },
    /// Anything else, byte escapes (`\x8b`) for what is not printable ASCII.
    Binary {
        /// The bytes, printable ASCII as is and everything else escaped.
        escaped: String,
        /// Whether the body was gzip and these are its gunzipped bytes.
        gzip: bool,
    },
}

/// The gzip magic number (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Gunzips a gzip body (clients often send them compressed) and shows it as text when it is.
pub fn view_body(body: &[u8]) -> BodyView {
    let mut gunzipped = Vec::new();
    let (bytes, gzip) = if body.starts_with(&GZIP_MAGIC)
        && flate2::read::MultiGzDecoder::new(body)
            .read_to_end(&mut gunzipped)
            .is_ok()
    {
        (&gunzipped[..], true)
    } else {
        (body, false)
    };
    match std::str::from_utf8(bytes) {
        Ok(text) => BodyView::Text {
            text: text
                .chars()
                .map(|c| match c {
                    '\n' | '\t' => c.to_string(),
                    c if c.is_control() => c.escape_default().to_string(),
                    c => c.to_string(),
                })
                .collect(),
            gzip,
        },
        Err(_) => BodyView::Binary {
            escaped: bytes.escape_ascii().to_string(),
            gzip,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_testkit::gzip;

    #[test]
    fn decodes_documents_and_reports_bad_lines() {
        let body = base64::engine::general_purpose::STANDARD.encode(b"{\"a\":1}");
        let text = format!(
            "{{\"attributes\":{{\"uri\":\"/submit/x/y/1/z\"}},\"data\":\"{body}\"}}\nnot json\n{{\"attributes\":{{}},\"data\":\"%%%\"}}\n"
        );
        let decoded = decode(&gzip(text.as_bytes())).unwrap();
        assert_eq!(decoded.documents.len(), 1);
        assert_eq!(decoded.documents[0].body, b"{\"a\":1}");
        assert_eq!(
            decoded.documents[0].attributes["uri"],
            serde_json::json!("/submit/x/y/1/z")
        );
        let lines: Vec<usize> = decoded.bad_lines.iter().map(|l| l.line).collect();
        assert_eq!(lines, vec![2, 3]);
    }

    #[test]
    fn an_object_that_is_not_gzip_is_an_error() {
        assert!(matches!(
            decode(b"plain"),
            Err(DecodeError::NotCompressed(_))
        ));
    }

    #[test]
    fn zstd_objects_decode_like_gzip_ones() {
        let line = br#"{"attributes":{"uri":"/submit/a/b/1/x"},"data":"aGk="}"#;
        let mut text = line.to_vec();
        text.push(b'\n');
        let object = zstd::bulk::compress(&text, 3).unwrap();
        let decoded = decode(&object).unwrap();
        assert_eq!(decoded.documents.len(), 1);
        assert_eq!(decoded.documents[0].body, b"hi");
        assert!(matches!(
            decode(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]),
            Err(DecodeError::NotCompressed(_))
        ));
    }

    #[test]
    fn newest_first_then_by_key() {
        let at = |s: i64| DateTime::from_timestamp(s, 0);
        let info = |key: &str, t: i64| ObjectInfo {
            key: key.into(),
            size: 1,
            last_modified: at(t),
        };
        let picked = newest(
            vec![info("a", 1), info("c", 3), info("b", 3), info("d", 2)],
            3,
        );
        let keys: Vec<&str> = picked.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec!["b", "c", "d"]);
    }

    #[test]
    fn bodies_are_gunzipped_and_escaped() {
        assert_eq!(
            view_body(&gzip(b"{\"hello\": \"world\"}\n")),
            BodyView::Text {
                text: "{\"hello\": \"world\"}\n".into(),
                gzip: true
            }
        );
        assert_eq!(
            view_body(b"bell\x07 tab\t"),
            BodyView::Text {
                text: "bell\\u{7} tab\t".into(),
                gzip: false
            }
        );
        assert_eq!(
            view_body(&[0x1f, 0x8b, 0xff, 0x00]),
            BodyView::Binary {
                escaped: "\\x1f\\x8b\\xff\\x00".into(),
                gzip: false
            }
        );
    }
}
