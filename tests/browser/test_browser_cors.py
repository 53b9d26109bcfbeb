"""Cross-origin submissions from a real Chromium, the way Glean.js sends them.

The page is served by PageServer (http://127.0.0.1:<page port>), Wharf listens on
http://127.0.0.1:<web port>: a different origin, so the browser applies CORS. `fetch` with
`Content-Type: application/json; charset=utf-8` and X-* headers is preflighted (OPTIONS first);
`navigator.sendBeacon` with a string body is a text/plain POST that is never preflighted, so only
the server can refuse it.
"""

from __future__ import annotations

import base64
import gzip
import json
import time

import pytest

from browser_harness import BATCH_MAX_AGE_MS, doc_id, need_selenium, submit

need_selenium()

from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402  (after need_selenium)

DEBUG_TAG = "wharf-test"
# What Glean.js may send and a preflight must allow.
GLEAN_HEADERS = {"content-type", "content-encoding", "date", "x-debug-id", "x-source-tags", "x-telemetry-agent"}


def metrics_ping(doc: str, marker: str) -> str:
    """A Glean.js-like metrics ping; non-ASCII text checks the UTF-8 bytes arrive unchanged."""
    return json.dumps({
        "ping_info": {"seq": 3, "start_time": "2026-12-01T10:00:00.000+01:00",
                      "end_time": "2026-12-01T11:00:00.000+01:00", "reason": "inactive"},
        "client_info": {"telemetry_sdk_build": "5.0.3", "client_id": "c0ffee00-1111-4222-8333-444455556666",
                        "first_run_date": "2026-11-02+01:00", "os": "Linux", "locale": "fr-FR",
                        "app_display_version": "1.4.0", "app_channel": "release"},
        "metrics": {"string": {"page.title": f"Crème brûlée — 🍮 {marker}"}, "counter": {"page.loads": 7}},
        "docId": doc,
    }, ensure_ascii=False, separators=(",", ":"))


def open_page(browser, page_server) -> None:
    browser.driver.get(page_server.url("/index.html"))
    WebDriverWait(browser.driver, 10).until(lambda d: d.execute_script("return typeof gleanFetch") == "function")


def send_from_page(browser, calls: list[tuple]) -> dict:
    """Runs gleanFetch / gleanBeacon calls in the page, waits until each recorded its outcome."""
    for fn, *args in calls:
        browser.driver.execute_script(f"{fn}(...arguments)", *args)
    ids = [args[0] for _, *args in calls]
    return WebDriverWait(browser.driver, 15, poll_frequency=0.05).until(
        lambda d: d.execute_script(
            "const r = window.wharfResults; return arguments[0].every(id => id in r) ? r : null", ids
        ),
        message=f"the page to record the outcome of {ids}",
    )


@pytest.mark.parametrize("allowed", ["default", "list"])
def test_cross_origin_fetch_and_beacon_land_in_s3(make_stack, browser, page_server, allowed):
    """(a) With CORS_ALLOWED_ORIGINS unset (`*`) or listing the page's origin: a preflighted
    keepalive fetch (plain and gzip) and a sendBeacon from the other origin are accepted and land
    in S3 byte for byte, under the docIds of their URLs."""
    env = {} if allowed == "default" else {"CORS_ALLOWED_ORIGINS": f"https://app.example.com,{page_server.origin}"}
    stack = make_stack(env)
    open_page(browser, page_server)

    ids = {"fetch": doc_id(), "gzip": doc_id(), "beacon": doc_id()}
    bodies = {k: metrics_ping(v, k) for k, v in ids.items()}
    urls = {k: stack.submit_url(v) for k, v in ids.items()}
    results = send_from_page(browser, [
        ("gleanFetch", "fetch", urls["fetch"], bodies["fetch"], {"debugId": DEBUG_TAG, "sourceTags": "automation"}),
        ("gleanFetch", "gzip", urls["gzip"], bodies["gzip"], {"gzip": True}),
        ("gleanBeacon", "beacon", urls["beacon"], bodies["beacon"]),
    ])
    assert results["fetch"].get("status") == 200, results
    assert results["gzip"].get("status") == 200, results
    assert results["beacon"] == {"queued": True}, results

    # What the browser received (DevTools), including what the page may not read: the
    # preflight's answer, then the POST's.
    expected_origin = ("*", page_server.origin) if allowed == "default" else (page_server.origin,)
    for name in ("fetch", "gzip"):
        preflight = browser.wait_response(urls[name], method="OPTIONS")
        assert 200 <= preflight["status"] < 300, preflight
        assert preflight["headers"].get("access-control-allow-origin") in expected_origin, preflight
        methods = {m.strip().upper() for m in preflight["headers"].get("access-control-allow-methods", "").split(",")}
        assert {"POST", "PUT"} <= methods, preflight
        allowed_headers = {h.strip().lower() for h in preflight["headers"].get("access-control-allow-headers", "").split(",")}
        assert GLEAN_HEADERS <= allowed_headers, preflight
        answer = browser.wait_response(urls[name], method="POST")
        assert answer["status"] == 200, answer
        assert answer["headers"].get("access-control-allow-origin") in expected_origin, answer
    beacon_answer = browser.wait_response(urls["beacon"], method="POST")
    assert beacon_answer["status"] == 200, beacon_answer
    assert beacon_answer["headers"].get("access-control-allow-origin") in expected_origin, beacon_answer

    landed = stack.wait_landed(set(ids.values()))
    fetched, zipped, beacon = (landed[ids[k]] for k in ("fetch", "gzip", "beacon"))
    assert fetched.body == bodies["fetch"].encode("utf-8")
    assert fetched.attributes["uri"] == f"/submit/glean-js/metrics/1/{ids['fetch']}"
    assert fetched.attributes["method"] == "POST"
    assert fetched.attributes.get("x_debug_id") == DEBUG_TAG
    assert fetched.attributes.get("x_source_tags") == "automation"
    assert fetched.attributes.get("x_telemetry_agent") == "Glean/5.0.3 (JS on Linux)"
    # Stored as sent, still compressed: the bytes the page's CompressionStream produced.
    assert zipped.body == base64.b64decode(results["gzip"]["sentBase64"])
    assert gzip.decompress(zipped.body) == bodies["gzip"].encode("utf-8")
    assert zipped.attributes["uri"].endswith(ids["gzip"])
    assert beacon.body == bodies["beacon"].encode("utf-8")
    assert beacon.attributes["uri"] == f"/submit/glean-js/metrics/1/{ids['beacon']}"
    assert "x_debug_id" not in beacon.attributes


def test_origin_not_allowed_is_refused_and_nothing_is_stored(make_stack, browser, page_server):
    """(b) CORS_ALLOWED_ORIGINS lists other origins only (one differs from the page's by host
    alone: localhost vs 127.0.0.1). The browser refuses the preflighted fetch (the page gets a
    TypeError), the server answers the beacon 403, and nothing reaches Redis or S3."""
    stack = make_stack({"CORS_ALLOWED_ORIGINS": f"https://app.example.com,http://localhost:{page_server.port}"})
    open_page(browser, page_server)

    ids = {"fetch": doc_id(), "beacon": doc_id()}
    urls = {k: stack.submit_url(v) for k, v in ids.items()}
    results = send_from_page(browser, [
        ("gleanFetch", "fetch", urls["fetch"], metrics_ping(ids["fetch"], "fetch"), {"debugId": DEBUG_TAG}),
        ("gleanBeacon", "beacon", urls["beacon"], metrics_ping(ids["beacon"], "beacon")),
    ])
    assert "status" not in results["fetch"], f"the browser let the page read an answer: {results}"
    assert results["fetch"]["error"].startswith("TypeError"), results
    assert results["beacon"] == {"queued": True}, results
    # The browser stopped at the preflight: refused, no CORS headers, the POST never sent.
    preflight = browser.wait_response(urls["fetch"], method="OPTIONS")
    assert preflight["status"] == 403 and "access-control-allow-origin" not in preflight["headers"], preflight
    assert not [r for r in browser.network_responses() if r["url"] == urls["fetch"] and r["method"] == "POST"]
    assert browser.wait_response(urls["beacon"], method="POST")["status"] == 403

    # The same origin from outside the browser is refused too.
    stray = doc_id()
    assert submit(stack.submit_url(stray), b"{}", {"Origin": page_server.origin}) == 403

    # A document without Origin (an SDK, a server) is accepted: once it is in S3 the worker has
    # taken everything queued before it. Then watch a few more batch ages for anything else.
    control = doc_id()
    assert submit(stack.submit_url(control), b'{"control":true}') == 200
    stack.wait_landed({control})
    deadline = time.monotonic() + 5 * BATCH_MAX_AGE_MS / 1000
    while time.monotonic() < deadline:
        others = [d.doc_id for d in stack.landed() if d.doc_id != control]
        assert not others, f"refused documents reached S3: {others}"
        time.sleep(0.05)
    assert [d.doc_id for d in stack.landed()] == [control]
    # Redis never saw them either: one entry ever added over every shard stream, the control.
    streams = stack.redis_streams()
    assert sum(s["entries-added"] for s in streams.values()) == 1, streams
    assert sum(s["length"] for s in streams.values()) == 0, streams
