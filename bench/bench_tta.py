"""Study: does test-time flip averaging beat the plain prediction of the default recipe, on real photos?

Per dataset and seed, the default recipe is trained as ``bench_quality`` trains it (MobileNetV2-0.35
ImageNet, 128 px, ``python -m core train``) but with ``--no-flip-average``, as it was before this study
made flip averaging the default; its final model (``Predictor.load``) then scores the
test images as they are and mirrored left-right, and the flip-averaged probabilities are compared
with the plain ones on the same rows (``core.compare.compare_predictions``: McNemar's exact test
for single-label tasks, a 95 % paired-bootstrap interval for every metric). The plain scores are
checked against the run's own ``predictions.csv`` first, so the comparison is of the model the
run shipped.

This study is what made flip averaging the default for models trained on mirrored images
(:meth:`core.training.config.TrainConfig.flips_averaged`): it raised test accuracy / mAP in all 9
runs (3 datasets x 3 seeds). ``bench_quality`` measures the default itself against the probe.

Usage: ``python bench/bench_tta.py [--datasets flowers12,cub100_species,miml_scene] [--seeds 1]
[--start-seed 0]``; prints one JSON object per run, then the combined object as the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import bench_quality as quality  # noqa: E402  (sets KERAS_HOME to a copy of the shared weights)

import numpy as np  # noqa: E402


def flip_study(run: Path) -> dict:
    """Plain vs flip-averaged test predictions of one finished run."""
    import pandas as pd

    from core import compare, runs
    from core.images import ImageCache
    from core.predict import Predictor

    test = runs.read_predictions(run, split="test")
    predictor = Predictor.load(run)
    ws = runs.run_workspace(run, quality.TMP / "ws")
    arrays = ImageCache(ws.cache_dir / "images").arrays(pd.DataFrame({"path": list(test.paths)}),
                                                        predictor.image_size)
    if not np.asarray(arrays.ok).all():
        raise RuntimeError(f"{int((~np.asarray(arrays.ok)).sum())} test images did not decode")
    images = np.asarray(arrays.images)
    plain = predictor.probabilities(images)
    flipped = predictor.probabilities(images[:, :, ::-1])
    if test.task == "hierarchical":
        raise ValueError("hierarchical runs are not studied here (one probability block per level)")
    gap = float(np.abs(plain - test.probs).max())

    def as_predictions(probs: np.ndarray) -> runs.Predictions:
        if test.task == "multilabel":
            pred = (probs >= 0.5).astype(int)
        else:
            pred = probs.argmax(axis=1)
        return dataclasses.replace(test, probs=probs, y_pred=pred)

    c = compare.compare_predictions(as_predictions(plain), as_predictions((plain + flipped) / 2),
                                    name_a="plain", name_b="flip-averaged")
    row = {"n_test": c.n_common, "max_prob_gap_to_run_predictions": round(gap, 5),
           "mcnemar_p": None if c.mcnemar is None else round(c.mcnemar.p_value, 4)}
    for m, d in c.metrics.items():
        row[m] = {"plain": round(d.a, 4), "flip_averaged": round(d.b, 4), "delta": round(d.delta, 4),
                  "ci_low": round(d.ci_low, 4), "ci_high": round(d.ci_high, 4), "significant": bool(d.significant)}
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default="flowers12,cub100_species,miml_scene")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--start-seed", type=int, default=0)
    args = ap.parse_args(argv[1:])
    names = [n for n in args.datasets.split(",") if n]
    missing = [n for n in names if not (quality.DATA / quality.SETS[n][0]).exists()]
    if missing:
        print(json.dumps({"bench": "tta", "skipped": f"needs {', '.join(missing)} in {quality.DATA}"}))
        return 0
    out: dict = {"bench": "tta", "model": "mobilenet_v2 alpha 0.35, ImageNet", "image_size": quality.SIZE,
                 "command": "python bench/bench_tta.py " + " ".join(argv[1:])}

    def rows():
        for name in names:
            folder, options, _ = quality.SETS[name]
            for seed in range(args.start_seed, args.start_seed + args.seeds):
                run = quality.TMP / "runs" / f"{name}-{seed}"
                quality.log(f"{name}: seed {seed}: training the default recipe")
                wall = quality.train(folder, [*options, "--no-flip-average"], seed, run, None)
                yield {"dataset": name, "seed": seed, "train_s": round(wall, 1), **flip_study(run)}

    quality.collect(out, "runs", rows())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
