#!/usr/bin/env python3
"""A/B of `wharf web` builds on one noisy machine: baseline (a) and every build, round robin, N rounds.

Each build is a directory holding `wharf` (for example a release build of another commit copied
aside); the first one also supplies `wharf-bench-baseline`. A build may carry extra web environment
after colons: `DIR:STATSD_HOST=:LOG_LEVEL=warn`. Every build runs as its own process on the same
Redis, and each round saturates the baseline and every build in turn (rotating the order), so the
per-round ratio to the baseline compares moments close together. Prints, per build, the median
req/s, the median ratio to the same round's baseline (with its range), the median web CPU per
request and the peak RSS.

    python3 bench/ab.py /tmp/before /tmp/after --rounds 8 --duration 3
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402
import harness  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="DIR[:K=V...] holding a wharf binary")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per saturation phase")
    ap.add_argument("--size", type=int, default=1024, help="document size in bytes before gzip")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--oha", default=harness.default_oha())
    args = ap.parse_args()

    first_dir = args.builds[0].split(":")[0]
    targets: dict[str, tuple[int, object]] = {}
    with harness.services(first_dir, "wharf-ab-", args.oha) as svc:
        svc.start_redis()
        svc.start_baseline()
        targets["baseline (a)"] = (svc.baseline_port, svc.baseline)
        for build in args.builds:
            directory, *assignments = build.split(":")
            svc.bin_dir = directory
            svc.start_web(dict(kv.split("=", 1) for kv in assignments))
            targets[build] = (svc.web_port, svc.web)
        body_file = os.path.join(svc.work, "body.json.gz")
        bodies.write_gzipped(body_file, args.size)

        names = list(targets)
        results: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in names}
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                port, proc = targets[name]
                fig, cpu, rss = harness.measured(
                    svc, proc.pid,
                    lambda: harness.oha_run(svc, port, body_file, args.duration, args.connections, None))
                svc.redis("FLUSHALL")
                per_request_us = cpu / fig["ok"] * 1e6 if fig["ok"] else float("nan")
                results[name].append((fig["throughput_rps"], per_request_us, rss, fig.get("steal_percent") or 0.0))
            print(f"round {r + 1}: " + "  ".join(f"{n} {results[n][-1][0]:.0f}/s" for n in names), flush=True)

        base = [x[0] for x in results["baseline (a)"]]
        for name in names:
            rps = [x[0] for x in results[name]]
            ratios = [w / b for w, b in zip(rps, base) if b]
            print(f"{name}: {statistics.median(rps):.0f} req/s, ratio to (a) median {statistics.median(ratios):.3f} "
                  f"[{min(ratios):.3f}-{max(ratios):.3f}], CPU {statistics.median(x[1] for x in results[name]):.1f} us "
                  f"per request, peak RSS {max(x[2] for x in results[name]):.1f} MB, "
                  f"steal median {statistics.median(x[3] for x in results[name]):.1f} %")
    return 0


if __name__ == "__main__":
    harness.run_main(main)
