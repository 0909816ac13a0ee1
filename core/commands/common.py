"""What every CLI command shares: the error type, JSON and progress output, dataset options, run lookup.

The ground floor of :mod:`core.commands`: the command modules import it, :mod:`core.cli`
imports the command modules (a plain table), and nothing here imports either.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user error: printed as ``error: <message>`` and exit code 2 (no traceback)."""


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one JSON line on stdout (the contract: last line of stdout)."""
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=True) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def info(msg: str) -> None:
    """Progress for humans, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Dataset options shared by inspect / audit / train
# ---------------------------------------------------------------------------

def run_path(arg: str, workspace: str | None) -> Path:
    """A run given as a directory, or as a run id under the workspace's ``runs/``."""
    from core.workspace import home

    path = Path(arg).expanduser()
    if path.is_dir():
        return path
    candidate = home(workspace).runs_dir / arg
    if "/" not in arg and candidate.is_dir():
        return candidate
    raise CLIError(f"{arg} is neither a run directory nor a run id under {home(workspace).runs_dir}")


def add_engine_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--engine local|ray``: where ``what`` runs (see :mod:`core.engines`)."""
    from core.engines import ENGINES

    p.add_argument("--engine", choices=list(ENGINES), default="local",
                   help=f"where {what}: this process (default), or Ray Data actors on the Ray cluster at "
                        "$RAY_ADDRESS, else on a local Ray (pip install -r requirements-ray.txt)")


def add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset root: a folder of class folders, or the images folder for a labels table")
    p.add_argument("--labels", help="labels table (CSV, TSV or Parquet); paths in it are relative to PATH")
    p.add_argument("--task", choices=["multiclass", "binary", "multilabel", "hierarchical"],
                   help="label shape (auto-detected when omitted)")
    p.add_argument("--label-columns", help="comma-separated label columns (hierarchical: levels coarse->fine)")
    p.add_argument("--image-column", help="column holding image paths (auto-detected when omitted)")
    p.add_argument("--positive-class", help="binary task: the positive class")
    p.add_argument("--tags-column", help="multi-label: one column of delimited tags")
    p.add_argument("--tags-delimiter", default=None, help="delimiter for --tags-column (default: auto)")
    p.add_argument("--box-columns", help="region crops: x,y,w,h or x1,y1,x2,y2 column names")
    p.add_argument("--box-format", choices=["xywh", "xyxy"], help="how to read --box-columns (default: from names)")
    p.add_argument("--attribute-columns", help="extra multi-hot attribute columns")
    p.add_argument("--unseen", help="folder of unlabelled images kept beside the dataset (out-of-distribution)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stored train/val/test split")
    p.add_argument("--workspace", help="workspace folder (default: $LOUPE_HOME or ./workspace)")


def spec_from_args(args: argparse.Namespace) -> "Any":
    """The :class:`core.datasets.DatasetSpec` described by the options of :func:`add_dataset_options`.

    Raises :class:`CLIError` when an option has an invalid value.
    """
    from dataclasses import fields

    from core.datasets import DatasetSpec

    # Each option's dest is a DatasetSpec field name; an option a command lacks takes the field's default.
    # DatasetSpec itself splits the comma-separated column lists.
    try:
        return DatasetSpec(**{f.name: getattr(args, f.name, f.default) for f in fields(DatasetSpec)})
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
