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
    # the summary is drawn before the gallery below it: wait for the first thumbnail (one CI run asserted too early)
    page.locator("[data-testid='stImage']").first.wait_for(timeout=60_000)
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


def test_each_tab_runs_when_opened_and_its_url_opens_it(app_server, e2e_run, page):
    """Only the open tab runs; a click opens the next one (its URL names it) and a link to that URL
    opens the page on it."""
    page.goto(app_server.url + "/embeddings")
    wait_for_app(page, timeout=180_000)
    page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)
    assert page.get_by_text("clusters k").count() == 0  # the Clusters tab has not run
    page.get_by_role("tab", name="Clusters").click()
    page.get_by_text("clusters k").first.wait_for(timeout=120_000)
    wait_for_app(page, timeout=120_000)
    assert "emb_tab=Clusters" in page.url
    assert_no_exception(page)
    page.get_by_text("Typical images per cluster").first.scroll_into_view_if_needed()
    page.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stImage'] img")];
        return imgs.length >= 6 && imgs.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=60_000)
    screenshot(page, "embeddings_clusters")
    page.goto(app_server.url + "/embeddings?emb_tab=Unusual+images+%28OOD%29")
    wait_for_app(page, timeout=180_000)
    page.get_by_text("AUROC test vs unseen").first.wait_for(timeout=120_000)
    assert page.get_by_text("clusters k").count() == 0
    assert_no_exception(page)
    screenshot(page, "embeddings_ood")
