//! The real `wharf` binary as an operator meets it: exit codes, MozLog output, Sentry events, SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

use std::process::Output;
use std::time::Duration;

use wharf_testkit::eventually;
use wharf_testkit::harness::{wharf_test, Role, Tools};
use wharf_testkit::ports::free_port;
use wharf_testkit::process;
use wharf_testkit::redis_server::RedisServer;

const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// The binary's command-line definitions, for the help test to compare the output with.
#[allow(dead_code)]
#[path = "../src/cli.rs"]
mod cli;

/// `wharf ARGS` with exactly `vars` in its environment, run to completion.
fn wharf(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    process::command(WHARF.as_ref(), args, &vars)
        .output()
        .unwrap_or_else(|e| panic!("run wharf {args:?}: {e}"))
}

/// How long anything the role should do "soon" may take on a loaded 2-core host.
const SOON: Duration = Duration::from_secs(20);

#[test]
fn misconfiguration_lists_every_problem_and_exits_2() {
    let output = wharf(
        &["web"],
        &[
            ("PORT", "eighty"),
            ("SENTRY_DSN", "nonsense"),
            ("MAX_BODY_BYTES", "-5"),
            ("LOG_FORMAT", "xml"),
        ],
    );
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

    let output = wharf(&["worker"], &[("REDIS_HOST", "r")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("S3_BUCKET: is required"));
}

#[test]
fn unreachable_config_url_exits_2_with_a_clear_error() {
    let output = wharf(
        &["web"],
        &[("CONFIG_URL", "http://127.0.0.1:1/config.json")],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("CONFIG_URL could not be used") && stderr.contains("127.0.0.1:1"),
        "{stderr}"
    );
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_redacted() {
    let output = wharf(
        &["config", "--role", "worker"],
        &[
            ("REDIS_HOST", "redis.internal"),
            ("REDIS_PASSWORD", "hunter2"),
            ("SENTRY_DSN", "https://pub:topsecret@sentry.example.com/1"),
            ("S3_BUCKET", "bucket"),
        ],
    );
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

    let output = wharf(&["--help"], &[]);
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
    wharf_test(
        WHARF,
        Role::Web,
        |_| {},
        |tools| async move {
            let port = tools.port().to_string();
            let up = tools.run(&["check"], &[("PORT", &port)]).await;
            assert_eq!(up.status.code(), Some(0), "{}", process::text(&up));
            let elsewhere = format!("http://127.0.0.1:{}", free_port());
            let down = tools.run(&["check", "--url", &elsewhere], &[]).await;
            assert_eq!(down.status.code(), Some(1), "{}", process::text(&down));
        },
    )
    .await;
}

#[tokio::test]
async fn logs_are_mozlog_with_a_request_summary_and_no_client_ip() {
    wharf_test(
        WHARF,
        Role::Web,
        |_| {},
        |tools| async move {
            tools
                .client
                .post(tools.url("/submit/ns/t/1/2c3a0767-d84a-4d02-8a92-fa54a3376049"))
                .header("User-Agent", "pingsender/1.0")
                .header("X-Forwarded-For", "203.0.113.77")
                .header("Authorization", "Bearer very-secret")
                .header("Cookie", "session=cookie-secret")
                .body("x")
                .send()
                .await
                .unwrap();
            let is_submit_summary = |v: &serde_json::Value| {
                v["Fields"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/submit/"))
            };
            let found = eventually(SOON, || async {
                tools
                    .wharf
                    .events("request.summary")
                    .iter()
                    .any(is_submit_summary)
            })
            .await;
            assert!(found, "{:#?}", tools.wharf.output());
            let summary = tools
                .wharf
                .events("request.summary")
                .into_iter()
                .find(is_submit_summary)
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
            for line in &tools.wharf.stdout() {
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
        },
    )
    .await;
}

#[tokio::test]
async fn a_panic_reaches_sentry_without_credentials_or_client_addresses() {
    let settings = |env: &mut wharf_testkit::harness::Env| {
        env.set("ERROR_ENDPOINT_TOKEN", "error-token-secret")
            .set("ENVIRONMENT", "citest");
    };
    wharf_test(WHARF, Role::Web, settings, |tools| async move {
        let r = tools
            .client
            .get(tools.url("/__error__?session=query-secret"))
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
        let envelope = tools
            .sentry
            .wait_for("__error__ called", SOON)
            .await
            .unwrap_or_else(|| panic!("envelopes: {:#?}", tools.sentry.envelopes()));
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
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_web_role_with_exit_0() {
    wharf_test(
        WHARF,
        Role::Web,
        |_| {},
        |mut tools: Tools| async move {
            tools.wharf.terminate(SOON);
            // Log lines are written by a writer thread; the ones logged while stopping must still
            // reach stdout before the process exits (the pipe is read after the exit, hence a wait).
            let shutdown = tools.wharf.wait_for_event("web.shutdown", SOON).await;
            assert!(shutdown.is_some(), "{:#?}", tools.wharf.output());
        },
    )
    .await;
}

#[tokio::test]
async fn web_starts_without_redis_and_recovers_when_it_appears() {
    let port = free_port();
    let settings = |env: &mut wharf_testkit::harness::Env| {
        env.set("REDIS_PORT", port)
            .set("REDIS_TIMEOUT_MS", 300)
            .set("HEARTBEAT_CACHE_MS", 100);
    };
    wharf_test(WHARF, Role::Web, settings, |tools| async move {
        let r = reqwest::get(tools.url("/__heartbeat__")).await.unwrap();
        assert_eq!(r.status(), 500);
        let reported = tools
            .sentry
            .wait_for("cannot reach redis at start-up", SOON)
            .await;
        assert!(
            reported.is_some(),
            "start-up failure reported to Sentry: {:#?}",
            tools.sentry.envelopes()
        );

        let _redis = RedisServer::start_on(port);
        let url = tools.url("/__heartbeat__");
        let recovered = eventually(SOON, || {
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
    })
    .await;
}

#[test]
fn check_in_a_worker_container_reads_the_workers_liveness_record() {
    let redis = RedisServer::start();
    let redis_port = redis.port().to_string();
    let check = |pid: &str| {
        wharf(
            &["check", "--role", "worker", "--pid", pid],
            &[
                ("HOSTNAME", "worker-host"),
                ("REDIS_HOST", "127.0.0.1"),
                ("REDIS_PORT", &redis_port),
            ],
        )
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
