"""The run directory: the one module that knows its file names and formats.

A *run directory* (``runs/<run_id>/``) is the only thing the UI and the training worker
share. Everything that reads or writes one goes through this module::

    config.json        everything needed to reproduce the run, written once: by the launcher
                       (:func:`core.jobs.launch`), or by a worker started without one
    resolved.json      what the worker resolved while it ran (the dataset id of a dataset given
                       as a spec, the review labels it applied, the weights it used, outputs,
                       counts, versions, a hierarchy's sub-models); :func:`read_config` lays it
                       over config.json
    label_patch.parquet the effective-label patch (review decisions) the run trained on
    status.json        {"state", "pid", "pid_start", "host", "epoch", "message", "created_at",
                       "updated_at", ...} written atomically on every change (:func:`write_status`);
                       optional "monitor", "best_value", "best_epoch" spare :func:`list_runs`
                       from reading metrics.jsonl
    metrics.jsonl      one JSON object per line (per epoch, and per N batches), appended and
                       fsync'ed (:func:`append_metrics`); a truncated last line is normal
    model.keras        the best checkpoint
    labels.json        what the model's outputs mean (:func:`write_labels`, contract below)
    preprocessing.json how images were prepared (image size, ...), owned by training
    predictions.csv    per sample predictions (:func:`write_predictions`, contract below)
    thresholds.json    chosen decision thresholds, merge-updated by section (:func:`write_thresholds`)
    worker.log         the worker's stdout and stderr

**States** (``status.json["state"]``): ``queued``, ``running``, ``done``, ``failed``,
``stopped``, ``interrupted``. A ``running`` / ``queued`` status whose worker process is
gone is *shown* as ``interrupted`` by :func:`effective_state` (the file is not rewritten:
reading never writes). A worker that writes ``running`` must record its ``pid``.

**labels.json**::

    {"task": "multiclass" | "binary" | "multilabel" | "hierarchical",
     "classes": [...],            # multiclass/binary: in probability-column order
     "positive_class": str|null,  # binary: one of classes
     "labels": [...],             # multilabel: the K label names
     "levels": [...],             # hierarchical: level names, coarse -> fine
     "level_classes": {level: [...]},            # hierarchical
     "parents": {level: {child: parent}}}        # hierarchical, for every level but the first

**predictions.csv** columns: ``sample_id, path, split`` then

* multiclass / binary: ``true, pred`` (class names; ``true`` empty when unknown) and
  ``p_<class>`` for every class, in ``classes`` order;
* multilabel: per label ``true_<label>`` (1 / 0 / empty for missing), ``pred_<label>``
  (0/1) and ``p_<label>``;
* hierarchical: per level ``<level>_true, <level>_pred`` and ``<level>_p_<class>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from core.workspace import atomic_write_json, atomic_write_text, read_json

# -- file names (nowhere else in Loupe spells these) -------------------------
CONFIG = "config.json"
RESOLVED = "resolved.json"
LABEL_PATCH = "label_patch.parquet"
STATUS = "status.json"
METRICS = "metrics.jsonl"
MODEL = "model.keras"
LABELS = "labels.json"
PREPROCESSING = "preprocessing.json"
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


def _rd(run_dir: "str | os.PathLike | RunDir") -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def _json_default(o: Any) -> Any:
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
    rd = _rd(run_dir)
    if rd.config.exists():
        raise ValueError(f"{rd.config} exists: a run's config.json is written once (what the worker resolves "
                         f"goes to {RESOLVED})")
    cfg = dict(config)
    cfg.setdefault("created_at", time.time())
    return atomic_write_json(rd.config, json.loads(json.dumps(cfg, default=_json_default)))


def record_resolved(run_dir, fields: Mapping[str, Any]) -> Path:
    """Merge ``fields`` into ``resolved.json`` atomically: what the worker resolved while it ran.

    Only the worker writes it; :func:`read_config` lays it over config.json.
    """
    rd = _rd(run_dir)
    current = read_json(rd.resolved, default=None)
    merged = {**(current if isinstance(current, dict) else {}), **dict(fields)}
    return atomic_write_json(rd.resolved, json.loads(json.dumps(merged, default=_json_default)))


def read_config(run_dir) -> dict[str, Any]:
    """The run's configuration: ``config.json`` with the worker's ``resolved.json`` laid over it.

    ``{}`` when config.json is missing or unreadable (never raises).
    """
    rd = _rd(run_dir)
    cfg = read_json(rd.config, default=None)
    if not isinstance(cfg, dict):
        return {}
    resolved = read_json(rd.resolved, default=None)
    return {**cfg, **resolved} if isinstance(resolved, dict) else cfg


# ---------------------------------------------------------------------------
# status and worker liveness
# ---------------------------------------------------------------------------

def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    ``None`` when unavailable (no /proc, no such process). Used to tell a live worker
    from an unrelated process that later got the same pid.
    """
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(raw.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
        return raw.rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, *, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` is alive and (when ``start_ticks`` is given) is the same process.

    A zombie (exited, not yet reaped by its parent) counts as dead; a process whose
    start time differs from ``start_ticks`` is a different process that reused the pid.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if _proc_state(pid) in ("Z", "X"):
        return False
    if start_ticks is not None:
        try:
            expected = int(start_ticks)
        except (TypeError, ValueError):
            return True  # an unreadable record cannot prove the pid was reused
        now = process_start_ticks(pid)
        if now is not None and now != expected:
            return False
    return True


def write_status(run_dir, state: str, **fields: Any) -> dict[str, Any]:
    """Write ``status.json`` atomically and return what was written.

    The previous status's fields are kept and updated with ``fields`` (so a worker can
    write ``write_status(rd, "running", epoch=3)`` without repeating its pid). When
    ``pid`` is given, its start time (``pid_start``) and ``host`` are recorded too, so a
    later reader can detect a dead worker even if the pid was reused.

    Parameters
    ----------
    run_dir : path or RunDir
    state : {"queued", "running", "done", "failed", "stopped", "interrupted"}
    **fields : JSON-serialisable values, e.g. ``pid``, ``epoch``, ``message``.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}; received {state!r}")
    rd = _rd(run_dir)
    previous = read_json(rd.status, default=None)
    status = dict(previous) if isinstance(previous, dict) else {}
    status.pop("error", None)
    if "pid" in fields and fields["pid"] is not None:
        fields.setdefault("pid_start", process_start_ticks(fields["pid"]))
        fields.setdefault("host", socket.gethostname())
    status.update(fields)
    now = time.time()
    status["state"] = state
    status.setdefault("created_at", now)
    status["updated_at"] = now
    status = json.loads(json.dumps(status, default=_json_default))
    atomic_write_json(rd.status, status)
    return status


def read_status(run_dir) -> dict[str, Any]:
    """``status.json`` as a dict with at least ``state``; never raises.

    A missing or corrupt file gives ``{"state": "unknown", "error": "<what is wrong>"}``.
    """
    rd = _rd(run_dir)
    if not rd.status.exists():
        return {"state": UNKNOWN_STATE, "error": f"{rd.status} is missing"}
    try:
        status = json.loads(rd.status.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"state": UNKNOWN_STATE, "error": f"{rd.status} is unreadable: {exc}"}
    if not isinstance(status, dict) or status.get("state") not in STATES:
        got = status.get("state") if isinstance(status, dict) else type(status).__name__
        return {**(status if isinstance(status, dict) else {}), "state": UNKNOWN_STATE,
                "error": f"{rd.status} has no valid state (got {got!r})"}
    return status


def effective_state(status: Mapping[str, Any]) -> str:
    """The state to show: ``running``/``queued`` with a dead worker becomes ``interrupted``.

    A ``queued`` status without a pid stays ``queued`` (waiting for a launcher); a
    ``running`` status without a pid is ``interrupted`` (a worker always records its pid).
    A status recorded on another host is returned as is (its pid cannot be checked here).
    """
    state = status.get("state", UNKNOWN_STATE)
    if state not in ACTIVE_STATES:
        return state if state in STATES else UNKNOWN_STATE
    pid = status.get("pid")
    if pid is None:
        return "queued" if state == "queued" else "interrupted"
    host = status.get("host")
    if host and host != socket.gethostname():
        return state
    return state if pid_alive(pid, start_ticks=status.get("pid_start")) else "interrupted"


# ---------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------

def append_metrics(run_dir, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``metrics.jsonl``, then flush and fsync.

    If the file ends in a partial line (a writer died mid-line), a newline is written
    first so the new record stays readable. NaN / inf are written as JSON ``NaN`` /
    ``Infinity`` (Python's reading of them is what matters).
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"record must be a mapping; received {type(record).__name__}")
    line = json.dumps(dict(record), default=_json_default, sort_keys=True)
    path = _rd(run_dir).metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        prefix = b""
        size = fh.seek(0, os.SEEK_END)
        if size > 0:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                prefix = b"\n"
            fh.seek(0, os.SEEK_END)
        fh.write(prefix + line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir) -> pd.DataFrame:
    """All readable records of ``metrics.jsonl`` as a DataFrame, in file order.

    Corrupt or partial lines (a truncated last line while the worker writes) are skipped;
    a missing file gives an empty DataFrame.
    """
    path = _rd(run_dir).metrics
    try:
        raw = path.read_bytes()
    except OSError:
        return pd.DataFrame()
    records = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


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
    rd = _rd(run_dir)
    return atomic_write_json(rd.labels, validate_labels(labels, where=str(rd.labels)))


def read_labels(run_dir) -> dict[str, Any]:
    """Read and validate ``labels.json``; ``ValueError`` naming the file when missing or invalid."""
    rd = _rd(run_dir)
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


# ---------------------------------------------------------------------------
# predictions.csv
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Predictions:
    """A run's predictions.csv decoded into arrays (N samples, K outputs).

    Attributes
    ----------
    task : str
    classes : tuple of str, length K
        Single-label: class names in probability-column order. Multilabel: the label
        names. Hierarchical: the finest level's classes.
    y_true : ndarray
        Single-label / hierarchical: int of shape (N,), class index, -1 where unknown.
        Multilabel: float of shape (N, K), 1.0 / 0.0 / NaN (missing).
    y_pred : ndarray
        int (N,) class index, or int (N, K) of 0/1 for multilabel.
    probs : ndarray of shape (N, K), float
    sample_ids, paths, splits : ndarray of shape (N,), object (str)
    positive_class : str or None
        Binary only.
    levels : tuple of str
        Hierarchical only (coarse -> fine); ``()`` otherwise.
    level_classes, level_true, level_pred, level_probs, parents : dict keyed by level
        Hierarchical only: class names, int (N,) true / predicted indices (-1 unknown),
        (N, K_level) probabilities, and ``{child: parent}`` maps.
    """

    task: str
    classes: tuple[str, ...]
    y_true: np.ndarray
    y_pred: np.ndarray
    probs: np.ndarray
    sample_ids: np.ndarray
    paths: np.ndarray
    splits: np.ndarray
    positive_class: str | None = None
    levels: tuple[str, ...] = ()
    level_classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    level_true: dict[str, np.ndarray] = field(default_factory=dict)
    level_pred: dict[str, np.ndarray] = field(default_factory=dict)
    level_probs: dict[str, np.ndarray] = field(default_factory=dict)
    parents: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return int(len(self.sample_ids))


def _single_columns(prefix: str, classes: list[str]) -> tuple[str, str, list[str]]:
    return f"{prefix}true", f"{prefix}pred", [f"{prefix}p_{c}" for c in classes]


def prediction_columns(labels: Mapping[str, Any]) -> list[str]:
    """The predictions.csv columns the contract requires for these labels, in order."""
    labels = validate_labels(labels)
    cols = list(BASE_PREDICTION_COLUMNS)
    task = labels["task"]
    if task in ("multiclass", "binary"):
        t, p, ps = _single_columns("", labels["classes"])
        cols += [t, p, *ps]
    elif task == "multilabel":
        names = labels["labels"]
        cols += [f"true_{n}" for n in names] + [f"pred_{n}" for n in names] + [f"p_{n}" for n in names]
    else:
        for lv in labels["levels"]:
            t, p, ps = _single_columns(f"{lv}_", labels["level_classes"][lv])
            cols += [t, p, *ps]
    return cols


def _as_probs(probs: Any, n: int, k: int, what: str) -> np.ndarray:
    arr = np.asarray(probs, dtype=float)
    if arr.shape != (n, k):
        raise ValueError(f"{what} must have shape ({n}, {k}); received {arr.shape}")
    return arr


def _index_to_names(idx: Any, classes: list[str], n: int, what: str) -> list[str]:
    arr = np.asarray(idx)
    if arr.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},); received {arr.shape}")
    if arr.dtype.kind in "iu":
        bad = arr[(arr < -1) | (arr >= len(classes))]
        if bad.size:
            raise ValueError(f"{what} has class indices outside [-1, {len(classes) - 1}]: {bad[:5].tolist()}")
        return ["" if i < 0 else classes[i] for i in arr]
    names = ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in arr]
    unknown = sorted({v for v in names if v and v not in classes})
    if unknown:
        raise ValueError(f"{what} has names that are not classes: {unknown[:5]}")
    return names


def predictions_frame(labels: Mapping[str, Any], *, sample_ids, paths, splits, y_true, probs,
                      y_pred=None) -> pd.DataFrame:
    """Build a predictions.csv table that follows the contract.

    Parameters
    ----------
    labels : dict
        A labels.json object.
    sample_ids, paths, splits : array-like of shape (N,)
        ``splits`` may also be one str for every row.
    y_true : array-like
        Single-label: (N,) class indices (-1 unknown) or names. Multilabel: (N, K) of
        1 / 0 / NaN. Hierarchical: ``{level: (N,) indices or names}``.
    probs : array-like
        (N, K) probabilities, or ``{level: (N, K_level)}`` for hierarchical.
    y_pred : optional
        Like ``y_true``; default: argmax (multilabel: ``probs >= 0.5``).

    Returns
    -------
    DataFrame with :func:`prediction_columns` ``(labels)`` as columns.
    """
    labels = validate_labels(labels)
    sample_ids = [str(s) for s in np.asarray(sample_ids, dtype=object)]
    n = len(sample_ids)
    paths = [str(p) for p in np.asarray(paths, dtype=object)]
    if len(paths) != n:
        raise ValueError(f"paths must have length {n}; received {len(paths)}")
    splits = [splits] * n if isinstance(splits, str) else [str(s) for s in np.asarray(splits, dtype=object)]
    if len(splits) != n:
        raise ValueError(f"splits must have length {n}; received {len(splits)}")
    data: dict[str, Any] = {"sample_id": sample_ids, "path": paths, "split": splits}
    task = labels["task"]
    if task in ("multiclass", "binary", "hierarchical"):
        if task == "hierarchical":
            for name, val in (("y_true", y_true), ("probs", probs), ("y_pred", y_pred)):
                if val is None and name == "y_pred":
                    continue
                absent = [lv for lv in labels["levels"] if not isinstance(val, Mapping) or lv not in val]
                if absent:
                    raise ValueError(f"{name} must be a dict {{level: array}} for a hierarchical task; "
                                     f"no entry for levels {absent}")
            blocks = [(f"{lv}_", labels["level_classes"][lv], y_true[lv], probs[lv],
                       None if y_pred is None else y_pred[lv], f"[{lv!r}]") for lv in labels["levels"]]
        else:
            blocks = [("", labels["classes"], y_true, probs, y_pred, "")]
        for prefix, classes, yt, pr, yp, at in blocks:
            p = _as_probs(pr, n, len(classes), f"probs{at}")
            if yp is None:
                yp = np.argmax(p, axis=1)
            t, pc, pcols = _single_columns(prefix, classes)
            data[t] = _index_to_names(yt, classes, n, f"y_true{at}")
            data[pc] = _index_to_names(yp, classes, n, f"y_pred{at}")
            for j, col in enumerate(pcols):
                data[col] = p[:, j]
    else:
        names = labels["labels"]
        k = len(names)
        p = _as_probs(probs, n, k, "probs")
        yt = np.asarray(y_true, dtype=float)
        if yt.shape != (n, k):
            raise ValueError(f"y_true must have shape ({n}, {k}); received {yt.shape}")
        bad = yt[~np.isnan(yt) & (yt != 0) & (yt != 1)]
        if bad.size:
            raise ValueError(f"y_true must hold 1, 0 or NaN (missing); received {bad[:5].tolist()}")
        yp = (p >= 0.5).astype(int) if y_pred is None else np.asarray(y_pred).astype(int)
        if yp.shape != (n, k):
            raise ValueError(f"y_pred must have shape ({n}, {k}); received {yp.shape}")
        for j, name in enumerate(names):
            data[f"true_{name}"] = pd.array([None if np.isnan(v) else int(v) for v in yt[:, j]], dtype="Int64")
        for j, name in enumerate(names):
            data[f"pred_{name}"] = yp[:, j]
        for j, name in enumerate(names):
            data[f"p_{name}"] = p[:, j]
    return pd.DataFrame(data)


def write_predictions(run_dir, frame: pd.DataFrame) -> Path:
    """Write ``frame`` as predictions.csv atomically (base columns first, as given otherwise).

    When the run has a labels.json, the frame must hold every column it requires.
    """
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"frame must be a pandas DataFrame; received {type(frame).__name__}")
    rd = _rd(run_dir)
    missing = [c for c in BASE_PREDICTION_COLUMNS if c not in frame.columns]
    if rd.labels.exists():
        missing += [c for c in prediction_columns(read_labels(rd)) if c not in frame.columns and c not in missing]
    if missing:
        raise ValueError(f"frame for {rd.predictions} lacks columns {missing}")
    cols = list(BASE_PREDICTION_COLUMNS) + [c for c in frame.columns if c not in BASE_PREDICTION_COLUMNS]
    buf = io.StringIO()
    frame[cols].to_csv(buf, index=False, float_format="%.8g")
    return atomic_write_text(rd.predictions, buf.getvalue())


def _numeric(df: pd.DataFrame, cols: list[str], where: Path, *, allow_empty: bool = False,
             unit_interval: bool = False) -> np.ndarray:
    """Columns ``cols`` as a float (N, len(cols)) array; ValueError naming column and row on a bad cell."""
    out = np.empty((len(df), len(cols)), dtype=float)
    for j, col in enumerate(cols):
        s = df[col]
        if pd.api.types.is_numeric_dtype(s.dtype):
            vals = s.to_numpy(dtype=float)
            bad = np.zeros(len(vals), dtype=bool) if allow_empty else np.isnan(vals)
        else:  # a non-numeric cell somewhere: find it
            text = s.astype(str).str.strip()
            empty = (text == "") | s.isna().to_numpy()
            vals = pd.to_numeric(text.where(~empty, None), errors="coerce").to_numpy(dtype=float)
            bad = np.isnan(vals) & ~empty.to_numpy()
            if not allow_empty:
                bad |= empty.to_numpy()
        if unit_interval:
            bad |= ~np.isnan(vals) & ((vals < -1e-4) | (vals > 1 + 1e-4))  # float32 sums may overshoot 1
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raw = s.iloc[i]
            need = "a probability in [0, 1]" if unit_interval else "a number"
            raise ValueError(f"{where}: column {col!r}, data row {i + 1} (sample {df['sample_id'].iloc[i]!r}): "
                             f"expected {need}; found {'an empty cell' if pd.isna(raw) or raw == '' else repr(raw)}")
        out[:, j] = vals
    return out


def _class_index(df: pd.DataFrame, col: str, classes: list[str], where: Path, *, allow_empty: bool) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    vals = df[col].to_numpy(dtype=object)
    out = np.empty(len(vals), dtype=int)
    for i, v in enumerate(vals):
        if v == "" and allow_empty:
            out[i] = -1
            continue
        j = lookup.get(v)
        if j is None:
            raise ValueError(f"{where}: column {col!r}, data row {i + 1} (sample {df['sample_id'].iloc[i]!r}): "
                             f"{v!r} is not one of the classes in labels.json {classes[:10]}"
                             f"{' ...' if len(classes) > 10 else ''}")
        out[i] = j
    return out


def _require_columns(df: pd.DataFrame, cols: list[str], where: Path) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column {missing[0]!r}"
                         + (f" (and {len(missing) - 1} more: {missing[1:6]})" if len(missing) > 1 else "")
                         + f"; columns present: {list(df.columns)[:12]}")


def require_predictions(run_dir) -> "RunDir":
    """The :class:`RunDir` of a finished run: a folder holding ``labels.json`` and ``predictions.csv``.

    Raises
    ------
    ValueError
        ``run_dir`` is not a folder, or lacks either file; the message names the folder and what lacks.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir).expanduser())
    if not rd.path.is_dir():
        raise ValueError(f"{rd.path} is not a folder; pass a run directory (runs/<run_id>/)")
    lacking = [p.name for p in (rd.labels, rd.predictions) if not p.exists()]
    if lacking:
        raise ValueError(f"{rd.path} is not a finished run: it lacks {' and '.join(lacking)} "
                         "(a finished training run writes both)")
    return rd


def read_predictions(run_dir, *, split: str | None = None) -> Predictions:
    """Read ``predictions.csv`` (interpreted with ``labels.json``) into :class:`Predictions`.

    Parameters
    ----------
    run_dir : path or RunDir
    split : str, optional
        Keep only rows of this split (``"test"``, ``"val"``...); ``ValueError`` if none.

    Raises
    ------
    ValueError
        Naming the file and the missing column / bad row when the files break the contract.
    """
    rd = _rd(run_dir)
    labels = read_labels(rd)
    where = rd.predictions
    if not where.exists():
        raise ValueError(f"{where} is missing: the run has not written predictions (yet)")
    task = labels["task"]
    if task in ("multiclass", "binary"):
        text_cols = {"true", "pred"}
    elif task == "hierarchical":
        text_cols = {f"{lv}_{x}" for lv in labels["levels"] for x in ("true", "pred")}
    else:
        text_cols = set()
    text_cols |= set(BASE_PREDICTION_COLUMNS)
    try:
        header = list(pd.read_csv(where, nrows=0).columns)
        # names and ids stay text exactly as written ("NA", "1", "" included); every other
        # column is parsed as numbers by the C parser, with only an empty cell meaning missing
        df = pd.read_csv(where, dtype={c: str for c in header if c in text_cols}, keep_default_na=False,
                         na_values={c: [""] for c in header if c not in text_cols})
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ValueError(f"{where} is unreadable as CSV: {exc}") from exc
    _require_columns(df, list(BASE_PREDICTION_COLUMNS), where)
    if split is not None:
        present = sorted(set(df["split"]))
        df = df[df["split"] == split].reset_index(drop=True)
        if df.empty:
            raise ValueError(f"{where} has no rows with split {split!r} (splits present: {present})")
    common = dict(sample_ids=df["sample_id"].to_numpy(dtype=object), paths=df["path"].to_numpy(dtype=object),
                  splits=df["split"].to_numpy(dtype=object))
    if task in ("multiclass", "binary"):
        classes = labels["classes"]
        t, pc, pcols = _single_columns("", classes)
        pos_col = f"p_{labels['positive_class']}"
        if task == "binary" and t in df.columns and pc in df.columns and pos_col in df.columns:
            # tolerate a binary file that only carries the positive class's probability
            neg = next(c for c in classes if c != labels["positive_class"])
            if f"p_{neg}" not in df.columns:
                pos = _numeric(df, [pos_col], where, unit_interval=True)[:, 0]
                df = df.assign(**{f"p_{neg}": 1.0 - pos})
        _require_columns(df, [t, pc, *pcols], where)
        return Predictions(task=task, classes=tuple(classes),
                           y_true=_class_index(df, t, classes, where, allow_empty=True),
                           y_pred=_class_index(df, pc, classes, where, allow_empty=False),
                           probs=_numeric(df, pcols, where, unit_interval=True),
                           positive_class=labels["positive_class"], **common)
    if task == "multilabel":
        names = labels["labels"]
        tcols, pcols_, scols = ([f"{pre}_{n}" for n in names] for pre in ("true", "pred", "p"))
        _require_columns(df, tcols + pcols_ + scols, where)
        y_true = _numeric(df, tcols, where, allow_empty=True)
        y_pred = _numeric(df, pcols_, where)
        for arr, cols, allowed in ((y_true, tcols, "1, 0 or empty"), (y_pred, pcols_, "1 or 0")):
            bad = ~np.isnan(arr) & (arr != 0) & (arr != 1)
            if bad.any():
                i, j = (int(x[0]) for x in np.nonzero(bad))
                raise ValueError(f"{where}: column {cols[j]!r}, data row {i + 1}: expected {allowed}; "
                                 f"found {df[cols[j]].iloc[i]!r}")
        return Predictions(task=task, classes=tuple(names), y_true=y_true, y_pred=y_pred.astype(int),
                           probs=_numeric(df, scols, where, unit_interval=True), **common)
    levels = labels["levels"]
    lt, lp, lpr = {}, {}, {}
    for lv in levels:
        classes = labels["level_classes"][lv]
        t, pc, pcols = _single_columns(f"{lv}_", classes)
        _require_columns(df, [t, pc, *pcols], where)
        lt[lv] = _class_index(df, t, classes, where, allow_empty=True)
        lp[lv] = _class_index(df, pc, classes, where, allow_empty=False)
        lpr[lv] = _numeric(df, pcols, where, unit_interval=True)
    fine = levels[-1]
    return Predictions(task=task, classes=tuple(labels["level_classes"][fine]), y_true=lt[fine], y_pred=lp[fine],
                       probs=lpr[fine], levels=tuple(levels),
                       level_classes={lv: tuple(labels["level_classes"][lv]) for lv in levels},
                       level_true=lt, level_pred=lp, level_probs=lpr, parents=labels["parents"], **common)


# ---------------------------------------------------------------------------
# thresholds.json (merge-updated by section)
# ---------------------------------------------------------------------------

_THRESHOLD_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of one run's files across threads and processes."""
    with _THRESHOLD_LOCK:
        fd = None
        try:
            import fcntl

            fd = os.open(directory, os.O_RDONLY)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            pass
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the flock


def read_thresholds(run_dir) -> dict[str, Any]:
    """``thresholds.json`` as a dict (``{}`` when missing or unreadable; never raises).

    Sections: ``classes`` — ``{class or label: {"threshold", "precision", "recall", ...} | null}``
    (null: the target precision was unreachable); ``ood`` — the out-of-distribution threshold
    (``{"threshold": float, "method": str, ...}``).
    """
    obj = read_json(_rd(run_dir).thresholds, default=None)
    return obj if isinstance(obj, dict) else {}


def write_thresholds(run_dir, *, classes: Mapping[str, Any] | None = None,
                     ood: Mapping[str, Any] | None = None, meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Merge-update ``thresholds.json``: only the sections given are replaced.

    Parameters
    ----------
    classes : dict, optional
        ``{name: {"threshold": float, ...} or None}``; replaces the ``classes`` section.
    ood : dict, optional
        ``{"threshold": float, ...}``; replaces the ``ood`` section.
    meta : dict, optional
        Merged into the ``meta`` section (e.g. ``target_precision``, ``split``).

    Returns
    -------
    dict : the whole file as written.
    """
    rd = _rd(run_dir)
    if classes is None and ood is None and meta is None:
        raise ValueError("write_thresholds needs at least one of classes=, ood=, meta=")
    for name, section in (("classes", classes), ("ood", ood), ("meta", meta)):
        if section is not None and not isinstance(section, Mapping):
            raise ValueError(f"{name} must be a mapping; received {type(section).__name__}")
    if classes is not None:
        for k, v in classes.items():
            if v is not None and (not isinstance(v, Mapping) or "threshold" not in v):
                raise ValueError(f"classes[{k!r}] must be None or a mapping with a 'threshold'; received {v!r}")
    if ood is not None and "threshold" not in ood:
        raise ValueError(f"ood must hold a 'threshold'; received {dict(ood)!r}")
    rd.path.mkdir(parents=True, exist_ok=True)
    with _locked(rd.path):
        current = read_thresholds(rd)
        if classes is not None:
            current["classes"] = {str(k): (dict(v) if v is not None else None) for k, v in classes.items()}
        if ood is not None:
            current["ood"] = dict(ood)
        if meta is not None:
            current["meta"] = {**(current.get("meta") or {}), **dict(meta)}
        current["updated_at"] = time.time()
        current = json.loads(json.dumps(current, default=_json_default))
        atomic_write_json(rd.thresholds, current)
    return current


def class_thresholds(run_dir) -> dict[str, float]:
    """The usable per-class thresholds, ``{name: threshold}`` (unreachable ones left out)."""
    out = {}
    for k, v in (read_thresholds(run_dir).get("classes") or {}).items():
        try:
            t = float(v["threshold"])
        except (TypeError, KeyError, ValueError):
            continue
        if math.isfinite(t):
            out[k] = t
    return out


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
    rd = _rd(run_dir)
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
    rd = _rd(run_dir)
    pre = read_json(rd.preprocessing, default=None)
    return Run(dir=rd, config=read_config(rd), labels=read_labels(rd) if rd.labels.exists() else None,
               preprocessing=pre if isinstance(pre, dict) else {}, workspace=run_workspace(rd, workspace))
