//! End to end through HTTP: the real `wharf web` and `wharf worker` processes, submissions posted to /submit, and `wharf canary`.

mod worker_support;

use std::time::Duration;

use wharf_testkit::ports::free_port;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;
use worker_support::*;

const LONG: Duration = Duration::from_secs(60);

fn web_env(redis_port: u16, port: u16) -> Vec<(String, String)> {
    vec![
        ("REDIS_HOST".into(), "127.0.0.1".into()),
        ("REDIS_PORT".into(), redis_port.to_string()),
        ("HOST".into(), "127.0.0.1".into()),
        ("PORT".into(), port.to_string()),
        ("VERSION_FILE".into(), "/nonexistent/version.json".into()),
    ]
}

/// Starts `wharf web` on a free port against `redis_port` and waits until it answers.
async fn start_web(redis_port: u16) -> (WorkerProcess, u16) {
    let port = free_port();
    // Same helper, different role: `wharf web`.
    let mut web = WorkerProcess::spawn_role("web", &web_env(redis_port, port));
    web.name = "web";
    let client = reqwest::Client::new();
    let up = wharf_testkit::eventually(LONG, || {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/__lbheartbeat__"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    assert!(up, "web never answered: {:?}", web.output());
    (web, port)
}

/// Submissions posted to the web role's HTTP endpoint land in S3: every body byte-identical, the
/// edge attributes present, the key layout as documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_submissions_land_in_s3_intact() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(redis.port()).await;
    let worker = WorkerProcess::spawn(&worker_env(
        redis.port(),
        &s3,
        &[("BATCH_MAX_AGE_MS", "500"), ("BATCH_MAX_DOCUMENTS", "25")],
    ));

    let client = reqwest::Client::new();
    let mut sent = Vec::new();
    for n in 0..60usize {
        let doc_id = format!("{:08x}-0000-4000-8000-{:012x}", n, n);
        let (ns, ty, ver) = if n % 2 == 0 {
            ("eng-workflow", "build", "1")
        } else {
            ("other", "event", "3")
        };
        let body: Vec<u8> = (0..(1 + n * 31 % 2000))
            .map(|i| ((i * 11 + n) % 256) as u8)
            .collect();
        let path = format!("/submit/{ns}/{ty}/{ver}/{doc_id}");
        let response = client
            .post(format!("http://127.0.0.1:{port}{path}"))
            .header("user-agent", format!("wharf-test/{n}"))
            .body(body.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("post: {e}"));
        assert!(
            response.status().is_success(),
            "{} for {path}",
            response.status()
        );
        sent.push((path, ns, ty, ver, body));
    }
    assert!(
        wait_landed(&s3, sent.len(), LONG).await,
        "worker output: {:?}",
        worker.output()
    );
    let docs = landed(&s3);
    assert_eq!(docs.len(), sent.len());
    for (path, ns, ty, ver, body) in &sent {
        let doc = docs
            .iter()
            .find(|d| &d.attributes["uri"] == path)
            .unwrap_or_else(|| panic!("{path} not in S3"));
        assert_eq!(&doc.body, body, "body of {path}");
        assert_eq!(
            doc.attributes.get("method").map(String::as_str),
            Some("POST")
        );
        assert!(doc.attributes.contains_key("protocol"));
        let parts: Vec<&str> = doc.key.split('/').collect();
        assert_eq!(parts.len(), 6, "{}", doc.key);
        assert_eq!((parts[0], parts[1], parts[2]), (*ns, *ty, *ver));
        assert_eq!(parts[3].len(), 10, "YYYY-MM-DD: {}", doc.key);
        assert_eq!(parts[4].len(), 2, "HH: {}", doc.key);
        assert!(parts[5].ends_with(".ndjson.gz"));
    }
}

fn canary(vars: &[(String, String)], url: &str, timeout_s: u64) -> (bool, String) {
    let timeout = timeout_s.to_string();
    let out = worker_support::wharf_command(&["canary", "--url", url, "--timeout", &timeout], vars)
        .output()
        .unwrap_or_else(|e| panic!("run canary: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `wharf canary` succeeds against a live web+worker pair (and cleans up), and fails clearly
/// when no worker is running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_succeeds_with_a_worker_and_fails_clearly_without() {
    let redis = RedisServer::start();
    let s3 = S3Server::start(BUCKET);
    let (_web, port) = start_web(redis.port()).await;
    let vars = worker_env(redis.port(), &s3, &[("BATCH_MAX_AGE_MS", "300")]);
    let mut worker = WorkerProcess::spawn(&vars);
    let url = format!("http://127.0.0.1:{port}");

    let (ok, text) = tokio::task::spawn_blocking({
        let vars = vars.clone();
        let url = url.clone();
        move || canary(&vars, &url, 30)
    })
    .await
    .unwrap();
    assert!(ok, "canary failed with a live pair: {text}");
    assert!(text.contains("landed in S3"), "{text}");
    assert!(
        s3.keys().is_empty(),
        "the canary deletes what it wrote: {:?}",
        s3.keys()
    );

    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(10)).is_some());
    let (ok, text) = tokio::task::spawn_blocking(move || canary(&vars, &url, 3))
        .await
        .unwrap();
    assert!(!ok, "canary succeeded without a worker: {text}");
    assert!(text.contains("did not reach"), "unclear failure: {text}");
}
