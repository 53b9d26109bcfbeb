"""Dashboards and monitors as code use only Wharf's documented metric names."""

from __future__ import annotations

import json
import re

from conftest import ROOT

# docs/metrics.md (written by the lead) is the source of truth; this is the agreed list.
METRICS = {
    "wharf.request.count", "wharf.request.duration",
    "wharf.submission.accepted", "wharf.submission.rejected",
    "wharf.enqueue.duration", "wharf.heartbeat.check",
    "wharf.worker.entries.acked", "wharf.worker.entries.claimed", "wharf.worker.entries.dead_lettered",
    "wharf.worker.entries.lost_lease", "wharf.worker.read.errors",
    "wharf.worker.batch.documents", "wharf.worker.batch.bytes",
    "wharf.s3.put.duration", "wharf.s3.put.errors",
    "wharf.queue.backlog", "wharf.queue.waiting", "wharf.queue.inflight", "wharf.queue.dead", "wharf.workers.live",
}
# DogStatsD timers/histograms become NAME.avg, NAME.max, NAME.95percentile, ... in Datadog.
SUFFIX = re.compile(r"\.(avg|max|min|median|count|95percentile|99percentile)$")


def queries(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("q", "query") and isinstance(v, str):
                yield v
            else:
                yield from queries(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from queries(v)


def names_in(path):
    data = json.loads((ROOT / path).read_text(encoding="utf-8"))
    found = set()
    for q in queries(data):
        for name in re.findall(r"wharf\.[a-z0-9_.]+[a-z0-9]", q):
            found.add(name if name in METRICS else SUFFIX.sub("", name))
    return found


def test_dashboard_metrics_are_known():
    found = names_in("deploy/datadog/dashboard.json")
    assert found and found <= METRICS, found - METRICS


def test_monitor_metrics_are_known():
    found = names_in("deploy/datadog/monitors.json")
    assert found and found <= METRICS, found - METRICS


def test_refused_writes_and_dead_letters_are_monitored():
    data = json.loads((ROOT / "deploy/datadog/monitors.json").read_text(encoding="utf-8"))
    qs = [m["query"] for m in data["monitors"]]
    assert any("wharf.s3.put.errors{kind:refused}" in q for q in qs), qs
    assert any("wharf.queue.dead" in q for q in qs), qs
    assert not any("wharf.worker.jobs." in q for q in qs), qs


def test_metrics_documented_if_metrics_md_present():
    doc = ROOT / "docs" / "metrics.md"
    if not doc.exists():
        import pytest
        pytest.skip("docs/metrics.md not in this tree yet (the lead writes it)")
    text = doc.read_text(encoding="utf-8")
    used = names_in("deploy/datadog/dashboard.json") | names_in("deploy/datadog/monitors.json")
    missing = sorted(n for n in used if n not in text)
    assert not missing, f"used by dashboards/monitors but not in docs/metrics.md: {missing}"
