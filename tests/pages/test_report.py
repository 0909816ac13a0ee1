"""AppTest of the Report page: build the HTML report, download it, build the model bundle; no run yet."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.pages.apptest import page_via_app

TIMEOUT = 180


def _page(run_dir: Path | None = None) -> AppTest:
    return page_via_app("report", run_dir, timeout=TIMEOUT)


def _downloads(at: AppTest) -> dict[str, object]:
    """label -> proto of every download button on the page."""
    return {el.proto.label: el.proto for el in at.get("download_button")}


@pytest.fixture
def in_demo_workspace(demo_workspace, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(demo_workspace.root))
    return demo_workspace


def test_build_report_offers_the_html_download_and_a_preview(in_demo_workspace, demo_run):
    at = _page(demo_run)
    assert at.selectbox(key="run_id").value == demo_run.name
    assert "Build report" in [b.label for b in at.button]
    assert "Download report.html" not in _downloads(at)
    # no embeddings: the page test must not write a cache into the session's shared run
    at.checkbox(key="report_embeddings").uncheck()
    at.slider(key="report_max_thumbnails").set_value(12)
    at.button(key="report_build").click().run()
    assert not at.exception
    built = at.session_state["_report_built"]
    html_text = built["html"]
    assert html_text.startswith("<!DOCTYPE html>") and "https://" not in html_text
    assert html_text.count("data:image/jpeg;base64,") == 12  # the confident-mistakes gallery
    assert "Download report.html" in _downloads(at)
    size = [m.value for m in at.metric if m.label == "File size"]
    assert size == [f"{len(html_text.encode()) / 1e6:.1f} MB"]
    status = {t: s for t, s, _ in built["sections"]}
    assert status["Confusion matrix"] == status["Model card"] == "ok"
    assert status["Embedding map"] == "missing"  # unchecked, and the page says why
    assert any("Embedding map" in c.value and "not requested" in c.value for c in at.caption)
    assert len(at.get("iframe")) == 1  # the preview (components.html)
    # changing an option marks the built report stale instead of silently mismatching
    at.slider(key="report_max_thumbnails").set_value(18).run()
    assert any("options changed" in w.value for w in at.warning)


def test_model_bundle_download(in_demo_workspace, demo_run):
    at = _page(demo_run)
    at.button(key="report_bundle_build").click().run()
    assert not at.exception
    data = at.session_state["_report_bundle"]["data"]
    import io

    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "model.keras" in names and "labels.json" in names
    assert "Download model bundle" in _downloads(at)
    assert any("Predictor.load" in c.value for c in at.code)


def test_no_finished_run_says_what_to_do(demo_workspace, tmp_path, monkeypatch):
    """A workspace with the demo dataset registered (copied: no regeneration) and no run."""
    import shutil

    from core.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    from tests.conftest import demo_dataset_id

    row = next(r for r in demo_workspace.list_datasets() if r["dataset_id"] == demo_dataset_id(demo_workspace))
    shutil.copytree(demo_workspace.dataset_dir(row["dataset_id"]), ws.dataset_dir(row["dataset_id"]))
    ws.upsert_dataset(row["dataset_id"], name=row["name"], spec=row["spec"], task=row["task"],
                      n_samples=row["n_samples"])
    monkeypatch.setenv("LOUPE_HOME", str(ws.root))
    at = _page()
    assert not at.exception
    assert any("No finished run yet" in i.value for i in at.info)
    assert not at.button


def test_report_can_compare_with_another_run(in_demo_workspace, demo_run, demo_multiclass_run):
    from core import compare

    at = _page(demo_run)
    assert at.selectbox(key="report_compare").value == "(none)"
    assert demo_multiclass_run.name in at.selectbox(key="report_compare").options
    assert demo_run.name not in at.selectbox(key="report_compare").options  # never against itself
    at.checkbox(key="report_embeddings").uncheck()
    at.selectbox(key="report_compare").set_value(demo_multiclass_run.name)
    at.button(key="report_build").click().run()
    assert not at.exception
    status = {t: (s, n) for t, s, n in at.session_state["_report_built"]["sections"]}
    got = status[f"Comparison with {demo_multiclass_run.name}"]
    try:
        c = compare.compare_runs(demo_run, demo_multiclass_run)
    except ValueError as exc:  # other rows or labels: the section gives the refusal
        assert got == ("error", str(exc))
    else:
        assert got[0] == "ok"
        assert c.verdict() in at.session_state["_report_built"]["html"]
