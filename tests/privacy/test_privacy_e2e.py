"""End to end: no client address, credential, cookie, session token or query-string token
reaches Wharf's logs, metrics or error reports, nor nginx's logs.

One run (module fixture `run`) starts a real redis-server, `wharf web` (LOG_FORMAT=json,
stdout and stderr captured), a UDP StatsD sink, an HTTP Sentry sink and nginx in front
(nginx/wharf.conf.template, WHARF_LOG_CLIENT_IP at its default). It sends requests full of
distinctive secret values three ways: straight to wharf, through nginx from an untrusted
peer (127.0.0.1), and through nginx from the load balancer (127.0.0.2, whose
X-Forwarded-For nginx believes); to /submit (valid and invalid paths), /__heartbeat__ and
/__error__ (token in the X-Error-Token header and in the old ?token= form). Mid-run Redis is
stopped, submissions get 503, and Redis is started again. Then it waits for the Sentry event
and the StatsD packets, stops wharf and nginx, and every captured byte is searched.

Values stored as document attributes in Redis are the product, not a leak: Redis is not
searched. nginx's error log is at `info`, more than production writes (the official image
logs at `notice`, Debian at `error`); no request here fails inside nginx. When one does
(wharf unreachable, a body over the limit), nginx's error log names the client and the
request line by design: nginx/README.md, and test_nginx_access_log_privacy.py.
"""

from __future__ import annotations

import json
import uuid

import pytest

from privacy_harness import (
    LB_CIDR,
    Nginx,
    RedisServer,
    SentrySink,
    StatsdSink,
    Wharf,
    find_exe,
    request,
    wait_until,
    wharf_exe,
)

_RUN = uuid.uuid4().hex[:10]

# Distinctive values that must never be captured. The addresses are in documentation and
# special-use ranges, none a prefix of another; the tokens are random per run.
SECRETS = {
    "X-Forwarded-For first hop": "192.0.2.163",
    "X-Forwarded-For last hop": "198.51.100.171",
    "True-Client-IP": "203.0.113.172",
    "X-Client-IP": "198.18.0.173",
    "CF-Connecting-IP": "100.64.17.174",
    "X-Real-IP": "192.0.2.175",
    "Forwarded for": "203.0.113.176",
    "Forwarded for (IPv6)": "2001:db8:beef::177",
    "Authorization bearer": f"bearer{_RUN}{uuid.uuid4().hex}",
    "Cookie session": f"cookie{_RUN}{uuid.uuid4().hex}",
    "X-Amz-Security-Token": f"amztoken{_RUN}{uuid.uuid4().hex}",
    "?token= query": f"querytoken{_RUN}{uuid.uuid4().hex}",
    "ERROR_ENDPOINT_TOKEN": f"errortoken{_RUN}{uuid.uuid4().hex}",
    "wrong X-Error-Token": f"wrongtoken{_RUN}{uuid.uuid4().hex}",
}

# Not secret, and logged on purpose (request.summary `agent`, nginx `user_agent`, the Sentry
# event's request headers): finding it proves the search reads what was captured.
MARKER = f"privacy-marker/{_RUN}"

SECRET_HEADERS = {
    "User-Agent": MARKER,
    "X-Forwarded-For": f"{SECRETS['X-Forwarded-For first hop']}, {SECRETS['X-Forwarded-For last hop']}",
    "True-Client-IP": SECRETS["True-Client-IP"],
    "X-Client-IP": SECRETS["X-Client-IP"],
    "CF-Connecting-IP": SECRETS["CF-Connecting-IP"],
    "X-Real-IP": SECRETS["X-Real-IP"],
    "Forwarded": (
        f'for={SECRETS["Forwarded for"]};proto=https, for="[{SECRETS["Forwarded for (IPv6)"]}]"'
    ),
    "Authorization": f"Bearer {SECRETS['Authorization bearer']}",
    "Cookie": f"session={SECRETS['Cookie session']}",
    "X-Amz-Security-Token": SECRETS["X-Amz-Security-Token"],
}
QUERY = f"?token={SECRETS['?token= query']}"


def _need(name: str) -> None:
    if find_exe(name) is None:
        pytest.skip(f"SKIPPED: {name} not installed (apt-get install {name})")


class Target:
    """Where a request goes: wharf itself, or nginx from a given peer address."""

    def __init__(self, name: str, base_url, source: str):
        self.name, self._base, self.source = name, base_url, source

    def send(self, path: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None):
        h = dict(SECRET_HEADERS)
        h.update(headers or {})
        status, _, _ = request(self._base(path), method=method, body=body, headers=h, source=self.source)
        return status


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    for name in ("nginx", "redis-server", "envsubst"):
        _need(name)
    if wharf_exe() is None:
        pytest.skip("SKIPPED: no wharf binary (cargo build, or set WHARF_BIN)")
    tmp = tmp_path_factory.mktemp("privacy")
    (tmp / "version.json").write_text(
        '{"source":"https://example.invalid/wharf","version":"test","commit":"privacy","build":""}'
    )
    statsd = StatsdSink()
    sentry = SentrySink(tmp)
    redis = wharf = nginx = None
    try:
        redis = RedisServer(tmp)
        wharf = Wharf(tmp, {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(redis.port),
            "REDIS_TIMEOUT_MS": "500",
            "HEARTBEAT_CACHE_MS": "10",  # so the heartbeat during the outage runs its checks
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
            "ENVIRONMENT": "privacy-test",
            "VERSION_FILE": str(tmp / "version.json"),
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(statsd.port),
            "SENTRY_DSN": sentry.dsn,
            "ERROR_ENDPOINT_TOKEN": SECRETS["ERROR_ENDPOINT_TOKEN"],
        })
        nginx = Nginx(tmp, f"127.0.0.1:{wharf.port}", LB_CIDR, error_log_level="info")
        targets = [
            Target("direct", wharf.url, "127.0.0.1"),
            Target("nginx", nginx.url, "127.0.0.1"),
            Target("nginx-via-lb", nginx.url, "127.0.0.2"),
        ]
        statuses: dict[tuple[str, str], int] = {}
        for t in targets:
            doc = str(uuid.uuid4())
            statuses[t.name, "submit"] = t.send(
                f"/submit/privacy/ping/1/{doc}{QUERY}", "POST", b'{"k":"v"}',
                {"Content-Type": "application/json"},
            )
            statuses[t.name, "submit-bad-docid"] = t.send(f"/submit/privacy/ping/1/not-a-uuid{QUERY}", "POST", b"{}")
            statuses[t.name, "submit-unknown-route"] = t.send(f"/submit/privacy{QUERY}", "POST", b"{}")
            statuses[t.name, "heartbeat"] = t.send(f"/__heartbeat__{QUERY}")
            statuses[t.name, "error-query-token"] = t.send(f"/__error__?token={SECRETS['ERROR_ENDPOINT_TOKEN']}")
            statuses[t.name, "error-header-token"] = t.send(
                f"/__error__{QUERY}", headers={"X-Error-Token": SECRETS["ERROR_ENDPOINT_TOKEN"]}
            )
            statuses[t.name, "error-wrong-token"] = t.send(
                f"/__error__?token={SECRETS['wrong X-Error-Token']}",
                headers={"X-Error-Token": SECRETS["wrong X-Error-Token"]},
            )

        # Redis goes away: submissions get 503 and wharf logs its warnings.
        redis.stop()
        for t in targets:
            statuses[t.name, "submit-redis-down"] = t.send(
                f"/submit/privacy/ping/1/{uuid.uuid4()}{QUERY}", "POST", b"{}"
            )
            statuses[t.name, "heartbeat-redis-down"] = t.send(f"/__heartbeat__{QUERY}")
        redis.start()
        statuses["direct", "submit-after-restart"] = wait_until(
            lambda: (s := targets[0].send(f"/submit/privacy/ping/1/{uuid.uuid4()}{QUERY}", "POST", b"{}")) == 200
            and s,
            15, "a submission accepted again after Redis restarted", interval=0.2,
        )

        wait_until(
            lambda: any(b"__error__ called" in r.decoded for r in sentry.snapshot()),
            15, "the __error__ event at the Sentry listener",
        )
        wait_until(
            lambda: any(b"request.count" in p for p in statsd.snapshot()),
            15, "request.count packets at the StatsD sink",
        )
    except Exception:
        for f in ("wharf.stdout", "wharf.stderr", "redis.log", "error.log", "nginx.stderr"):
            if (tmp / f).exists():
                print(f"--- {f} (tail)\n" + (tmp / f).read_text(errors="replace")[-3000:])
        raise
    finally:
        exit_codes = {}
        if nginx is not None:
            nginx.close()
        if wharf is not None:
            exit_codes["wharf"] = wharf.close()
        if redis is not None:
            redis.stop()
        statsd.close()
        sentry.close()

    captures = {
        "wharf stdout": wharf.stdout.read_bytes(),
        "wharf stderr": wharf.stderr.read_bytes(),
        "nginx access log": nginx.access_log.read_bytes() if nginx.access_log.exists() else b"",
        "nginx error log": nginx.error_log.read_bytes() if nginx.error_log.exists() else b"",
        "statsd packets": b"\n".join(statsd.snapshot()),
        "sentry requests (headers + decoded bodies)": b"\n".join(
            r.headers + b"\n" + r.decoded for r in sentry.snapshot()
        ),
    }
    (tmp / "statsd.packets").write_bytes(captures["statsd packets"])
    print(f"privacy run captures in {tmp}")
    return {"captures": captures, "statuses": statuses, "sentry": sentry.snapshot(),
            "exit_codes": exit_codes, "tmp": tmp}


def _find(haystack: bytes, needle: str) -> list[str]:
    """The first occurrences of `needle` (case-insensitive), with 80 bytes of context."""
    low, n = haystack.lower(), needle.lower().encode()
    out, i = [], low.find(n)
    while i != -1 and len(out) < 3:
        out.append(haystack[max(0, i - 80): i + len(n) + 80].decode("utf-8", "replace"))
        i = low.find(n, i + 1)
    return out


# ------------------------------------------------------------------ the run did what it should


def test_requests_got_the_expected_answers(run):
    s = run["statuses"]
    for t in ("direct", "nginx", "nginx-via-lb"):
        assert s[t, "submit"] == 200, s
        assert s[t, "submit-bad-docid"] == 400, s
        assert s[t, "submit-unknown-route"] == 404, s
        assert s[t, "heartbeat"] in (200, 500), s
        # the current binary takes ?token=, the X-Error-Token one takes the header: one panics
        assert 500 in (s[t, "error-query-token"], s[t, "error-header-token"]), s
        assert s[t, "error-wrong-token"] == 403, s
        assert s[t, "submit-redis-down"] == 503, s
        assert s[t, "heartbeat-redis-down"] == 500, s
    assert s["direct", "submit-after-restart"]
    assert run["exit_codes"].get("wharf") == 0, run["exit_codes"]


def test_captures_are_not_empty(run):
    c = run["captures"]
    events = [r for r in run["sentry"] if b"__error__ called" in r.decoded]
    assert len(events) >= 1, [r.decoded[:300] for r in run["sentry"]]
    assert c["wharf stdout"].count(b"request.summary") >= 20, c["wharf stdout"][-2000:]
    assert b"request.count" in c["statsd packets"] and b"request.duration" in c["statsd packets"]
    assert c["nginx access log"].count(b"\n") >= 14, c["nginx access log"][-2000:]
    assert b"start worker process" in c["nginx error log"], c["nginx error log"][-2000:]


def test_planted_marker_is_found(run):
    """The User-Agent is not secret and is logged on purpose: the search must find it."""
    c = run["captures"]
    for name in ("wharf stdout", "nginx access log", "sentry requests (headers + decoded bodies)"):
        assert _find(c[name], MARKER), f"marker {MARKER!r} not found in {name}"


# ------------------------------------------------------------------ nothing secret anywhere


@pytest.mark.parametrize("capture", [
    "wharf stdout", "wharf stderr", "nginx access log", "nginx error log", "statsd packets",
    "sentry requests (headers + decoded bodies)",
])
def test_no_secret_in(run, capture):
    data = run["captures"][capture]
    if capture != "wharf stderr":  # stderr holds only what bypasses the logger (panic messages)
        assert data, f"{capture}: nothing captured, nothing to search"
    leaks = {name: _find(data, value) for name, value in SECRETS.items()}
    leaks = {name: hits for name, hits in leaks.items() if hits}
    assert not leaks, f"secrets in {capture}:\n" + json.dumps(
        {f"{name} = {SECRETS[name]}": hits for name, hits in leaks.items()}, indent=2
    )


def test_no_secret_in_raw_sentry_bodies(run):
    """The bodies as received too (in case one was not compressed, or not decodable)."""
    raw = b"\n".join(r.raw for r in run["sentry"])
    notes = [n for r in run["sentry"] for n in r.notes]
    assert not notes, notes
    leaks = {name: _find(raw, value) for name, value in SECRETS.items()}
    assert not {k: v for k, v in leaks.items() if v}, leaks
