"""Process helpers shared by the Python test suites: ports, binaries, waiting, stopping, Redis, Wharf's environment."""

# pytest puts only a suite's own directory on sys.path; each suite's harness adds tests/ and
# imports from here, so that every suite finds `wharf` and starts Redis the same way.

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_exe(name: str) -> str | None:
    """`name` from PATH, else /usr/sbin or /usr/bin (nginx and redis-server live there on Debian)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def wharf_exe() -> str | None:
    """WHARF_BIN, else target/debug/wharf, else target/release/wharf. Never builds (scripts/test
    runs the cargo tests, which build it, before the Python suites)."""
    env = os.environ.get("WHARF_BIN")
    if env:
        return env if os.access(env, os.X_OK) else None
    for p in (REPO / "target/debug/wharf", REPO / "target/release/wharf"):
        if os.access(p, os.X_OK):
            return str(p)
    return None


def wharf_bin() -> str | None:
    """wharf_exe(), built with cargo first when there is none (for running a suite alone)."""
    found = wharf_exe()
    if found is None and shutil.which("cargo") and (REPO / "crates/wharf/Cargo.toml").exists():
        subprocess.run(["cargo", "build", "--locked", "-q", "-p", "wharf", "--bin", "wharf"], cwd=REPO, check=True)
        found = wharf_exe()
    return found


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05, error: type[Exception] = AssertionError):
    """Polls `predicate` until it returns something truthy; raises `error` naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception as e:  # noqa: BLE001 - keep polling
            last = e
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s: {last}")


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_port(port: int, timeout: float = 10.0, proc: subprocess.Popen | None = None) -> None:
    """Waits for a listener on 127.0.0.1:`port`; gives up at once if `proc` exits first."""

    def up() -> bool:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on port {port}")
        return listening(port)

    wait_until(up, timeout, f"a listener on port {port}", error=RuntimeError)


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ServerThread:
    """A ThreadingHTTPServer on a free 127.0.0.1 port, serving `handler` from a daemon thread until `close`."""

    def __init__(self, handler):
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def answer_json(handler, body: bytes) -> None:
    """A 200 with a JSON body, from a http.server request handler."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


# ---------------------------------------------------------------------------- Wharf's environment


def version_file(tmp: Path, commit: str) -> Path:
    """A VERSION_FILE for `wharf web` naming `commit` (test values, never a real build's)."""
    path = tmp / "version.json"
    path.write_text(
        '{"source":"https://example.invalid/wharf","version":"test","commit":"%s","build":""}' % commit
    )
    return path


def role_env(redis_port: int, **more: str) -> dict[str, str]:
    """The environment of a Wharf role under test: of this process's, only PATH reaches it; Redis
    on `redis_port`; MozLog JSON at info; then `more`."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(redis_port),
        "ENVIRONMENT": "test",
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "info",
        **more,
    }


def web_env(redis_port: int, port: int, version: Path | str, **more: str) -> dict[str, str]:
    """role_env for `wharf web` listening on 127.0.0.1:`port`."""
    return role_env(redis_port, HOST="127.0.0.1", PORT=str(port), VERSION_FILE=str(version), **more)


# ---------------------------------------------------------------------------- redis-server


class Redis:
    """redis-server on 127.0.0.1 (no persistence) and a client to read what Wharf queued. `stop`
    then `start` keeps the port, so that a test can take Redis away and bring it back mid-run."""

    def __init__(self, tmp: Path, port: int | None = None):
        self.dir = tmp
        self.log = tmp / "redis.log"
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self._client = None
        self.start()

    def start(self, timeout: float = 10.0) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(
                [find_exe("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                stdout=out, stderr=subprocess.STDOUT,
            )
        try:
            wait_port(self.port, timeout, self.proc)
        except Exception as e:
            stop(self.proc)
            raise RuntimeError(f"redis-server on port {self.port}: {e}: {self.log.read_text()[-1500:]}") from e

    def command(self, *args):
        """One command; the reply as Redis sent it (bytes, integers and lists of them), not parsed
        per command as redis-py's methods would."""
        if self._client is None:
            import redis  # scripts/install-test-deps installs redis-py

            self._client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, protocol=2)
            self._client.response_callbacks.clear()
        return self._client.execute_command(*args)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def close(self) -> None:
        self.stop()
        if self._client is not None:
            self._client.close()
