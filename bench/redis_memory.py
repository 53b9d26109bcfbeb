#!/usr/bin/env python3
"""Redis memory per queued document: a real `wharf web` in front of a fresh redis-server, N
documents posted with no worker running, `used_memory` before and after.

    python3 bench/redis_memory.py --bin target/release/wharf [--docs 5000] [--size 1024]

Run it with two builds to compare queue layouts; the figure is per document, attributes included
(the request headers are those of a typical telemetry client)."""

import argparse
import http.client
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import free_port, wait_port  # noqa: E402


def redis_cmd(port: int, *args: str) -> bytes:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, check=True).stdout


def used_memory(port: int) -> int:
    for line in redis_cmd(port, "INFO", "memory").decode().splitlines():
        if line.startswith("used_memory:"):
            return int(line.split(":")[1])
    raise RuntimeError("no used_memory in INFO")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    rport, wport = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="wharf-redis-mem-")
    redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
    web = None
    try:
        wait_port(rport, 20.0, redis, "redis-server")
        env = dict(os.environ, REDIS_HOST="127.0.0.1", REDIS_PORT=str(rport), HOST="127.0.0.1", PORT=str(wport),
                   LOG_LEVEL="error")
        web = subprocess.Popen([args.bin, "web"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(wport, 20.0, web, "wharf web")
        rng = random.Random(1)
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        conn = http.client.HTTPConnection("127.0.0.1", wport)
        # Warm up (connections, script caches, stream creation) before the first reading.
        for _ in range(10):
            conn.request("POST", f"/submit/bench/warm/1/{uuid.uuid4()}", body=b"{}")
            conn.getresponse().read()
        time.sleep(0.5)
        before = used_memory(rport)
        headers = {"Content-Type": "application/json", "User-Agent": "Glean/64.0.0 (Kotlin on Android)",
                   "Date": "Mon, 01 Dec 2026 02:00:00 GMT", "X-Telemetry-Agent": "Glean/64.0.0 (Kotlin on Android)"}
        for _ in range(args.docs):
            body = ("{\"payload\":\"" + "".join(rng.choice(alphabet) for _ in range(args.size - 14)) + "\"}").encode()
            conn.request("POST", f"/submit/bench/doc/1/{uuid.uuid4()}", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"submission answered {response.status}")
        time.sleep(0.5)
        after = used_memory(rport)
        print(f"{args.bin}: {args.docs} documents of {args.size} B: used_memory {before} -> {after}, "
              f"{(after - before) / args.docs:.0f} B per document")
        return 0
    finally:
        if web:
            web.terminate()
            web.wait(10)
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    sys.exit(main())
