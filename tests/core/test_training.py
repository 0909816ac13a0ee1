"""core.training: targets, imputation, the fit loop, the run directory it writes, the CLI, weights fallback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from core import models, runs, targets, training, training_charts
from core.metrics import epoch_scores
from core.training import callbacks as fit_callbacks
from core.training import trainer as fit_loop
from core.datasets import LabelSchema
from core.workspace import home

REPO = Path(__file__).resolve().parents[2]
COLOURS = {"red": (220, 30, 30), "yellow": (230, 210, 20), "blue": (30, 30, 220), "green": (30, 190, 30)}
GROUP = {"red": "warm", "yellow": "warm", "blue": "cool", "green": "cool"}


def _square(path: Path, colour, rng, size=20, extra=None) -> None:
    """A dark noisy background with a coloured square (clearly learnable from colour)."""
    bg = rng.integers(0, 50, size=(size, size, 3)).astype(np.uint8)
    im = Image.fromarray(bg, "RGB")
    d = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(0, size // 2, 2))
    d.rectangle([x, y, x + size // 2, y + size // 2], fill=colour)
    if extra is not None:
        d.ellipse([size - 8, size - 8, size - 1, size - 1], fill=extra)
    im.save(path)


def _samples(tmp_path: Path, colours, n_per=16, seed=0, **label_fns) -> pd.DataFrame:
    """A samples table (the core.datasets contract) over freshly drawn images; split 10/3/3 per class."""
    rng = np.random.default_rng(seed)
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    rows = []
    for c in colours:
        for i in range(n_per):
            p = root / f"{c}_{i}.png"
            _square(p, COLOURS[c], rng)
            split = "train" if i < n_per * 5 // 8 else ("val" if i < n_per * 13 // 16 else "test")
            row = {"sample_id": p.name, "path": str(p), "rel_path": p.name, "x1": np.nan, "y1": np.nan,
                   "x2": np.nan, "y2": np.nan, "split": split, "width": 20, "height": 20, "mode": "RGB"}
            for name, fn in label_fns.items():
                row[name] = fn(c, i)
            rows.append(row)
    return pd.DataFrame(rows)


def _config(**kw) -> training.TrainConfig:
    base = dict(image_size=16, epochs=2, batch_size=16, filters=4, embedding_dim=8, log_every=2)
    base.update(kw)
    return training.TrainConfig(**base)


@pytest.fixture
def ws(tmp_path):
    return home(tmp_path / "ws").ensure()


# ---------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------

def test_impute_mean_matches_a_naive_loop():
    Y = np.array([[1, np.nan, 0], [0, 1, np.nan], [1, 1, np.nan], [np.nan, 0, np.nan]], dtype=float)
    got = targets.impute_labels(Y, method="mean")
    want = Y.copy()
    for j in range(Y.shape[1]):
        known = [v for v in Y[:, j] if not np.isnan(v)]
        for i in range(Y.shape[0]):
            if np.isnan(Y[i, j]):
                want[i, j] = sum(known) / len(known)
    np.testing.assert_allclose(got, want)
    np.testing.assert_array_equal(targets.impute_labels(Y, method="mask"), Y)  # mask: nothing filled


def test_impute_matrix_factorization_recovers_a_low_rank_pattern():
    rng = np.random.default_rng(0)
    # two latent "scene types": labels 0-2 go together, labels 3-5 go together
    z = rng.integers(0, 2, size=200)
    Y = np.column_stack([z, z, z, 1 - z, 1 - z, 1 - z]).astype(float)
    hidden = rng.random(Y.shape) < 0.25
    Yobs = np.where(hidden, np.nan, Y)
    filled = targets.impute_labels(Yobs, method="matrix_factorization", rank=1, l2=0.01)
    np.testing.assert_array_equal(filled[~hidden], Y[~hidden])  # known entries untouched
    assert np.all((filled >= 0) & (filled <= 1))
    err_mf = np.abs(filled[hidden] - Y[hidden]).mean()
    err_mean = np.abs(targets.impute_labels(Yobs, method="mean")[hidden] - Y[hidden]).mean()
    assert err_mf < 0.2 < err_mean  # the low-rank fit uses the co-occurrence; the mean cannot


def test_impute_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        targets.impute_labels(np.zeros((2, 2)), method="knn")
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        targets.impute_labels(np.array([[2.0, 0.0]]), method="mean")
    with pytest.raises(ValueError, match="shape"):
        targets.impute_labels(np.zeros(3), method="mean")


def test_config_validates_and_round_trips():
    cfg = _config(exclude_classes="a, b", label_columns=["x", "y"])
    assert cfg.exclude_classes == ("a", "b") and cfg.label_columns == ("x", "y")
    assert training.TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for kw, name in [({"monitor": "val_auc"}, "monitor"), ({"epochs": 0}, "epochs"), ({"lr": -1.0}, "lr"),
                     ({"model": "vgg16"}, "model"), ({"hierarchy_mode": "tree"}, "hierarchy_mode"),
                     ({"fine_tune_layers": 5}, "fine_tune_layers")]:
        with pytest.raises(ValueError, match=name):
            _config(**kw)


def test_recommended_config_per_model_family():
    cnn = training.recommended_config("cnn")
    assert (cnn.fine_tune_layers, cnn.embedding_dim, cnn.epochs) == (0, 64, 10)
    tl = training.recommended_config("mobilenet_v2")
    assert tl.fine_tune_layers > 0 and 0 < tl.warmup_epochs < tl.epochs
    assert training.recommended_config("mobilenet_v2", epochs=1).fine_tune_layers == 0
    assert tl.probe_head and tl.average_weights and tl.dropout == 0.0  # probe, fine-tune, average (bench_training)
    assert (tl.patience, tl.reduce_lr_patience) == (0, 0)  # a constant learning rate for the weight average
    assert not cnn.probe_head and not cnn.average_weights and cnn.reduce_lr_patience == 2
    short = training.recommended_config("mobilenet_v2", epochs=3)
    assert 0 < short.warmup_epochs < 3
    assert training.recommended_config("mobilenet_v2", weights="none").fine_tune_layers == 0
    assert training.recommended_config("cnn", epochs=4, lr=0.01).lr == 0.01


def test_targets_binary_merges_the_rest_and_hierarchy_builds_parents(tmp_path):
    s = _samples(tmp_path, COLOURS, n_per=4, colour=lambda c, i: c, group=lambda c, i: GROUP[c])
    schema = LabelSchema("multiclass", ("colour",), {"colour": tuple(sorted(COLOURS))})
    t = targets.build_targets(s, schema, task="binary", positive_class="red")
    assert t.labels == {"task": "binary", "classes": ["not_red", "red"], "positive_class": "red"}
    assert set(t.y.tolist()) == {0, 1} and (t.y == 1).sum() == 4
    t = targets.build_targets(s, schema, exclude_classes=["green"])
    assert "green" not in t.names and t.dropped == {"excluded class": 4}
    hs = LabelSchema("hierarchical", ("group", "colour"))
    t = targets.build_targets(s, hs)
    runs.validate_labels(t.labels)  # the labels.json contract
    assert t.labels["parents"]["colour"] == GROUP
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=5)
    lp = targets.hierarchy_probabilities(probs, t.labels)
    np.testing.assert_allclose(lp["group"].sum(axis=1), 1.0)
    warm = [t.names.index(c) for c in ("red", "yellow")]
    np.testing.assert_allclose(lp["group"][:, t.labels["level_classes"]["group"].index("warm")],
                               probs[:, warm].sum(axis=1))
    path = targets.hierarchy_path(probs, t.labels)
    for i in range(5):
        leaf = t.names[path["colour"][i]]
        assert t.labels["level_classes"]["group"][path["group"][i]] == GROUP[leaf]


def test_collapse_and_gap_alerts_on_hand_made_cases():
    y = np.repeat(np.arange(5), 10)
    collapsed = np.tile([0.9, 0.025, 0.025, 0.025, 0.025], (50, 1))
    a = training.collapse_alert("multiclass", y, collapsed, list("abcde"))
    assert a["kind"] == "collapse" and a["class"] == "a" and "learning rate" in a["suggestion"]
    assert training.collapse_alert("multiclass", y, np.eye(5)[y], list("abcde")) is None
    # labels that are themselves all one class are not a collapse
    assert training.collapse_alert("multiclass", np.zeros(50, int), collapsed, list("abcde")) is None
    hist = [{"loss": l, "val_loss": v} for l, v in [(1.0, 1.0), (0.8, 0.9), (0.6, 0.95), (0.4, 1.05), (0.2, 1.2)]]
    assert training.gap_alert(hist)["kind"] == "overfitting"
    assert training.gap_alert([{"loss": 1 - 0.1 * i, "val_loss": 1 - 0.1 * i} for i in range(6)]) is None


def test_make_dataset_streams_the_same_rows_from_ram_or_memmap(tmp_path):
    images = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.uint8, shape=(10, 4, 4, 3))
    images[:] = np.arange(10, dtype=np.uint8)[:, None, None, None]
    y = np.arange(10) * 10
    idx = np.array([7, 2, 5, 9])
    for limit in (10**9, 0):  # in RAM, then streamed from the memmap
        xs, ys = zip(*[(x.numpy(), t.numpy()) for x, t in training.make_dataset(images, idx, y, batch_size=3,
                                                                                 in_memory_limit=limit)])
        np.testing.assert_array_equal(np.concatenate(xs)[:, 0, 0, 0], idx)
        np.testing.assert_array_equal(np.concatenate(ys), idx * 10)
        assert np.concatenate(xs).dtype == np.float32


def test_nan_loss_stops_the_fit_and_raises_an_alert(tmp_path):
    BatchLogger, RunRecorder = fit_callbacks.callback_classes()
    alerts = []
    ctx = fit_callbacks.FitContext(run_dir=tmp_path, stage="main", stop=training.StopRequest(), val_ds=None,
                               val_y=np.zeros(1), metric_task="multiclass", names=("a",), monitor="val_loss",
                               epochs=1, batch_size=1, n_train=1, save_checkpoint=lambda m: None,
                               on_epoch=lambda r: None, alerts=alerts)
    rec = RunRecorder(ctx)

    class FakeModel:
        stop_training = False

    logger = BatchLogger(rec, every=1)
    logger.set_model(FakeModel())
    logger.on_train_batch_end(0, {"loss": 0.5})
    assert not logger.model.stop_training
    logger.on_train_batch_end(1, {"loss": float("nan")})
    assert logger.model.stop_training and alerts[0]["kind"] == "nan_loss"
    kinds = list(runs.read_metrics(tmp_path)["kind"])
    assert kinds == ["batch", "alert"]


# ---------------------------------------------------------------------------
# The fit loop, in process, on tiny real images
# ---------------------------------------------------------------------------

def test_collapse_detector_fires_with_a_huge_learning_rate(tmp_path, ws):
    s = _samples(tmp_path, ["red", "blue", "green"], n_per=16, colour=lambda c, i: c)
    schema = LabelSchema("multiclass", ("colour",), {"colour": ("blue", "green", "red")})
    out = tmp_path / "run"
    res = training.train(_config(lr=1.0, epochs=3, patience=0, reduce_lr_patience=0), out=out, samples=s,
                         schema=schema, workspace=ws)
    kinds = [a["kind"] for a in res.alerts]
    assert "collapse" in kinds
    st = runs.read_status(out)
    assert any(a["kind"] == "collapse" and "learning rate" in a["suggestion"] for a in st["alerts"])
    m = runs.read_metrics(out)
    assert any("collapse" in (a if isinstance(a, list) else []) for a in m.get("alerts", []))


def test_multilabel_masked_loss_ignores_missing_labels(tmp_path, ws):
    rng = np.random.default_rng(1)
    miss = rng.random(200) < 0.2

    def red(c, i):
        return np.nan if miss[i * 4 + len(c)] else float(c == "red")

    s = _samples(tmp_path, ["red", "blue", "green"], n_per=16, red=red, cool=lambda c, i: float(c != "red"),
                 never=lambda c, i: np.nan)
    schema = LabelSchema("multilabel", ("red", "cool", "never"))
    out = tmp_path / "run"
    res = training.train(_config(epochs=2), out=out, samples=s, schema=schema, workspace=ws)
    assert res.state == "done" and np.isfinite(res.val["loss"]) and np.isfinite(res.test["loss"])
    m = runs.read_metrics(out)
    epochs = m[m["kind"] == "epoch"]
    assert np.isfinite(epochs["loss"].astype(float)).all() and np.isfinite(epochs["val_loss"].astype(float)).all()
    cols = runs.prediction_columns(runs.read_labels(out))
    df = pd.read_csv(out / runs.PREDICTIONS, dtype=str, keep_default_na=False)
    assert list(df.columns) == cols
    assert (df["true_never"] == "").all()  # missing stays missing, never 0
    test = s[s["split"] == "test"].set_index("sample_id")
    got = df[df["split"] == "test"].set_index("sample_id")
    assert ((got["true_red"] == "") == test.loc[got.index, "red"].isna()).all()
    pred = runs.read_predictions(out, split="test")
    assert pred.probs.shape == (len(got), 3)
    # imputation options run through the same loop
    res2 = training.train(_config(epochs=1, imputation="matrix_factorization"), out=tmp_path / "run_mf",
                          samples=s, schema=schema, workspace=ws)
    assert res2.state == "done"
    with pytest.raises(ValueError, match="class_weights"):
        training.train(_config(epochs=1, class_weights=True), out=tmp_path / "run_cw", samples=s, schema=schema,
                       workspace=ws)
    assert runs.read_status(tmp_path / "run_cw")["state"] == "failed"


@pytest.fixture
def hier_samples(tmp_path):
    return _samples(tmp_path, list(COLOURS), n_per=16, colour=lambda c, i: c, group=lambda c, i: GROUP[c])


def test_hierarchical_flat_and_separate_give_full_paths_on_the_same_test_split(tmp_path, ws, hier_samples):
    import keras

    from core.images import ImageCache

    schema = LabelSchema("hierarchical", ("group", "colour"))
    results = {}
    for mode in ("flat", "separate"):
        out = tmp_path / mode
        results[mode] = training.train(_config(hierarchy_mode=mode, epochs=2), out=out, samples=hier_samples,
                                       schema=schema, workspace=ws)
        labels = runs.read_labels(out)
        pred = runs.read_predictions(out, split="test")
        assert pred.levels == ("group", "colour")
        for i in range(pred.n_samples):  # every predicted path follows the parents map
            leaf = labels["level_classes"]["colour"][pred.level_pred["colour"][i]]
            assert labels["level_classes"]["group"][pred.level_pred["group"][i]] == GROUP[leaf]
        np.testing.assert_allclose(pred.level_probs["group"].sum(axis=1), 1.0, rtol=1e-5)
        assert {"group_accuracy", "colour_accuracy"} <= set(results[mode].test)
    flat_ids = set(runs.read_predictions(tmp_path / "flat", split="test").sample_ids)
    sep_ids = set(runs.read_predictions(tmp_path / "separate", split="test").sample_ids)
    assert flat_ids == sep_ids  # side by side on the same test split
    sep = tmp_path / "separate"
    cfg = runs.read_config(sep)
    assert cfg["hierarchy"]["mode"] == "separate" and len(cfg["hierarchy"]["models"]) == 3  # primary + 2 groups
    for rel in cfg["hierarchy"]["models"].values():
        assert (sep / rel).exists()
    combined = keras.saving.load_model(sep / runs.MODEL, safe_mode=True)
    assert combined.get_layer("embedding") is not None
    primary = keras.saving.load_model(sep / cfg["hierarchy"]["models"]["primary"], safe_mode=True)
    test = hier_samples[hier_samples["split"] == "test"].reset_index(drop=True)
    x = ImageCache(ws.cache_dir / "images").arrays(test, 16).images.astype("float32")
    p_leaf = combined.predict(x, verbose=0)
    p_top = primary.predict(x, verbose=0)
    lp = targets.hierarchy_probabilities(p_leaf, runs.read_labels(sep))
    np.testing.assert_allclose(lp["group"], p_top, atol=1e-5)  # P(group) = sum of P(leaf) in it


# ---------------------------------------------------------------------------
# The CLI, end to end, in a subprocess (the worker's real entry point)
# ---------------------------------------------------------------------------

def _folder(tmp_path: Path, colours=("red", "blue", "green"), n_per=14, size=20) -> Path:
    rng = np.random.default_rng(3)
    root = tmp_path / "folder"
    for c in colours:
        (root / c).mkdir(parents=True)
        for i in range(n_per):
            _square(root / c / f"{i}.png", COLOURS[c], rng, size=size)
    return root


def _cli(args, env_extra=None, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "core", "train", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_trains_a_folder_dataset_and_writes_the_run_directory(tmp_path):
    import keras

    root = _folder(tmp_path)
    out = tmp_path / "run"
    proc = _cli([root, "--workspace", tmp_path / "ws", "--image-size", 16, "--epochs", 2, "--batch-size", 16,
                 "--filters", 4, "--out", out, "--json"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"run_dir", "best_epoch", "val", "test", "seconds", "images_per_second"} <= set(result)
    assert {"accuracy", "macro_f1", "loss"} <= set(result["test"]) and result["images_per_second"] > 0
    assert Path(result["run_dir"]) == out.resolve()
    status = runs.read_status(out)
    assert status["state"] == "done" and runs.effective_state(status) == "done"
    df = pd.read_csv(out / runs.PREDICTIONS, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["sample_id", "path", "split", "true", "pred", "p_blue", "p_green", "p_red"]
    assert set(df["split"]) == {"val", "test"}
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["path"])
    np.testing.assert_allclose(df[["p_blue", "p_green", "p_red"]].astype(float).sum(axis=1), 1.0, rtol=1e-5)
    model = keras.saving.load_model(out / runs.MODEL, safe_mode=True)
    assert model.get_layer("embedding").units == 64
    pre = json.loads((out / runs.PREPROCESSING).read_text())
    assert pre["image_size"] == 16 and pre["input_range"] == [0, 255]
    cfg = runs.read_config(out)
    assert cfg["weights_used"] == "random (CNN)" and cfg["dataset_id"] and cfg["seed"] == 0
    epochs = runs.read_metrics(out).query("kind == 'epoch'")
    assert list(epochs["epoch"]) == [1, 2]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds",
            "images_per_second"} <= set(epochs.columns)
    # a bad option is a user error: exit 2, one clear line
    bad = _cli([root, "--workspace", tmp_path / "ws", "--out", tmp_path / "bad", "--epochs", 0])
    assert bad.returncode == 2 and "epochs" in bad.stderr


def test_offline_imagenet_weights_fall_back_to_random_init_with_a_clear_warning(tmp_path):
    root = _folder(tmp_path, n_per=6, size=32)
    empty = tmp_path / "keras_home"
    empty.mkdir()
    out = tmp_path / "run"
    offline = {"KERAS_HOME": str(empty), "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}
    proc = _cli([root, "--workspace", tmp_path / "ws", "--model", "mobilenet_v2", "--image-size", 32,
                 "--epochs", 1, "--batch-size", 8, "--out", out, "--json"], env_extra=offline)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ImageNet weights for mobilenet_v2 are unavailable" in proc.stderr
    assert "random initialisation" in proc.stderr and str(empty / "models") in proc.stderr
    cfg = runs.read_config(out)
    assert cfg["weights_used"].startswith("random (ImageNet weights unavailable: ")
    status = runs.read_status(out)
    assert status["state"] == "done" and any(a["kind"] == "weights" for a in status["alerts"])
    assert json.loads(proc.stdout.strip().splitlines()[-1])["weights_used"] == cfg["weights_used"]


def test_transfer_learning_with_the_shared_imagenet_weights_then_fine_tuning(tmp_path, keras_home):
    """The transfer recipe: a linear-probe head (one warm-up epoch on features), fine-tuning, averaged weights."""
    root = _folder(tmp_path, n_per=14, size=48)
    out = tmp_path / "run"
    proc = _cli([root, "--workspace", tmp_path / "ws", "--model", "mobilenet_v2", "--alpha", 0.35,
                 "--image-size", 96, "--epochs", 4, "--fine-tune-layers", 10,
                 "--batch-size", 16, "--out", out, "--json"], env_extra={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["weights_used"] == "imagenet" and result["state"] == "done"
    assert runs.read_config(out)["weights_used"] == "imagenet"
    assert not any(a["kind"] == "weights" for a in runs.read_status(out)["alerts"])
    assert "fine-tuning the top 10 backbone layers" in proc.stderr
    metrics = runs.read_metrics(out)
    epochs = metrics.query("kind == 'epoch'")
    lrs = list(epochs["lr"])
    assert lrs[1] == pytest.approx(lrs[0] * 0.03, rel=1e-3)  # fine-tuning runs at lr * fine_tune_lr_factor
    assert lrs[1] == pytest.approx(lrs[-1], rel=1e-6)  # at a constant rate (no plateau halving in the recipe)
    # the warm-up was a linear probe on backbone features computed once, its C picked by cross-validation on
    # the train split (val unseen); fine-tuning reads images
    assert "frozen warm-up = a linear probe on backbone features computed once" in proc.stderr
    assert re.search(r"linear probe C=[0-9.]+ picked by 3-fold cross-validation on the train split", proc.stderr)
    assert list(epochs["input"].fillna("images")) == ["backbone features", "images", "images", "images"]
    assert list(epochs["phase"]) == ["frozen warm-up"] + ["fine-tuning"] * 3  # what the live charts shade and mark
    # the weights of fine-tuning epochs 3-4 (after the first third) are averaged; the final model is the probe
    # unless the best on val of the best fine-tuning epoch and the average beats it significantly (so never worse
    # than the probe on val), and it is the checkpoint that produced the run's val metrics
    [avg] = metrics.query("kind == 'average'").to_dict("records")
    assert avg["epochs_averaged"] == [3, 4]
    [sel] = metrics.query("kind == 'selection'").to_dict("records")
    values = {c["name"]: c["value"] for c in sel["candidates"]}
    assert set(values) == {"linear probe", "best fine-tuning epoch", "weight average"}
    assert values["linear probe"] == pytest.approx(epochs.iloc[0]["val_macro_f1"])
    assert values["best fine-tuning epoch"] == pytest.approx(epochs.iloc[1:]["val_macro_f1"].max())
    assert values["weight average"] == pytest.approx(avg["val_macro_f1"])
    # the best on val wins only when it beats the probe significantly (1.96 standard errors of the paired difference)
    assert values[sel["best_on_val"]] == max(values.values()) >= values["linear probe"]
    gain = values[sel["best_on_val"]] - values["linear probe"]
    if sel["best_on_val"] == "linear probe":
        assert sel["chosen"] == "linear probe" and pd.isna(sel["standard_error"])
    else:
        assert sel["standard_error"] > 0
        assert sel["chosen"] == (sel["best_on_val"] if gain > 1.959964 * sel["standard_error"] else "linear probe")
    assert result["best_epoch"] == sel["epoch"] and f"final model = {sel['chosen']}" in proc.stderr
    chosen_row = avg if sel["chosen"] == "weight average" else epochs[epochs["epoch"] == sel["epoch"]].iloc[0]
    assert result["val"]["accuracy"] == pytest.approx(chosen_row["val_accuracy"])
    model = models.load_model(runs.RunDir(out).model)  # the whole model (pixels in)
    assert tuple(model.inputs[0].shape[1:]) == (96, 96, 3)
    # the model trained on mirrored images, so every val score above and every prediction averages each image
    # with its mirror: predictions.csv is what the Predictor (Predict page, CLI, bundle) gives for those files
    assert runs.read_preprocessing(out)[runs.FLIP_AVERAGE] is True and "test-time flip averaging" in proc.stderr
    from core.predict import Predictor

    test = runs.read_predictions(out, split="test")
    predictor = Predictor.load(out)
    assert predictor.flip_average
    got = predictor.predict_paths(list(test.paths))
    np.testing.assert_allclose(got[[f"p_{c}" for c in predictor.outputs]].to_numpy(), test.probs, atol=1e-4)
    from core import embeddings  # the Embeddings page's probabilities too; its vectors are the images' own

    images = np.stack([predictor._decode(p) for p in test.paths[:6]])
    vecs, probs = embeddings.embed_images_with_probs(out, images)
    np.testing.assert_allclose(probs, test.probs[:6], atol=1e-4)
    np.testing.assert_allclose(vecs, embeddings.embed_images(out, images), atol=1e-5)


def test_the_final_model_is_the_warm_up_unless_a_fine_tuned_candidate_beats_it_significantly():
    from core.training.trainer import SIGNIFICANT_Z, pick_final

    assert SIGNIFICANT_Z == pytest.approx(1.959964)  # 5 % two-sided: scipy.stats.norm.ppf(0.975)
    cands = [{"name": "linear probe", "value": 0.80}, {"name": "best fine-tuning epoch", "value": 0.83},
             {"name": "weight average", "value": 0.85}]
    asked = []

    def se(value):
        return lambda name: asked.append(name) or value

    # a gain of 0.05 at 1.67 standard errors (what picked noise on flowers12's 108 val images): the probe stays
    chosen, best, s, why = pick_final(cands, monitor="val_macro_f1", standard_error=se(0.03), n_val=100)
    assert (chosen["name"], best["name"], s, asked) == ("linear probe", "weight average", 0.03, ["weight average"])
    assert "linear probe kept" in why and "1.7 standard errors (0.0300)" in why and "100 val images" in why
    chosen, best, s, why = pick_final(cands, monitor="val_macro_f1", standard_error=se(0.02), n_val=100)
    assert chosen is best is cands[2] and "significant: over 1.96 standard errors (0.0200)" in why
    # unknown standard error (no per-image val predictions): the best on val, as before
    assert pick_final(cands, monitor="val_macro_f1", standard_error=se(float("nan")), n_val=100)[0] is cands[2]
    # lower is better for the loss; a warm-up that is best needs no standard error
    loss = [{"name": "linear probe", "value": 0.50}, {"name": "weight average", "value": 0.40}]
    assert pick_final(loss, monitor="val_loss", standard_error=se(0.04), n_val=10)[0] is loss[1]
    assert pick_final(loss, monitor="val_loss", standard_error=se(0.06), n_val=10)[0] is loss[0]
    asked.clear()
    assert pick_final([{"name": "linear probe", "value": 0.9}, {"name": "weight average", "value": 0.9}],
                      monitor="val_macro_f1", standard_error=se(0.0), n_val=10)[0]["name"] == "linear probe"
    assert asked == []  # ties keep the earlier: no comparison needed


def test_embedding_is_widened_so_a_probe_head_fits_many_classes():
    """100 classes need 200 embedding units to carry the probe (set_linear_head); before, such runs silently fell
    back to Adam epochs on features (cub100, seed 0: val macro F1 0.575 after that warm-up, while a scikit-learn
    probe on the same rows reached test macro F1 0.734)."""
    cfg = training.recommended_config("mobilenet_v2")
    assert cfg.probe_head and cfg.embedding_dim == 128
    assert training.embedding_width(cfg, 12) == 128 and training.embedding_width(cfg, 100) == 200
    assert training.embedding_width(cfg.replace(probe_head=False), 100) == 128
    assert training.embedding_width(training.recommended_config("cnn"), 100) == 64
    model = fit_loop._build(cfg.replace(image_size=32), 100, "softmax", weights=None)
    assert int(model.get_layer(models.EMBEDDING_LAYER).units) == 200


@pytest.mark.slow
def test_multilabel_runs_select_their_checkpoint_on_val_map_by_default(tmp_path, ws):
    """Multi-label runs are judged by mAP (Evaluate page, report, compare), so their recipe checkpoints on val mAP,
    threshold-free, instead of macro F1 at 0.5; single-label tasks cannot ask for it."""
    s = _samples(tmp_path, ["red", "blue", "green"], n_per=16, red=lambda c, i: float(c == "red"),
                 cool=lambda c, i: float(c != "red"))
    schema = LabelSchema("multilabel", ("red", "cool"))
    cfg = training.recommended_config("cnn", task="multilabel", image_size=16, epochs=3, batch_size=16, filters=4,
                                      embedding_dim=8, log_every=2, patience=0, reduce_lr_patience=0)
    assert cfg.monitor == "val_map"
    assert training.recommended_config("cnn", task="multilabel", monitor="val_loss").monitor == "val_loss"
    assert training.recommended_config("cnn", task="multiclass").monitor == "val_macro_f1"
    with pytest.raises(ValueError, match="needs a multi-label task"):
        training.recommended_config("cnn", task="multiclass", monitor="val_map")
    out = tmp_path / "run"
    res = training.train(cfg, out=out, samples=s, schema=schema, workspace=ws)
    epochs = runs.read_metrics(out).query("kind == 'epoch'")
    vals = epochs["val_map"].astype(float)
    assert res.state == "done" and res.monitor == "val_map"
    assert res.best_epoch == int(epochs.loc[vals.idxmax(), "epoch"]) and res.best_value == pytest.approx(vals.max())
    # the kept checkpoint's val predictions give the best epoch's recorded mAP
    pred = runs.read_predictions(out, split="val")
    assert epoch_scores("multilabel", pred.y_true, pred.probs)["map"] == pytest.approx(vals.max(), abs=1e-4)
    assert res.val["map"] == pytest.approx(vals.max(), abs=1e-4)
    # a dataset whose task is single-label (the config's task left to the dataset) is refused before training
    single = _samples(tmp_path, ["red", "blue"], n_per=8, colour=lambda c, i: c)
    with pytest.raises(ValueError, match="needs a multi-label task"):
        training.train(cfg.replace(task=None), out=tmp_path / "single", samples=single,
                       schema=LabelSchema("multiclass", ("colour",)), workspace=ws)


def test_multilabel_transfer_warm_up_is_a_per_label_linear_probe(miml_scene, tmp_path, keras_home):
    """Multi-label runs get the linear-probe warm-up too: one logistic regression per label (rows where that
    label is known), written into the sigmoid head exactly, so the model predicts what the regressions do."""
    table = pd.read_csv(miml_scene / "labels.csv").iloc[:300].copy()
    table.loc[:20, table.columns[1]] = np.nan  # missing: never read as 0
    labels = tmp_path / "labels.csv"
    table.to_csv(labels, index=False)
    out = tmp_path / "run"
    proc = _cli([miml_scene, "--labels", labels, "--task", "multilabel", "--workspace", tmp_path / "ws",
                 "--model", "mobilenet_v2", "--alpha", 0.35, "--image-size", 96, "--epochs", 1,
                 "--fine-tune-layers", 0, "--out", out, "--json"], env_extra={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frozen warm-up = a linear probe on backbone features computed once" in proc.stderr
    assert re.search(r"linear probe C=[0-9.]+ picked by 3-fold cross-validation on the train split", proc.stderr)
    assert "trains by epochs on the features instead" not in proc.stderr
    epochs = runs.read_metrics(out).query("kind == 'epoch'")
    assert list(epochs["input"]) == ["backbone features"]
    # the head holds the probe exactly: the checkpoint's val predictions give the probe epoch's recorded metrics
    pred = runs.read_predictions(out, split="val")
    val = epoch_scores("multilabel", pred.y_true, pred.probs)
    assert val["macro_f1"] == pytest.approx(epochs.iloc[0]["val_macro_f1"], abs=1e-4)


def test_transfer_without_probe_head_trains_the_head_by_epochs_on_features(tmp_path, keras_home):
    root = _folder(tmp_path, n_per=14, size=48)
    out = tmp_path / "run"
    proc = _cli([root, "--workspace", tmp_path / "ws", "--model", "mobilenet_v2", "--alpha", 0.35,
                 "--image-size", 96, "--epochs", 3, "--warmup-epochs", 2, "--fine-tune-layers", 10,
                 "--no-probe-head", "--no-average-weights", "--batch-size", 16, "--out", out, "--json"],
                env_extra={"KERAS_HOME": str(keras_home)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "frozen warm-up on backbone features computed once" in proc.stderr and "linear probe" not in proc.stderr
    metrics = runs.read_metrics(out)
    assert list(metrics.query("kind == 'epoch'")["input"].fillna("images")) == ["backbone features"] * 2 + ["images"]
    assert "average" not in set(metrics["kind"])


def test_frozen_warm_up_falls_back_to_images_when_features_would_not_fit_in_ram(tmp_path, monkeypatch):
    model = models.build_model(3, backbone="mobilenet_v2", image_size=32, weights=None)
    said = []
    trainer = fit_loop._Trainer(training.recommended_config("mobilenet_v2"), tmp_path, stop=training.StopRequest(),
                                log=said.append)
    assert trainer._features_fit(model, 1000)  # 1000 x 1280 floats: 5 MB
    monkeypatch.setattr(fit_loop, "FEATURE_WARMUP_LIMIT_BYTES", 1_000_000)
    assert not trainer._features_fit(model, 1000)
    assert "the frozen warm-up runs on images" in said[-1] and "GiB" in said[-1]


def test_eta_is_unknown_during_the_warm_up_then_extrapolates_fine_tuning_epochs(tmp_path, monkeypatch):
    clock = iter([0.0,  # the trainer's start
                  1.0, 1.5, 2.0,  # 3 warm-up epochs on features: fast, no ETA from them
                  32.0, 52.0, 72.0])  # fine-tuning: 30 s (set-up included), then 20 s per epoch
    monkeypatch.setattr(fit_loop.time, "perf_counter", lambda: next(clock))
    trainer = fit_loop._Trainer(training.recommended_config("mobilenet_v2"), tmp_path, stop=training.StopRequest(),
                                log=lambda msg: None)
    etas, texts = [], []
    for epoch, phase in [(1, "frozen warm-up"), (2, "frozen warm-up"), (3, "frozen warm-up"),
                         (4, "fine-tuning"), (5, "fine-tuning"), (6, "fine-tuning")]:
        trainer.on_epoch({"epoch": epoch, "stage": "model", "phase": phase}, stage_epochs=10)
        status = runs.read_status(tmp_path)
        etas.append(status["eta_s"])
        texts.append(training_charts.progress(status, "running").text)
    assert etas[:3] == [None, None, None]
    assert texts[2] == "epoch 3/10 · frozen warm-up: ETA once fine-tuning starts"
    assert texts[5] == "epoch 6/10 · ETA 1 min 20 s"
    assert etas[3] == pytest.approx(30.0 * 6)  # one fine-tuning epoch seen: its time, set-up included
    assert etas[4] == pytest.approx(20.0 * 5)  # then the steady epochs only
    assert etas[5] == pytest.approx(20.0 * 4)


def test_mirrored_strategy_path_trains_on_two_logical_devices(tmp_path, keras_home):
    """The multi-device path (MirroredStrategy), run on two logical CPU devices: no GPU needed.

    A transfer run with the frozen warm-up on features and fine-tuning, so model building,
    compiling, the feature split, tf.data input and checkpointing all run under the strategy.
    """
    root = _folder(tmp_path, n_per=14, size=48)
    out = tmp_path / "run"
    proc = _cli([root, "--workspace", tmp_path / "ws", "--model", "mobilenet_v2", "--alpha", 0.35,
                 "--image-size", 96, "--epochs", 2, "--warmup-epochs", 1, "--fine-tune-layers", 10,
                 "--batch-size", 16, "--out", out, "--json"],
                env_extra={"KERAS_HOME": str(keras_home), training.MIRRORED_CPUS_ENV: "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distribution: MirroredStrategy over 2 devices" in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["state"] == "done" and result["weights_used"] == "imagenet"
    preds = runs.read_predictions(out, split="test")
    assert len(preds.sample_ids) > 0
    model = models.load_model(runs.RunDir(out).model)
    assert tuple(model.inputs[0].shape[1:]) == (96, 96, 3)
