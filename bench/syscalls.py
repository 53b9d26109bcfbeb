#!/usr/bin/env python3
"""Syscalls per request of `wharf web` at saturation, counted with `perf stat` tracepoints.

Unlike throughput, these counts hardly depend on how busy the machine is, so they show whether a
change removed work from the request path even on a noisy shared machine. Needs `perf` with
tracepoint access (root, or kernel.perf_event_paranoid <= 1).

    python3 bench/syscalls.py --bin-dir target/release [K=V ...]   # extra web environment
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bodies  # noqa: E402
import harness  # noqa: E402

EVENTS = ["raw_syscalls:sys_enter", "syscalls:sys_enter_futex", "syscalls:sys_enter_write",
          "syscalls:sys_enter_writev", "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom",
          "syscalls:sys_enter_epoll_wait", "syscalls:sys_enter_sched_yield", "context-switches"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds of load; perf counts the middle part")
    ap.add_argument("--oha", default=harness.default_oha())
    ap.add_argument("env", nargs="*", help="extra web environment, K=V")
    args = ap.parse_args()
    if not shutil.which("perf"):
        raise harness.HarnessError("perf not found (apt-get install linux-perf)")

    with harness.services(args.bin_dir, "wharf-syscalls-", args.oha) as svc:
        svc.start_redis()
        svc.start_web(dict(kv.split("=", 1) for kv in args.env))
        body_file = os.path.join(svc.work, "body.json.gz")
        bodies.write_gzipped(body_file, 1024)
        load: dict = {}
        driver = threading.Thread(target=lambda: load.update(
            harness.oha_run(svc, svc.web_port, body_file, args.duration, 50, None)))
        driver.start()
        window = max(1.0, args.duration - 3.0)
        counts_file = os.path.join(svc.work, "perf.csv")
        # Counted over `window` seconds starting 1 s into the load; requests in the window are
        # estimated from oha's average rate.
        threading.Event().wait(1.0)
        subprocess.run(["perf", "stat", "-x,", "-o", counts_file, "-e", ",".join(EVENTS), "-p", str(svc.web.pid),
                        "--", "sleep", str(window)], check=True, capture_output=True)
        driver.join()
        requests = load["throughput_rps"] * window
        print(f"{load['throughput_rps']:.0f} req/s; per request over {window:.0f} s:")
        with open(counts_file) as f:
            for line in f:
                parts = line.strip().split(",")
                if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                    print(f"  {parts[2]:32s} {float(parts[0]) / requests:6.2f}")
    return 0


if __name__ == "__main__":
    harness.run_main(main)
