"""core.predict: agreement with the run's own predictions, bundles, decisions, bad inputs, zips, the CLI."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import predict, runs
from core.cli import main as cli_main
from core.predict import PredictError, Predictor
from tests.conftest import zip_bytes


def _png(colour=(200, 30, 30), size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _test_rows(run_dir: Path, n: int = 40) -> pd.DataFrame:
    df = pd.read_csv(run_dir / runs.PREDICTIONS, dtype={"sample_id": str}, keep_default_na=False)
    return df[df["split"] == "test"].head(n).reset_index(drop=True)


@pytest.fixture(scope="module")
def hier(demo_run) -> Predictor:
    return Predictor.load(demo_run)


# ---------------------------------------------------------------------------
# agreement with what training predicted, and between run, bundle and CLI
# ---------------------------------------------------------------------------

def test_matches_the_runs_own_test_predictions(demo_run, hier):
    rows = _test_rows(demo_run)
    df = hier.predict_paths(rows["path"].tolist(), top_k=2)
    assert (df["error"] == "").all()
    leaf = hier.labels["levels"][-1]
    ours = df[[f"p_{c}" for c in hier.outputs]].to_numpy()
    theirs = rows[[f"{leaf}_p_{c}" for c in hier.outputs]].to_numpy(dtype=float)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # hierarchical decision: the full predicted path, as training wrote it
    expected = rows["group_pred"] + predict.PATH_SEPARATOR + rows["element_pred"]
    assert df["prediction"].tolist() == expected.tolist()
    assert (df["pred_element"] == rows["element_pred"]).all()
    assert np.allclose(df["confidence"], ours.max(axis=1))
    assert (df["top1"] == rows["element_pred"]).all() and "top2_p" in df and "top3" not in df
    assert list(df.columns[:7]) == list(predict.BASE_COLUMNS)


def test_bundle_and_cli_agree_with_the_run(demo_multiclass_run, demo_workspace, tmp_path, capsys):
    from core import embeddings

    run = tmp_path / "run"
    shutil.copytree(demo_multiclass_run, run)
    embeddings.compute_embeddings(run, workspace=demo_workspace)
    rows = _test_rows(run, 30)
    # thresholds from Evaluate and the OOD threshold from Embeddings
    classes = json.loads((run / runs.LABELS).read_text())["classes"]
    runs.write_thresholds(run, classes={c: {"threshold": 0.6} for c in classes[:5]} | {classes[5]: None})
    direct = Predictor.load(run)
    scores = direct.predict_paths(rows["path"].tolist())["ood_score"].to_numpy()
    assert np.isfinite(scores).all()
    embeddings.save_ood_threshold(run, method="mahalanobis", threshold=float(np.median(scores)), fpr=0.05)

    direct = Predictor.load(run)
    assert direct.class_thresholds == {c: 0.6 for c in classes[:5]} and direct.ood_note is None
    a = direct.predict_paths(rows["path"].tolist())
    bundle = predict.export_bundle(run, tmp_path / "out" / "bundle.zip")
    with zipfile.ZipFile(bundle) as zf:
        names = set(zf.namelist())
    assert {"model.keras", "labels.json", "preprocessing.json", "thresholds.json", "config.json",
            "bundle.json", embeddings.EMBEDDINGS_FILE} <= names
    # the bundle must not need the dataset or the workspace: move the run away
    shutil.rmtree(run)
    loaded = Predictor.load(bundle)
    assert loaded.is_bundle and loaded.run_id == "run" and loaded.ood_threshold is not None
    b = loaded.predict_paths(rows["path"].tolist())
    pcols = [f"p_{c}" for c in classes]
    np.testing.assert_allclose(a[pcols].to_numpy(), b[pcols].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(a["ood_score"], b["ood_score"], rtol=1e-4)
    assert a["prediction"].tolist() == b["prediction"].tolist()
    assert a["ood_flag"].sum() >= 1 and (~a["ood_flag"]).sum() >= 1
    assert (a["ood_flag"] == (a["ood_score"] > loaded.ood_threshold)).all()
    # saved thresholds make a below-threshold prediction "uncertain"; classes without one never are
    has_t = a["prediction"].isin(classes[:5])
    assert (a.loc[has_t, "uncertain"] == (a.loc[has_t, "confidence"] < 0.6)).all()
    assert not a.loc[~has_t, "uncertain"].any() and a.loc[~has_t, "threshold"].isna().all()

    # the CLI on the bundle: same probabilities, CSV + JSON
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i, p in enumerate(rows["path"][:5]):
        shutil.copy(p, folder / ("sub" if i % 2 else "") / f"{i}.png")
    (folder / "notes.txt").write_text("skipped: not an image name")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out_csv = tmp_path / "pred.csv"
    code = cli_main(["predict", str(bundle), str(folder), "--csv", str(out_csv), "--top-k", "2", "--json"])
    assert code == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["n_images"] == 6 and last["n_errors"] == 1
    csv = pd.read_csv(out_csv, keep_default_na=False)
    for col in ("path", "prediction", "confidence", "ood_score", "ood_flag", "error", *pcols):
        assert col in csv.columns
    bad = csv[csv["error"] != ""]
    assert len(bad) == 1 and "broken.png" in bad["error"].iloc[0]
    good = csv[csv["error"] == ""].copy()
    good["i"] = good["path"].map(lambda s: int(Path(s).stem))
    good = good.sort_values("i")
    np.testing.assert_allclose(good[pcols].to_numpy(float), a[pcols].to_numpy()[:5], atol=1e-5)


def test_export_cli_and_bad_sources(demo_run, tmp_path, capsys):
    assert cli_main(["export", str(demo_run), "--out", str(tmp_path / "b.zip"), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "model.keras" in last["files"] and last["bytes"] > 0
    with pytest.raises(PredictError, match="does not exist"):
        Predictor.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictError, match="lacks model.keras"):
        Predictor.load(tmp_path / "empty")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(PredictError, match="not a Loupe model bundle"):
        Predictor.load(tmp_path / "other.zip")
    assert cli_main(["predict", str(tmp_path / "empty"), str(tmp_path / "other.zip")]) == 2
    assert "lacks model.keras" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# uploads: bad files get a row with a message; zips are checked before extraction
# ---------------------------------------------------------------------------

def test_uploads_bad_files_get_a_message_and_the_rest_runs(hier):
    good = _png()
    df = hier.predict_bytes([("a.png", good), ("broken.jpg", b"\xff\xd8\xff\xe0 not really"),
                             ("notes.txt", b"hello"), ("huge.png", good + b"\0" * 2000), ("b.png", _png((10, 200, 10)))],
                            max_bytes=len(good) + 1000)
    assert df["path"].tolist() == ["a.png", "broken.jpg", "notes.txt", "huge.png", "b.png"]
    ok = df["error"] == ""
    assert ok.tolist() == [True, False, False, False, True]
    assert df.loc[1, "error"].startswith("broken.jpg: ") and "not an image" in df.loc[1, "error"]
    assert df.loc[2, "error"].startswith("notes.txt: ")
    assert "upload limit" in df.loc[3, "error"]
    assert df.loc[~ok, "prediction"].eq("").all() and df.loc[~ok, "confidence"].isna().all()
    assert df.loc[ok, "prediction"].str.contains(predict.PATH_SEPARATOR).all()
    # the same image predicted from bytes and from an array agrees
    arr = np.asarray(Image.open(io.BytesIO(good)).convert("RGB"))
    again = hier.predict_images([arr], names=["a"])
    pcols = [f"p_{c}" for c in hier.outputs]
    np.testing.assert_allclose(again[pcols].to_numpy()[0], df.loc[0, pcols].to_numpy(float), atol=1e-5)


def test_zip_upload_is_expanded_and_zip_slip_refused(hier, tmp_path):
    ok = zip_bytes({"set/a.png": _png(), "set/b/c.png": _png((0, 0, 200)), "set/readme.md": b"x", "__MACOSX/._a.png": b"x"})
    slip = zip_bytes({"fine.png": _png(), "../../evil.png": _png()})
    absolute = zip_bytes({"/tmp/abs.png": _png()})
    df = hier.predict_bytes([("batch.zip", ok), ("slip.zip", slip), ("abs.zip", absolute), ("after.png", _png())])
    assert df["path"].tolist() == ["batch.zip/set/a.png", "batch.zip/set/b/c.png", "slip.zip", "abs.zip", "after.png"]
    assert (df["error"] == "").tolist() == [True, True, False, False, True]
    assert "refused" in df.loc[2, "error"] and "../../evil.png" in df.loc[2, "error"]
    assert "refused" in df.loc[3, "error"] and "/tmp/abs.png" in df.loc[3, "error"]
    assert not (tmp_path.parent / "evil.png").exists() and not Path("/tmp/abs.png").exists()
    with pytest.raises(PredictError, match="escape|outside"):
        predict.extract_image_zip(slip, tmp_path / "x", name="slip.zip")
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").rglob("*"))


def test_zip_bomb_limits(tmp_path):
    bomb = zip_bytes({f"{i}.png": b"\0" * 300_000 for i in range(4)})
    with pytest.raises(PredictError, match="more than 1,000,000 bytes"):
        predict.extract_image_zip(bomb, tmp_path / "a", name="bomb.zip", max_total_bytes=1_000_000)
    with pytest.raises(PredictError, match="more than 2 files"):
        predict.extract_image_zip(bomb, tmp_path / "b", name="bomb.zip", max_files=2)
    with pytest.raises(PredictError, match="no images"):
        predict.extract_image_zip(zip_bytes({"a.txt": b"x"}), tmp_path / "c")
    with pytest.raises(PredictError, match="not a readable zip"):
        predict.extract_image_zip(b"PK\x03\x04 nope", tmp_path / "d")


def test_collect_images_recurses_and_skips_non_images(tmp_path):
    (tmp_path / "a" / ".hidden").mkdir(parents=True)
    for rel in ("a/1.png", "a/2.JPG", "a/.hidden/3.png", "a/.4.png", "a/notes.txt", "5.webp"):
        (tmp_path / rel).write_bytes(b"x")
    got = predict.collect_images([tmp_path, tmp_path / "a" / "notes.txt", tmp_path / "missing.png"])
    assert [p.relative_to(tmp_path).as_posix() for p in got] == ["5.webp", "a/1.png", "a/2.JPG", "a/notes.txt",
                                                               "missing.png"]


# ---------------------------------------------------------------------------
# decisions under thresholds (a small untrained model: the rule is what is tested)
# ---------------------------------------------------------------------------

def _synthetic(tmp_path, labels: dict, thresholds: dict, *, activation: str) -> Predictor:
    import keras

    from core.models import build_model

    keras.utils.set_random_seed(0)  # the same weights every call: two predictors differ by thresholds only
    k = len(labels.get("classes") or labels.get("labels"))
    model = build_model(k, image_size=16, activation=activation, embedding_dim=4, filters=4, seed=0)
    return Predictor(tmp_path, source=str(tmp_path), model=model, labels=runs.validate_labels(labels),
                     preprocessing={"image_size": 16, "input_range": [0, 255]}, thresholds=thresholds, config={})


def _images(n=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)


def test_binary_decision_uses_the_positive_class_threshold(tmp_path):
    labels = {"task": "binary", "classes": ["cat", "dog"], "positive_class": "dog"}
    base = _synthetic(tmp_path, labels, {}, activation="softmax")
    p = base.probabilities(_images())[:, 1]
    t = float(np.median(p))
    pred = _synthetic(tmp_path, labels, {"classes": {"dog": {"threshold": t}}}, activation="softmax")
    df = pred.predict_images(list(_images()))
    np.testing.assert_allclose(df["p_dog"], p, atol=1e-6)
    assert df["prediction"].tolist() == ["dog" if v >= t else "cat" for v in p]
    assert set(df["prediction"]) == {"cat", "dog"} and (df["threshold"] == t).all()
    assert not df["uncertain"].any() and df["ood_flag"].isna().all()
    assert "no layer" not in (pred.ood_note or "")


def test_multilabel_tags_use_per_label_thresholds(tmp_path):
    labels = {"task": "multilabel", "labels": ["sea", "sky", "sand"]}
    base = _synthetic(tmp_path, labels, {}, activation="sigmoid")
    probs = base.probabilities(_images())
    th = {"sea": float(np.median(probs[:, 0])), "sky": None}  # sky: unreachable -> 0.5; sand: none -> 0.5
    pred = _synthetic(tmp_path, labels, {"classes": {"sea": {"threshold": th["sea"]}, "sky": None}},
                      activation="sigmoid")
    df = pred.predict_images(list(_images()), top_k=5)
    cut = np.array([th["sea"], 0.5, 0.5])
    want = [";".join(n for n, on in zip(labels["labels"], row >= cut) if on) for row in probs]
    assert df["prediction"].tolist() == want
    assert (df["pred_sea"] == (probs[:, 0] >= th["sea"]).astype(int)).all()
    assert "top3" in df and "top4" not in df  # top-k capped at K


def test_multiclass_uncertain_below_saved_threshold(tmp_path):
    labels = {"task": "multiclass", "classes": ["a", "b", "c"]}
    probs = _synthetic(tmp_path, labels, {}, activation="softmax").probabilities(_images())
    pred = _synthetic(tmp_path, labels, {"classes": {"a": {"threshold": 0.999}, "b": {"threshold": 0.0}}},
                      activation="softmax")
    df = pred.predict_images(list(_images()))
    best = np.array(labels["classes"])[probs.argmax(axis=1)]
    assert df["prediction"].tolist() == best.tolist()
    assert df["uncertain"].tolist() == [c == "a" for c in best]
    with pytest.raises(ValueError, match="top_k"):
        pred.predict_images(list(_images(2)), top_k=0)


def test_a_run_that_averages_flips_predicts_the_mean_of_the_image_and_its_mirror(tmp_path):
    """preprocessing.json's flip_average (written by runs trained on mirrored images): every probability
    is the mean over the image and its left-right mirror; the OOD embedding stays the image's own."""
    labels = {"task": "multiclass", "classes": ["a", "b", "c"]}
    images = _images(37)  # not a power of two: padding and the mirrored half must line up
    plain = _synthetic(tmp_path, labels, {}, activation="softmax")
    want = (plain.probabilities(images) + plain.probabilities(images[:, :, ::-1].copy())) / 2
    assert np.abs(plain.probabilities(images) - want).max() > 1e-3  # the model is not mirror-symmetric
    import keras

    from core.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model(3, image_size=16, activation="softmax", embedding_dim=4, filters=4, seed=0)
    flip = Predictor(tmp_path, source=str(tmp_path), model=model, labels=runs.validate_labels(labels),
                     preprocessing={"image_size": 16, "input_range": [0, 255], runs.FLIP_AVERAGE: True},
                     thresholds={}, config={})
    assert flip.flip_average and not plain.flip_average
    np.testing.assert_allclose(flip.probabilities(images), want, atol=1e-6)
    df = flip.predict_images(list(images))
    np.testing.assert_allclose(df[[f"p_{c}" for c in labels["classes"]]].to_numpy(), want, atol=1e-6)
    # the embedding (what the OOD scorer reads) is the image's as it is, not the mirror's
    flip._ood_fn = plain._ood_fn = lambda v: np.asarray(v)[:, 0]
    _, emb_flip = flip._forward(images[:5])
    _, emb_plain = plain._forward(images[:5])
    np.testing.assert_allclose(emb_flip, emb_plain, atol=1e-6)
