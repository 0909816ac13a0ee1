"""The newcomer's first start in a real browser: the Data page shows the demo dataset."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app


def test_first_start_shows_the_demo_label_chart(app_server, page):
    page.goto(app_server.url)
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    # the demo was generated and registered on first start, and is the selected dataset
    page.get_by_text("Demo: UI elements").first.wait_for(timeout=30_000)
    metrics = page.locator("[data-testid='stMetricValue']")
    assert "hierarchical" in metrics.first.inner_text()
    # the label-distribution chart (plotly) is drawn with the demo's leaf classes
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=30_000)
    text = page.locator(".js-plotly-plot").all_inner_texts()
    assert any("checkbox" in t for t in text), text
    path = screenshot(page, "data_page")
    assert path.stat().st_size > 10_000


def test_sample_grid_and_sidebar_workspace(app_server, page):
    page.goto(app_server.url)
    wait_for_app(page, timeout=120_000)
    sidebar = page.locator("[data-testid='stSidebar']")
    assert str(app_server.home) in sidebar.inner_text()
    page.get_by_role("tab", name="Samples").click()
    page.locator("[data-testid='stImage'], [data-testid='stImageContainer'] img, img").first.wait_for(timeout=30_000)
    assert_no_exception(page)
    screenshot(page, "data_page_samples")
