//! `RedisServer` options and replication, against real redis-servers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::time::Duration;

use wharf_testkit::redis_server::RedisServer;

fn config_get(redis: &RedisServer, name: &str) -> String {
    let pair: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query(&mut redis.connection())
        .unwrap_or_else(|e| panic!("CONFIG GET {name}: {e}"));
    pair.get(1)
        .cloned()
        .unwrap_or_else(|| panic!("no config {name}"))
}

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .unwrap_or_else(|e| panic!("GET {key}: {e}"))
}

fn set(redis: &RedisServer, key: &str, value: &str) {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query::<()>(&mut redis.connection())
        .unwrap_or_else(|e| panic!("SET {key}: {e}"));
}

fn role(redis: &RedisServer) -> String {
    let info = redis.info("replication");
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .map(|r| r.trim().to_string())
        .unwrap_or_else(|| panic!("no role in INFO replication:\n{info}"))
}

#[test]
fn start_with_passes_extra_arguments_and_restart_keeps_them() {
    let mut redis =
        RedisServer::start_with(&["--maxmemory", "32mb", "--maxmemory-policy", "noeviction"]);
    assert_eq!(config_get(&redis, "maxmemory-policy"), "noeviction");
    assert_eq!(
        config_get(&redis, "maxmemory"),
        (32 * 1024 * 1024).to_string()
    );
    assert_eq!(redis.args().len(), 4);

    let pid = redis.pid().expect("a running server has a pid");
    redis.stop();
    assert_eq!(redis.pid(), None);
    redis.restart();
    assert_ne!(redis.pid(), Some(pid), "a new process after restart");
    assert_eq!(config_get(&redis, "maxmemory-policy"), "noeviction");
}

#[test]
fn replica_of_syncs_and_roles_can_be_swapped() {
    let primary = RedisServer::start();
    set(&primary, "before", "1");

    let replica = primary.replica_of();
    assert_eq!(role(&replica), "slave");
    assert_eq!(get(&replica, "before").as_deref(), Some("1"), "first sync");

    let mut conn = primary.connection();
    set(&primary, "after", "2");
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(1000)
        .query(&mut conn)
        .unwrap_or_else(|e| panic!("WAIT: {e}"));
    assert_eq!(acked, 1);
    assert_eq!(get(&replica, "after").as_deref(), Some("2"));

    // Failover by hand: the replica takes over, the old primary follows it.
    replica.promote();
    assert_eq!(role(&replica), "master");
    set(&replica, "promoted", "3");
    primary.demote_to("127.0.0.1", replica.port());
    replica.wait_for_replica(primary.port(), Duration::from_secs(10));
    assert_eq!(role(&primary), "slave");
    assert_eq!(get(&primary, "promoted").as_deref(), Some("3"));
}
