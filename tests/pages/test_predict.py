"""AppTest of the Predict page: uploads (images, a corrupt file), a server-folder batch, no run yet."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import predict, runs
from tests.pages.apptest import page_via_app

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120


def _page(run_dir: Path | None = None) -> AppTest:
    return page_via_app("predict", run_dir, timeout=TIMEOUT)


def _test_paths(run_dir: Path, n: int) -> list[str]:
    df = pd.read_csv(run_dir / runs.PREDICTIONS, dtype=str, keep_default_na=False)
    return df.loc[df["split"] == "test", "path"].head(n).tolist()


@pytest.fixture
def in_demo_workspace(demo_workspace, monkeypatch):
    monkeypatch.setenv("LOUPE_HOME", str(demo_workspace.root))
    return demo_workspace


def test_upload_shows_a_chart_per_image_and_agrees_with_cli_and_bundle(in_demo_workspace, demo_run, tmp_path):
    at = _page(demo_run)
    assert at.metric[0].value == "hierarchical"
    paths = _test_paths(demo_run, 2)
    files = [(f"<b>{i}.png", Path(p).read_bytes(), "image/png") for i, p in enumerate(paths)]
    files.append(("corrupt.png", b"\x89PNG\r\n\x1a\n not an image", "image/png"))
    at.file_uploader(key="predict_upload").set_value(files).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2  # one top-k chart per readable image
    assert any(w.value.startswith("corrupt.png: ") for w in at.warning)
    text = " ".join(m.value for m in at.markdown)
    assert "**Path:**" in text and " &gt; " in text and "<b>" not in text  # escaped file names / labels
    assert [m.value for m in at.metric][4:6] == ["2", "1"]  # predicted, unreadable
    page_df = at.session_state["predict_upload_result"][1]

    # the same images through the core (what the CLI calls) and through a bundle
    pcols = [c for c in page_df.columns if c.startswith("p_")]
    direct = predict.Predictor.load(demo_run).predict_paths(paths)
    bundle = predict.Predictor.load(predict.export_bundle(demo_run, tmp_path / "b.zip")).predict_paths(paths)
    np.testing.assert_allclose(page_df[pcols].to_numpy(float)[:2], direct[pcols].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(bundle[pcols].to_numpy(), direct[pcols].to_numpy(), atol=1e-5)
    assert page_df["prediction"].tolist()[:2] == direct["prediction"].tolist()


def test_batch_server_folder_gives_table_and_csv(in_demo_workspace, demo_multiclass_run, tmp_path, monkeypatch):
    folder = tmp_path / "batch"
    (folder / "nested").mkdir(parents=True)
    for i, p in enumerate(_test_paths(demo_multiclass_run, 3)):
        shutil.copy(p, folder / ("nested" if i else "") / f"{i}.png")
    (folder / "nested" / "bad.jpg").write_bytes(b"\xff\xd8\xff garbage")
    monkeypatch.setenv("LOUPE_ALLOWED_ROOTS", str(tmp_path))
    at = _page(demo_multiclass_run)
    assert at.metric[0].value == "multiclass"

    at.text_input(key="predict_folder").set_value("/etc").run()
    at.button(key="predict_folder_go").click().run()
    assert not at.exception
    assert any("outside the folders this app may read" in e.value for e in at.error)

    at.text_input(key="predict_folder").set_value(str(folder)).run()
    at.button(key="predict_folder_go").click().run()
    assert not at.exception
    _, root, df = at.session_state["predict_batch_result"]
    assert root == str(folder.resolve())
    assert sorted(df["path"]) == ["0.png", "nested/1.png", "nested/2.png", "nested/bad.jpg"]
    assert (df["error"] != "").sum() == 1
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 4
    assert len(at.get("plotly_chart")) == 3
    assert any("bad.jpg" in w.value for w in at.warning)
    assert len(at.get("download_button")) >= 1
    # the results survive a rerun (e.g. changing top-k) without pressing the button again
    at.slider(key="predict_top_k").set_value(2).run()
    assert not at.exception and len(at.get("plotly_chart")) == 3


def test_no_finished_run_says_what_to_do(loupe_home):
    at = AppTest.from_file(str(REPO / "views" / "predict.py"), default_timeout=TIMEOUT).run()  # no demo needed
    assert not at.exception
    assert any("No finished run yet" in i.value for i in at.info)


def test_zip_upload_with_unsafe_entry_is_refused(in_demo_workspace, demo_run):
    buf = io.BytesIO()
    png = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(png, format="PNG")
    import zipfile

    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ok/a.png", png.getvalue())
        zf.writestr("../escape.png", png.getvalue())
    at = _page(demo_run)
    at.file_uploader(key="predict_upload").set_value(
        [("evil.zip", buf.getvalue(), "application/zip"), ("fine.png", png.getvalue(), "image/png")]).run()
    assert not at.exception
    assert any(w.value.startswith("evil.zip: refused") for w in at.warning)
    assert len(at.get("plotly_chart")) == 1
