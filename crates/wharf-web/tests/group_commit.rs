//! Group commit: concurrent submissions share XADD pipelines, each is acknowledged only after Redis has its entry, and a failed pipeline fails all of its submissions.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use common::spawn_app;
use wharf_queue::enqueue::{EnqueueError, GroupCommitLimits};
use wharf_queue::{Enqueuer, EntryId, Route, Submission};
use wharf_testkit::redis_server::RedisServer;

fn submission(i: usize) -> Submission {
    Submission::new(
        Route {
            namespace: "ns".into(),
            doc_type: "t".into(),
            doc_version: "1".into(),
            doc_id: format!("00000000-0000-4000-8000-{i:012}"),
        },
        BTreeMap::from([("uri".to_string(), format!("/submit/ns/t/1/{i}"))]),
        bytes::Bytes::from(format!("body {i}")),
    )
}

fn enqueuer(redis: &RedisServer, limits: GroupCommitLimits) -> Enqueuer {
    let vars = [
        ("REDIS_HOST".to_string(), "127.0.0.1".to_string()),
        ("REDIS_PORT".to_string(), redis.port().to_string()),
        ("REDIS_TIMEOUT_MS".to_string(), "5000".to_string()),
    ];
    let settings = wharf_settings::from_vars(wharf_settings::Role::Web, vars).unwrap();
    let conn = wharf_queue::connect(&settings.redis).unwrap();
    Enqueuer::new(conn, common::DEFAULT_SHARDS).with_group_commit(limits)
}

/// An enqueuer allowed one pipeline in flight, already connected.
async fn one_push_at_a_time(redis: &RedisServer) -> Enqueuer {
    let enq = enqueuer(
        redis,
        GroupCommitLimits {
            max_in_flight: 1,
            ..GroupCommitLimits::default()
        },
    );
    enq.enqueue_one(submission(1000)).await.unwrap();
    enq
}

/// Holds every write to Redis (reads still answer) until [`unpause`], or `HOLD_CAP` at most, so a
/// test that fails half-way does not leave Redis paused. Longer than any wait here, and shorter
/// than `REDIS_TIMEOUT_MS` in [`enqueuer`], so a held push is never abandoned.
fn pause_writes(conn: &mut redis::Connection) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(HOLD_CAP.as_millis() as u64)
        .arg("WRITE")
        .query(conn)
        .unwrap();
}

const HOLD_CAP: Duration = Duration::from_secs(4);

fn unpause(conn: &mut redis::Connection) {
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(conn).unwrap();
}

/// Waits until Redis holds back a command of another client (a paused write shows as a
/// blocked client): the push has been sent and cannot finish.
async fn until_a_write_is_held(conn: &mut redis::Connection) {
    let held = wharf_testkit::eventually(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO").arg("clients").query(conn).unwrap();
        let blocked = info
            .lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        async move { blocked >= 1 }
    })
    .await;
    assert!(held, "no push reached Redis");
}

type Answer = Pin<Box<dyn Future<Output = Result<EntryId, EnqueueError>>>>;

/// `enqueue_one` of each submission, each polled once: with group commit, that hands every one
/// to the committer before this returns.
async fn hand_over(enq: &Enqueuer, numbers: std::ops::Range<usize>) -> Vec<(usize, Answer)> {
    let mut answers = Vec::new();
    for i in numbers {
        let enq = enq.clone();
        let mut answer: Answer = Box::pin(async move { enq.enqueue_one(submission(i)).await });
        assert!(
            futures::poll!(answer.as_mut()).is_pending(),
            "submission {i} answered before its push was sent"
        );
        answers.push((i, answer));
    }
    answers
}

/// Entries in the shard streams: what Redis has taken.
fn queued_count(conn: &mut redis::Connection) -> usize {
    common::queued_in(conn).len()
}

fn queued_doc_ids(conn: &mut redis::Connection) -> BTreeSet<String> {
    common::queued_in(conn)
        .into_iter()
        .map(|s| s.route.doc_id)
        .collect()
}

#[tokio::test]
async fn submissions_waiting_behind_a_push_share_the_next_one() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let enq = one_push_at_a_time(&redis).await;
    let before = enq.pipelines_sent();

    // The first push is held in Redis, taking the only pipeline slot; the 49 others arrive
    // while it is held.
    pause_writes(&mut conn);
    let mut answers = hand_over(&enq, 0..1).await;
    until_a_write_is_held(&mut conn).await;
    answers.extend(hand_over(&enq, 1..50).await);
    unpause(&mut conn);
    let mut ids = BTreeSet::new();
    for (i, answer) in answers {
        let id = answer
            .await
            .unwrap_or_else(|e| panic!("submission {i} not acknowledged: {e}"));
        ids.insert((id.shard, id.id));
    }
    assert_eq!(ids.len(), 50, "every submission gets its own entry");

    assert_eq!(
        enq.pipelines_sent() - before,
        2,
        "the held push, then one for the 49 that waited behind it"
    );
    let queued = queued_doc_ids(&mut conn);
    assert_eq!(queued.len(), 51);
    for i in 0..50 {
        assert!(queued.contains(&submission(i).route.doc_id));
    }
}

/// No answer before Redis has the entry: while Redis holds the push, nothing is answered and
/// nothing is stored; once it lets the push through, each answer names an entry Redis has.
/// (Answering when the push is sent rather than when Redis confirms it fails the first check.)
#[tokio::test]
async fn an_acknowledged_submission_is_already_in_redis() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let enq = enqueuer(&redis, GroupCommitLimits::default());
    enq.enqueue_one(submission(1000)).await.unwrap();

    pause_writes(&mut conn);
    let mut answers = hand_over(&enq, 0..200).await;
    until_a_write_is_held(&mut conn).await;
    for (i, answer) in &mut answers {
        assert!(
            futures::poll!(answer.as_mut()).is_pending(),
            "submission {i} was answered while Redis held its push"
        );
    }
    assert_eq!(
        queued_count(&mut conn),
        1,
        "only the first submission is stored"
    );

    unpause(&mut conn);
    for (i, answer) in answers {
        // The entry id the caller got is what the XADD stored the submission under.
        let id = answer.await.unwrap();
        let stored: Vec<redis::Value> = redis::cmd("XRANGE")
            .arg(id.shard.stream())
            .arg(&id.id)
            .arg(&id.id)
            .query(&mut conn)
            .unwrap();
        assert_eq!(
            stored.len(),
            1,
            "submission {i} was acknowledged before Redis had it"
        );
    }
    assert_eq!(queued_doc_ids(&mut conn).len(), 201);
}

#[tokio::test]
async fn a_failed_push_fails_every_submission_in_it() {
    let mut redis = RedisServer::start();
    let mut conn = redis.connection();
    let enq = one_push_at_a_time(&redis).await;
    pause_writes(&mut conn);
    let answers = hand_over(&enq, 0..20).await;
    // Every submission is in the push Redis holds; take Redis away under it.
    until_a_write_is_held(&mut conn).await;
    redis.stop();
    for (i, answer) in answers {
        let result = answer.await;
        assert!(
            matches!(result, Err(EnqueueError::Group { .. })),
            "expected the group push error for {i}, got {result:?}"
        );
    }

    redis.restart();
    let recovered = wharf_testkit::eventually(Duration::from_secs(10), || {
        let enq = enq.clone();
        async move { enq.enqueue_one(submission(99)).await.is_ok() }
    })
    .await;
    assert!(recovered, "the committer keeps working once Redis is back");
}

#[tokio::test]
async fn concurrent_http_submissions_all_get_200_and_are_all_queued() {
    let app = spawn_app(&[]).await;
    let handles: Vec<_> = (0..100)
        .map(|i| {
            let client = app.client.clone();
            let url = app.url(&format!("/submit/ns/t/1/00000000-0000-4000-8000-{i:012}"));
            tokio::spawn(async move {
                client
                    .post(url)
                    .body(format!("doc {i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    let ids: BTreeSet<String> = app.queued().into_iter().map(|s| s.route.doc_id).collect();
    assert_eq!(ids.len(), 100);
}
