"""Fixtures: Debian's nginx with the project's nginx config (nginx/wharf.conf.template,
rendered by nginx/render.sh with test ports and paths only) in front of

* the real `wharf web` (+ a real redis-server), and
* a header-echo upstream (python), to see exactly what nginx passes upstream.

Everything listens on 127.0.0.1 free ports and is stopped at the end.
Binaries: nginx / redis-server from PATH (or /usr/sbin), WHARF_BIN (default
<repo>/target/debug/wharf, then target/release/wharf); the process helpers are
tests/wharf_harness.py's.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wharf_harness import REPO, Redis, ServerThread, answer_json, find_exe, free_port, stop, wait_http  # noqa: E402
from wharf_harness import version_file, wait_port, web_env, wharf_bin  # noqa: E402

RENDER = REPO / "nginx" / "render.sh"


class Nginx:
    """nginx started from the project's template; only ports/paths/upstream/LB CIDR set here."""

    def __init__(
        self,
        tmp: Path,
        upstream: str,
        lb_cidr: str,
        log_client_ip: str | None = None,
        error_log_level: str = "info",
    ):
        """`log_client_ip`: WHARF_LOG_CLIENT_IP (None = render.sh's default, off).
        `error_log_level`: the main file's error_log level (the host's choice, not the template's)."""
        self.dir = tmp
        self.http_port = free_port()
        self.https_port = free_port()
        self.access_log = tmp / "access.json"
        self.error_log = tmp / "error.log"
        env = dict(
            os.environ,
            WHARF_UPSTREAM=upstream,
            WHARF_LB_CIDR=lb_cidr,
            WHARF_HTTP_PORT=str(self.http_port),
            WHARF_HTTPS_PORT=str(self.https_port),
            WHARF_ACCESS_LOG=str(self.access_log),
        )
        env.pop("WHARF_LOG_CLIENT_IP", None)
        if log_client_ip is not None:
            env["WHARF_LOG_CLIENT_IP"] = log_client_ip
        site = subprocess.run(
            ["sh", str(RENDER)], env=env, check=True, capture_output=True, text=True
        ).stdout
        (tmp / "wharf.conf").write_text(site)
        # The main file plays the role of Debian's /etc/nginx/nginx.conf, with test paths.
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / d).mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chmod(tmp / d, 0o777)
        (tmp / "nginx.conf").write_text(
            f"""{user}worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {self.error_log} {error_log_level};
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    include {tmp}/wharf.conf;
}}
"""
        )
        exe = find_exe("nginx")
        check = subprocess.run(
            [exe, "-t", "-p", str(tmp), "-c", str(tmp / "nginx.conf")], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [exe, "-p", str(tmp), "-c", str(tmp / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp / "nginx.stderr", "w"),
        )
        wait_port(self.http_port)
        wait_port(self.https_port)

    def url(self, path: str, https_listener: bool = False) -> str:
        port = self.https_port if https_listener else self.http_port
        return f"http://127.0.0.1:{port}{path}"

    def log_entries(self, until=None, timeout: float = 10.0) -> list[dict]:
        """The access log's entries, once `until(entries)` holds or `timeout` has passed: nginx
        writes a request's line when the request finishes, after the client has its answer."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.access_log.read_text() if self.access_log.exists() else ""
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
            if until is None or until(entries) or time.monotonic() > deadline:
                return entries
            time.sleep(0.02)

    def log_entries_for(self, path: str, count: int = 1) -> list[dict]:
        """The access log's entries for `path`, once there are `count` of them."""
        def matching(entries):
            return [e for e in entries if e["path"] == path]
        return matching(self.log_entries(until=lambda entries: len(matching(entries)) >= count))

    def close(self) -> None:
        stop(self.proc, signal.SIGQUIT)


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict | None = None,
    source: str = "127.0.0.1",
) -> tuple[int, dict, bytes]:
    """One HTTP/1.1 request from a chosen loopback source address (127.0.0.x)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15, source_address=(source, 0))
    try:
        conn.request(method, u.path + (f"?{u.query}" if u.query else ""), body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------- echo upstream


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        out = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body_len": len(body),
            }
        ).encode()
        answer_json(self, out)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *a):  # quiet
        pass


@pytest.fixture(scope="module")
def echo_upstream():
    srv = ServerThread(_Echo)
    yield f"127.0.0.1:{srv.port}"
    srv.close()


# The load balancer's network in these tests: only peer 127.0.0.2 is "the ELB";
# clients connecting from 127.0.0.1 are untrusted.
LB_CIDR = "127.0.0.2/32"


def _need(name: str) -> str:
    exe = find_exe(name)
    if exe is None:
        pytest.skip(f"SKIPPED: {name} not installed (apt-get install {name})")
    return exe


@pytest.fixture(scope="module")
def nginx_echo(tmp_path_factory, echo_upstream):
    _need("nginx")
    if shutil.which("envsubst") is None:
        pytest.skip("SKIPPED: envsubst not installed (apt-get install gettext-base)")
    ng = Nginx(tmp_path_factory.mktemp("nginx-echo"), echo_upstream, LB_CIDR)
    yield ng
    ng.close()


@pytest.fixture(scope="module")
def nginx_echo_truncated(tmp_path_factory, echo_upstream):
    """The same, rendered with WHARF_LOG_CLIENT_IP=truncated and the error log at `warn`."""
    _need("nginx")
    if shutil.which("envsubst") is None:
        pytest.skip("SKIPPED: envsubst not installed (apt-get install gettext-base)")
    ng = Nginx(
        tmp_path_factory.mktemp("nginx-echo-truncated"), echo_upstream, LB_CIDR,
        log_client_ip="truncated", error_log_level="warn",
    )
    yield ng
    ng.close()


# ---------------------------------------------------------------------------- real wharf


# The debug view's token in wharf_stack (a test value; never a real one).
DEBUG_TOKEN = "nginx-test-debug-view-token"


@pytest.fixture(scope="module")
def wharf_stack(tmp_path_factory):
    """redis-server + `wharf web` + nginx, all real."""
    _need("nginx")
    _need("redis-server")
    exe = wharf_bin()
    if exe is None:
        pytest.skip("SKIPPED: no wharf binary (cargo build, or set WHARF_BIN)")
    tmp = tmp_path_factory.mktemp("wharf-stack")
    redis = Redis(tmp)
    port = free_port()
    env = web_env(
        redis.port, port, version_file(tmp, "nginx-test"),
        QUEUE_SHARDS="4",  # test_nginx_edge.SHARDS
        DEBUG_VIEW_TOKEN=DEBUG_TOKEN,  # test_wharf_debug_view_through_nginx
    )
    web = subprocess.Popen([exe, "web"], env=env, stdout=open(tmp / "wharf.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/__lbheartbeat__", proc=web)
        ng = Nginx(tmp, f"127.0.0.1:{port}", LB_CIDR)
    except Exception:
        stop(web)
        redis.close()
        print((tmp / "wharf.log").read_text()[-4000:])
        raise
    yield {"nginx": ng, "redis": redis, "web_port": port, "tmp": tmp, "debug_token": DEBUG_TOKEN}
    ng.close()
    stop(web)
    redis.close()
