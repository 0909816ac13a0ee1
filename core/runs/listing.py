"""Runs as a whole: the runs table of a workspace, the workspace and dataset a run belongs to, and
:func:`open_run` (each of a run's JSON files read once).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from core.runs.layout import RunDir, UNKNOWN_STATE, as_run_dir, read_config, read_labels, read_preprocessing
from core.runs.status import effective_state, read_metrics, read_status
from core.workspace import read_json


# ---------------------------------------------------------------------------
# listing runs
# ---------------------------------------------------------------------------

RUN_COLUMNS = ("run_id", "state", "stored_state", "task", "model", "dataset_id", "created", "updated",
               "epoch", "monitor", "best_value", "best_epoch", "message", "has_model", "has_predictions", "path")


def _model_name(cfg: Mapping[str, Any]) -> str | None:
    m = cfg.get("model")
    if isinstance(m, Mapping):
        m = m.get("name") or m.get("model") or m.get("backbone")
    return None if m is None else str(m)


def _best(metrics: pd.DataFrame, monitor: str | None) -> tuple[float, Any]:
    if not monitor or metrics.empty or monitor not in metrics.columns:
        return float("nan"), None
    vals = pd.to_numeric(metrics[monitor], errors="coerce")
    ok = vals.notna() & np.isfinite(vals)
    if not ok.any():
        return float("nan"), None
    i = vals[ok].idxmin() if "loss" in monitor else vals[ok].idxmax()
    epoch = metrics.at[i, "epoch"] if "epoch" in metrics.columns else None
    if epoch is not None and pd.isna(epoch):
        epoch = None
    return float(vals[i]), (int(epoch) if epoch is not None else None)


def run_summary(run_dir) -> dict[str, Any]:
    """One row of :func:`list_runs` for ``run_dir`` (reads files only; never raises)."""
    rd = as_run_dir(run_dir)
    cfg = read_config(rd)
    status = read_status(rd)
    labels = read_json(rd.labels, default=None)
    task = cfg.get("task") or (labels.get("task") if isinstance(labels, dict) else None)
    monitor = status.get("monitor") or cfg.get("monitor") or "val_macro_f1"
    if "best_value" in status and status.get("best_value") is not None:
        try:
            best, best_epoch = float(status["best_value"]), status.get("best_epoch")
        except (TypeError, ValueError):
            best, best_epoch = _best(read_metrics(rd), monitor)
    else:
        best, best_epoch = _best(read_metrics(rd), monitor)
    try:
        mtime = rd.path.stat().st_mtime
    except OSError:
        mtime = float("nan")
    created = cfg.get("created_at") or status.get("created_at") or mtime
    return {
        "run_id": rd.run_id,
        "state": effective_state(status),
        "stored_state": status.get("state", UNKNOWN_STATE),
        "task": task,
        "model": _model_name(cfg),
        "dataset_id": cfg.get("dataset_id"),
        "created": pd.to_datetime(created, unit="s", errors="coerce") if isinstance(created, (int, float)) else
        pd.to_datetime(created, errors="coerce"),
        "updated": pd.to_datetime(status.get("updated_at"), unit="s", errors="coerce")
        if isinstance(status.get("updated_at"), (int, float)) else pd.NaT,
        "epoch": status.get("epoch"),
        "monitor": monitor,
        "best_value": best,
        "best_epoch": best_epoch,
        "message": status.get("message") or status.get("error"),
        "has_model": rd.model.exists(),
        "has_predictions": rd.predictions.exists(),
        "path": str(rd.path),
    }


def list_runs(runs_dir) -> pd.DataFrame:
    """All runs under ``runs_dir`` (one row per sub-folder that looks like a run), newest first.

    Columns: see ``RUN_COLUMNS``; ``state`` is :func:`effective_state` (dead workers show
    as ``interrupted``), ``stored_state`` what status.json says. Half-written runs (no
    status yet, corrupt files) still get a row, with ``state`` ``unknown`` and a message.
    A missing ``runs_dir`` gives an empty table.
    """
    root = Path(runs_dir)
    rows = []
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        children = []
    for child in children:
        rd = RunDir(child)
        if rd.looks_like_run():
            rows.append(run_summary(rd))
    df = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    if not df.empty:
        df = df.sort_values(["created", "run_id"], ascending=[False, True], na_position="last").reset_index(drop=True)
    return df


# ---------------------------------------------------------------------------
# what a run belongs to
# ---------------------------------------------------------------------------

def run_workspace(run_dir, workspace=None):
    """The workspace a run belongs to: ``workspace`` if given (a Workspace or a path), else the ``<ws>`` of
    ``<ws>/runs/<id>`` when it holds a workspace database, else ``$LOUPE_HOME``."""
    from core import workspace as wsmod

    if isinstance(workspace, wsmod.Workspace):
        return workspace
    if workspace is not None:
        return wsmod.home(workspace)
    path = (run_dir.path if isinstance(run_dir, RunDir) else Path(run_dir).expanduser()).resolve()
    if path.parent.name == "runs" and (path.parent.parent / "loupe.sqlite").exists():
        return wsmod.Workspace(path.parent.parent)
    return wsmod.home()


def run_dataset(run_dir, workspace=None, *, config: Mapping[str, Any] | None = None):
    """The :class:`core.datasets.Dataset` a run was trained on: its ``dataset_id`` in the run's workspace, else
    the dataset spec its config.json holds (loaded again). ``config``: the run's :func:`read_config`, when the
    caller has it already. ``ValueError`` when the config names neither."""
    from core import datasets

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir).expanduser())
    ws = run_workspace(rd, workspace)
    cfg = read_config(rd) if config is None else config
    if cfg.get("dataset_id"):
        try:
            return datasets.open_dataset(ws, cfg["dataset_id"])
        except datasets.DatasetError:
            if not cfg.get("dataset"):
                raise
    if cfg.get("dataset"):
        return datasets.load_dataset(datasets.DatasetSpec.from_dict(cfg["dataset"]), workspace=ws)
    raise ValueError(f"{rd.config}: the run names no dataset (no dataset_id or dataset); cannot open its samples")


@dataclass(frozen=True)
class Run:
    """One run directory, opened for reading (:func:`open_run`): its paths, its configuration
    (config.json with resolved.json laid over it), labels.json (None before the worker writes
    it), preprocessing.json (``{}`` when missing) and the workspace it belongs to."""

    dir: RunDir
    config: dict[str, Any]
    labels: dict[str, Any] | None
    preprocessing: dict[str, Any]
    workspace: Any

    @property
    def path(self) -> Path:
        return self.dir.path

    def dataset(self):
        """The :class:`core.datasets.Dataset` the run was trained on (see :func:`run_dataset`)."""
        return run_dataset(self.dir, self.workspace, config=self.config)


def open_run(run_dir, workspace=None) -> Run:
    """Open a run directory: each of its JSON files read once. ``ValueError`` when labels.json exists but is
    invalid; a run that has not written it yet has ``labels=None``."""
    rd = as_run_dir(run_dir)
    return Run(dir=rd, config=read_config(rd), labels=read_labels(rd) if rd.labels.exists() else None,
               preprocessing=read_preprocessing(rd), workspace=run_workspace(rd, workspace))
