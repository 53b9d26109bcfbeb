"""Realistic telemetry-like JSON documents, gzip-compressed the way Firefox telemetry clients send them."""

import gzip
import json
import random
import uuid


def _histogram(rng: random.Random, buckets: int) -> dict:
    values = {str(2 ** i): rng.randint(0, 5000) for i in range(buckets) if rng.random() < 0.7}
    return {
        "bucket_count": buckets,
        "histogram_type": rng.choice([0, 1, 2]),
        "sum": sum(values.values()) * rng.randint(1, 9),
        "range": [1, 2 ** buckets],
        "values": values,
    }


def document(target_bytes: int, seed: int = 1) -> bytes:
    """A main-ping-shaped JSON document of about `target_bytes` bytes (never less)."""
    rng = random.Random(seed)
    doc = {
        "type": "main",
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "creationDate": "2026-10-27T12:%02d:%02d.%03dZ" % (rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999)),
        "version": 4,
        "application": {
            "architecture": "x86-64",
            "buildId": "20261020093015",
            "name": "Firefox",
            "version": "132.0.1",
            "displayVersion": "132.0.1",
            "vendor": "Mozilla",
            "platformVersion": "132.0.1",
            "xpcomAbi": "x86_64-gcc3",
            "channel": "release",
        },
        "clientId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "environment": {
            "system": {"memoryMB": rng.choice([4096, 8192, 16384]), "cpu": {"count": rng.choice([2, 4, 8]), "cores": 4, "vendor": "GenuineIntel", "family": 6, "model": 142, "speedMHz": 2112}, "os": {"name": "Windows_NT", "version": "10.0", "locale": "en-US"}},
            "settings": {"blocklistEnabled": True, "e10sEnabled": True, "telemetryEnabled": False, "locale": "en-US", "update": {"channel": "release", "enabled": True, "autoDownload": True}},
        },
        "payload": {"info": {"reason": "daily", "sessionLength": rng.randint(10, 90000), "subsessionCounter": rng.randint(1, 40)}, "histograms": {}},
    }
    names = ["GC_MS", "CYCLE_COLLECTOR", "TIME_TO_FIRST_PAINT", "MEMORY_RESIDENT", "HTTP_PAGELOAD", "SSL_HANDSHAKE", "DNS_LOOKUP", "TAB_SWITCH", "INPUT_EVENT", "FX_PAGE_LOAD", "CONTENT_PAINT", "NETWORK_CACHE"]
    i = 0
    while len(json.dumps(doc, separators=(",", ":"))) < target_bytes:
        name = "%s_%d" % (names[i % len(names)], i // len(names))
        doc["payload"]["histograms"][name] = _histogram(rng, rng.randint(4, 12))
        i += 1
    return json.dumps(doc, separators=(",", ":")).encode()


def gzipped(target_bytes: int, seed: int = 1) -> tuple[bytes, int]:
    """(gzip body, uncompressed size) for a document of about `target_bytes`."""
    raw = document(target_bytes, seed)
    return gzip.compress(raw, compresslevel=6, mtime=0), len(raw)


def write_gzipped(path: str, target_bytes: int) -> tuple[bytes, int]:
    """gzipped(target_bytes), the body also written to `path` for the load generator to post."""
    body, raw = gzipped(target_bytes)
    with open(path, "wb") as f:
        f.write(body)
    return body, raw


if __name__ == "__main__":
    for size in (1024, 10240):
        body, raw = gzipped(size)
        print(size, raw, len(body))
