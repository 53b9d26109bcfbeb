//! The docId ledger against the moments that write a document twice: a worker killed between S3 storing its batch and its acknowledgement, and a client retrying after a 503 whose write had in fact succeeded.
//!
//! Each scenario also runs with `DEDUP_WINDOW_MS=0`, where it must produce the duplicates the
//! ledger exists to prevent: otherwise a passing run would prove nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use worker_support::*;

/// Waits until the worker's MozLog events of one `Type` add up to `want` in `field` (logs are
/// written in batches, so they may trail what S3 already shows); returns the sum seen last.
async fn wait_logged_sum(process: &WharfProcess, event_type: &str, field: &str, want: u64) -> u64 {
    wharf_testkit::eventually(Duration::from_secs(10), || {
        let sum = logged_sum(process, event_type, field);
        async move { sum >= want }
    })
    .await;
    logged_sum(process, event_type, field)
}

/// The sum of one field over the worker's MozLog events of one `Type`.
fn logged_sum(process: &WharfProcess, event_type: &str, field: &str) -> u64 {
    process
        .output()
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["Type"] == event_type)
        .filter_map(|event| event["Fields"][field].as_u64())
        .sum()
}

/// Documents in S3 per (uri, body).
fn copies(s3: &S3Server) -> BTreeMap<(String, Vec<u8>), usize> {
    let mut out = BTreeMap::new();
    for doc in landed(s3) {
        *out.entry((doc.attributes["uri"].clone(), doc.body))
            .or_insert(0) += 1;
    }
    out
}

/// Worker A is killed after S3 stored its batch of 10 but before it heard so (the answer is
/// held back), so its entries stay pending. Worker B takes them over with 5 new documents and
/// writes all 15 as one batch, a different object from A's.
async fn killed_between_put_and_ack(window_ms: &str) -> (S3Server, u64) {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let common = [
        ("DEDUP_WINDOW_MS", window_ms),
        ("WORKER_CLAIM_IDLE_MS", "4000"),
    ];
    let mut a_vars = common.to_vec();
    a_vars.extend([("BATCH_MAX_DOCUMENTS", "10"), ("BATCH_MAX_AGE_MS", "60000")]);
    let vars_a = worker_env(redis.port(), &s3, &a_vars);
    let settings = settings(&vars_a);

    s3.set_withholding_put_answers(true);
    let mut a = spawn_worker(&vars_a);
    assert!(wait_live(&redis, 1).await, "{:?}", a.output());
    let first: Vec<_> = (0..10)
        .map(|n| submission("ns", "t", "1", n, 200))
        .collect();
    enqueue(&settings, &first).await;
    let stored = wharf_testkit::eventually(LONG, || {
        let n = s3.keys().len();
        async move { n == 1 }
    })
    .await;
    assert!(stored, "A's batch never reached S3: {:?}", a.output());
    a.signal("KILL");
    assert!(a.wait_exit(Duration::from_secs(5)).is_some());
    s3.set_withholding_put_answers(false);
    assert_eq!(inflight(&redis), 10, "A's entries are still pending");

    let later: Vec<_> = (10..15)
        .map(|n| submission("ns", "t", "1", n, 200))
        .collect();
    enqueue(&settings, &later).await;
    let mut b_vars = common.to_vec();
    // B's batch stays open long enough to hold A's entries when it takes them over.
    b_vars.extend([
        ("BATCH_MAX_DOCUMENTS", "100"),
        ("BATCH_MAX_AGE_MS", "15000"),
    ]);
    let mut b = spawn_worker(&worker_env(redis.port(), &s3, &b_vars));
    assert!(
        wait_landed(&s3, 15, LONG).await,
        "not every document landed: {:?}",
        b.output()
    );
    assert!(wait_drained(&redis, LONG).await, "entries left pending");
    b.terminate(Duration::from_secs(10));
    // The last line a stopping worker logs: everything before it has been read too.
    let stopped = wharf_testkit::eventually(Duration::from_secs(10), || {
        let n = b.count("\"worker stopped\"");
        async move { n > 0 }
    })
    .await;
    assert!(stopped, "{:?}", b.output());
    let dropped = logged_sum(&b, "worker.dedup", "dropped");
    (s3, dropped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_put_and_ack_writes_nothing_twice() {
    let (s3, dropped) = killed_between_put_and_ack("3600000").await;
    let docs = landed(&s3);
    assert_eq!(duplicates(&docs), Vec::new(), "documents written twice");
    assert_eq!(by_uri(&docs).len(), 15);
    assert_eq!(
        dropped, 10,
        "B drops A's 10 documents, already in A's object"
    );
    assert_eq!(s3.keys().len(), 2, "A's object and B's, with the 5 new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ledger_the_same_crash_writes_documents_twice() {
    let (s3, dropped) = killed_between_put_and_ack("0").await;
    let docs = landed(&s3);
    assert_eq!(by_uri(&docs).len(), 15);
    assert_eq!(
        duplicates(&docs).len(),
        10,
        "A's 10 documents, in A's object and in B's"
    );
    assert_eq!(dropped, 0);
}

/// The web role answers 503 when no replica confirms a write (`REDIS_MIN_REPLICAS_ACK=1`, and
/// this Redis has none), yet the entry is in the stream: the case of a client retrying a
/// submission that had in fact been stored. The client sends the same document three times,
/// then the same docId with another body.
async fn client_retries_after_503(window_ms: &str) -> (S3Server, WharfProcess) {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(
        redis.port(),
        &[("REDIS_MIN_REPLICAS_ACK", "1"), ("REDIS_TIMEOUT_MS", "200")],
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/submit/ns/t/1/{}", doc_id(7));
    for body in ["first body", "first body", "first body", "second body"] {
        let response = client
            .post(&url)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("post: {e}"));
        assert_eq!(response.status(), 503, "no replica confirms the write");
    }
    // Each submission reaches the worker in a batch of its own, as retries minutes apart would.
    let worker = spawn_worker(&worker_env(
        redis.port(),
        &s3,
        &[("DEDUP_WINDOW_MS", window_ms), ("BATCH_MAX_DOCUMENTS", "1")],
    ));
    assert!(
        wait_drained(&redis, LONG).await,
        "entries left: {:?}",
        worker.output()
    );
    (s3, worker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_retrying_after_a_503_lands_its_document_once() {
    let (s3, worker) = client_retries_after_503("3600000").await;
    let uri = format!("/submit/ns/t/1/{}", doc_id(7));
    let expected: BTreeMap<(String, Vec<u8>), usize> = [
        ((uri.clone(), b"first body".to_vec()), 1),
        ((uri, b"second body".to_vec()), 1),
    ]
    .into();
    assert_eq!(copies(&s3), expected, "{:?}", worker.output());
    assert_eq!(
        wait_logged_sum(&worker, "worker.dedup", "dropped", 2).await,
        2
    );
    assert_eq!(
        wait_logged_sum(&worker, "worker.dedup", "conflicts", 1).await,
        1,
        "the same docId with another body is kept and counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ledger_a_retried_document_lands_as_often_as_it_was_sent() {
    let (s3, _worker) = client_retries_after_503("0").await;
    let uri = format!("/submit/ns/t/1/{}", doc_id(7));
    let expected: BTreeMap<(String, Vec<u8>), usize> = [
        ((uri.clone(), b"first body".to_vec()), 3),
        ((uri, b"second body".to_vec()), 1),
    ]
    .into();
    assert_eq!(copies(&s3), expected);
}
