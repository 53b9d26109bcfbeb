"""Replays every request in tests/corpus/requests/ over real TCP against the real `wharf web`
(with a real redis-server) and checks the answers against tests/corpus/expected.toml.

    python3 -m pytest -q tests/corpus

CORPUS_REPORT=<file> writes every case's expected and actual answer as JSON.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from corpus_harness import BODY_TIMEOUT_MS, Redis, Wharf, find_exe, http_status, replay, wharf_bin

HERE = Path(__file__).resolve().parent
# Loaded under its own name: "generate" is too common a module name to put on sys.path.
_spec = importlib.util.spec_from_file_location("corpus_generate", HERE / "generate.py")
generate = sys.modules["corpus_generate"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)
MANIFEST = tomllib.loads((HERE / "expected.toml").read_text())
CASES = MANIFEST["case"]
RESULTS: dict[str, dict] = {}


def case_id(case: dict) -> str:
    return case["file"].removesuffix(".http")


@pytest.fixture(scope="module")
def wharf(tmp_path_factory):
    if find_exe("redis-server") is None:
        pytest.skip("SKIPPED: redis-server not installed (apt-get install redis-server)")
    exe = wharf_bin()
    if exe is None:
        pytest.skip("SKIPPED: no wharf binary (cargo build -p wharf --bin wharf, or set WHARF_BIN)")
    tmp = tmp_path_factory.mktemp("corpus")
    redis = Redis(tmp)
    try:
        web = Wharf(exe, tmp, redis, BODY_TIMEOUT_MS=BODY_TIMEOUT_MS,
                    CORS_ALLOWED_ORIGINS=generate.ALLOWED_ORIGIN)
    except Exception:
        redis.close()
        log = tmp / "wharf.log"
        print(log.read_text(errors="replace")[-4000:] if log.exists() else "")
        raise
    yield web, redis
    web.close()
    redis.close()
    report = os.environ.get("CORPUS_REPORT")
    if report:
        Path(report).write_text(json.dumps(RESULTS, indent=2, sort_keys=True))


def test_corpus_files_match_the_generator():
    assert not generate.differences(), "run: python3 tests/corpus/generate.py"


def test_corpus_is_big_enough():
    assert len(CASES) >= 90


def matches(case: dict, statuses: list[int], closed: bool) -> bool:
    expect = case["expect"]
    if statuses == expect and (closed or not case.get("closes")):
        return True
    # "status or closed": the connection closed before (all of) the expected answers.
    return bool(case.get("or_closed")) and closed and statuses == expect[: len(statuses)]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(wharf, case):
    web, _ = wharf
    data = (HERE / "requests" / case["file"]).read_bytes()
    expect = case["expect"]
    outcome = replay(
        web.port,
        data,
        expected_responses=len(expect),
        must_close=bool(case.get("closes")),
        head=bool(case.get("head")),
        half_close=bool(case.get("half_close")),
        send_slowly=bool(case.get("send_slowly")),
        expect_continue=bool(case.get("expect_continue")),
        timeout=float(case.get("timeout", 5.0)),
    )
    RESULTS[case_id(case)] = {
        "expect": expect,
        "or_closed": bool(case.get("or_closed")),
        "closes": bool(case.get("closes")),
        "statuses": outcome.statuses,
        "closed": outcome.closed,
        "actual": outcome.summary(),
        "raw": outcome.raw[:200].decode("latin-1"),
    }
    detail = f"{case['why']}\nexpected {expect}{' or closed' if case.get('or_closed') else ''}" \
             f"{' then close' if case.get('closes') else ''}; got {outcome.summary()}\nraw: {outcome.raw[:300]!r}"
    assert not outcome.garbage, detail
    assert matches(case, outcome.statuses, outcome.closed), detail
    assert 101 not in outcome.statuses, detail
    if outcome.responses and outcome.responses[-1].status == expect[-1]:
        for name in case.get("headers", []):
            assert name in outcome.responses[-1].headers, f"{detail}\nmissing response header {name}"
        for name in case.get("no_headers", []):
            assert name not in outcome.responses[-1].headers, f"{detail}\nunexpected response header {name}"


def need_results() -> None:
    if not RESULTS:
        pytest.skip("runs after the cases (select them too)")


def test_no_unexpected_server_errors(wharf):
    """No case got a 5xx its manifest entry does not expect."""
    need_results()
    surprises = {
        name: r["actual"]
        for name, r in RESULTS.items()
        if any(s >= 500 and s not in r["expect"] for s in r["statuses"])
    }
    assert not surprises, surprises


def test_only_accepted_submissions_are_stored(wharf):
    """Each document on the queue belongs to a case that got a 200 for it, and every case that
    passed stored exactly what its manifest says (no 200 with side effects, no rejection that
    stored anyway)."""
    need_results()
    _, redis = wharf
    stored = Counter()
    for attributes in redis.stored_attributes():
        m = re.match(r"corpus-(\d{3})", attributes.get("x_debug_id", ""))
        assert m, f"a document without a corpus X-Debug-ID: {attributes}"
        stored[int(m.group(1))] += 1
    problems = []
    for number, case in enumerate(CASES, start=1):
        result = RESULTS.get(case_id(case))
        if result is None:
            continue
        got_200 = result["statuses"].count(200)
        if stored[number] > got_200:
            problems.append(f"{case_id(case)}: {stored[number]} stored, {got_200} answered 200")
        if matches(case, result["statuses"], result["closed"]) and stored[number] != case.get("stores", 0):
            problems.append(f"{case_id(case)}: {stored[number]} stored, manifest says {case.get('stores', 0)}")
    assert not problems, "\n".join(problems)


def test_server_survived(wharf):
    web, _ = wharf
    assert web.proc.poll() is None, f"wharf web exited with {web.proc.returncode}"
    assert http_status(web.url("/__lbheartbeat__")) == 200
    output = web.output()
    assert "panicked" not in output, output[-4000:]
