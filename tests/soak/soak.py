#!/usr/bin/env python3
"""Wharf soak test: steady load through `wharf web` while web and worker are restarted over and
over, then a count of every accepted document in S3.

Run it through `tests/soak/run` (which builds the release binaries first); README.md beside this
file says what it reports. Processes are started the way bench/harness.py starts them (its
`Services` is reused), on 127.0.0.1 and free ports, and every one of them is stopped before this
exits, also on Ctrl-C, SIGTERM or an error.
"""

import argparse
import base64
import collections
import csv
import datetime
import gzip
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# harness.py is imported, not copied, so the soak starts Redis, the S3 stand-in and the roles
# exactly as the benchmark does. No .pyc files are left in bench/.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(REPO, "bench"))
import harness  # noqa: E402
from harness import HarnessError  # noqa: E402

NAMESPACE = "soak"
DOC_TYPES = ("main", "event", "metrics")
DOC_VERSION = "1"
# SIGTERM to exit: SHUTDOWN_GRACE_MS (8 s by default) plus this margin before the process is
# SIGKILLed and the stop is counted as not graceful.
EXIT_MARGIN_S = 5.0
# RSS samples of a process younger than this are in the CSV but not in the summary's min/max/last.
MIN_RSS_AGE_S = 5.0


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """SIGTERM or SIGHUP to the soak itself: treated like Ctrl-C, so the cleanup runs."""


# ---------------------------------------------------------------- load


def retry_cause(e: Exception) -> str:
    if isinstance(e, http.client.RemoteDisconnected):
        # The server closed the connection without answering: a keep-alive connection that a
        # stopping web role closed, or a request cut off by its exit.
        return "closed without answer"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, (ConnectionResetError, BrokenPipeError)):
        return "connection reset"
    if isinstance(e, TimeoutError):
        return "timeout"
    return f"other: {type(e).__name__}"


class Load:
    """Client threads that submit at a fixed overall rate and retry like Glean: the same docId and
    body until a 200 (accepted) or a 4xx (dropped)."""

    def __init__(self, port: int, rate: float, clients: int, timeout: float):
        self.port = port
        self.rate = rate
        self.clients = clients
        self.timeout = timeout
        self.stop_new = threading.Event()    # take no new documents
        self.give_up = threading.Event()     # abandon documents still being retried
        self.lock = threading.Lock()
        self.next_slot = 0.0
        self.seq = 0
        self.submitted = 0
        self.accepted: list[str] = []
        self.rejected: list[tuple[str, int, str]] = []   # (docId, status, body)
        self.abandoned: list[str] = []
        self.retries = collections.Counter()             # cause -> count
        self.attempts_to_accept = collections.Counter()  # attempts needed -> documents
        self.accept_latency: list[float] = []           # first attempt to 200, seconds
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.next_slot = time.monotonic()
        for i in range(self.clients):
            t = threading.Thread(target=self._client, args=(i,), name=f"client-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _take_slot(self):
        """The next send time of the shared schedule (open loop: a client stuck retrying does not
        slow the others, and time lost to an outage is caught up afterwards, as queued pings are)."""
        with self.lock:
            slot = self.next_slot
            self.next_slot += 1.0 / self.rate
            self.seq += 1
            return slot, self.seq

    def _client(self, index: int) -> None:
        conn = None
        rng = random.Random(index)
        while not self.stop_new.is_set():
            slot, seq = self._take_slot()
            # Waiting for the slot ends early when the load stops: a document whose time had not
            # come is never created, so "submitted" counts only what was sent.
            if self.stop_new.wait(max(0.0, slot - time.monotonic())):
                break
            with self.lock:
                self.submitted += 1
            doc_id = str(uuid.uuid4())
            doc_type = rng.choice(DOC_TYPES)
            body = json.dumps({
                "docId": doc_id, "seq": seq, "client": index,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "payload": "x" * rng.randint(20, 400),
            }).encode()
            path = f"/submit/{NAMESPACE}/{doc_type}/{DOC_VERSION}/{doc_id}"
            conn = self._deliver(conn, path, doc_id, body)
        if conn is not None:
            conn.close()

    def _deliver(self, conn, path: str, doc_id: str, body: bytes):
        """Sends one document until 200 or 4xx; returns the connection to reuse (keep-alive, as a
        client library would)."""
        first = time.monotonic()
        attempt = 0
        backoff = 0.1
        while True:
            attempt += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                conn.request("POST", path, body=body, headers={
                    "Content-Type": "application/json", "User-Agent": "wharf-soak/1.0"})
                resp = conn.getresponse()
                text = resp.read()
                status = resp.status
                if resp.will_close:
                    conn.close()
                    conn = None
                if status == 200:
                    with self.lock:
                        self.accepted.append(doc_id)
                        self.attempts_to_accept[attempt] += 1
                        self.accept_latency.append(time.monotonic() - first)
                    return conn
                if 400 <= status < 500:
                    with self.lock:
                        self.rejected.append((doc_id, status, text[:200].decode("utf-8", "replace")))
                    return conn
                cause = f"http {status}"
            except (OSError, http.client.HTTPException) as e:
                cause = retry_cause(e)
                if conn is not None:
                    conn.close()
                    conn = None
            with self.lock:
                self.retries[cause] += 1
            if self.give_up.is_set():
                with self.lock:
                    self.abandoned.append(doc_id)
                return conn
            time.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 2.0)

    def finish(self, timeout: float) -> None:
        """Stops taking new documents and lets each client finish the one it holds; after
        `timeout` the documents still being retried are abandoned (and counted)."""
        self.stop_new.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.give_up.set()
        for t in self.threads:
            t.join(self.timeout + 5)


# ---------------------------------------------------------------- roles


class Roles:
    """The current `wharf web` and `wharf worker` processes, restarted in place."""

    def __init__(self, svc: harness.Services, web_env: dict, worker_env: dict, grace_s: float):
        self.svc = svc
        self.web_env = web_env
        self.worker_env = worker_env
        self.grace_s = grace_s
        self.lock = threading.Lock()
        self.procs: dict[str, "subprocess.Popen | None"] = {"web": None, "worker": None}
        self.started_at = {"web": 0.0, "worker": 0.0}
        self.incarnation = {"web": 0, "worker": 0}
        self.web_port = harness.free_port()
        self.restarts: list[dict] = []
        self.unexpected_exits: list[dict] = []
        self.start_failures: list[dict] = []

    def env(self, role: str) -> dict:
        env = self.svc.common_env()
        # The benchmark points Sentry at a port nobody serves; here errors are read from the
        # logs instead, and a failing Sentry transport must not add to the exit times measured.
        env.pop("SENTRY_DSN", None)
        env["ENVIRONMENT"] = "soak"
        if role == "web":
            env.update({"HOST": "127.0.0.1", "PORT": str(self.web_port), "VERSION_FILE": "/nonexistent"})
            env.update(self.web_env)
        else:
            env.update({
                "S3_BUCKET": harness.BUCKET,
                "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.svc.s3_port}",
                "AWS_ACCESS_KEY_ID": harness.ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": harness.SECRET_KEY,
                "AWS_REGION": "us-east-1",
            })
            env.update(self.worker_env)
        return env

    def start(self, role: str) -> float:
        """Starts `role`; for web, waits until it listens. Returns the seconds that took."""
        t0 = time.monotonic()
        for attempt in range(1, 4):
            self.incarnation[role] += 1
            name = f"{role}-{self.incarnation[role]}"
            proc = self.svc.spawn(name, [os.path.join(self.svc.bin_dir, "wharf"), role], self.env(role))
            try:
                if role == "web":
                    harness.wait_port(self.web_port, 30, proc, name)
                with self.lock:
                    self.procs[role] = proc
                    self.started_at[role] = time.monotonic()
                return time.monotonic() - t0
            except HarnessError as e:
                # A port still held by the old process would show here; try again rather than
                # end the run, and count it.
                self.start_failures.append({"role": role, "log": f"{name}.log", "error": str(e)})
                log(f"{name} failed to start ({e}); attempt {attempt} of 3")
                self.svc.stop(proc, grace=2)
                time.sleep(1.0)
        raise HarnessError(f"{role} failed to start three times (see {role}-*.log)")

    def pid_and_age(self, role: str):
        """(pid, seconds since it started), or (None, None) while the role is being restarted."""
        with self.lock:
            proc, started = self.procs[role], self.started_at[role]
        if proc is None or proc.poll() is not None:
            return None, None
        return proc.pid, time.monotonic() - started

    def restart(self, role: str, elapsed: float) -> dict:
        with self.lock:
            proc = self.procs[role]
            self.procs[role] = None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        killed = False
        try:
            rc = proc.wait(timeout=self.grace_s + EXIT_MARGIN_S)
        except subprocess.TimeoutExpired:
            killed = True
            proc.kill()
            rc = proc.wait(timeout=10)
        exit_s = time.monotonic() - t0
        start_s = self.start(role)
        rec = {"role": role, "at_s": round(elapsed, 1), "pid": proc.pid, "exit_code": rc,
               "killed": killed, "exit_s": round(exit_s, 3), "start_s": round(start_s, 3),
               "down_s": round(exit_s + start_s, 3)}
        self.restarts.append(rec)
        return rec

    def check_alive(self, elapsed: float) -> None:
        """A role that exited without being asked is recorded and started again."""
        for role in ("web", "worker"):
            with self.lock:
                proc = self.procs[role]
            if proc is not None and proc.poll() is not None:
                name = f"{role}-{self.incarnation[role]}.log"
                last = last_messages(os.path.join(self.svc.work, name))
                rec = {"role": role, "at_s": round(elapsed, 1), "pid": proc.pid, "exit_code": proc.returncode,
                       "log": name, "last_messages": last}
                self.unexpected_exits.append(rec)
                log(f"{role} exited without being asked, exit code {proc.returncode}; its last log lines: "
                    f"{' | '.join(last)}; starting it again")
                with self.lock:
                    self.procs[role] = None
                self.start(role)


def last_messages(path: str, n: int = 3) -> list[str]:
    """The last `n` log messages of a process other than request summaries: why it stopped (a
    "stop signal received" here means a signal sent by something other than the soak)."""
    found = []
    try:
        with open(path, errors="replace") as f:
            lines = f.readlines()[-200:]
    except OSError:
        return found
    for line in reversed(lines):
        if '"request.summary"' in line:
            continue
        try:
            found.append(json.loads(line).get("Fields", {}).get("msg", line.strip()))
        except ValueError:
            found.append(line.strip()[:200])
        if len(found) == n:
            break
    return list(reversed(found))


# ---------------------------------------------------------------- sampling


def rss_kb(pid):
    if pid is None:
        return None
    try:
        return harness.status_field(pid, "VmRSS")
    except OSError:
        return None


def redis_figures(svc: harness.Services) -> dict:
    """Backlog (waiting + in flight), dead letters and Redis memory, in one redis-cli call."""
    shards = svc.shards()
    cmds = [f"XLEN wharf:{{{n}}}:submissions" for n in shards]
    cmds += [f"XLEN wharf:{{{n}}}:dead" for n in shards]
    cmds += ["INFO memory"]
    out = subprocess.run(["redis-cli", "-p", str(svc.redis_port)], input="\n".join(cmds) + "\n",
                         capture_output=True, text=True, timeout=10).stdout.splitlines()
    nums = [int(x) for x in out[:2 * len(shards)]]
    used = next((int(line.split(":")[1]) for line in out if line.startswith("used_memory:")), None)
    return {"backlog": sum(nums[:len(shards)]), "dead": sum(nums[len(shards):]), "redis_used_memory": used}


class Sampler:
    """RSS of web and worker (and the queue's size) every `every` seconds, into a CSV."""

    FIELDS = ["time_utc", "elapsed_s", "web_pid", "web_age_s", "web_rss_mb", "worker_pid", "worker_age_s",
              "worker_rss_mb", "redis_used_memory_mb", "backlog", "accepted"]

    def __init__(self, roles: Roles, load: Load, svc: harness.Services, every: float, path: str, t0: float):
        self.roles, self.load, self.svc, self.every, self.path, self.t0 = roles, load, svc, every, path, t0
        self.rows: list[dict] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def sample(self) -> dict:
        row = {"time_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "elapsed_s": round(time.monotonic() - self.t0, 1)}
        for role in ("web", "worker"):
            pid, age = self.roles.pid_and_age(role)
            kb = rss_kb(pid)
            row[f"{role}_pid"] = pid if kb is not None else ""
            row[f"{role}_age_s"] = round(age, 1) if kb is not None else ""
            row[f"{role}_rss_mb"] = round(kb / 1024, 1) if kb is not None else ""
        try:
            r = redis_figures(self.svc)
            row["redis_used_memory_mb"] = round(r["redis_used_memory"] / 2**20, 1) if r["redis_used_memory"] else ""
            row["backlog"] = r["backlog"]
        except (OSError, ValueError, subprocess.SubprocessError):
            row["redis_used_memory_mb"] = row["backlog"] = ""
        row["accepted"] = len(self.load.accepted)
        self.rows.append(row)
        with open(self.path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.FIELDS)
            if f.tell() == 0:
                w.writeheader()
            w.writerow(row)
        return row

    def _run(self) -> None:
        while not self.stop.wait(self.every - (time.monotonic() - self.t0) % self.every):
            self.sample()


# ---------------------------------------------------------------- S3


class Landed:
    """Every line of every object in the stand-in's bucket directory (s3s-fs stores a key as a
    path under root/bucket and writes through a temporary file renamed into place, so an object
    seen is complete). Objects are cached by (size, mtime): a retried upload of the same batch
    overwrites the same key and is read again."""

    def __init__(self, root: str):
        self.root = root
        self.objects: dict[str, tuple[tuple, list]] = {}

    def scan(self) -> None:
        seen = set()
        for dirpath, _, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".ndjson.gz"):
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                except FileNotFoundError:
                    continue
                seen.add(path)
                key = (st.st_size, st.st_mtime_ns)
                cached = self.objects.get(path)
                if cached and cached[0] == key:
                    continue
                lines = []
                with gzip.open(path, "rt") as f:
                    for line in f:
                        if line.strip():
                            lines.append(_parse_line(line))
                self.objects[path] = (key, lines)
        for gone in set(self.objects) - seen:
            del self.objects[gone]

    def counts(self) -> tuple[collections.Counter, int]:
        """(lines per docId, lines whose body does not carry the docId of their URI)."""
        per_doc = collections.Counter()
        mismatched = 0
        for _, lines in self.objects.values():
            for doc_id, ok in lines:
                per_doc[doc_id] += 1
                mismatched += 0 if ok else 1
        return per_doc, mismatched


def _parse_line(line: str) -> tuple[str, bool]:
    """(docId from the `uri` attribute, whether the stored body is the one sent for it)."""
    rec = json.loads(line)
    doc_id = rec["attributes"]["uri"].rsplit("/", 1)[-1]
    try:
        ok = json.loads(base64.b64decode(rec["data"]))["docId"] == doc_id
    except (ValueError, KeyError, TypeError):
        ok = False
    return doc_id, ok


# ---------------------------------------------------------------- logs


def scan_logs(work: str) -> dict:
    """Error (Severity <= 3) and warning (4) lines of every web and worker incarnation, grouped
    by role, severity, Type and message; plus any line that is not MozLog JSON."""
    groups = collections.Counter()
    other = collections.Counter()
    for name in sorted(os.listdir(work)):
        if not name.endswith(".log") or not name.startswith(("web-", "worker-")):
            continue
        role = name.split("-", 1)[0]
        with open(os.path.join(work, name), errors="replace") as f:
            for line in f:
                if not line.startswith("{"):
                    if line.strip():
                        other[(role, line.strip()[:160])] += 1
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    other[(role, line.strip()[:160])] += 1
                    continue
                sev = rec.get("Severity", 6)
                if sev > 4:
                    continue
                fields = rec.get("Fields", {})
                msg = fields.get("msg") or fields.get("message") or ""
                groups[(role, "error" if sev <= 3 else "warning", rec.get("Type", ""), str(msg)[:160])] += 1
    return {
        "groups": [{"role": r, "severity": s, "type": t, "msg": m, "count": n}
                   for (r, s, t, m), n in groups.most_common()],
        "non_json": [{"role": r, "line": l, "count": n} for (r, l), n in other.most_common(20)],
    }


# ---------------------------------------------------------------- report


def percentile(values: list[float], q: float):
    return harness.percentile(sorted(values), q)


def minmax_last(values: list[float]):
    vals = [v for v in values if v != ""]
    return (min(vals), max(vals), vals[-1]) if vals else (None, None, None)


def fmt_s(values: list[float]) -> str:
    if not values:
        return "-"
    v = sorted(values)
    return f"{v[0]:.2f} / {percentile(v, 0.5):.2f} / {v[-1]:.2f}"


def markdown(s: dict) -> str:
    rows = [
        ("load", f"{s['load']['minutes_run']} min at {s['settings']['rate']}/s offered, "
                 f"{s['settings']['clients']} clients"),
        ("submitted (distinct docIds)", s["load"]["submitted"]),
        ("accepted (200)", s["accepted"]),
        ("landed (distinct docIds)", f"{s['landed']} ({s['landed_lines']} lines in {s['objects']} objects)"),
        ("**lost** (accepted, never landed)", f"**{s['lost']}**"),
        ("duplicated (lines beyond the first per docId)",
         f"{s['duplicated']} ({s['duplicated_docids']} docIds)" if s["duplicated"] else 0),
        ("landed but never answered 200",
         f"{s['landed_not_accepted']} ({', '.join(f'{k}: {v}' for k, v in s['landed_not_accepted_breakdown'].items())})"
         if s["landed_not_accepted"] else 0),
        ("abandoned at the end (still being retried)", s["load"]["abandoned"]),
        ("**4xx**", f"**{s['load']['rejected_4xx']}**"),
        ("bodies not matching their docId", s["mismatched_bodies"]),
        ("retries", s["load"]["retries_total"]),
    ]
    for cause, n in sorted(s["load"]["retries"].items(), key=lambda kv: -kv[1]):
        rows.append((f"&nbsp;&nbsp;retries: {cause}", n))
    rows.append(("documents needing more than one attempt", s["load"]["accepted_after_retry"]))
    lat = s["load"]["time_to_accept_s"]
    rows.append(("time to 200, p50 / p99 / max (s)", f"{lat['p50']} / {lat['p99']} / {lat['max']}"))
    for role in ("web", "worker"):
        r = s["restarts"][role]
        codes = ", ".join(f"exit {c}: {n}" for c, n in sorted(r["exit_codes"].items())) or "-"
        rows.append((f"restarts: {role}", f"{r['count']} ({codes}; SIGKILLed {r['killed']})"))
        rows.append((f"&nbsp;&nbsp;{role} SIGTERM to exit, min / median / max (s)", r["exit_s"]))
        if role == "web":
            rows.append(("&nbsp;&nbsp;web SIGTERM to listening again, min / median / max (s)", r["down_s"]))
    rows.append(("unexpected exits", "; ".join(
        f"{u['role']} at {u['at_s']} s, exit {u['exit_code']}: {' / '.join(u['last_messages'])}"
        for u in s["unexpected_exits"]) or 0))
    for role in ("web", "worker"):
        m = s["rss_mb"][role]
        rows.append((f"RSS {role} MB, min / max / last (longest-lived process: {m['oldest_process_s']} s)",
                     f"{m['min']} / {m['max']} / {m['last']}"))
    rows.append(("Redis used_memory MB, min / max / last", " / ".join(str(x) for x in s["redis_used_memory_mb"].values())))
    rows.append(("backlog max (entries)", s["backlog_max"]))
    rows.append(("drain after load (s)", s["drain_s"]))
    rows.append(("dead letters at end", s["dead_letters"]))
    rows.append(("consumers registered in a shard's group at the end", s["group_consumers"]))
    rows.append(("log lines: errors / warnings", f"web {s['logs']['web_errors']} / {s['logs']['web_warnings']}, "
                                                f"worker {s['logs']['worker_errors']} / {s['logs']['worker_warnings']}"))
    out = [f"# Wharf soak {s['date']}", "",
           f"`{s['command']}` on checkout {s['commit']}, binaries `{s['bin_dir']}` "
           f"(version {s['wharf_version'].get('version')}, commit {s['wharf_version'].get('commit')}), "
           f"{s['machine']['cores']} cores. Result: **{'PASS' if not s['failures'] else 'FAIL'}**"
           + ("" if not s["failures"] else " (" + "; ".join(s["failures"]) + ")"), "",
           "| measure | value |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in rows]
    if s["logs"]["groups"]:
        out += ["", "Error and warning log lines (role, severity, type, message: count):", ""]
        out += [f"- {g['role']} {g['severity']} `{g['type']}` {g['msg']}: {g['count']}" for g in s["logs"]["groups"][:20]]
    if s["logs"]["non_json"]:
        out += ["", "Lines that are not MozLog JSON (stderr):", ""]
        out += [f"- {g['role']}: `{g['line']}` x{g['count']}" for g in s["logs"]["non_json"]]
    return "\n".join(out) + "\n"


def redis_group_consumers(svc: harness.Services) -> int:
    """Consumers registered in the busiest shard's group (every worker joins every shard's)."""
    most = 0
    for n in svc.shards():
        out = subprocess.run(["redis-cli", "-p", str(svc.redis_port), "XINFO", "GROUPS", f"wharf:{{{n}}}:submissions"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        for i, word in enumerate(out[:-1]):
            if word == "consumers":
                most = max(most, int(out[i + 1]))
    return most


def web_version(port: int) -> dict:
    """The web role's /__version__ (with no VERSION_FILE: the crate version and the commit it was
    built from), so a result names the binaries it measured, not only the checkout."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/__version__")
        data = json.loads(conn.getresponse().read())
        conn.close()
        return data
    except (OSError, ValueError, http.client.HTTPException) as e:
        return {"error": str(e)}


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "") if head else "unknown"
    except OSError:
        return "unknown"


# ---------------------------------------------------------------- main


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True, help="directory holding wharf and s3-standin")
    ap.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    ap.add_argument("--rate", type=float, default=100.0, help="documents per second offered (default 100)")
    ap.add_argument("--clients", type=int, default=8, help="client threads sharing the rate (default 8)")
    ap.add_argument("--restart-every", type=float, default=20.0,
                    help="seconds between restarts, web and worker in turn (default 20; 0: never)")
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    ap.add_argument("--batch-max-age-ms", type=int, default=1000, help="the worker's BATCH_MAX_AGE_MS (default 1000)")
    ap.add_argument("--drain-timeout", type=float, default=180.0,
                    help="seconds allowed after the load for everything accepted to land (default 180)")
    ap.add_argument("--client-timeout", type=float, default=10.0, help="HTTP timeout of one attempt (default 10 s)")
    ap.add_argument("--web-env", action="append", default=[], metavar="K=V", help="extra web environment (repeatable)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="K=V", help="extra worker environment (repeatable)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"), help="results directory (default tests/soak/results)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, S3 objects) even on success")
    ap.add_argument("--command", default=None, help=argparse.SUPPRESS)
    return ap.parse_args()


def run_load(args, svc: harness.Services, roles: Roles, load: Load, sampler: "Sampler") -> float:
    """Load, restarts and sampling for --minutes; returns the load's duration in seconds."""
    t0 = sampler.t0
    sampler.sample()
    sampler.thread.start()
    load.start()
    end = t0 + args.minutes * 60
    next_restart = t0 + args.restart_every if args.restart_every > 0 else float("inf")
    next_role = "web"
    next_progress = t0 + 60
    while time.monotonic() < end:
        time.sleep(min(0.5, max(0.0, end - time.monotonic())))
        now = time.monotonic()
        roles.check_alive(now - t0)
        if next_restart <= now < end:
            rec = roles.restart(next_role, now - t0)
            log(f"restarted {next_role}: exit {rec['exit_code']} after {rec['exit_s']} s"
                f"{' (SIGKILLed)' if rec['killed'] else ''}, up again after {rec['down_s']} s")
            next_role = "worker" if next_role == "web" else "web"
            next_restart = time.monotonic() + args.restart_every
        if now >= next_progress:
            last = sampler.rows[-1] if sampler.rows else {}
            log(f"{(now - t0) / 60:.1f} min: accepted {len(load.accepted)}, retries {sum(load.retries.values())}, "
                f"4xx {len(load.rejected)}, restarts {len(roles.restarts)}, backlog {last.get('backlog')}, "
                f"rss web {last.get('web_rss_mb')} worker {last.get('worker_rss_mb')} MB")
            next_progress += 60
    duration = time.monotonic() - t0
    # Both roles are up here: a restart always completes before the loop ends.
    log("load stopped; letting clients finish their last documents")
    load.finish(timeout=60)
    roles.check_alive(time.monotonic() - t0)
    return duration


def drain(svc: harness.Services, landed: Landed, accepted: set, timeout: float) -> float:
    """Waits until the queue is empty and every accepted docId is in S3, or `timeout`; returns
    the seconds waited."""
    log(f"draining: {len(accepted)} accepted; waiting up to {timeout} s for all of them in S3")
    start = time.monotonic()
    empty_since = None
    while True:
        figs = redis_figures(svc)
        if figs["backlog"] == 0:
            # An entry leaves the backlog only once its object is written, so an empty queue
            # with documents still missing from S3 will not improve: give it a few seconds (for a
            # scan racing an upload) rather than the whole deadline.
            empty_since = empty_since or time.monotonic()
            landed.scan()
            missing = len(accepted - landed.counts()[0].keys())
            if missing == 0:
                break
            if time.monotonic() - empty_since > 15:
                log(f"queue empty for 15 s and {missing} accepted documents not in S3")
                break
        else:
            empty_since = None
        if time.monotonic() - start >= timeout:
            log(f"drain deadline reached: backlog {figs['backlog']}")
            break
        time.sleep(1.0)
    return time.monotonic() - start


def summarize(args, stamp: str, version: dict, svc: harness.Services, roles: Roles, load: Load,
              sampler: "Sampler", landed: Landed, load_s: float, drain_s: float) -> dict:
    landed.scan()
    per_doc, mismatched = landed.counts()
    figs = redis_figures(svc)
    accepted = set(load.accepted)
    lost = sorted(accepted - per_doc.keys())
    not_accepted = set(per_doc) - accepted
    abandoned = set(load.abandoned)
    rejected_ids = {d for d, _, _ in load.rejected}
    logs = scan_logs(svc.work)
    rows = sampler.rows

    def restart_stats(role):
        recs = [r for r in roles.restarts if r["role"] == role]
        return {"count": len(recs),
                "exit_codes": dict(collections.Counter(str(r["exit_code"]) for r in recs)),
                "killed": sum(r["killed"] for r in recs),
                "exit_s": fmt_s([r["exit_s"] for r in recs]),
                "down_s": fmt_s([r["down_s"] for r in recs])}

    def rss_stats(role):
        # A process sampled in its first seconds has not loaded its working set yet; counting it
        # would make every restart look like the minimum.
        ages = [r[f"{role}_age_s"] for r in rows if r[f"{role}_age_s"] != ""]
        lo, hi, last = minmax_last([r[f"{role}_rss_mb"] for r in rows
                                    if r[f"{role}_age_s"] != "" and r[f"{role}_age_s"] >= MIN_RSS_AGE_S])
        return {"min": lo, "max": hi, "last": last, "oldest_process_s": max(ages, default=None)}

    def log_count(role, sev):
        return sum(g["count"] for g in logs["groups"] if g["role"] == role and g["severity"] == sev)

    lat = load.accept_latency
    bin_dir = os.path.abspath(args.bin_dir)
    summary = {
        "date": stamp,
        "command": args.command or " ".join(["tests/soak/run", *sys.argv[1:]]),
        "commit": git_commit(),
        "wharf_version": version,
        "bin_dir": os.path.relpath(bin_dir, REPO) if bin_dir.startswith(REPO + os.sep) else bin_dir,
        "machine": {"cores": os.cpu_count(), "loadavg_at_end": os.getloadavg()},
        "settings": {"minutes": args.minutes, "rate": args.rate, "clients": args.clients,
                     "restart_every_s": args.restart_every, "sample_every_s": args.sample_every,
                     "web_env": roles.web_env, "worker_env": roles.worker_env,
                     "redis": "no persistence (never restarted)"},
        "load": {
            "minutes_run": round(load_s / 60, 2),
            "submitted": load.submitted,
            "rejected_4xx": len(load.rejected),
            "rejected_examples": load.rejected[:10],
            "abandoned": len(abandoned),
            "retries_total": sum(load.retries.values()),
            "retries": dict(load.retries),
            "attempts_to_accept": {str(k): v for k, v in sorted(load.attempts_to_accept.items())},
            "accepted_after_retry": sum(v for k, v in load.attempts_to_accept.items() if k > 1),
            "time_to_accept_s": {"p50": _r(percentile(lat, 0.5)), "p99": _r(percentile(lat, 0.99)),
                                 "max": _r(max(lat) if lat else None)},
        },
        "accepted": len(accepted),
        "landed": len(per_doc),
        "landed_lines": sum(per_doc.values()),
        "objects": len(landed.objects),
        "lost": len(lost),
        "lost_examples": lost[:20],
        "duplicated": sum(n - 1 for n in per_doc.values() if n > 1),
        "duplicated_docids": sum(1 for n in per_doc.values() if n > 1),
        "landed_not_accepted": len(not_accepted),
        "landed_not_accepted_breakdown": {
            "abandoned_at_end": len(not_accepted & abandoned),
            "answered_4xx": len(not_accepted & rejected_ids),
            "other": len(not_accepted - abandoned - rejected_ids),
        },
        "mismatched_bodies": mismatched,
        "restarts": {"web": restart_stats("web"), "worker": restart_stats("worker"), "each": roles.restarts},
        "unexpected_exits": roles.unexpected_exits,
        "start_failures": roles.start_failures,
        "rss_mb": {"web": rss_stats("web"), "worker": rss_stats("worker")},
        "redis_used_memory_mb": dict(zip(("min", "max", "last"),
                                         minmax_last([r["redis_used_memory_mb"] for r in rows]))),
        "backlog_max": max((r["backlog"] for r in rows if r["backlog"] != ""), default=None),
        "drain_s": round(drain_s, 1),
        "backlog_at_end": figs["backlog"],
        "dead_letters": figs["dead"],
        "group_consumers": redis_group_consumers(svc),
        "logs": {"web_errors": log_count("web", "error"), "web_warnings": log_count("web", "warning"),
                 "worker_errors": log_count("worker", "error"), "worker_warnings": log_count("worker", "warning"),
                 "groups": logs["groups"], "non_json": logs["non_json"]},
        "rss_csv": os.path.basename(sampler.path),
    }
    summary["failures"] = failures(summary)
    return summary


def failures(s: dict) -> list[str]:
    found = []
    if s["lost"]:
        found.append(f"{s['lost']} accepted documents lost")
    if s["load"]["rejected_4xx"]:
        found.append(f"{s['load']['rejected_4xx']} answered 4xx")
    if s["mismatched_bodies"]:
        found.append(f"{s['mismatched_bodies']} stored bodies do not match their docId")
    if s["unexpected_exits"]:
        found.append(f"{len(s['unexpected_exits'])} unexpected exits")
    unclean = [r for r in s["restarts"]["each"] if r["killed"] or r["exit_code"] != 0]
    if unclean:
        found.append(f"{len(unclean)} stops not graceful (SIGKILLed or exit code not 0)")
    return found


def main() -> int:
    args = parse_args()
    harness.need_tools(("redis-server", "redis-cli"), "apt-get install redis-server redis-tools")
    harness.need_bins(args.bin_dir, ("wharf", "s3-standin"))

    web_env = dict(kv.split("=", 1) for kv in args.web_env)
    worker_env = {"BATCH_MAX_AGE_MS": str(args.batch_max_age_ms)}
    worker_env.update(dict(kv.split("=", 1) for kv in args.worker_env))
    grace_s = max(int(env.get("SHUTDOWN_GRACE_MS", 8000)) for env in (web_env, worker_env)) / 1000

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(args.results, exist_ok=True)
    base = os.path.join(args.results, stamp)
    work = tempfile.mkdtemp(prefix="wharf-soak-")
    log(f"work directory {work}; results {base}-*")

    svc = harness.Services(args.bin_dir, work, None)
    roles = Roles(svc, web_env, worker_env, grace_s)
    load = Load(roles.web_port, args.rate, args.clients, args.client_timeout)
    sampler = None
    summary = None
    started = time.monotonic()

    def interrupted(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    # A shell starting this in the background (no job control) makes it ignore SIGINT; Ctrl-C
    # or `kill -INT` must still stop everything it started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        svc.start_redis()
        svc.start_s3()
        roles.start("web")
        roles.start("worker")
        log(f"redis :{svc.redis_port}, s3-standin :{svc.s3_port}, web :{roles.web_port}, worker started; "
            f"{args.rate}/s for {args.minutes} min, restart every {args.restart_every or 'never'} s")
        version = web_version(roles.web_port)
        sampler = Sampler(roles, load, svc, args.sample_every, base + "-rss.csv", time.monotonic())
        load_s = run_load(args, svc, roles, load, sampler)
        landed = Landed(os.path.join(work, "s3", harness.BUCKET))
        drain_s = drain(svc, landed, set(load.accepted), args.drain_timeout)
        sampler.stop.set()
        sampler.thread.join(5)
        sampler.sample()
        summary = summarize(args, stamp, version, svc, roles, load, sampler, landed, load_s, drain_s)
        with open(os.path.join(work, "accepted.txt"), "w") as f:
            f.write("\n".join(load.accepted) + "\n")
    except KeyboardInterrupt:
        log("interrupted (Ctrl-C); stopping everything")
        return 130
    except Interrupted as e:
        log(f"interrupted ({e}); stopping everything")
        return 143
    finally:
        load.stop_new.set()
        load.give_up.set()
        if sampler is not None:
            sampler.stop.set()
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        svc.stop_all()
        svc.statsd.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        keep = args.keep or summary is None or bool(summary["failures"])
        if keep:
            log(f"work directory kept: {work} (role logs, S3 objects{', accepted.txt' if summary else ''})")
        else:
            shutil.rmtree(work, ignore_errors=True)

    summary["elapsed_s"] = round(time.monotonic() - started, 1)
    if keep:
        summary["work_dir"] = work
    table = markdown(summary)
    with open(base + "-summary.md", "w") as f:
        f.write(table)
    with open(base + ".json", "w") as f:
        json.dump(summary, f, indent=2)
    print(table)
    log(f"wrote {base}-summary.md, {base}.json, {sampler.path}")
    if summary["failures"]:
        log("FAIL: " + "; ".join(summary["failures"]))
        return 1
    return 0


def _r(v):
    return None if v is None else round(v, 3)


if __name__ == "__main__":
    harness.run_main(main)
