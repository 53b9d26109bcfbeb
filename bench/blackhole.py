#!/usr/bin/env python3
"""Black-holed StatsD and Sentry: do they slow submissions, or the web role's start-up?

Runs the real `wharf web` against a real redis-server, one web per configuration, all on the same
Redis and all up before the first measurement, and measures them in interleaved rounds (the order
rotated every round, like `bench/run --cluster`):

  baseline         StatsD to a UDP socket that is read; Sentry DSN to an HTTP listener answering 200
  statsd-refused   StatsD to a loopback UDP port nothing is bound to (the kernel answers ICMP
                   port unreachable)
  statsd-unread    StatsD to a bound UDP socket that is never read, with a tiny receive buffer:
                   once it is full the kernel drops every datagram silently (no ICMP), which is
                   what a host that drops packets looks like from the sender
  sentry-mute      Sentry DSN to a TCP listener that accepts and then never reads nor answers
  sentry-synhang   Sentry DSN to a TCP listener whose accept queue is full (backlog 0, never
                   accepted): the kernel drops the SYNs, so connect() hangs as it does against a
                   host that drops packets
Optional (--configs): sentry-mute-quiet (the mute DSN with no error client: the DSN alone),
sentry-dns-dead (a DSN host name whose DNS server never answers), statsd-dns-dead.

Every web has ERROR_ENDPOINT_TOKEN set, and while its submissions are measured a side client calls
GET /__error__ (header X-Error-Token) --error-rate times a second: each call panics on purpose
and raises a Sentry event, so events pile up against the dead DSN (and reach the answering one
in the baseline). Submissions: 1 KB gzip JSON bodies as the other benches, --connections (50)
connections for --duration seconds, with oha when installed (what bench/harness.py uses),
otherwise wrk.

Start-up: time from spawn to the first 200 from /__lbheartbeat__ with each dead sink, and with
STATSD_HOST / the DSN host a name whose DNS server answers NXDOMAIN or never answers (a mount
namespace gives the web its own resolv.conf pointing at a loopback DNS stand-in; skipped unless
this runs as root with unshare). Everything stays on 127.0.0.1: no packet leaves the machine.

Results: bench/results/blackhole-latest.json, and a Markdown table on stdout.
`python3 bench/blackhole.py --report FILE` prints a result file again.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402
import harness  # noqa: E402
from harness import HarnessError, free_port, log  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ERROR_TOKEN = "x"
# Loopback addresses of the DNS stand-ins (port 53, root only): one answers NXDOMAIN to every
# query, the other never answers.
DNS_NXDOMAIN_ADDR = "127.0.0.153"
DNS_DEAD_ADDR = "127.0.0.154"
DEAD_NAME_STATSD = "statsd.blackhole.test"
DEAD_NAME_SENTRY = "sentry.blackhole.test"

# name -> (StatsD sink, Sentry sink, error client on, what it is)
CONFIGS = {
    "baseline": ("sink", "answering", True, "StatsD read by a sink; Sentry answers 200"),
    "statsd-refused": ("refused", "answering", True, "StatsD port closed (ICMP port unreachable)"),
    "statsd-unread": ("unread", "answering", True, "StatsD socket never read: datagrams dropped silently"),
    "sentry-mute": ("sink", "mute", True, "Sentry accepts TCP, never reads nor answers"),
    "sentry-synhang": ("sink", "synhang", True, "Sentry accept queue full: SYNs dropped, connect hangs"),
    "sentry-mute-quiet": ("sink", "mute", False, "sentry-mute without the error client (the DSN alone)"),
    "sentry-dns-dead": ("sink", "dns-dead", True, "Sentry DSN host name whose DNS server never answers"),
    "statsd-dns-dead": ("dns-dead", "answering", True, "STATSD_HOST a name whose DNS server never answers"),
}
DEFAULT_CONFIGS = ["baseline", "statsd-refused", "statsd-unread", "sentry-mute", "sentry-synhang"]

# Start-up cases: name -> (StatsD sink, Sentry sink)
STARTUP_CASES = {
    "baseline": ("sink", "answering"),
    "statsd-refused": ("refused", "answering"),
    "statsd-unread": ("unread", "answering"),
    "statsd-nxdomain": ("dns-nxdomain", "answering"),
    "statsd-dns-dead": ("dns-dead", "answering"),
    "sentry-mute": ("sink", "mute"),
    "sentry-synhang": ("sink", "synhang"),
    "sentry-dns-dead": ("sink", "dns-dead"),
}


# ---------------------------------------------------------------- the sinks, live and dead


class SentryOk(BaseHTTPRequestHandler):
    """A Sentry stand-in that reads every envelope and answers 200."""

    counters = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    def do_POST(self):  # noqa: N802 - http.server's naming
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with self.lock:
            self.counters["requests"] += 1
            self.counters["bytes"] += len(body)
        out = b'{"id":"00000000000000000000000000000000"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):  # quiet
        pass


class Sinks:
    """Every StatsD and Sentry endpoint of the run, on 127.0.0.1; `close` always runs."""

    def __init__(self, work: str, with_dns: bool):
        self.work = work
        self.socks: list[socket.socket] = []
        self.stop = threading.Event()
        # StatsD, read: counts datagrams and bytes.
        self.statsd_sink = self._udp(("127.0.0.1", 0))
        self.statsd_sink.settimeout(0.2)
        self.statsd_counts = {"datagrams": 0, "bytes": 0}
        threading.Thread(target=self._read_statsd, daemon=True).start()
        # StatsD, never read: the kernel keeps a few datagrams, then drops the rest silently.
        self.statsd_unread = self._udp(("127.0.0.1", 0))
        self.statsd_unread.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        # StatsD, refused: a UDP port nothing is bound to (taken, then released).
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.statsd_refused_port = s.getsockname()[1]
        # Sentry, answering 200.
        self.sentry_ok = ThreadingHTTPServer(("127.0.0.1", 0), SentryOk)
        self.sentry_ok.daemon_threads = True
        threading.Thread(target=self.sentry_ok.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        # Sentry, mute: accepts connections and holds them, never reads, never answers.
        self.sentry_mute = self._tcp_listener(128)
        self.mute_conns: list[socket.socket] = []
        threading.Thread(target=self._accept_mute, daemon=True).start()
        # Sentry, SYN black hole: backlog 0, one connection of ours fills the accept queue and is
        # never accepted; from then on the kernel drops every SYN to the port, so a client's
        # connect() stays in SYN-SENT, retransmitting, as against a host that drops packets.
        self.sentry_synhang = self._tcp_listener(0)
        port = self.sentry_synhang.getsockname()[1]
        self.fillers = []
        for _ in range(3):
            s = socket.socket()
            s.setblocking(False)
            self.socks.append(s)
            self.fillers.append(s)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            time.sleep(0.1)
        if self._established(self.fillers[-1]):
            raise HarnessError("the SYN black hole did not hold: a connect past a full accept queue succeeded")
        # DNS stand-ins (port 53 on two loopback addresses; root only).
        self.dns = None
        if with_dns:
            self.dns = self._start_dns()

    def _udp(self, addr) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socks.append(s)
        s.bind(addr)
        return s

    def _tcp_listener(self, backlog: int) -> socket.socket:
        s = socket.socket()
        self.socks.append(s)
        s.bind(("127.0.0.1", 0))
        s.listen(backlog)
        return s

    @staticmethod
    def _established(s: socket.socket) -> bool:
        try:
            s.getpeername()
            return True
        except OSError:
            return False

    def _read_statsd(self):
        while not self.stop.is_set():
            try:
                data = self.statsd_sink.recv(65536)
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.statsd_counts["datagrams"] += 1
            self.statsd_counts["bytes"] += len(data)

    def _accept_mute(self):
        self.sentry_mute.settimeout(0.2)
        while not self.stop.is_set():
            try:
                c, _ = self.sentry_mute.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.mute_conns.append(c)

    def _start_dns(self):
        """Two DNS stand-ins: NXDOMAIN for every query, and one that never answers; a resolv.conf
        for each. None if port 53 cannot be bound (not root)."""
        try:
            nx = self._udp((DNS_NXDOMAIN_ADDR, 53))
            dead = self._udp((DNS_DEAD_ADDR, 53))
        except OSError as e:
            log(f"DNS stand-ins not started ({e}): the host-name start-up cases are skipped")
            return None
        nx.settimeout(0.2)
        dead.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        counts = {"nxdomain_queries": 0}

        def answer():
            while not self.stop.is_set():
                try:
                    q, peer = nx.recvfrom(4096)
                except (TimeoutError, socket.timeout):
                    continue
                except OSError:
                    return
                if len(q) < 12:
                    continue
                counts["nxdomain_queries"] += 1
                # Same id and question; QR, the query's RD, RA, RCODE 3; no records.
                flags = bytes([0x80 | (q[2] & 0x01), 0x83])
                try:
                    nx.sendto(q[:2] + flags + q[4:6] + b"\0\0\0\0\0\0" + q[12:], peer)
                except OSError:
                    pass

        threading.Thread(target=answer, daemon=True).start()
        files = {}
        for name, addr in (("nxdomain", DNS_NXDOMAIN_ADDR), ("dead", DNS_DEAD_ADDR)):
            path = os.path.join(self.work, f"resolv-{name}.conf")
            with open(path, "w") as f:
                f.write(f"nameserver {addr}\n")  # glibc's defaults: timeout 5 s, 2 attempts
            files[name] = path
        return {"files": files, "counts": counts}

    def statsd_env(self, kind: str) -> dict:
        if kind == "sink":
            return {"STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(self.statsd_sink.getsockname()[1])}
        if kind == "unread":
            return {"STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(self.statsd_unread.getsockname()[1])}
        if kind == "refused":
            return {"STATSD_HOST": "127.0.0.1", "STATSD_PORT": str(self.statsd_refused_port)}
        if kind in ("dns-dead", "dns-nxdomain"):
            return {"STATSD_HOST": DEAD_NAME_STATSD, "STATSD_PORT": str(self.statsd_sink.getsockname()[1])}
        raise ValueError(kind)

    def sentry_env(self, kind: str) -> dict:
        port = {
            "answering": lambda: self.sentry_ok.server_address[1],
            "mute": lambda: self.sentry_mute.getsockname()[1],
            "synhang": lambda: self.sentry_synhang.getsockname()[1],
        }
        if kind in port:
            return {"SENTRY_DSN": f"http://bench@127.0.0.1:{port[kind]()}/1"}
        if kind in ("dns-dead", "dns-nxdomain"):
            return {"SENTRY_DSN": f"http://bench@{DEAD_NAME_SENTRY}:{self.sentry_ok.server_address[1]}/1"}
        raise ValueError(kind)

    def resolv_conf(self, statsd: str, sentry: str):
        """The resolv.conf a web of these sinks runs with (None: the machine's own)."""
        kinds = {statsd, sentry}
        if "dns-dead" in kinds:
            return self.dns["files"]["dead"] if self.dns else False
        if "dns-nxdomain" in kinds:
            return self.dns["files"]["nxdomain"] if self.dns else False
        return None

    def snapshot(self) -> dict:
        return {
            "statsd_datagrams_read": self.statsd_counts["datagrams"],
            "statsd_bytes_read": self.statsd_counts["bytes"],
            "sentry_envelopes_answered": SentryOk.counters["requests"],
            "sentry_mute_connections_held": len(self.mute_conns),
        }

    def synhang_pending(self) -> int:
        """Connections to the SYN black hole stuck in SYN-SENT, ours (the fillers) left out."""
        port = self.sentry_synhang.getsockname()[1]
        ours = set()
        for s in self.fillers:
            try:
                ours.add(s.getsockname()[1])
            except OSError:
                pass
        n = 0
        try:
            with open("/proc/net/tcp") as f:
                for line in f.readlines()[1:]:
                    parts = line.split()
                    local, remote = parts[1], parts[2]
                    if (parts[3] == "02" and int(remote.split(":")[1], 16) == port
                            and int(local.split(":")[1], 16) not in ours):
                        n += 1
        except OSError:
            return -1
        return n

    def close(self):
        self.stop.set()
        try:
            self.sentry_ok.shutdown()
            self.sentry_ok.server_close()
        except Exception:  # noqa: BLE001 - best effort
            pass
        for s in self.mute_conns + self.socks:
            try:
                s.close()
            except OSError:
                pass


# ---------------------------------------------------------------- the web role


def http_get(port: int, path: str, headers: dict | None = None, timeout: float = 1.0):
    """Status of GET path, or the name of the exception."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        r.read()
        return r.status
    except Exception as e:  # noqa: BLE001 - the caller counts it
        return type(e).__name__
    finally:
        conn.close()


def unshare_works() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    try:
        return subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class Web:
    """One `wharf web` of one configuration."""

    def __init__(self, svc: harness.Services, sinks: Sinks, name: str, statsd: str, sentry: str):
        self.svc, self.sinks, self.name = svc, sinks, name
        self.statsd, self.sentry = statsd, sentry
        self.port = 0
        self.proc = None

    def env(self) -> dict:
        env = self.svc.common_env()
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "VERSION_FILE": "/nonexistent",
                    "ERROR_ENDPOINT_TOKEN": ERROR_TOKEN,
                    # No backtrace printed per panic (as in production): the default hook's
                    # symbolisation would dominate the error client's cost.
                    "RUST_BACKTRACE": "0"})
        env.update(self.sinks.statsd_env(self.statsd))
        env.update(self.sinks.sentry_env(self.sentry))
        return env

    def start(self, timeout: float = 60.0) -> dict:
        """Spawns the web and waits for /__lbheartbeat__ 200: {"startup_s", "status"}."""
        self.port = free_port()
        argv = [os.path.join(self.svc.bin_dir, "wharf"), "web"]
        resolv = self.sinks.resolv_conf(self.statsd, self.sentry)
        if resolv is False:
            return {"startup_s": None, "status": "skipped: needs root and unshare for a DNS stand-in"}
        if resolv:
            # Its own mount namespace, where /etc/resolv.conf names the loopback DNS stand-in.
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv] + argv
        t0 = time.monotonic()
        self.proc = self.svc.spawn(f"web-{self.name}", argv, self.env())
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return {"startup_s": None, "status": f"exited {self.proc.returncode} (see web-{self.name}.log)"}
            if http_get(self.port, "/__lbheartbeat__", timeout=0.5) == 200:
                return {"startup_s": round(time.monotonic() - t0, 3), "status": "ok"}
            time.sleep(0.005)
        return {"startup_s": None, "status": f"no 200 within {timeout:.0f} s"}

    def stop(self, grace: float) -> dict:
        """SIGTERM; SIGKILL after `grace` s. How long it took, and how it ended."""
        if self.proc is None or self.proc.poll() is not None:
            return {"shutdown_s": None, "ended": "not running"}
        t0 = time.monotonic()
        self.proc.terminate()
        try:
            code = self.proc.wait(timeout=grace)
            return {"shutdown_s": round(time.monotonic() - t0, 2), "ended": f"exit {code}"}
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return {"shutdown_s": round(time.monotonic() - t0, 2), "ended": f"SIGKILL after {grace:.0f} s"}


class Caller:
    """Calls GET `path` `rate` times a second, at most `max_inflight` at once, each with a
    timeout; it never waits on a slow web. The error client: /__error__ with the token (each call
    panics on purpose and raises a Sentry event). The probe: /__lbheartbeat__, which touches
    nothing but the process, so its latency is the web's own responsiveness."""

    def __init__(self, port: int, path: str, headers: dict | None, rate: float, timeout: float, max_inflight: int):
        self.port, self.path, self.headers = port, path, headers
        self.rate, self.timeout, self.max_inflight = rate, timeout, max_inflight
        self.counts = {"sent": 0, "skipped_max_inflight": 0, "status": {}, "timeouts": 0, "other_errors": 0,
                       "latency_s": []}
        self.inflight = 0
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _one(self):
        t0 = time.monotonic()
        st = http_get(self.port, self.path, self.headers, timeout=self.timeout)
        with self.lock:
            self.inflight -= 1
            if isinstance(st, int):
                self.counts["status"][str(st)] = self.counts["status"].get(str(st), 0) + 1
                self.counts["latency_s"].append(time.monotonic() - t0)
            elif st in ("TimeoutError", "timeout"):
                self.counts["timeouts"] += 1
            else:
                self.counts["other_errors"] += 1

    def _run(self):
        period = 1.0 / self.rate
        nxt = time.monotonic()
        while not self.stop_ev.is_set():
            with self.lock:
                if self.inflight >= self.max_inflight:
                    self.counts["skipped_max_inflight"] += 1
                    go = False
                else:
                    self.inflight += 1
                    self.counts["sent"] += 1
                    go = True
            if go:
                threading.Thread(target=self._one, daemon=True).start()
            nxt += period
            self.stop_ev.wait(max(0.0, nxt - time.monotonic()))

    def start(self):
        self.thread.start()

    def finish(self) -> dict:
        """Stops sending; the figures so far (calls still waiting are counted as in flight)."""
        self.stop_ev.set()
        self.thread.join(timeout=2)
        with self.lock:
            lat = sorted(self.counts["latency_s"])
            return {"sent": self.counts["sent"], "answered": dict(self.counts["status"]),
                    "timeouts": self.counts["timeouts"], "other_errors": self.counts["other_errors"],
                    "in_flight_at_end": self.inflight, "skipped_max_inflight": self.counts["skipped_max_inflight"],
                    "latency_p50_ms": round(1000 * lat[len(lat) // 2], 1) if lat else None,
                    "latency_p99_ms": round(1000 * harness.percentile(lat, 0.99), 1) if lat else None,
                    "latency_max_ms": round(1000 * lat[-1], 1) if lat else None}


# ---------------------------------------------------------------- load generation

WRK_SCRIPT = r"""
-- POST /submit/bench/main/4/<random UUID>, the body of the file given after `--`.
local body
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end
function init(args)
  local f = assert(io.open(args[1], "rb"))
  body = f:read("*a")
  f:close()
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919 + math.floor(os.clock() * 1e6))
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Content-Encoding"] = "gzip"
  wrk.headers["User-Agent"] = "pingsender/1.0"
  wrk.headers["X-PingSender-Version"] = "1.0"
end
local function r(n) return math.random(0, n) end
function request()
  local id = string.format("%08x-%04x-4%03x-%x%03x-%04x%08x", r(0x7fffffff) * 2 + r(1), r(0xffff), r(0xfff),
                           8 + r(3), r(0xfff), r(0xffff), r(0x7fffffff) * 2 + r(1))
  return wrk.format(nil, "/submit/bench/main/4/" .. id)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


class Load:
    """oha (as bench/harness.py) when installed, else wrk; both give the same figures."""

    def __init__(self, choice: str, oha: str, work: str):
        self.oha = oha if os.path.exists(oha) else None
        self.wrk = shutil.which("wrk")
        if choice == "auto":
            choice = "oha" if self.oha else "wrk"
        if choice == "oha" and not self.oha:
            raise HarnessError("oha not found: bench/install-tools")
        if choice == "wrk" and not self.wrk:
            raise HarnessError("neither oha nor wrk found: bench/install-tools, or apt-get install wrk")
        self.tool = choice
        self.script = os.path.join(work, "submit.lua")
        with open(self.script, "w") as f:
            f.write(WRK_SCRIPT)

    def version(self) -> str:
        if self.tool == "oha":
            return subprocess.run([self.oha, "--version"], capture_output=True, text=True).stdout.strip()
        out = subprocess.run([self.wrk, "--version"], capture_output=True, text=True)
        return (out.stdout + out.stderr).splitlines()[0].strip()

    def run(self, svc: harness.Services, port: int, body_file: str, duration: float, connections: int) -> dict:
        if self.tool == "oha":
            svc.oha = self.oha
            fig = harness.oha_run(svc, port, body_file, duration, connections, None)
            # oha counts the requests its own deadline cut off as errors; they are not the web's.
            errs = {k: v for k, v in fig["errors"].items() if "deadline" not in k}
            fig["errors"] = errs
            fig["non_2xx"] = fig["requests"] - fig["ok"]
            fig["errors_total"] = fig["non_2xx"] + sum(errs.values())
            return fig
        argv = [self.wrk, "-t", "2", "-c", str(connections), "-d", f"{max(1, round(duration))}s", "--timeout", "10s",
                "-s", self.script, f"http://127.0.0.1:{port}", "--", body_file]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
        if out.returncode != 0 or line is None:
            raise HarnessError(f"wrk failed ({out.returncode}): {(out.stderr or out.stdout).strip()[:500]}")
        d = json.loads(line[len("WRKJSON "):])
        secs = d["duration_us"] / 1e6 or duration
        ok = d["requests"] - d["status"]
        errs = {k: d[k] for k in ("connect", "read", "write") if d[k]}

        def ms(us):
            return round(us / 1000, 3) if ok else None

        return {"duration_s": round(secs, 3), "requests": d["requests"], "ok": ok,
                "throughput_rps": round(ok / secs, 1), "p50_ms": ms(d["p50_us"]), "p99_ms": ms(d["p99_us"]),
                "p99_9_ms": ms(d["p999_us"]), "max_ms": ms(d["max_us"]), "non_2xx": d["status"],
                "errors": errs, "errors_total": d["status"] + sum(errs.values()),
                # wrk adds one per connection whose request is older than --timeout, every 2 s:
                # a sign of a stuck web, not a count of requests.
                "wrk_timeout_checks": d["timeout"]}


# ---------------------------------------------------------------- phases


def startup_checks(svc: harness.Services, sinks: Sinks, cases: list[str], repeats: int, grace: float) -> dict:
    """Spawn to /__lbheartbeat__ 200 with each sink, `repeats` times interleaved; then SIGTERM
    (an idle web: nothing piled up)."""
    out = {c: {"statsd": STARTUP_CASES[c][0], "sentry": STARTUP_CASES[c][1], "runs": []} for c in cases}
    for r in range(repeats):
        for c in cases:
            web = Web(svc, sinks, f"startup-{c}-{r + 1}", *STARTUP_CASES[c])
            res = web.start(timeout=60.0)
            if res["status"].startswith("skipped"):
                out[c]["runs"].append(res)
                continue
            res.update(web.stop(grace))
            out[c]["runs"].append(res)
            log(f"start-up {c}: {res['startup_s']} s ({res['status']}), SIGTERM to exit {res['shutdown_s']} s ({res['ended']})")
    for c, v in out.items():
        times = [x["startup_s"] for x in v["runs"] if x.get("startup_s") is not None]
        v["median_startup_s"] = round(statistics.median(times), 3) if times else None
    base = out.get("baseline", {}).get("median_startup_s")
    for c, v in out.items():
        v["delay_vs_baseline_s"] = (round(v["median_startup_s"] - base, 3)
                                    if base is not None and v["median_startup_s"] is not None else None)
    return out


def measure(svc: harness.Services, sinks: Sinks, web: Web, load: Load, body_file: str, duration: float,
            connections: int, error_rate: float, with_errors: bool) -> dict:
    pid = web.proc.pid
    harness.reset_peak_rss(pid)
    cpu0 = harness.cpu_seconds(pid)
    snap0 = sinks.snapshot()
    ticks = harness.machine_ticks()
    busy0, kids0, self0 = harness.busy_seconds(), harness.children_cpu(), harness.self_cpu()
    redis0 = harness.cpu_seconds(svc.redis_proc.pid)
    client = Caller(web.port, "/__error__", {"X-Error-Token": ERROR_TOKEN}, error_rate, 5.0, 16) if with_errors else None
    probe = Caller(web.port, "/__lbheartbeat__", None, 5.0, 1.0, 4)
    if client:
        client.start()
    probe.start()
    fig = load.run(svc, web.port, body_file, duration, connections)
    errors_client = client.finish() if client else None
    fig["heartbeat_probe"] = probe.finish()
    fig["steal_percent"] = harness.steal_percent(ticks, harness.machine_ticks())
    busy1, kids1, self1 = harness.busy_seconds(), harness.children_cpu(), harness.self_cpu()
    redis_cpu = harness.cpu_seconds(svc.redis_proc.pid) - redis0
    alive = web.proc.poll() is None
    fig["web_alive"] = alive
    if alive:
        cpu = harness.cpu_seconds(pid) - cpu0
        fig["web_cpu_s"] = round(cpu, 3)
        fig["web_cpu_us_per_request"] = round(cpu / fig["ok"] * 1e6, 1) if fig["ok"] else None
        fig["web_rss_mb_end"] = round(harness.rss_mb(pid), 1)
        fig["web_peak_rss_mb"] = round(harness.peak_rss_mb(pid), 1)
        fig["web_threads"] = _threads(pid)
        # What else ran on the machine meanwhile (a build, another guest process), which steal
        # does not show: busy time less this web, Redis, the load generator and this script.
        other = (busy1 - busy0) - cpu - redis_cpu - (kids1 - kids0) - (self1 - self0)
        fig["other_cpu_cores"] = round(other / fig["duration_s"], 2) if fig["duration_s"] else None
    snap1 = sinks.snapshot()
    fig["sinks"] = {k: snap1[k] - snap0[k] for k in snap0}
    fig["sinks"]["synhang_connects_pending"] = sinks.synhang_pending()
    fig["error_client"] = errors_client
    fig["heartbeat_after"] = http_get(web.port, "/__lbheartbeat__", timeout=1.0)
    svc.redis("FLUSHALL")
    return fig


def _threads(pid: int):
    try:
        return harness.status_field(pid, "Threads")
    except OSError:
        return None


def summarize(name: str, rounds: list[dict], base_rounds: list[dict]) -> dict:
    rps = [f["throughput_rps"] for f in rounds]
    ratios = [f["throughput_rps"] / b["throughput_rps"] if b["throughput_rps"] else None
              for f, b in zip(rounds, base_rounds)]
    p99r = [f["p99_ms"] / b["p99_ms"] if f.get("p99_ms") and b.get("p99_ms") else None
            for f, b in zip(rounds, base_rounds)]

    def med(xs, nd=3):
        xs = [x for x in xs if x is not None]
        return round(statistics.median(xs), nd) if xs else None

    last = rounds[-1]
    ec = [f["error_client"] for f in rounds if f.get("error_client")]
    return {
        "statsd": CONFIGS[name][0], "sentry": CONFIGS[name][1], "error_client": CONFIGS[name][2],
        "what": CONFIGS[name][3],
        "median_rps": med(rps, 1), "rps_per_round": rps,
        "ratio_to_baseline": med(ratios), "ratio_per_round": [None if q is None else round(q, 3) for q in ratios],
        "median_p50_ms": med([f.get("p50_ms") for f in rounds]), "median_p99_ms": med([f.get("p99_ms") for f in rounds]),
        "p99_ratio_to_baseline": med(p99r), "p99_ratio_per_round": [None if q is None else round(q, 2) for q in p99r],
        "errors_total": sum(f["errors_total"] for f in rounds),
        "non_2xx": sum(f["non_2xx"] for f in rounds),
        "web_rss_mb_end": last.get("web_rss_mb_end"),
        "web_peak_rss_mb": max((f.get("web_peak_rss_mb") or 0) for f in rounds),
        "median_web_cpu_us_per_request": med([f.get("web_cpu_us_per_request") for f in rounds], 1),
        "steal_percent": [f.get("steal_percent") for f in rounds],
        "error_calls_sent": sum(e["sent"] for e in ec),
        "error_calls_answered": sum(sum(e["answered"].values()) for e in ec),
        "error_calls_timed_out": sum(e["timeouts"] for e in ec),
        "heartbeat_after_last_round": last.get("heartbeat_after"),
        "probe_sent": sum(f["heartbeat_probe"]["sent"] for f in rounds),
        "probe_answered": sum(sum(f["heartbeat_probe"]["answered"].values()) for f in rounds),
        "probe_median_p99_ms": med([f["heartbeat_probe"]["latency_p99_ms"] for f in rounds], 1),
        "other_cpu_cores": [f.get("other_cpu_cores") for f in rounds],
        "web_alive": all(f.get("web_alive") for f in rounds),
    }


def findings(r: dict) -> list[str]:
    """Where black-holing slowed submissions or start-up, in words (empty: it did not)."""
    out = []
    for name, c in r["configurations"].items():
        if name == "baseline":
            continue
        q, p = c.get("ratio_to_baseline"), c.get("p99_ratio_to_baseline")
        if q is None or q < 0.9 or (p is not None and p > 2.0) or c["errors_total"] > 0 or not c["web_alive"]:
            out.append(f"{name}: {c['median_rps']} req/s = {q} of the baseline (rounds {c['ratio_per_round']}), "
                       f"p99 {c['median_p99_ms']} ms ({p} of the baseline), {c['errors_total']} failed submissions; "
                       f"/__error__ calls answered {c['error_calls_answered']} of {c['error_calls_sent']}, "
                       f"timed out {c['error_calls_timed_out']}; /__lbheartbeat__ after the last round: "
                       f"{c['heartbeat_after_last_round']}")
    for name, s in r.get("startup", {}).items():
        d = s.get("delay_vs_baseline_s")
        if d is not None and d > 1.0:
            out.append(f"start-up {name}: {s['median_startup_s']} s to the first /__lbheartbeat__ 200, "
                       f"{d} s more than the baseline")
        if any(x.get("status") not in ("ok",) and not str(x.get("status")).startswith("skipped") for x in s["runs"]):
            out.append(f"start-up {name}: {[x.get('status') for x in s['runs']]}")
    for name, s in r.get("shutdown", {}).items():
        if s.get("ended", "").startswith("SIGKILL"):
            out.append(f"shutdown {name}: SIGTERM did not stop the web; {s['ended']}")
    return out


# ---------------------------------------------------------------- report


_f = harness.fmt


def report(r: dict) -> str:
    m, s = r["machine"], r["settings"]
    out = [f"Run {r['date']}, `{r['command']}`, {m['cores']} cores ({m['cpu']}), load average at start "
           f"{m['loadavg_at_start'][0]:.2f}; {r['binary']['build']} binary; {r['tools']['load']}; "
           f"{s['rounds']} rounds of {s['duration_s']:.0f} s per configuration, {s['connections']} connections, "
           f"1 KB JSON gzip bodies; /__error__ {s['error_rate']}/s during every run; took {r['elapsed_s']:.0f} s.", "",
           "| configuration | StatsD | Sentry | req/s (median) | / baseline (per round) | p50 / p99 ms | "
           "p99 / baseline | failed submissions | `/__error__` answered / sent | `/__lbheartbeat__` probe answered / "
           "sent (p99 ms) | web RSS MB at end (peak) | CPU steal % per round | other processes, cores | "
           "SIGTERM to exit |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in r["configurations"].items():
        sd = r.get("shutdown", {}).get(name, {})
        ratio = "1.00" if name == "baseline" else (
            "-" if c["ratio_to_baseline"] is None else f"**{c['ratio_to_baseline']:.2f}**")
        per_round = ", ".join("-" if q is None else f"{q:.2f}" for q in c["ratio_per_round"])
        shut = "-" if sd.get("shutdown_s") is None else (
            f"{sd['shutdown_s']} s" + ("" if sd["ended"].startswith("exit") else f" ({sd['ended']})"))
        errs = f"{c['error_calls_answered']} / {c['error_calls_sent']}" if c["error_client"] else "(off)"
        out.append(f"| {name} | {c['statsd']} | {c['sentry']} | {_f(c['median_rps'])} | {ratio} ({per_round}) | "
                   f"{_f(c['median_p50_ms'], 2)} / {_f(c['median_p99_ms'], 2)} | "
                   f"{'-' if c['p99_ratio_to_baseline'] is None else format(c['p99_ratio_to_baseline'], '.2f')} | "
                   f"{_f(c['errors_total'])} | {errs} | {c['probe_answered']} / {c['probe_sent']} "
                   f"({_f(c['probe_median_p99_ms'], 1)}) | {_f(c['web_rss_mb_end'], 1)} ({_f(c['web_peak_rss_mb'], 1)}) | "
                   f"{', '.join(str(x) for x in c['steal_percent'])} | "
                   f"{', '.join('-' if x is None else str(x) for x in c['other_cpu_cores'])} | {shut} |")
    st = r.get("startup")
    if st:
        out += ["", "Start-up, spawn to the first `/__lbheartbeat__` 200 (idle web, then SIGTERM):", "",
                "| case | StatsD | Sentry | start-up s (median; runs) | vs baseline s | SIGTERM to exit s |",
                "|---|---|---|---|---|---|"]
        for name, v in st.items():
            runs = v["runs"]
            if runs and all(str(x.get("status", "")).startswith("skipped") for x in runs):
                out.append(f"| {name} | {v['statsd']} | {v['sentry']} | {runs[0]['status']} | - | - |")
                continue
            times = ", ".join("-" if x.get("startup_s") is None else f"{x['startup_s']:.3f}" for x in runs)
            shut = ", ".join("-" if x.get("shutdown_s") is None else f"{x['shutdown_s']}" for x in runs)
            d = v.get("delay_vs_baseline_s")
            out.append(f"| {name} | {v['statsd']} | {v['sentry']} | {_f(v['median_startup_s'], 3)} ({times}) | "
                       f"{'-' if d is None else f'{d:+.3f}'} | {shut} |")
    fs = r.get("findings") or []
    out += ["", "Findings (a configuration below 0.9 of the baseline, p99 over 2x, failed submissions, a start-up "
            "over 1 s later than the baseline, or a SIGTERM that did not stop the web):", ""]
    out += [f"- {x}" for x in fs] if fs else ["- none: black-holing slowed neither submissions nor start-up"]
    return "\n".join(out)


# ---------------------------------------------------------------- main


def _binary(bin_dir: str | None) -> str:
    if bin_dir:
        return bin_dir
    for d in ("release", "debug"):
        p = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), d)
        if os.access(os.path.join(p, "wharf"), os.X_OK):
            return p
    raise HarnessError("no wharf binary: cargo build --release -p wharf, or --bin-dir DIR")


def check(r: dict) -> list[str]:
    """Did every configuration and start-up case produce figures? (Never judges them.)"""
    problems = []
    if not r.get("configurations"):
        problems.append("no configuration was measured")
    for name, c in r.get("configurations", {}).items():
        if c.get("median_rps") is None or not c.get("rps_per_round"):
            problems.append(f"{name}: no figures")
    base = r.get("configurations", {}).get("baseline")
    if base and not base.get("median_rps"):
        problems.append("baseline: no successful submission")
    for name, s in r.get("startup", {}).items():
        if not s.get("runs"):
            problems.append(f"start-up {name}: not run")
    return problems


def main() -> int:
    ap = harness.ResultArgs(__doc__, "directory holding wharf (default: target/release if built, else target/debug)",
                            "smoke run (< 1 minute): 1 round of 3 s, start-up once",
                            ("blackhole-latest.json", "quick.blackhole.json"),
                            report=report, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"comma-separated, baseline first (default %(default)s; also: "
                    f"{', '.join(c for c in CONFIGS if c not in DEFAULT_CONFIGS)})")
    ap.add_argument("--rounds", type=int, help="interleaved rounds, order rotated each round (default 3, quick 1)")
    ap.add_argument("--duration", type=float, help="seconds of load per configuration and round (default 10, quick 3)")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--error-rate", type=float, default=5.0, help="GET /__error__ calls per second during each run")
    ap.add_argument("--startup-repeats", type=int, help="runs of each start-up case (default 1, besides the "
                    "configurations' own start-ups)")
    ap.add_argument("--no-startup", action="store_true", help="leave out the start-up cases")
    ap.add_argument("--load", choices=("auto", "oha", "wrk"), default="auto",
                    help="load generator: oha (bench/harness.py's) if installed, else wrk")
    ap.add_argument("--oha", default=harness.default_oha())
    ap.add_argument("--stop-grace", type=float, default=12.0,
                    help="seconds from SIGTERM to SIGKILL (SHUTDOWN_GRACE_MS is 8 s)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (web logs)")
    args = ap.parse_args()
    quick = args.quick
    rounds = max(1, args.rounds or (1 if quick else 3))
    duration = args.duration or (3.0 if quick else 10.0)
    repeats = args.startup_repeats or 1
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in names:
        if c not in CONFIGS:
            ap.error(f"unknown configuration {c} (known: {', '.join(CONFIGS)})")
    if names[0] != "baseline":
        ap.error("the first configuration must be baseline")
    harness.need_tools(("redis-server", "redis-cli"))
    bin_dir = _binary(args.bin_dir)
    harness.need_bins(bin_dir, ("wharf",))
    wharf = os.path.join(bin_dir, "wharf")

    started = time.time()
    work = tempfile.mkdtemp(prefix="wharf-bench-blackhole-")
    svc = harness.Services(bin_dir, work, args.oha)
    load = Load(args.load, args.oha, work)
    dns = unshare_works()
    sinks = Sinks(work, with_dns=dns)
    build = "release" if os.path.basename(os.path.normpath(bin_dir)) == "release" else (
        "debug" if os.path.basename(os.path.normpath(bin_dir)) == "debug" else "unknown")
    result = {
        **harness.run_header("python3 bench/blackhole.py"),
        "tools": {"load": load.version(), "redis": harness._version(["redis-server", "--version"])},
        "binary": harness.binary_info(wharf, build=build),
        "source": harness.git_source(["crates", "Cargo.lock"]),
        "mode": "quick" if quick else "default",
        "settings": {"rounds": rounds, "duration_s": duration, "connections": args.connections,
                     "error_rate": args.error_rate, "load_generator": load.tool, "dns_stand_ins": bool(sinks.dns),
                     "configs": names},
        "sinks": {
            "statsd sink": f"127.0.0.1:{sinks.statsd_sink.getsockname()[1]}/udp, read",
            "statsd unread": f"127.0.0.1:{sinks.statsd_unread.getsockname()[1]}/udp, bound, never read, SO_RCVBUF 1 KB",
            "statsd refused": f"127.0.0.1:{sinks.statsd_refused_port}/udp, nothing bound",
            "sentry answering": f"127.0.0.1:{sinks.sentry_ok.server_address[1]}, HTTP 200",
            "sentry mute": f"127.0.0.1:{sinks.sentry_mute.getsockname()[1]}, accepts, never reads",
            "sentry synhang": f"127.0.0.1:{sinks.sentry_synhang.getsockname()[1]}, listen backlog 0, queue full",
            "dns": (f"{DNS_NXDOMAIN_ADDR}:53 NXDOMAIN, {DNS_DEAD_ADDR}:53 silent; names {DEAD_NAME_STATSD}, "
                    f"{DEAD_NAME_SENTRY}" if sinks.dns else "not started"),
        },
        "configurations": {},
    }
    webs: dict[str, Web] = {}
    try:
        svc.start_redis()
        body_file = os.path.join(work, "body-1024.json.gz")
        body, raw = bodies.write_gzipped(body_file, 1024)
        result["document"] = {"raw_bytes": raw, "gzip_bytes": len(body)}

        if not args.no_startup:
            cases = list(STARTUP_CASES) if not quick else ["baseline", "statsd-refused", "sentry-mute", "sentry-synhang"]
            result["startup"] = startup_checks(svc, sinks, cases, repeats, args.stop_grace)

        for name in list(names):
            web = Web(svc, sinks, name, CONFIGS[name][0], CONFIGS[name][1])
            res = web.start(timeout=60.0)
            if res["status"].startswith("skipped") and name != "baseline":
                log(f"{name}: {res['status']}")
                names.remove(name)
                continue
            if res["status"] != "ok":
                raise HarnessError(f"{name}: the web did not start ({res['status']})")
            webs[name] = web
            log(f"{name}: web up in {res['startup_s']} s on port {web.port}")
            if name == "baseline":
                result["binary"]["version"] = harness.web_version(web.port)
            result["configurations"][name] = {"startup_s": res["startup_s"]}

        def phase(r: int, _attempt: int, name: str) -> dict:
            log(f"round {r + 1}/{rounds}: {name}")
            f = measure(svc, sinks, webs[name], load, body_file, duration, args.connections,
                        args.error_rate, CONFIGS[name][2])
            ec = f.get("error_client") or {}
            log(f"  {f['throughput_rps']} req/s, p50 {f['p50_ms']} p99 {f['p99_ms']} ms, failed "
                f"{f['errors_total']}, steal {f['steal_percent']} %, /__error__ answered "
                f"{sum((ec.get('answered') or {}).values())}/{ec.get('sent')}, sinks {f['sinks']}")
            return f

        per_config = harness.interleaved_rounds(names, rounds, phase, "attempt")

        for name in names:
            result["configurations"][name].update(summarize(name, per_config[name], per_config["baseline"]))
            result["configurations"][name]["rounds"] = per_config[name]

        # Shutdown after the runs (events piled up against the dead DSNs): all at once, in parallel.
        shut = {}

        def stopper(n):
            shut[n] = webs[n].stop(args.stop_grace)

        ths = [threading.Thread(target=stopper, args=(n,)) for n in names]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        result["shutdown"] = shut
        result["sinks_total"] = sinks.snapshot()
        for n, s in shut.items():
            log(f"shutdown {n}: {s}")
    finally:
        svc.stop_all()
        sinks.close()
        harness.close_work(result, started, work, args.keep)

    result["findings"] = findings(result)
    return harness.publish(result, args.out, report(result), check(result) if args.check else None)


if __name__ == "__main__":
    harness.run_main(main)
