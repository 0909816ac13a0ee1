"""Hierarchy modes on real photos: one flat model over the leaves vs separate models (a primary model over
the first level, one per primary category over its leaves), on the same split, with significance.

``cub100`` (order > family > species, 13 orders, 100 species; loaded from labels.csv as
``bench_quality``'s ``cub100_hierarchy``) is trained twice per seed with the default recipe
(MobileNetV2-0.35 ImageNet, 128 px, ``python -m core train``): ``--hierarchy-mode flat`` and
``--hierarchy-mode separate``. Their test predictions are compared per level by
:func:`core.compare.compare_runs` (95 % paired-bootstrap interval of the macro-F1 and accuracy
differences, McNemar's exact p): what the Evaluate page's "Flat vs separate models" table shows.

Usage: ``python bench/bench_hierarchy.py [--seeds 1] [--start-seed 0]``; prints one JSON object per
seed, then the combined object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import bench_quality as quality  # noqa: E402  (sets KERAS_HOME to a copy of the shared weights)

FOLDER, OPTIONS, _ = quality.SETS["cub100_hierarchy"]


def one_seed(seed: int) -> dict:
    from core import compare
    from core import runs as core_runs

    row: dict = {"seed": seed}
    paths = {}
    for mode in ("flat", "separate"):
        run = quality.TMP / "runs" / f"cub100-{mode}-{seed}"
        quality.log(f"cub100 hierarchy: seed {seed}: training {mode}")
        row[f"{mode}_wall_s"] = round(quality.train(FOLDER, [*OPTIONS, "--hierarchy-mode", mode], seed, run, None), 1)
        row[f"{mode}_final_model_per_stage"] = {  # which of probe / best epoch / weight average each model kept
            str(r.get("stage")): r.get("chosen") for r in core_runs.read_metrics(run).to_dict("records")
            if r.get("kind") == "selection"}
        paths[mode] = run
    c = compare.compare_runs(paths["flat"], paths["separate"], split="test")
    row["n_test"] = c.n_common
    for lv, (ms, mc) in c.levels.items():
        row[lv] = {m: {"flat": round(d.a, 4), "separate": round(d.b, 4), "delta": round(d.delta, 4),
                       "ci_low": round(d.ci_low, 4), "ci_high": round(d.ci_high, 4), "significant": bool(d.significant)}
                   for m, d in ms.items() if m in ("accuracy", "macro_f1")}
        row[lv]["mcnemar_p"] = None if mc is None else round(mc.p_value, 4)
    row["verdicts"] = {lv: text for lv, (_winner, text) in compare.level_verdicts(c).items()}
    return row


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--start-seed", type=int, default=0)
    args = ap.parse_args(argv[1:])
    if not (quality.DATA / FOLDER).exists() or not quality.WEIGHTS.exists():
        print(json.dumps({"bench": "hierarchy", "skipped": f"needs {quality.DATA / FOLDER} and {quality.WEIGHTS}"}))
        return 0
    out: dict = {"bench": "hierarchy", "dataset": "cub100 (order > family > species)",
                 "model": "mobilenet_v2 alpha 0.35, ImageNet", "image_size": quality.SIZE,
                 "command": "python bench/bench_hierarchy.py " + " ".join(argv[1:])}
    quality.collect(out, "seeds", (one_seed(seed) for seed in range(args.start_seed, args.start_seed + args.seeds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
