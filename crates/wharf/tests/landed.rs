//! `wharf landed` as a process against a real S3 server: objects written by the real worker and by PutObject, listed newest first with their counts, and decoded.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, SystemTime};

use wharf_queue::{Route, Submission};
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use worker_support::*;

const PREFIX: &str = "landing/";
const TEXT_BODY: &str = "{\"hello\": \"world\"}";
const GZIP_TEXT: &str = "{\"compressed\": true, \"n\": 2}";
const BINARY_BODY: &[u8] = b"\x00\x01bin\xff";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap_or_else(|e| panic!("gzip: {e}"));
    gz.finish().unwrap_or_else(|e| panic!("gzip: {e}"))
}

fn submission(namespace: &str, doc_type: &str, n: u32, body: &[u8]) -> Submission {
    let doc_id = format!("{n:08x}-0000-4000-8000-000000000000");
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "uri".to_string(),
        format!("/submit/{namespace}/{doc_type}/1/{doc_id}"),
    );
    attributes.insert(
        "submission_timestamp".to_string(),
        "2026-01-02T03:04:05.000006Z".to_string(),
    );
    attributes.insert("user_agent".to_string(), format!("landed-test/{n}"));
    Submission::new(
        Route {
            namespace: namespace.into(),
            doc_type: doc_type.into(),
            doc_version: "1".into(),
            doc_id,
        },
        attributes,
        body.to_vec().into(),
    )
}

/// Runs `wharf landed ARGS` against `s3`; returns (exit code, stdout, stderr).
fn landed(s3: &S3Server, args: &[&str]) -> (i32, String, String) {
    let mut vars = s3.env();
    vars.push(("S3_PREFIX".into(), PREFIX.into()));
    let mut full = vec!["landed"];
    full.extend_from_slice(args);
    let output = wharf_command(&full, &vars)
        .output()
        .unwrap_or_else(|e| panic!("run wharf landed: {e}"));
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sets an object's LastModified (s3s-fs reports the file's mtime), so the order is certain.
fn age(s3: &S3Server, key: &str, seconds_ago: u64) {
    let path = s3.root().join(s3.bucket()).join(key);
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// Rows of the listing: (documents column, key), in printed order.
fn rows(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.ends_with(".ndjson.gz"))
        .map(|l| {
            let fields: Vec<&str> = l.split("  ").map(str::trim).collect();
            let key = fields.last().copied().unwrap_or_default().to_string();
            let docs = fields
                .iter()
                .find(|f| f.contains("document"))
                .copied()
                .unwrap_or_default()
                .to_string();
            (docs, key)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landed_lists_the_newest_objects_and_decodes_their_documents() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);

    // The real worker writes two objects: app/events (a text body and a gzip body), app/crash
    // (a binary body).
    let vars = worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "300"), ("S3_PREFIX", PREFIX)],
    );
    enqueue(
        &settings(&vars),
        &[
            submission("app", "events", 1, TEXT_BODY.as_bytes()),
            submission("app", "events", 2, &gzip(GZIP_TEXT.as_bytes())),
            submission("app", "crash", 3, BINARY_BODY),
        ],
    )
    .await;
    let mut worker = spawn_worker(&vars);
    let both = wharf_testkit::eventually(Duration::from_secs(60), || {
        let n = landed_docs(&s3);
        async move { n == 3 }
    })
    .await;
    assert!(
        both,
        "the worker did not land 3 documents: {:?}",
        worker.output()
    );
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).is_some());

    // PutObject of gzip NDJSON written like the worker's, plus a line that is not a document,
    // and an object outside S3_PREFIX that must never be listed.
    let manual_key = format!("{PREFIX}other/manual/1/2026-01-02/03/manual.ndjson.gz");
    let mut attributes = BTreeMap::new();
    attributes.insert("uri".to_string(), "/submit/other/manual/1/x".to_string());
    let line = String::from_utf8(
        wharf_worker::handler::ndjson_line(&attributes, b"manual body")
            .unwrap_or_else(|e| panic!("line: {e}")),
    )
    .unwrap_or_else(|e| panic!("line: {e}"));
    aws_env();
    let sink_settings = settings(&vars);
    let sink = wharf_worker::sink::S3Sink::new(&sink_settings.worker.s3).await;
    for (key, body) in [
        (
            manual_key.clone(),
            gzip(format!("{line}\nnot a document\n").as_bytes()),
        ),
        (
            "elsewhere/x/1/2026-01-02/03/outside.ndjson.gz".to_string(),
            gzip(line.as_bytes()),
        ),
    ] {
        sink.put(&key, body.into(), "gzip")
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e:?}"));
    }

    let keys = s3.keys();
    let find = |part: &str| {
        keys.iter()
            .find(|k| k.contains(part))
            .cloned()
            .unwrap_or_else(|| panic!("no key with {part} in {keys:?}"))
    };
    let events_key = find("/app/events/1/2026-01-02/03/");
    let crash_key = find("/app/crash/1/2026-01-02/03/");
    age(&s3, &crash_key, 300);
    age(&s3, &events_key, 200);
    age(&s3, &manual_key, 100);

    // Listing: newest first, with document counts and sizes; nothing outside S3_PREFIX.
    let (code, out, err) = landed(&s3, &[]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.starts_with(&format!(
            "s3://{BUCKET}/{PREFIX}: 3 objects, newest first\n"
        )),
        "{out}"
    );
    assert_eq!(
        rows(&out),
        vec![
            ("1 document".to_string(), manual_key.clone()),
            ("2 documents".to_string(), events_key.clone()),
            ("1 document".to_string(), crash_key.clone()),
        ],
        "{out}"
    );
    assert!(
        out.contains("  unreadable line 2: not a document line"),
        "{out}"
    );
    let events_size = s3.object(&events_key).len();
    assert!(
        out.lines()
            .any(|l| l.ends_with(&events_key) && l.contains(&format!(" {events_size} bytes "))),
        "size {events_size} not shown: {out}"
    );
    assert!(!out.contains("outside"), "{out}");
    assert!(
        !out.contains("document 1 of"),
        "no documents without --decode: {out}"
    );

    // --limit keeps the newest.
    let (code, out, _) = landed(&s3, &["--limit", "2"]);
    assert_eq!(code, 0);
    assert!(out.contains(": 3 objects, the newest 2 shown\n"), "{out}");
    let limited: Vec<String> = rows(&out).into_iter().map(|(_, k)| k).collect();
    assert_eq!(limited, vec![manual_key.clone(), events_key.clone()]);

    // --decode: attributes and bodies, a gzip body gunzipped.
    let (code, out, err) = landed(&s3, &["--prefix", "app/events/", "--decode"]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.starts_with(&format!(
            "s3://{BUCKET}/{PREFIX}app/events/: 1 object, newest first\n"
        )),
        "{out}"
    );
    for expected in [
        "  document 1 of 2\n",
        "    uri: /submit/app/events/1/00000001-0000-4000-8000-000000000000\n",
        "    user_agent: landed-test/1\n",
        "    submission_timestamp: 2026-01-02T03:04:05.000006Z\n",
        &format!(
            "    body ({} bytes, text):\n      {TEXT_BODY}\n",
            TEXT_BODY.len()
        ),
        "  document 2 of 2\n",
        &format!(
            "    body ({} bytes, gzip, gunzipped):\n      {GZIP_TEXT}\n",
            gzip(GZIP_TEXT.as_bytes()).len()
        ),
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }

    // A body that is not text is printed escaped.
    let (code, out, _) = landed(&s3, &["--prefix", "app/crash/", "--decode"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("    body (6 bytes, binary, escaped):\n      \\x00\\x01bin\\xff\n"),
        "{out}"
    );

    // Nothing under a prefix is not an error.
    let (code, out, _) = landed(&s3, &["--prefix", "nothing/"]);
    assert_eq!(code, 0);
    assert_eq!(out, format!("s3://{BUCKET}/{PREFIX}nothing/: no objects\n"));
}

#[test]
fn landed_without_s3_settings_is_a_misconfiguration_and_an_unreachable_s3_a_failure() {
    let output = wharf_command(&["landed"], &[])
        .output()
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("S3_BUCKET"));

    let mut s3 = S3Server::start(BUCKET);
    s3.stop();
    let (code, out, err) = landed(&s3, &[]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains(&format!(
            "wharf landed: listing s3://{BUCKET}/{PREFIX} failed"
        )),
        "{err}"
    );
}

/// Documents in the bucket so far (objects being written are skipped).
fn landed_docs(s3: &S3Server) -> usize {
    worker_support::landed(s3).len()
}
