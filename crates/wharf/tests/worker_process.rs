//! Tests of the real `wharf worker` process: SIGKILL recovery, SIGTERM drain, start-up without its dependencies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::time::{Duration, Instant};

use wharf_queue::Shard;
use wharf_testkit::harness::{wharf_test, Env, Role, Tools};
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use wharf_testkit::sentry::SentryListener;
use worker_support::*;

/// SIGKILL mid-batch (two batches written, five documents in an open batch), then a second
/// worker: with the shipped defaults for the claim idle time and the batch age, every submission
/// lands within 30 s of the kill. Duplicates are possible (at least once: a kill between
/// PutObject and XACK) and reported; none here is expected, and nothing may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_second_worker_lands_everything() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = shipped_env(redis.port(), &s3, &[("BATCH_MAX_DOCUMENTS", "10")]);
    let settings = settings(&vars);
    let shipped = &settings.worker;
    eprintln!(
        "SIGKILL: shipped WORKER_CLAIM_IDLE_MS {:?}, BATCH_MAX_AGE_MS {:?}",
        shipped.claim_idle, shipped.batch_max_age
    );
    let mut first = spawn_worker(&vars);
    assert!(
        wait_live(&redis, 1).await,
        "first worker never became live: {:?}",
        first.output()
    );

    let subs: Vec<_> = (0..25)
        .map(|n| submission("ns", "t", "1", n, 100))
        .collect();
    enqueue(&settings, &subs).await;
    // Two full batches land; five documents wait in an open batch, pending in Redis.
    assert!(wait_landed(&s3, 20, LONG).await);
    assert!(
        wharf_testkit::eventually(LONG, || {
            let fl = inflight(&redis);
            async move { fl == 5 }
        })
        .await,
        "first worker should hold 5 entries in flight"
    );
    assert_eq!(
        by_uri(&landed(&s3)).len(),
        20,
        "the open batch is not written yet"
    );
    first.signal("KILL");
    let killed = Instant::now();
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());

    let mut second = spawn_worker(&vars);
    let all_landed = wait_landed(&s3, 25, Duration::from_secs(40)).await;
    let recovery = killed.elapsed();
    let docs = landed(&s3);
    let twice = duplicates(&docs);
    eprintln!(
        "SIGKILL recovery: {} of 25 submissions in S3 {recovery:?} after the kill; duplicate documents: {} {twice:?}",
        by_uri(&docs).len(),
        twice.len()
    );
    assert!(
        all_landed,
        "entries of the killed worker never landed: {:?}",
        second.output()
    );
    assert!(
        recovery < Duration::from_secs(30),
        "recovery took {recovery:?}"
    );
    assert!(
        wait_drained(&redis, LONG).await,
        "entries left in the queue"
    );
    second.terminate(Duration::from_secs(10));
}

/// SIGTERM: the open batch is flushed, its entries acknowledged, and the process exits 0 within
/// SHUTDOWN_GRACE_MS, withdrawing its liveness record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_open_batches_and_exits_zero_within_grace() {
    let held = |env: &mut Env| {
        env.set("BATCH_MAX_AGE_MS", 600_000)
            .set("BATCH_MAX_DOCUMENTS", 1000)
            .set("SHUTDOWN_GRACE_MS", 8000);
    };
    wharf_test(WHARF, Role::Worker, held, sigterm_flushes).await;
}

/// The harness's worker, Redis and S3, and the settings the worker was started with.
fn parts(
    tools: Tools,
) -> (
    WharfProcess,
    RedisServer,
    S3Server,
    wharf_settings::Settings,
) {
    let settings = settings(&tools.env.vars());
    (tools.wharf, tools.redis, tools.s3, settings)
}

async fn sigterm_flushes(tools: Tools) {
    let (mut worker, redis, s3, settings) = parts(tools);
    assert!(wait_live(&redis, 1).await, "{:?}", worker.output());
    let subs: Vec<_> = (0..15)
        .map(|n| submission("ns", "t", "1", n, 100))
        .collect();
    enqueue(&settings, &subs).await;
    assert!(
        wharf_testkit::eventually(LONG, || {
            let fl = inflight(&redis);
            async move { fl == 15 }
        })
        .await
    );
    assert!(s3.keys().is_empty(), "nothing flushed before the signal");

    worker.signal("TERM");
    let signalled = Instant::now();
    let status = worker
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM: {:?}", worker.output()));
    let took = signalled.elapsed();
    eprintln!("SIGTERM: exited {status:?} after {took:?}");
    assert!(
        status.success(),
        "exit status {status:?}: {:?}",
        worker.output()
    );
    assert!(
        took < Duration::from_millis(8000),
        "took {took:?}, grace is 8 s"
    );
    assert_landed_exactly_once(&s3, &subs);
    assert_eq!(inflight(&redis), 0, "every entry acknowledged");
    assert_eq!(backlog(&redis), 0, "and deleted");
    assert_eq!(live_workers(&redis), 0, "liveness record withdrawn");
}

/// Poison: a garbage entry (field names and values that are not UTF-8) and an entry with missing
/// fields, written straight into a shard stream ahead of 50 good submissions. Both are in dead
/// letters with their reason within 5 s, the 50 land exactly once, and the worker never
/// restarted (one start-up line, the process still running). (With the reader skipping the
/// dead letter of an undecodable entry, nothing reaches dead letters and the test fails.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_dead_letters_and_never_stop_the_worker() {
    let quick = |env: &mut Env| {
        env.set("BATCH_MAX_AGE_MS", 300);
    };
    wharf_test(WHARF, Role::Worker, quick, poison_is_dead_lettered).await;
}

async fn poison_is_dead_lettered(tools: Tools) {
    let (mut worker, redis, s3, settings) = parts(tools);
    assert!(wait_live(&redis, 1).await, "{:?}", worker.output());

    let subs: Vec<_> = (0..50)
        .map(|n| submission("ns", "t", "1", n, 200))
        .collect();
    let poisoned = Shard(0);
    let behind = subs
        .iter()
        .filter(|s| Shard::for_doc(&s.route.doc_id, settings.redis.queue_shards) == poisoned)
        .count();
    assert!(behind > 0, "some good submissions queue behind the poison");
    let mut conn = redis.connection();
    let garbage: String = redis::cmd("XADD")
        .arg(poisoned.stream())
        .arg("*")
        .arg(&b"\xff\xfe\x00garbage"[..])
        .arg(&b"\x80\x81\xc3\x28"[..])
        .arg("v")
        .arg(&b"\xc3\x28"[..])
        .query(&mut conn)
        .unwrap();
    let incomplete: String = redis::cmd("XADD")
        .arg(poisoned.stream())
        .arg("*")
        .arg("v")
        .arg("2")
        .arg("r")
        .arg("ns/t/1/z")
        .query(&mut conn)
        .unwrap();
    let written = Instant::now();
    enqueue(&settings, &subs).await;

    let both_dead = wharf_testkit::eventually(Duration::from_secs(5), || {
        let dead = dead_count(&redis);
        async move { dead == 2 }
    })
    .await;
    eprintln!("poison: dead-lettered {:?} after XADD", written.elapsed());
    assert!(
        both_dead,
        "not in dead letters within 5 s: {:?}",
        dead_letters(&redis)
    );
    let dead = dead_letters(&redis);
    assert_eq!(field(&dead[0], "dead_from"), Some(garbage));
    assert_eq!(
        field(&dead[0], "dead_reason").as_deref(),
        Some("undecodable entry: field `v` is not UTF-8")
    );
    assert!(
        dead[0].fields.as_ref().unwrap().contains(&(
            b"\xff\xfe\x00garbage".to_vec(),
            b"\x80\x81\xc3\x28".to_vec()
        )),
        "the garbage is kept byte for byte: {:?}",
        dead[0]
    );
    assert_eq!(field(&dead[1], "dead_from"), Some(incomplete));
    assert_eq!(
        field(&dead[1], "dead_reason").as_deref(),
        Some("undecodable entry: field `at` is missing")
    );

    assert!(wait_landed(&s3, 50, LONG).await, "{:?}", worker.output());
    assert!(wait_drained(&redis, LONG).await);
    assert_landed_exactly_once(&s3, &subs);
    assert!(worker.is_running(), "the worker is still running");
    assert_eq!(
        worker.count("worker started"),
        1,
        "the worker never restarted: {:?}",
        worker.output()
    );
    worker.terminate(Duration::from_secs(10));
}

/// The start-up checks' retries are logged at debug level: they show the worker waiting.
const RETRIES_LOGGED: (&str, &str) = ("LOG_LEVEL", "info,wharf_worker::startup=debug");

/// Error-level log lines (MozLog severity 3) containing `needle`.
fn errors(process: &WharfProcess, needle: &str) -> usize {
    process
        .output()
        .iter()
        .filter(|l| l.contains("\"Severity\":3") && l.contains(needle))
        .count()
}

/// Waits until the start-up check failing with `needle` has failed four times, each logged (the
/// first as an error, the retries after 0.2 s, 0.4 s and 0.8 s of backoff at debug level).
async fn wait_retries(process: &WharfProcess, needle: &str) {
    let retried = wharf_testkit::eventually(LONG, || {
        let n = process.count(needle);
        async move { n >= 4 }
    })
    .await;
    assert!(
        retried,
        "{} did not retry: {:?}",
        process.name(),
        process.output()
    );
}

/// Redis missing at start-up: one clear error line and one Sentry event, no crash loop, and the
/// worker starts consuming once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_redis_reports_once_and_recovers() {
    let mut redis = RedisServer::start();
    redis.stop();
    let s3 = S3Server::start(BUCKET);
    let sentry = SentryListener::start().await;
    let mut vars = worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "300"), RETRIES_LOGGED],
    );
    vars.push(("SENTRY_DSN".into(), sentry.dsn()));
    let settings = settings(&vars);
    let mut worker = spawn_worker(&vars);

    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = errors(&worker, "cannot reach Redis");
            async move { n >= 1 }
        })
        .await,
        "no clear Redis error: {:?}",
        worker.output()
    );
    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = sentry
                .errors()
                .iter()
                .filter(|e| e.contains("cannot reach Redis"))
                .count();
            async move { n >= 1 }
        })
        .await,
        "no Sentry event for Redis"
    );
    // Keep it waiting through several retries: still running, still one report.
    wait_retries(&worker, "cannot reach Redis").await;
    assert!(worker.is_running(), "the worker exited instead of waiting");
    assert_eq!(
        errors(&worker, "cannot reach Redis"),
        1,
        "{:?}",
        worker.output()
    );

    redis.restart();
    let subs: Vec<_> = (0..3).map(|n| submission("ns", "t", "1", n, 10)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 3, LONG).await, "{:?}", worker.output());
    assert_eq!(
        sentry
            .errors()
            .iter()
            .filter(|e| e.contains("cannot reach Redis"))
            .count(),
        1
    );
    worker.signal("TERM");
    assert!(worker
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// Bucket missing at start-up: one clear error line naming the bucket and one Sentry event; the
/// worker starts once the bucket exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_bucket_reports_once_and_recovers() {
    let redis = RedisServer::start();
    let s3 = S3Server::start_without_bucket(BUCKET);
    let sentry = SentryListener::start().await;
    let mut vars = worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "300"), RETRIES_LOGGED],
    );
    vars.push(("SENTRY_DSN".into(), sentry.dsn()));
    let settings = settings(&vars);
    let mut worker = spawn_worker(&vars);
    // As it appears inside a JSON log line.
    let needle = format!("S3 bucket \\\"{BUCKET}\\\" does not exist");
    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = errors(&worker, &needle);
            async move { n >= 1 }
        })
        .await,
        "no clear bucket error: {:?}",
        worker.output()
    );
    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = sentry
                .errors()
                .iter()
                .filter(|e| e.contains("does not exist"))
                .count();
            async move { n >= 1 }
        })
        .await,
        "no Sentry event for the missing bucket"
    );
    wait_retries(&worker, &needle).await;
    assert!(worker.is_running(), "the worker exited instead of waiting");
    assert_eq!(errors(&worker, &needle), 1, "{:?}", worker.output());

    s3.create_bucket();
    let bucket_errors = || {
        sentry
            .errors()
            .iter()
            .filter(|e| e.contains("does not exist"))
            .count()
    };
    let subs: Vec<_> = (0..3).map(|n| submission("ns", "t", "1", n, 10)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 3, LONG).await, "{:?}", worker.output());
    assert_eq!(
        bucket_errors(),
        1,
        "one Sentry event for the missing bucket"
    );
    worker.signal("TERM");
    assert!(worker
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}
