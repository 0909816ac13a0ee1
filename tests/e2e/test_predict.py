"""Predict in a real browser: upload an image, see its top-k chart and the decision."""

from __future__ import annotations

import pandas as pd

from core import runs
from tests.e2e.conftest import assert_no_exception, screenshot, wait_for_app


def test_upload_an_image_shows_the_prediction_chart(app_server, e2e_run, page):
    df = pd.read_csv(e2e_run / runs.PREDICTIONS, dtype=str, keep_default_na=False)
    image = df.loc[df["split"] == "test", "path"].iloc[0]
    page.goto(app_server.url + "/predict")
    wait_for_app(page, timeout=120_000)
    assert_no_exception(page)
    page.get_by_text("Drop one or more images").first.wait_for(timeout=60_000)
    page.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(image)
    chart = page.locator(".js-plotly-plot").first
    chart.wait_for(timeout=60_000)
    wait_for_app(page, timeout=60_000)
    assert_no_exception(page)
    body = page.locator("[data-testid='stMain']").inner_text()
    assert "Path:" in body and "Confidence:" in body, body[:2000]
    assert df.loc[df["path"] == image, "element_pred"].iloc[0] in page.locator(".js-plotly-plot").first.inner_text()
    chart.scroll_into_view_if_needed()
    path = screenshot(page, "predict_upload")
    assert path.stat().st_size > 10_000
