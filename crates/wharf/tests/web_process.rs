//! The real `wharf` binary as an operator meets it: exit codes, MozLog output, Sentry events, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_testkit::eventually;
use wharf_testkit::ports::free_port;
use wharf_testkit::redis_server::RedisServer;
use wharf_testkit::sentry::SentryListener;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// The binary's command-line definitions, for the help test to compare the output with.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

/// A running `wharf` process whose stdout lines are collected.
struct Process {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    port: u16,
}

impl Process {
    fn spawn(args: &[&str], env: &[(&str, String)]) -> Self {
        let port = free_port();
        let mut command = Command::new(WHARF);
        command
            .args(args)
            .env_clear()
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("VERSION_FILE", "/nonexistent")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stdout);
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            stdout,
            port,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    async fn wait_ready(&self) {
        let url = self.url("/__lbheartbeat__");
        let ready = eventually(Duration::from_secs(20), || {
            let url = url.clone();
            async move { reqwest::get(&url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(
            ready,
            "wharf web did not come up; stdout: {:#?}",
            self.lines()
        );
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_env(redis: &RedisServer) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", redis.port().to_string()),
    ]
}

#[test]
fn misconfiguration_lists_every_problem_and_exits_2() {
    let output = Command::new(WHARF)
        .arg("web")
        .env_clear()
        .env("PORT", "eighty")
        .env("SENTRY_DSN", "nonsense")
        .env("MAX_BODY_BYTES", "-5")
        .env("LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for needle in [
        "5 problems",
        "REDIS_HOST: is required",
        "PORT: `eighty`",
        "SENTRY_DSN",
        "MAX_BODY_BYTES",
        "LOG_FORMAT",
        "example: PORT=8000",
    ] {
        assert!(
            stderr.contains(needle),
            "`{needle}` missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    let output = Command::new(WHARF)
        .arg("worker")
        .env_clear()
        .env("REDIS_HOST", "r")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("S3_BUCKET: is required"));
}

#[test]
fn unreachable_config_url_exits_2_with_a_clear_error() {
    let output = Command::new(WHARF)
        .arg("web")
        .env_clear()
        .env("CONFIG_URL", "http://127.0.0.1:1/config.json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CONFIG_URL could not be used") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let output = Command::new(WHARF)
        .args(["config", "--role", "worker"])
        .env_clear()
        .env("REDIS_HOST", "redis.internal")
        .env("REDIS_PASSWORD", "hunter2")
        .env("SENTRY_DSN", "https://pub:topsecret@sentry.example.com/1")
        .env("S3_BUCKET", "bucket")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let config: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(config["redis"]["host"], "redis.internal");
    assert_eq!(config["redis"]["password"], "[redacted]");
    assert_eq!(config["telemetry"]["sentry_dsn"], "[redacted]");
    assert_eq!(config["worker"]["s3"]["bucket"], "bucket");
    assert!(!stdout.contains("hunter2") && !stdout.contains("topsecret"));
}

/// `text` with every run of whitespace as one space, so a wrapped line still matches.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn help_explains_every_command() {
    use clap::CommandFactory;

    let output = Command::new(WHARF).arg("--help").output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let help = one_line(&String::from_utf8_lossy(&output.stdout));
    // The names and one-line descriptions the binary's own clap definitions give, each of
    // which must be listed as `<name>  <description>`: the words alone appear in the
    // introduction anyway ("two roles: `web` (the default) and `worker`", "see `wharf config`").
    let commands: Vec<(String, String)> = cli::Cli::command()
        .get_subcommands()
        .map(|c| {
            let about = c.get_about().map(ToString::to_string).unwrap_or_default();
            (c.get_name().to_string(), one_line(&about))
        })
        .collect();
    let names: Vec<&str> = commands.iter().map(|(name, _)| name.as_str()).collect();
    for role in ["web", "worker", "check", "config"] {
        assert!(names.contains(&role), "{role} not among {names:?}");
    }
    for (name, about) in &commands {
        assert!(!about.is_empty(), "{name} has no description");
        assert!(
            help.contains(&format!(" {name} {about}")),
            "`{name}  {about}` missing from --help:\n{help}"
        );
    }
}

#[tokio::test]
async fn check_reports_whether_the_web_role_answers() {
    let redis = RedisServer::start();
    let web = Process::spawn(&[], &redis_env(&redis));
    web.wait_ready().await;
    let up = Command::new(WHARF)
        .arg("check")
        .env_clear()
        .env("PORT", web.port.to_string())
        .status()
        .unwrap();
    assert_eq!(up.code(), Some(0));
    let down = Command::new(WHARF)
        .args([
            "check",
            "--url",
            &format!("http://127.0.0.1:{}", free_port()),
        ])
        .status()
        .unwrap();
    assert_eq!(down.code(), Some(1));
}

#[tokio::test]
async fn logs_are_mozlog_with_a_request_summary_and_no_client_ip() {
    let redis = RedisServer::start();
    let web = Process::spawn(&["web"], &redis_env(&redis));
    web.wait_ready().await;
    let client = reqwest::Client::new();
    client
        .post(web.url("/submit/ns/t/1/2c3a0767-d84a-4d02-8a92-fa54a3376049"))
        .header("User-Agent", "pingsender/1.0")
        .header("X-Forwarded-For", "203.0.113.77")
        .header("Authorization", "Bearer very-secret")
        .header("Cookie", "session=cookie-secret")
        .body("x")
        .send()
        .await
        .unwrap();
    let found = eventually(Duration::from_secs(5), || async {
        web.lines()
            .iter()
            .any(|l| l.contains("\"request.summary\"") && l.contains("/submit/"))
    })
    .await;
    assert!(found, "{:#?}", web.lines());
    let lines = web.lines();
    let summary: serde_json::Value = lines
        .iter()
        .filter(|l| l.contains("\"request.summary\"") && l.contains("/submit/"))
        .map(|l| serde_json::from_str(l).unwrap())
        .next()
        .unwrap();
    assert_eq!(summary["EnvVersion"], "2.0");
    assert_eq!(summary["Logger"], "wharf-web");
    assert_eq!(summary["Severity"], 6);
    let fields = &summary["Fields"];
    assert_eq!(fields["agent"], "pingsender/1.0");
    assert_eq!(fields["method"], "POST");
    assert_eq!(fields["code"], 200);
    assert!(fields["t"].is_u64());
    assert_eq!(
        fields["rid"].as_str().unwrap().len(),
        36,
        "a request id is generated"
    );
    for line in &lines {
        let parsed: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            parsed["Fields"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| !v.is_object()),
            "{line}"
        );
        for secret in [
            "203.0.113.77",
            "very-secret",
            "cookie-secret",
            "127.0.0.1\"",
        ] {
            assert!(!line.contains(secret), "`{secret}` logged: {line}");
        }
    }
}

#[tokio::test]
async fn a_panic_reaches_sentry_without_credentials_or_client_addresses() {
    let sentry = SentryListener::start().await;
    let redis = RedisServer::start();
    let mut env = redis_env(&redis);
    env.push(("SENTRY_DSN", sentry.dsn()));
    env.push(("ERROR_ENDPOINT_TOKEN", "error-token-secret".to_string()));
    env.push(("ENVIRONMENT", "citest".to_string()));
    let web = Process::spawn(&["web"], &env);
    web.wait_ready().await;
    let r = reqwest::Client::new()
        .get(web.url("/__error__?session=query-secret"))
        .header("X-Error-Token", "error-token-secret")
        .header("User-Agent", "sentry-probe/1.0")
        .header("True-Client-IP", "198.51.100.9")
        .header("X-Amz-Security-Token", "amz-secret")
        .header("Authorization", "Bearer very-secret")
        .header("Cookie", "session=cookie-secret")
        .header("X-Forwarded-For", "203.0.113.77")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let arrived = eventually(Duration::from_secs(10), || async {
        sentry
            .envelopes()
            .iter()
            .any(|e| e.contains("__error__ called"))
    })
    .await;
    assert!(arrived, "envelopes: {:#?}", sentry.envelopes());
    let envelope = sentry
        .envelopes()
        .into_iter()
        .find(|e| e.contains("__error__ called"))
        .unwrap();
    assert!(
        envelope.contains("sentry-probe/1.0"),
        "request data is attached: {envelope}"
    );
    assert!(
        envelope.contains("citest"),
        "environment is set: {envelope}"
    );
    assert!(envelope.contains("wharf@"), "release is set: {envelope}");
    for secret in [
        "very-secret",
        "cookie-secret",
        "203.0.113.77",
        "198.51.100.9",
        "amz-secret",
        "query-secret",
        "error-token-secret",
    ] {
        assert!(
            !envelope.contains(secret),
            "`{secret}` sent to Sentry: {envelope}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_the_web_role_with_exit_0() {
    let redis = RedisServer::start();
    let mut web = Process::spawn(&["web"], &redis_env(&redis));
    web.wait_ready().await;
    web.sigterm();
    assert_eq!(
        web.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{:#?}",
        web.lines()
    );
    // Log lines are written by a writer thread; the ones logged while stopping must still reach
    // stdout before the process exits.
    let logged_shutdown = || web.lines().iter().any(|l| l.contains("\"web.shutdown\""));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !logged_shutdown() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(logged_shutdown(), "{:#?}", web.lines());
}

#[tokio::test]
async fn web_starts_without_redis_and_recovers_when_it_appears() {
    let sentry = SentryListener::start().await;
    let port = free_port();
    let env = vec![
        ("REDIS_HOST", "127.0.0.1".to_string()),
        ("REDIS_PORT", port.to_string()),
        ("REDIS_TIMEOUT_MS", "300".to_string()),
        ("HEARTBEAT_CACHE_MS", "100".to_string()),
        ("SENTRY_DSN", sentry.dsn()),
    ];
    let web = Process::spawn(&["web"], &env);
    web.wait_ready().await;
    let r = reqwest::get(web.url("/__heartbeat__")).await.unwrap();
    assert_eq!(r.status(), 500);
    let reported = eventually(Duration::from_secs(10), || async {
        sentry
            .envelopes()
            .iter()
            .any(|e| e.contains("cannot reach redis at start-up"))
    })
    .await;
    assert!(
        reported,
        "start-up failure reported to Sentry: {:#?}",
        sentry.envelopes()
    );

    let _redis = RedisServer::start_on(port);
    let url = web.url("/__heartbeat__");
    let recovered = eventually(Duration::from_secs(15), || {
        let url = url.clone();
        async move {
            match reqwest::get(&url).await {
                Ok(r) => r
                    .json::<serde_json::Value>()
                    .await
                    .is_ok_and(|b| b["checks"]["redis"] == "ok"),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(recovered, "heartbeat sees Redis once it appears");
}

#[test]
fn check_in_a_worker_container_reads_the_workers_liveness_record() {
    let redis = RedisServer::start();
    let check = |pid: &str| {
        Command::new(WHARF)
            .args(["check", "--role", "worker", "--pid", pid])
            .env_clear()
            .env("HOSTNAME", "worker-host")
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", redis.port().to_string())
            .output()
            .unwrap()
    };
    let missing = check("4242");
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("no fresh liveness record for worker worker-host-4242-"));

    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
        + 60_000;
    let mut conn = redis.connection();
    let _: () = redis::cmd("ZADD")
        .arg("wharf:workers:live")
        .arg(expiry)
        .arg("worker-host-4242-abc123")
        .arg(expiry - 120_000)
        .arg("worker-host-77-expired")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        check("4242").status.code(),
        Some(0),
        "a fresh record for this worker"
    );
    assert_eq!(
        check("77").status.code(),
        Some(1),
        "an expired record does not count"
    );
    assert_eq!(
        check("42").status.code(),
        Some(1),
        "another worker's pid prefix does not match"
    );
}
