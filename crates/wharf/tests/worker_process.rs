//! Tests of the real `wharf worker` process: SIGKILL recovery, SIGTERM drain, start-up without its dependencies.

mod worker_support;

use std::time::{Duration, Instant};

use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use wharf_testkit::sentry::SentryListener;
use worker_support::*;

const LONG: Duration = Duration::from_secs(60);

async fn wait_live(redis: &RedisServer, n: u64) -> bool {
    wharf_testkit::eventually(LONG, || {
        let live: u64 = redis_query(redis, &["ZCOUNT", "wharf:workers:live", "-inf", "+inf"]);
        async move { live >= n }
    })
    .await
}

/// SIGKILL mid-batch: a second worker, with the shipped heartbeat defaults (5 s x 3), lands every
/// submission within 30 s of the kill. Duplicates are possible (at least once) and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_second_worker_lands_everything() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let shipped = [
        ("WORKER_HEARTBEAT_MS", "5000"),
        ("WORKER_MISSED_HEARTBEATS", "3"),
        ("BATCH_MAX_DOCUMENTS", "10"),
    ];
    let mut first_vars = worker_env(redis.port(), &s3, &shipped);
    first_vars.push(("BATCH_MAX_AGE_MS".into(), "600000".into()));
    let settings = settings(&first_vars);
    let mut first = WorkerProcess::spawn(&first_vars);
    assert!(
        wait_live(&redis, 1).await,
        "first worker never became live: {:?}",
        first.output()
    );

    let subs: Vec<_> = (0..25)
        .map(|n| submission("ns", "t", "1", n, 100))
        .collect();
    enqueue(&settings, &subs).await;
    // Two full batches land; five documents wait in an open batch, held in flight.
    assert!(wait_landed(&s3, 20, LONG).await);
    assert!(
        wharf_testkit::eventually(LONG, || {
            let fl = inflight(&redis);
            async move { fl == 5 }
        })
        .await,
        "first worker should hold 5 jobs in flight"
    );
    first.signal("KILL");
    let killed = Instant::now();
    assert!(first.wait_exit(Duration::from_secs(5)).is_some());

    let mut second_vars = worker_env(redis.port(), &s3, &shipped);
    second_vars.push(("BATCH_MAX_AGE_MS".into(), "500".into()));
    let mut second = WorkerProcess::spawn(&second_vars);
    assert!(
        wait_landed(&s3, 25, Duration::from_secs(40)).await,
        "jobs of the killed worker never landed"
    );
    let recovery = killed.elapsed();
    let docs = landed(&s3);
    let duplicates = docs.len() - by_uri(&docs).len();
    eprintln!("SIGKILL recovery: every submission in S3 {recovery:?} after the kill; duplicate documents: {duplicates}");
    assert!(
        recovery < Duration::from_secs(30),
        "recovery took {recovery:?}"
    );

    second.signal("TERM");
    let status = second
        .wait_exit(Duration::from_secs(10))
        .expect("second worker did not stop");
    assert!(status.success());
}

/// SIGTERM: the open batch is flushed, jobs acknowledged, and the process exits 0 within SHUTDOWN_GRACE_MS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_open_batches_and_exits_zero_within_grace() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let vars = worker_env(
        redis.port(),
        &s3,
        &[
            ("BATCH_MAX_AGE_MS", "600000"),
            ("BATCH_MAX_DOCUMENTS", "1000"),
            ("SHUTDOWN_GRACE_MS", "8000"),
        ],
    );
    let settings = settings(&vars);
    let mut worker = WorkerProcess::spawn(&vars);
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
    assert_eq!(by_uri(&landed(&s3)).len(), 15, "open batch flushed");
    assert_eq!(inflight(&redis), 0, "every job acknowledged");
    let backlog: u64 = redis_query(&redis, &["LLEN", "wharf_submissions:active"]);
    assert_eq!(backlog, 0);
    let workers: Vec<String> =
        redis_query(&redis, &["ZRANGE", "wharf_submissions:workers", "0", "-1"]);
    assert!(workers.is_empty(), "unregistered: {workers:?}");
}

fn count(lines: &[String], needle: &str) -> usize {
    lines.iter().filter(|l| l.contains(needle)).count()
}

/// Redis missing at start-up: one clear error line and one Sentry event, no crash loop, and the
/// worker starts consuming once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_without_redis_reports_once_and_recovers() {
    let mut redis = RedisServer::start();
    redis.stop();
    let s3 = S3Server::start(BUCKET);
    let sentry = SentryListener::start().await;
    let mut vars = worker_env(redis.port(), &s3, &[("BATCH_MAX_AGE_MS", "300")]);
    vars.push(("SENTRY_DSN".into(), sentry.dsn()));
    let settings = settings(&vars);
    let mut worker = WorkerProcess::spawn(&vars);

    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = count(&worker.output(), "cannot reach Redis");
            async move { n >= 1 }
        })
        .await,
        "no clear Redis error: {:?}",
        worker.output()
    );
    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = sentry_errors(&sentry.envelopes())
                .iter()
                .filter(|e| e.contains("cannot reach Redis"))
                .count();
            async move { n >= 1 }
        })
        .await,
        "no Sentry event for Redis"
    );
    // Keep it waiting through several retries: still running, still one report.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        worker.child.try_wait().ok().flatten().is_none(),
        "the worker exited instead of waiting"
    );
    assert_eq!(
        count(&worker.output(), "cannot reach Redis"),
        1,
        "{:?}",
        worker.output()
    );

    redis.restart();
    let subs: Vec<_> = (0..3).map(|n| submission("ns", "t", "1", n, 10)).collect();
    enqueue(&settings, &subs).await;
    assert!(wait_landed(&s3, 3, LONG).await, "{:?}", worker.output());
    assert_eq!(
        sentry_errors(&sentry.envelopes())
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
    let mut vars = worker_env(redis.port(), &s3, &[("BATCH_MAX_AGE_MS", "300")]);
    vars.push(("SENTRY_DSN".into(), sentry.dsn()));
    let settings = settings(&vars);
    let mut worker = WorkerProcess::spawn(&vars);
    let needle = format!("S3 bucket \\\"{BUCKET}\\\" does not exist");
    assert!(
        wharf_testkit::eventually(LONG, || {
            let out = worker.output();
            let n = out
                .iter()
                .filter(|l| l.contains(&needle) || l.contains("does not exist"))
                .count();
            async move { n >= 1 }
        })
        .await,
        "no clear bucket error: {:?}",
        worker.output()
    );
    assert!(
        wharf_testkit::eventually(LONG, || {
            let n = sentry_errors(&sentry.envelopes())
                .iter()
                .filter(|e| e.contains("does not exist"))
                .count();
            async move { n >= 1 }
        })
        .await,
        "no Sentry event for the missing bucket"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(worker.child.try_wait().ok().flatten().is_none());
    assert_eq!(
        count(&worker.output(), "does not exist"),
        1,
        "{:?}",
        worker.output()
    );

    s3.create_bucket();
    let bucket_errors = || {
        sentry_errors(&sentry.envelopes())
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
