//! End to end through HTTP: the real `wharf web` and `wharf worker` processes, submissions posted to /submit, and `wharf canary`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_queue::Shard;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use worker_support::*;

/// Headers sent with every submission, and the attribute each one becomes.
const HEADERS: &[(&str, &str, &str)] = &[
    ("date", "date", "Mon, 06 May 2024 07:08:09 GMT"),
    ("dnt", "dnt", "1"),
    ("x-forwarded-for", "x_forwarded_for", "10.1.2.3, 10.4.5.6"),
    ("x-pingsender-version", "x_pingsender_version", "1.0"),
    ("x-debug-id", "x_debug_id", "wharf-debug"),
    (
        "x-pipeline-proxy",
        "x_pipeline_proxy",
        "2024-05-06T07:08:09Z",
    ),
    ("x-telemetry-agent", "x_telemetry_agent", "wharf-test-agent"),
    ("x-source-tags", "x_source_tags", "automation, perf"),
    ("x-lb-tags", "x_lb_tags", "TLSv1.3, AES128"),
];

/// One submission as sent over HTTP and the attributes the web role must attach to it.
struct Sent {
    path: String,
    route: (&'static str, &'static str, &'static str),
    expected: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// Posts `count` submissions (two routes, every edge header, a query string) to `wharf web`.
async fn post_submissions(port: u16, count: usize) -> Vec<Sent> {
    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for n in 0..count {
        let route = if n % 2 == 0 {
            ("eng-workflow", "build", "1")
        } else {
            ("other", "event", "3")
        };
        let (ns, ty, ver) = route;
        let path = format!("/submit/{ns}/{ty}/{ver}/{}", doc_id(n));
        let body: Vec<u8> = (0..(1 + n * 31 % 2000))
            .map(|i| ((i * 11 + n) % 256) as u8)
            .collect();
        let user_agent = format!("wharf-test/{n}");
        let mut request = client
            .post(format!("http://127.0.0.1:{port}{path}?v=4&n={n}"))
            .header("user-agent", &user_agent)
            .body(body.clone());
        let mut expected: BTreeMap<String, String> = [
            ("uri", path.clone()),
            ("args", format!("v=4&n={n}")),
            ("method", "POST".into()),
            ("protocol", "HTTP/1.1".into()),
            ("remote_addr", "127.0.0.1".into()),
            ("host", format!("127.0.0.1:{port}")),
            ("content_length", body.len().to_string()),
            ("user_agent", user_agent),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (header, attribute, value) in HEADERS {
            request = request.header(*header, *value);
            expected.insert((*attribute).to_string(), (*value).to_string());
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("post: {e}"));
        assert!(
            response.status().is_success(),
            "{} for {path}",
            response.status()
        );
        sent.push(Sent {
            path,
            route,
            expected,
            body,
        });
    }
    sent
}

/// Submissions posted to the web role's HTTP endpoint land in S3 exactly once: every body
/// byte-identical, every attribute the edge records, the key layout as documented; and with
/// several shards, every shard carried some of them. `compression` is `OUTPUT_COMPRESSION`.
async fn http_submissions_land_intact(shards: u16, compression: &str) {
    let shards_text = shards.to_string();
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(
        redis.port(),
        &[("QUEUE_SHARDS", &shards_text), ("DROP_CLIENT_IP", "false")],
    )
    .await;
    let worker = spawn_worker(&worker_env(
        redis.port(),
        &s3,
        &[
            ("QUEUE_SHARDS", &shards_text),
            ("BATCH_MAX_AGE_MS", "500"),
            ("BATCH_MAX_DOCUMENTS", "25"),
            ("OUTPUT_COMPRESSION", compression),
        ],
    ));

    let sent = post_submissions(port, 60).await;
    assert!(
        wait_landed(&s3, sent.len(), LONG).await,
        "worker output: {:?}",
        worker.output()
    );
    let docs = landed(&s3);
    assert_eq!(duplicates(&docs), Vec::new(), "documents written twice");
    assert_eq!(docs.len(), sent.len());
    for sent in &sent {
        let path = &sent.path;
        let doc = docs
            .iter()
            .find(|d| &d.attributes["uri"] == path)
            .unwrap_or_else(|| panic!("{path} not in S3"));
        assert_eq!(doc.body, sent.body, "body of {path}");
        let mut attributes = doc.attributes.clone();
        let stamp = attributes
            .remove("submission_timestamp")
            .unwrap_or_else(|| panic!("no submission_timestamp for {path}"));
        assert!(
            chrono_like(&stamp),
            "submission_timestamp {stamp:?} is not YYYY-MM-DDTHH:MM:SS.ffffffZ"
        );
        assert_eq!(attributes, sent.expected, "attributes of {path}");
        let parts: Vec<&str> = doc.key.split('/').collect();
        assert_eq!(parts.len(), 6, "{}", doc.key);
        assert_eq!((parts[0], parts[1], parts[2]), sent.route);
        assert_eq!(parts[3], &stamp[..10], "date of the key: {}", doc.key);
        assert_eq!(parts[4], &stamp[11..13], "hour of the key: {}", doc.key);
        let suffix = match compression {
            "zstd" => ".ndjson.zst",
            _ => ".ndjson.gz",
        };
        assert!(parts[5].ends_with(suffix), "{} is not {suffix}", doc.key);
    }

    let added: Vec<u64> = Shard::all(shards)
        .map(|shard| entries_added(&redis, shard))
        .collect();
    eprintln!("entries per shard with QUEUE_SHARDS={shards}: {added:?}");
    assert_eq!(added.iter().sum::<u64>(), sent.len() as u64);
    assert!(
        added.iter().all(|&n| n > 0),
        "a shard got nothing: {added:?}"
    );
    assert!(
        wait_drained(&redis, LONG).await,
        "entries left in the queue"
    );
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`
fn chrono_like(stamp: &str) -> bool {
    let b = stamp.as_bytes();
    b.len() == 27
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[26] == b'Z'
        && stamp
            .chars()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19 | 26) || c.is_ascii_digit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_submissions_land_intact_with_one_shard() {
    http_submissions_land_intact(1, "gzip").await;
}

/// zstd objects decode byte for byte like gzip ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_submissions_land_intact_as_zstd() {
    http_submissions_land_intact(4, "zstd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_submissions_land_intact_with_four_shards() {
    http_submissions_land_intact(4, "gzip").await;
}

async fn canary(vars: &[(String, String)], url: &str, timeout_s: u64) -> (bool, String) {
    let timeout = timeout_s.to_string();
    run_wharf(&["canary", "--url", url, "--timeout", &timeout], vars).await
}

/// `wharf canary` succeeds against a live web+worker pair (and cleans up), and fails clearly
/// when no worker is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_succeeds_with_a_worker_and_fails_clearly_without() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(redis.port(), &[]).await;
    let vars = worker_env(redis.port(), &s3, &[("BATCH_MAX_AGE_MS", "300")]);
    let mut worker = spawn_worker(&vars);
    let url = format!("http://127.0.0.1:{port}");

    let (ok, text) = canary(&vars, &url, 30).await;
    assert!(ok, "canary failed with a live pair: {text}");
    assert!(text.contains("landed in S3"), "{text}");
    assert!(
        s3.keys().is_empty(),
        "the canary deletes what it wrote: {:?}",
        s3.keys()
    );

    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).is_some());
    let (ok, text) = canary(&vars, &url, 3).await;
    assert!(!ok, "canary succeeded without a worker: {text}");
    assert!(text.contains("did not reach"), "unclear failure: {text}");
}

/// With `CANARY_TOKEN` set, outside traffic cannot write to the canary's namespace, while
/// `wharf canary`, which sends the token, still lands and finds its document by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_canary_token_only_the_canary_writes_to_its_namespace() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let token = ("CANARY_TOKEN", "canary-secret");
    let (_web, port) = start_web(redis.port(), &[token]).await;
    let vars = worker_env(redis.port(), &s3, &[("BATCH_MAX_AGE_MS", "300"), token]);
    let _worker = spawn_worker(&vars);
    let url = format!("http://127.0.0.1:{port}");

    let client = reqwest::Client::new();
    let submit = format!(
        "{url}/submit/wharf-canary/canary/1/{}",
        "4f0e9c1a-2b7d-4c3e-9a51-6d2f8e0b7c44"
    );
    for given in [None, Some("wrong")] {
        let mut request = client.post(&submit).body("{}");
        if let Some(t) = given {
            request = request.header("X-Canary-Token", t);
        }
        let status = request.send().await.unwrap().status();
        assert_eq!(status, 404, "token {given:?}");
    }
    let status = client
        .post(&submit)
        .header("X-Canary-Token", "canary-secret")
        .body("{}")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "the right token is accepted");

    let (ok, text) = canary(&vars, &url, 30).await;
    assert!(ok, "canary failed with its token: {text}");
    let without: Vec<(String, String)> = vars
        .iter()
        .filter(|(k, _)| k != "CANARY_TOKEN")
        .cloned()
        .collect();
    let (ok, text) = canary(&without, &url, 5).await;
    assert!(!ok, "canary without the token succeeded: {text}");
    assert!(text.contains("404"), "{text}");
}
