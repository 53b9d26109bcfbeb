//! The live debug view against a real redis-server: off by default, what it keeps and how it shows it, its caps and TTLs, who may see it, and that it can never fail a submission.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers too may panic on a failed step

mod common;

use std::io::Write;
use std::time::Duration;

use common::{spawn_app, TestApp, DOC_ID};
use serde_json::Value;
use wharf_testkit::eventually;

const TOKEN: &str = "a-debug-token-long-enough-for-tests";
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'";

fn submit_path(ns: &str) -> String {
    format!("/submit/{ns}/event/1/{DOC_ID}")
}

async fn with_view(extra: &[(&str, &str)]) -> TestApp {
    let mut vars = vec![("DEBUG_VIEW_TOKEN", TOKEN)];
    vars.extend_from_slice(extra);
    spawn_app(&vars).await
}

/// Submits `body` tagged `tag`; the submission itself must succeed.
async fn submit(app: &TestApp, tag: &str, body: impl Into<reqwest::Body>) {
    let r = app
        .client
        .post(app.url(&submit_path("debug-ns")))
        .header("X-Debug-ID", tag)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn get_json(app: &TestApp, path: &str) -> (u16, Value) {
    let r = app
        .client
        .get(app.url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// The tag's entries once there are `n` of them (the view keeps them in the background).
async fn entries(app: &TestApp, tag: &str, n: usize) -> Vec<Value> {
    entries_once(app, tag, |got| got.len() == n).await
}

/// The tag's entries once `ready` says so.
async fn entries_once(app: &TestApp, tag: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let path = format!("/debug/{tag}/entries");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = get_json(app, &path).await;
        assert_eq!(status, 200, "{body}");
        let got = body["entries"].as_array().unwrap().clone();
        if ready(&got) {
            return got;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries for {tag} never got ready, last answer: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn debug_keys(app: &TestApp) -> Vec<String> {
    let mut conn = app.redis.connection();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("wharf:debug:*")
        .query(&mut conn)
        .unwrap();
    keys.sort();
    keys
}

/// Waits until `n` copies for the view have been counted as failed (`debug_view.dropped`,
/// `reason:failed`), and fails the test if that never happens.
async fn assert_failed_copies(app: &TestApp, n: usize) {
    let counted = eventually(Duration::from_secs(5), || async {
        app.statsd
            .lines()
            .iter()
            .filter(|l| {
                l.starts_with("wharf.debug_view.dropped:1|c") && l.contains("reason:failed")
            })
            .count()
            == n
    })
    .await;
    assert!(counted, "{:#?}", app.statsd.lines());
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

#[tokio::test]
async fn off_by_default_every_debug_path_is_404_and_nothing_is_kept() {
    let app = spawn_app(&[]).await;
    submit(&app, "my-tag", "{}").await;
    for path in [
        "/debug",
        "/debug/",
        "/debug/login",
        "/debug/my-tag",
        "/debug/my-tag/entries",
        "/debug/assets/debug.js",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = app
        .client
        .post(app.url("/debug/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The submission's own record is in the queue; the view kept nothing.
    assert_eq!(app.queued().len(), 1);
    // A window in which nothing may happen, so a sleep: there is no event to wait for when the
    // view is off. A copy the view did try to keep would be written, or given up and counted,
    // within REDIS_TIMEOUT_MS (300 ms in these tests), so after it neither a key nor a count of
    // the attempt can still be on its way.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(debug_keys(&app).is_empty(), "{:?}", debug_keys(&app));
    let attempts: Vec<String> = app
        .statsd
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("wharf.debug_view."))
        .collect();
    assert!(attempts.is_empty(), "{attempts:?}");
}

#[tokio::test]
async fn tagged_submissions_appear_decoded() {
    let app = with_view(&[]).await;
    let json = br#"{"z": 1, "ping_info": {"seq": 7, "reason": "dirty_startup"}, "a": []}"#;
    submit(&app, "dev-tag", json.as_slice()).await;
    // Each waits for the one before: background writes could otherwise land in any order.
    entries(&app, "dev-tag", 1).await;
    let r = app
        .client
        .post(app.url(&submit_path("debug-ns")))
        .header("X-Debug-ID", "dev-tag")
        .header("Content-Encoding", "gzip")
        .header("User-Agent", "<img src=x onerror=alert(1)>")
        .body(gzip(br#"{"compressed": true}"#))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    entries(&app, "dev-tag", 2).await;
    submit(&app, "dev-tag", vec![0u8, 1, 2, 0xff, b'A']).await;
    entries(&app, "dev-tag", 3).await;
    submit(&app, "dev-tag", "<script>alert(1)</script>").await;

    let got = entries(&app, "dev-tag", 4).await;
    // Oldest first; the page shows them newest on top.
    let first = &got[0];
    assert_eq!(first["namespace"], "debug-ns");
    assert_eq!(first["doc_type"], "event");
    assert_eq!(first["doc_version"], "1");
    assert_eq!(first["doc_id"], DOC_ID);
    assert_eq!(first["attributes"]["x_debug_id"], "dev-tag");
    assert_eq!(first["attributes"]["uri"], submit_path("debug-ns"));
    assert!(first["received_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(first["body"]["kind"], "json");
    assert_eq!(
        first["body"]["text"],
        "{\n  \"z\": 1,\n  \"ping_info\": {\n    \"seq\": 7,\n    \"reason\": \"dirty_startup\"\n  },\n  \"a\": []\n}",
        "pretty-printed, keys in the order sent"
    );
    assert_eq!(first["body"]["bytes"], json.len());
    assert_eq!(first["body"]["gzip"], false);
    assert_eq!(first["body"]["truncated"], false);

    let gz = &got[1]["body"];
    assert_eq!(
        (gz["kind"].as_str(), gz["gzip"].as_bool()),
        (Some("json"), Some(true))
    );
    assert_eq!(gz["text"], "{\n  \"compressed\": true\n}");
    assert_eq!(
        got[1]["attributes"]["user_agent"], "<img src=x onerror=alert(1)>",
        "client strings travel as JSON strings, for textContent"
    );

    let binary = &got[2]["body"];
    assert_eq!(binary["kind"], "hex");
    assert!(
        binary["text"]
            .as_str()
            .unwrap()
            .starts_with("00000000  00 01 02 ff 41"),
        "{binary}"
    );

    let script = &got[3]["body"];
    assert_eq!(script["kind"], "text");
    assert_eq!(script["text"], "<script>alert(1)</script>");

    // `after` returns only what came later.
    let (status, later) = get_json(
        &app,
        &format!(
            "/debug/dev-tag/entries?after={}",
            got[1]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(status, 200);
    let ids: Vec<&Value> = later["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["id"])
        .collect();
    assert_eq!(ids, vec![&got[2]["id"], &got[3]["id"]]);
    let (status, body) = get_json(&app, "/debug/dev-tag/entries?after=1)%20OR%20x").await;
    assert_eq!((status, body["error"].is_string()), (400, true));

    let kept = eventually(Duration::from_secs(5), || async {
        app.statsd
            .lines()
            .iter()
            .any(|l| l.starts_with("wharf.debug_view.kept:1|c"))
    })
    .await;
    assert!(kept, "{:#?}", app.statsd.lines());
}

#[tokio::test]
async fn a_large_body_is_kept_cut_at_32_kib() {
    let app = with_view(&[]).await;
    let big = "x".repeat(40 * 1024);
    submit(&app, "big", big.clone()).await;
    let got = entries(&app, "big", 1).await;
    let body = &got[0]["body"];
    assert_eq!(body["kind"], "text");
    assert_eq!(body["truncated"], true);
    assert_eq!(body["bytes"], big.len());
    assert_eq!(body["text"].as_str().unwrap().len(), 32 * 1024);
    // The queue has the whole body: the cut is the view's only.
    assert_eq!(app.queued()[0].body.len(), big.len());
}

#[tokio::test]
async fn invalid_debug_ids_are_not_kept_but_the_submission_succeeds() {
    let app = with_view(&[]).await;
    for tag in [
        "under_score",
        "twenty-one-characters",
        "sp ace",
        "<script>",
        "dot.ted",
    ] {
        submit(&app, tag, "{}").await;
    }
    // Repeated headers are joined (`a, b`), which is no tag either.
    let r = app
        .client
        .post(app.url(&submit_path("debug-ns")))
        .header("X-Debug-ID", "a")
        .header("X-Debug-ID", "b")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A valid one after them: once it is kept, the ones before would have been too.
    submit(&app, "valid", "{}").await;
    entries(&app, "valid", 1).await;
    // The stream is written before the tag index: wait for both.
    let only_valid = eventually(Duration::from_secs(5), || async {
        debug_keys(&app) == ["wharf:debug:tags", "wharf:debug:{valid}"]
    })
    .await;
    assert!(only_valid, "{:?}", debug_keys(&app));
    assert_eq!(app.queued().len(), 7, "every submission was queued");
}

#[tokio::test]
async fn entries_and_tags_are_capped_and_expire() {
    let app = with_view(&[
        ("DEBUG_VIEW_MAX_ENTRIES", "3"),
        ("DEBUG_VIEW_MAX_TAGS", "2"),
        ("DEBUG_VIEW_TTL_MS", "60000"),
    ])
    .await;
    for i in 0..5 {
        submit(&app, "tag-a", format!("{{\"n\": {i}}}")).await;
        // One at a time: the background writes of two submissions could land in either order.
        let newest = format!("{{\n  \"n\": {i}\n}}");
        entries_once(&app, "tag-a", |got| {
            got.last()
                .is_some_and(|e| e["body"]["text"] == newest.as_str())
        })
        .await;
    }
    let kept = entries(&app, "tag-a", 3).await;
    let texts: Vec<&str> = kept
        .iter()
        .map(|e| e["body"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        ["{\n  \"n\": 2\n}", "{\n  \"n\": 3\n}", "{\n  \"n\": 4\n}"],
        "the newest three"
    );
    let mut conn = app.redis.connection();
    let length: u64 = redis::cmd("XLEN")
        .arg("wharf:debug:{tag-a}")
        .query(&mut conn)
        .unwrap();
    assert_eq!(length, 3, "the stream itself is capped");

    submit(&app, "tag-b", "{}").await;
    entries(&app, "tag-b", 1).await;
    submit(&app, "tag-c", "{}").await;
    entries(&app, "tag-c", 1).await;
    let gone = eventually(Duration::from_secs(5), || async {
        debug_keys(&app)
            == [
                "wharf:debug:tags",
                "wharf:debug:{tag-b}",
                "wharf:debug:{tag-c}",
            ]
    })
    .await;
    assert!(
        gone,
        "the oldest tag's stream is deleted with it: {:?}",
        debug_keys(&app)
    );
    let tags: Vec<String> = redis::cmd("ZREVRANGE")
        .arg("wharf:debug:tags")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    assert_eq!(tags, ["tag-c", "tag-b"]);

    for key in [
        "wharf:debug:tags",
        "wharf:debug:{tag-b}",
        "wharf:debug:{tag-c}",
    ] {
        let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
        assert!((1..=60_000).contains(&ttl), "{key}: {ttl}");
    }

    // The list page shows the two tags, newest first, with their counts.
    let r = app
        .client
        .get(app.url("/debug/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let c = html.find(r#"<a href="/debug/tag-c">tag-c</a>"#).unwrap();
    let b = html.find(r#"<a href="/debug/tag-b">tag-b</a>"#).unwrap();
    assert!(c < b, "newest first");
    assert!(!html.contains("tag-a"));
}

#[tokio::test]
async fn without_the_token_nothing_is_shown() {
    let app = with_view(&[]).await;
    submit(&app, "secret-tag", r#"{"private": "data"}"#).await;
    entries(&app, "secret-tag", 1).await;
    for path in ["/debug/", "/debug/secret-tag"] {
        for auth in [None, Some("Bearer wrong-token"), Some(TOKEN)] {
            let mut request = app.client.get(app.url(path));
            if let Some(auth) = auth {
                request = request.header("Authorization", auth);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {auth:?}");
            assert!(r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            assert_eq!(r.headers()["content-security-policy"], CSP);
            let html = r.text().await.unwrap();
            assert!(
                html.contains(r#"<input name="token" id="token""#),
                "the login form"
            );
            assert!(!html.contains("private"));
        }
    }
    for cookie in ["wharf_debug=", &format!("wharf_debug={TOKEN}")] {
        let r = app
            .client
            .get(app.url("/debug/secret-tag/entries"))
            .header("Cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "the cookie holds a digest, not the token");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, serde_json::json!({"error": "unauthorized"}));
    }
    let r = app
        .client
        .post(app.url("/debug/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "not-the-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    let html = r.text().await.unwrap();
    assert!(html.contains("not the debug view") && html.contains(r#"id="login""#));
}

#[tokio::test]
async fn login_sets_a_cookie_that_works_until_logout() {
    let app = with_view(&[]).await;
    submit(&app, "cookie-tag", "{}").await;
    entries(&app, "cookie-tag", 1).await;
    let client = no_redirects();
    let form = client.get(app.url("/debug/login")).send().await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains(r#"id="login""#));

    let r = client
        .post(app.url("/debug/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/debug/");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("wharf_debug="), "{set}");
    for attribute in ["; Path=/debug", "; HttpOnly", "; SameSite=Strict"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(
        !set.contains(TOKEN),
        "the token itself never goes in the cookie"
    );
    assert!(!set.contains("Secure"), "plain HTTP: no Secure cookie");
    let cookie = set.split(';').next().unwrap().to_string();

    for path in ["/debug/", "/debug/cookie-tag", "/debug/cookie-tag/entries"] {
        let r = client
            .get(app.url(path))
            .header("Cookie", format!("other=1; {cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = client
        .get(app.url("/debug/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(r
        .text()
        .await
        .unwrap()
        .contains(r#"<a href="/debug/cookie-tag">cookie-tag</a>"#));

    // Behind nginx on HTTPS the cookie is Secure.
    let r = client
        .post(app.url("/debug/login"))
        .header("X-Forwarded-Proto", "https")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", TOKEN))
        .send()
        .await
        .unwrap();
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));

    let r = client
        .post(app.url("/debug/logout"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cleared = r.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("wharf_debug=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn pages_are_protected_and_escape_client_strings() {
    let app = with_view(&[]).await;
    submit(&app, "xss", "<script>alert(1)</script>").await;
    entries(&app, "xss", 1).await;
    // A member only a person with Redis access could write; the page must still escape it.
    let mut conn = app.redis.connection();
    let now = chrono::Utc::now().timestamp_millis();
    let _: () = redis::cmd("ZADD")
        .arg("wharf:debug:tags")
        .arg(now)
        .arg("<script>alert(2)</script>")
        .query(&mut conn)
        .unwrap();

    for path in [
        "/debug/",
        "/debug/xss",
        "/debug/xss/entries",
        "/debug/login",
        "/debug/assets/debug.js",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let h = r.headers();
        assert_eq!(h["content-security-policy"], CSP, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["cache-control"], "no-store", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
    }
    let html = app
        .client
        .get(app.url("/debug/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        !html.contains("href=\"/debug/&lt;"),
        "an invalid tag gets no link"
    );

    let page = app
        .client
        .get(app.url("/debug/xss"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"data-tag="xss""#));
    assert!(
        !page.contains("alert(1)"),
        "documents are never in the page's HTML"
    );
    assert_eq!(page.matches("<script").count(), 1, "only the view's script");
    assert!(page.contains(r#"<script src="/debug/assets/debug.js"></script>"#));

    // Whatever a tag in the URL says, an invalid one is a 404 that does not repeat it.
    for path in [
        "/debug/%3Cscript%3E",
        "/debug/under_score",
        "/debug/twenty-one-characters",
        "/debug/under_score/entries",
    ] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
        assert!(!r.text().await.unwrap().contains("script"));
    }
}

#[tokio::test]
async fn assets_are_embedded_and_nothing_loads_from_elsewhere() {
    let app = with_view(&[]).await;
    let mut everything = String::new();
    for (path, content_type) in [
        ("/debug/assets/debug.js", "text/javascript; charset=utf-8"),
        ("/debug/assets/debug.css", "text/css; charset=utf-8"),
        ("/debug/login", "text/html; charset=utf-8"),
        ("/debug/", "text/html; charset=utf-8"),
        ("/debug/some-tag", "text/html; charset=utf-8"),
    ] {
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], content_type, "{path}");
        everything.push_str(&r.text().await.unwrap());
    }
    for outside in ["http://", "https://", "//cdn", "@import", "url("] {
        assert!(!everything.contains(outside), "`{outside}` found");
    }
    assert!(
        !everything.contains("innerHTML"),
        "the script builds nodes with textContent"
    );
    let r = app.get("/debug/assets/other.js").await;
    assert_eq!(r.status(), 404);
    let r = no_redirects().get(app.url("/debug")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(r.headers()["location"], "/debug/");
}

#[tokio::test]
async fn the_view_keeps_the_global_limits() {
    let app = with_view(&[("MAX_PATH_BYTES", "64")]).await;
    let r = app
        .client
        .get(app.url(&format!("/debug/tag/entries?after=1-{}", "0".repeat(60))))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    let r = app
        .client
        .post(app.url("/debug/login"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("token={}", "a".repeat(10_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "a login form is small");
}

#[tokio::test]
async fn a_debug_write_refused_by_redis_never_fails_the_submission() {
    let app = with_view(&[]).await;
    let mut conn = app.redis.connection();
    // Redis refuses every debug key to the web role (NOPERM) but still takes the queue's.
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("resetkeys")
        .arg("~wharf:{*")
        .arg("~wharf:queue:*")
        .arg("~wharf:workers:*")
        .query(&mut conn)
        .unwrap();
    for i in 0..5 {
        submit(&app, "refused", format!("{{\"n\": {i}}}")).await;
    }
    assert_failed_copies(&app, 5).await;
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("allkeys")
        .query(&mut conn)
        .unwrap();
    assert_eq!(app.queued().len(), 5, "every submission was queued");
    assert!(debug_keys(&app).is_empty());

    // The index in the wrong type: the document is written, indexing it fails, the submission
    // still succeeds.
    let _: () = redis::cmd("SET")
        .arg("wharf:debug:tags")
        .arg("not a sorted set")
        .query(&mut conn)
        .unwrap();
    submit(&app, "wrongtype", "{}").await;
    assert_failed_copies(&app, 6).await;
    assert_eq!(app.queued().len(), 6);
}

#[tokio::test]
async fn a_redis_outage_during_the_view_fails_only_the_view() {
    let mut app = with_view(&[]).await;
    submit(&app, "outage", "{}").await;
    entries(&app, "outage", 1).await;
    app.redis.stop();
    let (status, body) = get_json(&app, "/debug/outage/entries").await;
    assert_eq!((status, body["error"].is_string()), (503, true));
    let r = app
        .client
        .get(app.url("/debug/"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // The page itself needs no Redis: it loads, and its script reports the outage.
    let r = app
        .client
        .get(app.url("/debug/outage"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
