"""AppTest of the Embeddings page on the session demo run (real core: embeddings, PCA, clusters, OOD)."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import embeddings as E
from core import runs

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 180


@pytest.fixture
def at(demo_run, demo_workspace, monkeypatch) -> AppTest:
    monkeypatch.setenv("LOUPE_HOME", str(demo_workspace.root))
    monkeypatch.setenv("LOUPE_UMAP_WARMUP", "0")
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    app.run()
    app.session_state["run_id"] = demo_run.name
    app.switch_page("views/embeddings.py").run()
    return app


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _open_tab(at: AppTest, label: str) -> AppTest:
    at.session_state["emb_tab"] = label  # what a click on the tab does (on_change="rerun")
    return at.run()


def test_map_clusters_and_ood_render_for_a_run(at, demo_run):
    assert not at.exception, at.exception
    m = _metrics(at)
    assert m["samples"] == "1,042" and m["embedding dims"] == "16" and m["classes"] == "10"
    assert (demo_run / E.EMBEDDINGS_FILE).exists()
    # only the open tab runs: the map, not the clusters' or the OOD tab's metrics
    assert len(at.get("plotly_chart")) == 1 and "clusters k" not in m and "threshold" not in m
    # 3-D map and the other colourings render too
    at.radio(key="emb_dims").set_value(3).run()
    assert not at.exception
    for colour in ("correct", "split", "cluster", "audit flag"):
        at.selectbox(key="emb_colour").set_value(colour).run()
        assert not at.exception, (colour, at.exception)
    # clusters: GMM by BIC gives k and agreement numbers
    m = _metrics(_open_tab(at, "Clusters"))
    assert not at.exception, at.exception
    assert int(m["clusters k"]) >= 2 and 0 < float(m["purity"].rstrip("%")) <= 100
    at.radio(key="emb_cluster_method").set_value("agglomerative").run()
    assert not at.exception and _metrics(at)["clusters k"] == "10"
    # OOD: the demo's unseen folder (40 images) is scored against the test split
    m = _metrics(_open_tab(at, "Unusual images (OOD)"))
    assert not at.exception, at.exception
    assert m["unseen flagged"].endswith("/40")
    assert 0.5 < float(m["AUROC test vs unseen"]) <= 1.0
    # back on the map, the choices made there before are still in place
    _open_tab(at, "Map")
    assert at.radio(key="emb_dims").value == 3 and at.selectbox(key="emb_colour").value == "audit flag"
    assert _open_tab(at, "Clusters").radio(key="emb_cluster_method").value == "agglomerative"


def test_saving_the_threshold_writes_thresholds_json(at, demo_run):
    rd = runs.RunDir(demo_run)
    before = rd.thresholds.read_bytes() if rd.thresholds.exists() else None
    try:
        _open_tab(at, "Unusual images (OOD)")
        at.selectbox(key="emb_ood_method").set_value("knn").run()
        at.slider(key="emb_ood_fpr").set_value(0.1).run()
        at.button(key="emb_ood_save").click().run()
        assert not at.exception
        ood = runs.read_thresholds(rd)["ood"]
        assert ood["method"] == "knn" and ood["fpr"] == pytest.approx(0.1) and ood["n_unseen"] == 40
        assert any("Saved: knn" in s.value for s in at.success)
    finally:  # the session run is shared with other tests: put thresholds.json back
        if before is None:
            rd.thresholds.unlink(missing_ok=True)
        else:
            rd.thresholds.write_bytes(before)


def test_without_a_run_the_page_says_what_to_do_and_offers_pretrained_embeddings(loupe_home, monkeypatch):
    monkeypatch.setenv("LOUPE_UMAP_WARMUP", "0")
    app = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    app.run()
    app.switch_page("views/embeddings.py").run()
    assert not app.exception
    assert any("Train" in i.value for i in app.info)
    # before any training the selected dataset can be mapped with a pretrained backbone (on request)
    assert app.button(key="emb_bb_button").label == "Compute pretrained embeddings"
