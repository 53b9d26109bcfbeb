#!/usr/bin/env python3
"""Wharf benchmark harness: loopback redis-server + S3 stand-in + `wharf web` + N `wharf worker`, driven by oha.

Run it through `bench/run` (which builds the release binaries first). Everything listens on
127.0.0.1 on free ports, every load phase is bounded by oha's own duration, and every process the
harness starts is stopped (SIGTERM, then SIGKILL) before it exits, also on Ctrl-C or an error.
"""

import argparse
import contextlib
import datetime
import gzip
import http.client
import json
import os
import resource
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402
import plot  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
# Queue v2: QUEUE_SHARDS streams wharf:{<n>}:submissions (README, "Architecture").
DEFAULT_SHARDS = 4
BUCKET = "wharf-bench"
ACCESS_KEY = "benchaccess"
SECRET_KEY = "benchsecret"


class HarnessError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{name} exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"{name} did not listen on 127.0.0.1:{port} within {timeout}s")


# ---------------------------------------------------------------- /proc readings


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (not idle, iowait or stolen), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (sum(v) - v[3] - v[4] - v[7]) / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this script's finished children (the load generator, redis-cli)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    """CPU seconds of this script itself."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def status_field(pid: int, field: str) -> int | None:
    """A numeric field of /proc/PID/status (`VmRSS` in kB, `Threads`); None if it has no such
    field. Raises OSError once the process is gone."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return None


def status_mb(pid: int, field: str) -> float:
    """A kB field of /proc/PID/status (`VmHWM`, `VmRSS`), in MB."""
    kb = status_field(pid, field)
    return 0.0 if kb is None else kb / 1024


def peak_rss_mb(pid: int) -> float:
    return status_mb(pid, "VmHWM")


def rss_mb(pid: int) -> float:
    return status_mb(pid, "VmRSS")


# A saturation round whose phases lost more than this share of the machine to other guests is run
# once more (the second attempt is kept whatever its steal).
STEAL_RETRY_PERCENT = 5.0


def machine_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice: already in user/nice]
    return fields[7] if len(fields) > 7 else 0, sum(fields[:8])


def steal_percent(before: tuple[int, int], after: tuple[int, int]):
    """CPU time the hypervisor gave to other guests meanwhile, as % of the machine's time."""
    total = after[1] - before[1]
    return round(100 * (after[0] - before[0]) / total, 1) if total > 0 else None


def reset_peak_rss(pid: int) -> None:
    """Resets VmHWM to the current RSS (needs the same user or root; a no-op if refused)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


# ---------------------------------------------------------------- processes


class Services:
    """The processes of one run; `stop_all` always runs."""

    def __init__(self, bin_dir: str, work: str, oha: str):
        self.bin_dir = bin_dir
        self.work = work
        self.oha = oha
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.redis_port = 0
        self.s3_port = 0
        self.web = None
        self.web_port = 0
        self.baseline = None
        self.baseline_port = 0
        self.workers: list[subprocess.Popen] = []
        self.queue_shards = DEFAULT_SHARDS
        # A StatsD port that is never read: the roles pay for sending metrics, as in production,
        # and the kernel drops what does not fit the receive buffer.
        self.statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.statsd.bind(("127.0.0.1", 0))

    def spawn(self, name: str, argv: list[str], env: dict | None = None) -> subprocess.Popen:
        out = open(os.path.join(self.work, f"{name}.log"), "wb")
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        out.close()
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def stop_all(self) -> None:
        for _, proc in reversed(self.procs):
            try:
                self.stop(proc, grace=5.0)
            except Exception:  # noqa: BLE001 - best effort, keep stopping the rest
                pass

    def start_redis(self) -> None:
        self.redis_port = free_port()
        proc = self.spawn(
            "redis",
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.work, "--protected-mode", "yes"],
        )
        wait_port(self.redis_port, 10, proc, "redis-server")
        self.redis_proc = proc

    def redis(self, *args: str) -> str:
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args],
                             capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            raise HarnessError(f"redis-cli {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout.strip()

    def shards(self) -> list[int]:
        """Shards 0..QUEUE_SHARDS-1 and every shard a web node registered in wharf:queue:shards."""
        registered = self.redis("SMEMBERS", "wharf:queue:shards").split()
        return sorted(set(range(self.queue_shards)) | {int(x) for x in registered if x.isdigit()})

    def backlog(self) -> int:
        """Entries not yet written to S3 (waiting + in flight): the total XLEN of the shard streams,
        as wharf.queue.backlog (acknowledged entries are deleted with their XACK)."""
        out = subprocess.run(
            ["redis-cli", "-p", str(self.redis_port)],
            input="".join(f"XLEN wharf:{{{n}}}:submissions\n" for n in self.shards()),
            capture_output=True, text=True, timeout=10,
        )
        return sum(int(x) for x in out.stdout.split() if x.lstrip("-").isdigit())

    def start_s3(self) -> None:
        self.s3_port = free_port()
        root = os.path.join(self.work, "s3")
        os.makedirs(root, exist_ok=True)
        proc = self.spawn(
            "s3-standin",
            [os.path.join(self.bin_dir, "s3-standin"), "--root", root, "--host", "127.0.0.1",
             "--port", str(self.s3_port), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY,
             "--bucket", BUCKET],
        )
        wait_port(self.s3_port, 10, proc, "s3-standin")

    def common_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "REDIS_", "S3_", "BATCH_", "WORKER_", "QUEUE_"))}
        env.update({
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": str(self.redis_port),
            "ENVIRONMENT": "bench",
            "QUEUE_SHARDS": str(self.queue_shards),
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "info",
        })
        env["STATSD_HOST"] = "127.0.0.1"
        env["STATSD_PORT"] = str(self.statsd.getsockname()[1])
        # Sentry on, as in production (it changes per-request work); nothing listens there, and
        # nothing is sent unless an error happens.
        env["SENTRY_DSN"] = f"http://bench@127.0.0.1:{self.statsd.getsockname()[1]}/1"
        env.pop("CONFIG_URL", None)
        return env

    def start_web(self, extra_env: dict) -> None:
        self.web_port = free_port()
        self.queue_shards = int(extra_env.get("QUEUE_SHARDS", self.queue_shards))
        env = self.common_env()
        env.update({"HOST": "127.0.0.1", "PORT": str(self.web_port), "VERSION_FILE": "/nonexistent"})
        env.update(extra_env)
        self.web = self.spawn("web", [os.path.join(self.bin_dir, "wharf"), "web"], env)
        wait_port(self.web_port, 20, self.web, "wharf web")

    def start_baseline(self) -> None:
        self.baseline_port = free_port()
        self.baseline = self.spawn(
            "baseline",
            [os.path.join(self.bin_dir, "wharf-bench-baseline"), "--host", "127.0.0.1",
             "--port", str(self.baseline_port), "--redis", f"redis://127.0.0.1:{self.redis_port}/0",
             "--key", "baseline"],
        )
        wait_port(self.baseline_port, 20, self.baseline, "wharf-bench-baseline")

    def start_workers(self, n: int, extra_env: dict) -> None:
        env = self.common_env()
        env.update({
            "S3_BUCKET": BUCKET,
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        })
        env.update(extra_env)
        for i in range(n):
            self.workers.append(self.spawn(f"worker{i}", [os.path.join(self.bin_dir, "wharf"), "worker"], env))
        time.sleep(1.0)
        for w in self.workers:
            if w.poll() is not None:
                raise HarnessError(f"a worker exited with {w.returncode} at start-up (see worker logs)")


# ---------------------------------------------------------------- load generation


def oha_run(svc: Services, port: int, body_file: str, duration: float, connections: int,
            rate: float | None) -> dict:
    """One oha run against /submit on `port`; returns its figures (latencies in ms)."""
    url = f"http://127.0.0.1:{port}/submit/bench/main/4/{UUID_RE}"
    argv = [svc.oha, "--no-tui", "--output-format", "json", "-z", f"{duration}s", "-c", str(connections),
            "-m", "POST", "-D", body_file, "-T", "application/json",
            "-H", "Content-Encoding: gzip", "-H", "User-Agent: pingsender/1.0",
            "-H", "X-PingSender-Version: 1.0", "--rand-regex-url", url]
    if rate:
        argv += ["-q", str(rate), "--latency-correction"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise HarnessError(f"oha failed ({out.returncode}): {out.stderr.strip()[:500]}")
    data = json.loads(out.stdout)
    summary = data["summary"]
    pct = data.get("latencyPercentiles", {})
    codes = {str(k): int(v) for k, v in data.get("statusCodeDistribution", {}).items()}
    ok = codes.get("200", 0)
    total_time = summary.get("total") or duration

    def ms(key: str):
        v = pct.get(key)
        return None if v is None else round(v * 1000, 3)

    return {
        "offered_rps": rate,
        "duration_s": round(total_time, 3),
        "requests": sum(codes.values()),
        "ok": ok,
        "status_codes": codes,
        "errors": data.get("errorDistribution", {}),
        "throughput_rps": round(ok / total_time, 1) if total_time else 0.0,
        "p50_ms": ms("p50"),
        "p99_ms": ms("p99"),
        "p99_9_ms": ms("p99.9"),
        "max_ms": None if summary.get("slowest") is None else round(summary["slowest"] * 1000, 3),
    }


def measured(svc: Services, pid: int, fn):
    """Runs fn() and returns (result, cpu seconds of pid meanwhile, peak RSS MB meanwhile)."""
    reset_peak_rss(pid)
    before = cpu_seconds(pid)
    ticks = machine_ticks()
    result = fn()
    if isinstance(result, dict):
        # On a virtual machine, time stolen by other guests slows both servers alike only if it
        # is spread evenly; recording it lets a reader discount a phase that was starved.
        result["steal_percent"] = steal_percent(ticks, machine_ticks())
    return result, cpu_seconds(pid) - before, peak_rss_mb(pid)


def per_k(cpu: float, docs: int):
    return round(cpu / docs * 1000, 4) if docs else None


# ---------------------------------------------------------------- S3 reading


def landed(svc: Services) -> list[tuple[float, str, str]]:
    """Every line in every object: (object mtime, submission_timestamp, uri)."""
    root = os.path.join(svc.work, "s3", BUCKET)
    lines = []
    for dirpath, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".ndjson.gz"):
                continue
            path = os.path.join(dirpath, name)
            mtime = os.stat(path).st_mtime
            with gzip.open(path, "rt") as f:
                for line in f:
                    if not line.strip():
                        continue
                    attrs = json.loads(line).get("attributes", {})
                    lines.append((mtime, attrs.get("submission_timestamp", ""), attrs.get("uri", "")))
    return lines


def parse_ts(ts: str) -> float:
    return datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def percentile(sorted_values: list[float], q: float):
    if not sorted_values:
        return None
    i = min(len(sorted_values) - 1, max(0, int(round(q * (len(sorted_values) - 1)))))
    return sorted_values[i]


# ---------------------------------------------------------------- redis-benchmark


def bench_attributes(body_len: int) -> str:
    """The `at` field wharf stores for one of oha's requests (crates/wharf-web/src/edge.rs)."""
    return json.dumps({
        "content_length": str(body_len), "host": "127.0.0.1:40000", "method": "POST",
        "protocol": "HTTP/1.1", "remote_addr": "127.0.0.1",
        "submission_timestamp": "2025-01-01T00:00:00.000000Z",
        "uri": "/submit/bench/main/4/2c3a0767-d84a-4d02-8a92-3f0c2b7e9d41",
        "user_agent": "pingsender/1.0", "x_pingsender_version": "1.0",
    }, separators=(",", ":"), sort_keys=True)


def xadd_entry_argv(body_len: int) -> list[str]:
    """One `XADD` of a queue entry the size of wharf's (crates/wharf-queue/src/entry.rs: v, r, at,
    body as raw bytes), into a stream of its own in shard 0's hash slot."""
    return ["XADD", "wharf:{0}:bench", "*", "v", "2", "r", "bench/main/4/2c3a0767-d84a-4d02-8a92-__rand_int__",
            "at", bench_attributes(body_len), "body", "x" * body_len]


def redis_benchmark(svc: Services, body_len: int, requests: int) -> dict:
    """Baseline (b): RPUSH of the body (baseline (a)'s one Redis command), and one XADD of a queue
    entry of the same body size (what wharf web sends per submission)."""
    results = {}
    common = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(svc.redis_port), "-c", "50", "-n", str(requests),
              "-r", "100000000", "--csv", "-q"]
    out = subprocess.run(common + ["RPUSH", "rb:list", "x" * body_len], capture_output=True, text=True, timeout=120)
    results["rpush_body_rps"] = _rb_rps(out.stdout)
    svc.redis("FLUSHALL")
    argv = xadd_entry_argv(body_len)
    out = subprocess.run(common + argv, capture_output=True, text=True, timeout=120)
    results["xadd_entry_rps"] = _rb_rps(out.stdout)
    results["entry_bytes"] = sum(len(a) for a in argv[3:])
    svc.redis("FLUSHALL")
    return results


def _rb_rps(csv: str):
    """The requests per second of redis-benchmark's `--csv` output. The first column, the command
    line itself, may hold commas and quotes (an XADD of a JSON attribute), so the rps column is
    counted from the end of the row: the header says how many numeric columns follow it."""
    lines = [line for line in csv.splitlines() if line.strip()]
    if not lines:
        return None
    header = [p.strip('"') for p in lines[0].split(",")]
    if header[:2] == ["test", "rps"]:
        width, rows = len(header), lines[1:]
    else:  # redis-benchmark < 6: no header, two columns
        width, rows = 2, lines
    for line in rows:
        parts = [p.strip('"') for p in line.split(",")]
        if len(parts) >= width:
            try:
                return float(parts[len(parts) - (width - 1)])
            except ValueError:
                continue
    return None


# ---------------------------------------------------------------- phases


def saturation(svc: Services, target: str, body_file: str, duration: float, connections: int) -> dict:
    port, proc = (svc.web_port, svc.web) if target == "wharf" else (svc.baseline_port, svc.baseline)
    redis0 = cpu_seconds(svc.redis_proc.pid)
    fig, cpu, rss = measured(svc, proc.pid, lambda: oha_run(svc, port, body_file, duration, connections, None))
    redis_cpu = cpu_seconds(svc.redis_proc.pid) - redis0
    fig.update({"cpu_s": round(cpu, 3), "cpu_s_per_1k_docs": per_k(cpu, fig["ok"]), "peak_rss_mb": round(rss, 1),
                "redis_cpu_s_per_1k_docs": per_k(redis_cpu, fig["ok"])})
    svc.redis("FLUSHALL")
    return fig


def end_to_end(svc: Services, body_file: str, rate: float, duration: float, connections: int,
               drain_timeout: float) -> dict:
    pids = {"web": svc.web.pid, **{f"worker{i}": w.pid for i, w in enumerate(svc.workers)}}
    idle_rss = {k: round(rss_mb(p), 1) for k, p in pids.items()}
    for pid in pids.values():
        reset_peak_rss(pid)
    cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
    samples = []
    t0 = time.time()
    box = {}

    def drive():
        try:
            box["fig"] = oha_run(svc, svc.web_port, body_file, duration, connections, rate)
        except Exception as e:  # noqa: BLE001 - reported below
            box["error"] = e

    th = threading.Thread(target=drive)
    th.start()
    while th.is_alive():
        samples.append((round(time.time() - t0, 2), svc.backlog()))
        th.join(timeout=1.0)
    t1 = time.time()
    if "error" in box:
        raise box["error"]
    fig = box["fig"]
    cpu_load = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    # Drain: wait until everything accepted has landed (or the timeout).
    deadline = time.monotonic() + drain_timeout
    rows = landed(svc)
    while len({u for _, _, u in rows}) < fig["ok"] and time.monotonic() < deadline:
        time.sleep(1.0)
        samples.append((round(time.time() - t0, 2), svc.backlog()))
        rows = landed(svc)
    t_drained = time.time()
    cpu_total = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
    rss = {k: round(peak_rss_mb(p), 1) for k, p in pids.items()}

    uris = {u for _, _, u in rows}
    in_window = sum(1 for m, _, _ in rows if m <= t1)
    lat = sorted(m - parse_ts(ts) for m, ts, _ in rows if ts)
    worker_cpu = sum(v for k, v in cpu_total.items() if k.startswith("worker"))
    both_cpu = worker_cpu + cpu_total["web"]
    half = [b for t, b in samples if t >= duration / 2 and t <= duration]
    return {
        "offered_rps": rate,
        "duration_s": round(t1 - t0, 2),
        "submission": fig,
        "accepted": fig["ok"],
        "landed_lines": len(rows),
        "landed_unique": len(uris),
        "duplicates": len(rows) - len(uris),
        "all_accepted_landed": len(uris) >= fig["ok"],
        "landed_during_load": in_window,
        "end_to_end_docs_per_s": round(in_window / (t1 - t0), 1),
        "end_to_end_fraction_of_submission": round(in_window / fig["ok"], 3) if fig["ok"] else None,
        "drain_s_after_load": round(t_drained - t1, 2),
        "submission_to_object_s": {
            "p50": _r(percentile(lat, 0.5)), "p99": _r(percentile(lat, 0.99)), "max": _r(lat[-1] if lat else None),
        },
        "backlog": {
            "samples": samples,
            "max": max((b for _, b in samples), default=0),
            "at_end_of_load": half[-1] if half else None,
            "second_half_first": half[0] if half else None,
        },
        "peak_rss_mb": rss,
        "rss_before_load_mb": idle_rss,
        "cpu_s_during_load": {k: round(v, 3) for k, v in cpu_load.items()},
        "cpu_s_total": {k: round(v, 3) for k, v in cpu_total.items()},
        "cpu_s_per_1k_docs": {
            "web": per_k(cpu_total["web"], len(uris)),
            "workers": per_k(worker_cpu, len(uris)),
            "both": per_k(both_cpu, len(uris)),
        },
        "cpu_s_per_million_docs_both": round(both_cpu / len(uris) * 1e6, 1) if uris else None,
    }


def _r(v):
    return None if v is None else round(v, 3)


# ---------------------------------------------------------------- main


def main() -> int:
    ap = ResultArgs(__doc__, "directory holding wharf, s3-standin, wharf-bench-baseline",
                    "the CI smoke run: 1 KB bodies, short phases (< 1 minute)", ("latest.json", "quick.json"),
                    checked="every phase produced figures", bin_dir_required=True)
    ap.add_argument("--oha", default=default_oha())
    ap.add_argument("--workers", type=int, default=2, help="wharf worker processes in the end-to-end phase")
    ap.add_argument("--duration", type=float, help="seconds per load phase (default 10, quick 3)")
    ap.add_argument("--rounds", type=int, help="interleaved saturation rounds per size, baseline (a) and wharf "
                    "(default 3, quick 1); the median ratio is reported")
    ap.add_argument("--e2e-duration", type=float, help="seconds of end-to-end load (default 60, quick 8)")
    ap.add_argument("--e2e-load", type=float, default=0.8, help="end-to-end offered rate as a fraction of saturation")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--sizes", default=None, help="comma-separated document sizes in bytes (default 1024,10240; quick 1024)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="K=V", help="extra worker environment (repeatable)")
    ap.add_argument("--web-env", action="append", default=[], metavar="K=V", help="extra web environment (repeatable)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, S3 objects)")
    args = ap.parse_args()

    quick = args.quick
    duration = args.duration or (3.0 if quick else 10.0)
    args.rounds = max(1, args.rounds or (1 if quick else 3))
    e2e_duration = args.e2e_duration or (8.0 if quick else 60.0)
    sizes = [int(s) for s in (args.sizes or ("1024" if quick else "1024,10240")).split(",")]
    sweep = [0.5, 0.9] if quick else [0.25, 0.5, 0.75, 0.9]
    worker_env = dict(kv.split("=", 1) for kv in args.worker_env)
    web_env = dict(kv.split("=", 1) for kv in args.web_env)
    if quick:
        worker_env.setdefault("BATCH_MAX_AGE_MS", "2000")

    need_tools(("redis-server", "redis-cli", "redis-benchmark"), "apt-get install redis-server redis-tools")
    if not os.path.exists(args.oha):
        raise HarnessError("oha not found: bench/install-oha (cargo install oha --locked)")
    need_bins(args.bin_dir, ("wharf", "s3-standin", "wharf-bench-baseline"))

    started = time.time()
    work = tempfile.mkdtemp(prefix="wharf-bench-")
    svc = Services(args.bin_dir, work, args.oha)
    oha_version = subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        **run_header("bench/run"),
        "tools": {"oha": oha_version, "redis": _version(["redis-server", "--version"])},
        "mode": "quick" if quick else "default",
        "settings": {"duration_s": duration, "rounds": args.rounds, "connections": args.connections, "e2e_duration_s": e2e_duration,
                     "workers": args.workers, "worker_env": worker_env, "web_env": web_env},
        "sizes": {},
    }
    try:
        svc.start_redis()
        svc.start_s3()
        svc.start_web(web_env)
        svc.start_baseline()
        svc.redis("FLUSHALL")
        for size in sizes:
            body_file = os.path.join(work, f"body-{size}.json.gz")
            body, raw = bodies.write_gzipped(body_file, size)
            entry = {"raw_bytes": raw, "gzip_bytes": len(body)}
            # Saturation in interleaved rounds (a, wharf, then wharf, a, ...): on a shared machine
            # a single pair of phases can land in a quiet and a busy moment; the median of the
            # per-round ratios is the figure, and the round that gave it supplies the details.
            def phase(r: int, _attempt: int, target: str) -> dict:
                log(f"{size} B documents ({len(body)} B gzip): saturation round {r + 1}/{args.rounds}, {target}")
                fig = saturation(svc, target, body_file, duration, args.connections)
                log(f"  {target} {fig['throughput_rps']} req/s p99 {fig['p99_ms']} ms, "
                    f"steal {fig.get('steal_percent')} %")
                return fig

            rounds = []
            for figs, attempt in steal_checked_rounds(["baseline", "wharf"], args.rounds, phase):
                figs["attempts"] = attempt
                rounds.append(figs)
            ratios = [f["wharf"]["throughput_rps"] / f["baseline"]["throughput_rps"] if f["baseline"]["throughput_rps"] else 0.0
                      for f in rounds]
            median_round = sorted(range(len(rounds)), key=lambda i: ratios[i])[(len(rounds) - 1) // 2]
            base, wh = rounds[median_round]["baseline"], rounds[median_round]["wharf"]
            entry["baseline_saturation"] = base
            entry["wharf_saturation"] = wh
            entry["wharf_fraction_of_baseline"] = round(ratios[median_round], 3)
            entry["saturation_rounds"] = [
                {"baseline_rps": f["baseline"]["throughput_rps"], "wharf_rps": f["wharf"]["throughput_rps"],
                 "wharf_fraction_of_baseline": round(q, 3),
                 "steal_percent": [f["baseline"].get("steal_percent"), f["wharf"].get("steal_percent")],
                 "attempts": f["attempts"],
                 "baseline_cpu_s_per_1k_docs": f["baseline"]["cpu_s_per_1k_docs"],
                 "wharf_cpu_s_per_1k_docs": f["wharf"]["cpu_s_per_1k_docs"]}
                for f, q in zip(rounds, ratios)]
            log(f"  wharf / (a) per round {[round(q, 3) for q in ratios]}, median {entry['wharf_fraction_of_baseline']}")
            if size == sizes[0]:
                entry["sweep"] = {"wharf": [], "baseline": []}
                for frac in sweep:
                    for target, sat in (("wharf", wh), ("baseline", base)):
                        if quick and target == "baseline" and frac != 0.5:
                            continue
                        rate = max(10, round(sat["throughput_rps"] * frac))
                        port = svc.web_port if target == "wharf" else svc.baseline_port
                        ticks = machine_ticks()
                        fig = oha_run(svc, port, body_file, duration, args.connections, rate)
                        fig["steal_percent"] = steal_percent(ticks, machine_ticks())
                        fig["fraction_of_saturation"] = frac
                        svc.redis("FLUSHALL")
                        entry["sweep"][target].append(fig)
                        log(f"  {target} at {rate}/s: {fig['throughput_rps']} req/s p50 {fig['p50_ms']} p99 {fig['p99_ms']} p99.9 {fig['p99_9_ms']} ms")
            # Baseline (b): redis-benchmark, same command mix and sizes.
            entry["redis_benchmark"] = redis_benchmark(svc, len(body), 20000 if quick else 100000)
            log(f"  redis-benchmark {entry['redis_benchmark']}")
            result["sizes"][str(size)] = entry

        # End to end, with workers.
        size = sizes[0]
        body_file = os.path.join(work, f"body-{size}.json.gz")
        sat = result["sizes"][str(size)]["wharf_saturation"]["throughput_rps"]
        rate = max(10, round(sat * args.e2e_load))
        svc.start_workers(args.workers, worker_env)
        log(f"end to end: {args.workers} workers, {rate}/s ({args.e2e_load:.0%} of saturation) for {e2e_duration}s")
        drain = float(worker_env.get("BATCH_MAX_AGE_MS", 10000)) / 1000 + (15 if quick else 60)
        e2e = end_to_end(svc, body_file, rate, e2e_duration, args.connections, drain)
        e2e["workers"] = args.workers
        e2e["size"] = size
        result["end_to_end"] = e2e
        log(f"  submitted {e2e['accepted']} landed {e2e['landed_unique']} ({e2e['end_to_end_docs_per_s']} docs/s during load), "
            f"latency p50 {e2e['submission_to_object_s']['p50']} s, cpu/1M both {e2e['cpu_s_per_million_docs_both']} s")
        # docs/worker.md: a worker holds at most WORKER_MAX_HELD_DOCUMENTS documents and
        # WORKER_MAX_HELD_BYTES of bodies, plus one read (WORKER_FETCH_SIZE per shard) past the
        # byte bound; a held document costs its NDJSON line. The bound is that many lines.
        gzip_len = result["sizes"][str(size)]["gzip_bytes"]
        held_docs = int(worker_env.get("WORKER_MAX_HELD_DOCUMENTS", 5000))
        held_bytes = int(worker_env.get("WORKER_MAX_HELD_BYTES", 67108864))
        fetch = int(worker_env.get("WORKER_FETCH_SIZE", 500))
        docs = min(held_docs, -(-held_bytes // max(1, gzip_len)) + fetch * svc.queue_shards)
        bound = docs * _line_len(gzip_len)
        growth = max(v - e2e["rss_before_load_mb"][k] for k, v in e2e["peak_rss_mb"].items() if k.startswith("worker"))
        e2e["worker_buffer_bound_mb"] = round(bound / 2**20, 2)
        e2e["worker_rss_growth_mb"] = round(growth, 1)
    finally:
        svc.stop_all()
        close_work(result, started, work, args.keep)

    return publish(result, args.out, summary_text(result), check(result) if args.check else None,
                   "check passed: every phase produced figures", svg=os.path.splitext(args.out)[0] + ".svg")


def _line_len(gzip_len: int) -> int:
    """Approximate size of one document's NDJSON line in an open batch: base64 body plus attributes."""
    return (gzip_len + 2) // 3 * 4 + 420


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _version(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return "unknown"


def check(result: dict) -> list[str]:
    """Did the harness run and produce figures? (Never judges whether they are fast.)"""
    problems = []
    if not result.get("sizes"):
        problems.append("no size was measured")
    for size, entry in result.get("sizes", {}).items():
        for key in ("baseline_saturation", "wharf_saturation"):
            fig = entry.get(key, {})
            if not fig.get("ok") or fig.get("p99_ms") is None:
                problems.append(f"{size}: {key} has no successful requests or no p99")
        for target, figs in entry.get("sweep", {}).items():
            if not figs or any(f.get("p99_ms") is None or not f.get("ok") for f in figs):
                problems.append(f"{size}: {target} sweep produced no figures")
        rb = entry.get("redis_benchmark", {})
        if not rb.get("rpush_body_rps") or not rb.get("xadd_entry_rps"):
            problems.append(f"{size}: redis-benchmark produced no figures")
    e2e = result.get("end_to_end")
    if not e2e:
        problems.append("no end-to-end phase")
    else:
        if not e2e.get("landed_unique"):
            problems.append("end to end: nothing landed in S3")
        if e2e.get("submission_to_object_s", {}).get("p50") is None:
            problems.append("end to end: no submission-to-object latency")
        if e2e.get("cpu_s_per_million_docs_both") is None:
            problems.append("end to end: no CPU figure")
    return problems


def summary_text(r: dict) -> str:
    lines = [f"Wharf benchmark {r['date']} ({r['mode']}, {r['machine']['cores']} cores, load at start {r['machine']['loadavg_at_start'][0]:.2f})"]
    for size, e in r["sizes"].items():
        b, w = e["baseline_saturation"], e["wharf_saturation"]
        lines.append(f"  {size} B docs ({e['gzip_bytes']} B gzip): baseline (a) {b['throughput_rps']} req/s, "
                     f"wharf {w['throughput_rps']} req/s = {e['wharf_fraction_of_baseline']} of (a); "
                     f"wharf p50/p99/p99.9 {w['p50_ms']}/{w['p99_ms']}/{w['p99_9_ms']} ms; web peak RSS {w['peak_rss_mb']} MB; "
                     f"CPU s/1k docs web {w['cpu_s_per_1k_docs']} (baseline {b['cpu_s_per_1k_docs']}), redis {w['redis_cpu_s_per_1k_docs']} (baseline {b['redis_cpu_s_per_1k_docs']})")
        rb = e["redis_benchmark"]
        lines.append(f"    redis-benchmark (b): RPUSH {rb['rpush_body_rps']}/s, XADD of one entry ({rb['entry_bytes']} B) {rb['xadd_entry_rps']}/s")
        for f in e.get("sweep", {}).get("wharf", []):
            lines.append(f"    wharf at {f['offered_rps']}/s ({f['fraction_of_saturation']:.0%}): p50 {f['p50_ms']} p99 {f['p99_ms']} p99.9 {f['p99_9_ms']} ms")
    e = r.get("end_to_end")
    if e:
        lines.append(f"  end to end ({e['workers']} workers, offered {e['offered_rps']}/s): accepted {e['accepted']}, landed {e['landed_unique']} "
                     f"(dups {e['duplicates']}), {e['end_to_end_docs_per_s']} docs/s during load = {e['end_to_end_fraction_of_submission']} of accepted; "
                     f"backlog max {e['backlog']['max']}; submission->object p50 {e['submission_to_object_s']['p50']} s p99 {e['submission_to_object_s']['p99']} s")
        lines.append(f"    peak RSS MB {e['peak_rss_mb']} (before load {e['rss_before_load_mb']}; worker buffer bound {e.get('worker_buffer_bound_mb')} MB); CPU s/1k docs {e['cpu_s_per_1k_docs']}; both roles {e['cpu_s_per_million_docs_both']} CPU-s per million docs")
    return "\n".join(lines)


# ---------------------------------------------------------------- shared by the bench tools


def default_oha() -> str:
    return shutil.which("oha") or os.path.expanduser("~/.cargo/bin/oha")


class ResultArgs(argparse.ArgumentParser):
    """The parser of a tool that writes a result file: --bin-dir, --quick, --check, --out, whose
    default, bench/results/FILES[0] (--quick: FILES[1]), parse_args fills in, and with a `report`
    function --report, which parse_args answers (it prints the file through `report` and exits)."""

    def __init__(self, doc: str, bin_dir: str, quick: str, files: tuple[str, str],
                 checked: str = "every configuration produced figures", report=None,
                 bin_dir_required: bool = False, **kw):
        super().__init__(description=doc, **kw)
        self.files = files
        self.report = report
        self.add_argument("--bin-dir", required=bin_dir_required, help=bin_dir)
        if report:
            self.add_argument("--report", metavar="JSON", help="print a result file as Markdown and exit")
        self.add_argument("--quick", action="store_true", help=quick)
        self.add_argument("--check", action="store_true", help=f"exit non-zero unless {checked}")
        self.add_argument("--out", help=f"result file (default bench/results/{files[0]}; quick: "
                          f"bench/results/{files[1]}, git-ignored)")

    def parse_args(self, *a, **kw):
        args = super().parse_args(*a, **kw)
        if self.report and args.report:
            with open(args.report) as f:
                print(self.report(json.load(f)))
            sys.exit(0)
        args.out = args.out or result_path(self.files[1] if args.quick else self.files[0])
        return args


def result_path(name: str) -> str:
    """bench/results/NAME, wherever this runs from."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name)


def need_tools(tools: tuple[str, ...], hint: str = "bench/install-tools") -> None:
    for tool in tools:
        if not shutil.which(tool):
            raise HarnessError(f"{tool} not found ({hint})")


def need_bins(bin_dir: str, names: tuple[str, ...], hint: str | None = None) -> None:
    for b in names:
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise HarnessError(f"{b} not found in {bin_dir}" + (f" ({hint})" if hint else ""))


def utc_stamp(t: float | None = None) -> str:
    """`t` (default now) as the result files write times: ISO 8601, UTC, whole seconds."""
    when = datetime.datetime.now(datetime.timezone.utc) if t is None else (
        datetime.datetime.fromtimestamp(t, datetime.timezone.utc))
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def run_header(command: str) -> dict:
    """The first fields of a result file: when, the command line (`command` and this process's
    arguments) and the machine."""
    return {
        "date": utc_stamp(),
        "command": " ".join([command, *sys.argv[1:]]),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(), "loadavg_at_start": os.getloadavg(),
                    "cpu": _cpu_model()},
    }


def binary_info(path: str, **more) -> dict:
    """A result file's `binary`: the path, `more`, and the build time (the commit checked out may
    not be the one it was built from)."""
    return {"path": path, **more, "mtime": utc_stamp(os.stat(path).st_mtime)}


def git_source(paths: list[str], commit_key: str = "commit_checked_out",
               dirty_key: str = "crates_uncommitted_changes") -> dict:
    """The commit checked out, and whether `paths` had uncommitted changes (the binaries may have
    been built from them)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", *paths],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return {}
    return {commit_key: head, dirty_key: bool(dirty)}


def web_version(port: int):
    """The web's /__version__ (without VERSION_FILE: the crate version and the commit compiled in,
    which HEAD may no longer be)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/__version__")
        return json.loads(conn.getresponse().read())
    except Exception as e:  # noqa: BLE001 - informative only
        return {"error": type(e).__name__}
    finally:
        conn.close()


def steal_checked_rounds(names: list[str], rounds: int, measure_one):
    """Interleaved rounds over `names`, the order rotated every round; yields ({name: figures},
    attempt) per round. measure_one(round, attempt, name) returns one phase's figures with their
    steal_percent."""
    for r in range(rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        for attempt in (1, 2):
            figs = {name: measure_one(r, attempt, name) for name in order}
            stolen = max(f.get("steal_percent") or 0 for f in figs.values())
            if stolen <= STEAL_RETRY_PERCENT or attempt == 2:
                break
            # A phase of the round ran while other guests had the CPU: its ratios would compare a
            # starved server with a fed one. The round runs once more.
            log(f"  {stolen} % of the CPU was stolen during this round; repeating it once")
        yield figs, attempt


def interleaved_rounds(names: list[str], rounds: int, measure_one, attempt_key: str) -> dict[str, list[dict]]:
    """steal_checked_rounds, as every name's figures round by round, each with its round's attempt
    under `attempt_key`."""
    per: dict[str, list[dict]] = {name: [] for name in names}
    for figs, attempt in steal_checked_rounds(names, rounds, measure_one):
        for name in names:
            figs[name][attempt_key] = attempt
            per[name].append(figs[name])
    return per


def fmt(v, nd=0) -> str:
    """A figure in a report table: thousands separated, `nd` decimals, "-" for none."""
    return "-" if v is None else f"{v:,.{nd}f}"


@contextlib.contextmanager
def services(bin_dir: str, prefix: str, oha: str):
    """Services in a fresh work directory, for tools that keep nothing of a run: every process
    stopped and the directory removed at the end."""
    work = tempfile.mkdtemp(prefix=prefix)
    svc = Services(bin_dir, work, oha)
    try:
        yield svc
    finally:
        svc.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def close_work(result: dict, started: float, work: str, keep: bool) -> None:
    """Once every process is stopped: the run's duration, and the work directory removed unless kept."""
    result["elapsed_s"] = round(time.time() - started, 1)
    if keep:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def publish(result: dict, out: str, text: str, problems: list[str] | None, passed: str | None = None,
            svg: str | None = None) -> int:
    """Writes the result file (and its plot), prints `text`, and returns the exit code: with --check
    (`problems` not None), 1 when a phase produced no figures."""
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    wrote = out
    if svg:
        plot.write_svg(result, svg)
        wrote = f"{out} and {svg}"
    log(f"wrote {wrote} in {result['elapsed_s']} s")
    print(text)
    for p in problems or []:
        log(f"CHECK FAILED: {p}")
    if problems:
        return 1
    if problems is not None and passed:
        log(passed)
    return 0


def run_main(main, errors: tuple[type[Exception], ...] = ()) -> None:
    """Runs a bench tool's main(): exit code 2 with one line on a HarnessError (or one of `errors`,
    a client library's), 130 on Ctrl-C."""
    try:
        sys.exit(main())
    except (HarnessError, *errors) as e:
        log(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_main(main)
