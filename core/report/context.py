"""What every section builder reads: the report's constants, :class:`Section`, the context loaded
once per report (the run via :func:`core.runs.open_run`, its predictions and dataset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from core import runs
from core.workspace import Workspace


SECTIONS = ("model_card", "dataset", "cleaning", "training", "confusion", "per_class", "pr_curves",
            "calibration", "embeddings", "ood", "mistakes")

#: Section status: ``ok`` (built from the run's data), ``missing`` (the data does not exist;
#: the section says what is missing), ``error`` (the data exists but could not be used; the
#: section gives the reason).
STATUSES = ("ok", "missing", "error")

#: plotly.js options for every figure: no logo, no link to plotly's cloud.
PLOTLY_CONFIG = {"displaylogo": False, "showLink": False, "showSendToCloud": False, "showEditInChartStudio": False,
                 "responsive": True, "plotlyServerURL": "", "modeBarButtonsToRemove": ["sendDataToCloud"]}

MAX_CURVE_POINTS = 200
MAX_MAP_POINTS = 5000
MAX_MAP_COLOURS = 20
#: Figures with one row / line per class show at most this many classes (the tables list all).
MAX_FIGURE_CLASSES = 40
MAX_LOG_ROWS = 300


ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Section:
    """One part of the report: ``body`` is the Markup its template rendered (user text escaped)."""

    key: str
    title: str
    body: str
    status: str = "ok"
    note: str = ""


@dataclass
class _Context:
    """What every section builder may read (loaded once)."""

    rd: runs.RunDir
    workspace: Workspace | None
    split: str
    max_thumbnails: int
    thumbnail_size: int
    config: dict[str, Any]
    status: dict[str, Any]
    labels: dict[str, Any] | None = None
    preprocessing: dict[str, Any] = field(default_factory=dict)
    predictions: Any = None          # runs.Predictions of the report's split
    evaluation: dict[str, Any] | None = None
    dataset: Any = None              # core.datasets.Dataset
    dataset_error: str = ""
    boxes: dict[str, tuple] = field(default_factory=dict)
    embeddings: Any = None
    embeddings_error: str = ""
    compare_with: runs.RunDir | None = None  # run B of the comparison section
    facts: dict[str, Any] = field(default_factory=dict)  # gathered for the model card
    figure_count: int = 0


# ---------------------------------------------------------------------------
# loading what the sections share
# ---------------------------------------------------------------------------

def _load_context(run_dir, *, workspace: Workspace | None, split: str, max_thumbnails: int,
                  thumbnail_size: int) -> _Context:
    rd = runs.require_predictions(run_dir)
    run = runs.open_run(rd, workspace)
    ctx = _Context(rd=rd, workspace=workspace, split=split, max_thumbnails=max_thumbnails,
                   thumbnail_size=thumbnail_size, config=run.config, status=runs.read_status(rd))
    ctx.labels = runs.read_labels(rd) if run.labels is None else run.labels  # missing: read_labels names the file
    ctx.preprocessing = run.preprocessing
    ctx.predictions = runs.read_predictions(rd, split=split)
    return ctx


def _load_dataset(ctx: _Context) -> None:
    from core import datasets

    ds_id = ctx.config.get("dataset_id")
    if not ds_id:
        ctx.dataset_error = "the run names no dataset_id (config.json, resolved.json)"
        return
    if ctx.workspace is None:
        ctx.dataset_error = "no workspace was given"
        return
    try:
        ctx.dataset = datasets.open_dataset(ctx.workspace, ds_id)
    except (ValueError, OSError) as exc:
        ctx.dataset_error = f"dataset {ds_id!r} cannot be opened: {exc}"
        return
    s = ctx.dataset.samples
    if {"x1", "y1", "x2", "y2"} <= set(s.columns):
        b = s[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
        has = ~np.isnan(b).any(axis=1)
        ctx.boxes = {str(sid): tuple(row) for sid, row, h in zip(s["sample_id"], b, has) if h}


def _single_label_view(pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(y_true, y_pred, probs, classes) of the labelled rows of a single-label or hierarchical run (finest level)."""
    keep = pred.y_true >= 0
    return pred.y_true[keep], pred.y_pred[keep], pred.probs[keep], tuple(pred.classes)
