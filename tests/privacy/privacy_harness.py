"""Capturing sinks and processes for the end-to-end privacy test.

Everything Wharf and nginx can write about a request is captured, byte for byte:

* `wharf web` stdout and stderr (LOG_FORMAT=json), each to its own file;
* every UDP packet sent to STATSD_HOST:STATSD_PORT (a real socket read by a thread);
* every HTTP request sent to SENTRY_DSN's host (a real HTTP listener), its headers, raw body
  and body decoded (gzip / deflate when the client compressed it);
* nginx's JSON access log and its error log (nginx/wharf.conf.template, rendered by
  nginx/render.sh, through tests/nginx/nginx_harness.py's Nginx).

Process helpers (free ports, waiting, stopping, redis-server) come from tests/wharf_harness.py,
nginx from tests/nginx/nginx_harness.py.
"""

from __future__ import annotations

import gzip
import http.server
import os
import random
import socket
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(TESTS), str(TESTS / "nginx")]
from nginx_harness import LB_CIDR, Nginx, request  # noqa: E402  (path set just above)
from wharf_harness import Redis, ServerThread, answer_json, find_exe, free_port, stop, wait_http  # noqa: E402
from wharf_harness import wait_until, wharf_exe  # noqa: E402

__all__ = [
    "LB_CIDR", "Nginx", "RedisServer", "SentrySink", "StatsdSink", "Wharf",
    "find_exe", "free_port", "request", "stop", "wait_until", "wharf_exe",
]


# ---------------------------------------------------------------------------- redis-server


def quiet_port() -> int:
    """A free port below the kernel's ephemeral range (32768-60999 by default), so that while
    Redis is stopped mid-run no outgoing connection or bind(0) elsewhere takes it."""
    for _ in range(200):
        port = random.randrange(20000, 30000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


class RedisServer(Redis):
    """redis-server on a quiet port, so that it can be stopped and started again mid-run."""

    def __init__(self, tmp: Path):
        super().__init__(tmp, port=quiet_port())


# ---------------------------------------------------------------------------- StatsD


class StatsdSink:
    """A UDP socket on 127.0.0.1 keeping every datagram it receives."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.packets: list[bytes] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                data, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.packets.append(data)

    def snapshot(self) -> list[bytes]:
        with self._lock:
            return list(self.packets)

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(2)
        self.sock.close()


# ---------------------------------------------------------------------------- Sentry


@dataclass
class SentryRequest:
    method: str
    path: str
    headers: bytes  # the request's header block as received
    raw: bytes  # the body as received
    decoded: bytes  # the body decompressed when it was compressed, else == raw
    encoding: str = ""
    notes: list[str] = field(default_factory=list)


def _decode_body(raw: bytes, encoding: str) -> tuple[bytes, list[str]]:
    notes: list[str] = []
    data = raw
    for enc in [e.strip().lower() for e in encoding.split(",") if e.strip()][::-1]:
        try:
            if enc in ("gzip", "x-gzip"):
                data = gzip.decompress(data)
            elif enc == "deflate":
                try:
                    data = zlib.decompress(data)
                except zlib.error:
                    data = zlib.decompress(data, -zlib.MAX_WBITS)
            elif enc == "br":
                import brotli  # type: ignore[import-not-found]

                data = brotli.decompress(data)
            elif enc != "identity":
                notes.append(f"unknown content-encoding {enc!r}: body kept raw")
        except Exception as e:  # noqa: BLE001 - keep the raw body, say why
            notes.append(f"could not decode {enc}: {e!r}")
    if data[:2] == b"\x1f\x8b":  # gzip without a Content-Encoding header
        try:
            data = gzip.decompress(data)
        except Exception as e:  # noqa: BLE001
            notes.append(f"gzip magic but not gzip: {e!r}")
    return data, notes


class _SentryHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sink: "SentrySink"

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _store(self) -> None:
        raw = self._body()
        encoding = self.headers.get("Content-Encoding") or ""
        decoded, notes = _decode_body(raw, encoding)
        self.sink._add(SentryRequest(
            method=self.command, path=self.path, headers=bytes(self.headers), raw=raw,
            decoded=decoded, encoding=encoding, notes=notes,
        ))
        answer_json(self, b"{}")

    do_POST = do_PUT = do_GET = _store

    def log_message(self, *a):  # quiet
        pass


class SentrySink(ServerThread):
    """An HTTP listener standing in for Sentry; keeps every request (raw and decoded)."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self._lock = threading.Lock()
        self.requests: list[SentryRequest] = []
        super().__init__(type("Handler", (_SentryHandler,), {"sink": self}))

    @property
    def dsn(self) -> str:
        return f"http://publickey@127.0.0.1:{self.port}/1"

    def _add(self, r: SentryRequest) -> None:
        with self._lock:
            n = len(self.requests)
            self.requests.append(r)
        (self.dir / f"sentry-{n:03d}.raw").write_bytes(r.raw)
        (self.dir / f"sentry-{n:03d}.decoded").write_bytes(r.decoded)
        (self.dir / f"sentry-{n:03d}.headers").write_bytes(r.headers)

    def snapshot(self) -> list[SentryRequest]:
        with self._lock:
            return list(self.requests)


# ---------------------------------------------------------------------------- wharf web


class Wharf:
    """`wharf web` with stdout and stderr captured to separate files."""

    def __init__(self, tmp: Path, env: dict[str, str]):
        exe = wharf_exe()
        if exe is None:
            raise RuntimeError("no wharf binary (cargo build, or set WHARF_BIN)")
        self.port = free_port()
        self.stdout = tmp / "wharf.stdout"
        self.stderr = tmp / "wharf.stderr"
        full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOST": "127.0.0.1", "PORT": str(self.port)}
        full.update(env)
        self.proc = subprocess.Popen(
            [exe, "web"], env=full, stdout=open(self.stdout, "wb"), stderr=open(self.stderr, "wb"),
        )
        try:
            wait_http(self.url("/__lbheartbeat__"), proc=self.proc)
        except Exception:
            stop(self.proc)
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> int:
        stop(self.proc, timeout=15)
        return self.proc.returncode
