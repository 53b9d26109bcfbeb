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
import gzip
import http.client
import json
import multiprocessing
import os
import random
import shutil
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

try:
    import redis
except ImportError:
    # Said before the backlog is made (minutes on a large run), not at the first Redis call.
    log("error: redis-py not found (scripts/install-test-deps, or python3 -m pip install redis==8.1.0)")
    sys.exit(2)

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


# ---------------------------------------------------------------- Redis


def redis_client(port: int, db: int) -> redis.Redis:
    """One connection to a database of the run's redis-server: polling the backlog every 50 ms
    must not compete with the worker for the cores, as a redis-cli process per call would."""
    return redis.Redis(host="127.0.0.1", port=port, db=db, socket_timeout=60, protocol=2)


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
        self.db0 = redis_client(svc.redis_port, 0)
        self.db1 = redis_client(svc.redis_port, 1)
        self.pristine: list[bytes] = []
        self.s3_pid = next(p.pid for name, p in svc.procs if name == "s3-standin")
        self.stream_keys = [f"wharf:{{{s}}}:submissions" for s in range(svc.queue_shards)]

    def pipelined(self, method: str, keys: list, *args, chunk: int = 1000) -> list:
        """db0.`method`(key, *args) for every key, `chunk` commands per round trip."""
        replies = []
        for i in range(0, len(keys), chunk):
            pipe = self.db0.pipeline(transaction=False)
            for k in keys[i:i + chunk]:
                getattr(pipe, method)(k, *args)
            replies.extend(pipe.execute())
        return replies

    def set_aside(self) -> dict:
        """Moves what the web wrote (shard streams, shard registry) into database 1."""
        keys = self.db0.keys("*")
        for k in keys:
            if not self.db0.move(k, 1):
                raise HarnessError(f"MOVE {k!r} to database 1 failed")
        self.pristine = keys
        lengths = {k.decode(): self.db1.xlen(k) for k in keys if k.endswith(b":submissions")}
        if sum(lengths.values()) != self.n:
            raise HarnessError(f"the streams hold {sum(lengths.values())} entries, not {self.n}: {lengths}")
        return lengths

    def restore(self) -> None:
        self.db0.flushdb()
        for k in self.pristine:
            if not self.db1.copy(k, k, destination_db=0):
                raise HarnessError(f"COPY {k!r} to database 0 failed")

    def backlog(self) -> int:
        return sum(self.pipelined("xlen", self.stream_keys))

    def redis_cpu(self) -> float:
        f = self.db0.info("cpu")
        return float(f["used_cpu_sys"]) + float(f["used_cpu_user"])

    def commandstats(self) -> dict:
        out = {}
        for k, f in self.db0.info("commandstats").items():
            if k.startswith("cmdstat_") and k not in ("cmdstat_info", "cmdstat_xlen", "cmdstat_config"):
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
        keys0 = self.db0.dbsize()
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
        self.db0.config_resetstat()
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
        self.db0.flushdb()
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
        keys = list(self.db0.scan_iter(match=LEDGER_PATTERN, count=1000))
        out = {"keys": len(keys)}
        if not keys:
            return out
        sample = random.Random(7).sample(keys, min(500, len(keys)))
        usage = self.pipelined("memory_usage", sample, 0)
        ttl = self.pipelined("pttl", sample[:50])
        fields = self.pipelined("hlen", sample[:50])
        one = list(self.db0.hgetall(sample[0]).items())
        time.sleep(0.2)
        before = self.used_memory()
        self.pipelined("delete", keys)
        after_now = self.used_memory()
        # serverCron (hz 10) shrinks the emptied key tables; that memory belonged to the ledger too.
        time.sleep(1.0)
        after = self.used_memory()
        n = self.n
        out.update({
            "key_example": sample[0].decode(),
            "field_example": {one[0][0].decode(): one[0][1].decode()} if one else None,
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
    def phase(r: int, attempt: int, name: str) -> dict:
        label = f"{tag}{r + 1}a{attempt}-{name}"
        f = bench.phase(name, label, {**common, **CONFIGS[name][0]}, drain_timeout)
        o = f["objects"]
        log(f"{label}: drain {f['drain_s']} s, Redis {f['redis_cpu_us_per_doc']} µs/doc, worker "
            f"{f['worker_cpu_us_per_doc']} µs/doc, {o['count']} objects, {o['bytes_per_doc']} B/doc "
            f"(ratio {o['compression_ratio']}), ledger keys {f['ledger']['keys']} "
            f"{f['ledger'].get('bytes_per_doc')} B/doc, steal {f['steal_percent']} %, other "
            f"{f['other_cpu_cores']} cores")
        return f

    return harness.interleaved_rounds(names, rounds, phase, "attempt")


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
    return harness.fmt(v, nd)


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
    ap = harness.ResultArgs(__doc__, "directory holding wharf and s3-standin (default: target/release)",
                            "smoke run: 5,000 documents, 1 round (about 20 s)",
                            ("worker-options-latest.json", "quick.worker-options.json"),
                            checked="every phase produced its figures",
                            report=report, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    quick = args.quick
    n = args.docs or (5000 if quick else 100000)
    rounds = max(1, args.rounds or (1 if quick else 5))
    if args.shipped_held_rounds is None:
        args.shipped_held_rounds = 0 if quick else 1
    harness.need_tools(("redis-server", "redis-cli"))
    bin_dir = args.bin_dir or os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release")
    harness.need_bins(bin_dir, ("wharf", "s3-standin"), "cargo build --release -p wharf -p wharf-testkit --bins")
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
        **harness.run_header("python3 bench/worker_options.py"),
        "tools": {"redis": harness._version(["redis-server", "--version"]),
                  "zstd_cli": harness._version(["zstd", "--version"]) if shutil.which("zstd") else None},
        "binary": harness.binary_info(os.path.join(bin_dir, "wharf")),
        "source": harness.git_source(["crates/wharf-worker", "crates/wharf-queue", "Cargo.lock"],
                                     dirty_key="worker_or_queue_uncommitted_changes"),
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
        result["binary"]["version"] = harness.web_version(svc.web_port)
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
        harness.close_work(result, started, work, args.keep)

    return harness.publish(result, args.out, report(result), check(result) if args.check else None,
                           "check passed: every configuration produced its figures")


if __name__ == "__main__":
    harness.run_main(main, errors=(redis.RedisError,))
