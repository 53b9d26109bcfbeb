//! A one-master Redis Cluster (built without `redis-cli --cluster create`, which wants three):
//! a graceful failover swaps the roles, and a forced takeover replaces a killed master.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::time::Instant;

use wharf_testkit::cluster::RedisCluster;

fn get(cluster: &RedisCluster, port: u16, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut cluster.connection(port))
        .unwrap_or_else(|e| panic!("GET {key} on {port}: {e}"))
}

#[test]
fn one_master_fails_over_by_hand() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start(1, 1);
    eprintln!(
        "cluster of 1 master and 1 replica healthy after {:?}",
        started.elapsed()
    );
    let [first] = cluster.masters()[..] else {
        panic!("one master expected: {:?}", cluster.masters());
    };
    assert_eq!(cluster.slots_of(first), vec![(0, 16383)]);
    let [second] = cluster.replicas_of(first)[..] else {
        panic!("one replica expected");
    };

    let mut conn = cluster.connection(first);
    redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query::<()>(&mut conn)
        .unwrap_or_else(|e| panic!("SET: {e}"));
    // WAIT returns as soon as the replica acknowledges; the deadline only has to outlast a
    // loaded machine (500 ms did not, with two test runs sharing two cores).
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("WAIT: {e}"));
    assert_eq!(acked, 1);

    cluster.failover_to(second);
    assert_eq!(cluster.masters(), vec![second]);
    assert_eq!(cluster.master_for_key("k"), second);
    cluster.wait_healthy();
    assert_eq!(cluster.replicas_of(second), vec![first]);

    // No majority of masters is left to vote, so only a takeover brings the cluster back.
    cluster.kill(second);
    cluster.takeover(first);
    assert_eq!(cluster.master_for_key("k"), first);
    assert_eq!(get(&cluster, first, "k").as_deref(), Some("v"));
}
