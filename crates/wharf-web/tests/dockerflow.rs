//! The Dockerflow endpoints against a real redis-server: shapes, status codes, outage and recovery, and heartbeat caching.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod common;

use std::time::Duration;

use common::spawn_app;
use wharf_testkit::eventually;

fn mark_worker_live(app: &common::TestApp) {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 600_000;
    let mut conn = app.redis.connection();
    let _: () = redis::cmd("ZADD")
        .arg("wharf:workers:live")
        .arg(expiry)
        .arg("test-worker")
        .query(&mut conn)
        .unwrap();
}

async fn heartbeat(app: &common::TestApp) -> (u16, serde_json::Value) {
    let r = app.get("/__heartbeat__").await;
    let status = r.status().as_u16();
    assert_eq!(r.headers()["content-type"], "application/json");
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn lbheartbeat_is_empty_and_needs_no_redis() {
    let mut app = spawn_app(&[]).await;
    app.redis.stop();
    let r = app.get("/__lbheartbeat__").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn heartbeat_reports_each_check_and_warns_without_workers() {
    let app = spawn_app(&[]).await;
    let (status, body) = heartbeat(&app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "warning", "{body}");
    assert_eq!(body["checks"]["redis"], "ok");
    assert_eq!(
        body["checks"]["redis_memory"], "ok",
        "no maxmemory: only the depth limit"
    );
    assert_eq!(body["checks"]["queue_depth"], "ok");
    assert_eq!(body["checks"]["dead_letters"], "ok");
    assert_eq!(body["checks"]["workers"], "warning");
    assert_eq!(body["details"]["workers"]["live"], 0);
    assert_eq!(body["details"]["queue_depth"]["backlog"], 0);
}

#[tokio::test]
async fn heartbeat_goes_error_when_redis_stops_and_ok_when_it_returns() {
    let mut app = spawn_app(&[("HEARTBEAT_CACHE_MS", "100")]).await;
    mark_worker_live(&app);
    let (status, body) = heartbeat(&app).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "{body}"
    );

    app.redis.stop();
    // The cached "ok" (HEARTBEAT_CACHE_MS) may be served until it expires; then the next check
    // finds Redis gone.
    let url = app.url("/__heartbeat__");
    let client = app.client.clone();
    let failing = eventually(Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(&url).send().await.unwrap().status() == 500 }
    })
    .await;
    assert!(failing, "heartbeat never reported the stopped Redis");
    let (status, body) = heartbeat(&app).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["status"], "error");
    assert_eq!(body["checks"]["redis"], "error");
    assert!(
        body["details"]["redis"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{body}"
    );

    // Same port, empty data: the live-worker record is gone with the old process.
    app.redis.restart();
    mark_worker_live(&app);
    let url = app.url("/__heartbeat__");
    let client = app.client.clone();
    let back = eventually(Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.get(&url).send().await.unwrap();
            r.status() == 200 && r.json::<serde_json::Value>().await.unwrap()["status"] == "ok"
        }
    })
    .await;
    assert!(back, "heartbeat returns to ok without restarting wharf");
}

#[tokio::test]
async fn heartbeat_warns_on_dead_letters_and_deep_queue() {
    let app = spawn_app(&[("QUEUE_DEPTH_WARNING", "2")]).await;
    mark_worker_live(&app);
    let mut conn = app.redis.connection();
    let _: String = redis::cmd("XADD")
        .arg("wharf:{2}:dead")
        .arg("*")
        .arg("dead_reason")
        .arg("test")
        .query(&mut conn)
        .unwrap();
    for shard in ["wharf:{0}:submissions", "wharf:{3}:submissions"] {
        let _: String = redis::cmd("XADD")
            .arg(shard)
            .arg("*")
            .arg("v")
            .arg("2")
            .query(&mut conn)
            .unwrap();
    }
    let (status, body) = heartbeat(&app).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "warning");
    assert_eq!(body["checks"]["dead_letters"], "warning");
    assert_eq!(body["details"]["dead_letters"]["dead"], 1);
    assert_eq!(body["checks"]["queue_depth"], "warning");
    assert_eq!(body["details"]["queue_depth"]["backlog"], 2);
    assert_eq!(
        body["details"]["queue_depth"]["waiting"], 2,
        "no worker has read them yet"
    );
    assert_eq!(body["details"]["queue_depth"]["inflight"], 0);
}

fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find(|l| l.starts_with(&format!("cmdstat_{command}:")))
        .and_then(|l| l.split("calls=").nth(1))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn two_hundred_concurrent_heartbeats_run_the_checks_once() {
    let app = spawn_app(&[("HEARTBEAT_CACHE_MS", "60000")]).await;
    let mut conn = app.redis.connection();
    // Two PINGs precede the test: the testkit's readiness probe and wharf's start-up probe.
    // Wait for both so that only heartbeat PINGs are counted.
    assert!(
        eventually(Duration::from_secs(5), || async {
            command_calls(&mut app.redis.connection(), "ping") >= 2
        })
        .await
    );
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut conn)
        .unwrap();

    let requests = (0..200).map(|_| {
        let client = app.client.clone();
        let url = app.url("/__heartbeat__");
        tokio::spawn(async move { client.get(&url).send().await.map(|r| r.status().as_u16()) })
    });
    let statuses: Vec<u16> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        command_calls(&mut conn, "role"),
        1,
        "one ROLE (does the node take writes?) for 200 concurrent heartbeats"
    );
    assert_eq!(
        command_calls(&mut conn, "zrangebyscore"),
        1,
        "one live-worker count for 200 concurrent heartbeats"
    );
    assert_eq!(
        command_calls(&mut conn, "smembers"),
        1,
        "one read of the shard registry for 200 concurrent heartbeats"
    );
}

/// `repository` of the workspace's `[workspace.package]`, read from the file rather than through
/// Cargo, which gives an empty `CARGO_PKG_REPOSITORY` to a crate that does not inherit it.
fn workspace_repository() -> String {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let package = text
        .split("[workspace.package]")
        .nth(1)
        .expect("a [workspace.package] table");
    let line = package
        .lines()
        .take_while(|l| !l.starts_with('['))
        .find_map(|l| l.trim().strip_prefix("repository"))
        .expect("a workspace repository");
    let url = line.trim().trim_start_matches('=').trim().trim_matches('"');
    assert!(url.starts_with("https://"), "{url}");
    url.to_string()
}

fn git(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether the sources were built from a git checkout, where build.rs can read the commit.
fn in_git_checkout() -> bool {
    git(&["rev-parse", "--git-dir"]).is_some()
}

/// A full commit id this repository has (HEAD may have moved on since the build).
fn is_commit(id: &str) -> bool {
    id.len() == 40
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && git(&["cat-file", "-t", id]).as_deref() == Some("commit")
}

#[tokio::test]
async fn version_falls_back_to_build_values_and_serves_the_file_when_present() {
    let app = spawn_app(&[]).await;
    let body: serde_json::Value = app.get("/__version__").await.json().await.unwrap();
    assert_eq!(
        body["source"],
        workspace_repository(),
        "the workspace's repository URL, read from its Cargo.toml: {body}"
    );
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    assert_eq!(body["build"], "", "no CI build URL is compiled in: {body}");
    let commit = body["commit"].as_str().unwrap();
    if in_git_checkout() {
        assert!(
            is_commit(commit),
            "the commit build.rs read, a commit of this repository: {body}"
        );
    } else {
        assert_eq!(commit, "unknown", "the documented fallback: {body}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("version.json");
    let file = r#"{"source":"https://github.com/example/wharf","version":"1.2.3","commit":"0123abc","build":"https://ci.example/42"}"#;
    std::fs::write(&path, file).unwrap();
    let app = spawn_app(&[("VERSION_FILE", path.to_str().unwrap())]).await;
    let r = app.get("/__version__").await;
    assert_eq!(r.headers()["content-type"], "application/json");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::from_str::<serde_json::Value>(file).unwrap()
    );
}

#[tokio::test]
async fn error_endpoint_is_off_without_a_token_and_guarded_with_one() {
    let app = spawn_app(&[]).await;
    let r = app.get("/__error__?token=x").await;
    assert_eq!(r.status(), 404);

    let app = spawn_app(&[("ERROR_ENDPOINT_TOKEN", "s3cret-token")]).await;
    let r = app.get("/__error__?token=s3cret-token").await;
    assert_eq!(
        r.status(),
        403,
        "the query string no longer carries the token"
    );
    let error = |token: &str| {
        app.client
            .get(app.url("/__error__"))
            .header("X-Error-Token", token)
            .send()
    };
    let r = error("wrong").await.unwrap();
    assert_eq!(r.status(), 403);
    let r = error("s3cret-token").await.unwrap();
    assert_eq!(r.status(), 500, "the panic is caught and answered with 500");
    let r = app.get("/__lbheartbeat__").await;
    assert_eq!(r.status(), 200, "the server survives the panic");
}

#[tokio::test]
async fn graceful_stop_finishes_and_returns_ok() {
    let mut app = spawn_app(&[]).await;
    let r = app.get("/__lbheartbeat__").await;
    assert_eq!(r.status(), 200);
    app.stop().await.unwrap();
    assert!(
        app.client
            .get(app.url("/__lbheartbeat__"))
            .send()
            .await
            .is_err(),
        "no longer accepting"
    );
}
