//! A real Redis Cluster (masters and their replicas, one `redis-server` each) on loopback free
//! ports, each node in its own temporary directory; every node is killed and removed on drop.
//!
//! Nodes can be killed (SIGKILL, by pid) and restarted from their `nodes.conf`, so tests can watch
//! a real failover: [`RedisCluster::wait_for_failover`] measures how long the cluster took to
//! promote a replica. The node timeout is 1 s, so a failover takes a few seconds, not fifteen.
//! Needs redis 7 or newer (`--cluster-port`, `CLUSTER ADDSLOTSRANGE`).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;
use crate::redis_server::{
    cli_bin, info, info_field, query, replica_online, spawn_server, wait_until_ready,
};

/// Every slot of a cluster: 0..=16383.
pub const SLOTS: u16 = 16384;

/// How long [`RedisCluster::start`] and [`RedisCluster::wait_healthy`] wait for the cluster to settle.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Redis Cluster; nodes are addressed by their client port.
pub struct RedisCluster {
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    /// The cluster bus port, chosen free like the client port: the default (port + 10000) can
    /// be taken, or above 65535.
    bus_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// When [`RedisCluster::kill`] killed it, to time the failover from.
    killed_at: Option<Instant>,
}

impl Node {
    fn spawn(&mut self) -> Result<(), String> {
        assert!(
            self.child.is_none(),
            "redis node {} already running",
            self.port
        );
        let bus_port = self.bus_port.to_string();
        let cluster_args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
            "--cluster-port",
            &bus_port,
        ];
        self.child = Some(spawn_server(self.port, self.dir.path(), &cluster_args));
        self.killed_at = None;
        wait_until_ready(self.port, &mut self.child, self.dir.path())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.killed_at = Some(Instant::now());
        }
    }
}

/// One line of `CLUSTER NODES`, as far as tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeView {
    id: String,
    port: u16,
    flags: Vec<String>,
    /// The master's id for a replica; `-` for a master.
    master_id: String,
    /// Owned slot ranges, inclusive (migrating and importing slots left out).
    slots: Vec<(u16, u16)>,
}

impl NodeView {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    /// Flagged `fail` (agreed dead) or `fail?` (this node's suspicion).
    fn is_failing(&self) -> bool {
        self.has_flag("fail") || self.has_flag("fail?")
    }

    fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }
}

/// Parses `CLUSTER NODES`: `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent>
/// <pong-recv> <config-epoch> <link-state> <slot> ...`.
fn parse_nodes(text: &str) -> Vec<NodeView> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let addr = fields[1].split('@').next()?;
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|n| (n, n)),
                })
                .collect();
            Some(NodeView {
                id: fields[0].to_string(),
                port,
                flags: fields[2].split(',').map(str::to_string).collect(),
                master_id: fields[3].to_string(),
                slots,
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each, slots split evenly
    /// between the masters, and returns once the cluster is healthy (see
    /// [`RedisCluster::wait_healthy`]): no failover can happen before every replica synced.
    ///
    /// Three or more masters are joined with `redis-cli --cluster create` (from PATH, or
    /// `$REDIS_CLI_BIN`), as an operator would; `redis-cli` refuses fewer than three, so one or
    /// two masters are joined by hand (`CLUSTER ADDSLOTSRANGE`, `MEET`, `REPLICATE`). With fewer
    /// than three masters no automatic failover can happen (no majority of masters survives to
    /// vote): use [`RedisCluster::takeover`].
    pub fn start(masters: usize, replicas_per_master: usize) -> Self {
        assert!(masters >= 1, "a cluster needs at least one master");
        let count = masters * (1 + replicas_per_master);
        // The cluster is built in place, so a panic half way through still kills every node.
        let mut cluster = Self {
            nodes: Vec::with_capacity(count),
        };
        let mut taken = std::collections::HashSet::new();
        for _ in 0..count {
            cluster.nodes.push(start_node(&mut taken));
        }
        if masters >= 3 {
            cluster.create_with_cli(replicas_per_master);
        } else {
            cluster.create_by_hand(masters);
        }
        cluster.wait_healthy();
        cluster
    }

    fn create_with_cli(&self, replicas_per_master: usize) {
        let bin = cli_bin();
        let log_path = self.nodes[0].dir.path().join("cluster-create.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("clone log file: {e}"));
        let mut child = Command::new(&bin)
            .arg("--cluster")
            .arg("create")
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .arg("--cluster-replicas")
            .arg(replicas_per_master.to_string())
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start {bin} (installed with redis-server, or set REDIS_CLI_BIN): {e}")
            });
        // redis-cli polls until the nodes agree; it should never take long, but must never hang a test.
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-cli --cluster create did not finish within 60 s:\n{}",
                        std::fs::read_to_string(&log_path).unwrap_or_default()
                    );
                }
                Err(e) => panic!("wait for redis-cli: {e}"),
            }
        };
        assert!(
            status.success(),
            "redis-cli --cluster create failed ({status}):\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    fn create_by_hand(&self, masters: usize) {
        let first = &self.nodes[0];
        for (i, node) in self.nodes[..masters].iter().enumerate() {
            let start = (usize::from(SLOTS) * i / masters) as u16;
            let end = (usize::from(SLOTS) * (i + 1) / masters - 1) as u16;
            admin(
                node.port,
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(start)
                    .arg(end),
            );
            // Distinct epochs up front, as redis-cli does, instead of waiting for the cluster to
            // break the tie between masters that all start at epoch 0.
            admin(
                node.port,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            );
        }
        for node in &self.nodes[1..] {
            admin(
                node.port,
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(first.port)
                    .arg(first.bus_port),
            );
        }
        // A node can only replicate a master it knows of.
        let ids: Vec<String> = self.nodes[..masters]
            .iter()
            .map(|n| {
                query::<String>(n.port, redis::cmd("CLUSTER").arg("MYID"))
                    .unwrap_or_else(|e| panic!("CLUSTER MYID on {}: {e}", n.port))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes[masters..] {
            loop {
                let known = cluster_nodes(node.port).unwrap_or_default();
                if ids.iter().all(|id| known.iter().any(|v| &v.id == id)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "redis node {} did not learn of every master within 30 s",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for (i, node) in self.nodes[masters..].iter().enumerate() {
            admin(
                node.port,
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&ids[i % masters]),
            );
        }
    }

    /// A running node's port, to seed a cluster client with.
    pub fn seed_port(&self) -> u16 {
        self.running()
            .next()
            .unwrap_or_else(|| panic!("no cluster node is running"))
            .port
    }

    /// Every node's port (running or killed), in the order they were started.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:{port}` for every node, to seed a cluster client with.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The process id of the node on `port` while it runs.
    pub fn pid(&self, port: u16) -> Option<u32> {
        self.node(port).child.as_ref().map(Child::id)
    }

    /// Whether the node on `port` runs (it was not killed, or was restarted since).
    pub fn is_running(&self, port: u16) -> bool {
        self.node(port).child.is_some()
    }

    /// The masters that own slots now, as a running node sees them, in slot order (the first
    /// owns slot 0). A killed master stays listed until the cluster agrees it failed.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<(u16, u16)> = self
            .view()
            .into_iter()
            .filter(|v| v.is_master() && !v.has_flag("fail") && !v.slots.is_empty())
            .map(|v| (v.slots.iter().map(|r| r.0).min().unwrap_or(0), v.port))
            .collect();
        masters.sort_unstable();
        masters.into_iter().map(|(_, port)| port).collect()
    }

    /// The replicas of the master on `master_port`, as a running node sees them.
    pub fn replicas_of(&self, master_port: u16) -> Vec<u16> {
        let view = self.view();
        let Some(master) = view.iter().find(|v| v.port == master_port) else {
            return Vec::new();
        };
        let mut replicas: Vec<u16> = view
            .iter()
            .filter(|v| v.master_id == master.id)
            .map(|v| v.port)
            .collect();
        replicas.sort_unstable();
        replicas
    }

    /// The slot ranges (inclusive) the node on `port` owns, as a running node sees them.
    pub fn slots_of(&self, port: u16) -> Vec<(u16, u16)> {
        self.view()
            .into_iter()
            .find(|v| v.port == port)
            .map(|v| v.slots)
            .unwrap_or_default()
    }

    /// The port of the master that owns `slot`, as a running node sees it (during a failover
    /// that may still be the dead one).
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        assert!(slot < SLOTS, "slot {slot} out of range");
        self.view()
            .into_iter()
            .find(|v| v.is_master() && v.owns(slot))
            .map(|v| v.port)
            .unwrap_or_else(|| panic!("no master owns slot {slot}"))
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`, so hash tags count as they do for clients).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.seed_port();
        query(port, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .unwrap_or_else(|e| panic!("CLUSTER KEYSLOT on {port}: {e}"))
    }

    /// The port of the master that owns `key`'s slot.
    pub fn master_for_key(&self, key: &str) -> u16 {
        self.master_of_slot(self.slot_of(key))
    }

    /// A synchronous connection to one node (no redirections followed), for test assertions.
    pub fn connection(&self, port: u16) -> redis::Connection {
        crate::redis_server::connect(port)
            .unwrap_or_else(|e| panic!("connect to redis node {port}: {e}"))
    }

    /// Kills the node on `port` with SIGKILL (by its pid, never by name); it stays in the cluster,
    /// unreachable, until [`RedisCluster::restart`].
    pub fn kill(&mut self, port: u16) {
        let node = self.node_mut(port);
        assert!(node.child.is_some(), "redis node {port} is not running");
        node.kill();
    }

    /// Starts the node on `port` again from its `nodes.conf`, so it rejoins the cluster (as a
    /// replica if it was a master that failed over meanwhile); blocks until it answers PING.
    /// [`RedisCluster::wait_healthy`] waits until the others see it back and it has synced.
    pub fn restart(&mut self, port: u16) {
        if let Err(e) = self.node_mut(port).spawn() {
            panic!("restart redis node {port}: {e}");
        }
    }

    /// Blocks until another node took over every slot of the master on `old_master_port` and
    /// every running node says `cluster_state:ok`; returns the time since that master was
    /// killed with [`RedisCluster::kill`] (or since this call, if it was not). Panics after `timeout`.
    pub fn wait_for_failover(&self, old_master_port: u16, timeout: Duration) -> Duration {
        let started = Instant::now();
        let since = self.node(old_master_port).killed_at.unwrap_or(started);
        let deadline = started + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.failed_over(old_master_port) {
                Ok(()) => return since.elapsed(),
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no failover of redis master {old_master_port} within {timeout:?}: {last}");
    }

    fn failed_over(&self, old_master_port: u16) -> Result<(), String> {
        for node in self.running().filter(|n| n.port != old_master_port) {
            let state = cluster_state(node.port)?;
            if state != "ok" {
                return Err(format!("node {} says cluster_state:{state}", node.port));
            }
            let view = cluster_nodes(node.port).map_err(|e| e.to_string())?;
            if let Some(old) = view.iter().find(|v| v.port == old_master_port) {
                if old.is_master() && !old.slots.is_empty() {
                    return Err(format!(
                        "node {} still sees {old_master_port} owning slots ({})",
                        node.port,
                        old.flags.join(",")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Graceful failover (`CLUSTER FAILOVER` on a replica, its master alive): the replica on
    /// `replica_port` becomes master without losing writes; blocks until every running node
    /// agrees and says `cluster_state:ok`.
    pub fn failover_to(&self, replica_port: u16) {
        self.promote(replica_port, None);
    }

    /// Forced failover (`CLUSTER FAILOVER TAKEOVER`): the replica on `replica_port` becomes master
    /// without its master's or the other masters' agreement, which is the only way when no
    /// majority of masters survives (as in a one-master cluster); blocks like [`RedisCluster::failover_to`].
    pub fn takeover(&self, replica_port: u16) {
        self.promote(replica_port, Some("TAKEOVER"));
    }

    fn promote(&self, replica_port: u16, mode: Option<&str>) {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("FAILOVER");
        if let Some(mode) = mode {
            cmd.arg(mode);
        }
        admin(replica_port, &cmd);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.promoted(replica_port) {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis node {replica_port} did not become master within 30 s: {last}");
    }

    fn promoted(&self, port: u16) -> Result<(), String> {
        for node in self.running() {
            if cluster_state(node.port)? != "ok" {
                return Err(format!("node {} says cluster_state is not ok", node.port));
            }
            let view = cluster_nodes(node.port).map_err(|e| e.to_string())?;
            let promoted = view
                .iter()
                .any(|v| v.port == port && v.is_master() && !v.slots.is_empty());
            if !promoted {
                return Err(format!("node {} does not see {port} as master", node.port));
            }
        }
        Ok(())
    }

    /// Blocks (up to 60 s, then panics with what is still wrong) until the cluster is healthy:
    /// every running node says `cluster_state:ok` with all slots served and knows every node,
    /// all running nodes agree on who is master and who replicates whom, none of them is seen
    /// as failing, and every running replica is `state=online` on its master.
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.health() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis cluster not healthy within {HEALTHY_TIMEOUT:?}: {last}");
    }

    fn health(&self) -> Result<(), String> {
        let running: Vec<u16> = self.running().map(|n| n.port).collect();
        let mut agreed: Option<(u16, BTreeMap<u16, String>)> = None;
        for &port in &running {
            let text = cluster_info(port)?;
            for (field, want) in [
                ("cluster_state", "ok".to_string()),
                ("cluster_slots_ok", SLOTS.to_string()),
                ("cluster_known_nodes", self.nodes.len().to_string()),
            ] {
                let got = info_field(&text, field).unwrap_or("?");
                if got != want {
                    return Err(format!("node {port} says {field}:{got}, not {want}"));
                }
            }
            let view = cluster_nodes(port).map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?;
            if let Some(v) = view
                .iter()
                .find(|v| running.contains(&v.port) && v.is_failing())
            {
                return Err(format!("node {port} sees running node {} failing", v.port));
            }
            // Roles of the running nodes, by port: "master" or the port of the master replicated.
            let ids: BTreeMap<&str, u16> = view.iter().map(|v| (v.id.as_str(), v.port)).collect();
            let roles: BTreeMap<u16, String> = view
                .iter()
                .filter(|v| running.contains(&v.port))
                .map(|v| {
                    let role = match ids.get(v.master_id.as_str()) {
                        Some(master) => master.to_string(),
                        None => "master".to_string(),
                    };
                    (v.port, role)
                })
                .collect();
            match &agreed {
                None => agreed = Some((port, roles)),
                Some((first, theirs)) if *theirs != roles => {
                    return Err(format!(
                        "nodes {first} and {port} disagree on roles: {theirs:?} against {roles:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        let Some((_, roles)) = agreed else {
            return Err("no cluster node is running".into());
        };
        for (replica, master) in &roles {
            let Ok(master) = master.parse::<u16>() else {
                continue;
            };
            if !running.contains(&master) {
                return Err(format!(
                    "replica {replica} replicates {master}, which is down"
                ));
            }
            let text = info(master, "replication").map_err(|e| format!("INFO on {master}: {e}"))?;
            if !replica_online(&text, *replica) {
                return Err(format!(
                    "replica {replica} is not online on master {master}"
                ));
            }
        }
        Ok(())
    }

    fn running(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The cluster as the first running node that answers sees it.
    fn view(&self) -> Vec<NodeView> {
        let mut last = String::from("no cluster node is running");
        for node in self.running() {
            match cluster_nodes(node.port) {
                Ok(view) => return view,
                Err(e) => last = format!("CLUSTER NODES on {}: {e}", node.port),
            }
        }
        panic!("{last}");
    }

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no redis node on port {port} in this cluster"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no redis node on port {port} in this cluster"))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Starts one node on ports not used by the cluster so far; a node that could not bind (its
/// free port taken meanwhile) is tried again on new ports.
fn start_node(taken: &mut std::collections::HashSet<u16>) -> Node {
    let mut fresh_port = || loop {
        let port = free_port();
        if taken.insert(port) {
            return port;
        }
    };
    let mut last = String::new();
    for _ in 0..3 {
        let mut node = Node {
            port: fresh_port(),
            bus_port: fresh_port(),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")),
            child: None,
            killed_at: None,
        };
        match node.spawn() {
            Ok(()) => return node,
            Err(e) => last = e,
        }
    }
    panic!("could not start a redis cluster node: {last}");
}

/// Runs an admin command that answers `OK`, panicking with the node and error otherwise.
fn admin(port: u16, cmd: &redis::Cmd) {
    query::<()>(port, cmd).unwrap_or_else(|e| panic!("{cmd:?} on redis node {port}: {e}"));
}

fn cluster_info(port: u16) -> Result<String, String> {
    query(port, redis::cmd("CLUSTER").arg("INFO"))
        .map_err(|e| format!("CLUSTER INFO on {port}: {e}"))
}

fn cluster_state(port: u16) -> Result<String, String> {
    let text = cluster_info(port)?;
    Ok(info_field(&text, "cluster_state")
        .unwrap_or("?")
        .to_string())
}

fn cluster_nodes(port: u16) -> redis::RedisResult<Vec<NodeView>> {
    query::<String>(port, redis::cmd("CLUSTER").arg("NODES")).map(|text| parse_nodes(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
3494dd 127.0.0.1:21002@23002 master - 0 1796102272964 3 connected 10923-16383
6adffc 127.0.0.1:21001@23001 master,fail - 0 1796102272663 2 disconnected
01477c 127.0.0.1:21000@23000,host myself,master - 0 0 1 connected 0-5460 5461 [5462->-6adffc]
9f00aa 127.0.0.1:21003@23003 slave 01477c 0 0 1 connected
";
        let view = parse_nodes(text);
        assert_eq!(view.len(), 4);
        assert_eq!(view[0].port, 21002);
        assert_eq!(view[0].slots, vec![(10923, 16383)]);
        assert!(view[1].has_flag("fail") && view[1].is_failing() && view[1].slots.is_empty());
        assert_eq!(view[2].port, 21000);
        assert_eq!(view[2].slots, vec![(0, 5460), (5461, 5461)]);
        assert!(view[2].owns(5461) && !view[2].owns(5462));
        assert!(!view[3].is_master());
        assert_eq!(view[3].master_id, "01477c");
    }
}
