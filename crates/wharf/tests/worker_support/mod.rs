//! Shared helpers for the worker integration tests: real redis-server, real s3s-fs, submissions and S3 decoding.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use base64::Engine;
use wharf_queue::{Enqueuer, Route, Submission};
use wharf_settings::{Role, Settings};
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::s3::S3Server;

pub const BUCKET: &str = "wharf-test";

/// The AWS SDK reads credentials from the process environment; every test sets the same values.
pub fn aws_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", wharf_testkit::s3::ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", wharf_testkit::s3::SECRET_KEY),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_CONFIG_FILE", "/nonexistent/wharf-test"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wharf-test"),
        ] {
            std::env::set_var(k, v);
        }
    });
}

/// Worker environment for a test: Redis and S3 from the test servers, fast timings, `extra` on top.
pub fn worker_env(redis_port: u16, s3: &S3Server, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("REDIS_HOST".into(), "127.0.0.1".into());
    vars.insert("REDIS_PORT".into(), redis_port.to_string());
    vars.insert("WORKER_POLL_INTERVAL_MS".into(), "50".into());
    vars.insert("WORKER_HEARTBEAT_MS".into(), "1000".into());
    vars.insert("WORKER_MISSED_HEARTBEATS".into(), "3".into());
    vars.insert("LIVENESS_TTL_MS".into(), "3000".into());
    vars.insert("WORKER_FETCH_SIZE".into(), "100".into());
    vars.insert("LOG_FORMAT".into(), "json".into());
    for (k, v) in s3.env() {
        vars.insert(k, v);
    }
    for (k, v) in extra {
        vars.insert((*k).into(), (*v).into());
    }
    vars.into_iter().collect()
}

pub fn settings(vars: &[(String, String)]) -> Settings {
    wharf_settings::from_vars(Role::Worker, vars.iter().cloned())
        .unwrap_or_else(|e| panic!("test settings: {e}"))
}

/// A submission whose `uri` attribute carries a unique document id, with an arbitrary binary body.
pub fn submission(
    namespace: &str,
    doc_type: &str,
    version: &str,
    n: usize,
    size: usize,
) -> Submission {
    let doc_id = format!("{:08x}-0000-4000-8000-{:012x}", n, n);
    let mut attributes = BTreeMap::new();
    attributes.insert(
        "uri".to_string(),
        format!("/submit/{namespace}/{doc_type}/{version}/{doc_id}"),
    );
    attributes.insert(
        "submission_timestamp".to_string(),
        "2024-05-06T07:08:09.123Z".to_string(),
    );
    attributes.insert("user_agent".to_string(), format!("test-agent/{n}"));
    if n.is_multiple_of(3) {
        attributes.insert("x_debug_id".to_string(), "dbg".to_string());
    }
    let body: Vec<u8> = (0..size).map(|i| ((i * 7 + n * 13) % 256) as u8).collect();
    Submission::new(
        Route {
            namespace: namespace.into(),
            doc_type: doc_type.into(),
            doc_version: version.into(),
            doc_id,
        },
        attributes,
        &body,
    )
}

pub async fn enqueue(settings: &Settings, subs: &[Submission]) {
    let conn = wharf_queue::connect(&settings.redis).unwrap_or_else(|e| panic!("connect: {e}"));
    Enqueuer::new(conn)
        .enqueue(subs)
        .await
        .unwrap_or_else(|e| panic!("enqueue: {e}"));
}

/// One decoded NDJSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    pub key: String,
    pub attributes: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// Every document in the bucket, decoded (gunzip, NDJSON, base64).
pub fn landed(s3: &S3Server) -> Vec<Landed> {
    let mut out = Vec::new();
    for key in s3.keys() {
        let bytes = s3.object(&key);
        let mut text = String::new();
        if flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .is_err()
        {
            continue; // an object being written right now
        }
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("bad NDJSON line in {key}: {e}"));
            let obj = v
                .as_object()
                .unwrap_or_else(|| panic!("line is not an object"));
            assert_eq!(
                obj.len(),
                2,
                "a line holds exactly attributes and data: {line}"
            );
            let attributes: BTreeMap<String, String> =
                serde_json::from_value(v["attributes"].clone())
                    .unwrap_or_else(|e| panic!("attributes: {e}"));
            let body = base64::engine::general_purpose::STANDARD
                .decode(
                    v["data"]
                        .as_str()
                        .unwrap_or_else(|| panic!("data not a string")),
                )
                .unwrap_or_else(|e| panic!("data not base64: {e}"));
            out.push(Landed {
                key: key.clone(),
                attributes,
                body,
            });
        }
    }
    out
}

/// Documents per `uri` attribute (the document identity in these tests).
pub fn by_uri(docs: &[Landed]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for d in docs {
        *counts.entry(d.attributes["uri"].clone()).or_insert(0) += 1;
    }
    counts
}

pub async fn wait_landed(s3: &S3Server, n: usize, timeout: Duration) -> bool {
    wharf_testkit::eventually(timeout, || {
        let count = by_uri(&landed(s3)).len();
        async move { count >= n }
    })
    .await
}

pub fn redis_query<T: redis::FromRedisValue>(redis: &RedisServer, cmd: &[&str]) -> T {
    let mut conn = redis.connection();
    let mut c = redis::cmd(cmd[0]);
    for a in &cmd[1..] {
        c.arg(*a);
    }
    c.query(&mut conn)
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// In-flight jobs (fetched by a worker, not acknowledged).
pub fn inflight(redis: &RedisServer) -> u64 {
    let workers: Vec<String> =
        redis_query(redis, &["ZRANGE", "wharf_submissions:workers", "0", "-1"]);
    workers
        .iter()
        .map(|w| {
            redis_query::<u64>(
                redis,
                &["SCARD", &format!("wharf_submissions:inflight:{w}")],
            )
        })
        .sum()
}

/// An in-process worker (`wharf_worker::run`) stopped by [`InProcessWorker::stop`].
pub struct InProcessWorker {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), wharf_worker::WorkerError>>,
}

impl InProcessWorker {
    pub fn start(settings: Settings, metrics: cadence::StatsdClient) -> Self {
        aws_env();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(wharf_worker::run(settings, metrics, async move {
            let _ = rx.await;
        }));
        Self {
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) -> Result<(), wharf_worker::WorkerError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        self.task
            .await
            .unwrap_or_else(|e| panic!("worker task: {e}"))
    }
}

pub fn nop_metrics() -> cadence::StatsdClient {
    cadence::StatsdClient::from_sink("wharf", cadence::NopMetricSink)
}

pub fn udp_metrics(port: u16) -> cadence::StatsdClient {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("udp: {e}"));
    let sink = cadence::UdpMetricSink::from(("127.0.0.1", port), socket)
        .unwrap_or_else(|e| panic!("sink: {e}"));
    cadence::StatsdClient::from_sink("wharf", sink)
}

/// The real `wharf worker` process with its output collected.
pub struct WorkerProcess {
    pub child: Child,
    pub output: Arc<Mutex<Vec<String>>>,
    pub name: &'static str,
}

impl WorkerProcess {
    pub fn spawn(vars: &[(String, String)]) -> Self {
        Self::spawn_role("worker", vars)
    }

    /// Spawns `wharf {role}` with exactly `vars` (plus PATH) in its environment.
    pub fn spawn_role(role: &str, vars: &[(String, String)]) -> Self {
        let mut child = wharf_command(&[role], vars)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn wharf worker: {e}"));
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if let Ok(mut l) = sink.lock() {
                        l.push(line);
                    }
                }
            });
        }
        Self {
            child,
            output,
            name: "worker",
        }
    }

    pub fn output(&self) -> Vec<String> {
        self.output.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill: {e}"));
        assert!(status.success());
    }

    /// Waits for the process to exit; None if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The messages of the error-level events (not breadcrumbs, sessions or client reports) in the
/// envelopes a Sentry listener received.
pub fn sentry_errors(envelopes: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for envelope in envelopes {
        let mut lines = envelope.lines();
        let _header = lines.next();
        while let Some(item_header) = lines.next() {
            let Some(payload) = lines.next() else { break };
            let Ok(header) = serde_json::from_str::<serde_json::Value>(item_header) else {
                continue;
            };
            if header["type"] != "event" {
                continue;
            }
            let Ok(event) = serde_json::from_str::<serde_json::Value>(payload) else {
                continue;
            };
            // Sentry's protocol leaves `level` out for the default, "error".
            let level = event["level"].as_str().unwrap_or("error");
            if level != "error" && level != "fatal" {
                continue;
            }
            let message = event["message"]
                .as_str()
                .or_else(|| event["logentry"]["message"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| event["exception"].to_string());
            out.push(message);
        }
    }
    out
}

/// `wharf ARGS` with exactly `vars` (plus PATH) in its environment, piped output, and the AWS SDK
/// kept off the host's credentials, profile files and instance metadata.
pub fn wharf_command(args: &[&str], vars: &[(String, String)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wharf"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/wharf-test")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/wharf-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}
