//! Spawns the real web role on port 0 against a real redis-server, with a real StatsD socket.
#![allow(dead_code)]

use std::net::SocketAddr;

use wharf_queue::Submission;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::statsd::StatsdListener;

pub const DOC_ID: &str = "2c3a0767-d84a-4d02-8a92-fa54a3376049";

pub struct TestApp {
    pub addr: SocketAddr,
    pub redis: RedisServer,
    pub statsd: StatsdListener,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub server: Option<tokio::task::JoinHandle<Result<(), wharf_web::WebError>>>,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET `path` on the app.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// POST `body` to `path` on the app.
    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Every submission in the shard streams, decoded, oldest first per shard.
    pub fn queued(&self) -> Vec<Submission> {
        queued_in(&mut self.redis.connection())
    }

    /// Asks the server to stop, as SIGTERM would.
    pub async fn stop(&mut self) -> Result<(), wharf_web::WebError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => handle.await.unwrap(),
            None => Ok(()),
        }
    }
}

/// Starts the web role with the given extra variables (on top of a minimal valid set).
pub async fn spawn_app(extra: &[(&str, &str)]) -> TestApp {
    let redis = RedisServer::start();
    spawn_app_with(redis, extra).await
}

pub async fn spawn_app_with(redis: RedisServer, extra: &[(&str, &str)]) -> TestApp {
    let statsd = StatsdListener::start();
    let port = redis.port().to_string();
    let statsd_port = statsd.port().to_string();
    let mut vars: std::collections::BTreeMap<String, String> = [
        ("REDIS_HOST", "127.0.0.1"),
        ("REDIS_PORT", port.as_str()),
        ("REDIS_TIMEOUT_MS", "300"),
        ("STATSD_HOST", "127.0.0.1"),
        ("STATSD_PORT", statsd_port.as_str()),
        ("HOST", "127.0.0.1"),
        ("PORT", "0"),
        ("VERSION_FILE", "/nonexistent/version.json"),
        ("HEARTBEAT_CACHE_MS", "200"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let settings = wharf_settings::from_vars(wharf_settings::Role::Web, vars).unwrap();
    let metrics = wharf_telemetry::build_metrics(&settings.telemetry, "web");
    let app = wharf_web::WebApp::build(&settings, metrics).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    TestApp {
        addr,
        redis,
        statsd,
        client: reqwest::Client::new(),
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// Every submission in the default number of shard streams; panics on an undecodable entry.
pub fn queued_in(conn: &mut redis::Connection) -> Vec<Submission> {
    wharf_queue::streams::queued_blocking(conn, DEFAULT_SHARDS)
        .unwrap()
        .into_iter()
        .map(|(entry, decoded)| {
            decoded.unwrap_or_else(|e| panic!("entry {} undecodable: {e}", entry.id))
        })
        .collect()
}

/// `QUEUE_SHARDS` when unset.
pub const DEFAULT_SHARDS: u16 = 4;
