"""The Evaluate page in a real browser: the confusion matrix is drawn and a click on a cell shows its images."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app

# pixel centre of confusion-matrix cell (row i, column j), from plotly's own axes
_CELL_XY = """(gd, [i, j]) => { const L = gd._fullLayout; const r = gd.getBoundingClientRect();
    return [r.left + L.xaxis._offset + L.xaxis.d2p(j), r.top + L.yaxis._offset + L.yaxis.d2p(i)]; }"""


def _open_evaluate(app_server, page) -> None:
    # arrive as a user does: the app first, then the page
    page.goto(app_server.url)
    wait_for_app(page, timeout=120_000)
    page.goto(app_server.url + "/evaluate")
    wait_for_app(page, timeout=120_000)


def test_confusion_matrix_is_drawn_and_a_cell_click_shows_its_images(app_server, e2e_run, page):
    page.set_viewport_size({"width": 1400, "height": 1900})  # the app scrolls inside its own container
    _open_evaluate(app_server, page)
    assert_no_exception(page)
    page.get_by_text("Evaluate", exact=True).first.wait_for(timeout=30_000)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=60_000)
    text = chart.inner_text()
    assert "Confusion matrix" in text and "predicted" in text and "checkbox" in text, text[:500]
    assert page.locator(".js-plotly-plot .heatmaplayer, .js-plotly-plot .hm").count() >= 1  # the heatmap itself
    # the diagonal cell of the first class: its correct samples appear as thumbnails
    page.wait_for_timeout(1000)
    x, y = chart.evaluate(_CELL_XY, [0, 0])
    page.mouse.click(x, y)
    page.get_by_text("Correct: true button → predicted button").wait_for(timeout=30_000)
    wait_for_app(page)
    assert_no_exception(page)
    images = page.locator("[data-testid='stImage'] img, [data-testid='stImageContainer'] img")
    images.first.wait_for(timeout=30_000)
    assert images.count() >= 1
    path = screenshot(page, "evaluate_page")
    assert path.stat().st_size > 10_000
