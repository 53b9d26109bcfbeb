//! A three-master Redis Cluster fails over when a master is killed, without losing a write its
//! replica acknowledged; the killed master rejoins as a replica. One cluster for the whole binary.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::time::{Duration, Instant};

use wharf_testkit::cluster::{RedisCluster, SLOTS};

#[test]
fn a_killed_master_fails_over_without_losing_an_acknowledged_write() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    eprintln!(
        "cluster of 3 masters and 3 replicas healthy after {:?}",
        started.elapsed()
    );

    assert_eq!(cluster.ports().len(), 6);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "masters: {masters:?}");
    let mut slots = 0u32;
    for &master in &masters {
        let owned: u32 = cluster
            .slots_of(master)
            .iter()
            .map(|&(a, b)| u32::from(b - a) + 1)
            .sum();
        assert!(owned > 0, "master {master} owns no slot");
        slots += owned;
        assert_eq!(
            cluster.replicas_of(master).len(),
            1,
            "one replica of {master}"
        );
        assert!(cluster.pid(master).is_some());
    }
    assert_eq!(slots, u32::from(SLOTS));
    assert_eq!(cluster.master_of_slot(0), masters[0]);

    let key = "wharf:failover";
    let master = cluster.master_for_key(key);
    assert_eq!(cluster.master_of_slot(cluster.slot_of(key)), master);
    let mut conn = cluster.connection(master);
    redis::cmd("SET")
        .arg(key)
        .arg("kept")
        .query::<()>(&mut conn)
        .unwrap_or_else(|e| panic!("SET: {e}"));
    // WAIT returns as soon as the replica acknowledges; the deadline only has to outlast a
    // loaded machine (500 ms did not, with two test runs sharing two cores).
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("WAIT: {e}"));
    assert_eq!(acked, 1, "the replica acknowledged the write");
    let replica = cluster.replicas_of(master)[0];

    cluster.kill(master);
    assert!(!cluster.is_running(master));
    let took = cluster.wait_for_failover(master, Duration::from_secs(30));
    eprintln!("failover of master {master} to {replica} took {took:?}");

    assert_eq!(cluster.master_for_key(key), replica);
    let value: Option<String> = redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.connection(replica))
        .unwrap_or_else(|e| panic!("GET: {e}"));
    assert_eq!(value.as_deref(), Some("kept"));
    let masters_now = cluster.masters();
    assert_eq!(masters_now.len(), 3, "masters: {masters_now:?}");
    assert!(!masters_now.contains(&master));

    let rejoin = Instant::now();
    cluster.restart(master);
    cluster.wait_healthy();
    eprintln!(
        "old master {master} rejoined as a replica and synced in {:?}",
        rejoin.elapsed()
    );
    assert_eq!(cluster.replicas_of(replica), vec![master]);
}
