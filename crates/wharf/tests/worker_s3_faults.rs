//! S3 answering with errors, as the real service does: a 503 outage with workers joining, 400
//! `RequestTimeout` and 403 `RequestTimeTooSkewed` (transient, whatever their status), and a
//! permanent 403 `AccessDenied` (dead letters after `S3_REFUSAL_GRACE_MS`, then `wharf redrive`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::time::{Duration, Instant};

use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::{Fault, S3Server};
use wharf_testkit::statsd::StatsdListener;
use worker_support::*;

const DOC_TYPES: &[&str] = &[
    "main", "event", "crash", "health", "update", "sync", "metrics",
];

/// S3 outage: 1,500 submissions over 7 docTypes, 2 workers with a fetch size of 20, S3
/// answering `503 SlowDown` for 25 s and a third worker started halfway through. No document is
/// written twice, none is dead-lettered (even though a single counted refusal would do it), and
/// everything lands after recovery.
///
/// The held budget (1,000 documents) is a fifth of the default yet more than half the
/// submissions, so the two workers keep reading and claiming throughout the outage: only the
/// renewal of their own entries keeps each from taking over the other's. (With the renewal in
/// `held::renew_loop` disabled, this test saw 954 of the 1,500 documents written twice.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_503_outage_with_a_worker_joining_writes_nothing_twice() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("WORKER_FETCH_SIZE", "20"),
            ("WORKER_MAX_HELD_DOCUMENTS", "1000"),
            ("WORKER_MAX_HELD_BYTES", "1048576"),
            ("BATCH_MAX_AGE_MS", "1000"),
            ("S3_REFUSAL_GRACE_MS", "0"),
            ("MAX_ATTEMPTS", "1"),
        ],
    );
    let settings = settings(&vars);
    let mut workers = vec![spawn_worker(&vars), spawn_worker(&vars)];
    assert!(wait_live(&redis, 2).await, "{:?}", workers[0].output());

    s3.set_fault(Fault::SlowDown);
    let outage = Instant::now();
    let subs = submissions("telemetry", DOC_TYPES, 1500, 300);
    enqueue(&settings, &subs).await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let holding = pending_by_consumer(&redis)
                .values()
                .filter(|&&n| n > 0)
                .count();
            async move { holding == 2 }
        })
        .await,
        "both workers should hold entries: {:?}",
        pending_by_consumer(&redis)
    );

    let no_dead = || dead_count(&redis) == 0;
    assert_throughout(
        outage + Duration::from_millis(12_500),
        "dead letters during the outage",
        no_dead,
    )
    .await;
    workers.push(spawn_worker(&vars));
    assert_throughout(
        outage + Duration::from_secs(25),
        "dead letters during the outage",
        no_dead,
    )
    .await;
    eprintln!(
        "503 outage: held per worker at the end of the outage {:?}; S3 keys {}",
        pending_by_consumer(&redis),
        s3.keys().len()
    );
    assert!(s3.keys().is_empty(), "nothing written during the outage");

    s3.clear_fault();
    let recovered = Instant::now();
    let all_landed = wait_landed(&s3, subs.len(), LONG).await;
    let docs = landed(&s3);
    let twice = duplicates(&docs);
    eprintln!(
        "503 outage: {} of {} documents in S3 {:?} after recovery; duplicate documents: {} {:?}",
        by_uri(&docs).len(),
        subs.len(),
        recovered.elapsed(),
        twice.len(),
        twice.iter().take(10).collect::<Vec<_>>()
    );
    assert!(all_landed, "documents missing after recovery");
    assert!(
        wait_drained(&redis, LONG).await,
        "entries left in the queue"
    );
    assert_eq!(
        dead_count(&redis),
        0,
        "dead letters: {:?}",
        dead_letters(&redis)
    );
    assert_landed_exactly_once(&s3, &subs);
    assert!(wait_live(&redis, 3).await, "the third worker joined");
    for worker in &mut workers {
        assert_eq!(worker.count("worker started"), 1, "{:?}", worker.output());
        worker.terminate(Duration::from_secs(10));
    }
}

/// S3 answers every request with `fault` for 60 s. With a short refusal grace and
/// `MAX_ATTEMPTS=2`, treating it as a refusal would dead-letter within about a second; a
/// transient error must dead-letter nothing, and everything lands once S3 accepts again. (With
/// `RequestTimeout` classified as a refusal, the RequestTimeout test fails within 2 s.)
async fn transient_refusal_for_a_minute_dead_letters_nothing(fault: Fault) {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("S3_REFUSAL_GRACE_MS", "500"),
            ("MAX_ATTEMPTS", "2"),
            ("BATCH_MAX_AGE_MS", "300"),
            ("BATCH_MAX_DOCUMENTS", "10"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), udp_metrics(statsd.port()));
    assert!(wait_live(&redis, 1).await);

    s3.set_fault(fault);
    let started = Instant::now();
    let subs = submissions("ns", &["a", "b"], 30, 100);
    enqueue(&settings, &subs).await;
    assert_throughout(
        started + Duration::from_secs(60),
        &format!("{} must not dead-letter", fault.code()),
        || dead_count(&redis) == 0,
    )
    .await;
    let errors = statsd.named("wharf.s3.put.errors");
    let transient = tagged(&errors, "kind:transient").len();
    let refused = tagged(&errors, "kind:refused").len();
    eprintln!(
        "{} for 60 s: {transient} transient and {refused} refused PutObject errors, {} dead letters",
        fault.code(),
        dead_count(&redis)
    );
    assert!(
        transient >= 10,
        "S3 was answering {}: {errors:?}",
        fault.code()
    );
    assert_eq!(refused, 0, "{} counted as a refusal", fault.code());
    assert_eq!(
        inflight(&redis),
        subs.len() as u64,
        "every entry still held"
    );

    s3.clear_fault();
    assert!(wait_landed(&s3, subs.len(), LONG).await);
    assert!(wait_drained(&redis, LONG).await);
    assert_landed_exactly_once(&s3, &subs);
    assert_eq!(dead_count(&redis), 0);
    worker.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_request_timeout_for_a_minute_dead_letters_nothing() {
    transient_refusal_for_a_minute_dead_letters_nothing(Fault::RequestTimeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_request_time_too_skewed_for_a_minute_dead_letters_nothing() {
    transient_refusal_for_a_minute_dead_letters_nothing(Fault::RequestTimeTooSkewed).await;
}

/// A permanent `403 AccessDenied`: no dead letters before `S3_REFUSAL_GRACE_MS` (4 s) of
/// refusals, then every entry of the refused batches after `MAX_ATTEMPTS` counted refusals,
/// with the reason; `wharf redrive` moves them back and, once S3 accepts again, they land
/// exactly once. (With the grace ignored, dead letters appear within a second and the test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_access_denied_dead_letters_after_the_grace_and_redrive_lands_them() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let statsd = StatsdListener::start();
    let grace = Duration::from_secs(4);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("S3_REFUSAL_GRACE_MS", "4000"),
            ("MAX_ATTEMPTS", "2"),
            ("BATCH_MAX_AGE_MS", "200"),
            ("BATCH_MAX_DOCUMENTS", "10"),
        ],
    );
    let settings = settings(&vars);
    let worker = InProcessWorker::start(settings.clone(), udp_metrics(statsd.port()));
    assert!(wait_live(&redis, 1).await);

    s3.set_fault(Fault::AccessDenied);
    // Refusals start after this instant, so no dead letter may exist before it plus the grace.
    let before_first_refusal = Instant::now();
    let subs: Vec<_> = (0..3).map(|n| submission("ns", "t", "1", n, 20)).collect();
    enqueue(&settings, &subs).await;
    assert_throughout(
        before_first_refusal + grace,
        "dead letters before S3_REFUSAL_GRACE_MS",
        || dead_count(&redis) == 0,
    )
    .await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let dead = dead_count(&redis);
            async move { dead == 3 }
        })
        .await,
        "entries refused by S3 are dead-lettered after the grace and MAX_ATTEMPTS"
    );
    eprintln!(
        "AccessDenied: dead-lettered {:?} after the entries were queued (grace {grace:?})",
        before_first_refusal.elapsed()
    );
    for dead in dead_letters(&redis) {
        let reason = field(&dead, "dead_reason").unwrap_or_default();
        assert!(
            reason.contains("S3 refused") && reason.contains("AccessDenied"),
            "{reason}"
        );
    }
    assert_eq!(
        (backlog(&redis), inflight(&redis)),
        (0, 0),
        "moved out of the streams"
    );
    assert!(
        wharf_testkit::eventually(Duration::from_secs(10), || {
            let dead = metric_sum(&statsd.named("wharf.worker.entries.dead_lettered"));
            let errors = statsd.named("wharf.s3.put.errors");
            let refused = tagged(&errors, "kind:refused").len();
            // Every refused PutObject is timed too, as an error: a latency graph of successes
            // alone would look healthy throughout an outage.
            let timed = statsd.named("wharf.s3.put.duration");
            let timed_errors = tagged(&timed, "outcome:error").len();
            async move { dead >= 3 && refused >= 2 && timed_errors == errors.len() }
        })
        .await,
        "metrics: {:?}",
        statsd.lines()
    );
    let timed = statsd.named("wharf.s3.put.duration");
    assert!(
        tagged(&timed, "outcome:ok").is_empty(),
        "no PutObject succeeded while S3 refused them all: {timed:?}"
    );
    assert!(s3.keys().is_empty());

    s3.clear_fault();
    let (ok, text) = run_wharf(&["redrive"], &vars).await;
    assert!(ok, "wharf redrive failed: {text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("3 ") && l.contains("moved back")),
        "wharf redrive should report 3 moved: {text}"
    );
    assert!(
        wait_landed(&s3, 3, LONG).await,
        "re-driven entries land once the cause is fixed"
    );
    assert!(
        wharf_testkit::eventually(Duration::from_secs(10), || {
            let timed = statsd.named("wharf.s3.put.duration");
            async move { !tagged(&timed, "outcome:ok").is_empty() }
        })
        .await,
        "the successful PutObject is timed as ok: {:?}",
        statsd.named("wharf.s3.put.duration")
    );
    assert!(wait_drained(&redis, LONG).await);
    assert_landed_exactly_once(&s3, &subs);
    assert_eq!(dead_count(&redis), 0);
    worker.stop().await.unwrap();
}
