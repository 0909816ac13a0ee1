"""AppTest of app.py and the Data page, on the real core with a temporary workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import datasets, demo
from core.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def _app() -> AppTest:
    return AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)


def _chart_keys(at: AppTest) -> set[str]:
    keys = set()
    for el in at.get("plotly_chart"):
        proto = getattr(el, "proto", None)
        if proto is not None and getattr(proto, "id", None):
            keys.add(proto.id)
    return keys


def test_first_start_generates_and_shows_the_demo(loupe_home):
    at = _app().run()
    assert not at.exception
    ws = Workspace(loupe_home)
    [row] = ws.list_datasets()
    assert row["name"] == "Demo: UI elements" and row["task"] == "hierarchical"
    assert at.session_state["dataset_id"] == row["dataset_id"]
    assert [m.value for m in at.metric][:3] == ["hierarchical", "1,042", "4"]
    assert len(at.get("plotly_chart")) >= 3  # distribution, sunburst, split (+ images tab charts)
    assert "Demo: UI elements" in [s.value for s in at.subheader]


def test_second_start_does_not_regenerate(loupe_home):
    _app().run()
    demo_mtime = (loupe_home / "demo" / "labels.csv").stat().st_mtime_ns
    at = _app().run()
    assert not at.exception
    assert (loupe_home / "demo" / "labels.csv").stat().st_mtime_ns == demo_mtime
    assert len(Workspace(loupe_home).list_datasets()) == 1


def test_add_a_folder_dataset_through_detect_and_load(loupe_home, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(tmp_path))  # server folders are confined to allowed roots

    root = tmp_path / "shapes"
    for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (20 + i, 20), colour).save(root / cls / f"{i}.png")
    (root / "red" / "notes.jpg").write_text("not an image")
    at = _app().run()
    at.text_input(key="add_path").set_value(str(root)).run()
    at.button(key="add_detect").click().run()
    assert not at.exception
    assert at.session_state["data_detection"].kind == "folders"
    at.text_input(key="map_name").set_value("shapes").run()
    at.button[-1].click().run()  # the form's "Load dataset"
    assert not at.exception
    names = {r["name"] for r in Workspace(loupe_home).list_datasets()}
    assert "shapes" in names
    ds = datasets.open_dataset(Workspace(loupe_home), at.session_state["dataset_id"])
    assert ds.name == "shapes" and len(ds.samples) == 12 and ds.report.n_invalid == 1


def test_detect_error_is_shown_not_raised(loupe_home, tmp_path, monkeypatch):
    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(tmp_path))
    at = _app().run()
    at.text_input(key="add_path").set_value(str(tmp_path / "does-not-exist")).run()
    at.button(key="add_detect").click().run()
    assert not at.exception
    assert any("does-not-exist" in e.value for e in at.error)


def test_multilabel_dataset_shows_cooccurrence_and_missing(loupe_home, miml_scene, tmp_path):
    import pandas as pd

    table = pd.read_csv(miml_scene / "labels.csv", dtype=str, keep_default_na=False)
    table.loc[:49, "sea"] = ""
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    ws = Workspace(loupe_home).ensure()
    demo.ensure_demo_dataset(ws)
    ds = datasets.load_dataset(datasets.DatasetSpec(path=str(miml_scene / "images"), labels=str(labels),
                                                    name="miml"), workspace=ws)
    at = _app()
    at.session_state["dataset_id"] = ds.dataset_id
    at.run()
    assert not at.exception
    assert at.metric[0].value == "multilabel"
    assert any("Missing labels" in c.value and "sea: 50" in c.value for c in at.caption)


def test_folder_dataset_with_given_split(loupe_home, flowers12):
    ws = Workspace(loupe_home).ensure()
    demo.ensure_demo_dataset(ws)
    ds = datasets.load_dataset(datasets.DatasetSpec(path=str(flowers12), name="flowers12"), workspace=ws)
    at = _app()
    at.session_state["dataset_id"] = ds.dataset_id
    at.run()
    assert not at.exception
    assert at.metric[0].value == "multiclass"
    assert at.metric[1].value == "960"
    assert at.metric[3].value == "720·0·240"


def test_batch_engine_setting_is_saved_in_the_workspace_and_survives_a_restart(loupe_home, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    at = _app().run()
    box = at.sidebar.selectbox(key="batch_engine")
    assert box.value == "local" and box.options == ["local", "ray"]
    box.set_value("ray").run()
    assert not at.exception
    assert Workspace(loupe_home).settings() == {"engine": "ray"}
    assert any("starts a local Ray" in c.value for c in at.sidebar.caption)
    again = _app().run()  # a new session (a server restart reads the same file)
    assert again.sidebar.selectbox(key="batch_engine").value == "ray"
    # a damaged settings file: the default, and the page still works
    (loupe_home / "settings.json").write_text("{not json")
    fresh = _app().run()
    assert not fresh.exception and fresh.sidebar.selectbox(key="batch_engine").value == "local"
