"""Processes for the real-browser tests: a real redis-server, the S3 stand-in (s3-standin,
objects on disk), `wharf web`, `wharf worker`, a static page server on a second origin, and
headless Chromium driven by Selenium.

Everything listens on 127.0.0.1 free ports and is stopped at teardown; `Stack.close` and
`Browser.close` fail the test if a process they started is still running afterwards.
http://127.0.0.1:<web port> (Wharf) and http://127.0.0.1:<page port> (the page) are different
origins: the scheme, host and port must all match for two URLs to share an origin.

Binaries: WHARF_BIN (else target/debug/wharf, then target/release/wharf) and S3_STANDIN_BIN
(else s3-standin beside the wharf binary, then target/debug, target/release); both are built
with cargo when missing. The browser: CHROMIUM_BIN (default /usr/bin/chromium) and
CHROMEDRIVER_BIN (default /usr/bin/chromedriver), Debian's `chromium` and `chromium-driver`.
Selenium is given both paths, so Selenium Manager never runs (it would try to download a driver).
"""

from __future__ import annotations

import base64
import functools
import gzip
import http.server
import importlib.util
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from wharf_harness import REPO, Redis, ServerThread, find_exe, free_port, role_env, stop, wait_http  # noqa: E402
from wharf_harness import wait_port, wait_until, wharf_exe  # noqa: E402

STATIC = HERE / "static"
BUCKET = "wharf-browser"
ACCESS_KEY = "browseraccess"
SECRET_KEY = "browsersecret"
QUEUE_SHARDS = 4  # Wharf's default: streams wharf:{0}:submissions .. wharf:{3}:submissions
BATCH_MAX_AGE_MS = 200

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")


def doc_id() -> str:
    return str(uuid.uuid4())


# ---------------------------------------------------------------------------- what is missing


def missing_tools() -> list[str]:
    """What these tests need and this machine lacks, each with how to install it."""
    missing = []
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not os.access(CHROMEDRIVER, os.X_OK):
        missing.append(f"{CHROMEDRIVER} (apt-get install chromium-driver)")
    for package, version in (("selenium", "4.51.0"), ("redis", "8.1.0")):
        if importlib.util.find_spec(package) is None:
            missing.append(f"the {package} Python package (python3 -m pip install {package}=={version})")
    if find_exe("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    return missing


def skip_or_fail(message: str) -> None:
    """Skips (a developer's machine) or, under CI=true, fails: CI must run these tests."""
    import pytest

    message = f"the real-browser tests need {message} (scripts/install-test-deps installs it)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


def need_selenium() -> None:
    """For the test modules, before they import selenium."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        skip_or_fail("the selenium Python package (python3 -m pip install selenium==4.51.0)")


def _exe_in(dirs, name: str) -> str | None:
    for d in dirs:
        p = Path(d) / name
        if os.access(p, os.X_OK):
            return str(p)
    return None


def s3_standin_exe() -> str | None:
    env = os.environ.get("S3_STANDIN_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    beside = [Path(w).parent for w in [wharf_exe()] if w]
    return _exe_in([*beside, REPO / "target/debug", REPO / "target/release"], "s3-standin")


def binaries() -> tuple[str, str]:
    """(wharf, s3-standin), built with cargo first when either is missing (scripts/test runs
    the cargo tests, which build both, before the Python suites)."""
    if (wharf_exe() is None or s3_standin_exe() is None) and shutil.which("cargo"):
        subprocess.run(
            ["cargo", "build", "--locked", "-q", "-p", "wharf", "-p", "wharf-testkit", "--bins"],
            cwd=REPO, check=True,
        )
    wharf, s3 = wharf_exe(), s3_standin_exe()
    if wharf is None or s3 is None:
        raise RuntimeError("no wharf or s3-standin binary (cargo build -p wharf -p wharf-testkit --bins)")
    return wharf, s3


# ---------------------------------------------------------------------------- processes


def _pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains `text` (a temp path unique to this run)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found


def _kill_stragglers(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Landed:
    """One NDJSON line of an object the worker wrote."""

    key: str
    attributes: dict
    body: bytes

    @property
    def doc_id(self) -> str:
        return self.attributes["uri"].rsplit("/", 1)[-1]


class Stack:
    """redis-server, s3-standin, `wharf web` and `wharf worker`, for one test.

    `web_env` is added to the web role's environment (CORS_ALLOWED_ORIGINS, DEBUG_VIEW_TOKEN...);
    nothing else of this process's environment reaches the roles but PATH.
    """

    def __init__(self, tmp: Path, web_env: dict[str, str] | None = None, worker: bool = True):
        wharf, s3 = binaries()
        self.tmp = tmp
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.redis: Redis | None = None
        self.s3_root = tmp / "s3"
        self.s3_root.mkdir()
        try:
            self.redis = Redis(tmp)
            self.s3_port = free_port()
            self._spawn("s3-standin", [
                s3, "--root", str(self.s3_root), "--host", "127.0.0.1", "--port", str(self.s3_port),
                "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY, "--bucket", BUCKET,
            ], os.environ.copy())
            wait_port(self.s3_port)
            common = role_env(self.redis.port, QUEUE_SHARDS=str(QUEUE_SHARDS))
            self.web_port = free_port()
            web = self._spawn("web", [wharf, "web"], {
                **common,
                "HOST": "127.0.0.1",
                "PORT": str(self.web_port),
                "VERSION_FILE": "/nonexistent",
                **(web_env or {}),
            })
            wait_http(self.url("/__lbheartbeat__"), proc=web)
            if worker:
                self._spawn("worker", [wharf, "worker"], {
                    **common,
                    "S3_BUCKET": BUCKET,
                    "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
                    "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
                    "AWS_REGION": "us-east-1",
                    "BATCH_MAX_AGE_MS": str(BATCH_MAX_AGE_MS),
                })
        except Exception:
            self.close(check=False)
            raise

    def _spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append((name, proc))
        return proc

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"

    def submit_url(self, doc: str, namespace: str = "glean-js", doc_type: str = "metrics", version: str = "1") -> str:
        return self.url(f"/submit/{namespace}/{doc_type}/{version}/{doc}")

    def log(self, name: str) -> str:
        p = self.tmp / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log(name)[-3000:]}")

    # -------------------------------------------------------------- what was stored

    def landed(self) -> list[Landed]:
        """Every document of every object in the bucket (s3s-fs keeps a key as a path under
        root/bucket and writes through a temporary file renamed into place, so an object seen
        is complete)."""
        out = []
        root = self.s3_root / BUCKET
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            key = str(path.relative_to(root))
            if not key.endswith(".ndjson.gz"):
                raise AssertionError(f"unexpected object in the bucket: {key}")
            for line in gzip.decompress(path.read_bytes()).splitlines():
                if line.strip():
                    rec = json.loads(line)
                    out.append(Landed(key, rec["attributes"], base64.b64decode(rec["data"])))
        return out

    def wait_landed(self, doc_ids: set[str], timeout: float = 20.0) -> dict[str, Landed]:
        """Waits until every docId in `doc_ids` is in S3; returns them by docId."""

        def found():
            self.check_alive()
            by_id = {d.doc_id: d for d in self.landed()}
            return by_id if doc_ids <= by_id.keys() else None

        return wait_until(found, timeout, f"documents {sorted(doc_ids)} in S3", interval=0.1)

    def redis_streams(self) -> dict[str, dict]:
        """XINFO STREAM of every shard's submission stream that exists (length, entries-added)."""
        shards = set(range(QUEUE_SHARDS))
        for member in self.redis.command("SMEMBERS", "wharf:queue:shards") or []:
            if member.isdigit():
                shards.add(int(member))
        out = {}
        for n in sorted(shards):
            key = f"wharf:{{{n}}}:submissions"
            if self.redis.command("EXISTS", key):
                info = self.redis.command("XINFO", "STREAM", key)
                fields = dict(zip(info[::2], info[1::2]))
                out[key] = {"length": fields[b"length"], "entries-added": fields.get(b"entries-added")}
            else:
                out[key] = {"length": 0, "entries-added": 0}
        return out

    # -------------------------------------------------------------- teardown

    def close(self, check: bool = True) -> None:
        for _, proc in reversed(self.procs):
            stop(proc, timeout=15)
        if self.redis is not None:
            self.redis.close()
        left = [name for name, proc in self.procs if proc.poll() is None]
        if self.redis is not None and self.redis.proc.poll() is None:
            left.append("redis-server")
        stragglers = _pids_mentioning(str(self.tmp))
        _kill_stragglers(stragglers)
        if check and (left or stragglers):
            raise AssertionError(f"still running after teardown: {left} pids {stragglers}")


def submit(
    url: str, body: bytes, headers: dict | None = None, method: str = "POST", timeout: float = 10
) -> int:
    """A submission from outside the browser (no Origin header); returns the status."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    """A GET that never follows redirects; returns (status, headers lowercased, body)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


# ---------------------------------------------------------------------------- the other origin


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


class PageServer(ServerThread):
    """tests/browser/static/ over HTTP on its own port: a second origin for the browser."""

    def __init__(self):
        super().__init__(functools.partial(_Quiet, directory=str(STATIC)))

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}{path}"


# ---------------------------------------------------------------------------- the browser


class Browser:
    """Headless Chromium (Debian's) through Debian's chromedriver, with its own temporary
    profile. `driver` is the Selenium WebDriver."""

    def __init__(self, width: int = 1280, height: int = 900):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="wharf-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in (
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={self.profile}", f"--window-size={width},{height}",
            "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--disable-default-apps",
            "--hide-scrollbars", "--force-device-scale-factor=1",
        ):
            options.add_argument(arg)
        # DevTools network events, to read the status of requests the page cannot see (beacons).
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        # HOME and the XDG directories inside the profile: Chromium's crash handler database and
        # caches stay in the temporary directory, whose path is then in every process's command
        # line (which close() checks).
        env = dict(os.environ, HOME=self.profile, XDG_CONFIG_HOME=os.path.join(self.profile, ".config"),
                   XDG_CACHE_HOME=os.path.join(self.profile, ".cache"))
        self.service = Service(
            executable_path=CHROMEDRIVER, log_output=os.path.join(self.profile, "chromedriver.log"), env=env
        )
        self._network: list[dict] = []
        self._methods: dict[str, str] = {}
        try:
            self.driver = webdriver.Chrome(service=self.service, options=options)
        except Exception:
            self._cleanup()
            raise
        try:
            self.driver.set_page_load_timeout(30)
            self.driver.set_script_timeout(30)
            # --window-size is the whole window; make the page's viewport width x height.
            inner = self.driver.execute_script("return [window.innerWidth, window.innerHeight]")
            outer = self.driver.get_window_size()
            if inner != [width, height]:
                self.driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])
        except Exception:
            self.close(check=False)
            raise

    def network_responses(self) -> list[dict]:
        """Every response the browser received so far (DevTools Network events, preflights
        included): {url, method, status, type, headers}."""
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            p = msg.get("params", {})
            if msg["method"] == "Network.requestWillBeSent":
                self._methods[p["requestId"]] = p["request"]["method"]
            elif msg["method"] == "Network.responseReceived":
                self._network.append({
                    "url": p["response"]["url"],
                    "method": self._methods.get(p["requestId"]),
                    "status": p["response"]["status"],
                    "type": p.get("type"),
                    "headers": {k.lower(): v for k, v in p["response"].get("headers", {}).items()},
                })
        return list(self._network)

    def wait_response(self, url: str, method: str = "POST", timeout: float = 10.0) -> dict:
        """The first response the browser received to a `method` request for `url`."""
        return wait_until(
            lambda: next((r for r in self.network_responses() if r["url"] == url and r["method"] == method), None),
            timeout, f"the browser to receive a response to {method} {url}",
        )

    def _cleanup(self) -> list[int]:
        stragglers = _pids_mentioning(self.profile)
        _kill_stragglers(stragglers)
        shutil.rmtree(self.profile, ignore_errors=True)
        return stragglers

    def close(self, check: bool = True) -> None:
        try:
            self.driver.quit()
        finally:
            # chromedriver (--log-path) and every Chromium process (--user-data-dir) carry the
            # profile path in their command line; quit() returns before the last of them exits.
            deadline = time.monotonic() + 10
            while _pids_mentioning(self.profile) and time.monotonic() < deadline:
                time.sleep(0.1)
            stragglers = self._cleanup()
        if check and stragglers:
            raise AssertionError(f"Chromium processes still running after quit: {stragglers}")


def random_token() -> str:
    return secrets.token_urlsafe(24)
