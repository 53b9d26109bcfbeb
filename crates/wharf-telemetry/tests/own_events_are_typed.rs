//! Every event Wharf's own code raises names its MozLog `Type` (docs/operations.md, "Logging"):
//! without a `type` field the line's Type is a module path, which dashboards and alerts cannot
//! rely on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::path::{Path, PathBuf};

const MACROS: &[&str] = &["trace", "debug", "info", "warn", "error", "event"];

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text between the parenthesis at `open` and its match, skipping string and char literals
/// (messages such as "(doc_ids lists at most 10)" hold parentheses of their own).
fn arguments(text: &str, open: usize) -> &str {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < bytes.len() {
        match bytes[i] {
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..i];
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    &text[open..]
}

/// `file:line: call` for each tracing event macro in `text` without a `type` field, up to the
/// first `#[cfg(test)]` (tests raise untyped events on purpose).
fn untyped_events(file: &Path, text: &str) -> Vec<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut found = Vec::new();
    for name in MACROS {
        let call = format!("tracing::{name}!");
        for (at, _) in text.match_indices(&call) {
            let Some(open) = text[at..].find('(').map(|o| at + o) else {
                continue;
            };
            let args = arguments(text, open);
            let typed = args
                .split(',')
                .any(|part| part.trim_start().starts_with("type ="));
            if !typed {
                let line = text[..at].matches('\n').count() + 1;
                let first = args.lines().map(str::trim).find(|l| !l.is_empty());
                found.push(format!(
                    "{}:{line}: {call}({}...",
                    file.display(),
                    first.unwrap_or_default()
                ));
            }
        }
    }
    found
}

#[test]
fn every_event_of_wharfs_own_code_sets_its_type() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in std::fs::read_dir(&crates).unwrap().flatten() {
        // The test kit runs only in tests; its lines never reach a log pipeline.
        if krate.file_name() == "wharf-testkit" {
            continue;
        }
        rust_files(&krate.path().join("src"), &mut files);
    }
    assert!(
        files
            .iter()
            .any(|f| f.ends_with("wharf-worker/src/startup.rs")),
        "the worker's sources were scanned: {files:?}"
    );
    let untyped: Vec<String> = files
        .iter()
        .flat_map(|f| untyped_events(f, &std::fs::read_to_string(f).unwrap()))
        .collect();
    assert!(
        untyped.is_empty(),
        "events without `type = \"...\"`:\n{}",
        untyped.join("\n")
    );
}

#[test]
fn the_scan_finds_an_untyped_event_and_accepts_a_typed_one() {
    let source = r#"
        fn f() {
            tracing::info!(type = "worker.start", shards, "started (all {shards})");
            tracing::debug!(
                error = %e,
                "could not publish (type = \"x\")"
            );
        }
        #[cfg(test)]
        mod tests { fn g() { tracing::error!(answer = 42, "plain"); } }
    "#;
    let found = untyped_events(Path::new("f.rs"), source);
    assert_eq!(found, ["f.rs:4: tracing::debug!(error = %e,..."]);
}
