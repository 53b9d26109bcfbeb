//! CORS on `/submit` against a real redis-server: preflights, the allowed origin on every answer (errors and layer-made refusals included), 403 for other origins, and nothing changed elsewhere.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{spawn_app, TestApp, DOC_ID};
use wharf_testkit::eventually;

const APP: &str = "https://app.example";
const OTHER: &str = "https://other.example:8443";
const EVIL: &str = "https://evil.example";

fn submit_path(ns: &str) -> String {
    format!("/submit/{ns}/event/1/{DOC_ID}")
}

/// A list of two origins, small limits so every refusal is cheap to provoke.
async fn listed_app() -> TestApp {
    spawn_app(&[
        ("CORS_ALLOWED_ORIGINS", &format!("{APP},{OTHER}")),
        ("CORS_MAX_AGE_MS", "600500"),
        ("ALLOWED_NAMESPACES", "ns"),
        ("MAX_BODY_BYTES", "100"),
        ("MAX_PATH_BYTES", "200"),
        ("BODY_TIMEOUT_MS", "200"),
    ])
    .await
}

async fn preflight(app: &TestApp, path: &str, origin: &str) -> reqwest::Response {
    app.client
        .request(reqwest::Method::OPTIONS, app.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, x-debug-id, x-source-tags",
        )
        .send()
        .await
        .unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

fn varies_on_origin(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get_all("vary")
        .iter()
        .any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
}

/// One raw HTTP/1.1 exchange, for requests reqwest will not send.
async fn raw(app: &TestApp, request: String) -> String {
    let addr = app.addr;
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn preflight_with_any_origin_allows_every_page_without_credentials() {
    let app = spawn_app(&[]).await;
    let r = preflight(&app, &submit_path("ns"), "https://anything.example").await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("POST, PUT")
    );
    let allowed = header(&r, "access-control-allow-headers").unwrap();
    for name in [
        "content-type",
        "content-encoding",
        "date",
        "x-debug-id",
        "x-source-tags",
        "x-telemetry-agent",
        "x-pingsender-version",
    ] {
        assert!(allowed.contains(name), "{name} missing from `{allowed}`");
    }
    assert_eq!(header(&r, "access-control-max-age"), Some("86400"));
    assert_eq!(header(&r, "access-control-allow-credentials"), None);
    assert!(!varies_on_origin(&r), "`*` does not depend on the origin");
    assert!(app.queued().is_empty());
}

#[tokio::test]
async fn preflight_with_a_list_echoes_listed_origins_and_refuses_others() {
    let app = listed_app().await;
    for origin in [APP, OTHER] {
        let r = preflight(&app, &submit_path("ns"), origin).await;
        assert_eq!(r.status(), 204, "{origin}");
        assert_eq!(header(&r, "access-control-allow-origin"), Some(origin));
        assert!(varies_on_origin(&r));
        assert_eq!(header(&r, "access-control-max-age"), Some("600"));
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
    }
    for origin in [EVIL, "null", "https://app.example.evil.example"] {
        let r = preflight(&app, &submit_path("ns"), origin).await;
        assert_eq!(r.status(), 403, "{origin}");
        for name in [
            "access-control-allow-origin",
            "access-control-allow-methods",
            "access-control-allow-headers",
            "access-control-max-age",
        ] {
            assert_eq!(header(&r, name), None, "{origin}: {name}");
        }
        assert!(r.text().await.unwrap().contains("origin"));
    }
}

#[tokio::test]
async fn every_submission_answer_carries_the_allowed_origin() {
    let mut app = listed_app().await;
    let c = &app.client;
    let with_origin = |rb: reqwest::RequestBuilder| rb.header("Origin", APP);
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (c.post(app.url(&submit_path("ns"))).body("{}"), 200),
        (c.put(app.url(&submit_path("ns"))).body("{}"), 200),
        (
            c.post(app.url("/submit/ns/event/1/not-a-uuid")).body("x"),
            400,
        ),
        (c.post(app.url(&submit_path("unlisted"))).body("x"), 404),
        (c.post(app.url("/submit")).body("x"), 404),
        (c.get(app.url(&submit_path("ns"))), 405),
        (
            c.request(reqwest::Method::OPTIONS, app.url(&submit_path("ns"))),
            405,
        ),
        (
            c.post(app.url(&submit_path("ns"))).body(vec![b'a'; 101]),
            413,
        ),
        (
            c.post(app.url(&format!("{}?pad={}", submit_path("ns"), "a".repeat(200))))
                .body("x"),
            414,
        ),
    ];
    for (request, expected) in cases {
        let r = with_origin(request).send().await.unwrap();
        assert_eq!(r.status(), expected);
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            Some(APP),
            "{expected}"
        );
        assert!(varies_on_origin(&r), "{expected}");
        assert_eq!(header(&r, "access-control-allow-credentials"), None);
    }
    assert_eq!(app.queued().len(), 2);

    // Refusals made by the outer layers, before the router: framing both ways (found in the
    // raw bytes) and two Host headers.
    let both = raw(
        &app,
        format!(
            "POST {} HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            submit_path("ns")
        ),
    )
    .await;
    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    assert!(
        both.contains(&format!("access-control-allow-origin: {APP}")),
        "{both}"
    );
    assert!(both.contains("connection: close"), "{both}");
    let two_hosts = raw(
        &app,
        format!(
            "POST {} HTTP/1.1\r\nHost: a\r\nHost: b\r\nOrigin: {APP}\r\nContent-Length: 1\r\n\r\nx",
            submit_path("ns")
        ),
    )
    .await;
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");
    assert!(
        two_hosts.contains(&format!("access-control-allow-origin: {APP}")),
        "{two_hosts}"
    );

    // A body that stops arriving: the handler's 503.
    let stalled = raw(
        &app,
        format!(
            "POST {} HTTP/1.1\r\nHost: t\r\nOrigin: {APP}\r\nContent-Length: 50\r\n\r\nonly a part",
            submit_path("ns")
        ),
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 503"), "{stalled}");
    assert!(
        stalled.contains(&format!("access-control-allow-origin: {APP}")),
        "{stalled}"
    );

    // Redis gone: 503 with Retry-After, still readable by the page.
    app.redis.stop();
    let r = app
        .client
        .post(app.url(&submit_path("ns")))
        .header("Origin", OTHER)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), Some("30"));
    assert_eq!(header(&r, "access-control-allow-origin"), Some(OTHER));
}

#[tokio::test]
async fn answers_without_an_origin_carry_no_cors_headers() {
    let app = listed_app().await;
    for (path, expected) in [
        (submit_path("ns"), 200),
        ("/submit/ns/event/1/nope".to_string(), 400),
    ] {
        let r = app.post(&path, "{}").await;
        assert_eq!(r.status(), expected);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        assert!(!varies_on_origin(&r));
    }
}

#[tokio::test]
async fn a_page_from_another_origin_is_refused_and_nothing_is_stored() {
    let app = listed_app().await;
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let r = app
            .client
            .request(method, app.url(&submit_path("ns")))
            .header("Origin", EVIL)
            .header("Content-Type", "text/plain;charset=UTF-8")
            .body(r#"{"stolen": "ping"}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        assert_eq!(header(&r, "access-control-allow-origin"), None);
        assert_eq!(
            r.text().await.unwrap(),
            "submissions from this origin are not allowed\n"
        );
    }
    // The refusal comes before anything else is looked at: even a bad path is a 403.
    let r = app
        .client
        .post(app.url("/submit/ns/event/1/nope"))
        .header("Origin", EVIL)
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(app.queued().is_empty(), "nothing from the refused origin");
    let seen = eventually(Duration::from_secs(5), || async {
        let lines = app.statsd.lines();
        lines.iter().any(|l| {
            l.starts_with("wharf.submission.rejected:1|c")
                && l.contains("reason:origin_not_allowed")
        }) && lines.iter().any(|l| {
            l.starts_with("wharf.request.count:1|c")
                && l.contains("route:/submit/{*rest}")
                && l.contains("status:403")
        })
    })
    .await;
    assert!(seen, "metrics: {:#?}", app.statsd.lines());
}

#[tokio::test]
async fn options_elsewhere_keeps_its_answer() {
    let app = listed_app().await;
    for (path, expected) in [
        ("/__heartbeat__", 405),
        ("/__lbheartbeat__", 405),
        ("/__version__", 405),
        ("/", 404),
        ("/nope", 404),
    ] {
        for origin in [APP, EVIL] {
            let r = preflight(&app, path, origin).await;
            assert_eq!(r.status(), expected, "{path} from {origin}");
            assert_eq!(header(&r, "access-control-allow-origin"), None, "{path}");
            assert_eq!(header(&r, "access-control-allow-methods"), None, "{path}");
        }
    }
    // GETs elsewhere with a foreign Origin are not refused either: only submissions are.
    let r = app
        .client
        .get(app.url("/__lbheartbeat__"))
        .header("Origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // OPTIONS on /submit without a preflight's headers is still a method /submit does not take.
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url(&submit_path("ns")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn a_send_beacon_text_plain_body_is_stored_as_any_other() {
    let app = spawn_app(&[]).await;
    let body = r#"{"ping_info":{"seq":1},"client_info":{"telemetry_sdk_build":"glean.js"}}"#;
    let r = app
        .client
        .post(app.url(&submit_path("glean-js")))
        .header("Origin", APP)
        .header("Content-Type", "text/plain;charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some("*"));
    let queued = app.queued();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].body.as_ref(), body.as_bytes());
    assert_eq!(queued[0].route.namespace, "glean-js");
}
