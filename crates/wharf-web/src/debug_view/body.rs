//! Turning a kept body into something a person can read: gunzipped (within a bound), JSON pretty-printed in its own key order, text as text, anything else as a hex dump.

use std::borrow::Cow;
use std::io::Read;

use serde::Serialize;

/// Most bytes a gzip body is inflated to: a few KiB of gzip can inflate to gigabytes.
pub const MAX_DECODED_BYTES: usize = 256 * 1024;

/// Most body bytes shown as a hex dump (each takes about four characters of dump).
const MAX_HEX_BYTES: usize = 16 * 1024;

/// A body as the view shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BodyView {
    /// `json`, `text` or `hex`.
    pub kind: &'static str,
    /// What to show: indented JSON, the text, or a hex dump of at most 16 KiB of the body.
    pub text: String,
    /// The body was gzip and is shown inflated.
    pub gzip: bool,
    /// Part of the body is not shown: cut when kept, or when inflated or dumped.
    pub truncated: bool,
    /// The body's size as received.
    pub bytes: usize,
}

/// Decodes a kept body; `kept_truncated` says it was cut when kept, `size` is its size as received.
pub fn decode(kept: &[u8], kept_truncated: bool, size: usize) -> BodyView {
    let mut truncated = kept_truncated;
    let mut gzip = false;
    let mut bytes = Cow::Borrowed(kept);
    if kept.starts_with(&[0x1f, 0x8b]) {
        if let Some((inflated, cut)) = gunzip(kept) {
            bytes = Cow::Owned(inflated);
            gzip = true;
            truncated |= cut;
        }
    }
    let (kind, text) = if let Some(pretty) = pretty_json(&bytes) {
        ("json", pretty)
    } else if let Some(text) = as_text(&bytes, truncated) {
        ("text", text)
    } else {
        truncated |= bytes.len() > MAX_HEX_BYTES;
        ("hex", hex_dump(&bytes[..bytes.len().min(MAX_HEX_BYTES)]))
    };
    BodyView {
        kind,
        text,
        gzip,
        truncated,
        bytes: size,
    }
}

/// Inflates at most [`MAX_DECODED_BYTES`]; `None` when nothing inflates (not gzip after all).
/// A body cut when kept ends mid-stream: what inflated before the cut is returned, marked cut.
fn gunzip(compressed: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut inflated = Vec::new();
    let limit = u64::try_from(MAX_DECODED_BYTES).unwrap_or(u64::MAX) + 1;
    let read = flate2::read::MultiGzDecoder::new(compressed)
        .take(limit)
        .read_to_end(&mut inflated);
    if read.is_err() && inflated.is_empty() {
        return None;
    }
    let cut = read.is_err() || inflated.len() > MAX_DECODED_BYTES;
    inflated.truncate(MAX_DECODED_BYTES);
    Some((inflated, cut))
}

/// Valid JSON, indented by two spaces, its keys in the order they were sent (a `Value` would
/// sort them, and show a document other than the one sent).
fn pretty_json(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(indent(text))
}

/// Re-indents valid JSON text, leaving strings and numbers exactly as written.
fn indent(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + json.len() / 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = json.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n(' ', depth * 2));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// The body as text when it is UTF-8; a body cut when kept may end inside a character, which
/// is dropped.
fn as_text(bytes: &[u8], truncated: bool) -> Option<String> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Some(text.to_string()),
        Err(e) if truncated && e.error_len().is_none() => {
            Some(String::from_utf8_lossy(&bytes[..e.valid_up_to()]).into_owned())
        }
        Err(_) => None,
    }
}

/// Sixteen bytes a line: offset, bytes in hex, and the printable ones.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 + bytes.len() / 16 * 12);
    for (line, chunk) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:08x} ", line * 16));
        for (i, b) in chunk.iter().enumerate() {
            if i == 8 {
                out.push(' ');
            }
            out.push_str(&format!(" {b:02x}"));
        }
        let missing = 16 - chunk.len();
        out.extend(std::iter::repeat_n(
            ' ',
            missing * 3 + usize::from(chunk.len() <= 8),
        ));
        out.push_str("  |");
        out.extend(chunk.iter().map(|b| {
            if b.is_ascii_graphic() || *b == b' ' {
                char::from(*b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_testkit::gzip;

    #[test]
    fn json_is_indented_in_its_own_order() {
        let view = decode(
            br#"{"z":1,"a":[1, 2.50,{}],"s":"x,{y}:\"q\"","e":[]}"#,
            false,
            9,
        );
        assert_eq!(view.kind, "json");
        assert_eq!(
            view.text,
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2.50,\n    {}\n  ],\n  \"s\": \"x,{y}:\\\"q\\\"\",\n  \"e\": []\n}"
        );
        assert_eq!(view.bytes, 9);
        assert!(!view.gzip && !view.truncated);
    }

    #[test]
    fn gzip_is_inflated_and_bombs_are_cut() {
        let view = decode(&gzip(br#"{"ping": true}"#), false, 40);
        assert_eq!((view.kind, view.gzip), ("json", true));
        assert_eq!(view.text, "{\n  \"ping\": true\n}");
        let bomb = gzip(&vec![b'a'; 10 * MAX_DECODED_BYTES]);
        let view = decode(&bomb, false, bomb.len());
        assert_eq!((view.kind, view.gzip, view.truncated), ("text", true, true));
        assert_eq!(view.text.len(), MAX_DECODED_BYTES);
    }

    #[test]
    fn a_gzip_body_cut_when_kept_shows_what_inflates() {
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let compressed = gzip(text.as_bytes());
        let view = decode(&compressed[..compressed.len() / 2], true, compressed.len());
        assert!(view.gzip && view.truncated, "{view:?}");
        assert!(view.text.starts_with("line 0\nline 1\n"));
    }

    #[test]
    fn text_and_binary() {
        let view = decode(b"<script>alert(1)</script>", false, 25);
        assert_eq!(
            (view.kind, view.text.as_str()),
            ("text", "<script>alert(1)</script>")
        );
        let view = decode(&[0x00, 0xff, b'A', 0x10], false, 4);
        assert_eq!(view.kind, "hex");
        assert!(
            view.text.starts_with("00000000  00 ff 41 10"),
            "{}",
            view.text
        );
        assert!(view.text.trim_end().ends_with("|..A.|"), "{}", view.text);
        let cut_in_a_char = "é".repeat(10).into_bytes();
        let view = decode(&cut_in_a_char[..5], true, 20);
        assert_eq!((view.kind, view.text.as_str()), ("text", "éé"));
    }

    #[test]
    fn hex_dump_lines_line_up() {
        let dump = hex_dump(&(0u8..40).collect::<Vec<_>>());
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), lines[2].len() + (16 - 8));
        assert!(lines[1].starts_with("00000010  10 11"));
        let widths: Vec<usize> = lines.iter().map(|l| l.find('|').unwrap()).collect();
        assert_eq!(widths, vec![widths[0]; 3], "{dump}");
    }
}
