"""The project's nginx config (nginx/wharf.conf.template) on Debian's real nginx.

Two upstreams:
* a header-echo server: shows exactly which X-Forwarded-*/X-Real-IP/X-Request-Id
  nginx sends upstream, and lets the body limit be probed at the byte;
* the real `wharf web` with a real redis-server: the full edge path.

The "load balancer" is peer address 127.0.0.2 (LB CIDR 127.0.0.2/32); a client
connecting from 127.0.0.1 is an untrusted peer.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from nginx_harness import request

SPOOF = "203.0.113.9"
LIMIT = 1048576  # MAX_BODY_BYTES == client_max_body_size 1m


def _echo(ng, path="/x", **kw):
    status, headers, body = request(ng.url(path, kw.pop("https_listener", False)), **kw)
    assert status == 200, (status, body[:300])
    return headers, json.loads(body)


# ------------------------------------------------------------------ echo upstream


def test_proxies_with_forwarding_headers(nginx_echo):
    headers, seen = _echo(nginx_echo, "/some/path?q=1")
    up = seen["headers"]
    assert seen["path"] == "/some/path?q=1"
    assert up["x-real-ip"] == "127.0.0.1"
    assert up["x-forwarded-for"] == "127.0.0.1"
    assert up["x-forwarded-proto"] == "http"
    assert re.fullmatch(r"[0-9a-f]{32}", up["x-request-id"])
    assert headers["x-request-id"] == up["x-request-id"]
    # upstream keepalive: HTTP/1.1 with no "Connection: close"
    assert up.get("connection", "") == ""


def test_untrusted_peer_cannot_spoof_client_address(nginx_echo):
    _, seen = _echo(
        nginx_echo, "/spoof-untrusted",
        headers={"X-Forwarded-For": SPOOF, "X-Forwarded-Proto": "https", "X-Real-IP": SPOOF},
    )
    up = seen["headers"]
    assert up["x-real-ip"] == "127.0.0.1"
    assert up["x-forwarded-for"] == "127.0.0.1"
    assert SPOOF not in json.dumps(up)
    assert up["x-forwarded-proto"] == "http"  # not the client's claim
    entry = nginx_echo.log_entries_for("/spoof-untrusted")[-1]
    assert entry["client_net"] == ""  # WHARF_LOG_CLIENT_IP defaults to off
    assert SPOOF not in nginx_echo.access_log.read_text()


def test_load_balancer_forwarded_for_is_believed(nginx_echo):
    # The ELB appends the address it saw; the client may have sent its own first.
    chain = f"198.51.100.1, {SPOOF}"
    _, seen = _echo(
        nginx_echo, "/via-lb", source="127.0.0.2",
        headers={"X-Forwarded-For": chain, "X-Forwarded-Proto": "https"},
    )
    up = seen["headers"]
    assert up["x-real-ip"] == SPOOF  # last hop added by the trusted LB
    assert up["x-forwarded-for"] == chain
    assert up["x-forwarded-proto"] == "https"
    entry = nginx_echo.log_entries_for("/via-lb")[-1]
    assert entry["client_net"] == ""
    log = nginx_echo.access_log.read_text()
    assert SPOOF not in log and "198.51.100.1" not in log


def test_https_listener_is_plain_http_marked_https(nginx_echo):
    _, seen = _echo(nginx_echo, "/on-443", https_listener=True)
    assert seen["headers"]["x-forwarded-proto"] == "https"


def test_request_id_kept_when_sane_else_generated(nginx_echo):
    headers, seen = _echo(nginx_echo, headers={"X-Request-Id": "abc-123_def.4"})
    assert seen["headers"]["x-request-id"] == "abc-123_def.4"
    assert headers["x-request-id"] == "abc-123_def.4"
    _, seen = _echo(nginx_echo, headers={"X-Request-Id": "bad id\"{}"})
    assert re.fullmatch(r"[0-9a-f]{32}", seen["headers"]["x-request-id"])


def test_body_limit_matches_max_body_bytes(nginx_echo):
    _, seen = _echo(nginx_echo, "/submit/a/b/1/at-limit", method="POST", body=b"x" * LIMIT)
    assert seen["body_len"] == LIMIT
    status, _, _ = request(nginx_echo.url("/submit/a/b/1/over"), method="POST", body=b"x" * (LIMIT + 1))
    assert status == 413


def test_nginx_413_on_submit_names_the_origin(nginx_echo):
    """nginx's own 413 never reaches wharf; for a browser it carries the request's Origin, so
    the page can read the status. Without an Origin it carries none."""
    origin = "https://app.example"
    status, headers, body = request(
        nginx_echo.url("/submit/a/b/1/over"), method="POST", body=b"x" * (LIMIT + 1),
        headers={"Origin": origin},
    )
    assert status == 413, body[:300]
    assert headers.get("access-control-allow-origin") == origin, headers
    assert "origin" in headers.get("vary", "").lower(), headers
    assert re.fullmatch(r"[0-9a-f]{32}", headers.get("x-request-id", "")), headers
    assert body == b"body larger than 1048576 bytes\n"
    status, headers, _ = request(nginx_echo.url("/submit/a/b/1/over"), method="POST", body=b"x" * (LIMIT + 1))
    assert status == 413
    assert "access-control-allow-origin" not in headers, headers
    # Answers that came from upstream pass unchanged: nginx adds no CORS header of its own.
    headers, _ = _echo(nginx_echo, "/submit/a/b/1/small", method="POST", body=b"{}", headers={"Origin": origin})
    assert "access-control-allow-origin" not in headers, headers


def test_debug_view_is_proxied_with_credentials_and_uncached(nginx_echo):
    headers, seen = _echo(
        nginx_echo, "/debug/my-tag/entries?after=1-0",
        headers={"Cookie": "wharf_debug=abc123", "Authorization": "Bearer the-token"},
    )
    up = seen["headers"]
    assert seen["path"] == "/debug/my-tag/entries?after=1-0"
    assert up["cookie"] == "wharf_debug=abc123"
    assert up["authorization"] == "Bearer the-token"
    # The server-level forwarding headers still apply in the /debug/ location.
    assert up["x-real-ip"] == "127.0.0.1" and up["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == up["x-request-id"]
    _, seen = _echo(nginx_echo, "/debug/login", method="POST", body=b"token=x",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert seen["method"] == "POST" and seen["body_len"] == 7
    entry = nginx_echo.log_entries_for("/debug/my-tag/entries")[-1]
    assert entry["status"] == 200  # logged without its query string
    assert "abc123" not in nginx_echo.access_log.read_text()
    assert "the-token" not in nginx_echo.access_log.read_text()


def test_debug_login_rate_limited(nginx_echo):
    statuses = [
        request(nginx_echo.url("/debug/login"), method="POST", body=b"token=guess",
                headers={"Content-Type": "application/x-www-form-urlencoded"}, source="127.0.0.3")[0]
        for _ in range(20)
    ]
    assert statuses[0] == 200, statuses
    assert 429 in statuses, statuses
    assert statuses.index(429) >= 10, statuses  # burst 10 passes first
    # The view's other paths are not limited: the live page polls every second.
    assert all(request(nginx_echo.url("/debug/t/entries"), source="127.0.0.3")[0] == 200 for _ in range(20))


def test_json_access_log_and_no_lbheartbeat_entries(nginx_echo):
    for _ in range(3):
        status, _, _ = request(nginx_echo.url("/__lbheartbeat__"))
        assert status == 200
    _echo(nginx_echo, "/logged")
    entries = nginx_echo.log_entries(until=lambda es: any(e["path"] == "/logged" for e in es))
    assert entries, "access log is empty"
    assert not [e for e in entries if e["path"].startswith("/__lbheartbeat__")]
    logged = [e for e in entries if e["path"] == "/logged"][-1]
    for field in ("time", "request_id", "method", "path", "status", "request_time", "upstream_addr", "user_agent"):
        assert field in logged
    assert logged["status"] == 200


def test_heartbeat_rate_limited(nginx_echo):
    statuses = [request(nginx_echo.url("/__heartbeat__"))[0] for _ in range(15)]
    assert statuses[0] == 200
    assert 429 in statuses, statuses
    first_limited = statuses.index(429)
    assert first_limited >= 5, statuses  # burst 5 passes first
    # /__lbheartbeat__ (the ELB's check) is never limited
    assert all(request(nginx_echo.url("/__lbheartbeat__"))[0] == 200 for _ in range(20))


# ------------------------------------------------------------------ real wharf web


SHARDS = 4  # QUEUE_SHARDS given to `wharf web` by nginx_harness.wharf_stack


def _shard_of(doc_id: str, shards: int = SHARDS) -> int:
    """The docId's shard as crates/wharf-queue/src/keys.rs computes it: FNV-1a (64-bit), then
    the splitmix64 finaliser, modulo QUEUE_SHARDS."""
    mask = 0xFFFFFFFFFFFFFFFF
    h = 0xCBF29CE484222325
    for byte in doc_id.encode():
        h = ((h ^ byte) * 0x100000001B3) & mask
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & mask
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & mask
    h ^= h >> 31
    return h % shards


def _queued_entries(redis, doc_id: str):
    """Every entry of the shard streams wharf:{n}:submissions whose route (`r`, ending in the
    docId) is `doc_id`'s, as (shard, stream entry id, {field: bytes})."""
    registered = {int(m) for m in redis.command("SMEMBERS", "wharf:queue:shards")}
    found = []
    for shard in sorted(set(range(SHARDS)) | registered):
        for entry_id, flat in redis.command("XRANGE", f"wharf:{{{shard}}}:submissions", "-", "+") or []:
            fields = dict(zip((k.decode() for k in flat[0::2]), flat[1::2]))
            if fields.get("r", b"").split(b"/")[-1] == doc_id.encode():
                found.append((shard, entry_id.decode(), fields))
    return found


def _queued(redis, doc_id: str, body: bytes) -> dict:
    """The one queued entry of `doc_id`, checked against the queue's entry layout
    (crates/wharf-queue/src/entry.rs); returns its attributes (the `at` JSON object)."""
    hits = _queued_entries(redis, doc_id)
    assert len(hits) == 1, f"expected one queued entry for {doc_id}, found {hits}"
    shard, _, fields = hits[0]
    assert shard == _shard_of(doc_id), (shard, _shard_of(doc_id))
    assert fields["v"] == b"2"
    assert fields["r"] == b"nginx-test/ping/1/" + doc_id.encode()
    assert fields["body"] == body  # raw bytes, no base64
    attrs = json.loads(fields["at"])
    assert isinstance(attrs, dict) and all(isinstance(v, str) for v in attrs.values()), attrs
    return attrs


def test_wharf_behind_nginx_dockerflow(wharf_stack):
    ng = wharf_stack["nginx"]
    status, _, _ = request(ng.url("/__lbheartbeat__"))
    assert status == 200
    status, _, body = request(ng.url("/__version__"))
    assert status == 200
    assert json.loads(body)["commit"] == "nginx-test"


def test_wharf_submission_through_nginx_keeps_real_client(wharf_stack):
    ng, redis = wharf_stack["nginx"], wharf_stack["redis"]
    doc_id = str(uuid.uuid4())
    sent = b'{"hello":"nginx"}'
    status, _, body = request(
        ng.url(f"/submit/nginx-test/ping/1/{doc_id}"), method="POST", body=sent,
        headers={"Content-Type": "application/json", "X-Forwarded-For": SPOOF},
    )
    assert status == 200, body
    entry = [e for e in ng.log_entries(until=lambda es: any(doc_id in e["path"] for e in es)) if doc_id in e["path"]][-1]
    assert entry["client_net"] == ""
    assert entry["upstream_status"] == "200"
    attrs = _queued(redis, doc_id, sent)
    assert SPOOF not in json.dumps(attrs), attrs
    # what nginx passed upstream is what wharf stored (the edge spec's attribute)
    assert attrs.get("x_forwarded_for") == "127.0.0.1", attrs


def test_wharf_submission_via_load_balancer_keeps_chain(wharf_stack):
    ng, redis = wharf_stack["nginx"], wharf_stack["redis"]
    doc_id = str(uuid.uuid4())
    chain = f"198.51.100.1, {SPOOF}"
    status, _, body = request(
        ng.url(f"/submit/nginx-test/ping/1/{doc_id}"), method="POST", body=b"{}",
        headers={"X-Forwarded-For": chain}, source="127.0.0.2",
    )
    assert status == 200, body
    entry = [e for e in ng.log_entries(until=lambda es: any(doc_id in e["path"] for e in es)) if doc_id in e["path"]][-1]
    assert entry["client_net"] == "" and entry["upstream_status"] == "200"
    assert SPOOF not in ng.access_log.read_text()
    attrs = _queued(redis, doc_id, b"{}")
    assert attrs.get("x_forwarded_for") == chain, attrs


def test_wharf_body_limit_through_nginx(wharf_stack):
    ng = wharf_stack["nginx"]
    status, _, body = request(
        ng.url(f"/submit/nginx-test/big/1/{uuid.uuid4()}"), method="POST", body=b"x" * LIMIT
    )
    assert status == 200, body[:300]  # exactly MAX_BODY_BYTES is accepted by both
    status, _, _ = request(
        ng.url(f"/submit/nginx-test/big/1/{uuid.uuid4()}"), method="POST", body=b"x" * (LIMIT + 1)
    )
    assert status == 413


def test_wharf_heartbeat_rate_limited(wharf_stack):
    ng = wharf_stack["nginx"]
    statuses = [request(ng.url("/__heartbeat__"))[0] for _ in range(15)]
    assert statuses[0] != 429, statuses  # first ones reach wharf (200, or 5xx if no worker)
    assert 429 in statuses, statuses
    assert statuses.index(429) >= 5, statuses


def test_wharf_cors_through_nginx(wharf_stack):
    ng = wharf_stack["nginx"]
    path = f"/submit/nginx-test/ping/1/{uuid.uuid4()}"
    status, headers, _ = request(ng.url(path), method="OPTIONS", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-debug-id"})
    assert status == 204
    assert headers["access-control-allow-origin"] == "*"
    assert "x-debug-id" in headers["access-control-allow-headers"]
    status, headers, _ = request(ng.url(path), method="POST", body=b"{}",
                                 headers={"Origin": "https://app.example", "Content-Type": "text/plain"})
    assert status == 200
    assert headers["access-control-allow-origin"] == "*"
    # nginx's own 413 and wharf's answers agree for a browser.
    status, headers, _ = request(ng.url(path), method="POST", body=b"x" * (LIMIT + 1),
                                 headers={"Origin": "https://app.example"})
    assert status == 413 and headers["access-control-allow-origin"] == "https://app.example"


def test_wharf_debug_view_through_nginx(wharf_stack):
    ng, token = wharf_stack["nginx"], wharf_stack["debug_token"]
    doc_id = str(uuid.uuid4())
    status, _, _ = request(ng.url(f"/submit/nginx-test/ping/1/{doc_id}"), method="POST",
                           body=b'{"through": "nginx"}', headers={"X-Debug-ID": "via-nginx"})
    assert status == 200
    status, headers, page = request(ng.url("/debug/via-nginx"))
    assert status == 401 and b'id="token"' in page
    assert headers["content-security-policy"].startswith("default-src 'none'")
    status, headers, _ = request(ng.url("/debug/login"), method="POST", body=f"token={token}".encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"},
                                 source="127.0.0.4")
    assert status == 303 and headers["location"] == "/debug/"
    cookie = headers["set-cookie"].split(";")[0]
    assert cookie.startswith("wharf_debug=") and token not in cookie
    deadline = time.monotonic() + 5
    while True:
        status, headers, body = request(ng.url("/debug/via-nginx/entries"),
                                        headers={"Authorization": f"Bearer {token}"})
        assert status == 200, body
        entries = json.loads(body)["entries"]
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [e["doc_id"] for e in entries] == [doc_id]
    assert entries[0]["body"]["text"] == '{\n  "through": "nginx"\n}'
    assert headers["cache-control"] == "no-store"
    # The copy is kept after the answer, so the index lists the tag once its entry is there.
    status, _, page = request(ng.url("/debug/"), headers={"Cookie": cookie})
    assert status == 200 and b'href="/debug/via-nginx"' in page
