//! Worker pipeline tests with an in-process worker, a real redis-server and a real s3s-fs server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::collections::HashSet;
use std::time::Duration;

use wharf_queue::streams;
use wharf_queue::Shard;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use wharf_testkit::statsd::StatsdListener;
use worker_support::*;

/// N submissions from the Enqueuer land in S3: bodies byte-identical, attributes intact, keys as
/// documented; then Redis holds nothing for them (acknowledged entries are deleted from the
/// shard streams, nothing pending, no dead letters) and a graceful stop withdraws the worker.
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

    assert_landed_exactly_once(&s3, &subs);
    let docs = landed(&s3);
    for sub in &subs {
        let uri = &sub.attributes["uri"];
        let doc = docs
            .iter()
            .find(|d| &d.attributes["uri"] == uri)
            .unwrap_or_else(|| panic!("{uri} missing"));
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

    // Acknowledged and deleted in the same round trip: Redis memory does not grow with the
    // number of documents processed.
    assert!(
        wait_drained(&redis, LONG).await,
        "entries not deleted after acknowledgement: backlog {}, in flight {}",
        backlog(&redis),
        inflight(&redis)
    );
    assert_eq!(dead_count(&redis), 0, "no dead letters");
    assert!(
        wharf_testkit::eventually(Duration::from_secs(10), || {
            let acked = metric_sum(&statsd.named("wharf.worker.entries.acked"));
            let batches = statsd.named("wharf.worker.batch.documents").len();
            let puts = statsd.named("wharf.s3.put.duration").len();
            let live = statsd.named("wharf.workers.live").len();
            async move { acked >= 150 && batches >= 4 && puts >= 4 && live >= 1 }
        })
        .await,
        "metrics missing: {:?}",
        statsd.lines().iter().take(20).collect::<Vec<_>>()
    );

    worker.stop().await.unwrap();
    assert_eq!(live_workers(&redis), 0, "liveness record withdrawn");
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

/// S3 outage (the server gone, connections refused): entries stay pending while S3 is down;
/// after it returns every document lands exactly once and no document is in two objects.
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
    assert!(wait_live(&redis, 1).await);
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
        "the worker holds every entry unacknowledged while S3 fails"
    );
    assert_eq!(backlog(&redis), 45, "nothing acknowledged while S3 is down");
    assert!(s3.keys().is_empty());

    s3.restart();
    assert!(
        wait_landed(&s3, 45, LONG).await,
        "documents lost after the outage"
    );
    assert_landed_exactly_once(&s3, &subs);
    assert!(wait_drained(&redis, LONG).await);
    worker.stop().await.unwrap();
}

/// Entries that cannot be decoded (a schema version this build does not know, attributes that
/// are not a JSON object of strings) go to dead letters on first sight with their reason and
/// every original field, and the good entry written after them lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_entries_are_dead_lettered_at_once() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[("QUEUE_SHARDS", "1"), ("BATCH_MAX_AGE_MS", "200")],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    assert!(wait_live(&redis, 1).await);

    let stream = Shard(0).stream();
    let good = [submission("ns", "t", "1", 7, 10)];
    let future: String = redis_query(
        &redis,
        &[
            "XADD", &stream, "*", "v", "3", "r", "ns/t/1/x", "at", "{}", "body", "b",
        ],
    );
    let bad_attributes: String = redis_query(
        &redis,
        &[
            "XADD", &stream, "*", "v", "2", "r", "ns/t/1/y", "at", "[1,2]", "body", "b",
        ],
    );
    enqueue(&settings, &good).await;

    assert!(
        wharf_testkit::eventually(LONG, || {
            let dead = dead_count(&redis);
            async move { dead == 2 }
        })
        .await,
        "undecodable entries not dead-lettered: {:?}",
        dead_letters(&redis)
    );
    let dead = dead_letters(&redis);
    let reasons: Vec<(Option<String>, Option<String>)> = dead
        .iter()
        .map(|d| (field(d, "dead_from"), field(d, "dead_reason")))
        .collect();
    assert_eq!(reasons[0].0.as_deref(), Some(future.as_str()));
    assert!(
        reasons[0]
            .1
            .as_deref()
            .is_some_and(|r| r.contains("schema version `3`")),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0.as_deref(), Some(bad_attributes.as_str()));
    assert!(
        reasons[1]
            .1
            .as_deref()
            .is_some_and(|r| r.contains("attributes")),
        "{reasons:?}"
    );
    assert_eq!(
        field(&dead[0], "at").as_deref(),
        Some("{}"),
        "original fields kept"
    );
    assert_eq!(
        field(&dead[1], "r").as_deref(),
        Some("ns/t/1/y"),
        "original fields kept"
    );

    assert!(
        wait_landed(&s3, 1, LONG).await,
        "the good entry behind them"
    );
    assert_landed_exactly_once(&s3, &good);
    assert!(wait_drained(&redis, LONG).await, "nothing left pending");
    worker.stop().await.unwrap();
}

/// A backlog built up while no worker ran, far larger than one fetch and than the held budget,
/// is consumed completely, over every shard.
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
    assert_eq!(backlog(&redis), total as u64);
    assert_eq!(queue_stats(&settings).await.waiting, total as u64);
    let worker = InProcessWorker::start(settings.clone(), nop_metrics());
    assert!(
        wait_drained(&redis, Duration::from_secs(180)).await,
        "backlog not consumed: {} left, {} in flight",
        backlog(&redis),
        inflight(&redis)
    );
    assert_landed_exactly_once(&s3, &subs);
    worker.stop().await.unwrap();
}

/// `QueueStats::fetch` on states built by hand: before any worker (no group: everything waits),
/// with entries delivered and pending, with dead letters and a live worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_on_a_known_state() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(redis.port(), &s3, &[("QUEUE_SHARDS", "4")]);
    let settings = settings(&vars);
    let empty = queue_stats(&settings).await;
    assert_eq!(empty, wharf_queue::QueueStats::default(), "nothing at all");

    let subs: Vec<_> = (0..20).map(|n| submission("ns", "t", "1", n, 10)).collect();
    let ids = enqueue(&settings, &subs).await;
    let per_shard = |shard: u16| ids.iter().filter(|e| e.shard == Shard(shard)).count() as u64;
    assert!(
        (0..4).all(|s| per_shard(s) > 0),
        "20 documents over 4 shards: {ids:?}"
    );
    let stats = queue_stats(&settings).await;
    assert_eq!(
        (
            stats.backlog,
            stats.waiting,
            stats.inflight,
            stats.dead,
            stats.live_workers
        ),
        (20, 20, 0, 0, 0),
        "no group yet: everything waits"
    );

    // A consumer takes 3 entries of every shard: they are in flight, the rest waits.
    let mut conn = wharf_queue::connect(&settings.redis).unwrap();
    let shards: Vec<Shard> = Shard::all(4).collect();
    streams::ensure_groups(&mut conn, &shards).await.unwrap();
    let mut delivered = Vec::new();
    for shard in &shards {
        delivered.extend(
            streams::read_new(
                &mut conn,
                std::slice::from_ref(shard),
                "tester",
                3,
                Duration::from_millis(10),
            )
            .await
            .unwrap(),
        );
    }
    let taken = delivered.len() as u64;
    assert_eq!(taken, (0..4).map(|s| per_shard(s).min(3)).sum::<u64>());
    let stats = queue_stats(&settings).await;
    assert_eq!(
        (stats.backlog, stats.waiting, stats.inflight, stats.dead),
        (20, 20 - taken, taken, 0)
    );
    assert_eq!(stats.inflight, inflight(&redis), "in flight = XPENDING");

    // Two of them dead-lettered, one acknowledged: out of the streams and out of flight.
    let first = &delivered[0];
    let second = &delivered[1];
    let third = &delivered[2];
    streams::dead_letter(
        &mut conn,
        first.shard,
        std::slice::from_ref(&first.id),
        "test",
    )
    .await
    .unwrap();
    streams::dead_letter(
        &mut conn,
        second.shard,
        std::slice::from_ref(&second.id),
        "test",
    )
    .await
    .unwrap();
    streams::ack(&mut conn, &[(third.shard, vec![third.id.clone()])])
        .await
        .unwrap();
    wharf_queue::liveness::publish(&mut conn, "tester", Duration::from_secs(60))
        .await
        .unwrap();
    let stats = queue_stats(&settings).await;
    assert_eq!(
        (
            stats.backlog,
            stats.waiting,
            stats.inflight,
            stats.dead,
            stats.live_workers
        ),
        (17, 20 - taken, taken - 3, 2, 1)
    );
    assert_eq!(
        (stats.backlog, stats.inflight, stats.dead),
        (backlog(&redis), inflight(&redis), dead_count(&redis)),
        "the figures are XLEN, XPENDING and the dead streams' XLEN"
    );
}
