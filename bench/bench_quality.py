"""Quality on real photos: Loupe's default transfer recipe against a linear probe, with significance.

For each real dataset (../shared/datasets) and label shape:

* ``flowers12`` (12 classes, class folders): accuracy and macro F1;
* ``cub100_species`` (100 bird species; loaded from labels.csv, so Loupe's stored stratified split of
  all 5,902 photos is used, 892 test images, not the folders' train/test): accuracy and macro F1;
* ``cub100_hierarchy`` (order > family > species, one hierarchical run): macro F1 per level;
* ``miml_scene`` (5 multi-hot scene labels): mAP (``mean_average_precision``) and macro F1,

the default recipe runs as a user runs it (``python -m core train`` with MobileNetV2-0.35
ImageNet weights at 128 px, a fresh process per run) for ``--seeds`` seeds (``--train-seed``),
and the practitioner's baseline is fitted on *the same rows*: scikit-learn logistic
regression (one per label for multi-label, one per level for a hierarchy) on the frozen
backbone's pooled features of the run's train rows, C picked on its val rows. Each seed's
test predictions are compared with the probe's by :mod:`core.compare` (paired bootstrap 95 %
interval of the difference, McNemar's exact p for single-label). The run's own metrics.jsonl
says which final model it kept (probe / best epoch / weight average).

Usage: ``python bench/bench_quality.py [--seeds 3] [--start-seed 0] [--only NAME ...] [--quick]`` (``--quick``: 2
epochs, 1 seed). Prints one JSON object per dataset, then the combined object as the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
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
DATA = SHARED / "datasets"
WEIGHTS = SHARED / "weights" / "keras"
TMP = Path(tempfile.mkdtemp(prefix="loupe-bench-quality-"))
if WEIGHTS.exists():  # Keras reads KERAS_HOME at import: a temporary copy of the shared ImageNet weights
    shutil.copytree(WEIGHTS, TMP / "keras_home")
    os.environ["KERAS_HOME"] = str(TMP / "keras_home")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import spread  # noqa: E402

SIZE = 128
#: name -> (dataset folder, dataset options for ``python -m core train``, metrics compared)
SETS = {
    "flowers12": ("flowers12", [], ("accuracy", "macro_f1")),
    "cub100_species": ("cub100", ["--labels", "labels.csv", "--label-columns", "species", "--task", "multiclass"],
                       ("accuracy", "macro_f1")),
    "cub100_hierarchy": ("cub100", ["--labels", "labels.csv", "--label-columns", "order,family,species",
                                    "--task", "hierarchical"], ("macro_f1",)),
    "miml_scene": ("miml_scene", ["--labels", "labels.csv", "--task", "multilabel"],
                   ("mean_average_precision", "macro_f1")),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def train(folder: str, options: list[str], seed: int, out: Path, epochs: int | None) -> float:
    """The default recipe, as a user runs it; returns wall seconds."""
    args = [sys.executable, "-m", "core", "train", str(DATA / folder), *options, "--model", "mobilenet_v2",
            "--alpha", "0.35", "--weights", "imagenet", "--image-size", str(SIZE), "--train-seed", str(seed),
            "--workspace", str(TMP / "ws"), "--out", str(out), "--json"]
    if epochs:
        args += ["--epochs", str(epochs)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"training failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def features(run_dir: Path, samples, mirror: bool = False) -> np.ndarray:
    """Frozen MobileNetV2-0.35 ImageNet features (global average pool) of ``samples``, at the run's size
    (``mirror``: of the images mirrored left-right)."""
    import keras

    from core import runs
    from core.images import ImageCache

    ws = runs.run_workspace(run_dir, TMP / "ws")
    images = np.asarray(ImageCache(ws.cache_dir / "images").arrays(samples, SIZE).images, np.float32)
    if mirror:
        images = images[:, :, ::-1]
    base = keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False,
                                          weights="imagenet", pooling="avg")
    return base.predict(keras.applications.mobilenet_v2.preprocess_input(images), batch_size=64, verbose=0)


def _logistic(x_tr, y_tr, x_va, y_va, score):
    """Logistic regression with C picked on the val rows by ``score(y_va, clf, x_va)``; the best model."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in (0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(x_tr, y_tr)
        s = score(y_va, clf, x_va)
        if best is None or s > best[0]:
            best = (s, clf)
    return best[1]


def probe_predictions(run_dir: Path):
    """The probe's test predictions, as :class:`core.runs.Predictions` of the run's test rows: the plain
    probe (the baseline), and the same probe with each test image's probabilities averaged with its
    mirror's (a reference: how much of the recipe's margin flip averaging alone would give the probe).

    Train rows: the dataset's train split less the rows the run held out as val (predictions.csv
    holds val and test); their labels are read from the samples table with the run's class list.
    """
    import pandas as pd
    from sklearn.metrics import average_precision_score, f1_score
    from sklearn.preprocessing import StandardScaler

    from core import runs

    val = runs.read_predictions(run_dir, split="val")
    test = runs.read_predictions(run_dir, split="test")
    ds = runs.run_dataset(run_dir, TMP / "ws")
    s = ds.samples.reset_index(drop=True)
    held = set(np.asarray(val.sample_ids).astype(str)) | set(np.asarray(test.sample_ids).astype(str))
    train = s[(s["split"].astype(str) == "train") & ~s["sample_id"].astype(str).isin(held)].reset_index(drop=True)
    by_id = s.set_index(s["sample_id"].astype(str))
    rows = pd.concat([train, by_id.loc[np.asarray(val.sample_ids).astype(str)].reset_index(drop=True),
                      by_id.loc[np.asarray(test.sample_ids).astype(str)].reset_index(drop=True)], ignore_index=True)
    f = features(run_dir, rows)
    n_tr, n_va = len(train), len(val.sample_ids)
    scaler = StandardScaler().fit(f[:n_tr])
    f = scaler.transform(f)
    f_tr, f_va, f_te = f[:n_tr], f[n_tr:n_tr + n_va], f[n_tr + n_va:]
    f_te_m = scaler.transform(features(run_dir, rows.iloc[n_tr + n_va:], mirror=True))

    def both(proba) -> tuple[np.ndarray, np.ndarray]:
        """(plain, flip-averaged) test probabilities of a fitted classifier's ``proba(x)``."""
        plain = proba(f_te)
        return plain, (plain + proba(f_te_m)) / 2

    def index(col: str, classes) -> np.ndarray:
        pos = {str(c): k for k, c in enumerate(classes)}
        return np.array([pos.get(str(v), -1) for v in train[col]], np.int64)

    def single(y_tr: np.ndarray, y_va: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """(plain, flip-averaged) test-row probabilities (columns: class indices) of a probe on one
        single-label target."""
        a, b = y_tr >= 0, y_va >= 0
        clf = _logistic(f_tr[a], y_tr[a], f_va[b], y_va[b],
                        lambda y, m, x: f1_score(y, m.predict(x), average="macro"))

        def proba(x):
            probs = np.zeros((len(x), n_classes))
            probs[:, clf.classes_] = clf.predict_proba(x)
            return probs
        return both(proba)

    if test.task == "multilabel":
        cols = [str(c) for c in test.classes]
        y_train = train[cols].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        pair = [np.zeros((len(f_te), len(cols))), np.zeros((len(f_te), len(cols)))]
        for k in range(len(cols)):
            a, b = ~np.isnan(y_train[:, k]), ~np.isnan(val.y_true[:, k])
            clf = _logistic(f_tr[a], y_train[a, k].astype(int), f_va[b], val.y_true[b, k].astype(int),
                            lambda yy, m, x: average_precision_score(yy, m.predict_proba(x)[:, 1])
                            if len(set(yy)) > 1 else 0.0)
            for dst, src in zip(pair, both(lambda x: clf.predict_proba(x)[:, 1])):
                dst[:, k] = src
        return tuple(dataclasses.replace(test, probs=p, y_pred=(p >= 0.5).astype(int)) for p in pair)
    if test.task == "hierarchical":
        per_level = {lv: single(index(lv, test.level_classes[lv]), val.level_true[lv], len(test.level_classes[lv]))
                     for lv in test.levels}
        fine = test.levels[-1]
        out = []
        for j in (0, 1):
            level_probs = {lv: p[j] for lv, p in per_level.items()}
            level_pred = {lv: p.argmax(1) for lv, p in level_probs.items()}
            out.append(dataclasses.replace(test, level_probs=level_probs, level_pred=level_pred,
                                           probs=level_probs[fine], y_pred=level_pred[fine]))
        return tuple(out)
    col = ds.schema.label_columns[-1]
    return tuple(dataclasses.replace(test, probs=p, y_pred=p.argmax(1))
                 for p in single(index(col, test.classes), val.y_true, len(test.classes)))


def collect(out: dict, key: str, rows) -> dict:
    """Run a study: each row the iterable ``rows`` yields is printed as it comes and appended to
    ``out[key]``; the temporary workspace is removed even on failure; ``out`` gets ``total_wall_s``
    and is printed as the last line (what ``bench/results/`` keeps)."""
    t0 = time.perf_counter()
    out[key] = []
    try:
        for row in rows:
            out[key].append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out))
    return out


def bench(name: str, seeds: int, epochs: int | None, start_seed: int = 0) -> dict:
    from core import compare, runs, training_charts

    folder, options, metrics = SETS[name]
    out = {"dataset": name, "image_size": SIZE, "metrics": list(metrics), "seeds": []}
    probe = None
    for seed in range(start_seed, start_seed + seeds):
        run = TMP / "runs" / f"{name}-{seed}"
        log(f"{name}: seed {seed}: training the default recipe")
        wall = train(folder, options, seed, run, epochs)
        test = runs.read_predictions(run, split="test")
        if probe is None:  # the same rows every seed (the split is the dataset's): fit the probe once
            log(f"{name}: the linear probe on the same rows")
            probe, probe_flip = probe_predictions(run)
        c = compare.compare_predictions(probe, test, name_a="probe", name_b="recipe")
        c_flip = compare.compare_predictions(probe_flip, test, name_a="probe, flip-averaged", name_b="recipe")
        choice = training_charts.final_choice(runs.read_metrics(run)) or {}
        row = {"seed": seed, "wall_s": round(wall, 1), "final_model": choice.get("chosen"),
               "n_test": c.n_common, "mcnemar_p": None if c.mcnemar is None else round(c.mcnemar.p_value, 4)}
        blocks = {None: c.metrics} if not c.levels else {lv: ms for lv, (ms, _mc) in c.levels.items()}
        flips = {None: c_flip.metrics} if not c_flip.levels else {lv: ms for lv, (ms, _mc) in c_flip.levels.items()}
        if c.levels:
            row["mcnemar_p"] = {lv: round(mc.p_value, 4) for lv, (_ms, mc) in c.levels.items()}
        for lv, ms in blocks.items():
            for m in metrics:
                d = ms[m]
                key = m if lv is None else f"{lv}.{m}"
                f = flips[lv][m]
                row[key] = {"recipe": round(d.b, 4), "probe": round(d.a, 4), "delta": round(d.delta, 4),
                            "ci_low": round(d.ci_low, 4), "ci_high": round(d.ci_high, 4),
                            "significant": bool(d.significant),
                            "probe_flip_averaged": round(f.a, 4), "delta_vs_probe_flip_averaged": round(f.delta, 4),
                            "significant_vs_probe_flip_averaged": bool(f.significant)}
        out["seeds"].append(row)
        log(f"{name}: seed {seed}: " + json.dumps({k: v for k, v in row.items() if isinstance(v, dict)}))
    return summarize(out)


def summarize(out: dict) -> dict:
    """``out["summary"]`` from ``out["seeds"]`` (also for seeds measured by separate invocations, merged)."""
    keys = [k for k, v in out["seeds"][0].items() if isinstance(v, dict) and k != "mcnemar_p"]
    out["summary"] = {k: {"recipe": spread([r[k]["recipe"] for r in out["seeds"]]),
                          "probe": out["seeds"][0][k]["probe"],
                          "probe_flip_averaged": out["seeds"][0][k].get("probe_flip_averaged"),
                          "delta_mean": round(statistics.mean(r[k]["delta"] for r in out["seeds"]), 4),
                          "seeds_significantly_better": sum(r[k]["significant"] and r[k]["delta"] > 0
                                                            for r in out["seeds"]),
                          "seeds_significantly_worse": sum(r[k]["significant"] and r[k]["delta"] < 0
                                                           for r in out["seeds"])} for k in keys}
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--start-seed", type=int, default=0, help="first training seed (seeds start..start+N-1)")
    ap.add_argument("--only", nargs="*", default=list(SETS), choices=list(SETS))
    ap.add_argument("--quick", action="store_true", help="2 epochs and 1 seed: a smoke run")
    args = ap.parse_args(argv)
    if not WEIGHTS.exists() or not DATA.exists():
        print(json.dumps({"skipped": f"{DATA} or {WEIGHTS} is absent"}))
        return 0
    t0 = time.perf_counter()
    results = {"bench": "quality", "model": "mobilenet_v2 alpha 0.35 imagenet", "image_size": SIZE}
    try:
        for name in args.only:
            r = bench(name, 1 if args.quick else args.seeds, 2 if args.quick else None, start_seed=args.start_seed)
            print(json.dumps(r), flush=True)
            results[name] = r
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
    results["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
