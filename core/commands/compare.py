"""``python -m core compare``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, emit_json, run_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_a", help="the baseline: a run directory, or a run id of the workspace")
    p.add_argument("run_b", help="the run compared with it: a run directory, or a run id")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which rows of predictions.csv to compare (default: test)")
    p.add_argument("--n-bootstrap", type=int, default=2000,
                   help="paired bootstrap resamples for the intervals (default: 2000; at least 100)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence of the intervals (default: 0.95)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--workspace", help="where run ids are looked up (default: $LOUPE_HOME or ./workspace)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Compare two runs on the same test rows: metric deltas with paired-bootstrap CIs and McNemar's p."""
    from core import compare

    a, b = run_path(args.run_a, args.workspace), run_path(args.run_b, args.workspace)
    try:
        result = compare.compare_runs(a, b, split=args.split, n_bootstrap=args.n_bootstrap,
                                      confidence=args.confidence, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if args.json:
        emit_json({"run_dir_a": str(a.resolve()), "run_dir_b": str(b.resolve()), **result.to_dict()})
    else:
        print(compare.format_comparison(result))
    return 0
