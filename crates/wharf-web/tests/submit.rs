//! The submission endpoint against a real redis-server: every status code of the edge spec, and exact storage.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{spawn_app, DOC_ID};
use wharf_testkit::eventually;

fn submit_path(ns: &str) -> String {
    format!("/submit/{ns}/event/1/{DOC_ID}")
}

#[tokio::test]
async fn post_and_put_are_accepted_and_stored_with_exact_attributes() {
    let app = spawn_app(&[]).await;
    for method in [reqwest::Method::POST, reqwest::Method::PUT] {
        let response = app
            .client
            .request(
                method.clone(),
                app.url(&format!("{}?v=4&x=1", submit_path("eng-workflow"))),
            )
            .header("User-Agent", "pingsender/1.0")
            .header("Date", "Mon, 12 Mar 2018 21:02:18 GMT")
            .header("DNT", "1")
            .header("X-Forwarded-For", "10.98.132.74, 103.3.237.12")
            .header("X-PingSender-Version", "1.0")
            .header("X-Debug-ID", "my_debug_session_1")
            .header("X-Pipeline-Proxy", "2018-03-12T21:02:18.123456Z")
            .header("X-Telemetry-Agent", "agent/2")
            .header("X-Source-Tags", "automation")
            .header("X-LB-Tags", "TLSv1.3")
            .body(format!("{{\"method\": \"{method}\"}}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{method}");
    }
    let jobs = app.queued();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        let a = &job.attributes;
        let method = a["method"].clone();
        assert!(method == "POST" || method == "PUT");
        let sent = format!("{{\"method\": \"{method}\"}}");
        assert_eq!(job.body.to_vec(), sent.as_bytes());
        assert_eq!(job.route.namespace, "eng-workflow");
        assert_eq!(job.route.doc_type, "event");
        assert_eq!(job.route.doc_version, "1");
        assert_eq!(job.route.doc_id, DOC_ID);
        assert_eq!(a["uri"], submit_path("eng-workflow"));
        assert_eq!(a["args"], "v=4&x=1");
        assert_eq!(a["protocol"], "HTTP/1.1");
        assert_eq!(a["remote_addr"], "127.0.0.1");
        // The length of the body this test sent, not a re-reading of the stored value.
        assert_eq!(a["content_length"], sent.len().to_string());
        assert_eq!(a["date"], "Mon, 12 Mar 2018 21:02:18 GMT");
        assert_eq!(a["dnt"], "1");
        assert_eq!(a["host"], app.addr.to_string());
        assert_eq!(a["user_agent"], "pingsender/1.0");
        assert_eq!(a["x_forwarded_for"], "10.98.132.74, 103.3.237.12");
        assert_eq!(a["x_pingsender_version"], "1.0");
        assert_eq!(a["x_debug_id"], "my_debug_session_1");
        assert_eq!(a["x_pipeline_proxy"], "2018-03-12T21:02:18.123456Z");
        assert_eq!(a["x_telemetry_agent"], "agent/2");
        assert_eq!(a["x_source_tags"], "automation");
        assert_eq!(a["x_lb_tags"], "TLSv1.3");
        let ts = &a["submission_timestamp"];
        assert_eq!(ts.len(), "2018-03-12T21:02:18.123456Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert_eq!(a.len(), 18, "exactly the expected attributes: {a:?}");
    }
}

#[tokio::test]
async fn absent_headers_are_left_out_and_telemetry_urls_parse() {
    let app = spawn_app(&[]).await;
    let path = format!("/submit/telemetry/{DOC_ID}/main/Firefox/61.0a1/nightly/20180328030202");
    let response = app.post(&path, "x").await;
    assert_eq!(response.status(), 200);
    let jobs = app.queued();
    let a = &jobs[0].attributes;
    assert_eq!(a["content_length"], "1", "the one byte sent");
    let mut keys: Vec<&str> = a.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "content_length",
            "host",
            "method",
            "protocol",
            "remote_addr",
            "submission_timestamp",
            "uri"
        ]
    );
    assert_eq!(jobs[0].route.doc_type, "main");
    assert_eq!(jobs[0].route.doc_version, "unversioned");
}

#[tokio::test]
async fn gzip_and_binary_bodies_are_stored_unchanged() {
    let app = spawn_app(&[]).await;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(br#"{"payload": "compressed telemetry"}"#)
        .unwrap();
    let gzipped = encoder.finish().unwrap();
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    for body in [gzipped.clone(), binary.clone(), Vec::new()] {
        let response = app
            .client
            .post(app.url(&submit_path("ns")))
            .header("Content-Encoding", "gzip")
            .header("Content-Length", body.len())
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let mut stored: Vec<Vec<u8>> = app.queued().iter().map(|j| j.body.to_vec()).collect();
    stored.sort();
    let mut expected = vec![gzipped, binary, Vec::new()];
    expected.sort();
    assert_eq!(stored, expected);
    let mut decoded = String::new();
    let gz = stored
        .iter()
        .find(|b| b.starts_with(&[0x1f, 0x8b]))
        .unwrap();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_string(&mut decoded)
        .unwrap();
    assert_eq!(decoded, r#"{"payload": "compressed telemetry"}"#);
}

#[tokio::test]
async fn client_ip_fields_are_dropped_when_configured() {
    let app = spawn_app(&[("DROP_CLIENT_IP", "true")]).await;
    let response = app
        .client
        .post(app.url(&submit_path("ns")))
        .header("X-Forwarded-For", "103.3.237.12")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let a = &app.queued()[0].attributes;
    assert!(
        !a.contains_key("remote_addr") && !a.contains_key("x_forwarded_for"),
        "{a:?}"
    );
    assert!(a.contains_key("uri"));
}

async fn status_and_body(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn malformed_requests_get_the_spec_status_and_nothing_is_queued() {
    let app = spawn_app(&[
        ("ALLOWED_NAMESPACES", "ns,telemetry"),
        ("MAX_BODY_BYTES", "1000"),
        ("MAX_PATH_BYTES", "200"),
    ])
    .await;
    let c = &app.client;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            c.post(app.url("/submit/ns/event/1/not-a-uuid")).body("x"),
            400,
            "UUID",
        ),
        (
            c.post(app.url(&format!("/submit/ns/ev%20ent/1/{DOC_ID}")))
                .body("x"),
            400,
            "docType",
        ),
        (
            c.post(app.url(&format!("/submit/other/event/1/{DOC_ID}")))
                .body("x"),
            404,
            "namespace",
        ),
        (
            c.post(app.url(&format!("/submit/telemetry/event/1/{DOC_ID}")))
                .body("x"),
            404,
            "telemetry",
        ),
        (
            c.post(app.url(&format!(
                "/submit/ns/{DOC_ID}/main/Firefox/61.0/release/2018"
            )))
            .body("x"),
            404,
            "submission paths",
        ),
        (c.post(app.url("/nowhere")).body("x"), 404, "not found"),
        (c.get(app.url(&submit_path("ns"))), 405, ""),
        (c.delete(app.url(&submit_path("ns"))), 405, ""),
        (c.patch(app.url(&submit_path("ns"))).body("x"), 405, ""),
        (
            c.post(app.url(&submit_path("ns"))).body(vec![b'a'; 1001]),
            413,
            "1000 bytes",
        ),
        (
            c.post(app.url(&format!("{}?pad={}", submit_path("ns"), "a".repeat(200))))
                .body("x"),
            414,
            "200 bytes",
        ),
        (
            c.post(app.url(&format!("/submit/ns/event/1/{}", "a".repeat(300))))
                .body("x"),
            414,
            "200 bytes",
        ),
    ];
    for (request, expected, message) in cases {
        let (status, body) = status_and_body(request.send().await.unwrap()).await;
        assert_eq!(status, expected, "body: {body}");
        assert!(
            body.contains(message),
            "{expected}: `{body}` lacks `{message}`"
        );
    }
    // A chunked body (no Content-Length) over the limit is cut off at the limit.
    let stream = futures::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 100])));
    let response = c
        .post(app.url(&submit_path("ns")))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // A chunked body within the limit is fine.
    let stream = futures::stream::iter((0..5).map(|_| Ok::<_, std::io::Error>(vec![b'b'; 100])));
    let response = c
        .post(app.url(&submit_path("ns")))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        app.queued().len(),
        1,
        "only the valid chunked submission was queued"
    );
}

#[tokio::test]
async fn missing_content_length_without_chunking_is_411() {
    let app = spawn_app(&[]).await;
    let addr = app.addr;
    let raw = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(
            stream,
            "POST {} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
            submit_path("ns")
        )
        .unwrap();
        let mut out = String::new();
        let _ = stream.read_to_string(&mut out);
        out
    })
    .await
    .unwrap();
    assert!(raw.starts_with("HTTP/1.1 411"), "{raw}");
    assert!(raw.contains("Content-Length is required"), "{raw}");
    assert!(app.queued().is_empty());
}

#[tokio::test]
async fn a_full_queue_gets_507_with_retry_after() {
    let app = spawn_app(&[("MAX_QUEUE_DEPTH", "3"), ("QUEUE_DEPTH_WARNING", "2")]).await;
    for _ in 0..3 {
        let r = app.post(&submit_path("ns"), "x").await;
        assert_eq!(r.status(), 200);
    }
    let url = app.url(&submit_path("ns"));
    let client = app.client.clone();
    let refused = eventually(Duration::from_secs(5), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.post(&url).body("x").send().await.unwrap();
            r.status() == 507 && r.headers().get("retry-after").is_some()
        }
    })
    .await;
    assert!(
        refused,
        "the sampled backlog should reach the limit and refuse with 507"
    );
    assert!(
        app.queued().len() <= 4 + 20,
        "at most the sampling window leaks past the limit"
    );
}

/// A backlog in a shard only another web node writes to (registered in `wharf:queue:shards`,
/// beyond this node's `QUEUE_SHARDS`) counts toward the limit too.
#[tokio::test]
async fn a_backlog_in_a_shard_another_node_registered_counts_toward_507() {
    let app = spawn_app(&[("MAX_QUEUE_DEPTH", "1000"), ("QUEUE_DEPTH_WARNING", "500")]).await;
    let mut conn = app.redis.connection();
    let extra = wharf_queue::Shard(900);
    let _: () = redis::cmd("SADD")
        .arg("wharf:queue:shards")
        .arg(extra.0)
        .query(&mut conn)
        .unwrap();
    let mut fill = redis::pipe();
    for _ in 0..1000 {
        fill.cmd("XADD")
            .arg(extra.stream())
            .arg("*")
            .arg("v")
            .arg("2");
    }
    let _: Vec<String> = fill.query(&mut conn).unwrap();
    // The sampler reads the shard registry again every 5 s. Until then this node's own
    // submissions add to the backlog it sees, but 600 of them stay under the limit of 1000:
    // only the registered shard's 1000 entries can bring the refusal.
    let mut accepted = 0;
    let refused = loop {
        let r = app.post(&submit_path("ns"), "x").await;
        if r.status() == 507 {
            break true;
        }
        assert_eq!(r.status(), 200);
        accepted += 1;
        if accepted == 600 {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(refused, "the registered shard's backlog was not counted");
}

#[tokio::test]
async fn redis_outage_gets_503_with_retry_after_then_recovers() {
    let mut app = spawn_app(&[]).await;
    let ok = app.post(&submit_path("ns"), "before").await;
    assert_eq!(ok.status(), 200);

    app.redis.stop();
    let r = app.post(&submit_path("ns"), "during").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "30");

    app.redis.restart();
    let url = app.url(&submit_path("ns"));
    let client = app.client.clone();
    let recovered = eventually(Duration::from_secs(10), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            client
                .post(&url)
                .body("after")
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    })
    .await;
    assert!(
        recovered,
        "submissions succeed again once Redis is back, without restarting wharf"
    );
}

#[tokio::test]
async fn submissions_and_requests_are_counted_in_statsd() {
    let app = spawn_app(&[]).await;
    app.post(&submit_path("ns"), "x").await;
    app.post("/submit/ns/event/1/nope", "x").await;
    let statsd = &app.statsd;
    let seen = eventually(Duration::from_secs(5), || async {
        let lines = statsd.lines();
        lines
            .iter()
            .any(|l| l.starts_with("wharf.submission.accepted:1|c"))
            && lines.iter().any(|l| {
                l.starts_with("wharf.submission.rejected:1|c") && l.contains("reason:bad_path")
            })
            && lines
                .iter()
                .any(|l| l.starts_with("wharf.enqueue.duration:") && l.contains("|ms"))
            && lines.iter().any(|l| {
                l.starts_with("wharf.request.count:1|c")
                    && l.contains("route:/submit/{*rest}")
                    && l.contains("status:200")
            })
            && lines
                .iter()
                .any(|l| l.starts_with("wharf.request.duration:") && l.contains("status:400"))
    })
    .await;
    assert!(seen, "metrics received: {:#?}", statsd.lines());
    assert!(
        statsd.lines().iter().all(|l| l.contains("env:development")),
        "every metric carries env"
    );
}
