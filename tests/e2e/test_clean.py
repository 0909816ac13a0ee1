"""The Clean page in a real browser: run the audit, exclude a flagged sample, see it saved, undo it."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app

from core import review
from core.workspace import home


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def test_audit_then_exclude_is_saved_and_undone(app_server, page):
    # arrive as a user does: the app first, then the page
    page.goto(app_server.url)
    wait_for_app(page, timeout=180_000)
    page.goto(app_server.url + "/clean")
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    page.get_by_text("No audit yet").first.wait_for(timeout=60_000)
    # switch off the two slow detectors (measured in tests/core/test_audit.py), run the others
    for name in ("near_duplicate", "label_issue"):
        page.locator("[data-testid='stCheckbox']").filter(has_text=name).first.locator("label").click()
    page.get_by_role("button", name="Run audit").click()
    page.locator("[data-testid='stMetric']").filter(has_text="Samples flagged").first.wait_for(timeout=240_000)
    wait_for_app(page)
    assert_no_exception(page)
    flags = int(_metric(page, "Flags").replace(",", ""))
    assert flags > 0
    page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)
    screenshot(page, "clean_page_audit")
    page.get_by_role("button", name="Exclude", exact=True).first.scroll_into_view_if_needed()
    screenshot(page, "clean_page_queue")

    # one click on the first card's Exclude: saved in SQLite at once
    page.get_by_role("button", name="Exclude", exact=True).first.click()
    page.get_by_text("exclude · ").first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert_no_exception(page)
    ws = home(app_server.home)
    dsid = ws.list_datasets()[0]["dataset_id"]
    active = review.decisions(ws, dsid, active_only=True)
    assert list(active["action"]) == ["exclude"]
    assert _metric(page, "Excluded") == "1"
    page.get_by_text("exclude · ").first.scroll_into_view_if_needed()
    path = screenshot(page, "clean_page_decision")
    assert path.stat().st_size > 10_000

    # undo it (leaves the shared e2e workspace's effective labels as they were)
    page.get_by_role("button", name="Undo last").click()
    page.get_by_text("Undid 1 decision").first.wait_for(timeout=60_000)
    wait_for_app(page)
    assert review.decisions(ws, dsid, active_only=True).empty
