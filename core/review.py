"""Review decisions -> effective labels (raw labels + a patch).

Vocabulary: a dataset has N samples with *raw* labels (what its files say). A reviewer
makes *decisions* about single samples, usually about samples an audit flagged
(:mod:`core.audit`):

``keep``     the flag was wrong; the sample stays as it is (counts as a *rejected* flag).
``exclude``  the sample is left out of training and evaluation.
``relabel``  the sample gets ``new_label`` in ``label_column``.

Every decision is one row of the workspace SQLite table ``decisions`` (see
:mod:`core.workspace`), committed the moment it is recorded. Rows are never deleted:
undoing a decision stamps its ``undone_at``. So the log is append-only and these rules
define the *effective labels*:

* **The latest active decision per sample wins** (a later ``keep`` cancels an earlier
  ``exclude``; undoing the latest brings back the one before it).
* **Decision version** = number of events in the dataset's log (decisions recorded + decisions
  undone). It only grows, so a run that records ``decision_version`` names exactly which
  review state it trained on (:func:`decision_version`).
* **Hierarchical datasets**: a relabel of the finest level (the default ``label_column``)
  also sets every coarser level to the leaf's parent, derived from the dataset itself (the
  parent most raw samples of that leaf have), so the effective hierarchy stays consistent. A
  relabel of a coarser level (e.g. fixing a ``hierarchy_conflict``) changes that level only.
  A hierarchical relabel must name a class the level already has.
* **Multi-label datasets**: a relabel sets the sample's whole label set: ``new_label`` is the
  positive labels joined by ``|`` (``""`` for none); every other label becomes 0 (the
  reviewer looked at the image). ``label_column`` is not used.
* **Batches**: :func:`record_decisions` writes all its rows in one transaction with one
  timestamp; :func:`undo_last` undoes the latest batch (one click = one batch).

Decisions carry the ``detector`` (or several, comma-separated) whose flag they answer;
:func:`detector_precision` turns them into each detector's precision on this dataset.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from core.datasets import Dataset, open_dataset
from core.targets import apply_label_overrides
from core.workspace import Workspace, atomic_write_bytes

#: The three decisions a reviewer can make.
ACTIONS = ("keep", "exclude", "relabel")
#: Actions that confirm a detector's flag (``keep`` rejects it).
CONFIRMING = ("exclude", "relabel")
#: Separator of the positive labels in a multi-label relabel's ``new_label``.
MULTILABEL_SEP = "|"

DECISION_COLUMNS = ("decision_id", "dataset_id", "sample_id", "action", "label_column", "old_label", "new_label",
                    "detector", "note", "created_at", "undone_at")


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------

def _check_workspace(workspace: Workspace) -> Workspace:
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    return workspace


def _dataset(workspace: Workspace, ds: Dataset | str) -> Dataset:
    if isinstance(ds, Dataset):
        return ds
    if isinstance(ds, str):
        return open_dataset(workspace, ds)
    raise ValueError(f"ds must be a core.datasets.Dataset or a dataset id; received {type(ds).__name__}")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA


def _raw_label(ds: Dataset, row: pd.Series, column: str | None) -> str | None:
    """The raw label of a sample as text: the level/column value; multi-label: ``a|b`` (``?`` marks missing)."""
    if ds.task == "multilabel":
        pos = [c for c in ds.label_columns if row[c] == 1.0]
        unknown = [c for c in ds.label_columns if _missing(row[c])]
        return MULTILABEL_SEP.join(pos) + (f" (?{','.join(unknown)})" if unknown else "")
    v = row[column]
    return None if _missing(v) else str(v)


def _normalise(ds: Dataset, sample_pos: pd.Series, rec: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one decision against the dataset; fill the default label column and the old label."""
    sid = rec.get("sample_id")
    if sid is None or str(sid) not in sample_pos.index:
        raise ValueError(f"sample_id={sid!r} is not a sample of dataset {ds.dataset_id!r}")
    sid = str(sid)
    action = rec.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {list(ACTIONS)}; received action={action!r} (sample {sid!r})")
    row = ds.samples.iloc[int(sample_pos[sid])]
    column = rec.get("label_column")
    new = rec.get("new_label")
    if ds.task == "multilabel":
        column = None
        if action == "relabel":
            if new is None:
                raise ValueError(f"a multi-label relabel needs new_label (positive labels joined by "
                                 f"{MULTILABEL_SEP!r}, '' for none); received None (sample {sid!r})")
            if isinstance(new, (list, tuple, set)):
                new = MULTILABEL_SEP.join(sorted(str(x) for x in new))
            parts = [p for p in str(new).split(MULTILABEL_SEP) if p]
            unknown = [p for p in parts if p not in ds.label_columns]
            if unknown:
                raise ValueError(f"new_label names unknown label(s) {unknown}; labels: {list(ds.label_columns)}")
            new = MULTILABEL_SEP.join(sorted(set(parts)))
    else:
        column = column or ds.label_columns[-1]
        if column not in ds.label_columns:
            raise ValueError(f"label_column must be one of {list(ds.label_columns)}; received label_column={column!r}")
        if action == "relabel":
            if new is None or str(new).strip() == "":
                raise ValueError(f"relabel needs a non-empty new_label; received new_label={new!r} (sample {sid!r})")
            new = str(new).strip()
            known = ds.schema.classes.get(column, ())
            if ds.task in ("hierarchical", "binary") and new not in known:
                raise ValueError(f"new_label={new!r} is not a class of {column!r} (a {ds.task} relabel must name an "
                                 f"existing class: {list(known)})")
    if action != "relabel":
        new = None
    return {
        "sample_id": sid, "action": action, "label_column": column,
        "old_label": rec.get("old_label") if rec.get("old_label") is not None else _raw_label(ds, row, column),
        "new_label": None if new is None else str(new),
        "detector": (str(rec["detector"]) if rec.get("detector") else None),
        "note": (str(rec["note"]) if rec.get("note") else None),
    }


# ---------------------------------------------------------------------------
# Recording and undoing
# ---------------------------------------------------------------------------

def record_decisions(workspace: Workspace, ds: Dataset | str,
                     rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> list[int]:
    """Record several decisions in one transaction (one batch, one timestamp), committed at once.

    Parameters
    ----------
    workspace : Workspace
    ds : Dataset or dataset id
    rows : iterable of dicts, or DataFrame
        Each with ``sample_id`` and ``action`` (one of :data:`ACTIONS`), and optionally
        ``new_label`` (relabel), ``label_column`` (default: the finest level / the label
        column), ``detector`` (the flag answered; several comma-separated), ``note``,
        ``old_label`` (default: the raw label).

    Returns
    -------
    list of int : the new ``decision_id`` values, in order.

    Raises
    ------
    ValueError
        An unknown sample or action, or a relabel without a valid ``new_label``; nothing is
        written then.
    """
    _check_workspace(workspace)
    ds = _dataset(workspace, ds)
    if isinstance(rows, pd.DataFrame):
        rows = rows.to_dict("records")
    sample_pos = pd.Series(np.arange(len(ds.samples)), index=ds.samples["sample_id"].astype(str))
    recs = [_normalise(ds, sample_pos, r) for r in rows]  # validate everything before writing anything
    if not recs:
        return []
    now = time.time()
    ids = []
    with workspace.connect() as con:
        for r in recs:
            cur = con.execute(
                """INSERT INTO decisions (dataset_id, sample_id, action, label_column, old_label, new_label,
                                          detector, note, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (ds.dataset_id, r["sample_id"], r["action"], r["label_column"], r["old_label"], r["new_label"],
                 r["detector"], r["note"], now))
            ids.append(int(cur.lastrowid))
    return ids


def record_decision(workspace: Workspace, ds: Dataset | str, sample_id: str, action: str, *,
                    new_label: str | None = None, label_column: str | None = None, detector: str | None = None, note: str | None = None) -> int:
    """Record one decision (committed at once); return its ``decision_id``. See :func:`record_decisions`."""
    return record_decisions(workspace, ds, [dict(sample_id=sample_id, action=action, new_label=new_label,
                                          label_column=label_column, detector=detector, note=note)])[0]


def undo(workspace: Workspace, decision_ids: int | Iterable[int]) -> int:
    """Undo decisions (stamp ``undone_at``); return how many were undone (already undone ones are skipped)."""
    _check_workspace(workspace)
    ids = [int(decision_ids)] if isinstance(decision_ids, (int, np.integer)) else [int(i) for i in decision_ids]
    if not ids:
        return 0
    now = time.time()
    with workspace.connect() as con:
        cur = con.execute(f"UPDATE decisions SET undone_at = ? WHERE undone_at IS NULL AND decision_id IN "
                          f"({','.join('?' * len(ids))})", (now, *ids))
        return int(cur.rowcount)


def undo_last(workspace: Workspace, dataset_id: str) -> list[int]:
    """Undo the latest batch of active decisions of a dataset (the last click); return the undone ids ([] if none)."""
    _check_workspace(workspace)
    with workspace.connect() as con:
        row = con.execute("SELECT MAX(created_at) FROM decisions WHERE dataset_id = ? AND undone_at IS NULL",
                          (str(dataset_id),)).fetchone()
        if row is None or row[0] is None:
            return []
        ids = [int(r[0]) for r in con.execute(
            "SELECT decision_id FROM decisions WHERE dataset_id = ? AND undone_at IS NULL AND created_at = ?",
            (str(dataset_id), row[0])).fetchall()]
        con.execute(f"UPDATE decisions SET undone_at = ? WHERE decision_id IN ({','.join('?' * len(ids))})",
                    (time.time(), *ids))
    return ids


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def decisions(workspace: Workspace, dataset_id: str, *, active_only: bool = False) -> pd.DataFrame:
    """The decision log of a dataset, newest first.

    Columns: :data:`DECISION_COLUMNS` plus ``active`` (bool: not undone and the latest
    not-undone decision of its sample, i.e. in effect). ``active_only``: only the decisions
    in effect, one per sample.
    """
    _check_workspace(workspace)
    if not workspace.db_path.exists():
        df = pd.DataFrame(columns=[*DECISION_COLUMNS, "active"])
        return df
    with workspace.connect() as con:
        rows = con.execute(f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE dataset_id = ? "
                           "ORDER BY decision_id DESC", (str(dataset_id),)).fetchall()
    df = pd.DataFrame([tuple(r) for r in rows], columns=list(DECISION_COLUMNS))
    if df.empty:
        df["active"] = pd.Series(dtype=bool)
        return df
    live = df["undone_at"].isna()
    latest = df[live].groupby("sample_id")["decision_id"].max()
    df["active"] = df["decision_id"].isin(latest.to_numpy())
    if active_only:
        df = df[df["active"]].reset_index(drop=True)
    return df


def decision_version(workspace: Workspace, dataset_id: str) -> int:
    """Events in the dataset's decision log (decisions recorded + decisions undone); 0 without any.

    Monotonic: every record and every undo raises it, nothing lowers it.
    """
    _check_workspace(workspace)
    if not workspace.db_path.exists():
        return 0
    with workspace.connect() as con:
        n, undone = con.execute("SELECT COUNT(*), COUNT(undone_at) FROM decisions WHERE dataset_id = ?",
                                (str(dataset_id),)).fetchone()
    return int(n) + int(undone)


def _parents(samples: pd.DataFrame, levels: tuple[str, ...]) -> list[dict[str, str]]:
    """For each adjacent pair (coarse, fine): fine value -> its most common coarse value in the raw labels."""
    out = []
    for coarse, fine in zip(levels, levels[1:]):
        pairs = samples[[coarse, fine]].dropna().astype(str)
        counts = pairs.groupby([fine, coarse]).size().reset_index(name="n")
        counts = counts.sort_values(["n", coarse], ascending=[False, True])
        out.append(dict(zip(counts.drop_duplicates(fine)[fine], counts.drop_duplicates(fine)[coarse])))
    return out


def _patch(ds: Dataset, active: pd.DataFrame) -> pd.DataFrame:
    """One row per sample with an exclude/relabel in effect: ``sample_id``, label columns (new values or NaN), ``excluded``."""
    active = active[active["action"].isin(CONFIRMING)]
    if len(active):
        active = active[active["sample_id"].astype(str).isin(ds.samples["sample_id"].astype(str))]
    cols = list(ds.label_columns)
    out = pd.DataFrame({"sample_id": active["sample_id"].astype(str).to_numpy()})
    for c in cols:
        out[c] = pd.Series([np.nan] * len(out), dtype=float if ds.task == "multilabel" else object)
    out["excluded"] = (active["action"] == "exclude").to_numpy()
    if out.empty:
        return out
    parents = _parents(ds.samples, tuple(cols)) if ds.task == "hierarchical" else []
    for i, (col, new, action) in enumerate(zip(active["label_column"], active["new_label"], active["action"])):
        if action != "relabel":
            continue
        if ds.task == "multilabel":
            pos = set(p for p in str(new or "").split(MULTILABEL_SEP) if p)
            for c in cols:
                out.at[i, c] = 1.0 if c in pos else 0.0
            continue
        col = col or cols[-1]
        out.at[i, col] = new
        if ds.task == "hierarchical" and col == cols[-1]:
            child = new
            for level in range(len(cols) - 2, -1, -1):
                parent = parents[level].get(child)
                if parent is None:
                    break
                out.at[i, cols[level]] = parent
                child = parent
    return out


def labels_override(workspace: Workspace, ds: Dataset | str) -> tuple[pd.DataFrame | None, int]:
    """The review patch in the format :func:`core.jobs.launch` / :func:`core.targets.apply_label_overrides` take.

    Returns
    -------
    (DataFrame or None, int) : one row per sample with an ``exclude`` or ``relabel`` in
        effect (``sample_id``, the label columns -- new value or NaN --, ``excluded`` bool),
        or None when no decision changes anything; and the :func:`decision_version`.
    """
    _check_workspace(workspace)
    ds = _dataset(workspace, ds)
    version = decision_version(workspace, ds.dataset_id)
    patch = _patch(ds, decisions(workspace, ds.dataset_id, active_only=True))
    return (patch if len(patch) else None), version


def effective_labels(workspace: Workspace, ds: Dataset | str) -> pd.DataFrame:
    """The samples table with the decisions applied: labels patched, plus ``excluded`` (bool) and ``decision``.

    Every sample is kept (excluded ones too, marked ``excluded=True``); ``decision`` is the
    action in effect (``keep`` / ``exclude`` / ``relabel``) or None. The dataset is not modified.
    """
    _check_workspace(workspace)
    ds = _dataset(workspace, ds)
    active = decisions(workspace, ds.dataset_id, active_only=True)
    patch = _patch(ds, active)
    out = apply_label_overrides(ds.samples, patch.drop(columns=["excluded"]) if len(patch) else None)
    out = out.copy() if out is ds.samples else out
    excluded = set(patch.loc[patch["excluded"], "sample_id"]) if len(patch) else set()
    sid = out["sample_id"].astype(str)
    out["excluded"] = sid.isin(excluded).to_numpy()
    decision = np.full(len(out), None, dtype=object)
    if len(active):  # the last decision of each sample (one hash lookup per sample, not a Python loop)
        last = active.assign(sample_id=active["sample_id"].astype(str)).drop_duplicates("sample_id", keep="last")
        where = pd.Index(last["sample_id"].to_numpy(dtype=object)).get_indexer(sid.to_numpy(dtype=object))
        decision[where >= 0] = last["action"].to_numpy(dtype=object)[where[where >= 0]]
    out["decision"] = decision
    return out


# ---------------------------------------------------------------------------
# Exports
# ---------------------------------------------------------------------------

def _iso(t: Any) -> str | None:
    if t is None or (isinstance(t, float) and np.isnan(t)):
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(t)))


def _csv_out(df: pd.DataFrame, path: str | os.PathLike | None) -> bytes | Path:
    data = df.to_csv(index=False).encode("utf-8")
    if path is None:
        return data
    return atomic_write_bytes(path, data)


def _label_cells(ds: Dataset, frame: pd.DataFrame) -> pd.DataFrame:
    """Label columns as they would be written in a table: multi-label 1 / 0 / empty (missing)."""
    out = pd.DataFrame(index=frame.index)
    for c in ds.label_columns + ds.schema.attribute_columns:
        if c not in frame.columns:
            continue
        if ds.task == "multilabel" or c in ds.schema.attribute_columns:
            v = pd.to_numeric(frame[c], errors="coerce")
            out[c] = v.map(lambda x: "" if pd.isna(x) else str(int(x)))
        else:
            out[c] = frame[c].map(lambda x: "" if _missing(x) else str(x))
    return out


def export_patch_csv(workspace: Workspace, ds: Dataset | str, path: str | os.PathLike | None = None) -> bytes | Path:
    """The label patch: one row per sample with a decision in effect (keep rows included, marked so).

    Columns: ``sample_id, path`` (as given in the dataset), ``action``, ``excluded``, then per
    label column ``old_<col>`` (raw) and ``<col>`` (effective), then ``detector, note, decided_at``
    (ISO, UTC) and ``decision_id``. Returns the CSV bytes, or writes ``path`` (atomically) and
    returns it.
    """
    _check_workspace(workspace)
    ds = _dataset(workspace, ds)
    active = decisions(workspace, ds.dataset_id, active_only=True)
    active = active[active["sample_id"].isin(set(ds.samples["sample_id"].astype(str)))].sort_values("decision_id")
    eff = effective_labels(workspace, ds).set_index("sample_id")
    raw = ds.samples.set_index("sample_id")
    sids = active["sample_id"].astype(str).tolist()
    out = pd.DataFrame({"sample_id": sids, "path": raw.loc[sids, "rel_path"].tolist() if sids else [],
                        "action": active["action"].tolist(), "excluded": (active["action"] == "exclude").tolist()})
    old = _label_cells(ds, raw.loc[sids]) if sids else pd.DataFrame()
    new = _label_cells(ds, eff.loc[sids]) if sids else pd.DataFrame()
    for c in ds.label_columns:
        out[f"old_{c}"] = old[c].tolist() if sids else []
        out[c] = new[c].tolist() if sids else []
    out["detector"] = active["detector"].tolist()
    out["note"] = active["note"].tolist()
    out["decided_at"] = [_iso(t) for t in active["created_at"]]
    out["decision_id"] = active["decision_id"].astype(int).tolist()
    return _csv_out(out, path)


def export_cleaned_csv(workspace: Workspace, ds: Dataset | str, path: str | os.PathLike | None = None, *,
                       include_excluded: bool = False) -> bytes | Path:
    """The full cleaned labels table: every sample (excluded ones left out unless ``include_excluded``).

    Columns: ``path`` (as given in the dataset, so the file loads back with the same image
    folder), ``sample_id``, the box columns for region crops, ``split``, the effective label
    columns (multi-label: 1 / 0 / empty for missing), the attribute columns, and ``excluded``
    when ``include_excluded``. Returns CSV bytes, or writes ``path`` and returns it.
    """
    _check_workspace(workspace)
    ds = _dataset(workspace, ds)
    eff = effective_labels(workspace, ds)
    if not include_excluded:
        eff = eff[~eff["excluded"]]
    out = pd.DataFrame({"path": eff["rel_path"], "sample_id": eff["sample_id"]})
    if eff[["x1", "y1", "x2", "y2"]].notna().any().any():
        for c in ("x1", "y1", "x2", "y2"):
            out[c] = eff[c]
    out["split"] = eff["split"]
    out = pd.concat([out, _label_cells(ds, eff)], axis=1)
    if include_excluded:
        out["excluded"] = eff["excluded"]
    return _csv_out(out.reset_index(drop=True), path)


# ---------------------------------------------------------------------------
# The flaggers' precision
# ---------------------------------------------------------------------------

def detector_precision(workspace: Workspace, dataset_id: str, *, issues: pd.DataFrame | None = None) -> pd.DataFrame:
    """How many flags of each detector the reviewer confirmed (exclude / relabel) or rejected (keep).

    Counts the decisions in effect that name a detector (a decision naming several,
    comma-separated, counts for each). ``issues`` (an audit's issues table, columns
    ``sample_id, issue``) adds ``flagged`` and ``pending`` (flagged samples without a decision
    in effect) and lists detectors nobody reviewed yet.

    Returns
    -------
    DataFrame with columns ``detector, confirmed, rejected, reviewed, precision`` (NaN when
    nothing was reviewed) [+ ``flagged, pending``], sorted by detector.
    """
    active = decisions(workspace, dataset_id, active_only=True)
    rows: dict[str, dict[str, int]] = {}
    for det, action in zip(active["detector"], active["action"]):
        if not det:
            continue
        for d in str(det).split(","):
            d = d.strip()
            if not d:
                continue
            r = rows.setdefault(d, {"confirmed": 0, "rejected": 0})
            r["confirmed" if action in CONFIRMING else "rejected"] += 1
    if issues is not None and len(issues):
        for d in issues["issue"].astype(str).unique():
            rows.setdefault(d, {"confirmed": 0, "rejected": 0})
    df = pd.DataFrame([{"detector": d, **r} for d, r in rows.items()],
                      columns=["detector", "confirmed", "rejected"])
    df["reviewed"] = df["confirmed"] + df["rejected"]
    df["precision"] = np.where(df["reviewed"] > 0, df["confirmed"] / df["reviewed"].clip(lower=1), np.nan)
    if issues is not None:
        decided = set(active["sample_id"].astype(str))
        iss = issues.dropna(subset=["sample_id"]) if len(issues) else issues
        flagged = iss.groupby("issue")["sample_id"].nunique() if len(iss) else pd.Series(dtype=int)
        pending = (iss[~iss["sample_id"].astype(str).isin(decided)].groupby("issue")["sample_id"].nunique()
                   if len(iss) else pd.Series(dtype=int))
        df["flagged"] = df["detector"].map(flagged).fillna(0).astype(int)
        df["pending"] = df["detector"].map(pending).fillna(0).astype(int)
    return df.sort_values("detector").reset_index(drop=True)


def read_patch_csv(data: bytes | str | os.PathLike) -> pd.DataFrame:
    """Read a patch written by :func:`export_patch_csv` (bytes or a path) as a DataFrame of str cells."""
    src = io.BytesIO(data) if isinstance(data, bytes) else data
    return pd.read_csv(src, dtype=str, keep_default_na=False)
