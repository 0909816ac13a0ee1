"""core.embeddings: extraction + caching, projections, clusters, out-of-distribution scores, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import embeddings as E
from core import runs
from core.cli import main as cli_main


@pytest.fixture
def run_copy(demo_run, tmp_path) -> Path:
    """A private copy of the session demo run (tests here write into it)."""
    dst = tmp_path / "runs" / demo_run.name
    shutil.copytree(demo_run, dst)
    (dst / E.EMBEDDINGS_FILE).unlink(missing_ok=True)
    return dst


def _blobs(n_per=60, centres=((0, 0, 0, 0), (8, 8, 0, 0), (0, 8, 8, 0)), seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(c, 1.0, size=(n_per, len(c))) for c in centres]).astype(np.float32)
    y = np.repeat([f"c{i}" for i in range(len(centres))], n_per).astype(object)
    return x, y


def _fake_embeddings(x, labels, splits) -> E.Embeddings:
    n = len(x)
    ids = np.array([f"s{i}" for i in range(n)], dtype=object)
    return E.Embeddings(run_id="fake", sample_ids=ids, paths=ids, splits=np.asarray(splits, dtype=object),
                        vectors=np.asarray(x, np.float32), probs=np.ones((n, 1), np.float32), classes=("a",),
                        labels=np.asarray(labels, dtype=object), preds=np.asarray(labels, dtype=object),
                        task="multiclass")


# ---------------------------------------------------------------------------
# extraction
# ---------------------------------------------------------------------------

def test_compute_embeddings_covers_every_sample_and_is_cached(run_copy, demo_workspace):
    from core.datasets import open_dataset

    ds = open_dataset(demo_workspace, runs.read_config(run_copy)["dataset_id"])
    calls = []
    emb = E.compute_embeddings(run_copy, workspace=demo_workspace, progress=lambda d, t: calls.append((d, t)))
    assert len(emb) == len(ds.samples) and emb.n_failed == 0
    assert emb.vectors.shape == (len(ds.samples), 16) and emb.vectors.dtype == np.float32
    assert set(emb.splits) == {"train", "val", "test"}
    assert emb.probs.shape == (len(emb), len(emb.classes)) and np.allclose(emb.probs.sum(axis=1), 1, atol=1e-4)
    assert emb.task == "hierarchical" and set(emb.extra) >= {"group", "element", "group_pred"}
    # labels are the leaf level; the test-split accuracy agrees with predictions.csv
    pred = runs.read_predictions(run_copy, split="test")
    ours = emb.frame().set_index("sample_id").loc[list(pred.sample_ids)]
    assert (ours["prediction"].to_numpy() == np.asarray(pred.classes)[pred.y_pred]).mean() > 0.97
    assert calls and calls[-1][0] == calls[-1][1]
    cache = run_copy / E.EMBEDDINGS_FILE
    mtime = cache.stat().st_mtime_ns
    again = E.compute_embeddings(run_copy, workspace=demo_workspace)
    assert cache.stat().st_mtime_ns == mtime  # served from the cache
    np.testing.assert_array_equal(again.vectors, emb.vectors)
    assert list(again.sample_ids) == list(emb.sample_ids) and list(again.labels) == list(emb.labels)
    # a new checkpoint invalidates the cache
    st = (run_copy / "model.keras").stat()
    os.utime(run_copy / "model.keras", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    E.compute_embeddings(run_copy, workspace=demo_workspace)
    assert cache.stat().st_mtime_ns != mtime


def test_compute_embeddings_reads_the_run_config_once(run_copy, demo_workspace, monkeypatch):
    # the run is opened once (core.runs.open_run) and its config passed down (to core.runs.run_dataset too)
    from core.runs import layout

    reads = []
    read_json = layout.read_json
    monkeypatch.setattr(layout, "read_json", lambda path, default=None: (
        reads.append(path) if Path(path).name == runs.CONFIG else None) or read_json(path, default=default))
    emb = E.compute_embeddings(run_copy, workspace=demo_workspace)
    assert len(emb) and len(reads) == 1
    reads.clear()
    from core.embeddings import compute

    def no_vectors(*a, **k):
        raise AssertionError("embeddings_fresh loaded the vectors")

    monkeypatch.setattr(compute, "_load_cached", no_vectors)  # the check reads the file's key only
    assert E.embeddings_fresh(run_copy, workspace=demo_workspace) and len(reads) == 1


def test_embed_images_and_paths_match_the_cached_vectors(run_copy, demo_workspace):
    from core.images import load_image, resize_image

    emb = E.compute_embeddings(run_copy, workspace=demo_workspace)
    paths = list(emb.paths[:5])
    size = E.image_size(run_copy)
    imgs = np.stack([resize_image(load_image(p), size) for p in paths])
    v = E.embed_images(run_copy, imgs)
    assert v.shape == (5, emb.dim)
    np.testing.assert_allclose(v, emb.vectors[:5], rtol=1e-4, atol=1e-4)
    vp, ok = E.embed_paths(run_copy, paths + [str(run_copy / "config.json")], workspace=demo_workspace)
    assert ok.tolist() == [True] * 5 + [False] and vp.shape == (5, emb.dim)
    with pytest.raises(ValueError, match="shape"):
        E.embed_images(run_copy, np.zeros((2, size + 1, size + 1, 3), np.uint8))


def test_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        E.compute_embeddings(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="model.keras"):
        E.compute_embeddings(tmp_path / "empty")


# ---------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------

def test_pca_is_deterministic_and_transforms_new_points_without_refit():
    x, _ = _blobs()
    a = E.project(x, method="pca", dims=2, seed=3)
    b = E.project(x, method="pca", dims=2, seed=3)
    np.testing.assert_array_equal(a.points, b.points)
    assert a.points.shape == (len(x), 2) and a.method == "pca" and a.dims == 2
    np.testing.assert_allclose(a.model.transform(x[:7]), a.points[:7], atol=1e-4)
    assert E.project(x, method="pca", dims=3).points.shape == (len(x), 3)
    assert E.project(x[:, :2], method="pca", dims=3).points.shape == (len(x), 3)  # padded, never crashes
    with pytest.raises(ValueError, match="method"):
        E.project(x, method="tsne")
    with pytest.raises(ValueError, match="dims"):
        E.project(x, dims=4)


@pytest.mark.slow
def test_umap_is_deterministic_with_a_seed_and_places_new_points_without_refit():
    x, y = _blobs(n_per=50)
    a = E.project(x, method="umap", dims=2, seed=0)
    b = E.project(x, method="umap", dims=2, seed=0)
    np.testing.assert_allclose(a.points, b.points, atol=1e-5)
    fitted = a.points.copy()
    new = x[:6] + 0.01
    placed = a.model.transform(new)
    assert placed.shape == (6, 2)
    np.testing.assert_array_equal(a.model.embedding_, fitted)  # the map did not move
    # a new point lands near the points of its own blob
    centre = {g: fitted[y == g].mean(axis=0) for g in set(y)}
    nearest = min(centre, key=lambda g: np.linalg.norm(placed[0] - centre[g]))
    assert nearest == y[0]
    # fit on a subset, the rest transformed: every point gets a place
    c = E.project(x, method="umap", dims=2, seed=0, fit_size=100)
    assert c.points.shape == (len(x), 2) and np.isfinite(c.points).all() and c.params["fit_size"] == 100


def test_sample_for_display_keeps_mistakes_and_small_groups():
    n = 10_000
    labels = np.array(["big"] * 9900 + ["tiny"] * 100, dtype=object)
    keep = np.zeros(n, bool)
    keep[[5, 50, 500]] = True
    idx = E.sample_for_display(n, 1000, keep=keep, strata=labels, seed=0)
    assert len(idx) <= 1000 and set([5, 50, 500]) <= set(idx.tolist())
    assert (labels[idx] == "tiny").sum() >= 10
    np.testing.assert_array_equal(E.sample_for_display(50, 1000), np.arange(50))


# ---------------------------------------------------------------------------
# clustering
# ---------------------------------------------------------------------------

def test_gmm_by_bic_and_agglomerative_recover_separated_blobs():
    x, y = _blobs()
    g = E.cluster(x, method="gmm", true_labels=y, k_range=range(2, 7))
    assert g.k == 3 and g.ari > 0.95 and g.purity > 0.97
    assert list(g.bic["k"]) == [2, 3, 4, 5, 6] and g.bic.loc[g.bic["bic"].idxmin(), "k"] == 3
    a = E.cluster(x, method="agglomerative", true_labels=y)
    assert a.k == 3 and a.ari > 0.95 and a.bic.empty
    for c, idx in a.typical.items():
        assert (a.labels[idx] == c).all()
    assert a.table["size"].sum() == len(x) and a.table["size"].is_monotonic_decreasing
    fixed = E.cluster(x, method="gmm", k=5)
    assert fixed.k <= 5 and np.isnan(fixed.ari)
    with pytest.raises(ValueError, match="method"):
        E.cluster(x, method="kmeans")


# ---------------------------------------------------------------------------
# out-of-distribution
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", E.OOD_METHODS)
def test_ood_scores_are_higher_far_from_training(method):
    # non-negative-ish blobs along three axes (like ReLU embeddings); the unseen points along a fourth
    x, y = _blobs(n_per=80, centres=((10, 0, 0, 0), (0, 10, 0, 0), (0, 0, 10, 0)))
    splits = np.where(np.arange(len(x)) % 4 == 0, "test", "train")
    emb = _fake_embeddings(x, y, splits)
    far = np.random.default_rng(1).normal((0, 0, 0, 12), 1.0, size=(30, 4)).astype(np.float32)
    ev = E.evaluate_ood(emb, far, method=method, fpr=0.1)
    assert ev.auroc > 0.99 and ev.n_unseen == 30 and ev.n_flagged == 30
    assert ev.test_fpr <= 0.1 + 1e-9 and ev.method == method
    model = E.fit_ood(emb, method=method)
    assert model.score(far).min() > model.score(x[splits == "train"]).max()


def test_knn_ood_is_the_mean_cosine_distance_to_the_10_nearest_train_vectors():
    rng = np.random.default_rng(0)
    train, query = rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(40, 24)).astype(np.float32)
    emb = _fake_embeddings(train, np.zeros(300, int), np.full(300, "train"))
    got = E.fit_ood(emb, method="knn").score(query)
    unit = (lambda a: a / np.linalg.norm(a, axis=1, keepdims=True))
    dist = 1.0 - unit(query) @ unit(train).T  # the N x M matrix the faiss index avoids, as a reference
    np.testing.assert_allclose(got, np.sort(dist, axis=1)[:, :10].mean(axis=1), atol=1e-5)


def test_mahalanobis_ood_is_the_smallest_distance_to_a_class_mean_under_the_shared_precision():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16)) + np.repeat(np.eye(16)[:4] * 6, 100, axis=0)
    y = np.repeat(np.arange(4), 100)
    emb = _fake_embeddings(x.astype(np.float32), y, np.full(400, "train"))
    model = E.fit_ood(emb, method="mahalanobis")
    model.CHUNK = 7  # several chunks
    query = np.concatenate([rng.normal(size=(30, 16)) * 2, model.means_[:2]])  # two queries on a class mean
    ref = np.sqrt(np.min([np.einsum("ij,jk,ik->i", query - m, model.precision_, query - m) for m in model.means_],
                         axis=0))  # the definition, one class at a time
    got = model.score(query.astype(np.float32))
    np.testing.assert_allclose(got[:30], ref[:30], rtol=1e-6)
    assert np.all(got[30:] < 1e-3) and np.all(np.isfinite(got))


def test_threshold_at_fpr_and_auroc_against_naive_references():
    s = np.arange(100, dtype=float)
    assert E.threshold_at_fpr(s, 0.05) == 95.0 and (s > 95.0).mean() == 0.04
    assert E.threshold_at_fpr(s, 0.0) == 99.0
    assert E.auroc(np.array([0, 1, 2.0]), np.array([3, 4.0])) == 1.0
    assert E.auroc(np.array([0, 3.0]), np.array([1, 2.0])) == 0.5
    assert np.isnan(E.auroc(np.array([1.0]), np.array([])))


def test_saved_threshold_merges_and_drives_ood_scores(run_copy, demo_workspace):
    runs.write_thresholds(run_copy, classes={"button": {"threshold": 0.4}})
    emb = E.compute_embeddings(run_copy, workspace=demo_workspace)
    E.save_ood_threshold(run_copy, method="knn", threshold=0.25, fpr=0.05, auroc=0.9)
    th = runs.read_thresholds(run_copy)
    assert th["classes"] == {"button": {"threshold": 0.4}}
    assert th["ood"]["method"] == "knn" and th["ood"]["threshold"] == 0.25 and th["ood"]["auroc"] == 0.9
    got = E.ood_scores(run_copy, emb.vectors[:10], workspace=demo_workspace)
    ref = E.fit_ood(emb, method="knn").score(emb.vectors[:10])
    np.testing.assert_allclose(got, ref)
    with pytest.raises(ValueError, match="method"):
        E.save_ood_threshold(run_copy, method="lof", threshold=1.0, fpr=0.05)


@pytest.mark.slow
def test_ood_auroc_well_above_chance_scene_run_vs_flower_photos(miml_scene, flowers12, tmp_path):
    """A tiny CNN trained on landscape photos (miml_scene) scores flower photos (flowers12) as unusual."""
    from core import jobs
    from core.datasets import DatasetSpec, load_dataset
    from core.training import recommended_config
    from core.workspace import home

    labels = pd.read_csv(miml_scene / "labels.csv")
    tags = labels.columns[1:]
    single = labels[labels[tags].sum(axis=1) == 1].copy()
    single["scene"] = single[tags].idxmax(axis=1)
    single = single.groupby("scene", group_keys=False).head(80)[["image", "scene"]]
    csv = tmp_path / "scene.csv"
    single.to_csv(csv, index=False)
    unseen = tmp_path / "flowers"
    unseen.mkdir()
    for p in sorted((flowers12 / "test").rglob("*.jpg"))[::4][:60]:
        shutil.copy(p, unseen / f"{p.parent.name}_{p.name}")
    ws = home(tmp_path / "ws").ensure()
    ds = load_dataset(DatasetSpec(path=str(miml_scene / "images"), labels=str(csv), image_column="image",
                                  label_columns=("scene",), task="multiclass", unseen=str(unseen)), workspace=ws)
    assert len(ds.unseen_paths) == 60
    cfg = recommended_config(model="cnn", dataset_id=ds.dataset_id, image_size=32, epochs=6, filters=16,
                             embedding_dim=32, patience=0, batch_size=32, augmentation=False)
    out = ws.runs_dir / "scene"
    assert jobs.run_worker(cfg, out=out, workspace=ws).state == "done"
    emb = E.compute_embeddings(out)  # the workspace is found from runs/<id>
    vectors, ok = E.embed_paths(out, ds.unseen_paths)
    assert ok.all()
    results = {m: E.evaluate_ood(emb, vectors, method=m) for m in E.OOD_METHODS}
    best = max(r.auroc for r in results.values())
    assert results["mahalanobis"].auroc > 0.75, {m: r.auroc for m, r in results.items()}
    assert best > 0.8


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def test_cli_embed_writes_the_map_csv(run_copy, demo_workspace, tmp_path, capsys):
    out = tmp_path / "map.csv"
    rc = cli_main(["embed", str(run_copy), "--dims", "3", "--out", str(out), "--workspace",
                   str(demo_workspace.root), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    df = pd.read_csv(out, dtype={"sample_id": str})
    assert list(df.columns[:6]) == ["sample_id", "path", "split", "x", "y", "z"]
    assert {"label", "prediction", "correct"} <= set(df.columns)
    assert result["n"] == len(df) == 1042 and result["method"] == "pca" and df[["x", "y", "z"]].notna().all().all()


def test_cli_ood_reports_auroc_and_saves_the_threshold(run_copy, demo_workspace, capsys):
    unseen = demo_workspace.demo_dir / "unseen"
    assert unseen.is_dir()
    rc = cli_main(["ood", str(run_copy), "--unseen", str(unseen), "--method", "knn", "--save", "--workspace",
                   str(demo_workspace.root), "--json"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"method", "auroc", "threshold", "n_unseen", "n_flagged"} <= set(result)
    assert result["method"] == "knn" and result["n_unseen"] == 40 and 0.5 < result["auroc"] <= 1.0
    assert runs.read_thresholds(run_copy)["ood"]["threshold"] == pytest.approx(result["threshold"])


def test_cli_ood_rejects_a_folder_without_images(run_copy, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert cli_main(["ood", str(run_copy), "--unseen", str(tmp_path / "nothing")]) == 2
    assert "no image files" in capsys.readouterr().err
    assert cli_main(["ood", str(run_copy), "--unseen", str(tmp_path / "missing")]) == 2


# ---------------------------------------------------------------------------
# before any training: pretrained-backbone embeddings
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_backbone_embeddings_before_any_run(tmp_path, keras_home):
    """ImageNet MobileNetV2 features of a small folder dataset, cached in the workspace (subprocess: KERAS_HOME)."""
    import subprocess
    import sys

    from PIL import Image

    root = tmp_path / "shapes"
    rng = np.random.default_rng(0)
    for cls, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            arr = (rng.integers(0, 40, (40, 40, 3)) + np.array(colour) * 0.8).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    code = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
from core import embeddings as E
from core.datasets import DatasetSpec, load_dataset
from core.workspace import home
ws = home({str(tmp_path / 'ws')!r}).ensure()
ds = load_dataset(DatasetSpec(path={str(root)!r}), workspace=ws)
fresh_before = E.backbone_embeddings_fresh(ws, ds.dataset_id)
emb = E.backbone_embeddings(ws, ds.dataset_id)
import core.embeddings.backbone as B
load = B._load_cached
B._load_cached = None  # the freshness check must not load the vectors
fresh_after = E.backbone_embeddings_fresh(ws, ds.dataset_id)
fresh_other_size = E.backbone_embeddings_fresh(ws, ds.dataset_id, image_size=128)
B._load_cached = load
again = E.backbone_embeddings(ws, ds.dataset_id)
vec, ok = E.backbone_embed_paths(list(emb.paths[:2]), workspace=ws)
print(json.dumps({{"shape": list(emb.vectors.shape), "labels": sorted(set(emb.labels)), "probs": list(emb.probs.shape),
                  "same": bool((again.vectors == emb.vectors).all()),
                  "cached": E.backbone_embeddings_path(ws, ds.dataset_id).exists(),
                  "paths_close": bool(abs(vec - emb.vectors[:2]).max() < 1e-3), "ok": ok.tolist(),
                  "fresh": [fresh_before, fresh_after, fresh_other_size]}}))
"""
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["shape"] == [12, 1280] and out["labels"] == ["blue", "red"] and out["probs"] == [12, 0]
    assert out["same"] and out["cached"] and out["paths_close"] and out["ok"] == [True, True]
    assert out["fresh"] == [False, True, False]
