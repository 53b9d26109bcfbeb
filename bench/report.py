#!/usr/bin/env python3
"""Prints a result file of bench/harness.py as the Markdown tables of docs/benchmarks.md."""

import json
import sys


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def second_op(rb: dict):
    """Baseline (b)'s second figure and its label: one XADD of a queue entry (queue v2), or
    apalis-redis's push script in result files written before it."""
    if "xadd_entry_rps" in rb:
        return rb["xadd_entry_rps"], "XADD entry"
    return rb.get("apalis_push_one_job_rps"), "apalis push script"


def main(path: str) -> None:
    r = json.load(open(path))
    m = r["machine"]
    print(f"Run {r['date']}, `{r['command']}`, {m['cores']} cores ({m['cpu']}), load average at start "
          f"{m['loadavg_at_start'][0]:.2f}, {r['tools']['oha']}, {r['tools']['redis'].split(' sha')[0]}; "
          f"took {r['elapsed_s']:.0f} s.\n")
    label = second_op(next(iter(r["sizes"].values()))["redis_benchmark"])[1] if r["sizes"] else "XADD entry"
    print("| document | baseline (a) req/s | wharf req/s | wharf / (a) | wharf p50 / p99 / p99.9 ms | "
          f"web CPU ms per 1k (a) | Redis CPU ms per 1k (a) | web peak RSS MB | redis-benchmark (b) RPUSH / {label} per s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, e in r["sizes"].items():
        b, w, rb = e["baseline_saturation"], e["wharf_saturation"], e["redis_benchmark"]
        print(f"| {size} B JSON, {e['gzip_bytes']} B gzip | {fmt(b['throughput_rps'], 0)} | {fmt(w['throughput_rps'], 0)} | "
              f"**{e['wharf_fraction_of_baseline']:.2f}** | {w['p50_ms']} / {w['p99_ms']} / {w['p99_9_ms']} | "
              f"{w['cpu_s_per_1k_docs'] * 1000:.1f} ({b['cpu_s_per_1k_docs'] * 1000:.1f}) | "
              f"{fmt((w.get('redis_cpu_s_per_1k_docs') or 0) * 1000)} ({fmt((b.get('redis_cpu_s_per_1k_docs') or 0) * 1000)}) | "
              f"{w['peak_rss_mb']} | {fmt(rb['rpush_body_rps'], 0)} / {fmt(second_op(rb)[0], 0)} |")
    if any(e.get("saturation_rounds") for e in r["sizes"].values()):
        print("\nSaturation rounds (interleaved; the table above shows the median round):\n")
        print("| document | round | baseline (a) req/s | wharf req/s | wharf / (a) | web CPU ms per 1k (a) | CPU steal % (a / wharf) |")
        print("|---|---|---|---|---|---|---|")
        for size, e in r["sizes"].items():
            for i, q in enumerate(e.get("saturation_rounds", []), 1):
                print(f"| {size} B | {i} | {fmt(q['baseline_rps'], 0)} | {fmt(q['wharf_rps'], 0)} | {q['wharf_fraction_of_baseline']:.2f} | "
                      f"{q['wharf_cpu_s_per_1k_docs'] * 1000:.1f} ({q['baseline_cpu_s_per_1k_docs'] * 1000:.1f}) | "
                      f"{' / '.join(fmt(x) for x in q.get('steal_percent') or [])} |")
    first = next(iter(r["sizes"].values()))
    if first.get("sweep"):
        print("\nFixed offered rates (open loop, oha `-q` with `--latency-correction`, 50 connections), first size:\n")
        print("| target | offered req/s | % of its saturation | achieved req/s | p50 ms | p99 ms | p99.9 ms | CPU steal % |")
        print("|---|---|---|---|---|---|---|---|")
        for target in ("wharf", "baseline"):
            for f in first["sweep"].get(target, []):
                print(f"| {'wharf web' if target == 'wharf' else 'baseline (a)'} | {fmt(f['offered_rps'])} | "
                      f"{f['fraction_of_saturation']:.0%} | {fmt(f['throughput_rps'], 0)} | {f['p50_ms']} | {f['p99_ms']} | {f['p99_9_ms']} | "
                      f"{fmt(f.get('steal_percent'))} |")
    e = r.get("end_to_end")
    if e:
        lat = e["submission_to_object_s"]
        print(f"\nEnd to end ({e['workers']} workers, {e['size']} B documents, offered {fmt(e['offered_rps'])} req/s for "
              f"{e['duration_s']:.0f} s, worker settings {r['settings']['worker_env'] or 'shipped defaults'}):\n")
        print("| figure | value |")
        print("|---|---|")
        print(f"| accepted (200) | {fmt(e['accepted'])} ({fmt(e['submission']['throughput_rps'], 0)} req/s) |")
        print(f"| landed in S3 (unique docIds, counted by decoding every object) | {fmt(e['landed_unique'])}, duplicates {e['duplicates']} |")
        print(f"| landed during the load window | {fmt(e['landed_during_load'])} = **{fmt(e['end_to_end_docs_per_s'], 0)} docs/s**, "
              f"{e['end_to_end_fraction_of_submission']:.3f} of accepted |")
        print(f"| queue backlog | max {fmt(e['backlog']['max'])}; drained {e['drain_s_after_load']} s after the load stopped |")
        print(f"| submission to object | p50 {lat['p50']} s, p99 {lat['p99']} s, max {lat['max']} s |")
        print(f"| peak RSS MB (before load) | " + ", ".join(
            f"{k} {v} ({e['rss_before_load_mb'].get(k)})" for k, v in e["peak_rss_mb"].items()) + " |")
        print(f"| worker held-document bound (WORKER_MAX_HELD_DOCUMENTS / _BYTES, as NDJSON lines of this size) | {e.get('worker_buffer_bound_mb')} MB |")
        c = e["cpu_s_per_1k_docs"]
        print(f"| CPU seconds per 1,000 documents | web {c['web']}, workers {c['workers']}, both {c['both']} |")
        print(f"| CPU seconds per million documents, both roles | **{fmt(e['cpu_s_per_million_docs_both'], 0)}** |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest.json")
