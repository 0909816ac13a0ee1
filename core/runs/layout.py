"""A run directory's layout: its file names (nowhere else in Loupe spells them), :class:`RunDir`,
config.json (written once) with the worker's resolved.json over it, and labels.json.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.workspace import atomic_write_json, read_json


# -- file names (nowhere else in Loupe spells these) -------------------------
CONFIG = "config.json"
RESOLVED = "resolved.json"
LABEL_PATCH = "label_patch.parquet"
STATUS = "status.json"
METRICS = "metrics.jsonl"
MODEL = "model.keras"
LABELS = "labels.json"
PREPROCESSING = "preprocessing.json"
#: preprocessing.json key: true when every prediction averages the image with its left-right mirror.
FLIP_AVERAGE = "flip_average"
PREDICTIONS = "predictions.csv"
THRESHOLDS = "thresholds.json"
WORKER_LOG = "worker.log"

STATES = ("queued", "running", "done", "failed", "stopped", "interrupted")
ACTIVE_STATES = ("queued", "running")
#: ``read_status`` returns this state when status.json is missing or unreadable.
UNKNOWN_STATE = "unknown"
TASKS = ("multiclass", "binary", "multilabel", "hierarchical")
BASE_PREDICTION_COLUMNS = ("sample_id", "path", "split")


@dataclass(frozen=True)
class RunDir:
    """Paths inside one run directory. Cheap; creates nothing."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def resolved(self) -> Path:
        return self.path / RESOLVED

    @property
    def label_patch(self) -> Path:
        return self.path / LABEL_PATCH

    @property
    def status(self) -> Path:
        return self.path / STATUS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def labels(self) -> Path:
        return self.path / LABELS

    @property
    def preprocessing(self) -> Path:
        return self.path / PREPROCESSING

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def thresholds(self) -> Path:
        return self.path / THRESHOLDS

    @property
    def worker_log(self) -> Path:
        return self.path / WORKER_LOG

    def looks_like_run(self) -> bool:
        """True when the folder holds at least one of config/status/labels/predictions."""
        return self.path.is_dir() and any(
            p.exists() for p in (self.config, self.status, self.labels, self.predictions))


def as_run_dir(run_dir: "str | os.PathLike | RunDir") -> RunDir:
    """``run_dir`` as a :class:`RunDir` (a path or a RunDir)."""
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def json_default(o: Any) -> Any:
    """``json.dumps(default=...)`` for numpy scalars and arrays and paths."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} value {o!r} as JSON")


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def write_config(run_dir, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` atomically, once (adds ``created_at`` when absent).

    The launcher writes it (:func:`core.jobs.launch`), or the worker when it was started
    without one; what the worker learns later goes to ``resolved.json``
    (:func:`record_resolved`). ``ValueError`` when the run already has a config.json.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be a mapping; received {type(config).__name__}")
    rd = as_run_dir(run_dir)
    if rd.config.exists():
        raise ValueError(f"{rd.config} exists: a run's config.json is written once (what the worker resolves "
                         f"goes to {RESOLVED})")
    cfg = dict(config)
    cfg.setdefault("created_at", time.time())
    return atomic_write_json(rd.config, json.loads(json.dumps(cfg, default=json_default)))


def record_resolved(run_dir, fields: Mapping[str, Any]) -> Path:
    """Merge ``fields`` into ``resolved.json`` atomically: what the worker resolved while it ran.

    Only the worker writes it; :func:`read_config` lays it over config.json.
    """
    rd = as_run_dir(run_dir)
    current = read_json(rd.resolved, default=None)
    merged = {**(current if isinstance(current, dict) else {}), **dict(fields)}
    return atomic_write_json(rd.resolved, json.loads(json.dumps(merged, default=json_default)))


def read_config(run_dir) -> dict[str, Any]:
    """The run's configuration: ``config.json`` with the worker's ``resolved.json`` laid over it.

    ``{}`` when config.json is missing or unreadable (never raises).
    """
    rd = as_run_dir(run_dir)
    cfg = read_json(rd.config, default=None)
    if not isinstance(cfg, dict):
        return {}
    resolved = read_json(rd.resolved, default=None)
    return {**cfg, **resolved} if isinstance(resolved, dict) else cfg


def flips_averaged(preprocessing: Mapping[str, Any]) -> bool:
    """Whether a run's predictions average each image with its left-right mirror (``preprocessing.json``'s
    :data:`FLIP_AVERAGE`, written by the worker; runs from before it predicted each image once)."""
    return preprocessing.get(FLIP_AVERAGE) is True


def read_preprocessing(run_dir) -> dict[str, Any]:
    """``preprocessing.json`` (how images were prepared: ``image_size``, ...); ``{}`` when missing or unreadable."""
    pre = read_json(as_run_dir(run_dir).preprocessing, default=None)
    return pre if isinstance(pre, dict) else {}


# ---------------------------------------------------------------------------
# labels.json
# ---------------------------------------------------------------------------

def _names(value: Any, what: str, where: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{where}: {what} must be a non-empty list; received {value!r}")
    names = [str(v) for v in value]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{where}: {what} has duplicate names {dup}")
    return names


def validate_labels(labels: Mapping[str, Any], *, where: str = "labels") -> dict[str, Any]:
    """Check a labels.json object against the contract and return it normalised (str names).

    Raises ``ValueError`` naming ``where`` and the offending key.
    """
    if not isinstance(labels, Mapping):
        raise ValueError(f"{where}: expected a JSON object; received {type(labels).__name__}")
    task = labels.get("task")
    if task not in TASKS:
        raise ValueError(f"{where}: task must be one of {', '.join(TASKS)}; received {task!r}")
    out: dict[str, Any] = {"task": task}
    if task in ("multiclass", "binary"):
        out["classes"] = _names(labels.get("classes"), "classes", where)
        pos = labels.get("positive_class")
        if task == "binary":
            if len(out["classes"]) != 2:
                raise ValueError(f"{where}: a binary task needs exactly 2 classes; received {out['classes']}")
            if pos is None or str(pos) not in out["classes"]:
                raise ValueError(f"{where}: positive_class must be one of {out['classes']}; received {pos!r}")
            pos = str(pos)
        else:
            pos = None
        out["positive_class"] = pos
    elif task == "multilabel":
        out["labels"] = _names(labels.get("labels"), "labels", where)
    else:
        levels = _names(labels.get("levels"), "levels", where)
        lc = labels.get("level_classes")
        if not isinstance(lc, Mapping):
            raise ValueError(f"{where}: level_classes must be an object {{level: [classes]}}; received {lc!r}")
        level_classes = {}
        for lv in levels:
            if lv not in lc:
                raise ValueError(f"{where}: level_classes has no entry for level {lv!r}")
            level_classes[lv] = _names(lc[lv], f"level_classes[{lv!r}]", where)
        parents_in = labels.get("parents") or {}
        if not isinstance(parents_in, Mapping):
            raise ValueError(f"{where}: parents must be an object {{level: {{child: parent}}}}; "
                             f"received {parents_in!r}")
        parents = {}
        for i, lv in enumerate(levels[1:], start=1):
            m = parents_in.get(lv)
            if m is None:
                raise ValueError(f"{where}: parents has no entry for level {lv!r}")
            if not isinstance(m, Mapping):
                raise ValueError(f"{where}: parents[{lv!r}] must be an object {{child: parent}}")
            parents[lv] = {str(k): str(v) for k, v in m.items()}
            allowed = set(level_classes[levels[i - 1]])
            bad = sorted({v for v in parents[lv].values() if v not in allowed})
            if bad:
                raise ValueError(f"{where}: parents[{lv!r}] names parents {bad} that are not classes of "
                                 f"level {levels[i - 1]!r}")
        out.update(levels=levels, level_classes=level_classes, parents=parents)
        # the finest level doubles as the flat class list
        out["classes"] = level_classes[levels[-1]]
    return out


def write_labels(run_dir, labels: Mapping[str, Any]) -> Path:
    """Validate ``labels`` against the labels.json contract and write it atomically."""
    rd = as_run_dir(run_dir)
    return atomic_write_json(rd.labels, validate_labels(labels, where=str(rd.labels)))


def read_labels(run_dir) -> dict[str, Any]:
    """Read and validate ``labels.json``; ``ValueError`` naming the file when missing or invalid."""
    rd = as_run_dir(run_dir)
    if not rd.labels.exists():
        raise ValueError(f"{rd.labels} is missing: not a run directory, or the run has not written it yet")
    try:
        obj = json.loads(rd.labels.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{rd.labels} is unreadable: {exc}") from exc
    return validate_labels(obj, where=str(rd.labels))


def output_names(labels: Mapping[str, Any]) -> list[str]:
    """The model's output names: classes (single-label, finest level for hierarchical) or labels."""
    return list(labels["labels"] if labels["task"] == "multilabel" else labels["classes"])
