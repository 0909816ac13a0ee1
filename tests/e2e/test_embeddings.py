"""The Embeddings page in a real browser: the WebGL map renders, and a box selection shows the images."""

from __future__ import annotations

from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app


def test_map_renders_and_box_selection_shows_thumbnails(app_server, e2e_run, page):
    page.goto(app_server.url + "/embeddings")
    wait_for_app(page, timeout=180_000)
    assert_no_exception(page)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=60_000)
    chart.locator(".legendtext").first.wait_for(timeout=30_000)
    legend = chart.inner_text()
    assert "checkbox" in legend or "button" in legend, legend  # one legend entry per demo class
    screenshot(page, "embeddings_map_initial")
    # box-select the middle of the map (the default drag mode is box select)
    box = chart.locator(".nsewdrag").first.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.2
    x1, y1 = box["x"] + box["width"] * 0.8, box["y"] + box["height"] * 0.8
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=5)
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    page.get_by_text("selected —").first.wait_for(timeout=60_000)
    wait_for_app(page, timeout=60_000)
    assert page.locator("[data-testid='stImage'] img, [data-testid='stImage']").count() >= 1
    assert_no_exception(page)
    page.mouse.move(5, 5)
    page.get_by_text("selected —").first.scroll_into_view_if_needed()
    # every thumbnail of the selection has arrived and decoded (the screenshot once caught 6 of 48)
    page.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stImage'] img")];
        return imgs.length >= 8 && imgs.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=60_000)
    path = screenshot(page, "embeddings_map")
    assert path.stat().st_size > 20_000
