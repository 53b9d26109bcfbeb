//! Unit tests for loading, defaults, collected problems and CONFIG_URL layering.

use super::*;

fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_fill_everything_but_required_values() {
    let s = from_vars(Role::Web, vars(&[("REDIS_HOST", "redis.local")])).unwrap();
    assert_eq!(s.redis.host, "redis.local");
    assert_eq!(s.redis.port, 6379);
    assert_eq!(s.web.port, 8000);
    assert_eq!(s.web.max_body_bytes, 1024 * 1024);
    assert_eq!(s.telemetry.environment, "development");
    assert_eq!(s.telemetry.log_format, LogFormat::Json);
    assert!(s.telemetry.sentry_dsn.is_none());
    assert!(s.telemetry.statsd.host.is_none());
    assert_eq!(s.worker.s3.bucket, "", "the web role needs no bucket");
}

#[test]
fn every_problem_is_reported_at_once() {
    let err = from_vars(
        Role::Worker,
        vars(&[
            ("PORT", "eighty"),
            ("REDIS_TLS", "maybe"),
            ("SENTRY_DSN", "not a url"),
            ("LOG_FORMAT", "xml"),
            ("BATCH_MAX_DOCUMENTS", "0"),
            ("MAX_ATTEMPTS", "0"),
            ("REDIS_TIMEOUT_MS", "0"),
            ("WORKER_CLAIM_IDLE_MS", "1500"),
            ("QUEUE_SHARDS", "4096"),
        ]),
    )
    .unwrap_err();
    let names: Vec<&str> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    for expected in [
        "REDIS_HOST",
        "S3_BUCKET",
        "PORT",
        "REDIS_TLS",
        "SENTRY_DSN",
        "LOG_FORMAT",
        "BATCH_MAX_DOCUMENTS",
        "MAX_ATTEMPTS",
        "REDIS_TIMEOUT_MS",
        "QUEUE_SHARDS",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let text = err.to_string();
    assert!(text.contains("11 problems"), "{text}");
    assert!(
        text.contains("WORKER_CLAIM_IDLE_MS: must be at least 3 x WORKER_POLL_INTERVAL_MS"),
        "a claim idle time shorter than three polls is refused: {text}"
    );
    assert!(
        text.contains("example: REDIS_HOST=example.cache.amazonaws.com"),
        "{text}"
    );
}

#[test]
fn empty_sentry_dsn_disables_sentry() {
    let s = from_vars(Role::Web, vars(&[("REDIS_HOST", "r"), ("SENTRY_DSN", "")])).unwrap();
    assert!(s.telemetry.sentry_dsn.is_none());
}

#[test]
fn secrets_never_print() {
    let s = from_vars(
        Role::Worker,
        vars(&[
            ("REDIS_HOST", "r"),
            ("REDIS_PASSWORD", "hunter2"),
            ("SENTRY_DSN", "https://pub:topsecret@sentry.example.com/1"),
            ("S3_BUCKET", "b"),
            ("ERROR_ENDPOINT_TOKEN", "tok3n"),
        ]),
    )
    .unwrap();
    let json = serde_json::to_string(&s).unwrap();
    let debug = format!("{s:?}");
    for leaked in ["hunter2", "topsecret", "tok3n"] {
        assert!(!json.contains(leaked), "{leaked} in {json}");
        assert!(!debug.contains(leaked), "{leaked} in {debug}");
    }
    assert!(
        s.redis.url().contains("hunter2"),
        "the URL itself carries the password"
    );
}

/// Credentials and signatures inside URLs are hidden from `wharf config` and from the error
/// that an unusable `CONFIG_URL` gives.
#[test]
fn urls_lose_their_credentials_and_queries_when_shown() {
    let s = from_vars(
        Needs::NOTHING,
        vars(&[(
            "CONFIG_URL",
            "http://cfg:url-password@127.0.0.1:1/wharf.json?X-Amz-Signature=url-signature",
        )]),
    );
    let err = s.expect_err("nothing listens on port 1").to_string();
    assert!(err.contains("127.0.0.1:1/wharf.json"), "{err}");
    for leaked in ["url-password", "url-signature"] {
        assert!(!err.contains(leaked), "{leaked} in {err}");
    }
    let s = from_vars(
        Needs::NOTHING,
        vars(&[
            ("S3_BUCKET", "b"),
            ("S3_ENDPOINT_URL", "http://minio:endpoint-password@s3:9000"),
        ]),
    )
    .unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert!(json.contains("s3:9000"), "{json}");
    assert!(!json.contains("endpoint-password"), "{json}");
}

#[test]
fn every_number_has_bounds_and_the_log_filter_is_checked_with_the_rest() {
    for (name, value) in [
        ("REDIS_PORT", "0"),
        ("REDIS_DB", "16"),
        ("STATSD_PORT", "70000"),
        ("MAX_BODY_BYTES", "0"),
        ("MAX_PATH_BYTES", "1000000"),
        ("QUEUE_DEPTH_WARNING", "0"),
        ("HEADER_TIMEOUT_MS", "0"),
        ("BODY_TIMEOUT_MS", "999999999"),
        ("MAX_CONNECTIONS", "1"),
        ("MAX_INFLIGHT_REQUESTS", "0"),
        ("LOG_LEVEL", "info,[["),
    ] {
        let err = from_vars(Role::Web, vars(&[("REDIS_HOST", "r"), (name, value)])).unwrap_err();
        let names: Vec<&str> = err.problems().iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names, [name], "{name}={value}: {err}");
    }
    let err = from_vars(
        Role::Web,
        vars(&[
            ("REDIS_HOST", "r"),
            ("MAX_BODY_BYTES", "4194304"),
            ("MAX_INFLIGHT_BYTES", "2097152"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("MAX_INFLIGHT_BYTES"), "{err}");
}

#[test]
fn config_url_supplies_defaults_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        r#"{"REDIS_HOST": "from-file", "PORT": 9000, "DROP_CLIENT_IP": true, "ALLOWED_NAMESPACES": ["a", "b"]}"#,
    )
    .unwrap();
    let url = format!("file://{}", path.display());
    let s = from_vars(Role::Web, vars(&[("CONFIG_URL", &url), ("PORT", "9100")])).unwrap();
    assert_eq!(s.redis.host, "from-file");
    assert_eq!(s.web.port, 9100, "the environment wins over the file");
    assert!(s.web.drop_client_ip);
    assert_eq!(s.web.allowed_namespaces, vec!["a", "b"]);
}

#[test]
fn unreachable_or_invalid_config_url_is_an_error() {
    let err = from_vars(
        Role::Web,
        vars(&[("CONFIG_URL", "file:///nonexistent/wharf.json")]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::ConfigUrl(ConfigUrlError::Unreachable { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "[1, 2]").unwrap();
    let err = from_vars(
        Role::Web,
        vars(&[("CONFIG_URL", &format!("file://{}", path.display()))]),
    )
    .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::ConfigUrl(ConfigUrlError::Invalid { .. })
    ));

    let err = from_vars(Role::Web, vars(&[("CONFIG_URL", "ftp://x/y.json")])).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::ConfigUrl(ConfigUrlError::Scheme { .. })
    ));
}

/// Compares a generated file, or the marked part of one, with what the settings declarations
/// make of it now; with `WHARF_BLESS=1` it rewrites it instead.
fn check_generated(relative: &str, markers: Option<(&str, &str)>, fresh: &str) {
    let path = format!("{}/../../{relative}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let (from, to) = match markers {
        Some((start, end)) => {
            let from = text.find(start).expect("the start marker") + start.len();
            (from, from + text[from..].find(end).expect("the end marker"))
        }
        None => (0, text.len()),
    };
    if text[from..to] != *fresh && std::env::var_os("WHARF_BLESS").is_some() {
        std::fs::write(&path, format!("{}{fresh}{}", &text[..from], &text[to..])).unwrap();
        return;
    }
    assert!(
        text[from..to] == *fresh,
        "{relative} is stale: run `WHARF_BLESS=1 cargo test -p wharf-settings generated`"
    );
}

/// The README's configuration table is the one `wharf config --list` prints, made from the
/// settings structs.
#[test]
fn generated_readme_configuration_table() {
    let markers = (
        "<!-- configuration table: generated by `wharf config --list` -->\n",
        "<!-- end of the configuration table -->",
    );
    check_generated("README.md", Some(markers), &catalog::markdown_table());
}

/// The deploy contract the deploy tests hold CloudFormation, Kubernetes and compose to is made
/// from the same declarations: a new setting needs no second list.
#[test]
fn generated_deploy_contract() {
    check_generated(
        "tests/deploy/env_vars.txt",
        None,
        &catalog::deploy_contract(),
    );
}

/// Every variable's declaration is complete: a name, a meaning and an example that parses.
#[test]
fn every_variable_is_declared_completely_and_once() {
    let all = catalog::variables();
    let mut names: Vec<&str> = all.iter().map(|v| v.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "a variable is declared twice");
    for v in all {
        assert!(!v.help.is_empty() && !v.example.is_empty(), "{}", v.name);
        let mut values = vec![
            ("REDIS_HOST".to_string(), "r".to_string()),
            ("S3_BUCKET".to_string(), "b".to_string()),
        ];
        values.push((v.name.to_string(), v.example.to_string()));
        if v.name == "CONFIG_URL" {
            continue;
        }
        let parsed = from_vars(Needs::NOTHING, values);
        assert!(
            parsed.is_ok(),
            "{}'s example {:?} does not parse: {:?}",
            v.name,
            v.example,
            parsed.err()
        );
    }
}

#[test]
fn durations_are_bounded_and_the_claim_idle_time_must_outlast_renewals() {
    let ok = from_vars(
        Role::Worker,
        vars(&[("REDIS_HOST", "r"), ("S3_BUCKET", "b")]),
    )
    .unwrap();
    let w = ok.worker;
    assert_eq!(ok.redis.queue_shards, 4);
    assert_eq!(w.claim_idle, Duration::from_secs(10));
    assert_eq!(w.refusal_grace, Duration::from_secs(300));
    for (name, value) in [
        ("REDIS_TIMEOUT_MS", "0"),
        ("HEARTBEAT_CACHE_MS", "0"),
        ("LIVENESS_TTL_MS", "0"),
        ("SHUTDOWN_GRACE_MS", "99999999"),
        ("WORKER_FETCH_SIZE", "20000"),
        ("WORKER_POLL_INTERVAL_MS", "5"),
        ("BATCH_MAX_AGE_MS", "1.5"),
    ] {
        let err = from_vars(
            Role::Worker,
            vars(&[("REDIS_HOST", "r"), ("S3_BUCKET", "b"), (name, value)]),
        )
        .unwrap_err();
        let names: Vec<&str> = err.problems().iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(names, [name], "{name}={value}: {err}");
    }
    // A claim idle time within three Redis timeouts would let one slow renewal lose entries.
    let err = from_vars(
        Role::Worker,
        vars(&[
            ("REDIS_HOST", "r"),
            ("S3_BUCKET", "b"),
            ("REDIS_TIMEOUT_MS", "5000"),
        ]),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("WORKER_CLAIM_IDLE_MS: must be more than 3 x REDIS_TIMEOUT_MS"),
        "{err}"
    );
    // The web role does not claim entries, so the same timeout is fine there.
    assert!(from_vars(
        Role::Web,
        vars(&[("REDIS_HOST", "r"), ("REDIS_TIMEOUT_MS", "5000")])
    )
    .is_ok());
}

#[test]
fn redis_safety_settings_default_safe_and_are_bounded() {
    let s = from_vars(Role::Web, vars(&[("REDIS_HOST", "r")])).unwrap();
    assert!(!s.redis.cluster);
    assert_eq!(s.redis.min_replicas_ack, 0);
    assert_eq!(s.redis.memory_high_water_percent, 80);
    assert!(!s.redis.allow_eviction_data_loss);

    let err = from_vars(
        Role::Web,
        vars(&[
            ("REDIS_HOST", "r"),
            ("REDIS_CLUSTER", "true"),
            ("REDIS_DB", "3"),
            ("REDIS_MIN_REPLICAS_ACK", "6"),
            ("REDIS_MEMORY_HIGH_WATER_PERCENT", "99"),
            ("REDIS_ALLOW_EVICTION_DATA_LOSS", "perhaps"),
        ]),
    )
    .unwrap_err();
    let named: Vec<&str> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    for variable in [
        "REDIS_DB",
        "REDIS_MIN_REPLICAS_ACK",
        "REDIS_MEMORY_HIGH_WATER_PERCENT",
        "REDIS_ALLOW_EVICTION_DATA_LOSS",
    ] {
        assert!(named.contains(&variable), "{variable} not reported: {err}");
    }
}

#[test]
fn browser_debug_and_dedup_settings_default_sensibly_and_are_checked() {
    let s = from_vars(
        Role::Worker,
        vars(&[("REDIS_HOST", "r"), ("S3_BUCKET", "b")]),
    )
    .unwrap();
    assert_eq!(s.web.cors, CorsOrigins::Any);
    assert_eq!(s.web.cors_max_age, Duration::from_secs(86_400));
    assert!(
        s.web.debug_view.enabled().is_none(),
        "off unless a token is set"
    );
    let w = s.worker;
    assert_eq!(w.dedup_window, Duration::from_secs(3_600));
    assert_eq!(w.output_compression, Compression::Gzip);

    let s = from_vars(
        Role::Web,
        vars(&[
            ("REDIS_HOST", "r"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://App.Example.com, http://127.0.0.1:8080",
            ),
            ("DEBUG_VIEW_TOKEN", "t0ken"),
        ]),
    )
    .unwrap();
    assert_eq!(
        s.web.cors,
        CorsOrigins::List(vec![
            "https://app.example.com".into(),
            "http://127.0.0.1:8080".into()
        ])
    );
    assert!(s.web.cors.allows("https://app.example.com"));
    assert!(!s.web.cors.allows("https://evil.example.com"));
    let view = s.web.debug_view;
    assert_eq!(view.enabled().map(Secret::expose), Some("t0ken"));
    assert_eq!((view.max_entries, view.max_tags), (50, 20));

    let err = from_vars(
        Role::Worker,
        vars(&[
            ("REDIS_HOST", "r"),
            ("S3_BUCKET", "b"),
            (
                "CORS_ALLOWED_ORIGINS",
                "https://ok.example, https://x.example/path, *",
            ),
            ("DEBUG_VIEW_TTL_MS", "10"),
            ("DEDUP_WINDOW_MS", "-1"),
            ("OUTPUT_COMPRESSION", "brotli"),
        ]),
    )
    .unwrap_err();
    let named: Vec<&str> = err.problems().iter().map(|p| p.variable.as_str()).collect();
    for variable in [
        "CORS_ALLOWED_ORIGINS",
        "DEBUG_VIEW_TTL_MS",
        "DEDUP_WINDOW_MS",
        "OUTPUT_COMPRESSION",
    ] {
        assert!(named.contains(&variable), "{variable} not reported: {err}");
    }
    let err = from_vars(
        Role::Web,
        vars(&[
            ("REDIS_HOST", "r"),
            ("CORS_ALLOWED_ORIGINS", "https://x.example/path"),
        ]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is not an origin"), "{err}");
}
