//! The real `wharf` processes on a real Redis Cluster (3 masters, 3 replicas): shards spread over every master, and a master killed under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod worker_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf_queue::Shard;
use wharf_testkit::cluster::RedisCluster;
use wharf_testkit::s3::S3Server;
use worker_support::*;

const SHARDS: u16 = 12;

fn cluster_env(
    cluster: &RedisCluster,
    extra: &[(&'static str, &'static str)],
) -> Vec<(&'static str, String)> {
    let mut vars = vec![
        ("REDIS_CLUSTER", "true".to_string()),
        ("QUEUE_SHARDS", SHARDS.to_string()),
        ("REDIS_PORT", cluster.seed_port().to_string()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_string())));
    vars
}

fn as_refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Starts web and worker against the cluster.
async fn start_roles(
    cluster: &RedisCluster,
    s3: &S3Server,
    extra: &[(&'static str, &'static str)],
) -> (WharfProcess, u16, WharfProcess) {
    let vars = cluster_env(cluster, extra);
    let refs = as_refs(&vars);
    let (web, port) = start_web(cluster.seed_port(), &refs).await;
    let mut worker_extra = refs.clone();
    worker_extra.push(("BATCH_MAX_AGE_MS", "500"));
    let worker = spawn_worker(&worker_env(cluster.seed_port(), s3, &worker_extra));
    (web, port, worker)
}

async fn post(client: &reqwest::Client, port: u16, n: usize) -> Option<u16> {
    client
        .post(format!(
            "http://127.0.0.1:{port}/submit/glean-test/main/1/{}",
            doc_id(n)
        ))
        .body(format!("{{\"n\":{n}}}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

fn uri(n: usize) -> String {
    format!("/submit/glean-test/main/1/{}", doc_id(n))
}

/// With 12 shards on 3 masters, every master holds some shard streams, every shard is written
/// and drained, and each document lands exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn shards_spread_over_every_master_and_every_document_lands_once() {
    aws_env();
    let cluster = RedisCluster::start(3, 1);
    let s3 = S3Server::start(BUCKET);
    let (_web, port, worker) = start_roles(&cluster, &s3, &[]).await;

    let owners: BTreeMap<Shard, u16> = Shard::all(SHARDS)
        .map(|shard| (shard, cluster.master_for_key(&shard.stream())))
        .collect();
    let masters: BTreeSet<u16> = owners.values().copied().collect();
    assert_eq!(masters.len(), 3, "shards per master: {owners:?}");

    let client = reqwest::Client::new();
    const N: usize = 300;
    let statuses = futures::future::join_all((0..N).map(|n| {
        let client = client.clone();
        async move { post(&client, port, n).await }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == Some(200)), "{statuses:?}");

    assert!(
        wait_landed(&s3, N, LONG).await,
        "landed {} of {N}",
        by_uri(&landed(&s3)).len()
    );
    let docs = landed(&s3);
    assert!(
        duplicates(&docs).is_empty(),
        "duplicates: {:?}",
        duplicates(&docs)
    );
    assert_eq!(docs.len(), N);

    // `wharf check` in a worker container finds the worker's liveness record through the
    // cluster (the record's key lives on whichever master owns its slot).
    let vars = cluster_env(&cluster, &[]);
    let mut check_vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    check_vars.push(("REDIS_HOST".into(), "127.0.0.1".into()));
    let pid = worker.pid().to_string();
    let (healthy, output) =
        run_wharf(&["check", "--role", "worker", "--pid", &pid], &check_vars).await;
    assert!(healthy, "wharf check on a cluster: {output}");

    for (shard, master) in &owners {
        let mut conn = cluster.connection(*master);
        let info: HashMap<String, redis::Value> = redis::cmd("XINFO")
            .arg("STREAM")
            .arg(shard.stream())
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("XINFO STREAM {shard} on {master}: {e}"));
        let added = match info.get("entries-added") {
            Some(redis::Value::Int(n)) => *n,
            other => panic!("entries-added of shard {shard}: {other:?}"),
        };
        assert!(added > 0, "shard {shard} (on {master}) never written");
        let length: u64 = redis::cmd("XLEN")
            .arg(shard.stream())
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("XLEN: {e}"));
        assert_eq!(length, 0, "shard {shard} (on {master}) not drained");
    }
}

/// What one load run saw.
struct LoadReport {
    /// (doc number, answer, when) for every request.
    answers: Vec<(usize, Option<u16>, Instant)>,
    killed_at: Instant,
    failover: Duration,
    /// Doc numbers whose shard lived on the killed master.
    on_killed: BTreeSet<usize>,
}

/// Posts from 4 clients for `run` while SIGKILLing the master of shard 0 once its shards have
/// accepted 50 documents; with
/// `replicas_ack` = 1 the killed node is restarted after the failover, so the promoted master
/// has a replica to confirm writes again.
async fn kill_a_master_under_load(
    cluster: &mut RedisCluster,
    port: u16,
    replicas_ack: bool,
    run: Duration,
) -> LoadReport {
    let victim = cluster.master_for_key(&Shard(0).stream());
    let on_victim: BTreeSet<Shard> = Shard::all(SHARDS)
        .filter(|s| cluster.master_for_key(&s.stream()) == victim)
        .collect();
    let answers = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let answers = Arc::clone(&answers);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while start.elapsed() < run {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let status = post(&client, port, n).await;
                    if let Ok(mut a) = answers.lock() {
                        a.push((n, status, Instant::now()));
                    }
                }
            })
        })
        .collect();
    // Under load: the victim's shards have taken writes before it dies.
    let loaded = wharf_testkit::eventually(run / 2, || {
        let accepted = answers.lock().map_or(0, |a| {
            a.iter()
                .filter(|(n, status, _)| {
                    *status == Some(200) && on_victim.contains(&Shard::for_doc(&doc_id(*n), SHARDS))
                })
                .count()
        });
        async move { accepted >= 50 }
    })
    .await;
    assert!(
        loaded,
        "the killed master's shards took no load before the kill"
    );
    let killed_at = Instant::now();
    cluster.kill(victim);
    let failover = tokio::task::block_in_place(|| cluster.wait_for_failover(victim, LONG));
    if replicas_ack {
        tokio::task::block_in_place(|| {
            cluster.restart(victim);
            cluster.wait_healthy();
        });
    }
    for c in clients {
        c.await.unwrap_or_else(|e| panic!("client: {e}"));
    }
    let answers = answers.lock().map(|a| a.clone()).unwrap_or_default();
    let on_killed = answers
        .iter()
        .map(|(n, _, _)| *n)
        .filter(|n| on_victim.contains(&Shard::for_doc(&doc_id(*n), SHARDS)))
        .collect();
    LoadReport {
        answers,
        killed_at,
        failover,
        on_killed,
    }
}

impl LoadReport {
    fn accepted(&self) -> Vec<usize> {
        self.answers
            .iter()
            .filter(|(_, s, _)| *s == Some(200))
            .map(|(n, _, _)| *n)
            .collect()
    }

    /// From the kill to the end of the outage on the killed master's shards: the first 200
    /// after their last failed answer (zero when none of their answers failed).
    fn recovery(&self) -> Option<Duration> {
        let on_killed_after_kill = || {
            self.answers
                .iter()
                .filter(|(n, _, at)| *at > self.killed_at && self.on_killed.contains(n))
        };
        let Some(last_failure) = on_killed_after_kill()
            .filter(|(_, s, _)| *s != Some(200))
            .map(|(_, _, at)| *at)
            .max()
        else {
            return Some(Duration::ZERO);
        };
        on_killed_after_kill()
            .filter(|(_, s, at)| *s == Some(200) && *at > last_failure)
            .map(|(_, _, at)| *at - self.killed_at)
            .min()
    }

    fn summary(&self) -> String {
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        for (_, s, _) in &self.answers {
            *by_status
                .entry(s.map_or("none".into(), |s| s.to_string()))
                .or_default() += 1;
        }
        format!(
            "{} requests {by_status:?}; failover {:?} after the kill; its shards writing again {:?} after the kill",
            self.answers.len(),
            self.failover,
            self.recovery()
        )
    }
}

/// With `REDIS_MIN_REPLICAS_ACK=1`, SIGKILL of a master under load loses no document answered
/// 200: the rest got 503 with Retry-After, and the killed master's shards take writes again.
#[tokio::test(flavor = "multi_thread")]
async fn a_master_killed_under_load_loses_nothing_answered_200() {
    aws_env();
    let mut cluster = RedisCluster::start(3, 1);
    let s3 = S3Server::start(BUCKET);
    let (web, port, worker) = start_roles(&cluster, &s3, &[("REDIS_MIN_REPLICAS_ACK", "1")]).await;

    let report = kill_a_master_under_load(&mut cluster, port, true, Duration::from_secs(12)).await;
    eprintln!("REDIS_MIN_REPLICAS_ACK=1: {}", report.summary());
    let accepted = report.accepted();
    assert!(
        report
            .answers
            .iter()
            .all(|(_, s, _)| matches!(s, Some(200 | 503))),
        "answers other than 200/503: {}",
        report.summary()
    );
    assert!(
        report.on_killed.iter().any(|n| accepted.contains(n)),
        "no document of the killed master's shards was accepted: the test proved nothing"
    );
    // WAIT really went to the masters (a pipeline that lost it would still pass the rest).
    let waits: u64 = cluster
        .masters()
        .into_iter()
        .map(|m| {
            let stats: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut cluster.connection(m))
                .unwrap_or_default();
            stats
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_wait:calls="))
                .and_then(|rest| rest.split(',').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum();
    assert!(waits > 0, "no master ever ran WAIT");
    let recovery = report.recovery();
    assert!(
        recovery.is_some(),
        "the killed master's shards never took writes again: {}",
        report.summary()
    );

    let landed_all = wharf_testkit::eventually(LONG, || {
        let uris = by_uri(&landed(&s3));
        let missing = accepted
            .iter()
            .filter(|n| !uris.contains_key(&uri(**n)))
            .count();
        async move { missing == 0 }
    })
    .await;
    let uris = by_uri(&landed(&s3));
    let lost: Vec<usize> = accepted
        .iter()
        .copied()
        .filter(|n| !uris.contains_key(&uri(*n)))
        .collect();
    assert!(
        landed_all,
        "{} documents answered 200 never landed, e.g. {:?}; web: {:?}; worker: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)],
        web.output().iter().rev().take(5).collect::<Vec<_>>(),
        worker.output().iter().rev().take(5).collect::<Vec<_>>()
    );
}

/// The same with `REDIS_MIN_REPLICAS_ACK=0`: replication is asynchronous, so documents answered
/// 200 just before the kill may be lost. Reports how many; asserts only what must hold anyway.
#[tokio::test(flavor = "multi_thread")]
async fn without_replica_acknowledgement_a_killed_master_may_lose_its_tail() {
    aws_env();
    let mut cluster = RedisCluster::start(3, 1);
    let s3 = S3Server::start(BUCKET);
    let (_web, port, _worker) = start_roles(&cluster, &s3, &[]).await;

    let report = kill_a_master_under_load(&mut cluster, port, false, Duration::from_secs(10)).await;
    let accepted = report.accepted();
    assert!(
        report.recovery().is_some(),
        "no recovery: {}",
        report.summary()
    );
    // Everything the surviving masters hold drains; then whatever is missing was lost.
    let drained = wharf_testkit::eventually(LONG, || {
        let left: u64 = cluster
            .masters()
            .into_iter()
            .map(|m| {
                let mut conn = cluster.connection(m);
                Shard::all(SHARDS)
                    .filter(|s| cluster.master_for_key(&s.stream()) == m)
                    .map(|s| {
                        redis::cmd("XLEN")
                            .arg(s.stream())
                            .query::<u64>(&mut conn)
                            .unwrap_or(0)
                    })
                    .sum::<u64>()
            })
            .sum();
        async move { left == 0 }
    })
    .await;
    assert!(drained, "the queue never drained after the failover");
    let uris = by_uri(&landed(&s3));
    let lost = accepted
        .iter()
        .filter(|n| !uris.contains_key(&uri(**n)))
        .count();
    eprintln!(
        "REDIS_MIN_REPLICAS_ACK=0: {}; {lost} of {} documents answered 200 were lost",
        report.summary(),
        accepted.len()
    );
    assert!(!accepted.is_empty());
}

/// The eviction guard and memory admission read every master, not just the seed node: one
/// master with `allkeys-lru` stops both roles (exit 2), and `__heartbeat__` reports the fullest
/// master's `maxmemory`.
#[tokio::test(flavor = "multi_thread")]
async fn every_master_is_checked_for_eviction_and_memory() {
    aws_env();
    let cluster = RedisCluster::start(3, 1);
    let s3 = S3Server::start(BUCKET);
    let masters = cluster.masters();
    let seed = cluster.seed_port();
    let other = *masters
        .iter()
        .find(|m| **m != seed)
        .unwrap_or_else(|| panic!("no master besides the seed {seed}: {masters:?}"));
    let config_set = |port: u16, name: &str, value: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query(&mut cluster.connection(port))
            .unwrap_or_else(|e| panic!("CONFIG SET {name} on {port}: {e}"));
    };
    config_set(other, "maxmemory-policy", "allkeys-lru");
    let vars = cluster_env(&cluster, &[]);
    let refs = as_refs(&vars);
    let mut worker = spawn_worker(&worker_env(seed, &s3, &refs));
    let status = worker
        .wait_exit(LONG)
        .unwrap_or_else(|| panic!("worker ran on an evicting master: {:?}", worker.output()));
    assert_eq!(status.code(), Some(2), "{:?}", worker.output());
    let output = worker.output().join("\n");
    assert!(output.contains("of 3 in the cluster"), "{output}");

    config_set(other, "maxmemory-policy", "noeviction");
    // Different limits per master: the heartbeat reports the fullest one, whichever it is.
    for (i, master) in masters.iter().enumerate() {
        config_set(
            *master,
            "maxmemory",
            &format!("{}", (i + 1) * 64 * 1024 * 1024),
        );
    }
    let (_web, port) = start_web(seed, &refs).await;
    let body: serde_json::Value = reqwest::get(format!("http://127.0.0.1:{port}/__heartbeat__"))
        .await
        .unwrap_or_else(|e| panic!("heartbeat: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("heartbeat body: {e}"));
    assert_eq!(body["checks"]["redis_memory"], "ok", "{body}");
    assert_eq!(
        body["details"]["redis_memory"]["maxmemory_bytes"],
        64 * 1024 * 1024,
        "the smallest limit is the fullest master with equal use: {body}"
    );
}
