"""Targets: the samples table's labels -> the arrays a model learns from, for every label shape.

Effective labels (raw labels + the review patch: :func:`apply_label_overrides`), training
targets and the labels.json object (:func:`build_targets`), missing multi-label entries
(:func:`impute_labels`), paths through a hierarchy (:func:`leaf_ancestors`,
:func:`hierarchy_probabilities`, :func:`hierarchy_path`) and the validation hold-out
(:func:`carve_validation`). numpy, pandas and scikit-learn only: training, review,
embeddings and predict all build on it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd


TASKS = ("multiclass", "binary", "multilabel", "hierarchical")
IMPUTATIONS = ("mask", "mean", "matrix_factorization")
#: Share of the train split held out for validation when a dataset has no val split.
VAL_FRACTION = 0.15

def impute_labels(Y: np.ndarray, *, method: str = "mask", rank: int | None = None, l2: float = 0.1,
                  iterations: int = 30, seed: int = 0) -> np.ndarray:
    """Fill missing entries of a multi-label matrix (the fourth seed's comparison).

    Parameters
    ----------
    Y : ndarray of shape (N, K)
        1.0 / 0.0 for known labels, NaN for missing.
    method : {"mask", "mean", "matrix_factorization"}
        ``"mask"``: nothing is filled (the masked loss ignores NaN entries).
        ``"mean"``: each missing entry gets its label's mean over the known entries (a
        soft target); a label with no known entry stays NaN.
        ``"matrix_factorization"``: low-rank completion ``Y ~ mu + U V^T`` fitted by
        alternating least squares on the known entries with L2 penalty ``l2``; missing
        entries get the reconstruction clipped to [0, 1].
    rank : int, optional
        Rank of ``U V^T`` (default ``max(1, K // 2)``).
    l2 : float
        Ridge penalty (per known entry) on U and V.
    iterations : int
        Alternating least-squares sweeps.
    seed : int
        Seed of the initial factors.

    Returns
    -------
    ndarray of shape (N, K), float
        A new array; known entries are unchanged.

    Examples
    --------
    >>> impute_labels(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), method="mean")[0, 1]
    1.0
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y must have shape (N, K); received shape {Y.shape}")
    if method not in IMPUTATIONS:
        raise ValueError(f"method must be one of {list(IMPUTATIONS)}; received method={method!r}")
    known = ~np.isnan(Y)
    bad = Y[known & (Y != 0) & (Y != 1)]
    if bad.size:
        raise ValueError(f"Y must hold 1, 0 or NaN; received values {sorted(set(bad.tolist()))[:5]}")
    out = Y.copy()
    if method == "mask" or known.all():
        return out
    counts = known.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mu = np.where(counts > 0, np.nansum(Y, axis=0) / np.maximum(counts, 1), np.nan)
    if method == "mean":
        return np.where(known, Y, mu[None, :])
    n, k = Y.shape
    r = rank if rank is not None else max(1, k // 2)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= k:
        raise ValueError(f"rank must be an int in 1..{k}; received rank={rank!r}")
    mu0 = np.nan_to_num(mu, nan=0.5)
    R = np.where(known, Y - mu0[None, :], 0.0)
    M = known.astype(float)
    rng = np.random.default_rng(seed)
    U = rng.normal(scale=0.1, size=(n, r))
    V = rng.normal(scale=0.1, size=(k, r))
    eye = np.eye(r)

    def solve(F, Mt, Rt):
        # For each row i: (sum_j m_ij f_j f_j^T + l2 * n_i I) x_i = sum_j m_ij r_ij f_j
        A = np.einsum("ij,jr,js->irs", Mt, F, F) + l2 * np.maximum(Mt.sum(axis=1), 1.0)[:, None, None] * eye
        b = (Mt * Rt) @ F
        return np.linalg.solve(A, b[..., None])[..., 0]

    for _ in range(int(iterations)):
        U = solve(V, M, R)
        V = solve(U, M.T, R.T)
    recon = np.clip(mu0[None, :] + U @ V.T, 0.0, 1.0)
    out = np.where(known, Y, recon)
    out[:, counts == 0] = np.nan  # no information at all: leave it to the mask
    return out


@dataclass(frozen=True)
class Targets:
    """What the model learns, for the N rows of ``samples`` (all splits, row order).

    ``task``; ``names``: the K output names (classes, or labels for multi-label; the
    leaf classes for hierarchical); ``y``: int (N,) class index (-1 unknown) or float
    (N, K) with NaN missing; ``labels``: the labels.json object; ``samples``: the rows
    kept (excluded classes and unknown training labels dropped), with a positional
    index; ``levels`` / ``level_y`` / ``level_names``: hierarchical per-level int targets;
    ``dropped``: why rows were left out, ``{reason: count}``; ``warnings``: messages.
    """

    task: str
    names: tuple[str, ...]
    y: np.ndarray
    labels: dict[str, Any]
    samples: pd.DataFrame
    levels: tuple[str, ...] = ()
    level_y: dict[str, np.ndarray] = field(default_factory=dict)
    level_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) \
        or v is pd.NA or v is pd.NaT


def _label_strings(col: pd.Series) -> np.ndarray:
    return np.array(["" if _is_missing(v) else str(v) for v in col.tolist()], dtype=object)


def apply_label_overrides(samples: pd.DataFrame, overrides: pd.DataFrame | None) -> pd.DataFrame:
    """Effective labels = raw labels + a patch (the review decisions of the Clean page).

    Parameters
    ----------
    samples : DataFrame
        The samples table (``sample_id`` + label columns).
    overrides : DataFrame or None
        One row per patched sample: ``sample_id``, optionally ``excluded`` (bool; True
        drops the sample), and any label columns whose non-missing values replace the
        raw ones.

    Returns
    -------
    DataFrame : a new table (the input is not modified).
    """
    if overrides is None or len(overrides) == 0:
        return samples
    if "sample_id" not in overrides.columns:
        raise ValueError(f"labels_override needs a 'sample_id' column; received columns {list(overrides.columns)}")
    unknown = sorted(set(overrides["sample_id"].astype(str)) - set(samples["sample_id"].astype(str)))
    if unknown:
        raise ValueError(f"labels_override names {len(unknown)} sample_id(s) not in the dataset, e.g. {unknown[:3]}")
    out = samples.copy()
    pos = pd.Series(np.arange(len(out)), index=out["sample_id"].astype(str))
    rows = pos.loc[overrides["sample_id"].astype(str)].to_numpy()
    for col in overrides.columns:
        if col in ("sample_id", "excluded") or col not in out.columns:
            continue
        vals = overrides[col].to_numpy(dtype=object)
        keep = np.array([not _is_missing(v) for v in vals])
        if keep.any():
            col_pos = out.columns.get_loc(col)
            if pd.api.types.is_float_dtype(out[col].dtype):
                out.iloc[rows[keep], col_pos] = pd.to_numeric(pd.Series(vals[keep]), errors="coerce").to_numpy()
            else:
                out[col] = out[col].astype(object)
                out.iloc[rows[keep], col_pos] = vals[keep]
    if "excluded" in overrides.columns:
        excl = overrides["excluded"].fillna(False).astype(bool).to_numpy()
        drop = set(rows[excl].tolist())
        out = out.iloc[[i for i in range(len(out)) if i not in drop]]
    return out.reset_index(drop=True)


def _require_columns(samples: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in samples.columns]
    if missing:
        raise ValueError(f"{what}: the samples table has no column(s) {missing}; columns: {list(samples.columns)}")


def build_targets(samples: pd.DataFrame, schema, *, task: str | None = None,
                  label_columns: Sequence[str] | None = None, exclude_classes: Sequence[str] = (),
                  positive_class: str | None = None) -> Targets:
    """Turn the samples table's label columns into training targets and a labels.json.

    Parameters
    ----------
    samples : DataFrame
        The samples table (see :mod:`core.datasets`) with a ``split`` column.
    schema : LabelSchema
        What the label columns mean.
    task : str, optional
        Defaults to ``schema.task``. ``"binary"`` on a column with more than two classes
        means ``positive_class`` vs ``not_<positive_class>``.
    positive_class : str, optional
        Binary: the positive class (default: the schema's).
    label_columns : sequence of str, optional
        Subset of ``schema.label_columns`` (multi-label: labels; hierarchical: levels).
    exclude_classes : sequence of str
        Class names whose samples are dropped (any level for hierarchical).

    Returns
    -------
    Targets
    """
    task = task or schema.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}; received task={task!r}")
    cols = tuple(label_columns) if label_columns else tuple(schema.label_columns)
    unknown = [c for c in cols if c not in schema.label_columns and c not in samples.columns]
    if unknown:
        raise ValueError(f"label_columns {unknown} are not label columns of this dataset "
                         f"(available: {list(schema.label_columns)})")
    _require_columns(samples, ("sample_id", "path", "split", *cols), "build_targets")
    samples = samples.reset_index(drop=True)
    dropped: dict[str, int] = {}
    warnings: list[str] = []
    excl = {str(c) for c in exclude_classes}

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal samples
        if mask.any():
            dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
            samples = samples.loc[~mask].reset_index(drop=True)

    split = samples["split"].astype(str).to_numpy()

    if task == "multilabel":
        if excl:
            raise ValueError("exclude_classes applies to single-label and hierarchical tasks; for multi-label "
                             "choose the labels to train on with label_columns")
        Y = np.column_stack([pd.to_numeric(samples[c], errors="coerce").to_numpy(dtype=float) for c in cols]) \
            if len(samples) else np.zeros((0, len(cols)))
        bad = ~np.isnan(Y) & (Y != 0) & (Y != 1)
        if bad.any():
            i, j = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(f"multi-label column {cols[j]!r}, sample {samples['sample_id'].iloc[i]!r}: expected "
                             f"1, 0 or missing; found {samples[cols[j]].iloc[i]!r}")
        none_known = np.isnan(Y).all(axis=1) & (split == "train")
        drop(none_known, "no known label (train)")
        Y = Y[~none_known]
        for j, c in enumerate(cols):
            tr = Y[samples["split"].to_numpy() == "train", j]
            if np.all(np.isnan(tr)):
                warnings.append(f"label {c!r} has no known value in the train split: the masked loss ignores it")
        labels = {"task": "multilabel", "labels": list(cols)}
        return Targets("multilabel", tuple(cols), Y, labels, samples, dropped=dropped, warnings=tuple(warnings))

    if task in ("multiclass", "binary"):
        if len(cols) != 1:
            raise ValueError(f"a {task} task trains on one label column; received label_columns={list(cols)}")
        col = cols[0]
        y_str = _label_strings(samples[col])
        if excl:
            drop(np.isin(y_str, list(excl)), "excluded class")
            y_str = _label_strings(samples[col])
        split = samples["split"].astype(str).to_numpy()
        drop((y_str == "") & (split != "test"), "missing label")
        y_str = _label_strings(samples[col])
        split = samples["split"].astype(str).to_numpy()
        if task == "binary":
            pos = positive_class or schema.positive_class
            present = sorted(set(y_str[y_str != ""].tolist()))
            if pos is None:
                if len(present) != 2:
                    raise ValueError(f"a binary task needs a positive class when column {col!r} has "
                                     f"{len(present)} classes ({present[:10]})")
                pos = present[1]
            if str(pos) not in present:
                raise ValueError(f"positive_class {pos!r} does not occur in column {col!r} (classes: {present[:10]})")
            pos = str(pos)
            others = [c for c in present if c != pos]
            neg = others[0] if len(others) == 1 else f"not_{pos}"
            if len(others) > 1:
                warnings.append(f"binary task: {len(others)} classes other than {pos!r} merged into {neg!r}")
            y_str = np.array(["" if v == "" else (pos if v == pos else neg) for v in y_str], dtype=object)
            classes = [neg, pos]
            labels = {"task": "binary", "classes": classes, "positive_class": pos}
        else:
            train_classes = sorted(set(y_str[(split == "train") & (y_str != "")].tolist()))
            if len(train_classes) < 2:
                raise ValueError(f"column {col!r} has {len(train_classes)} class(es) in the train split "
                                 f"({train_classes}); a classifier needs at least 2")
            unseen = (y_str != "") & ~np.isin(y_str, train_classes)
            if unseen.any():
                warnings.append(f"{int(unseen.sum())} val/test samples have classes absent from the train split "
                                f"({sorted(set(y_str[unseen].tolist()))[:5]}); they are left out")
                drop(unseen, "class absent from train")
                y_str = y_str[~unseen]
            classes = train_classes
            labels = {"task": "multiclass", "classes": classes, "positive_class": None}
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(v, -1) for v in y_str], dtype=np.int64)
        return Targets(task, tuple(classes), y, labels, samples, dropped=dropped, warnings=tuple(warnings))

    # hierarchical
    if len(cols) < 2:
        raise ValueError(f"a hierarchical task needs at least 2 level columns (coarse -> fine); "
                         f"received label_columns={list(cols)}")
    strs = {c: _label_strings(samples[c]) for c in cols}
    if excl:
        m = np.zeros(len(samples), dtype=bool)
        for c in cols:
            m |= np.isin(strs[c], list(excl))
        drop(m, "excluded class")
        strs = {c: _label_strings(samples[c]) for c in cols}
    split = samples["split"].astype(str).to_numpy()
    leaf = cols[-1]
    drop((strs[leaf] == "") & (split != "test"), "missing leaf label")
    strs = {c: _label_strings(samples[c]) for c in cols}
    split = samples["split"].astype(str).to_numpy()
    train_leaves = sorted(set(strs[leaf][(split == "train") & (strs[leaf] != "")].tolist()))
    if len(train_leaves) < 2:
        raise ValueError(f"level {leaf!r} has {len(train_leaves)} class(es) in the train split; need at least 2")
    unseen = (strs[leaf] != "") & ~np.isin(strs[leaf], train_leaves)
    if unseen.any():
        warnings.append(f"{int(unseen.sum())} val/test samples have leaf classes absent from the train split; "
                        "they are left out")
        drop(unseen, "class absent from train")
        strs = {c: _label_strings(samples[c]) for c in cols}
    # parents: each child's most frequent parent (conflicts are the audit's hierarchy_conflict)
    parents: dict[str, dict[str, str]] = {}
    for upper, lower in zip(cols[:-1], cols[1:]):
        pairs = Counter((c, p) for c, p in zip(strs[lower], strs[upper]) if c and p)
        best: dict[str, tuple[int, str]] = {}
        for (c, p), n in pairs.items():
            if c not in best or (n, p) > best[c]:
                best[c] = (n, p)
        conflicts = sorted({c for (c, p) in pairs if p != best[c][1]})
        if conflicts:
            warnings.append(f"{len(conflicts)} {lower!r} class(es) appear under more than one {upper!r} "
                            f"(e.g. {conflicts[:3]}); each is placed under its most frequent parent")
        parents[lower] = {c: p for c, (n, p) in best.items()}
    # the path of every leaf, through the parents maps
    level_classes: dict[str, list[str]] = {leaf: train_leaves}
    for i in range(len(cols) - 2, -1, -1):
        child, up = cols[i + 1], cols[i]
        missing = [c for c in level_classes[child] if c not in parents[child]]
        if missing:
            raise ValueError(f"level {child!r} classes {missing[:5]} never appear with a {up!r} label")
        level_classes[up] = sorted({parents[child][c] for c in level_classes[child]})
    parents = {lv: {c: parents[lv][c] for c in level_classes[lv]} for lv in cols[1:]}
    labels = {"task": "hierarchical", "levels": list(cols),
              "level_classes": {lv: level_classes[lv] for lv in cols}, "parents": parents}
    leaf_index = {c: i for i, c in enumerate(train_leaves)}
    y = np.array([leaf_index.get(v, -1) for v in strs[leaf]], dtype=np.int64)
    level_y, level_names = {}, {}
    for lv in cols:
        idx = {c: i for i, c in enumerate(level_classes[lv])}
        level_y[lv] = np.array([idx.get(v, -1) for v in strs[lv]], dtype=np.int64)
        level_names[lv] = tuple(level_classes[lv])
    return Targets("hierarchical", tuple(train_leaves), y, labels, samples, levels=tuple(cols),
                   level_y=level_y, level_names=level_names, dropped=dropped, warnings=tuple(warnings))


def leaf_ancestors(labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """For a hierarchical labels.json: ``{level: int (K_leaf,)}`` the index of each leaf's ancestor."""
    levels = labels["levels"]
    leaves = labels["level_classes"][levels[-1]]
    out = {levels[-1]: np.arange(len(leaves))}
    current = list(leaves)
    for i in range(len(levels) - 2, -1, -1):
        child = levels[i + 1]
        current = [labels["parents"][child][c] for c in current]
        idx = {c: j for j, c in enumerate(labels["level_classes"][levels[i]])}
        out[levels[i]] = np.array([idx[c] for c in current], dtype=np.int64)
    return out


def hierarchy_probabilities(leaf_probs: np.ndarray, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-level probabilities from leaf probabilities: each class gets the sum of its leaves.

    Parameters
    ----------
    leaf_probs : ndarray of shape (N, K_leaf)
        The model's output (columns in ``labels["level_classes"][leaf level]`` order).
    labels : dict
        A hierarchical labels.json object.

    Returns
    -------
    dict : ``{level: ndarray of shape (N, K_level)}``, coarse -> fine.
    """
    leaf_probs = np.asarray(leaf_probs, dtype=float)
    out = {}
    for lv, anc in leaf_ancestors(labels).items():
        k = len(labels["level_classes"][lv])
        m = np.zeros((leaf_probs.shape[1], k))
        m[np.arange(leaf_probs.shape[1]), anc] = 1.0
        out[lv] = leaf_probs @ m
    return {lv: out[lv] for lv in labels["levels"]}


def hierarchy_path(leaf_probs: np.ndarray, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The predicted path: the most probable leaf and its ancestors, ``{level: int (N,)}``."""
    best = np.argmax(np.asarray(leaf_probs), axis=1)
    return {lv: anc[best] for lv, anc in leaf_ancestors(labels).items() if lv in labels["levels"]}


def carve_validation(train_idx: np.ndarray, y: np.ndarray | None, *, fraction: float | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the train rows as a validation set (stratified on ``y`` when possible).

    Parameters
    ----------
    train_idx : ndarray of shape (M,), int
        Row indices of the train split.
    y : ndarray of shape (N,), int, or None
        Class index per row (all rows); ``None``: a plain random hold-out.
    fraction : float, optional
        Default :data:`VAL_FRACTION`.
    seed : int
        Fixed by default, so every run of a dataset validates on the same rows.

    Returns
    -------
    (train_idx, val_idx) : two sorted int arrays partitioning ``train_idx``.
    """
    from sklearn.model_selection import train_test_split

    fraction = VAL_FRACTION if fraction is None else fraction
    train_idx = np.asarray(train_idx, dtype=np.int64)
    strat = None
    if y is not None:
        labels = np.asarray(y)[train_idx]
        counts = Counter(labels.tolist())
        n_val = int(math.ceil(fraction * len(train_idx)))
        if min(counts.values()) >= 2 and n_val >= len(counts):
            strat = labels
    tr, va = train_test_split(train_idx, test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)
