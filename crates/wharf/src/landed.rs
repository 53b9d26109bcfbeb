//! `wharf landed`: the newest objects the worker wrote, their document counts and, with `--decode`, the documents.

use std::fmt::Write as _;
use std::io::Write as _;

use wharf_settings::Settings;
use wharf_worker::objects::{self, BodyView, Decoded, Document, ObjectInfo};
use wharf_worker::sink::S3Sink;

/// What `wharf landed` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// Appended to S3_PREFIX.
    pub prefix: String,
    pub decode: bool,
    pub limit: usize,
}

/// Why `wharf landed` failed.
#[derive(Debug, thiserror::Error)]
pub enum LandedError {
    #[error(transparent)]
    S3(#[from] objects::ObjectsError),
    #[error("{0} object(s) could not be read")]
    Unreadable(usize),
    #[error("writing the output failed: {0}")]
    Output(std::io::Error),
}

/// Lists, reads and prints; stdout gets the report, one object at a time.
pub async fn run(settings: &Settings, request: &Request) -> Result<(), LandedError> {
    let ws = &settings.worker;
    let sink = S3Sink::new(&ws.s3).await;
    let prefix = format!("{}{}", sink.prefix(), request.prefix);
    let listed = objects::list(sink.client(), sink.bucket(), &prefix).await?;
    let total = listed.len();
    let shown = objects::newest(listed, request.limit);
    let mut stdout = std::io::stdout().lock();
    let mut emit = |text: String| {
        stdout
            .write_all(text.as_bytes())
            .map_err(LandedError::Output)
    };
    emit(heading(sink.bucket(), &prefix, total, shown.len()))?;
    let width = shown
        .iter()
        .map(|o| o.size.to_string().len())
        .max()
        .unwrap_or(0);
    let mut unreadable = 0;
    for object in &shown {
        let decoded = match objects::read(sink.client(), sink.bucket(), &object.key).await {
            Ok(bytes) => objects::decode(&bytes).map_err(|e| format!("not an NDJSON object: {e}")),
            Err(e) => {
                unreadable += 1;
                Err(e.to_string())
            }
        };
        emit(render_object(object, &decoded, width, request.decode))?;
    }
    if unreadable > 0 {
        return Err(LandedError::Unreadable(unreadable));
    }
    Ok(())
}

/// `s3://bucket/prefix: N objects, the newest M shown` and the column titles.
pub fn heading(bucket: &str, prefix: &str, total: usize, shown: usize) -> String {
    let mut out = format!("s3://{bucket}/{prefix}: ");
    if total == 0 {
        out.push_str("no objects\n");
        return out;
    }
    let _ = write!(out, "{total} object{}", plural(total));
    if shown < total {
        let _ = write!(out, ", the newest {shown} shown");
    } else {
        out.push_str(", newest first");
    }
    out.push('\n');
    out
}

/// One row (last modified, size, documents, key) and, with `decode`, every document.
pub fn render_object(
    object: &ObjectInfo,
    decoded: &Result<Decoded, String>,
    size_width: usize,
    decode: bool,
) -> String {
    let when = object
        .last_modified
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".repeat(20));
    let docs = match decoded {
        Ok(d) => format!(
            "{} document{}",
            d.documents.len(),
            plural(d.documents.len())
        ),
        Err(_) => "? documents".to_string(),
    };
    let mut out = format!(
        "{when}  {:>size_width$} bytes  {docs}  {}\n",
        object.size, object.key
    );
    match decoded {
        Err(why) => {
            let _ = writeln!(out, "  {why}");
        }
        Ok(d) => {
            for bad in &d.bad_lines {
                let _ = writeln!(out, "  unreadable {bad}");
            }
            if decode {
                let count = d.documents.len();
                for (i, doc) in d.documents.iter().enumerate() {
                    render_document(&mut out, doc, i + 1, count);
                }
            }
        }
    }
    out
}

fn render_document(out: &mut String, doc: &Document, n: usize, count: usize) {
    let _ = writeln!(out, "  document {n} of {count}");
    for (name, value) in &doc.attributes {
        let value = match value {
            serde_json::Value::String(s) => escape_controls(s),
            other => other.to_string(),
        };
        let _ = writeln!(out, "    {name}: {value}");
    }
    let size = doc.body.len();
    let (kind, text) = match objects::view_body(&doc.body) {
        BodyView::Text { text, gzip } => (if gzip { "gzip, gunzipped" } else { "text" }, text),
        BodyView::Binary { escaped, gzip } => (
            if gzip {
                "gzip, gunzipped, binary, escaped"
            } else {
                "binary, escaped"
            },
            escaped,
        ),
    };
    if size == 0 {
        let _ = writeln!(out, "    body: empty");
        return;
    }
    let _ = writeln!(out, "    body ({size} byte{}, {kind}):", plural(size));
    for line in text.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

/// Attribute values come from request headers: never let one drive the terminal.
fn escape_controls(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn heading_says_how_many_are_shown() {
        assert_eq!(heading("b", "p/", 0, 0), "s3://b/p/: no objects\n");
        assert_eq!(heading("b", "", 1, 1), "s3://b/: 1 object, newest first\n");
        assert_eq!(
            heading("b", "", 12, 10),
            "s3://b/: 12 objects, the newest 10 shown\n"
        );
    }

    #[test]
    fn a_decoded_object_shows_attributes_and_body() {
        let object = ObjectInfo {
            key: "ns/t/1/2026-01-02/03/abc.ndjson.gz".into(),
            size: 321,
            last_modified: chrono::DateTime::from_timestamp(1_767_323_045, 0),
        };
        let mut attributes = BTreeMap::new();
        attributes.insert("uri".to_string(), serde_json::json!("/submit/ns/t/1/x"));
        attributes.insert("user_agent".to_string(), serde_json::json!("a\u{1b}b"));
        let decoded = Ok(Decoded {
            documents: vec![Document {
                attributes,
                body: b"{\"hello\": \"world\"}".to_vec(),
            }],
            bad_lines: vec![],
        });
        assert_eq!(
            render_object(&object, &decoded, 5, true),
            "2026-01-02 03:04:05Z    321 bytes  1 document  ns/t/1/2026-01-02/03/abc.ndjson.gz\n\
             \x20 document 1 of 1\n\
             \x20   uri: /submit/ns/t/1/x\n\
             \x20   user_agent: a\\u{1b}b\n\
             \x20   body (18 bytes, text):\n\
             \x20     {\"hello\": \"world\"}\n"
        );
        assert_eq!(
            render_object(&object, &decoded, 3, false),
            "2026-01-02 03:04:05Z  321 bytes  1 document  ns/t/1/2026-01-02/03/abc.ndjson.gz\n"
        );
    }

    #[test]
    fn an_unreadable_object_says_why() {
        let object = ObjectInfo {
            key: "k".into(),
            size: 3,
            last_modified: None,
        };
        let out = render_object(&object, &Err("not gzip NDJSON: x".into()), 1, true);
        assert!(
            out.contains("? documents  k\n  not gzip NDJSON: x\n"),
            "{out}"
        );
    }
}
