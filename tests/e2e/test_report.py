"""The Report page in a real browser, and the report file itself opened offline (file://) in Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import rename_class_in_run
from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app

EVIL_CLASS = "</script><script>alert(1)</script>"


def _open_offline(browser, path: Path, name: str) -> dict:
    """Open a report from disk with every non-file request blocked and recorded; wait for its charts."""
    ctx = browser.new_context(viewport={"width": 1300, "height": 1000})
    seen = {"requests": [], "errors": [], "dialogs": []}

    def route(r):
        seen["requests"].append(r.request.url)
        if r.request.url.startswith("file://"):
            r.continue_()
        else:
            r.abort()

    ctx.route("**/*", route)
    pg = ctx.new_page()
    pg.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: seen["errors"].append(str(e)))
    pg.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    pg.goto(path.resolve().as_uri())
    pg.wait_for_function("document.querySelectorAll('.plotly-graph-div').length > 0 && "
                         "[...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('svg.main-svg'))",
                         timeout=30_000)
    seen["figures"] = pg.locator(".plotly-graph-div").count()
    seen["images"] = pg.evaluate("[...document.images].filter(i => i.complete && i.naturalWidth > 0).length")
    seen["screenshot"] = screenshot(pg, name)
    seen["table_text"] = pg.locator("#per_class table").last.inner_text()
    ctx.close()
    return seen


def test_report_page_builds_a_file_that_opens_offline(app_server, e2e_run, page, browser, tmp_path):
    page.goto(app_server.url + "/report")
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    picker = page.get_by_label("Run")
    if e2e_run.name not in picker.input_value():  # other tests may have added newer runs
        picker.click()
        page.get_by_role("option", name=e2e_run.name).first.click()
        wait_for_app(page)
    # the embedding map is covered by the core tests; skip model inference to keep this test short
    page.get_by_text("Embedding map and out-of-distribution examples").click()
    wait_for_app(page)
    page.get_by_role("button", name="Build report").click()
    download = page.get_by_role("button", name="Download report.html")
    download.wait_for(timeout=120_000)
    wait_for_app(page)
    assert_no_exception(page)
    # the preview iframe draws the report's charts
    page.frame_locator("iframe").first.locator(".plotly-graph-div svg.main-svg").first.wait_for(timeout=30_000)
    assert "MB" in page.locator("[data-testid='stMetricValue']").first.inner_text()
    screenshot(page, "report_page")
    with page.expect_download() as info:
        download.click()
    saved = tmp_path / "report.html"
    info.value.save_as(saved)
    assert saved.stat().st_size > 4_000_000

    seen = _open_offline(browser, saved, "report_file_offline")
    assert [u for u in seen["requests"] if not u.startswith("file://")] == []
    assert seen["errors"] == [] and seen["dialogs"] == []
    assert seen["figures"] >= 8 and seen["images"] >= 10  # charts drawn, thumbnails decoded from data: URIs


def test_hostile_class_name_stays_text_in_the_browser(e2e_run, browser, tmp_path):
    """A class named ``</script><script>alert(1)</script>``: shown as text, no script runs."""
    from core import report

    run = tmp_path / e2e_run.name
    shutil.copytree(e2e_run, run, ignore=shutil.ignore_patterns("embeddings.npz"))
    rename_class_in_run(run, "button", EVIL_CLASS)
    out = tmp_path / "evil.html"
    from core.workspace import Workspace

    report.build_report(run, workspace=Workspace(e2e_run.parent.parent), embeddings=False, out=out)

    seen = _open_offline(browser, out, "report_file_hostile_label")
    assert seen["dialogs"] == [] and seen["errors"] == []
    assert EVIL_CLASS in seen["table_text"]  # rendered literally, as text
    assert seen["figures"] >= 6
