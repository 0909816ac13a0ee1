"""``python -m core predict``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, add_engine_option, emit_json, info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="RUN_DIR_OR_BUNDLE",
                   help="a finished run directory, or a model bundle zip from `python -m core export`")
    p.add_argument("paths", metavar="PATH", nargs="+",
                   help="image files and/or folders (searched recursively for images)")
    p.add_argument("--csv", metavar="OUT.csv", help="write one row per image to this CSV file")
    p.add_argument("--top-k", type=int, default=3, help="how many top classes to list per image (default: 3)")
    add_engine_option(p, "the images are predicted")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def _records(df) -> list[dict]:
    """Rows as JSON-ready dicts: NaN and pandas' NA become None, numpy scalars Python ones."""
    import math

    import pandas as pd

    def clean(v):
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return None
        return v.item() if hasattr(v, "item") else v

    return [{k: clean(v) for k, v in rec.items()} for rec in df.to_dict("records")]


def run(args: argparse.Namespace) -> int:
    """Predict images or folders with a run or a model bundle (CSV with path, prediction, confidence, OOD, p_<class>)."""
    from pathlib import Path

    from core import predict

    if args.top_k < 1:
        raise CLIError(f"--top-k must be >= 1; received {args.top_k}")
    files = predict.collect_images(args.paths)
    if not files:
        raise CLIError(f"no images found in {', '.join(args.paths)} (looked for {', '.join(sorted(predict.IMAGE_EXTENSIONS))} "
                       "files, recursively in folders)")
    info(f"loading {args.source} ...")
    try:
        predictor = predict.Predictor.load(args.source)
    except predict.PredictError as exc:
        raise CLIError(str(exc)) from exc
    info(f"predicting {len(files):,} image(s) with run {predictor.run_id} ({predictor.task}, "
         f"{len(predictor.outputs)} outputs, {predictor.image_size}px)")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if done == total or now - last[0] > 2:
            last[0] = now
            info(f"  {done:,}/{total:,}")

    from core.engines import EngineError

    if args.engine != "local":
        info(f"engine: {args.engine}")
    try:
        df = predictor.predict_paths(files, top_k=args.top_k, progress=progress, engine=args.engine)
    except EngineError as exc:
        raise CLIError(str(exc)) from exc
    n_err = int((df["error"] != "").sum())
    if n_err:
        for msg in df.loc[df["error"] != "", "error"].head(20):
            info(f"skipped: {msg}")
        if n_err > 20:
            info(f"... and {n_err - 20} more unreadable file(s)")
    if predictor.ood_note:
        info(f"note: {predictor.ood_note}")
    csv_path = None
    if args.csv:
        csv_path = Path(args.csv).expanduser()
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(csv_path, index=False)
        info(f"wrote {csv_path} ({len(df):,} rows)")
    if args.json:
        emit_json({**predictor.describe(), "n_images": len(df), "n_errors": n_err,
                   "csv": str(csv_path.resolve()) if csv_path else None, "predictions": _records(df)})
    else:
        import pandas as pd

        cols = ["path", "prediction", "confidence", "uncertain", "ood_score", "ood_flag", "error"]
        with pd.option_context("display.max_rows", 200, "display.max_colwidth", 60, "display.width", 200):
            print(df[cols].to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    return 0
