"""pytest fixtures for the real-browser tests (implementation in browser_harness.py, a uniquely
named module so it can't clash with other test directories' conftest).

Without Chromium, chromedriver, selenium, redis-py or redis-server these tests are skipped on a
developer's machine and fail under CI=true (scripts/install-test-deps installs them all).
"""

from __future__ import annotations

import pytest

from browser_harness import Browser, PageServer, Stack, missing_tools, skip_or_fail


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="session", autouse=True)
def _tools():
    missing = missing_tools()
    if missing:
        skip_or_fail("; ".join(missing))


@pytest.fixture(scope="session")
def page_server():
    server = PageServer()
    yield server
    server.close()


def _failed(request) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture
def make_stack(request, tmp_path):
    """make_stack(web_env) starts redis-server, s3-standin, `wharf web` (web_env added to its
    environment) and `wharf worker`; all are stopped when the test ends."""
    stacks: list[Stack] = []

    def make(web_env: dict[str, str] | None = None, worker: bool = True) -> Stack:
        d = tmp_path / f"stack{len(stacks)}"
        d.mkdir()
        stack = Stack(d, web_env, worker=worker)
        stacks.append(stack)
        return stack

    yield make
    failed = _failed(request)
    for stack in stacks:
        if failed:
            for name in ("web", "worker", "s3-standin"):
                print(f"---- {name}.log (last 4000 characters) ----\n{stack.log(name)[-4000:]}")
        stack.close()


@pytest.fixture
def make_browser():
    """make_browser() starts a headless Chromium with a fresh profile (no cookies); each is
    quit, and checked gone, when the test ends."""
    browsers: list[Browser] = []

    def make(**kw) -> Browser:
        b = Browser(**kw)
        browsers.append(b)
        return b

    yield make
    errors = []
    for b in browsers:
        try:
            b.close()
        except Exception as e:  # noqa: BLE001 - close the others, then report
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def browser(make_browser) -> Browser:
    return make_browser()
