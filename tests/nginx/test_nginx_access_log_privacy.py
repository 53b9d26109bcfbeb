"""What nginx writes about a client: the JSON access log holds no client address, no
X-Forwarded-For and no query string; WHARF_LOG_CLIENT_IP=truncated adds the client's
network only (IPv4 /24, IPv6 first three groups); render.sh refuses any other value.

As in test_nginx_edge.py, peer 127.0.0.2 is the load balancer (LB CIDR 127.0.0.2/32)
and 127.0.0.1 an untrusted client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid

import pytest

from nginx_harness import LB_CIDR, RENDER, REPO, find_exe, request

TEMPLATE = REPO / "nginx" / "wharf.conf.template"

# Addresses only these tests send (documentation ranges), so a hit in a log is ours.
LB_CLIENT = "198.51.100.77"  # the client the LB saw (last X-Forwarded-For hop)
LB_CLIENT_FIRST = "192.0.2.41"  # an earlier hop of the same chain
LB_CLIENT_V6 = "2001:db8:cafe:1::17"
SPOOFED = "203.0.113.58"  # sent by an untrusted peer, never believed

# Every variable the access log may use. Anything new must be added here on purpose:
# no $remote_addr / $realip_remote_addr / $http_x_forwarded_for / $request_uri /
# $request / $args / $arg_* / $http_cookie / $http_authorization.
ALLOWED_LOG_VARIABLES = {
    "time_iso8601", "wharf_log_client", "wharf_request_id", "request_method", "wharf_log_path",
    "server_protocol", "status", "request_length", "body_bytes_sent", "request_time",
    "upstream_addr", "upstream_status", "upstream_response_time", "wharf_forwarded_proto",
    "server_port", "http_user_agent",
}


def _render(**env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    full.update(env)
    return subprocess.run(["sh", str(RENDER)], env=full, capture_output=True, text=True)


def _secret() -> str:
    return "tok" + uuid.uuid4().hex


def _entries_for(ng, path: str, count: int = 1) -> list[dict]:
    return ng.log_entries_for(path, count)


# ------------------------------------------------------------------ the template itself


def test_log_format_uses_only_allowed_variables():
    text = TEMPLATE.read_text()
    block = re.search(r"log_format wharf_json escape=json\n(.*?);\n", text, re.S)
    assert block, "log_format wharf_json not found"
    used = set(re.findall(r"\$([A-Za-z0-9_]+)", block.group(1)))
    assert used <= ALLOWED_LOG_VARIABLES, f"not allowed in the access log: {used - ALLOWED_LOG_VARIABLES}"
    assert {"wharf_log_path", "wharf_log_client"} <= used


def test_render_defaults_to_off_and_accepts_truncated():
    off = _render()
    assert off.returncode == 0, off.stderr
    assert 'map "off" $wharf_log_client' in off.stdout
    truncated = _render(WHARF_LOG_CLIENT_IP="truncated")
    assert truncated.returncode == 0, truncated.stderr
    assert 'map "truncated" $wharf_log_client' in truncated.stdout
    for out in (off.stdout, truncated.stdout):
        assert "${WHARF_" not in out


def test_render_refuses_other_values():
    for bad in ("full", "on", "true", "Truncated", "truncated ", "24", "$remote_addr"):
        r = _render(WHARF_LOG_CLIENT_IP=bad)
        assert r.returncode == 2, (bad, r.returncode, r.stdout[:200])
        assert r.stdout == "", bad
        assert "WHARF_LOG_CLIENT_IP must be off or truncated" in r.stderr, r.stderr


# ------------------------------------------------------------------ default: off


def test_access_log_has_no_client_address_or_query_by_default(nginx_echo):
    token = _secret()
    path_lb, path_direct = "/privacy/lb/%7Eraw", "/privacy/direct/%7Eraw"
    for xff in (f"{LB_CLIENT_FIRST}, {LB_CLIENT}", LB_CLIENT_V6):
        status, _, _ = request(
            nginx_echo.url(f"{path_lb}?token={token}&x=1"), source="127.0.0.2",
            headers={"X-Forwarded-For": xff, "User-Agent": "privacy-probe/1"},
        )
        assert status == 200
    status, _, body = request(
        nginx_echo.url(f"{path_direct}?token={token}"),
        headers={"X-Forwarded-For": SPOOFED, "X-Real-IP": SPOOFED, "User-Agent": "privacy-probe/1"},
    )
    assert status == 200
    assert json.loads(body)["path"] == f"{path_direct}?token={token}"  # the query still goes upstream

    entries = _entries_for(nginx_echo, path_lb) + _entries_for(nginx_echo, path_direct)
    assert len(entries) == 3, nginx_echo.access_log.read_text()[-2000:]
    for e in entries:
        assert e["client_net"] == ""
        assert e["user_agent"] == "privacy-probe/1"
        assert not {"remote_addr", "peer_addr", "x_forwarded_for", "uri"} & set(e), e
    raw = nginx_echo.access_log.read_bytes()
    assert b"privacy-probe/1" in raw and b"/privacy/lb/%7Eraw" in raw  # the search works
    for secret in (token, LB_CLIENT, LB_CLIENT_FIRST, LB_CLIENT_V6, SPOOFED, "?"):
        assert secret.encode() not in raw, f"{secret!r} in the access log"


# ------------------------------------------------------------------ truncated


def test_truncated_logs_the_network_not_the_address(nginx_echo_truncated):
    ng = nginx_echo_truncated
    token = _secret()
    cases = [
        ("127.0.0.2", f"{LB_CLIENT_FIRST}, {LB_CLIENT}", "/t/v4", "198.51.100.0"),
        ("127.0.0.2", LB_CLIENT_V6, "/t/v6", "2001:db8:cafe::"),
        ("127.0.0.2", "2001:db8::5", "/t/v6-short", "2001:db8::"),
        ("127.0.0.1", SPOOFED, "/t/untrusted", "127.0.0.0"),  # X-Forwarded-For not believed
    ]
    for source, xff, path, _ in cases:
        status, _, _ = request(ng.url(f"{path}?token={token}"), source=source, headers={"X-Forwarded-For": xff})
        assert status == 200
    for _, _, path, expected in cases:
        (entry,) = _entries_for(ng, path)
        assert entry["client_net"] == expected, entry
    raw = ng.access_log.read_bytes()
    for secret in (token, LB_CLIENT, LB_CLIENT_FIRST, LB_CLIENT_V6, "2001:db8::5", SPOOFED, "?"):
        assert secret.encode() not in raw, f"{secret!r} in the access log"


def test_rate_limit_refusals_leave_no_client_in_the_error_log(nginx_echo_truncated):
    """limit_req_log_level info: at `warn` a 429 is only in the access log. nginx's own
    error lines (here a 413) still name the client and the request line, by nginx design;
    the 413 also proves the error log is live at this level."""
    ng = nginx_echo_truncated
    token = _secret()
    client = "198.51.100.201"
    statuses = [
        request(ng.url(f"/__heartbeat__?token={token}"), source="127.0.0.2",
                headers={"X-Forwarded-For": client})[0]
        for _ in range(12)
    ]
    assert 429 in statuses, statuses
    status, _, _ = request(
        ng.url("/submit/a/b/1/too-big"), method="POST", body=b"x" * (1048576 + 1),
        source="127.0.0.2", headers={"X-Forwarded-For": "192.0.2.250"},
    )
    assert status == 413
    # Every refused request is logged once nginx has finished it.
    heartbeats = _entries_for(ng, "/__heartbeat__", count=len(statuses))
    ng.log_entries_for("/submit/a/b/1/too-big")
    error_log = ng.error_log.read_text()
    assert "client intended to send too large body" in error_log and "client: 192.0.2.250" in error_log
    assert "limiting requests" not in error_log
    assert client not in error_log and token not in error_log
    assert [e["status"] for e in heartbeats].count(429) == statuses.count(429)


def test_unset_placeholder_fails_closed(tmp_path, echo_upstream):
    """A template rendered without WHARF_LOG_CLIENT_IP (e.g. the official image's envsubst
    with the variable missing) keeps `${WHARF_LOG_CLIENT_IP}`, which nginx refuses."""
    text = TEMPLATE.read_text()
    for name, value in (
        ("WHARF_UPSTREAM", echo_upstream), ("WHARF_LB_CIDR", LB_CIDR), ("WHARF_HTTP_PORT", "18080"),
        ("WHARF_HTTPS_PORT", "18443"), ("WHARF_ACCESS_LOG", str(tmp_path / "a.json")),
    ):
        text = text.replace("${" + name + "}", value)
    assert "${WHARF_LOG_CLIENT_IP}" in text
    (tmp_path / "wharf.conf").write_text(text)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/e.log;\nevents {{}}\n"
        f"http {{ include {tmp_path}/wharf.conf; }}\n"
    )
    exe = find_exe("nginx")
    if exe is None:
        pytest.skip("SKIPPED: nginx not installed (apt-get install nginx)")
    r = subprocess.run(
        [exe, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert 'unknown "wharf_log_client_ip" variable' in r.stderr, r.stderr
