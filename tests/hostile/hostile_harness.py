"""Support code for the hostile-client tests: a real `wharf web` (with its own settings) next to
the corpus harness's real redis-server, RSS sampling from /proc, and raw-socket clients that
trickle heads, flood bodies and stall.

Binaries: redis-server from PATH (or /usr/sbin, /usr/bin); WHARF_BIN, else
<repo>/target/debug/wharf, else <repo>/target/release/wharf. Nothing is built here.
"""

from __future__ import annotations

import importlib.util
import resource
import selectors
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _load_corpus_harness():
    """tests/corpus/corpus_harness.py, loaded once under its own name (the corpus tests may have
    loaded it already in the same session)."""
    name = "corpus_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests/corpus/corpus_harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_corpus = _load_corpus_harness()
Redis = _corpus.Redis
find_exe = _corpus.find_exe
free_port = _corpus.free_port
parse_responses = _corpus.parse_responses
stop = _corpus.stop
wait_http = _corpus.wait_http
wharf_bin = _corpus.wharf_bin

# RFC 9113 section 3.4: the client connection preface, then an empty SETTINGS frame.
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def raise_nofile(wanted: int) -> int:
    """Raises this process's soft RLIMIT_NOFILE towards `wanted` (never above the hard limit);
    returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def submit_path() -> str:
    return f"/submit/hostile/flood/1/{uuid.uuid4()}"


# ---------------------------------------------------------------------------- wharf web


class Web(_corpus.Wharf):
    """The corpus's `wharf web`, plus what the memory tests read of the process."""

    def status_kb(self, field_name: str) -> int | None:
        """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None once the process is gone."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith(field_name + ":"):
                        return int(line.split()[1])
        except (FileNotFoundError, ProcessLookupError):
            return None
        return None

    def output_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class RssSampler:
    """Samples the web process's VmRSS every `interval` seconds on a thread, keeping the maximum;
    `peak_mb` also takes the kernel's own high-water mark (VmHWM), which no sample can miss."""

    def __init__(self, web: Web, interval: float = 0.01):
        self.web = web
        self.interval = interval
        self.max_rss_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _sample(self) -> None:
        rss = self.web.status_kb("VmRSS")
        if rss is not None:
            self.max_rss_kb = max(self.max_rss_kb, rss)
            self.samples += 1

    def _run(self) -> None:
        while True:
            self._sample()
            if self._stop.wait(self.interval):
                return

    @property
    def hwm_kb(self) -> int:
        return self.web.status_kb("VmHWM") or 0

    @property
    def peak_mb(self) -> float:
        return max(self.max_rss_kb, self.hwm_kb) / 1024


# ---------------------------------------------------------------------------- plain requests


@dataclass
class Answer:
    status: int | None
    headers: dict[str, str]
    elapsed: float
    error: str | None = None


def request(port: int, raw: bytes, timeout: float) -> Answer:
    """Sends one raw HTTP/1.1 request on a new connection and reads one answer, all within
    `timeout` seconds (from before the connect to the end of the answer)."""
    started = time.monotonic()
    deadline = started + timeout
    buf = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(raw)
            while True:
                responses, garbage, incomplete = parse_responses(buf, False, False)
                if responses:
                    r = responses[0]
                    return Answer(r.status, r.headers, time.monotonic() - started)
                if garbage:
                    return Answer(None, {}, time.monotonic() - started, f"unparseable {garbage[:60]!r}")
                left = deadline - time.monotonic()
                if left <= 0:
                    return Answer(None, {}, time.monotonic() - started, "no answer by the deadline")
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    responses, _, _ = parse_responses(buf, False, True)
                    status = responses[0].status if responses else None
                    headers = responses[0].headers if responses else {}
                    return Answer(status, headers, time.monotonic() - started, None if responses else "closed")
                buf += chunk
    except OSError as e:
        return Answer(None, {}, time.monotonic() - started, f"{type(e).__name__}: {e}")


def post(port: int, body: bytes, timeout: float) -> Answer:
    head = (
        f"POST {submit_path()} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hostile-tests\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return request(port, head + body, timeout)


def get(port: int, path: str, timeout: float) -> Answer:
    raw = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    return request(port, raw, timeout)


# ---------------------------------------------------------------------------- slow heads


@dataclass
class Trickler:
    index: int
    sock: socket.socket
    started: float
    sent: int = 0
    next_send: float = 0.0
    ended_at: float | None = None
    how: str = ""  # "eof" or "reset" once the server ended it
    received: bytes = b""

    @property
    def lifetime(self) -> float | None:
        return None if self.ended_at is None else self.ended_at - self.started


def trickle_heads(port: int, count: int, head: bytes, interval: float, deadline_s: float,
                  during=None) -> list[Trickler]:
    """Opens `count` connections and sends each one byte of `head` every `interval` seconds
    (never the whole head), until the server has ended every connection or `deadline_s` has
    passed since the last connection opened. Each connection's end (EOF or reset) is observed
    with a selector and timed from its own connect. `during`, if given, is called once on a
    thread after every connection is open (e.g. a normal request to make meanwhile)."""
    assert len(head) * interval > deadline_s, "the head must not finish before the deadline"
    sel = selectors.DefaultSelector()
    conns: list[Trickler] = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = time.monotonic()
        c = Trickler(i, sock, started=now, next_send=now)
        conns.append(c)
        sel.register(sock, selectors.EVENT_READ, c)
    thread = None
    if during is not None:
        thread = threading.Thread(target=during, daemon=True)
        thread.start()
    deadline = time.monotonic() + deadline_s
    open_conns = set(range(count))

    def end(c: Trickler, how: str) -> None:
        c.ended_at = time.monotonic()
        c.how = how
        sel.unregister(c.sock)

    try:
        while open_conns:
            now = time.monotonic()
            if now >= deadline:
                break
            for i in list(open_conns):
                c = conns[i]
                if c.ended_at is None and now >= c.next_send:
                    try:
                        c.sock.send(head[c.sent : c.sent + 1])
                        c.sent += 1
                    except BlockingIOError:
                        pass
                    except (BrokenPipeError, ConnectionResetError):
                        end(c, "reset")
                        open_conns.discard(i)
                        continue
                    c.next_send += interval
            next_send = min((conns[i].next_send for i in open_conns), default=deadline)
            wait = max(0.0, min(next_send, deadline) - time.monotonic())
            for key, _ in sel.select(wait):
                c = key.data
                try:
                    chunk = c.sock.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    end(c, "reset")
                else:
                    if chunk:
                        c.received += chunk
                        continue
                    end(c, "eof")
                open_conns.discard(c.index)
    finally:
        for c in conns:
            c.sock.close()
        sel.close()
        if thread is not None:
            thread.join(10)
    return conns


# ---------------------------------------------------------------------------- body floods


@dataclass
class Flood:
    index: int
    sock: socket.socket
    head: bytes
    local_port: int
    sent: int = 0  # bytes of head + body written so far
    send_error: str | None = None
    received: bytearray = field(default_factory=bytearray)
    ended: str | None = None  # "eof" or "reset"

    def done_sending(self, body_len: int) -> bool:
        return self.sent >= len(self.head) + body_len

    def answer(self):
        responses, _, _ = parse_responses(bytes(self.received), False, self.ended is not None)
        return responses[0] if responses else None


def chunked_wire(total: int, chunk: int) -> bytes:
    """About `total` body bytes as chunks of `chunk` bytes, with no terminating chunk."""
    piece = f"{chunk:x}\r\n".encode() + b"x" * chunk + b"\r\n"
    return piece * (total // chunk)


def server_side_sockets(port: int) -> dict[int, tuple[int, int]]:
    """The server's sockets on 127.0.0.1:`port` from /proc/net/tcp: the client's port ->
    (TCP state, bytes received but not yet read by the server)."""
    out = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, state, queues = parts[1], parts[2], parts[3], parts[4]
            if int(local.split(":")[1], 16) != port:
                continue
            rx_queue = int(queues.split(":")[1], 16)
            out[int(remote.split(":")[1], 16)] = (int(state, 16), rx_queue)
    return out


TCP_ESTABLISHED = 1


class BodyFlood:
    """`count` connections, each sending `head_for(i)` then the shared `body` as fast as the
    server takes it, then stalling with the connection open."""

    def __init__(self, port: int, count: int, head_for, body: bytes):
        self.port = port
        self.body = memoryview(body)
        self.sel = selectors.DefaultSelector()
        self.conns: list[Flood] = []
        for i in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setblocking(False)
            c = Flood(i, sock, head_for(i), sock.getsockname()[1])
            self.conns.append(c)
            self.sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def _write(self, c: Flood) -> None:
        head_len = len(c.head)
        try:
            while not c.done_sending(len(self.body)):
                if c.sent < head_len:
                    n = c.sock.send(c.head[c.sent :])
                else:
                    n = c.sock.send(self.body[c.sent - head_len : c.sent - head_len + 262144])
                if n == 0:
                    return
                c.sent += n
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError) as e:
            c.send_error = type(e).__name__
        self._reregister(c)

    def _read(self, c: Flood) -> None:
        try:
            while True:
                chunk = c.sock.recv(65536)
                if not chunk:
                    c.ended = "eof"
                    break
                c.received += chunk
        except BlockingIOError:
            return
        except ConnectionResetError:
            c.ended = "reset"
        self._reregister(c)

    def _reregister(self, c: Flood) -> None:
        if c.ended is not None:
            self.sel.unregister(c.sock)
            return
        writing = c.send_error is None and not c.done_sending(len(self.body)) and not c.received
        self.sel.modify(c.sock, selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0), c)

    def pump(self, timeout: float) -> None:
        """One round of the event loop: waits up to `timeout` for any socket to be ready."""
        for key, mask in self.sel.select(timeout):
            c = key.data
            if mask & selectors.EVENT_READ:
                self._read(c)
            if c.ended is None and mask & selectors.EVENT_WRITE:
                self._write(c)

    def settled(self) -> bool:
        """True once every connection has been ended by the server, or has written its whole
        body and the server's side of it is established with nothing left unread (so the server
        has seen all the client will send, and kept the connection)."""
        pending = [c for c in self.conns if c.ended is None]
        if any(not c.done_sending(len(self.body)) and c.send_error is None for c in pending):
            return False
        server = server_side_sockets(self.port)
        for c in pending:
            if c.received:
                return False  # an answer is arriving: wait for the end of it
            state, unread = server.get(c.local_port, (None, None))
            if state != TCP_ESTABLISHED or unread != 0:
                return False
        return True

    def run_until_settled(self, deadline_s: float) -> bool:
        deadline = time.monotonic() + deadline_s
        last_check = 0.0
        while time.monotonic() < deadline:
            self.pump(0.05)
            now = time.monotonic()
            if now - last_check >= 0.05:
                last_check = now
                if self.settled():
                    return True
        return False

    def drain(self, limit: float = 1.0) -> None:
        """Reads (and writes) whatever is ready now, for at most `limit` seconds."""
        deadline = time.monotonic() + limit
        while self.sel.get_map() and self.sel.select(0) and time.monotonic() < deadline:
            self.pump(0)

    def holders(self) -> list[Flood]:
        return [c for c in self.conns if c.ended is None and not c.received]

    def close(self) -> None:
        for c in self.conns:
            c.sock.close()
        self.sel.close()
