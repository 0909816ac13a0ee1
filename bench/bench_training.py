"""Training benchmarks, printed as one JSON object (last stdout line).

1. **Worker overhead** (``common.REPEATS`` = 3 repeats, median and min-max): the worker (``python -m core train``: tf.data from the image cache,
   per-epoch val metrics with scikit-learn, checkpointing, live metrics) against a plain
   ``model.fit`` on in-RAM numpy arrays, same model, same rows, same batch size. Both are
   timed per epoch over the training part only (epoch start -> validation start), first
   epoch (tracing) excluded. Target: ratio >= 0.95.
2. **flowers12, MobileNetV2-0.35 ImageNet at 128 px** (shared weights, offline): the default
   transfer recipe (``core.training.RECIPES["transfer"]``: the warm-up fits the head as a
   linear probe on backbone features computed once, written exactly into the model, then
   the top layers are fine-tuned on augmented images at a low constant learning rate and the
   final model averages the weights of the later fine-tuning epochs), and the same recipe
   with the backbone frozen throughout (the probe alone, in the worker): test accuracy,
   macro F1 and wall time, for seeds 0, 1, 2 (``--train-seed``), with the mean.
3. **Linear probe baseline**: scikit-learn logistic regression on the frozen backbone's
   pooled features (C chosen on the same val rows), test accuracy. The recipe must beat it.
   It runs in a fresh Python process, like each recipe run (imports, TensorFlow start-up,
   decoding the images from the image cache and the backbone's forward pass all counted
   in its wall time), so the two times compare the same process state.
4. **Is the difference real?** For every seed, the recipe's test predictions against the
   probe's on the same test rows (``core.compare``: McNemar's exact p, paired-bootstrap 95 %
   interval of the accuracy and macro-F1 difference).

Usage: ``python bench/bench_training.py [--quick]`` (``--quick``: fewer epochs, for a smoke run).
Needs ../shared/datasets/flowers12 and ../shared/weights/keras beside the repo.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FLOWERS = SHARED / "datasets" / "flowers12"
WEIGHTS = SHARED / "weights" / "keras"

TMP = Path(tempfile.mkdtemp(prefix="loupe-bench-training-"))
KERAS_HOME = TMP / "keras_home"
# Keras reads KERAS_HOME once, at import: set it first (a temporary copy of the shared weights).
shutil.copytree(WEIGHTS, KERAS_HOME)
os.environ["KERAS_HOME"] = str(KERAS_HOME)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import REPEATS, repeated, spread  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cli_train(args: list, out: Path) -> tuple[dict, float]:
    """Run the worker as the app does (a separate process); return its --json result and wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "core", "train", str(FLOWERS), "--workspace", str(TMP / "ws"),
                           "--out", str(out), "--json", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1]), wall


def rows_and_arrays(size: int, ws_root: Path | None = None):
    """The same train / val / test rows the worker uses, decoded at ``size`` from the workspace's image cache."""
    from core import datasets, targets
    from core.images import ImageCache
    from core.workspace import home

    ws = home(ws_root or TMP / "ws").ensure()
    ds = datasets.load_dataset({"path": str(FLOWERS)}, workspace=ws)
    t = targets.build_targets(ds.samples, ds.schema)
    arr = ImageCache(ws.cache_dir / "images").arrays(t.samples, size)
    split = t.samples["split"].to_numpy()
    tr = np.flatnonzero(split == "train")
    te = np.flatnonzero(split == "test")
    tr, va = targets.carve_validation(tr, t.y)
    return t, np.asarray(arr.images), tr, va, te


def bench_throughput(epochs: int, repeat: int = 0) -> dict:
    import keras

    from core import models

    size, batch = 64, 32
    out = TMP / f"run_cnn_{repeat}"
    result, wall = cli_train(["--image-size", size, "--epochs", epochs, "--batch-size", batch, "--patience", 0,
                              "--reduce-lr-patience", 0], out)
    from core import runs

    m = runs.read_metrics(out).query("kind == 'epoch'")
    worker_ips = [float(v) for v in m["images_per_second"].iloc[1:]]

    t, images, tr, va, te = rows_and_arrays(size)
    x_tr, y_tr = images[tr].astype("float32"), t.y[tr]
    x_va, y_va = images[va].astype("float32"), t.y[va]
    keras.utils.set_random_seed(0)
    model = models.build_model(len(t.names), image_size=size, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_s = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.train_s.append(time.perf_counter() - self.t0)

    timer = EpochTimer()
    t0 = time.perf_counter()
    model.fit(x_tr, y_tr, batch_size=batch, epochs=epochs, validation_data=(x_va, y_va), verbose=0,
              callbacks=[timer])
    plain_wall = time.perf_counter() - t0
    plain_ips = [len(tr) / s for s in timer.train_s[1:]]
    w, p = statistics.median(worker_ips), statistics.median(plain_ips)
    return {
        "model": "cnn (2 conv + 2 max-pool + dense)", "image_size": size, "batch_size": batch, "epochs": epochs,
        "n_train": int(len(tr)),
        "worker_train_images_per_second": round(w, 1), "plain_fit_train_images_per_second": round(p, 1),
        "ratio_worker_vs_plain": round(w / p, 3),
        "worker_process_wall_s": round(wall, 1), "worker_seconds_reported": result["seconds"],
        "plain_fit_wall_s_incl_val": round(plain_wall, 1),
        "note": "per-epoch training time (epoch start -> validation), median over epochs 2..N",
    }


def final_model(run_dir: Path) -> str | None:
    """Which candidate the run kept (its metrics.jsonl ``selection`` line): probe / best epoch / average."""
    from core import runs, training_charts

    choice = training_charts.final_choice(runs.read_metrics(run_dir))
    return None if choice is None else str(choice.get("chosen"))


def versus_probe(run_dir: Path, probe: dict) -> dict:
    """The run's test predictions against the probe's on the same rows: McNemar p and bootstrap intervals."""
    import dataclasses

    from core import compare, runs

    pred = runs.read_predictions(run_dir, split="test")
    index = {c: i for i, c in enumerate(pred.classes)}
    probe_pred = np.array([index[probe["test_predictions"][p]] for p in pred.paths])
    baseline = dataclasses.replace(pred, y_pred=probe_pred, probs=np.eye(len(pred.classes))[probe_pred])
    c = compare.compare_predictions(baseline, pred, name_a="probe", name_b="recipe")
    out = {"n_common": c.n_common, "mcnemar_p": round(c.mcnemar.p_value, 4),
           "recipe_only_right": c.mcnemar.b_only_correct, "probe_only_right": c.mcnemar.a_only_correct}
    for name in ("accuracy", "macro_f1"):
        m = c.metrics[name]
        out[name] = {"delta": round(m.delta, 4), "ci_low": round(m.ci_low, 4), "ci_high": round(m.ci_high, 4),
                     "significant": m.significant}
    return out


def bench_transfer(epochs: int | None, seeds: int, probe: dict) -> dict:
    """The default transfer recipe (CLI defaults for a transfer backbone) and its frozen-only variant, per seed."""
    from core.training import recommended_config

    size = 128
    common = ["--model", "mobilenet_v2", "--alpha", 0.35, "--weights", "imagenet", "--image-size", size,
              "--batch-size", 32]
    if epochs is not None:
        common += ["--epochs", epochs]
    recipe = recommended_config("mobilenet_v2", **({"epochs": epochs} if epochs else {}))
    out = {"recipe": {k: getattr(recipe, k) for k in ("epochs", "warmup_epochs", "fine_tune_layers",
                                                      "fine_tune_lr_factor", "lr", "dropout", "embedding_dim",
                                                      "patience", "reduce_lr_patience", "batch_size",
                                                      "feature_warmup", "probe_head", "average_weights")}}
    out["recipe"].update(augmentation=True, feature_norm=True, image_size=size, batch_size=32)
    variants = {"default_recipe": [], "frozen_only": []}
    for seed in range(seeds):
        log(f"transfer, seed {seed}: default recipe (linear-probe head on features computed once, then the top "
            f"{recipe.fine_tune_layers} layers fine-tuned, {recipe.epochs} epochs, weights averaged)")
        res, wall = cli_train([*common, "--train-seed", seed], TMP / f"run_default_{seed}")
        variants["default_recipe"].append({
            "seed": seed, "test_accuracy": res["test"]["accuracy"], "test_macro_f1": res["test"]["macro_f1"],
            "val_accuracy": res["val"]["accuracy"], "best_epoch": res["best_epoch"], "wall_s": round(wall, 1),
            "weights_used": res["weights_used"], "train_images_per_second": res["images_per_second"],
            "final_model": final_model(TMP / f"run_default_{seed}"),
            "versus_probe": versus_probe(TMP / f"run_default_{seed}", probe)})
        log(f"transfer, seed {seed}: frozen backbone only (same recipe, no fine-tuning)")
        res, wall = cli_train([*common, "--train-seed", seed, "--fine-tune-layers", 0], TMP / f"run_frozen_{seed}")
        variants["frozen_only"].append({
            "seed": seed, "test_accuracy": res["test"]["accuracy"], "test_macro_f1": res["test"]["macro_f1"],
            "val_accuracy": res["val"]["accuracy"], "best_epoch": res["best_epoch"], "wall_s": round(wall, 1)})
    for name, rows in variants.items():
        accs = [r["test_accuracy"] for r in rows]
        out[name] = {"runs": rows, "test_accuracy": spread(accs), "test_accuracy_mean": round(statistics.mean(accs), 4),
                     "wall_s": spread([r["wall_s"] for r in rows], 1)}
    return out


def bench_linear_probe() -> dict:
    """The probe in a fresh process (``--probe-child``): its result, test predictions and wall seconds."""
    path = TMP / "probe.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--probe-child", str(path), str(TMP)], cwd=REPO, env=env,
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return {**json.loads(path.read_text()), "process_wall_s": round(wall, 1)}


def linear_probe(ws_root: Path) -> dict:
    import keras
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.preprocessing import StandardScaler

    size = 128
    t0 = time.perf_counter()
    t, images, tr, va, te = rows_and_arrays(size, ws_root)
    base = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, include_top=False,
                                          weights="imagenet", pooling="avg")
    pre = keras.applications.mobilenet_v2.preprocess_input
    feats = base.predict(pre(images.astype("float32")), batch_size=64, verbose=0)
    t_feat = time.perf_counter() - t0
    scaler = StandardScaler().fit(feats[tr])
    f = scaler.transform(feats)
    best = None
    for c in (0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(f[tr], t.y[tr])
        acc = accuracy_score(t.y[va], clf.predict(f[va]))
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    pred = clf.predict(f[te])
    return {"test_predictions": dict(zip(t.samples["path"].iloc[te].astype(str), [t.names[i] for i in pred])),
            "test_accuracy": float(accuracy_score(t.y[te], pred)),
            "test_macro_f1": float(f1_score(t.y[te], pred, average="macro")), "C": c,
            "feature_dim": int(feats.shape[1]), "wall_s": round(time.perf_counter() - t0, 1),
            "decode_and_features_s": round(t_feat, 1), "n_train": int(len(tr)), "n_test": int(len(te))}


def main(argv: list[str]) -> int:
    if "--probe-child" in argv:
        out, ws_root = Path(argv[argv.index("--probe-child") + 1]), Path(argv[argv.index("--probe-child") + 2])
        try:
            out.write_text(json.dumps(linear_probe(ws_root / "ws")))
        finally:
            shutil.rmtree(TMP, ignore_errors=True)
        return 0
    if not FLOWERS.exists() or not WEIGHTS.exists():
        print(json.dumps({"skipped": f"{FLOWERS} or {WEIGHTS} is absent"}))
        return 0
    quick = "--quick" in argv
    seeds = 1 if quick else 3
    t0 = time.perf_counter()
    try:
        log("throughput: worker vs plain model.fit")
        runs_ = iter(range(REPEATS))
        result = {"bench": "training",
                  "throughput": repeated(lambda: bench_throughput(3 if quick else 5, next(runs_)), 1 if quick else REPEATS)}
        log("linear probe (a fresh process)")
        probe = bench_linear_probe()
        result["flowers12_mobilenet_v2_128"] = bench_transfer(4 if quick else None, seeds, probe)
        probe.pop("test_predictions")
        result["linear_probe_mobilenet_v2_128"] = probe
        tr = result["flowers12_mobilenet_v2_128"]
        result["default_recipe_mean_minus_probe"] = round(tr["default_recipe"]["test_accuracy_mean"]
                                                          - probe["test_accuracy"], 4)
        result["one_test_image"] = round(1 / probe["n_test"], 4)  # the resolution of every accuracy above
        result["cpu_count"] = os.cpu_count()
        result["total_wall_s"] = round(time.perf_counter() - t0, 1)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
