"""Real-browser harness: `streamlit run app.py` on a free port + Debian's Chromium via Playwright.

The server's output goes to a log file (a full pipe can deadlock a child process); the log
is printed when a test fails to start it. Screenshots land in ``test-artifacts/`` at the
repo root: look at them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, CHROMIUM_ARGS  # noqa: F401 - the browser fixtures live in tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """A running `streamlit run app.py` with its own workspace (``port``: a free one unless given)."""

    def __init__(self, home: Path, log: Path, extra_env: dict | None = None, port: int | None = None):
        self.home = home
        self.log = log
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "LOUPE_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "2", **(extra_env or {})}
        self._log_fh = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.fileWatcherType", "none", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=REPO, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_healthy(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit not healthy after {timeout}s:\n{self.log.read_text(errors='replace')}")

    def kill(self) -> None:
        """SIGKILL the server's whole process group (no shutdown, no cleanup), then reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # start_new_session: the group is the server's own
        self.proc.wait(timeout=30)
        self._log_fh.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_fh.close()


def start_server(home: Path, log: Path, **kw) -> AppServer:
    server = AppServer(home, log, **kw)
    try:
        server.wait_healthy()
    except Exception:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """One server for the e2e session, on a fresh workspace (the newcomer's first start)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    home = tmp_path_factory.mktemp("e2e_home")
    server = start_server(home, home.parent / "streamlit.log")
    yield server
    server.stop()


def wait_for_app(page, timeout: float = 60_000) -> None:
    """Wait until the app is rendered and its script run has finished."""
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout)
    page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_no_exception(page) -> None:
    errors = page.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


@pytest.fixture(scope="session")
def e2e_run(app_server) -> Path:
    """A finished tiny-CNN run on the demo, in the e2e server's workspace (for Evaluate/Embeddings/Predict/Report).

    Registers the demo in that workspace first (what the app does on first start).
    """
    from tests.conftest import train_demo_run

    from core import demo
    from core.workspace import home

    ws = home(app_server.home).ensure()
    demo.ensure_demo_dataset(ws)
    return train_demo_run(ws, "e2e-hier-flat")
