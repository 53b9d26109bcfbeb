"""Fixtures: Debian's nginx with the project's nginx config (nginx/wharf.conf.template,
rendered by nginx/render.sh with test ports and paths only) in front of

* the real `wharf web` (+ a real redis-server), and
* a header-echo upstream (python), to see exactly what nginx passes upstream.

Everything listens on 127.0.0.1 free ports and is stopped at the end.
Binaries: nginx / redis-server from PATH (or /usr/sbin), WHARF_BIN (default
<repo>/target/debug/wharf, then target/release/wharf).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RENDER = REPO / "nginx" / "render.sh"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_exe(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def wharf_exe() -> str | None:
    """WHARF_BIN, else target/debug/wharf, else target/release/wharf. Never builds (scripts/test
    runs the cargo tests, which build it, before the Python suites)."""
    env = os.environ.get("WHARF_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    for p in (REPO / "target/debug/wharf", REPO / "target/release/wharf"):
        if os.access(p, os.X_OK):
            return str(p)
    return None


def wharf_bin() -> str | None:
    """wharf_exe(), built with cargo first when there is none (for running these tests alone)."""
    found = wharf_exe()
    if found is None and shutil.which("cargo") and (REPO / "crates/wharf/Cargo.toml").exists():
        subprocess.run(["cargo", "build", "--locked", "-q", "-p", "wharf", "--bin", "wharf"], cwd=REPO, check=True)
        found = wharf_exe()
    return found


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Polls `predicate` until it returns something truthy; fails with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not listening after {timeout}s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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

    def log_entries(self) -> list[dict]:
        # nginx writes the access log line when the request finishes; give it a moment.
        time.sleep(0.2)
        if not self.access_log.exists():
            return []
        return [json.loads(line) for line in self.access_log.read_text().splitlines() if line.strip()]

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
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *a):  # quiet
        pass


@pytest.fixture(scope="module")
def echo_upstream():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


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


class Redis:
    def __init__(self, tmp: Path):
        self.port = free_port()
        self.log = tmp / "redis.log"
        self.proc = subprocess.Popen(
            [find_exe("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(tmp)],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
        )
        try:
            wait_port(self.port)
        except Exception:
            stop(self.proc)
            raise

    def command(self, *args: str):
        """Minimal RESP client (no redis-py dependency)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            f = s.makefile("rb")
            return _read_resp(f)

    def close(self):
        stop(self.proc)


def _read_resp(f):
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_resp(f) for _ in range(n)]
    raise RuntimeError(f"unexpected RESP {line!r}")


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
    (tmp / "version.json").write_text(
        '{"source":"https://example.invalid/wharf","version":"test","commit":"nginx-test","build":""}'
    )
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis.port),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        "VERSION_FILE": str(tmp / "version.json"),
        "ENVIRONMENT": "test",
        "QUEUE_SHARDS": "4",  # test_nginx_edge.SHARDS
        "DEBUG_VIEW_TOKEN": DEBUG_TOKEN,  # test_wharf_debug_view_through_nginx
    }
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
