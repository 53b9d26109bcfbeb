//! Group commit: concurrent submissions share XADD pipelines, each is acknowledged only after Redis has its entry, and a failed pipeline fails all of its submissions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::spawn_app;
use wharf_queue::enqueue::{EnqueueError, GroupCommitLimits};
use wharf_queue::{Enqueuer, Route, Submission};
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
        ("REDIS_TIMEOUT_MS".to_string(), "2000".to_string()),
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

/// Holds every Redis client (the enqueuer's push included) for `ms` milliseconds.
fn pause_redis(conn: &mut redis::Connection, ms: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(ms)
        .query(conn)
        .unwrap();
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

    // Hold Redis so the first push cannot finish while the other submissions arrive.
    pause_redis(&mut conn, 500);
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let enq = enq.clone();
            tokio::spawn(async move { enq.enqueue_one(submission(i)).await })
        })
        .collect();
    let mut ids = BTreeSet::new();
    for h in handles {
        let id = h.await.unwrap().expect("every submission is acknowledged");
        ids.insert((id.shard, id.id));
    }
    assert_eq!(ids.len(), 50, "every submission gets its own entry");

    let pipelines = enq.pipelines_sent() - before;
    assert!(
        pipelines < 50,
        "50 concurrent submissions behind one in-flight pipeline were grouped, got {pipelines} pipelines"
    );
    let queued = queued_doc_ids(&mut conn);
    assert_eq!(queued.len(), 51);
    for i in 0..50 {
        assert!(queued.contains(&submission(i).route.doc_id));
    }
}

#[tokio::test]
async fn an_acknowledged_submission_is_already_in_redis() {
    let redis = RedisServer::start();
    let mut conn = redis.connection();
    let enq = enqueuer(&redis, GroupCommitLimits::default());
    let handles: Vec<_> = (0..200)
        .map(|i| {
            let enq = enq.clone();
            tokio::spawn(async move { (i, enq.enqueue_one(submission(i)).await) })
        })
        .collect();
    for h in handles {
        let (i, result) = h.await.unwrap();
        // The entry id the caller got is what the XADD stored the submission under.
        let id = result.unwrap();
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
    assert_eq!(queued_doc_ids(&mut conn).len(), 200);
}

#[tokio::test]
async fn a_failed_push_fails_every_submission_in_it() {
    let mut redis = RedisServer::start();
    let mut conn = redis.connection();
    let enq = one_push_at_a_time(&redis).await;
    pause_redis(&mut conn, 5000);
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let enq = enq.clone();
            tokio::spawn(async move { enq.enqueue_one(submission(i)).await })
        })
        .collect();
    // Let every submission reach the committer, then take Redis away under the held push.
    tokio::time::sleep(Duration::from_millis(200)).await;
    redis.stop();
    for h in handles {
        let result = h.await.unwrap();
        assert!(
            matches!(result, Err(EnqueueError::Group { .. })),
            "expected the group push error, got {result:?}"
        );
    }

    redis.restart();
    let mut recovered = false;
    for _ in 0..50 {
        if enq.enqueue_one(submission(99)).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
