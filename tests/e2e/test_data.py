"""The newcomer's first start in a real browser: the Data page shows the demo dataset."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app


def test_first_start_shows_the_demo_label_chart(app_server, page):
    page.goto(app_server.url)
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    # the demo was generated and registered on first start, and is the selected dataset
    page.get_by_text("Demo: UI elements").first.wait_for(timeout=30_000)
    page.locator("[data-testid='stMetricValue']", has_text="hierarchical").first.wait_for(timeout=30_000)
    # the label-distribution chart (plotly) is drawn with the demo's leaf classes
    # (waits until plotly has drawn it: charts of other tabs may be drawn first)
    page.locator(".js-plotly-plot", has_text="checkbox").first.wait_for(timeout=60_000)
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


def test_a_bookmarked_page_url_on_a_fresh_server_runs_the_whole_app(tmp_path, page):
    """The first request of a new server is a page URL: app.py must still run (sidebar, workspace, demo)."""
    from tests.e2e.conftest import start_server

    server = start_server(tmp_path / "home", tmp_path / "streamlit.log")
    try:
        page.goto(server.url + "/train")
        wait_for_app(page, timeout=120_000)
        sidebar = page.locator("[data-testid='stSidebar']").inner_text()
        assert str(tmp_path / "home") in sidebar  # app.py's sidebar: the open workspace
        page.get_by_text("Demo: UI elements").first.wait_for(timeout=30_000)  # the first-start demo is selected
        assert "app" not in [line.strip() for line in sidebar.splitlines()]  # not the legacy file list
        assert_no_exception(page)
    finally:
        server.stop()
