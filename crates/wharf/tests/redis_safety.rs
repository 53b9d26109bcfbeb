//! One Redis that misbehaves under the real `wharf` processes: an eviction policy that could lose documents, a full memory, and a failover behind a proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::time::{Duration, Instant};

use wharf_testkit::eventually;
use wharf_testkit::proxy::TcpProxy;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use worker_support::*;

const EXIT_MISCONFIGURED: i32 = 2;

async fn post(
    client: &reqwest::Client,
    port: u16,
    doc_id: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(format!(
            "http://127.0.0.1:{port}/submit/glean-test/main/1/{doc_id}"
        ))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {doc_id}: {e}"))
}

async fn heartbeat(client: &reqwest::Client, port: u16) -> (u16, serde_json::Value) {
    let response = client
        .get(format!("http://127.0.0.1:{port}/__heartbeat__"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("heartbeat: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// Both roles refuse a Redis whose eviction policy could delete queued documents (exit 2, one
/// clear message), and start with a loud warning when the operator explicitly accepts it.
#[tokio::test(flavor = "multi_thread")]
async fn an_evicting_redis_is_refused_unless_the_risk_is_accepted() {
    aws_env();
    let redis =
        RedisServer::start_with(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let s3 = S3Server::start(BUCKET);

    let web_vars = web_env(redis.port(), &[]);
    let worker_vars = worker_env(redis.port(), &s3, &[]);
    for (role, vars) in [("web", &web_vars), ("worker", &worker_vars)] {
        let mut process = spawn_role(role, vars);
        let status = process.wait_exit(LONG).unwrap_or_else(|| {
            panic!(
                "wharf {role} kept running on allkeys-lru: {:?}",
                process.output()
            )
        });
        assert_eq!(
            status.code(),
            Some(EXIT_MISCONFIGURED),
            "wharf {role}: {:?}",
            process.output()
        );
        let output = process.output().join("\n");
        for needle in [
            "maxmemory-policy is `allkeys-lru`",
            "noeviction",
            "REDIS_ALLOW_EVICTION_DATA_LOSS",
        ] {
            assert!(
                output.contains(needle),
                "wharf {role} output lacks {needle:?}: {output}"
            );
        }
    }

    let accepted = [("REDIS_ALLOW_EVICTION_DATA_LOSS", "true")];
    let (mut web, port) = start_web(redis.port(), &accepted).await;
    let mut worker = spawn_worker(&worker_env(redis.port(), &s3, &accepted));
    for process in [&web, &worker] {
        let warned = eventually(LONG, || {
            let n = process.count("starting anyway; Redis may silently delete");
            async move { n > 0 }
        })
        .await;
        assert!(
            warned,
            "no warning from {}: {:?}",
            process.name(),
            process.output()
        );
    }
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, port, &doc_id(1), b"{}".to_vec())
            .await
            .status(),
        200
    );
    assert!(web.is_running() && worker.is_running());
}

/// At `maxmemory` with `noeviction`, the web role answers 507 before Redis ever refuses a write
/// with OOM, `__heartbeat__` says why, and a worker drains the backlog so the web accepts again.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_redis_gets_507_before_oom_and_drains() {
    aws_env();
    let redis =
        RedisServer::start_with(&["--maxmemory", "32mb", "--maxmemory-policy", "noeviction"]);
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(redis.port(), &[("HEARTBEAT_CACHE_MS", "10")]).await;
    let client = reqwest::Client::new();

    // 100 KB bodies until the first refusal: each one is 200 or that refusal.
    let body = vec![b'x'; 100 * 1024];
    let mut accepted = Vec::new();
    let refusal = loop {
        assert!(
            accepted.len() < 1000,
            "never refused after {} bodies",
            accepted.len()
        );
        let id = doc_id(accepted.len());
        let response = post(&client, port, &id, body.clone()).await;
        if response.status() != 200 {
            break response;
        }
        accepted.push(id);
    };
    assert_eq!(
        refusal.status(),
        507,
        "first refusal after {} bodies",
        accepted.len()
    );
    assert!(refusal.headers().contains_key("retry-after"));
    assert!(
        accepted.len() > 100,
        "refused too early: {} bodies",
        accepted.len()
    );
    // Keep pushing: refusals stay 507, and Redis itself never had to refuse a write.
    for n in 0..20 {
        let status = post(&client, port, &doc_id(10_000 + n), body.clone())
            .await
            .status();
        assert_eq!(status, 507);
    }
    let errors = redis.info("errorstats");
    assert!(
        !errors.contains("errorstat_OOM"),
        "Redis refused writes with OOM: {errors}"
    );

    let (_, report) = heartbeat(&client, port).await;
    assert_eq!(report["checks"]["redis_memory"], "warning", "{report}");
    assert!(
        report["details"]["redis_memory"]["used_percent"]
            .as_f64()
            .unwrap_or(0.0)
            >= 80.0
    );

    let _worker = spawn_worker(&worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "500")],
    ));
    assert!(
        wait_drained(&redis, Duration::from_secs(60)).await,
        "backlog left: {}",
        backlog(&redis)
    );
    let open_again = eventually(LONG, || {
        let client = client.clone();
        async move {
            post(&client, port, &doc_id(20_000), b"{}".to_vec())
                .await
                .status()
                == 200
        }
    })
    .await;
    assert!(open_again, "the web never accepted again after the drain");
    assert!(wait_landed(&s3, accepted.len() + 1, LONG).await);
}

/// A primary behind a proxy (as a DNS name or an ElastiCache primary endpoint is) is demoted and
/// its replica promoted: while writes fail `__heartbeat__` reports Redis as an error, and once
/// the proxy follows, web and worker write again within 10 s without a restart. With
/// `REDIS_MIN_REPLICAS_ACK=1`, every document answered 200 lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_standalone_failover_is_followed_without_a_restart() {
    aws_env();
    let primary = RedisServer::start();
    let replica = primary.replica_of();
    let proxy = TcpProxy::start(primary.port());
    let s3 = S3Server::start(BUCKET);
    let settings = [
        ("REDIS_MIN_REPLICAS_ACK", "1"),
        ("HEARTBEAT_CACHE_MS", "10"),
        ("REDIS_TIMEOUT_MS", "500"),
    ];
    let (web, port) = start_web(proxy.port(), &settings).await;
    let worker = spawn_worker(&worker_env(
        proxy.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "300"), ("REDIS_MIN_REPLICAS_ACK", "1")],
    ));
    let client = reqwest::Client::new();
    let mut ok = Vec::new();
    for n in 0..50 {
        let response = post(&client, port, &doc_id(n), b"{\"before\":1}".to_vec()).await;
        assert_eq!(response.status(), 200);
        ok.push(n);
    }
    assert!(
        wait_landed(&s3, ok.len(), LONG).await,
        "worker never landed the first documents"
    );

    // The replica takes over; the old primary follows it. The proxy still points at the old one.
    replica.promote();
    primary.demote_to("127.0.0.1", replica.port());
    let failing_since = Instant::now();
    let mut statuses = Vec::new();
    let reported = eventually(LONG, || {
        let client = client.clone();
        async move { heartbeat(&client, port).await.1["checks"]["redis"] == "error" }
    })
    .await;
    assert!(reported, "__heartbeat__ never reported the demoted primary");
    let (status, report) = heartbeat(&client, port).await;
    assert_eq!(status, 500, "{report}");
    for n in 50..55 {
        let response = post(&client, port, &doc_id(n), b"{\"during\":1}".to_vec()).await;
        assert!(
            response.status().is_server_error(),
            "a write to a replica answered {}",
            response.status()
        );
        statuses.push(response.status().as_u16());
    }
    eprintln!(
        "writes failing for {:?} before the proxy switched",
        failing_since.elapsed()
    );

    proxy.set_target(replica.port());
    let switched = Instant::now();
    let mut n = 100;
    let recovered = eventually(Duration::from_secs(10), || {
        n += 1;
        let id = doc_id(n);
        let client = client.clone();
        async move {
            post(&client, port, &id, b"{\"after\":1}".to_vec())
                .await
                .status()
                == 200
        }
    })
    .await;
    let web_recovery = switched.elapsed();
    assert!(
        recovered,
        "web still failing 10 s after the proxy switched: {:?}",
        web.output()
    );
    let heartbeat_ok = eventually(Duration::from_secs(10), || {
        let client = client.clone();
        async move { heartbeat(&client, port).await.1["checks"]["redis"] == "ok" }
    })
    .await;
    assert!(heartbeat_ok, "heartbeat still failing after the switch");
    let landed_after = wait_landed(&s3, ok.len() + 1, Duration::from_secs(10)).await;
    let worker_recovery = switched.elapsed();
    assert!(
        landed_after,
        "worker landed nothing within 10 s of the switch: {:?}",
        worker.output()
    );
    eprintln!(
        "standalone failover: web writing again {web_recovery:?} after the switch, worker landing {worker_recovery:?}; answers while failing: {statuses:?}"
    );
    // Every document answered 200, before and after, is in S3.
    let landed: std::collections::HashMap<String, usize> = by_uri(&landed(&s3));
    for n in ok {
        let uri = format!("/submit/glean-test/main/1/{}", doc_id(n));
        assert!(
            landed.contains_key(&uri),
            "{uri} answered 200 but never landed"
        );
    }
}

/// Past `maxmemory` (a Redis filled by hand, or by an operator lowering it), Redis refuses every
/// `MULTI` block and every `XADD`, but a worker's acknowledgement still goes through, so a full
/// Redis drains instead of wedging.
#[tokio::test(flavor = "multi_thread")]
async fn acknowledgements_still_go_through_past_maxmemory() {
    let redis = RedisServer::start_with(&["--maxmemory-policy", "noeviction"]);
    let vars = vec![
        ("REDIS_HOST".to_string(), "127.0.0.1".to_string()),
        ("REDIS_PORT".to_string(), redis.port().to_string()),
        ("S3_BUCKET".to_string(), BUCKET.to_string()),
    ];
    let settings = settings(&vars);
    let subs = submissions("glean-test", &["main"], 200, 4096);
    enqueue(&settings, &subs).await;
    let mut conn = wharf_queue::connect(&settings.redis).unwrap_or_else(|e| panic!("{e}"));
    let shards: Vec<wharf_queue::Shard> =
        wharf_queue::Shard::all(settings.redis.queue_shards).collect();
    wharf_queue::streams::ensure_groups(&mut conn, &shards)
        .await
        .unwrap_or_else(|e| panic!("groups: {e}"));
    let read =
        wharf_queue::streams::read_new(&mut conn, &shards, "w1", 1000, Duration::from_millis(100))
            .await
            .unwrap_or_else(|e| panic!("read: {e}"));
    assert_eq!(read.len(), subs.len());

    // Now Redis is over its limit: new documents are refused with OOM...
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query(&mut redis.connection())
        .unwrap_or_else(|e| panic!("CONFIG SET: {e}"));
    let refused = redis::cmd("XADD")
        .arg(wharf_queue::Shard(0).stream())
        .arg("*")
        .arg("f")
        .arg("v")
        .query::<String>(&mut redis.connection());
    assert!(
        matches!(&refused, Err(e) if e.code() == Some("OOM")),
        "Redis was not over maxmemory: {refused:?}"
    );
    let multi: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .cmd("XACK")
        .arg(wharf_queue::Shard(0).stream())
        .arg(wharf_queue::GROUP)
        .arg("0-1")
        .query(&mut redis.connection());
    assert!(
        multi.is_err(),
        "Redis accepted MULTI over maxmemory, so this test shows nothing"
    );

    // ...and the acknowledgement of what was written still goes through.
    let mut by_shard: std::collections::BTreeMap<wharf_queue::Shard, Vec<String>> =
        Default::default();
    for entry in read {
        by_shard.entry(entry.shard).or_default().push(entry.id);
    }
    let by_shard: Vec<_> = by_shard.into_iter().collect();
    let acked = wharf_queue::streams::ack(&mut conn, &by_shard)
        .await
        .unwrap_or_else(|e| panic!("acknowledgement refused past maxmemory: {e}"));
    assert_eq!(acked, subs.len() as u64);
    assert_eq!(backlog(&redis), 0);
}

/// Every live connection goes silent (a partition that drops packets: no error, no close) while
/// new connections get through. Without a fresh connection after a timeout, redis-rs would keep
/// the dead one until the kernel gives up on it, about 15 minutes; web and worker must write
/// again within 10 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_silently_dead_link_is_replaced_within_seconds() {
    aws_env();
    let redis = RedisServer::start();
    let proxy = TcpProxy::start(redis.port());
    let s3 = S3Server::start(BUCKET);
    let timeout = [("REDIS_TIMEOUT_MS", "500")];
    let (web, port) = start_web(proxy.port(), &timeout).await;
    let worker = spawn_worker(&worker_env(
        proxy.port(),
        &s3,
        &[
            ("REDIS_TIMEOUT_MS", "500"),
            ("BATCH_MAX_AGE_MS", "300"),
            ("WORKER_POLL_INTERVAL_MS", "500"),
        ],
    ));
    let client = reqwest::Client::new();
    assert_eq!(
        post(&client, port, &doc_id(1), b"{}".to_vec())
            .await
            .status(),
        200
    );
    assert!(
        wait_landed(&s3, 1, LONG).await,
        "nothing landed before the stall"
    );

    proxy.stall();
    let stalled = Instant::now();
    let mut n = 100;
    let web_back = eventually(Duration::from_secs(10), || {
        n += 1;
        let id = doc_id(n);
        let client = client.clone();
        async move { post(&client, port, &id, b"{}".to_vec()).await.status() == 200 }
    })
    .await;
    let web_recovery = stalled.elapsed();
    assert!(
        web_back,
        "web still failing 10 s after its link went silent: {:?}",
        web.output()
    );
    let worker_back = wait_landed(&s3, 2, Duration::from_secs(10)).await;
    let worker_recovery = stalled.elapsed();
    assert!(
        worker_back,
        "worker landed nothing 10 s after its links went silent: {:?}",
        worker.output()
    );
    eprintln!("silent link: web writing again after {web_recovery:?}, worker landing after {worker_recovery:?}");
}
