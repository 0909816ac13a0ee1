"""A run's outputs: predictions.csv (written from arrays, read back as :class:`Predictions`) and
thresholds.json (chosen decision thresholds, merge-updated by section).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd

from core.runs.layout import BASE_PREDICTION_COLUMNS, RunDir, as_run_dir, json_default, read_labels, validate_labels
from core.workspace import atomic_write_json, atomic_write_text, read_json


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
    rd = as_run_dir(run_dir)
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
    rd = as_run_dir(run_dir)
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
    obj = read_json(as_run_dir(run_dir).thresholds, default=None)
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
    rd = as_run_dir(run_dir)
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
        current = json.loads(json.dumps(current, default=json_default))
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
