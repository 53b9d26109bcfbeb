#!/usr/bin/env python3
"""Wharf on one Redis master against three: the web role's saturation throughput, its CPU per
request and Redis CPU per document (every redis-server of the configuration), against a standalone
Redis measured in the same run; then the same documents end to end through workers.

    bench/run --cluster                  # default, about 7 minutes on 2 cores -> bench/results/cluster-latest.json
    bench/run --cluster --quick --check  # smoke run, about 30 s -> bench/results/quick.cluster.json
    python3 bench/cluster.py --bin-dir target/release [--rounds 7] [--duration 3] [--shards 12]
    python3 bench/cluster.py --report bench/results/cluster-latest.json   # Markdown tables
    python3 bench/cluster.py --layout 12 3   # which master holds each shard stream

Configurations (each its own Redis processes and `wharf web`, all started before the first
phase; only the one under load is busy):

  standalone     one redis-server, REDIS_CLUSTER unset: today's deployment and the baseline (a)
  cluster-1m     a Redis Cluster of 1 master, no replica (every slot on one node)
  cluster-3m     a Redis Cluster of 3 masters, no replicas (slots split evenly by redis-cli)
  cluster-3m-r1  3 masters with 1 replica each (6 nodes), REDIS_MIN_REPLICAS_ACK=0
  cluster-3m-r1-wait1  the same 6 nodes, a second web with REDIS_MIN_REPLICAS_ACK=1 (WAIT 1 per pipeline)
  cluster-3m-s60 the cluster-3m nodes, a second web with QUEUE_SHARDS=60 (a count that spreads evenly
                 over 3 masters; `--no-s60` leaves it out)

Saturation runs in interleaved rounds (the order rotates each round) and reports each
configuration's median ratio to the standalone phase of the same round. On this 2-core machine
oha, the web role and Redis share the cores, so a cluster cannot scale linearly here: the run
shows what a master costs per document and that throughput does not fall with more masters.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402
import harness  # noqa: E402
from harness import HarnessError, free_port, log, wait_port  # noqa: E402

SLOTS = 16384
DEFAULT_SHARDS = 12


# ---------------------------------------------------------------- hash slots


def crc16(data: bytes) -> int:
    """CRC16-XMODEM, Redis Cluster's key hash (slot = crc16 % 16384)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def shard_slot(n: int) -> int:
    """The slot of `wharf:{n}:submissions`: only the hash tag `n` is hashed."""
    return crc16(str(n).encode()) % SLOTS


def even_ranges(masters: int) -> list[tuple[int, int]]:
    """The slot ranges `redis-cli --cluster create` gives `masters` masters (its rounding)."""
    per = SLOTS / masters
    first, cursor, out = 0, 0.0, []
    for i in range(masters):
        last = int(cursor + per - 1 + 0.5)
        if last > SLOTS or i == masters - 1:
            last = SLOTS - 1
        last = max(last, first)
        out.append((first, last))
        first, cursor = last + 1, cursor + per
    return out


def spread(shards: int, masters: int) -> list[int]:
    """Shards per master for shards 0..shards-1 over `masters` evenly split slot ranges."""
    ranges = even_ranges(masters)
    counts = [0] * masters
    for n in range(shards):
        slot = shard_slot(n)
        counts[next(i for i, (a, b) in enumerate(ranges) if a <= slot <= b)] += 1
    return counts


def balanced_ranges(shards: int, masters: int) -> list[tuple[int, int]]:
    """Contiguous slot ranges, one per master, that give every master the same number of shard
    streams (shards must be a multiple of masters): cut half way between the sorted shard slots.
    The ranges differ in size; only the shard streams (and two small keys) carry load."""
    if shards % masters:
        raise HarnessError(f"{shards} shards cannot spread evenly over {masters} masters")
    slots = sorted(shard_slot(n) for n in range(shards))
    per, first, out = shards // masters, 0, []
    for k in range(masters):
        last = SLOTS - 1 if k == masters - 1 else (slots[(k + 1) * per - 1] + slots[(k + 1) * per]) // 2
        out.append((first, last))
        first = last + 1
    return out


def layout_text(shards: int, masters: int) -> str:
    """`--layout`: where shards 0..shards-1 land with evenly split slot ranges, and a balanced layout."""
    lines = [f"QUEUE_SHARDS={shards} over {masters} masters"]
    even = even_ranges(masters)
    lines.append(f"  evenly split slot ranges (redis-cli --cluster create): shards per master {spread(shards, masters)}")
    for i, (a, b) in enumerate(even):
        lines.append(f"    master {i}: slots {a}-{b}: shards {[n for n in range(shards) if a <= shard_slot(n) <= b]}")
    if shards % masters == 0:
        lines.append("  balanced contiguous ranges (CLUSTER ADDSLOTSRANGE at creation, or move the slots):")
        for i, (a, b) in enumerate(balanced_ranges(shards, masters)):
            lines.append(f"    master {i}: slots {a}-{b}: shards {[n for n in range(shards) if a <= shard_slot(n) <= b]}")
    return "\n".join(lines)


# ---------------------------------------------------------------- redis


def cli(port: int, *args: str, cluster: bool = False, stdin: str | None = None) -> str:
    argv = ["redis-cli", "-p", str(port)] + (["-c"] if cluster else []) + list(args)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, input=stdin)
    if out.returncode != 0:
        raise HarnessError(f"redis-cli -p {port} {' '.join(args)[:80]}: {out.stderr.strip()}")
    return out.stdout.strip()


def info_fields(text: str) -> dict:
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


class RedisCluster:
    """A Redis Cluster on loopback free ports: `masters` masters, `replicas` replicas each, one
    redis-server per node, started through a harness Services (so its stop_all stops them).
    The Python counterpart of crates/wharf-testkit/src/cluster.rs, as far as the bench needs it."""

    def __init__(self, svc: harness.Services, name: str, masters: int, replicas: int):
        self.svc, self.name, self.masters, self.replicas = svc, name, masters, replicas
        self.nodes: list[dict] = []  # port, bus, proc

    def start(self) -> None:
        t0 = time.monotonic()
        taken: set[int] = set()

        def fresh() -> int:
            while True:
                p = free_port()
                if p not in taken:
                    taken.add(p)
                    return p

        for _ in range(self.masters * (1 + self.replicas)):
            port, bus = fresh(), fresh()
            directory = os.path.join(self.svc.work, f"{self.name}-{port}")
            os.makedirs(directory)
            proc = self.svc.spawn(f"redis-{self.name}-{port}", [
                "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", directory, "--protected-mode", "yes", "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000",
                "--cluster-port", str(bus)])
            self.nodes.append({"port": port, "bus": bus, "proc": proc})
        for n in self.nodes:
            wait_port(n["port"], 10, n["proc"], f"redis-server {n['port']}")
        ports = [n["port"] for n in self.nodes]
        if self.masters >= 3:
            out = subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                                  "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                                 capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
            if out.returncode != 0:
                raise HarnessError(f"redis-cli --cluster create failed: {out.stdout[-500:]} {out.stderr[-500:]}")
        else:
            # redis-cli refuses fewer than 3 masters: slots, epochs, MEET and REPLICATE by hand.
            for i, (a, b) in enumerate(even_ranges(self.masters)):
                cli(ports[i], "CLUSTER", "ADDSLOTSRANGE", str(a), str(b))
                cli(ports[i], "CLUSTER", "SET-CONFIG-EPOCH", str(i + 1))
            for n in self.nodes[1:]:
                cli(n["port"], "CLUSTER", "MEET", "127.0.0.1", str(ports[0]), str(self.nodes[0]["bus"]))
            ids = [cli(p, "CLUSTER", "MYID") for p in ports[:self.masters]]
            for i, n in enumerate(self.nodes[self.masters:]):
                self._wait(lambda: all(x in cli(n["port"], "CLUSTER", "NODES") for x in ids), "learn every master")
                cli(n["port"], "CLUSTER", "REPLICATE", ids[i % self.masters])
        self._wait(self._healthy, "be healthy")
        self.started_in_s = round(time.monotonic() - t0, 2)

    def _wait(self, ok, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                result = ok()
                if result is True:
                    return
                last = result
            except HarnessError as e:
                last = str(e)
            time.sleep(0.1)
        raise HarnessError(f"redis cluster {self.name} did not {what} within {timeout}s: {last}")

    def _healthy(self):
        """cluster_state:ok with every slot and node on every node, every replica online."""
        for n in self.nodes:
            i = info_fields(cli(n["port"], "CLUSTER", "INFO"))
            if (i.get("cluster_state"), i.get("cluster_slots_ok"), i.get("cluster_known_nodes")) != (
                    "ok", str(SLOTS), str(len(self.nodes))):
                return f"node {n['port']}: {i.get('cluster_state')} slots_ok {i.get('cluster_slots_ok')}"
        for port in self.master_ports():
            rep = cli(port, "INFO", "replication")
            online = rep.count("state=online")
            if online != self.replicas:
                return f"master {port}: {online} of {self.replicas} replicas online"
        return True

    def view(self) -> list[dict]:
        """CLUSTER NODES: port, master flag, slot ranges."""
        rows = []
        for line in cli(self.nodes[0]["port"], "CLUSTER", "NODES").splitlines():
            f = line.split()
            if len(f) < 8:
                continue
            ranges = []
            for s in f[8:]:
                if s.startswith("["):
                    continue
                a, _, b = s.partition("-")
                ranges.append((int(a), int(b or a)))
            rows.append({"port": int(f[1].split("@")[0].rsplit(":", 1)[1]), "master": "master" in f[2].split(","),
                         "slots": ranges})
        return rows

    def master_ports(self) -> list[int]:
        """Masters owning slots, in slot order."""
        masters = [r for r in self.view() if r["master"] and r["slots"]]
        return [r["port"] for r in sorted(masters, key=lambda r: min(a for a, _ in r["slots"]))]

    def master_of_slot(self, slot: int) -> int:
        for r in self.view():
            if r["master"] and any(a <= slot <= b for a, b in r["slots"]):
                return r["port"]
        raise HarnessError(f"no master owns slot {slot}")

    def pids(self) -> dict[int, int]:
        return {n["port"]: n["proc"].pid for n in self.nodes}


class Target(harness.Services):
    """One configuration: a standalone redis-server or a cluster (its own, or another target's),
    one `wharf web`, and workers and an S3 stand-in for the end-to-end phase."""

    def __init__(self, name: str, bin_dir: str, work: str, oha: str, shards: int,
                 cluster: RedisCluster | None = None, web_env: dict | None = None):
        os.makedirs(work, exist_ok=True)
        super().__init__(bin_dir, work, oha)
        self.name = name
        self.queue_shards = shards
        self.cluster = cluster
        self.web_env = dict(web_env or {})
        self.web_env.setdefault("QUEUE_SHARDS", str(shards))
        self.redis_proc = None

    # --- redis: the harness's methods, cluster-aware
    def common_env(self) -> dict:
        env = super().common_env()
        if self.cluster:
            env["REDIS_CLUSTER"] = "true"
        return env

    def start_own_redis(self) -> None:
        if self.cluster:
            self.cluster.start()
            self.redis_port = self.cluster.nodes[0]["port"]
        else:
            self.start_redis()

    def use_cluster_of(self, other: "Target") -> None:
        self.cluster = other.cluster
        self.redis_port = other.redis_port

    def redis(self, *args: str) -> str:
        return cli(self.redis_port, *args, cluster=bool(self.cluster))

    def redis_pids(self) -> dict[str, int]:
        if self.cluster:
            return {str(port): pid for port, pid in self.cluster.pids().items()}
        return {str(self.redis_port): self.redis_proc.pid}

    def masters(self) -> list[int]:
        return self.cluster.master_ports() if self.cluster else [self.redis_port]

    def flush(self) -> None:
        for port in self.masters():
            cli(port, "FLUSHALL")

    def shard_master(self) -> dict[int, int]:
        """Shard number -> port of the master holding its stream."""
        if not self.cluster:
            return {n: self.redis_port for n in range(self.queue_shards)}
        return {n: self.cluster.master_of_slot(shard_slot(n)) for n in range(self.queue_shards)}

    def shard_lengths(self) -> dict[int, int]:
        """XLEN of every shard stream, each asked of the master that holds it."""
        by_master: dict[int, list[int]] = {}
        for n, port in self.shard_master().items():
            by_master.setdefault(port, []).append(n)
        out = {}
        for port, shards in by_master.items():
            text = cli(port, stdin="".join(f"XLEN wharf:{{{n}}}:submissions\n" for n in shards))
            for n, v in zip(shards, text.split()):
                out[n] = int(v) if v.lstrip("-").isdigit() else 0
        return out

    def backlog(self) -> int:
        return sum(self.shard_lengths().values())

    def stop_workers(self) -> None:
        for w in self.workers:
            self.stop(w)
        self.workers = []


def redis_cpu(pids: dict[str, int]) -> dict[str, float]:
    return {k: harness.cpu_seconds(p) for k, p in pids.items()}


# ---------------------------------------------------------------- phases


def saturation(t: Target, body_file: str, duration: float, connections: int) -> dict:
    """oha at saturation against t's web; web CPU per request, Redis CPU per document summed over
    every redis-server of the configuration (and per node), documents per master."""
    pids = t.redis_pids()
    r0, busy0, oha0 = redis_cpu(pids), harness.busy_seconds(), harness.children_cpu()
    fig, cpu, rss = harness.measured(t, t.web.pid, lambda: harness.oha_run(t, t.web_port, body_file, duration,
                                                                          connections, None))
    r1, busy1, oha1 = redis_cpu(pids), harness.busy_seconds(), harness.children_cpu()
    per_node = {k: round(r1[k] - r0[k], 3) for k in pids}
    redis_total = sum(per_node.values())
    # What else ran on the machine meanwhile (other processes of this guest: builds, editors),
    # which steal does not show: busy time less web, Redis and oha, in cores.
    other = (busy1 - busy0) - cpu - redis_total - (oha1 - oha0)
    lengths = t.shard_lengths()
    masters = t.shard_master()
    docs_per_master: dict[str, int] = {}
    for n, length in lengths.items():
        docs_per_master[str(masters[n])] = docs_per_master.get(str(masters[n]), 0) + length
    fig.update({
        "web_cpu_s": round(cpu, 3),
        "web_cpu_us_per_request": round(cpu / fig["ok"] * 1e6, 2) if fig["ok"] else None,
        "web_peak_rss_mb": round(rss, 1),
        "redis_cpu_s": round(redis_total, 3),
        "redis_cpu_us_per_doc": round(redis_total / fig["ok"] * 1e6, 2) if fig["ok"] else None,
        "redis_cpu_s_per_node": per_node,
        "redis_busiest_node_cpu_percent": round(100 * max(per_node.values()) / fig["duration_s"], 1),
        "docs_per_master": docs_per_master,
        "queued_after": sum(lengths.values()),
        "oha_cpu_s": round(oha1 - oha0, 3),
        "other_cpu_cores": round(other / fig["duration_s"], 2),
        "loadavg_1m_after": round(os.getloadavg()[0], 2),
    })
    t.flush()
    return fig


def end_to_end(t: Target, body_file: str, rate: float, duration: float, connections: int, workers: int,
               worker_env: dict) -> dict:
    """The harness's end-to-end phase on t, plus Redis CPU per document (write, read, ack, delete)."""
    t.flush()
    if not t.s3_port:
        t.start_s3()
    else:  # a fresh bucket directory per phase: landed() counts every object under it
        shutil.rmtree(os.path.join(t.work, "s3", harness.BUCKET), ignore_errors=True)
        os.makedirs(os.path.join(t.work, "s3", harness.BUCKET), exist_ok=True)
    pids = t.redis_pids()
    # The workers get the web's QUEUE_SHARDS and REDIS_MIN_REPLICAS_ACK, as a deployment would.
    t.start_workers(workers, {**t.web_env, **worker_env})
    r0 = redis_cpu(pids)
    ticks = harness.machine_ticks()
    try:
        drain = float(worker_env.get("BATCH_MAX_AGE_MS", 10000)) / 1000 + 60
        e2e = harness.end_to_end(t, body_file, rate, duration, connections, drain)
    finally:
        t.stop_workers()
    r1 = redis_cpu(pids)
    e2e["steal_percent"] = harness.steal_percent(ticks, harness.machine_ticks())
    total = sum(r1[k] - r0[k] for k in pids)
    e2e["redis_cpu_s"] = round(total, 3)
    e2e["redis_cpu_us_per_doc"] = round(total / e2e["landed_unique"] * 1e6, 2) if e2e["landed_unique"] else None
    e2e["redis_cpu_s_per_node"] = {k: round(r1[k] - r0[k], 3) for k in pids}
    e2e["backlog"].pop("samples", None)
    e2e["workers"] = workers
    t.flush()
    return e2e


def xadd_ceiling(port: int, body_len: int, requests: int, pid: int) -> dict:
    """redis-benchmark: XADD of one wharf-sized queue entry against one node, unpipelined and in
    pipelines of 16 (the web role groups submissions per shard), with that node's CPU use."""
    out = {}
    for pipeline in (1, 16):
        argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", "50", "-n", str(requests),
                "-P", str(pipeline), "-r", "100000000", "--csv", "-q"] + harness.xadd_entry_argv(body_len)
        c0, w0, ticks = harness.cpu_seconds(pid), time.monotonic(), harness.machine_ticks()
        res = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        wall = time.monotonic() - w0
        cpu = harness.cpu_seconds(pid) - c0
        out[f"p{pipeline}"] = {"xadd_per_s": harness._rb_rps(res.stdout),
                               "redis_cpu_percent": round(100 * cpu / wall, 1),
                               "redis_cpu_us_per_xadd": round(cpu / requests * 1e6, 2),
                               "steal_percent": harness.steal_percent(ticks, harness.machine_ticks())}
        cli(port, "FLUSHALL")
    return out


# ---------------------------------------------------------------- logs


def log_problems(work: str) -> dict:
    """Error and warning lines (MozLog Severity 3 and 4) in every web and worker log of a target."""
    found = {}
    for name in sorted(os.listdir(work)):
        if not name.endswith(".log") or not name.startswith(("web", "worker")):
            continue
        errors, warnings, samples = 0, 0, []
        with open(os.path.join(work, name), errors="replace") as f:
            for line in f:
                if '"Severity":3' in line or '"Severity":2' in line:
                    errors += 1
                elif '"Severity":4' in line:
                    warnings += 1
                else:
                    continue
                if len(samples) < 5:
                    samples.append(line.strip()[:400])
        if errors or warnings:
            found[name] = {"errors": errors, "warnings": warnings, "first": samples}
    return found


# ---------------------------------------------------------------- main


def main() -> int:
    ap = harness.ResultArgs(__doc__, "directory holding wharf and s3-standin (bench/run passes it)",
                            "smoke run (about 30 s): standalone, cluster-1m and cluster-3m, 1 round of 2 s, end to "
                            "end on cluster-3m only", ("cluster-latest.json", "quick.cluster.json"),
                            report=report, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", nargs=2, type=int, metavar=("SHARDS", "MASTERS"),
                    help="print which master holds each shard stream, with evenly split slot ranges and with "
                    "balanced ones, and exit")
    ap.add_argument("--oha", default=harness.default_oha())
    ap.add_argument("--rounds", type=int, help="interleaved saturation rounds (default 7, quick 1): many short rounds, "
                    "so that the median survives a noisy neighbour")
    ap.add_argument("--duration", type=float, help="seconds per saturation phase (default 3, quick 2)")
    ap.add_argument("--shards", type=int, default=DEFAULT_SHARDS, help="QUEUE_SHARDS of every configuration but -s60")
    ap.add_argument("--size", type=int, default=1024, help="document size in bytes before gzip")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--no-replicas", action="store_true", help="leave out the 6-node configurations")
    ap.add_argument("--wait-shards", default="", metavar="N,N",
                    help="more REDIS_MIN_REPLICAS_ACK=1 webs on the 6 nodes, one per QUEUE_SHARDS value given "
                    "(cluster-3m-r1-wait1-s<N>; saturation only): how WAIT's cost depends on shards per master")
    ap.add_argument("--no-s60", action="store_true", help="leave out the QUEUE_SHARDS=60 configuration")
    ap.add_argument("--e2e-duration", type=float, help="seconds of end-to-end load per configuration (default 20, quick 3; 0: none)")
    ap.add_argument("--e2e-load", type=float, default=0.6,
                    help="end-to-end offered rate, as a fraction of the lowest median saturation")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    if args.layout:
        print(layout_text(*args.layout))
        return 0
    if not args.bin_dir:
        ap.error("--bin-dir is required (or run bench/run --cluster)")
    quick = args.quick
    rounds = max(1, args.rounds or (1 if quick else 7))
    duration = args.duration or (2.0 if quick else 3.0)
    e2e_duration = args.e2e_duration if args.e2e_duration is not None else (2.0 if quick else 20.0)
    worker_env = {"BATCH_MAX_AGE_MS": "1000"} if quick else {}
    harness.need_tools(("redis-server", "redis-cli", "redis-benchmark"))
    if not os.path.exists(args.oha):
        raise HarnessError("oha not found: bench/install-tools")
    harness.need_bins(args.bin_dir, ("wharf", "s3-standin"))

    started = time.time()
    work = tempfile.mkdtemp(prefix="wharf-bench-cluster-")

    def target(name, **kw):
        return Target(name, args.bin_dir, os.path.join(work, name), args.oha, kw.pop("shards", args.shards), **kw)

    standalone = target("standalone")
    one = target("cluster-1m")
    one.cluster = RedisCluster(one, "1m", 1, 0)
    three = target("cluster-3m")
    three.cluster = RedisCluster(three, "3m", 3, 0)
    targets = [standalone, one, three]
    if quick:
        args.no_replicas = args.no_s60 = True
    if not args.no_s60:
        s60 = target("cluster-3m-s60", shards=60)
        targets.append(s60)
    if not args.no_replicas:
        rep = target("cluster-3m-r1")
        rep.cluster = RedisCluster(rep, "3m-r1", 3, 1)
        wait1 = target("cluster-3m-r1-wait1", web_env={"REDIS_MIN_REPLICAS_ACK": "1"})
        targets += [rep, wait1]
        for n in (int(x) for x in args.wait_shards.split(",") if x.strip()):
            targets.append(target(f"cluster-3m-r1-wait1-s{n}", shards=n, web_env={"REDIS_MIN_REPLICAS_ACK": "1"}))
    result = {
        **harness.run_header("bench/cluster.py"),
        "tools": {"oha": subprocess.run([args.oha, "--version"], capture_output=True, text=True).stdout.strip(),
                  "redis": harness._version(["redis-server", "--version"])},
        "mode": "quick" if quick else "default",
        "source": harness.git_source(["crates", "Cargo.lock"], commit_key="commit"),
        "settings": {"rounds": rounds, "duration_s": duration, "connections": args.connections, "size": args.size,
                     "queue_shards": args.shards, "e2e_duration_s": e2e_duration, "e2e_load": args.e2e_load,
                     "workers": args.workers, "worker_env": worker_env},
        "configurations": {},
    }
    try:
        for t in targets:
            if t.name == "cluster-3m-s60":
                t.use_cluster_of(three)
            elif t.name.startswith("cluster-3m-r1-wait1"):
                t.use_cluster_of(rep)
            else:
                log(f"{t.name}: starting redis")
                t.start_own_redis()
                if t.cluster:
                    log(f"  {len(t.cluster.nodes)} nodes healthy in {t.cluster.started_in_s} s")
            t.start_web(t.web_env)
        body_file = os.path.join(work, "body.json.gz")
        body, raw = bodies.write_gzipped(body_file, args.size)
        result["document"] = {"raw_bytes": raw, "gzip_bytes": len(body)}
        for t in targets:
            masters = t.masters()
            sm = t.shard_master()
            result["configurations"][t.name] = {
                "redis_nodes": len(t.redis_pids()),
                "masters": len(masters),
                "replicas_per_master": t.cluster.replicas if t.cluster else 0,
                "queue_shards": t.queue_shards,
                "web_env": t.web_env,
                "shards_per_master": {str(p): sorted(n for n, q in sm.items() if q == p) for p in masters},
                "slots_per_master": ({str(r["port"]): r["slots"] for r in t.cluster.view() if r["master"]}
                                     if t.cluster else None),
                "rounds": [],
            }
        for t in targets:
            t.flush()

        # Saturation, interleaved.
        by_name = {t.name: t for t in targets}

        def phase(r: int, _attempt: int, name: str) -> dict:
            f = saturation(by_name[name], body_file, duration, args.connections)
            log(f"round {r + 1}/{rounds} {name}: {f['throughput_rps']} req/s, web {f['web_cpu_us_per_request']} us/req, "
                f"redis {f['redis_cpu_us_per_doc']} us/doc, p99 {f['p99_ms']} ms, steal {f['steal_percent']} %, "
                f"other processes {f['other_cpu_cores']} cores")
            return f

        for name, figs in harness.interleaved_rounds(list(by_name), rounds, phase, "attempts").items():
            result["configurations"][name]["rounds"] += figs
        base = [f["throughput_rps"] for f in result["configurations"]["standalone"]["rounds"]]
        base_web = [f["web_cpu_us_per_request"] for f in result["configurations"]["standalone"]["rounds"]]
        base_redis = [f["redis_cpu_us_per_doc"] for f in result["configurations"]["standalone"]["rounds"]]
        for name, c in result["configurations"].items():
            rs = c["rounds"]
            c["median_rps"] = statistics.median(f["throughput_rps"] for f in rs)
            c["ratio_to_standalone"] = round(statistics.median(
                f["throughput_rps"] / b for f, b in zip(rs, base) if b), 3)
            c["ratio_per_round"] = [round(f["throughput_rps"] / b, 3) if b else None for f, b in zip(rs, base)]
            c["median_web_cpu_us_per_request"] = statistics.median(f["web_cpu_us_per_request"] for f in rs)
            c["median_redis_cpu_us_per_doc"] = statistics.median(f["redis_cpu_us_per_doc"] for f in rs)
            c["web_cpu_ratio_to_standalone"] = round(statistics.median(
                f["web_cpu_us_per_request"] / b for f, b in zip(rs, base_web) if b), 3)
            c["redis_cpu_ratio_to_standalone"] = round(statistics.median(
                f["redis_cpu_us_per_doc"] / b for f, b in zip(rs, base_redis) if b), 3)
            c["steal_percent"] = [f["steal_percent"] for f in rs]
            c["other_cpu_cores"] = [f["other_cpu_cores"] for f in rs]
            c["non_200"] = sum(f["requests"] - f["ok"] for f in rs)
            total = sum(sum(f["docs_per_master"].values()) for f in rs)
            share: dict[str, float] = {}
            for f in rs:
                for port, n in f["docs_per_master"].items():
                    share[port] = share.get(port, 0) + n
            c["docs_share_per_master"] = {p: round(n / total, 3) for p, n in share.items()} if total else {}
            log(f"{name}: median {c['median_rps']} req/s = {c['ratio_to_standalone']} of standalone "
                f"(rounds {c['ratio_per_round']}), web {c['median_web_cpu_us_per_request']} us/req, "
                f"redis {c['median_redis_cpu_us_per_doc']} us/doc, share per master {c['docs_share_per_master']}")

        # One master's XADD ceiling (redis-benchmark), on the 1-master cluster's only node.
        node = one.cluster.nodes[0]
        result["xadd_ceiling_one_master"] = xadd_ceiling(node["port"], len(body), 20000 if quick else 200000,
                                                         node["proc"].pid)
        log(f"one master, redis-benchmark XADD: {result['xadd_ceiling_one_master']}")

        # End to end through workers, the same offered rate for each configuration.
        if e2e_duration > 0:
            e2e_targets = [t for t in targets if t.name != "cluster-3m-s60" and "-wait1-s" not in t.name
                           and (not quick or t.name == "cluster-3m")]
            # The rate comes from the configurations without WAIT, so that WAIT's cost shows as
            # fewer accepted documents rather than a lower rate for everyone.
            lowest = min(result["configurations"][t.name]["median_rps"] for t in e2e_targets
                         if "wait" not in t.name)
            rate = max(10, round(lowest * args.e2e_load))
            result["e2e_offered_rps"] = rate
            for t in e2e_targets:
                log(f"end to end {t.name}: {args.workers} workers, {rate}/s for {e2e_duration}s")
                e2e = end_to_end(t, body_file, rate, e2e_duration, args.connections, args.workers, worker_env)
                result["configurations"][t.name]["end_to_end"] = e2e
                log(f"  accepted {e2e['accepted']} landed {e2e['landed_unique']} dups {e2e['duplicates']}, "
                    f"{e2e['end_to_end_docs_per_s']} docs/s during load, cpu us/doc web {e2e['cpu_s_per_1k_docs']['web']} "
                    f"workers {e2e['cpu_s_per_1k_docs']['workers']} (ms per 1k), redis {e2e['redis_cpu_us_per_doc']} us/doc, "
                    f"p50 {e2e['submission_to_object_s']['p50']} s, steal {e2e['steal_percent']} %")
    finally:
        for t in reversed(targets):
            t.stop_all()
        for t in targets:
            if t.name in result["configurations"]:
                result["configurations"][t.name]["log_problems"] = log_problems(t.work)
        harness.close_work(result, started, work, keep=False)

    result["shard_spread_even_slot_ranges"] = {
        str(m): {str(n): spread(n, m) for n in (4, 8, 12, 16, 24, 48, 54, 60, 64, 120)} for m in (2, 3, 4, 6, 8)}
    return harness.publish(result, args.out, report(result), check(result, e2e_duration > 0) if args.check else None,
                           "check passed: every configuration produced figures")


def check(r: dict, e2e: bool) -> list[str]:
    """Did every configuration run and produce figures? (Never judges whether they are fast.)"""
    problems = []
    for name, c in r.get("configurations", {}).items():
        if not c.get("rounds") or any(not f.get("ok") or f.get("redis_cpu_us_per_doc") is None for f in c["rounds"]):
            problems.append(f"{name}: a saturation phase has no successful requests")
        if e2e and name != "cluster-3m-s60" and "-wait1-s" not in name and (r["mode"] != "quick" or name == "cluster-3m"):
            e = c.get("end_to_end")
            if not e or not e.get("landed_unique") or not e.get("all_accepted_landed"):
                problems.append(f"{name}: end to end did not land every accepted document")
    if not r.get("configurations"):
        problems.append("no configuration was measured")
    return problems


_f = harness.fmt


def report(r: dict) -> str:
    m = r["machine"]
    s = r["settings"]
    out = [f"Run {r['date']}, `{r['command']}`, {m['cores']} cores ({m['cpu']}), load average at start "
           f"{m['loadavg_at_start'][0]:.2f}, {r['tools']['oha']}, {r['tools']['redis'].split(' sha')[0]}; "
           f"{r['document']['raw_bytes']} B JSON documents ({r['document']['gzip_bytes']} B gzip), "
           f"{s['rounds']} rounds of {s['duration_s']:.0f} s, {s['connections']} connections; took {r['elapsed_s']:.0f} s.", "",
           "| configuration | redis nodes | QUEUE_SHARDS | median req/s | / standalone (per round) | web CPU us/req | "
           "Redis CPU us/doc (all nodes) | busiest node CPU % | docs per master | CPU steal % per round | "
           "other processes, cores | non-200 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, c in r["configurations"].items():
        busiest = statistics.median(f["redis_busiest_node_cpu_percent"] for f in c["rounds"])
        share = " / ".join(f"{v:.0%}" for v in c["docs_share_per_master"].values())
        out.append(f"| {name} | {c['redis_nodes']} | {c['queue_shards']} | {_f(c['median_rps'])} | "
                   f"**{c['ratio_to_standalone']:.2f}** ({', '.join(f'{q:.2f}' for q in c['ratio_per_round'])}) | "
                   f"{c['median_web_cpu_us_per_request']:.1f} | {c['median_redis_cpu_us_per_doc']:.1f} | {busiest} | "
                   f"{share} | {', '.join(str(x) for x in c['steal_percent'])} | "
                   f"{', '.join(str(x) for x in c.get('other_cpu_cores', []))} | {c['non_200']} |")
    out += ["", "Shards per master (slot of `wharf:{n}:submissions` = CRC16(\"n\") mod 16384):", ""]
    for name, c in r["configurations"].items():
        if c["masters"] > 1:
            out.append(f"- {name}: " + "; ".join(f"{p}: {len(v)} ({', '.join(map(str, v))})"
                                                 for p, v in c["shards_per_master"].items()))
    x = r.get("xadd_ceiling_one_master")
    if x:
        out += ["", "One master's XADD ceiling (redis-benchmark, 50 clients, one wharf-sized entry per XADD):", "",
                "| pipeline | XADD/s | redis CPU % | redis CPU us per XADD | steal % |", "|---|---|---|---|---|"]
        for k, v in x.items():
            out.append(f"| {k[1:]} | {_f(v['xadd_per_s'])} | {v['redis_cpu_percent']} | {v['redis_cpu_us_per_xadd']} | {v['steal_percent']} |")
    e2e = {n: c["end_to_end"] for n, c in r["configurations"].items() if c.get("end_to_end")}
    if e2e:
        out += ["", f"End to end ({s['workers']} workers, offered {_f(r.get('e2e_offered_rps'))} req/s for "
                f"{s['e2e_duration_s']:.0f} s each):", "",
                "| configuration | accepted | landed (dups) | docs/s landed during load | web / workers CPU us per doc | "
                "Redis CPU us/doc (write+read+ack) | submission to object p50 / p99 s | backlog max | steal % |",
                "|---|---|---|---|---|---|---|---|---|"]
        for n, e in e2e.items():
            c = e["cpu_s_per_1k_docs"]
            lat = e["submission_to_object_s"]
            out.append(f"| {n} | {_f(e['accepted'])} | {_f(e['landed_unique'])} ({e['duplicates']}) | "
                       f"{_f(e['end_to_end_docs_per_s'])} | {_f((c['web'] or 0) * 1000, 1)} / {_f((c['workers'] or 0) * 1000, 1)} | "
                       f"{_f(e['redis_cpu_us_per_doc'], 1)} | {lat['p50']} / {lat['p99']} | {_f(e['backlog']['max'])} | {e['steal_percent']} |")
    probs = {n: c.get("log_problems") for n, c in r["configurations"].items() if c.get("log_problems")}
    if probs:
        out += ["", "Errors and warnings in the logs:"]
        for n, p in probs.items():
            for logname, v in p.items():
                out.append(f"- {n} {logname}: {v['errors']} errors, {v['warnings']} warnings; first: {v['first'][:1]}")
    return "\n".join(out)


if __name__ == "__main__":
    harness.run_main(main)
