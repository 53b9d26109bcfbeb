#!/usr/bin/env python3
"""What two worker options cost: the docId ledger (DEDUP_WINDOW_MS) and the output compression
(OUTPUT_COMPRESSION), each against a baseline measured in the same run.

    bench/run --worker-options                  # default, about 3 minutes on 2 cores
                                                # -> bench/results/worker-options-latest.json
    bench/run --worker-options --quick --check  # smoke run, about 10 s -> bench/results/quick.worker-options.json
    python3 bench/worker_options.py --bin-dir target/release [--docs 100000] [--rounds 5]
    python3 bench/worker_options.py --report bench/results/worker-options-latest.json

One backlog of --docs distinct Glean-like JSON documents (about 1 KB each, gzip-compressed as
Glean clients send them, each with its own docId) is submitted once through a real `wharf web`
into the shard streams, then set aside in Redis database 1. Each phase copies it back into
database 0 (`COPY ... DB 0`) and starts one `wharf worker` (against the s3-standin S3 server),
which consumes it; the phase ends when every shard stream is empty (an entry is deleted with its
acknowledgement, after its object is written). Configurations, interleaved in --rounds rounds
with the order rotated:

  gzip-no-ledger   DEDUP_WINDOW_MS=0, OUTPUT_COMPRESSION=gzip: the baseline of both comparisons
  gzip-ledger      DEDUP_WINDOW_MS=3600000 (the shipped default), gzip: the ledger's cost
  zstd-no-ledger   DEDUP_WINDOW_MS=0, OUTPUT_COMPRESSION=zstd: zstd against gzip

In these rounds the worker may hold the whole backlog (WORKER_MAX_HELD_DOCUMENTS and _BYTES
above it), so batches close at 1,000 documents as they do under live traffic. With the shipped
budget (5,000 documents) a worker draining a deeper backlog flushes its biggest open batch
whenever the budget is full; once uploads lag (the ledger's admission, a slow S3) that batch
holds a document or two and stays that small. --shipped-held-rounds (default 1) measures
gzip-no-ledger and gzip-ledger that way too, reported apart.

Per phase: Redis CPU (`INFO cpu`, used_cpu_sys + used_cpu_user), worker CPU (/proc/PID/stat) and
s3-standin CPU, per document; drain time; CPU steal and the CPU other processes used meanwhile;
`used_memory` before and after; the ledger's keys (`wharf:{*}:landed:*`: their count, `MEMORY
USAGE` of a sample, their TTL, and `used_memory` before and after deleting them all); the objects'
count and bytes, their decompressed NDJSON bytes, and their lines and unique docIds. Between
phases the worker is stopped, database 0 flushed and the objects deleted. BATCH_MAX_AGE_MS is
1000 for every configuration, so that the last, partial batch does not stretch the drain by 10 s.
"""

import argparse
import datetime
import gzip
import http.client
import json
import multiprocessing
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cluster  # noqa: E402
import harness  # noqa: E402
from harness import HarnessError, log  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASELINE = "gzip-no-ledger"
WINDOW_MS = "3600000"
CONFIGS = {
    BASELINE: ({"DEDUP_WINDOW_MS": "0", "OUTPUT_COMPRESSION": "gzip"}, "no ledger, gzip (baseline)"),
    "gzip-ledger": ({"DEDUP_WINDOW_MS": WINDOW_MS, "OUTPUT_COMPRESSION": "gzip"},
                    "docId ledger on (shipped default window), gzip"),
    "zstd-no-ledger": ({"DEDUP_WINDOW_MS": "0", "OUTPUT_COMPRESSION": "zstd"}, "no ledger, zstd level 3"),
}
LEDGER_PATTERN = "wharf:{*}:landed:*"
NAMESPACE, DOC_TYPE, DOC_VERSION = "org-mozilla-fenix", "metrics", "1"


# ---------------------------------------------------------------- a small Redis client


class RespError(Exception):
    pass


class Resp:
    """One RESP connection to redis-server: commands and pipelines without a redis-cli process
    per call (polling the backlog every 50 ms must not compete with the worker for the cores)."""

    def __init__(self, port: int, db: int = 0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")
        if db:
            self.call("SELECT", str(db))

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    @staticmethod
    def _encode(args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _read(self):
        line = self.file.readline()
        if not line:
            raise HarnessError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise HarnessError(f"unexpected RESP reply {line[:40]!r}")

    def pipeline(self, commands: list, chunk: int = 1000) -> list:
        replies = []
        for i in range(0, len(commands), chunk):
            part = commands[i:i + chunk]
            self.sock.sendall(b"".join(self._encode(c) for c in part))
            replies.extend(self._read() for _ in part)
        for r in replies:
            if isinstance(r, RespError):
                raise HarnessError(f"redis: {r}")
        return replies

    def call(self, *args):
        return self.pipeline([args])[0]

    def info(self, section: str) -> dict:
        return cluster.info_fields(self.call("INFO", section).decode())

    def scan(self, pattern: str) -> list[bytes]:
        keys, cursor = [], b"0"
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", "1000")
            keys.extend(batch)
            if cursor == b"0":
                return keys


# ---------------------------------------------------------------- a slower S3


def delaying_proxy(target_port: int, delay_s: float) -> int:
    """A TCP proxy in front of s3-standin that holds every chunk of its answers for delay_s:
    each S3 request (one small answer) takes that much longer, as against a distant S3. Runs in
    a daemon thread for the life of this script; returns its port."""
    import asyncio

    port = harness.free_port()
    ready = threading.Event()

    async def pipe(reader, writer, delay):
        try:
            while data := await reader.read(65536):
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def handle(client_r, client_w):
        server_r, server_w = await asyncio.open_connection("127.0.0.1", target_port)
        await asyncio.gather(pipe(client_r, server_w, 0), pipe(server_r, client_w, delay_s))

    async def serve():
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        async with server:
            await server.serve_forever()

    threading.Thread(target=lambda: asyncio.run(serve()), daemon=True).start()
    if not ready.wait(10):
        raise HarnessError("the S3 delaying proxy did not start")
    return port


# ---------------------------------------------------------------- documents


def glean_document(target_bytes: int, seed: int) -> bytes:
    """A Glean `metrics` ping of about `target_bytes` bytes (never less): ping_info, client_info,
    then metrics of the usual types until the size is reached. Every seed gives other values."""
    rng = random.Random(seed)

    def uid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    day = rng.randint(1, 28)
    doc = {
        "ping_info": {
            "seq": rng.randint(0, 4000),
            "start_time": f"2026-11-{day:02d}T0{rng.randint(0, 9)}:{rng.randint(10, 59)}:00.000-05:00",
            "end_time": f"2026-11-{day:02d}T1{rng.randint(0, 9)}:{rng.randint(10, 59)}:00.000-05:00",
            "reason": rng.choice(["overdue", "today", "reschedule", "upgrade"]),
            "experiments": {rng.choice(["new-onboarding", "homepage-layout", "search-bar-bottom"]):
                            {"branch": rng.choice(["control", "treatment-a", "treatment-b"]),
                             "extra": {"type": "nimbus-nimbus", "enrollment_id": uid()}}},
        },
        "client_info": {
            "telemetry_sdk_build": "64.0.0",
            "client_id": uid(),
            "first_run_date": f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}-05:00",
            "os": "Android",
            "os_version": rng.choice(["12", "13", "14", "15"]),
            "android_sdk_version": rng.choice(["31", "33", "34", "35"]),
            "device_manufacturer": rng.choice(["Google", "samsung", "motorola", "OnePlus", "Xiaomi"]),
            "device_model": rng.choice(["Pixel 7", "SM-S911B", "moto g power", "CPH2447", "22101316G"]),
            "architecture": rng.choice(["arm64-v8a", "armeabi-v7a"]),
            "locale": rng.choice(["en-US", "de-DE", "fr-FR", "es-ES", "pt-BR", "ja-JP"]),
            "app_build": str(rng.randint(2015900000, 2016100000)),
            "app_display_version": rng.choice(["132.0.1", "132.0", "133.0b4"]),
            "app_channel": "release",
        },
        "metrics": {
            "boolean": {"metrics.default_browser": rng.random() < 0.4,
                        "preferences.remote_debugging_enabled": False},
            "string": {"metrics.distribution_id": rng.choice(["Mozilla", "vivo-001", "dt-001"]),
                       "search.default_engine.code": rng.choice(["google-b-m", "ddg", "bing", "ecosia"])},
            "counter": {},
            "quantity": {"metrics.tabs_open_count": rng.randint(0, 300)},
            "labeled_counter": {"metrics.search_count": {}},
            "timing_distribution": {},
        },
    }
    size = len(json.dumps(doc, separators=(",", ":")))
    counters = ["events.total_uri_count", "metrics.bookmarks_count", "metrics.top_sites_count",
                "browser.tabs_opened", "media.play_count", "logins.saved_count", "downloads.completed"]
    timings = ["performance.time_to_load", "engine.tab_kill", "geckoview.page_load_time",
               "perf.startup.cold_view_app_to_first_frame", "network.tls_handshake", "gfx.composite_time"]
    i = 0
    while size < target_bytes:
        if i % 3 == 2:
            name = f"{timings[i % len(timings)]}_{i // 3}"
            values = {str(int(1.3 ** b * 1000)): rng.randint(1, 40) for b in range(rng.randint(3, 9))}
            add = {"sum": rng.randint(10 ** 6, 10 ** 9), "values": values}
            doc["metrics"]["timing_distribution"][name] = add
        elif i % 3 == 1:
            name = rng.choice(["google-b-m.urlbar", "ddg.action", "bing.suggestion", "ecosia.widget"]) + f".{i}"
            add = rng.randint(1, 80)
            doc["metrics"]["labeled_counter"]["metrics.search_count"][name] = add
        else:
            name = f"{counters[i % len(counters)]}_{i // 3}"
            add = rng.randint(1, 5000)
            doc["metrics"]["counter"][name] = add
        size += len(json.dumps({name: add}, separators=(",", ":")))  # an upper bound, about
        i += 1
    return json.dumps(doc, separators=(",", ":")).encode()


def _one(args: tuple) -> tuple[str, bytes, int]:
    i, target_bytes, body_encoding = args
    raw = glean_document(target_bytes, seed=i)
    body = gzip.compress(raw, compresslevel=6, mtime=0) if body_encoding == "gzip" else raw
    doc_id = str(uuid.UUID(int=random.Random(f"docId {i}").getrandbits(128), version=4))
    return doc_id, body, len(raw)


def make_backlog(n: int, target_bytes: int, body_encoding: str) -> list[tuple[str, bytes, int]]:
    """n (docId, body, JSON bytes), each document distinct, bodies gzip-compressed (level 6, as
    the Glean SDK's flate2 default) unless body_encoding is identity. On every core: about 0.5 ms
    a document on one."""
    with multiprocessing.Pool(os.cpu_count() or 1) as pool:
        return pool.map(_one, [(i, target_bytes, body_encoding) for i in range(n)], chunksize=1000)


def web_version(port: int) -> dict:
    """The web's /__version__ (without VERSION_FILE: the crate version and the commit compiled in)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/__version__")
        return json.loads(conn.getresponse().read())
    except Exception as e:  # noqa: BLE001 - informative only
        return {"error": type(e).__name__}
    finally:
        conn.close()


def submit_all(port: int, docs: list, body_encoding: str, threads: int = 4) -> dict:
    """POSTs every document to wharf web (keep-alive connections, `threads` at a time)."""
    headers = {"Content-Type": "application/json; charset=utf-8", "Date": "Mon, 01 Dec 2026 02:00:00 GMT",
               "User-Agent": "Glean/64.0.0 (Kotlin on Android)", "X-Telemetry-Agent": "Glean/64.0.0 (Kotlin on Android)"}
    if body_encoding == "gzip":
        headers["Content-Encoding"] = "gzip"
    failures: list[str] = []
    ok = [0] * threads

    def run(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for doc_id, body, _ in docs[k::threads]:
                conn.request("POST", f"/submit/{NAMESPACE}/{DOC_TYPE}/{DOC_VERSION}/{doc_id}", body=body,
                             headers=headers)
                r = conn.getresponse()
                r.read()
                if r.status == 200:
                    ok[k] += 1
                elif len(failures) < 5:
                    failures.append(f"{r.status} for {doc_id}")
        except Exception as e:  # noqa: BLE001 - reported below
            failures.append(f"{type(e).__name__}: {e}")
        finally:
            conn.close()

    t0 = time.monotonic()
    ths = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    if failures or sum(ok) != len(docs):
        raise HarnessError(f"loading the backlog: {sum(ok)} of {len(docs)} accepted; {failures[:5]}")
    return {"accepted": sum(ok), "seconds": round(time.monotonic() - t0, 2)}


# ---------------------------------------------------------------- one phase


class Bench:
    def __init__(self, svc: harness.Services, n: int, s3_port: int):
        self.svc = svc
        self.n = n
        self.s3_port = s3_port
        self.db0 = Resp(svc.redis_port, 0)
        self.db1 = Resp(svc.redis_port, 1)
        self.pristine: list[bytes] = []
        self.s3_pid = next(p.pid for name, p in svc.procs if name == "s3-standin")
        self.stream_keys = [f"wharf:{{{s}}}:submissions" for s in range(svc.queue_shards)]

    def set_aside(self) -> dict:
        """Moves what the web wrote (shard streams, shard registry) into database 1."""
        keys = self.db0.call("KEYS", "*")
        for k in keys:
            if self.db0.call("MOVE", k, "1") != 1:
                raise HarnessError(f"MOVE {k!r} to database 1 failed")
        self.pristine = keys
        lengths = {k.decode(): self.db1.call("XLEN", k) for k in keys if k.endswith(b":submissions")}
        if sum(lengths.values()) != self.n:
            raise HarnessError(f"the streams hold {sum(lengths.values())} entries, not {self.n}: {lengths}")
        return lengths

    def restore(self) -> None:
        self.db0.call("FLUSHDB")
        for k in self.pristine:
            if self.db1.call("COPY", k, k, "DB", "0") != 1:
                raise HarnessError(f"COPY {k!r} to database 0 failed")

    def backlog(self) -> int:
        return sum(self.db0.pipeline([("XLEN", k) for k in self.stream_keys]))

    def redis_cpu(self) -> float:
        f = self.db0.info("cpu")
        return float(f["used_cpu_sys"]) + float(f["used_cpu_user"])

    def commandstats(self) -> dict:
        out = {}
        for k, v in self.db0.info("commandstats").items():
            if k.startswith("cmdstat_") and k not in ("cmdstat_info", "cmdstat_xlen", "cmdstat_config"):
                f = dict(x.split("=", 1) for x in v.split(","))
                out[k[len("cmdstat_"):]] = {"calls": int(f["calls"]), "usec": int(f["usec"])}
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["usec"]))

    def used_memory(self) -> int:
        return int(self.db0.info("memory")["used_memory"])

    def phase(self, name: str, label: str, env: dict, drain_timeout: float) -> dict:
        svc = self.svc
        self.restore()
        prefix = f"{label}/"
        time.sleep(0.2)
        mem0 = self.used_memory()
        keys0 = self.db0.call("DBSIZE")
        if self.backlog() != self.n:
            raise HarnessError("the restored backlog is not complete")
        wenv = svc.common_env()
        wenv.update({
            "S3_BUCKET": harness.BUCKET, "S3_PREFIX": prefix,
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "AWS_ACCESS_KEY_ID": harness.ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": harness.SECRET_KEY,
            "AWS_REGION": "us-east-1",
        })
        wenv.update(env)
        self.db0.call("CONFIG", "RESETSTAT")
        rcpu0, rproc0 = self.redis_cpu(), harness.cpu_seconds(svc.redis_proc.pid)
        s3cpu0, self0 = harness.cpu_seconds(self.s3_pid), harness.self_cpu()
        busy0, ticks0 = harness.busy_seconds(), harness.machine_ticks()
        t0, wall0 = time.monotonic(), time.time()
        worker = svc.spawn(f"worker-{label}", [os.path.join(svc.bin_dir, "wharf"), "worker"], wenv)
        deadline = t0 + drain_timeout
        try:
            while True:
                if worker.poll() is not None:
                    raise HarnessError(f"{label}: the worker exited with {worker.returncode} (worker-{label}.log)")
                if self.backlog() == 0:
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"{label}: {self.backlog()} entries left after {drain_timeout:.0f} s")
                time.sleep(0.05)
            drain_s = time.monotonic() - t0
            wcpu = harness.cpu_seconds(worker.pid)
            wrss = harness.peak_rss_mb(worker.pid)
            rcpu = self.redis_cpu() - rcpu0
            commands = self.commandstats()
            rproc = harness.cpu_seconds(svc.redis_proc.pid) - rproc0
            s3cpu = harness.cpu_seconds(self.s3_pid) - s3cpu0
            me = harness.self_cpu() - self0
            busy, ticks = harness.busy_seconds() - busy0, harness.machine_ticks()
        finally:
            svc.stop(worker)
        mem1 = self.used_memory()
        n = self.n
        startup = self.startup_s(label, wall0)
        fig = {
            "config": name,
            "drain_s": round(drain_s, 3),
            # Spawn to the worker's `worker.start` log line (Redis and S3 clients made, consumer
            # group ensured), then that line to an empty backlog.
            "startup_s": startup,
            "drain_after_start_s": None if startup is None else round(drain_s - startup, 3),
            "docs_per_s": round(n / drain_s, 1),
            "worker_cpu_s": round(wcpu, 3),
            "worker_cpu_us_per_doc": round(wcpu / n * 1e6, 2),
            "worker_peak_rss_mb": round(wrss, 1),
            "redis_cpu_s": round(rcpu, 3),
            "redis_cpu_us_per_doc": round(rcpu / n * 1e6, 2),
            "redis_cpu_s_proc_stat": round(rproc, 2),
            "s3_standin_cpu_us_per_doc": round(s3cpu / n * 1e6, 2),
            # Time Redis spent executing each command (`INFO commandstats`), per document; the
            # rest of its CPU is reading requests and writing replies.
            "redis_command_us_per_doc": {c: round(v["usec"] / n, 3) for c, v in commands.items()},
            "redis_calls_per_doc": {c: round(v["calls"] / n, 3) for c, v in commands.items()},
            "steal_percent": harness.steal_percent(ticks0, ticks),
            # Other processes of this guest (builds, editors), which steal does not show: busy
            # time less worker, Redis, s3-standin and this script, in cores.
            "other_cpu_cores": round((busy - wcpu - rcpu - s3cpu - me) / drain_s, 2),
            "used_memory_before": mem0,
            "used_memory_after": mem1,
            "used_memory_delta_per_doc": round((mem1 - mem0) / n, 1),
            "keys_before": keys0,
        }
        fig["ledger"] = self.ledger(env)
        fig["objects"] = self.objects(prefix, env["OUTPUT_COMPRESSION"])
        self.db0.call("FLUSHDB")
        return fig

    def startup_s(self, label: str, wall0: float):
        try:
            with open(os.path.join(self.svc.work, f"worker-{label}.log")) as f:
                for line in f:
                    if '"Type":"worker.start"' in line:
                        return round(json.loads(line)["Timestamp"] / 1e9 - wall0, 3)
        except (OSError, ValueError, KeyError):
            pass
        return None

    def ledger(self, env: dict) -> dict:
        """The ledger's keys: count, MEMORY USAGE of a sample, TTL, and the memory they hold
        (used_memory before less after deleting them all)."""
        keys = self.db0.scan(LEDGER_PATTERN)
        out = {"keys": len(keys)}
        if not keys:
            return out
        sample = random.Random(7).sample(keys, min(500, len(keys)))
        usage = self.db0.pipeline([("MEMORY", "USAGE", k, "SAMPLES", "0") for k in sample])
        ttl = self.db0.pipeline([("PTTL", k) for k in sample[:50]])
        fields = self.db0.pipeline([("HLEN", k) for k in sample[:50]])
        one = self.db0.call("HGETALL", sample[0])
        time.sleep(0.2)
        before = self.used_memory()
        self.db0.pipeline([("DEL", k) for k in keys])
        after_now = self.used_memory()
        # serverCron (hz 10) shrinks the emptied key tables; that memory belonged to the ledger too.
        time.sleep(1.0)
        after = self.used_memory()
        n = self.n
        out.update({
            "key_example": sample[0].decode(),
            "field_example": {one[0].decode(): one[1].decode()} if one else None,
            "fields_per_key": sorted(set(fields)),
            "pttl_ms_min_max": [min(ttl), max(ttl)],
            "window_ms": int(env["DEDUP_WINDOW_MS"]),
            "memory_usage_sample": len(sample),
            "memory_usage_mean_bytes": round(statistics.mean(usage), 1),
            "used_memory_freed_by_del": before - after,
            "used_memory_freed_by_del_at_once": before - after_now,
            "bytes_per_doc": round((before - after) / n, 1),
        })
        return out

    def objects(self, prefix: str, compression: str) -> dict:
        """Every object the phase wrote: bytes, decompressed NDJSON bytes, lines, unique docIds;
        then deletes them."""
        root = os.path.join(self.svc.work, "s3", harness.BUCKET, prefix.rstrip("/"))
        ext = ".ndjson.gz" if compression == "gzip" else ".ndjson.zst"
        count, stored, raw, lines, other_files = 0, 0, 0, 0, []
        ids = set()
        for dirpath, _, files in os.walk(root):
            for name in files:
                path = os.path.join(dirpath, name)
                if not name.endswith(ext):
                    other_files.append(name)
                    continue
                count += 1
                stored += os.path.getsize(path)
                if ext == ".ndjson.gz":
                    with open(path, "rb") as f:
                        data = gzip.decompress(f.read())
                elif shutil.which("zstd"):
                    data = subprocess.run(["zstd", "-dcq", path], capture_output=True, check=True).stdout
                else:
                    data = None
                if data is None:
                    continue
                raw += len(data)
                for line in data.splitlines():
                    if line.strip():
                        lines += 1
                        ids.add(json.loads(line)["attributes"].get("uri"))
        shutil.rmtree(root, ignore_errors=True)
        # s3-standin (s3s-fs) keeps each object's metadata in dot files at its root.
        s3_root = os.path.join(self.svc.work, "s3")
        for name in os.listdir(s3_root):
            if name.startswith(".bucket-"):
                os.unlink(os.path.join(s3_root, name))
        n = self.n
        decoded = raw > 0
        return {
            "count": count,
            "bytes": stored,
            "bytes_per_doc": round(stored / n, 1),
            "ndjson_bytes": raw if decoded else None,
            "ndjson_bytes_per_doc": round(raw / n, 1) if decoded else None,
            "compression_ratio": round(stored / raw, 4) if decoded else None,
            "lines": lines if decoded else None,
            "unique_doc_ids": len(ids) if decoded else None,
            "docs_per_object": round(n / count, 1) if count else None,
            "other_files": sorted(set(other_files))[:5],
            "decoded": decoded,
        }


# ---------------------------------------------------------------- summary


def run_rounds(bench: "Bench", names: list[str], rounds: int, common: dict, drain_timeout: float,
               tag: str) -> dict[str, list[dict]]:
    """`rounds` interleaved rounds of the configurations `names`, the order rotated each round; a
    round in which a phase lost more than 5 % of the machine to steal is run once more."""
    per: dict[str, list[dict]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for attempt in (1, 2):
            figs = {}
            for name in order:
                label = f"{tag}{r + 1}a{attempt}-{name}"
                f = bench.phase(name, label, {**common, **CONFIGS[name][0]}, drain_timeout)
                f["attempt"] = attempt
                figs[name] = f
                o = f["objects"]
                log(f"{label}: drain {f['drain_s']} s, Redis {f['redis_cpu_us_per_doc']} µs/doc, worker "
                    f"{f['worker_cpu_us_per_doc']} µs/doc, {o['count']} objects, {o['bytes_per_doc']} B/doc "
                    f"(ratio {o['compression_ratio']}), ledger keys {f['ledger']['keys']} "
                    f"{f['ledger'].get('bytes_per_doc')} B/doc, steal {f['steal_percent']} %, other "
                    f"{f['other_cpu_cores']} cores")
            stolen = max(f["steal_percent"] or 0 for f in figs.values())
            if stolen <= harness.STEAL_RETRY_PERCENT or attempt == 2:
                break
            log(f"  {stolen} % of the CPU was stolen during this round; repeating it once")
        for name in names:
            per[name].append(figs[name])
    return per


def med(xs, nd=2):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), nd) if xs else None


def summarize(per: dict[str, list[dict]]) -> dict:
    base = per[BASELINE]
    out = {}
    for name, rounds in per.items():
        def ratio(key, sub=None):
            qs = []
            for f, b in zip(rounds, base):
                x = f[sub][key] if sub else f[key]
                y = b[sub][key] if sub else b[key]
                qs.append(round(x / y, 3) if x is not None and y else None)
            return qs

        led = [f["ledger"] for f in rounds]
        obj = [f["objects"] for f in rounds]
        c = {
            "env": CONFIGS[name][0], "what": CONFIGS[name][1],
            "redis_cpu_us_per_doc": med([f["redis_cpu_us_per_doc"] for f in rounds]),
            "worker_cpu_us_per_doc": med([f["worker_cpu_us_per_doc"] for f in rounds]),
            "drain_s": med([f["drain_s"] for f in rounds], 3),
            "startup_s": med([f["startup_s"] for f in rounds], 3),
            "drain_after_start_s": med([f["drain_after_start_s"] for f in rounds], 3),
            "docs_per_s": med([f["docs_per_s"] for f in rounds], 0),
            "object_bytes_per_doc": med([o["bytes_per_doc"] for o in obj], 1),
            "ndjson_bytes_per_doc": med([o["ndjson_bytes_per_doc"] for o in obj], 1),
            "compression_ratio": med([o["compression_ratio"] for o in obj], 4),
            "objects": med([o["count"] for o in obj], 0),
            "docs_per_object": med([o["docs_per_object"] for o in obj], 1),
            "worker_peak_rss_mb": med([f["worker_peak_rss_mb"] for f in rounds], 1),
            "redis_command_us_per_doc": {c: med([f["redis_command_us_per_doc"].get(c, 0) for f in rounds], 3)
                                         for c in rounds[0]["redis_command_us_per_doc"]},
            "redis_calls_per_doc": {c: med([f["redis_calls_per_doc"].get(c, 0) for f in rounds], 3)
                                    for c in rounds[0]["redis_calls_per_doc"]},
            "ledger_keys": [lg["keys"] for lg in led],
            "ledger_bytes_per_doc": med([lg.get("bytes_per_doc") for lg in led], 1),
            "ledger_memory_usage_mean_bytes": med([lg.get("memory_usage_mean_bytes") for lg in led], 1),
            "used_memory_delta_per_doc": med([f["used_memory_delta_per_doc"] for f in rounds], 1),
            "steal_percent": [f["steal_percent"] for f in rounds],
            "other_cpu_cores": [f["other_cpu_cores"] for f in rounds],
            "per_round": {
                "redis_cpu_us_per_doc": [f["redis_cpu_us_per_doc"] for f in rounds],
                "worker_cpu_us_per_doc": [f["worker_cpu_us_per_doc"] for f in rounds],
                "drain_s": [f["drain_s"] for f in rounds],
                "drain_after_start_s": [f["drain_after_start_s"] for f in rounds],
                "object_bytes_per_doc": [o["bytes_per_doc"] for o in obj],
                "objects": [o["count"] for o in obj],
            },
        }
        if name != BASELINE:
            r = {"redis_cpu": ratio("redis_cpu_us_per_doc"), "worker_cpu": ratio("worker_cpu_us_per_doc"),
                 "drain_s": ratio("drain_s"), "drain_after_start_s": ratio("drain_after_start_s"),
                 "object_bytes": ratio("bytes_per_doc", "objects")}
            c["ratio_to_baseline_per_round"] = r
            c["ratio_to_baseline"] = {k: med(v, 3) for k, v in r.items()}
            # Per-round differences (same round, so the same machine state as far as can be had).
            c["minus_baseline_per_doc"] = {
                "redis_cpu_us": med([f["redis_cpu_us_per_doc"] - b["redis_cpu_us_per_doc"] for f, b in zip(rounds, base)]),
                "worker_cpu_us": med([f["worker_cpu_us_per_doc"] - b["worker_cpu_us_per_doc"] for f, b in zip(rounds, base)]),
                "used_memory_delta_bytes": med([f["used_memory_delta_per_doc"] - b["used_memory_delta_per_doc"]
                                                for f, b in zip(rounds, base)], 1),
            }
        out[name] = c
    return out


def check(r: dict) -> list[str]:
    """Did every configuration produce its figures? (Never judges whether they are good.)"""
    n = r.get("settings", {}).get("docs")
    problems = _check_rounds(r.get("rounds", {}), list(CONFIGS), n, "")
    for name in CONFIGS:
        if name != BASELINE and not r.get("summary", {}).get(name, {}).get("ratio_to_baseline", {}).get("redis_cpu"):
            problems.append(f"{name}: no ratio to {BASELINE}")
    if r.get("settings", {}).get("shipped_held_rounds"):
        shipped = r.get("shipped_held_budget", {}).get("rounds", {})
        problems += _check_rounds(shipped, [BASELINE, "gzip-ledger"], n, "shipped held budget, ")
    return problems


def _check_rounds(per: dict, names: list[str], n: int, part: str) -> list[str]:
    problems = []
    for name in names:
        rounds = per.get(name)
        if not rounds:
            problems.append(f"{part}{name}: not measured")
            continue
        for i, f in enumerate(rounds):
            where = f"{part}{name} round {i + 1}"
            if not f.get("redis_cpu_us_per_doc") or not f.get("worker_cpu_us_per_doc"):
                problems.append(f"{where}: no CPU figure")
            o = f.get("objects", {})
            if not o.get("bytes"):
                problems.append(f"{where}: no object")
            if o.get("decoded") and o.get("unique_doc_ids") != n:
                problems.append(f"{where}: {o.get('unique_doc_ids')} unique docIds landed, not {n}")
            if o.get("decoded") and o.get("lines") != n:
                problems.append(f"{where}: {o.get('lines')} lines, not {n}")
            keys = f.get("ledger", {}).get("keys")
            want = n if CONFIGS[name][0]["DEDUP_WINDOW_MS"] != "0" else 0
            if keys != want:
                problems.append(f"{where}: {keys} ledger keys, not {want}")
            if want and f.get("ledger", {}).get("bytes_per_doc") is None:
                problems.append(f"{where}: no ledger memory figure")
    return problems


def _f(v, nd=1):
    return "-" if v is None else f"{v:,.{nd}f}"


def report(r: dict) -> str:
    d = r["document"]
    st = r["settings"]
    delay = f", every S3 answer held {st['s3_delay_ms']:g} ms" if st.get("s3_delay_ms") else ""
    lines = [
        f"Run {r['date']}, `{r['command']}`, {r['machine']['cores']} cores ({r['machine']['cpu']}), load average at "
        f"start {r['machine']['loadavg_at_start'][0]:.2f}, {r['tools']['redis'].split(' sha=')[0]}; {st['docs']:,} documents "
        f"({d['json_bytes_mean']:.0f} B JSON, {d['body_bytes_mean']:.0f} B {st['body_encoding']} body on average), "
        f"{st['rounds']} rounds{delay}; took {r['elapsed_s']} s.",
        "",
        f"Held budget above the backlog ({', '.join(f'{k}={v}' for k, v in st.get('worker_env_main_rounds', {}).items())}), "
        "medians of the rounds:",
        "",
    ]
    lines += _table(r["summary"])
    lines += _ratios(r["summary"])
    lines += ["", "Redis time per document in each command (`INFO commandstats`, µs; calls per document):", ""]
    for name, c in r["summary"].items():
        cmds = ", ".join(f"{k.upper()} {v:.2f} ({c['redis_calls_per_doc'].get(k, 0):g})"
                         for k, v in c["redis_command_us_per_doc"].items() if v >= 0.01)
        lines.append(f"- {name}: {cmds}")
    led = r["summary"].get("gzip-ledger", {})
    if led.get("minus_baseline_per_doc"):
        m = led["minus_baseline_per_doc"]
        lines += ["", f"Ledger, per document, minus the baseline of the same round (median): Redis CPU "
                  f"+{_f(m['redis_cpu_us'], 2)} µs, worker CPU +{_f(m['worker_cpu_us'], 2)} µs, used_memory after the "
                  f"drain +{_f(m['used_memory_delta_bytes'])} B; deleting the ledger's keys freed "
                  f"{_f(led['ledger_bytes_per_doc'])} B per document, or {_f(led['ledger_bytes_per_doc'] * 1e6 / 2**20, 0)} "
                  f"MiB per million documents in the window."]
    shipped = r.get("shipped_held_budget")
    if shipped:
        env = ", ".join(f"{k}={v}" for k, v in shipped["worker_env"].items())
        lines += ["", f"Shipped held budget (WORKER_MAX_HELD_* unset; {env}), {st['shipped_held_rounds']} round(s):", ""]
        lines += _table(shipped["summary"])
        lines += _ratios(shipped["summary"])
    return "\n".join(lines)


def _table(summary: dict) -> list[str]:
    out = ["| configuration | Redis CPU µs/doc | worker CPU µs/doc | drain s (of which start-up) | objects (docs each) | "
           "object B/doc | object / NDJSON | ledger keys | ledger B/doc (`MEMORY USAGE` mean) | steal % per round | "
           "other processes, cores |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in summary.items():
        led = "-" if not c["ledger_bytes_per_doc"] else (f"{_f(c['ledger_bytes_per_doc'])} "
                                                         f"({_f(c['ledger_memory_usage_mean_bytes'])})")
        out.append(
            f"| {name} | {_f(c['redis_cpu_us_per_doc'], 2)} | {_f(c['worker_cpu_us_per_doc'], 2)} | "
            f"{_f(c['drain_s'], 2)} ({_f(c['startup_s'], 2)}) | {_f(c.get('objects'), 0)} ({_f(c.get('docs_per_object'))}) | "
            f"{_f(c['object_bytes_per_doc'])} | {_f(c['compression_ratio'], 3)} | "
            f"{', '.join(str(k) for k in sorted(set(c['ledger_keys'])))} | {led} | "
            f"{', '.join(str(x) for x in c['steal_percent'])} | {', '.join(str(x) for x in c['other_cpu_cores'])} |")
    return out


def _ratios(summary: dict) -> list[str]:
    out = ["", f"Ratios to {BASELINE} in the same round (median; per round in brackets):", "",
           "| configuration | Redis CPU | worker CPU | drain time | drain time after start-up | object bytes |",
           "|---|---|---|---|---|---|"]
    for name, c in summary.items():
        if name == BASELINE:
            continue
        q, pr = c["ratio_to_baseline"], c["ratio_to_baseline_per_round"]

        def cell(k):
            return f"**{_f(q[k], 3)}** ({', '.join(_f(x, 2) for x in pr[k])})"

        out.append(f"| {name} | {cell('redis_cpu')} | {cell('worker_cpu')} | {cell('drain_s')} | "
                   f"{cell('drain_after_start_s')} | {cell('object_bytes')} |")
    return out


# ---------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", help="directory holding wharf and s3-standin (default: target/release)")
    ap.add_argument("--report", metavar="JSON", help="print a result file as Markdown and exit")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5,000 documents, 1 round (about 20 s)")
    ap.add_argument("--check", action="store_true", help="exit non-zero unless every phase produced its figures")
    ap.add_argument("--out", help="result file (default bench/results/worker-options-latest.json; quick: "
                    "bench/results/quick.worker-options.json)")
    ap.add_argument("--docs", type=int, help="documents in the backlog (default 100000, quick 5000)")
    ap.add_argument("--size", type=int, default=1024, help="JSON bytes per document, about (default 1024)")
    ap.add_argument("--body-encoding", choices=("gzip", "identity"), default="gzip",
                    help="submit bodies gzip-compressed as Glean clients do (default), or plain JSON")
    ap.add_argument("--rounds", type=int, help="interleaved rounds, order rotated each round (default 5, quick 1)")
    ap.add_argument("--worker-env", action="append", default=[], metavar="K=V",
                    help="extra environment for every worker (repeatable)")
    ap.add_argument("--shipped-held-rounds", type=int, help="rounds of gzip-no-ledger and gzip-ledger with the "
                    "shipped WORKER_MAX_HELD_DOCUMENTS/_BYTES, after the main rounds (default 1, quick 0)")
    ap.add_argument("--s3-delay-ms", type=float, default=0.0,
                    help="hold every answer of s3-standin this long (a proxy in this script), as a distant S3 would")
    ap.add_argument("--binary-note", help="where the binaries come from, recorded in the result file (e.g. the "
                    "commit of a build made outside a git work tree, which /__version__ cannot tell)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = ap.parse_args()
    if args.report:
        print(report(json.load(open(args.report))))
        return 0
    quick = args.quick
    n = args.docs or (5000 if quick else 100000)
    rounds = max(1, args.rounds or (1 if quick else 5))
    if args.shipped_held_rounds is None:
        args.shipped_held_rounds = 0 if quick else 1
    if not args.out:
        args.out = os.path.join(HERE, "results", "quick.worker-options.json" if quick else "worker-options-latest.json")
    for tool in ("redis-server", "redis-cli"):
        if not shutil.which(tool):
            raise HarnessError(f"{tool} not found (bench/install-tools)")
    bin_dir = args.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
    for b in ("wharf", "s3-standin"):
        if not os.access(os.path.join(bin_dir, b), os.X_OK):
            raise HarnessError(f"{b} not found in {bin_dir} (cargo build --release -p wharf -p wharf-testkit --bins)")
    extra = dict(kv.split("=", 1) for kv in args.worker_env)
    common = {"BATCH_MAX_AGE_MS": "1000", **extra}
    # Main rounds: the worker may hold the whole backlog, so batches close by count (1,000
    # documents) as under live traffic, whatever the upload path costs (see the module doc).
    held_env = {k: v for k, v in (("WORKER_MAX_HELD_DOCUMENTS", str(max(5000, 2 * n))),
                                  ("WORKER_MAX_HELD_BYTES", str(max(64 << 20, n * 4096)))) if k not in extra}

    started = time.time()
    log(f"making {n} documents")
    docs = make_backlog(n, args.size, args.body_encoding)
    work = tempfile.mkdtemp(prefix="wharf-bench-worker-options-")
    svc = harness.Services(bin_dir, work, "")
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": " ".join(["python3 bench/worker_options.py", *sys.argv[1:]]),
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(), "loadavg_at_start": os.getloadavg(),
                    "cpu": harness._cpu_model()},
        "tools": {"redis": harness._version(["redis-server", "--version"]),
                  "zstd_cli": harness._version(["zstd", "--version"]) if shutil.which("zstd") else None},
        "binary": {"path": os.path.join(bin_dir, "wharf"), "mtime": datetime.datetime.fromtimestamp(
            os.stat(os.path.join(bin_dir, "wharf")).st_mtime, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")},
        "source": _source(),
        "mode": "quick" if quick else "default",
        "settings": {"docs": n, "rounds": rounds, "json_bytes_target": args.size, "body_encoding": args.body_encoding,
                     "worker_env_common": common, "worker_env_main_rounds": held_env,
                     "shipped_held_rounds": args.shipped_held_rounds, "s3_delay_ms": args.s3_delay_ms,
                     "queue_shards": svc.queue_shards, "workers": 1,
                     "route": f"{NAMESPACE}/{DOC_TYPE}/{DOC_VERSION}/<docId>",
                     "configs": {k: v[0] for k, v in CONFIGS.items()}},
        "document": {"json_bytes_mean": round(statistics.mean(d[2] for d in docs), 1),
                     "body_bytes_mean": round(statistics.mean(len(d[1]) for d in docs), 1)},
        "rounds": {},
    }
    bench = None
    try:
        svc.start_redis()
        svc.start_s3()
        svc.start_web({})
        result["binary"]["version"] = web_version(svc.web_port)
        if args.binary_note:
            result["binary"]["note"] = args.binary_note
        log(f"submitting the backlog through wharf web ({result['document']['json_bytes_mean']:.0f} B JSON, "
            f"{result['document']['body_bytes_mean']:.0f} B bodies)")
        result["load"] = submit_all(svc.web_port, docs, args.body_encoding)
        del docs
        svc.stop(svc.web)
        s3_port = delaying_proxy(svc.s3_port, args.s3_delay_ms / 1000) if args.s3_delay_ms else svc.s3_port
        bench = Bench(svc, n, s3_port)
        result["load"]["stream_lengths"] = bench.set_aside()
        result["load"]["used_memory_backlog"] = int(bench.db1.info("memory")["used_memory"])
        log(f"  {n} entries in {result['load']['seconds']} s, set aside in database 1")
        # Time enough for one worker at a few hundred documents a second, on a busy machine.
        drain_timeout = 60 + n / 200
        result["rounds"] = run_rounds(bench, list(CONFIGS), rounds, {**common, **held_env}, drain_timeout, "r")
        result["summary"] = summarize(result["rounds"])
        if args.shipped_held_rounds:
            # The same backlog with the shipped WORKER_MAX_HELD_* (or --worker-env's): the worker
            # holds part of it and flushes its biggest open batch whenever that budget is full.
            names = [BASELINE, "gzip-ledger"]
            shipped = run_rounds(bench, names, args.shipped_held_rounds, common, drain_timeout, "s")
            result["shipped_held_budget"] = {"worker_env": common, "rounds": shipped, "summary": summarize(shipped)}
        result["log_problems"] = cluster.log_problems(work)
    finally:
        if bench is not None:
            bench.db0.close()
            bench.db1.close()
        svc.stop_all()
        result["elapsed_s"] = round(time.time() - started, 1)
        if args.keep:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    log(f"wrote {args.out} in {result['elapsed_s']} s")
    print(report(result))
    if args.check:
        problems = check(result)
        for p in problems:
            log(f"CHECK FAILED: {p}")
        if problems:
            return 1
        log("check passed: every configuration produced its figures")
    return 0


def _source() -> dict:
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--", "crates/wharf-worker",
                                "crates/wharf-queue", "Cargo.lock"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except OSError:
        return {}
    return {"commit_checked_out": head, "worker_or_queue_uncommitted_changes": bool(dirty)}


if __name__ == "__main__":
    harness.run_main(main)
