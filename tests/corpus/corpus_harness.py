"""Support code for the bad-input corpus: a real redis-server and a real `wharf web` on free
loopback ports, a raw-socket replayer and an HTTP/1.x response parser.

Binaries: redis-server from PATH (or /usr/sbin, /usr/bin); WHARF_BIN, else
<repo>/target/debug/wharf, else <repo>/target/release/wharf.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Process helpers (free ports, finding binaries, waiting, stopping, Redis) are the shared ones.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import wharf_harness  # noqa: E402
from wharf_harness import find_exe, free_port, stop, version_file, wait_http, web_env  # noqa: E402,F401
from wharf_harness import wharf_exe as wharf_bin  # noqa: E402,F401

# The stalled-body cases wait for this (ms); the server default is much longer.
BODY_TIMEOUT_MS = 1000


def http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception:  # noqa: BLE001 - not answering yet
        return None


# ---------------------------------------------------------------------------- redis


class Redis(wharf_harness.Redis):
    """The shared redis-server, plus a look at what was queued."""

    def stored_attributes(self) -> list[dict]:
        """The attributes of every submission on the queue streams."""
        out = []
        for key in self.command("KEYS", "wharf:*:submissions") or []:
            for _id, fields in self.command("XRANGE", key.decode(), "-", "+") or []:
                pairs = dict(zip(fields[::2], fields[1::2]))
                out.append(json.loads(pairs[b"at"]))
        return out


# ---------------------------------------------------------------------------- wharf web


class Wharf:
    """`wharf web` on a free port with extra settings, logging MozLog JSON to a file."""

    def __init__(self, exe: str, tmp: Path, redis: Redis, name: str = "wharf", **settings: str):
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        env = web_env(redis.port, self.port, version_file(tmp, "test"), **{k: str(v) for k, v in settings.items()})
        self.proc = subprocess.Popen([exe, "web"], env=env, stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        try:
            wait_http(self.url("/__lbheartbeat__"), proc=self.proc)
            wait_http(self.url("/__heartbeat__"), proc=self.proc)
        except Exception:
            self.close()
            raise

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self):
        stop(self.proc)


# ---------------------------------------------------------------------------- replay


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Outcome:
    responses: list[Response] = field(default_factory=list)
    closed: bool = False  # the server closed (FIN or reset) before the deadline
    reset: bool = False
    timed_out: bool = False
    garbage: bytes = b""  # bytes that do not parse as an HTTP/1.x response
    raw: bytes = b""

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]

    def summary(self) -> str:
        parts = [",".join(map(str, self.statuses)) or "no response"]
        if self.garbage:
            parts.append(f"unparseable {self.garbage[:40]!r}")
        if self.closed:
            parts.append("then reset" if self.reset else "then closed")
        elif self.timed_out:
            parts.append("then nothing until the deadline")
        return " ".join(parts)


def parse_responses(buf: bytes, head: bool, eof: bool) -> tuple[list[Response], bytes, bool]:
    """Complete responses at the start of buf; returns (responses, unparseable bytes, incomplete)."""
    out: list[Response] = []
    pos = 0
    while pos < len(buf):
        if not buf.startswith(b"HTTP/"[: len(buf) - pos], pos):
            return out, buf[pos:], False
        end = buf.find(b"\r\n\r\n", pos)
        if end < 0:
            return out, (buf[pos:] if eof else b""), not eof
        lines = buf[pos:end].split(b"\r\n")
        try:
            status = int(lines[0].split(b" ")[1])
        except (IndexError, ValueError):
            return out, buf[pos:], False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        pos = end + 4
        if 100 <= status < 200 or status in (204, 304) or head:
            out.append(Response(status, headers, b""))
            continue
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return out, b"", True
                size = int(buf[pos:line_end].split(b";")[0], 16)
                pos = line_end + 2
                if size == 0:
                    trailer_end = buf.find(b"\r\n", pos)
                    if trailer_end < 0:
                        return out, b"", True
                    pos = trailer_end + 2
                    break
                if len(buf) < pos + size + 2:
                    return out, b"", True
                body += buf[pos : pos + size]
                pos += size + 2
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if len(buf) < pos + n:
                if not eof:
                    return out, b"", True
            body = buf[pos : pos + n]
            pos += n
        else:
            body = buf[pos:]
            pos = len(buf)
            if not eof:
                return out, b"", True
        out.append(Response(status, headers, body))
    return out, b"", False


def replay(
    port: int,
    data: bytes,
    *,
    expected_responses: int,
    must_close: bool,
    head: bool = False,
    half_close: bool = False,
    send_slowly: bool = False,
    expect_continue: bool = False,
    timeout: float = 5.0,
    close_wait: float = 1.0,
) -> Outcome:
    """Sends data over one TCP connection and reads what comes back until the connection
    closes, the expected responses are in (plus close_wait for a close when one must come),
    or the deadline."""
    outcome = Outcome()
    deadline = time.monotonic() + timeout
    buf = b""
    sock = socket.create_connection(("127.0.0.1", port), timeout=2)

    def receive(until: float) -> bool:
        """One recv; False when the connection is over (closed or reset)."""
        nonlocal buf
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            return True
        except (ConnectionResetError, BrokenPipeError):
            outcome.closed = outcome.reset = True
            return False
        if not chunk:
            outcome.closed = True
            return False
        buf += chunk
        return True

    def send(payload: bytes) -> bool:
        try:
            if send_slowly:
                for i in range(0, len(payload), 7):
                    sock.sendall(payload[i : i + 7])
                    time.sleep(0.005)
            else:
                sock.sendall(payload)
            return True
        except (ConnectionResetError, BrokenPipeError):
            outcome.closed = outcome.reset = True
            return False

    try:
        alive = True
        if expect_continue and b"\r\n\r\n" in data:
            head_end = data.index(b"\r\n\r\n") + 4
            alive = send(data[:head_end])
            # Like curl: wait up to 1 s for 100 Continue (or a final answer), then send the body.
            wait_until = min(deadline, time.monotonic() + 1.0)
            while alive and time.monotonic() < wait_until:
                responses, _, _ = parse_responses(buf, head, False)
                if responses:
                    break
                alive = receive(wait_until)
            responses, _, _ = parse_responses(buf, head, False)
            if alive and (not responses or responses[0].status == 100):
                alive = send(data[head_end:])
        elif data:
            alive = send(data)
        if alive and half_close:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        close_deadline = None
        while alive:
            responses, _, incomplete = parse_responses(buf, head, False)
            if len(responses) >= expected_responses and not incomplete and expected_responses > 0:
                if not must_close:
                    break
                close_deadline = close_deadline or min(deadline, time.monotonic() + close_wait)
            now = time.monotonic()
            until = min(deadline, close_deadline) if close_deadline else deadline
            if now >= until:
                outcome.timed_out = now >= deadline
                break
            alive = receive(until)
    finally:
        sock.close()
    outcome.raw = buf
    outcome.responses, outcome.garbage, _ = parse_responses(buf, head, True)
    return outcome
