"""``python -m core export``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, emit_json, info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (runs/<run_id>/)")
    p.add_argument("--out", required=True, metavar="bundle.zip", help="the model bundle zip to write")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Write a model bundle zip (model, labels, thresholds, preprocessing) that `predict` loads anywhere."""
    import zipfile

    from core import predict

    try:
        out = predict.export_bundle(args.run_dir, args.out)
    except (predict.PredictError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    with zipfile.ZipFile(out) as zf:
        files = [i.filename for i in zf.infolist()]
    size = out.stat().st_size
    info(f"wrote {out} ({size / 1024**2:.1f} MB): {', '.join(files)}")
    if args.json:
        emit_json({"bundle": str(out.resolve()), "bytes": size, "files": files})
    else:
        print(out)
    return 0
