//! Worker pipeline tests with an in-process worker, a real redis-server and a real s3s-fs server.

mod worker_support;

use std::collections::HashSet;
use std::time::Duration;

use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use wharf_testkit::statsd::StatsdListener;
use worker_support::*;

const LONG: Duration = Duration::from_secs(60);

/// N submissions from the Enqueuer land in S3: bodies byte-identical, attributes intact, keys as
/// documented; then Redis holds nothing for them (acknowledged jobs are purged) and a graceful
/// stop unregisters the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_every_document_lands_intact() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("BATCH_MAX_DOCUMENTS", "40"),
            ("BATCH_MAX_AGE_MS", "500"),
            ("S3_PREFIX", "landing/"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), udp_metrics(statsd.port()));

    let mut subs = Vec::new();
    for n in 0..150 {
        let (ns, ty) = if n % 2 == 0 {
            ("telemetry", "main")
        } else {
            ("eng-workflow", "build")
        };
        subs.push(submission(ns, ty, "4", n, 1 + (n * 37) % 3000));
    }
    enqueue(&settings, &subs).await;
    assert!(
        wait_landed(&s3, subs.len(), LONG).await,
        "not every submission landed"
    );

    let docs = landed(&s3);
    assert_eq!(docs.len(), subs.len(), "no duplicates without failures");
    for sub in &subs {
        let uri = &sub.attributes["uri"];
        let doc = docs
            .iter()
            .find(|d| &d.attributes["uri"] == uri)
            .unwrap_or_else(|| panic!("{uri} missing"));
        assert_eq!(doc.attributes, sub.attributes, "attributes of {uri}");
        assert_eq!(doc.body, sub.body().unwrap(), "body of {uri}");
        let parts: Vec<&str> = doc.key.split('/').collect();
        assert_eq!(parts.len(), 7, "key layout: {}", doc.key);
        assert_eq!(parts[0], "landing");
        assert_eq!(parts[1], sub.route.namespace);
        assert_eq!(parts[2], sub.route.doc_type);
        assert_eq!(parts[3], sub.route.doc_version);
        assert_eq!(parts[4], "2024-05-06", "date from submission_timestamp");
        assert_eq!(parts[5], "07", "hour from submission_timestamp");
        let file = parts[6]
            .strip_suffix(".ndjson.gz")
            .unwrap_or_else(|| panic!("suffix: {}", doc.key));
        assert_eq!(file.len(), 32);
        assert!(file.chars().all(|c| c.is_ascii_hexdigit()));
    }
    let objects: HashSet<&str> = docs.iter().map(|d| d.key.as_str()).collect();
    assert!(
        objects.len() >= 4,
        "batches of at most 40 across two groups"
    );

    // Acknowledged, then purged: Redis memory does not grow with the number of jobs processed.
    assert!(
        wharf_testkit::eventually(LONG, || {
            let data: u64 = redis_query(&redis, &["HLEN", "wharf_submissions:data"]);
            let done: u64 = redis_query(&redis, &["SCARD", "wharf_submissions:done"]);
            let metas: Vec<String> = redis_query(&redis, &["KEYS", "wharf_submissions:meta:*"]);
            let fl = inflight(&redis);
            async move { data == 0 && done == 0 && metas.is_empty() && fl == 0 }
        })
        .await,
        "job data/meta/done entries were not purged after acknowledgement"
    );
    assert!(
        wharf_testkit::eventually(Duration::from_secs(10), || {
            let processed = statsd.named("wharf.worker.jobs.processed").len();
            let batches = statsd.named("wharf.worker.batch.documents").len();
            let puts = statsd.named("wharf.s3.put.duration").len();
            let live = statsd.named("wharf.workers.live").len();
            async move { processed >= 150 && batches >= 4 && puts >= 4 && live >= 1 }
        })
        .await,
        "metrics missing: {:?}",
        statsd.lines().iter().take(20).collect::<Vec<_>>()
    );

    worker.stop().await.unwrap();
    let workers: Vec<String> =
        redis_query(&redis, &["ZRANGE", "wharf_submissions:workers", "0", "-1"]);
    assert!(
        workers.is_empty(),
        "graceful stop unregisters the worker: {workers:?}"
    );
    let live: u64 = redis_query(&redis, &["ZCARD", "wharf:workers:live"]);
    assert_eq!(live, 0, "liveness record withdrawn");
}

/// Count limit: 30 documents with BATCH_MAX_DOCUMENTS=10 (age and bytes far away) make 3 objects of 10.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_by_count() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("BATCH_MAX_DOCUMENTS", "10"),
            ("BATCH_MAX_AGE_MS", "600000"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    let subs: Vec<_> = (0..30).map(|n| submission("ns", "t", "1", n, 10)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 30, LONG).await);
    let keys = s3.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    for key in keys {
        assert_eq!(landed(&s3).iter().filter(|d| d.key == key).count(), 10);
    }
    worker.stop().await.unwrap();
}

/// Byte limit: 300-byte bodies with BATCH_MAX_BYTES=1000 close a batch at its 4th document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_by_bytes() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("BATCH_MAX_BYTES", "1000"),
            ("BATCH_MAX_AGE_MS", "600000"),
            ("BATCH_MAX_DOCUMENTS", "1000"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    let subs: Vec<_> = (0..8).map(|n| submission("ns", "t", "1", n, 300)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 8, LONG).await);
    let docs = landed(&s3);
    let keys = s3.keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    for key in keys {
        assert_eq!(docs.iter().filter(|d| d.key == key).count(), 4);
    }
    worker.stop().await.unwrap();
}

/// Age limit: 5 documents, far below every other limit, are flushed together once the batch is old enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_by_age() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("BATCH_MAX_AGE_MS", "1500"),
            ("BATCH_MAX_DOCUMENTS", "1000"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    let subs: Vec<_> = (0..5).map(|n| submission("ns", "t", "1", n, 10)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 5, LONG).await);
    assert_eq!(s3.keys().len(), 1, "one object: {:?}", s3.keys());
    worker.stop().await.unwrap();
}

/// S3 outage: jobs stay unacknowledged while S3 is down; after it returns every document lands
/// exactly once and no document is in two objects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_loses_nothing_and_duplicates_nothing() {
    let redis = RedisServer::start();
    let mut s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let vars = worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_DOCUMENTS", "10"), ("BATCH_MAX_AGE_MS", "300")],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), udp_metrics(statsd.port()));
    // Wait for the worker to be up (it checks the bucket at start-up), then take S3 away.
    assert!(
        wharf_testkit::eventually(LONG, || {
            let live: u64 = redis_query(&redis, &["ZCARD", "wharf:workers:live"]);
            async move { live == 1 }
        })
        .await
    );
    s3.stop();
    let subs: Vec<_> = (0..45).map(|n| submission("ns", "t", "1", n, 50)).collect();
    enqueue(&settings, &subs).await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let errors = statsd.named("wharf.s3.put.errors").len();
            let fl = inflight(&redis);
            async move { errors >= 3 && fl == 45 }
        })
        .await,
        "the worker holds every job unacknowledged while S3 fails"
    );
    let done: u64 = redis_query(&redis, &["SCARD", "wharf_submissions:done"]);
    assert_eq!(done, 0, "nothing acknowledged while S3 is down");
    assert!(s3.keys().is_empty());

    s3.restart();
    assert!(
        wait_landed(&s3, 45, LONG).await,
        "documents lost after the outage"
    );
    let docs = landed(&s3);
    assert_eq!(docs.len(), 45, "no document written twice");
    assert!(by_uri(&docs).values().all(|&c| c == 1));
    worker.stop().await.unwrap();
}

/// A permanently failing job is dead-lettered after MAX_ATTEMPTS (counted), a malformed one at
/// once; `redrive` puts them back and, once the cause is fixed, they land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_and_redrive() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("MAX_ATTEMPTS", "2"),
            ("BATCH_MAX_AGE_MS", "200"),
            ("BATCH_MAX_DOCUMENTS", "10"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), udp_metrics(statsd.port()));
    assert!(
        wharf_testkit::eventually(LONG, || {
            let live: u64 = redis_query(&redis, &["ZCARD", "wharf:workers:live"]);
            async move { live == 1 }
        })
        .await
    );
    s3.set_denying(true);
    let subs: Vec<_> = (0..3).map(|n| submission("ns", "t", "1", n, 20)).collect();
    enqueue(&settings, &subs).await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let dead: u64 = redis_query(&redis, &["SCARD", "wharf_submissions:dead"]);
            async move { dead == 3 }
        })
        .await,
        "jobs refused by S3 are dead-lettered after MAX_ATTEMPTS"
    );
    assert!(
        wharf_testkit::eventually(Duration::from_secs(10), || {
            let dead = statsd.named("wharf.worker.jobs.dead_lettered").len();
            let retried = statsd.named("wharf.worker.jobs.retried").len();
            async move { dead >= 3 && retried >= 3 }
        })
        .await
    );
    assert!(s3.keys().is_empty());

    s3.set_denying(false);
    let moved = wharf_worker::redrive(&settings).await.unwrap();
    assert_eq!(moved, 3);
    assert!(
        wait_landed(&s3, 3, LONG).await,
        "re-driven jobs land once the cause is fixed"
    );
    let dead: u64 = redis_query(&redis, &["SCARD", "wharf_submissions:dead"]);
    assert_eq!(dead, 0);
    worker.stop().await.unwrap();
}

/// A malformed job (valid JSON, data not base64) goes to the dead set on its first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_job_is_dead_lettered_at_once() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(redis.port(), &s3, &[("MAX_ATTEMPTS", "10")]);
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    let mut bad = submission("ns", "t", "1", 1, 10);
    bad.data = "%%% not base64 %%%".into();
    enqueue(&settings, &[bad]).await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let dead: u64 = redis_query(&redis, &["SCARD", "wharf_submissions:dead"]);
            async move { dead == 1 }
        })
        .await
    );
    let ids: Vec<String> = redis_query(&redis, &["SMEMBERS", "wharf_submissions:dead"]);
    let attempts: String = redis_query(
        &redis,
        &[
            "HGET",
            &format!("wharf_submissions:meta:{}", ids[0]),
            "attempts",
        ],
    );
    assert_eq!(attempts, "1");
    worker.stop().await.unwrap();
}

/// A backlog built up while no worker ran, larger than apalis-redis's fetch script can promote at
/// once (its Lua `unpack` fails above about 8000 ids), is consumed completely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_backlog_queued_without_workers_is_consumed() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("WORKER_FETCH_SIZE", "500"),
            ("BATCH_MAX_DOCUMENTS", "500"),
            ("BATCH_MAX_AGE_MS", "500"),
        ],
    );
    let settings = settings(&vars);
    let total = 9000;
    let subs: Vec<_> = (0..total)
        .map(|n| submission("ns", "t", "1", n, 16))
        .collect();
    for chunk in subs.chunks(1000) {
        enqueue(&settings, chunk).await;
    }
    let scheduled: u64 = redis_query(&redis, &["ZCARD", "wharf_submissions:scheduled"]);
    assert_eq!(scheduled, total as u64);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    assert!(
        wharf_testkit::eventually(Duration::from_secs(180), || {
            let active: u64 = redis_query(&redis, &["LLEN", "wharf_submissions:active"]);
            let scheduled: u64 = redis_query(&redis, &["ZCARD", "wharf_submissions:scheduled"]);
            let fl = inflight(&redis);
            async move { active == 0 && scheduled == 0 && fl == 0 }
        })
        .await,
        "backlog not consumed"
    );
    assert_eq!(by_uri(&landed(&s3)).len(), total);
    worker.stop().await.unwrap();
}
