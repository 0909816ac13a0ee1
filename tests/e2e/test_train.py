"""The Train page in a real browser: launch a tiny run, watch the live chart grow, stop it."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from core import runs
from tests.conftest import wait_for, worker_log
from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app

# points drawn in a plotly chart (_fullData holds the decoded arrays; data may hold base64 "bdata" specs)
POINTS_JS = "el => (el._fullData || []).reduce((n, t) => n + (t.x && t.x.length ? t.x.length : 0), 0)"


@pytest.fixture
def launched(app_server):
    """Run directories this test launches in the shared server's workspace: killed and removed at the end,
    so the other pages' tests do not see them."""
    runs_dir = Path(app_server.home) / "runs"
    before = set(p.name for p in runs_dir.iterdir()) if runs_dir.exists() else set()
    yield lambda: sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.name not in before)
    for rd in (p for p in runs_dir.iterdir() if p.is_dir() and p.name not in before and not p.name.startswith(".")):
        st = runs.read_status(rd)
        if st.get("pid") and runs.pid_alive(st["pid"], start_ticks=st.get("pid_start")):
            os.kill(st["pid"], signal.SIGKILL)
        shutil.rmtree(rd, ignore_errors=True)


def _set_number(page, key: str, value: int) -> None:
    box = page.locator(f".st-key-{key} input")
    box.fill(str(value))
    box.press("Enter")
    wait_for_app(page)


def _points(page, key: str) -> int:
    chart = page.locator(f".st-key-{key} .js-plotly-plot")
    if chart.count() == 0:
        return 0
    return int(chart.first.evaluate(POINTS_JS))


def _wait(pred, timeout: float, what):
    return wait_for(pred, timeout, what, interval=0.1)


def test_launch_watch_the_live_chart_grow_then_stop(app_server, page, launched):
    page.set_viewport_size({"width": 1400, "height": 2000})  # the live view below the form, in the screenshot
    # arrive as a user does: the app first, then the page
    page.goto(app_server.url, timeout=120_000)
    wait_for_app(page, timeout=120_000)
    page.goto(app_server.url + "/train", timeout=120_000)
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    page.get_by_text("Dataset").first.wait_for(timeout=30_000)
    _set_number(page, "train_image_size", 16)
    _set_number(page, "train_epochs", 300)
    _set_number(page, "train_filters", 4)
    page.get_by_text("Advanced").click()
    _set_number(page, "train_patience", 0)  # no early stop: it trains until we press Stop
    page.locator(".st-key-train_launch button").click()
    page.get_by_text("queued: watch it below").wait_for(timeout=30_000)
    [rd] = launched()
    # the fragment polls the run directory: the loss chart appears while it trains, and grows.
    # (Every update redraws the chart, which on a loaded machine may still be drawing when sampled:
    # sample often, keep the counts seen while the run was running.)
    seen: list[int] = []

    def grew() -> bool:
        n = _points(page, "train_loss_chart")
        if n and runs.effective_state(runs.read_status(rd)) == "running" and (not seen or n != seen[-1]):
            seen.append(n)
        return len(seen) >= 2 and max(seen[1:]) > seen[0]  # a sample taken mid-redraw may count fewer

    _wait(grew, 180, lambda: f"the live chart to grow while the run trains; seen {seen}; "
                             f"status {runs.read_status(rd)}; log: {worker_log(rd)}")
    assert max(seen) > seen[0], seen
    _wait(lambda: _points(page, "train_metric_chart"), 60, "the first epoch on the metric chart")
    assert "epoch" in page.locator("[data-testid='stProgress']").first.inner_text()
    page.get_by_text("· running").first.wait_for(timeout=10_000)  # the header follows the state too
    assert_no_exception(page)
    screenshot(page, "train_page_live")
    # Stop: graceful, the best checkpoint is kept and the page stops polling with the final state
    def ended():
        if (s := runs.read_status(rd))["state"] not in runs.ACTIVE_STATES:
            return s
        buttons = page.locator(".st-key-train_stop button").filter(visible=True)
        if buttons.count():
            buttons.first.click(timeout=5_000)
            time.sleep(2)
        return None

    st = _wait(ended, 60, "the run to end after Stop")
    assert st["state"] == "stopped", st
    assert runs.RunDir(rd).model.exists() and runs.RunDir(rd).predictions.exists()
    page.locator(".st-key-train_stop").wait_for(state="detached", timeout=30_000)
    page.get_by_text("· stopped").first.wait_for(timeout=30_000)
    wait_for_app(page)
    final = _wait(lambda: _points(page, "train_loss_chart"), 30, "the final chart")
    assert final > seen[0]  # the finished chart holds everything, more than first seen
    assert_no_exception(page)
    screenshot(page, "train_page_stopped")
