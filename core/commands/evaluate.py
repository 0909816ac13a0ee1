"""``python -m core evaluate``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, emit_json, info

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory holding labels.json and predictions.csv")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which rows of predictions.csv to evaluate (default: test)")
    p.add_argument("--target-precision", type=float, default=0.9,
                   help="threshold picker: highest recall at precision >= this (default: 0.9)")
    p.add_argument("--n-bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the threshold's confidence intervals (default: 1000; 0 skips)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--save-thresholds", action="store_true",
                   help="write the chosen thresholds to the run's thresholds.json (other sections are kept)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Evaluate a run's predictions: per-class metrics, curves' AP/AUC, thresholds at a target precision."""
    from core import metrics, runs

    try:
        rd = runs.require_predictions(args.run_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if not 0 < args.target_precision <= 1:
        raise CLIError(f"--target-precision must be in (0, 1]; received {args.target_precision}")
    if args.n_bootstrap < 0:
        raise CLIError(f"--n-bootstrap must be >= 0; received {args.n_bootstrap}")
    try:
        pred = runs.read_predictions(rd, split=args.split)
        result = metrics.evaluate_predictions(pred, target_precision=args.target_precision,
                                              n_bootstrap=args.n_bootstrap, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    result = {"run_dir": str(rd.path.resolve()), "run_id": rd.run_id, "split": args.split, **result}
    if args.save_thresholds:
        runs.write_thresholds(rd, classes=result["thresholds"],
                              meta={"target_precision": args.target_precision, "split": args.split})
        info(f"thresholds saved to {rd.thresholds}")
    if args.json:
        emit_json(result)
    else:
        print(metrics.format_evaluation(result))
    return 0
