"""Label detectors: ``label_issue`` by confident learning, and the checks of the label table itself.

``label_issue`` runs cleanlab on out-of-sample probabilities (the quick classifier's out-of-fold
ones on image features plus optional ImageNet features, or a run's held-out predictions), for
single-label, hierarchical and multi-label data; ``hierarchy_conflict``, ``missing_label`` and
``rare_class`` read only the labels.
"""

from __future__ import annotations

import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.audit.config import AuditConfig, _row, label_filter
from core.audit.image_stats import _Stats
from core.workspace import Workspace

# ---------------------------------------------------------------------------
# Label issues
# ---------------------------------------------------------------------------

def _label_features(stats: _Stats, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Cheap per-image features for the quick classifier: gradients (HOG), layout, colours, geometry."""
    w = np.maximum(widths, 1).astype(np.float32)
    h = np.maximum(heights, 1).astype(np.float32)
    geo = np.stack([np.log(w), np.log(h), np.log(w / h)], axis=1)
    g = stats.gray16
    g = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + 8.0)
    return np.concatenate([stats.hog, g, stats.color, stats.hsv, geo], axis=1)


#: Width the quick label classifier's features are reduced to (principal components).
_LABEL_DIMS = 256
#: Image + ImageNet features are used whole up to this many values (rows x columns), reduced above.
_LABEL_REDUCE_ELEMENTS = 20_000_000


def _imagenet_features(ds: Any, workspace: Workspace, samples: pd.DataFrame, mode: str, notes: list[str],
                       progress: Callable[[int, int], None] | None = None, *, who: str = "label_issue",
                       choice: str = "label_issue_features=image+imagenet", engine: str = "local"
                       ) -> np.ndarray | None:
    """A pretrained ImageNet backbone's pooled features (N, D) aligned to ``samples`` (NaN rows: none), or None.

    The backbone and its per-dataset cache are the Embeddings page's
    (:func:`core.embeddings.backbone_embeddings`), so the two share the work. ``mode`` is
    :attr:`AuditConfig.label_issue_features` or :attr:`AuditConfig.near_duplicate_features`
    (``who`` names the detector in notes, ``choice`` the setting that allows a download);
    when the features cannot be had a note says why and the detector goes on without them.
    """
    from core import embeddings, engines, models

    if mode in ("image", "pixels"):
        return None
    alone = "image features only" if who == "label_issue" else "pixels only"
    bb = embeddings.BACKBONE
    if mode == "auto" and not models.weights_cached(bb["backbone"], alpha=bb["alpha"], image_size=bb["image_size"]):
        notes.append(f"{who}: {alone}. Pretrained ImageNet features (far more precise on photos) "
                     f"need the {bb['backbone']} weights in Keras' cache ({models.keras_cache_dir()}): choose "
                     f"ImageNet features ({choice}) to let Keras download them.")
        return None
    try:
        emb = embeddings.backbone_embeddings(workspace, ds.dataset_id, progress=progress, engine=engine)
    except models.WeightsUnavailable as exc:
        notes.append(f"{who}: {alone}: {exc}")
        return None
    except engines.EngineError:
        raise  # the engine the user asked for is missing: say so, do not quietly audit without the features
    except Exception as exc:  # noqa: BLE001 - optional features must not sink the whole audit
        notes.append(f"{who}: {alone}: the ImageNet features failed ({type(exc).__name__}: {exc})")
        return None
    at = pd.Index(emb.sample_ids.astype(str)).get_indexer(samples["sample_id"].astype(str))  # -1: no vector
    out = np.full((len(samples), emb.vectors.shape[1]), np.nan, np.float32)
    out[at >= 0] = emb.vectors[at[at >= 0]]
    return out


def _reduced(X: np.ndarray) -> np.ndarray:
    """Features wider than :data:`_LABEL_DIMS`: standardized (in place) and projected on their top principal components."""
    if X.shape[1] <= _LABEL_DIMS or len(X) <= _LABEL_DIMS:
        return X
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler(copy=False).fit_transform(np.asarray(X, dtype=np.float32))  # in place: X is ours
    return PCA(n_components=_LABEL_DIMS, svd_solver="covariance_eigh").fit_transform(X)


def _oof_probs(X: np.ndarray, y: np.ndarray, *, folds: int, seed: int, reduce: bool = True) -> np.ndarray:
    """Out-of-fold class probabilities (N, K) of a standardized logistic regression.

    With ``reduce``, features wider than :data:`_LABEL_DIMS` are first standardized and
    projected on their top principal components (unsupervised, so fitted on all rows
    without leaking labels): the regression's working copies then take a quarter of the
    memory and time. ``X`` may be overwritten (the caller builds it for this call).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if reduce:
        X = _reduced(X)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=200))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cross_val_predict(clf, X, y, cv=cv, method="predict_proba")


def _confident_learning(y: np.ndarray, probs: np.ndarray, cfg: AuditConfig, *, imagenet: bool) -> np.ndarray:
    """Indices (into ``y``) of suspected label errors, most suspect first (cleanlab).

    ``imagenet``: the probabilities come from the quick classifier on ImageNet features (what ``auto`` reads).
    """
    from cleanlab.filter import find_label_issues

    probs = np.clip(probs, 1e-6, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_label_issues(y, probs, filter_by=label_filter(cfg, imagenet=imagenet),
                                  return_indices_ranked_by="self_confidence", n_jobs=1)
    cap = int(math.ceil(cfg.label_issue_max_fraction * len(y)))
    return np.asarray(found[:cap], dtype=np.int64)


def _run_probabilities(run_dir: str | os.PathLike, samples: pd.DataFrame, label_col: str
                       ) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """A run's out-of-sample (val / test) probabilities aligned to ``samples``.

    Returns (row indices into samples, probs (n, K), class names, run id).
    """
    from core import runs

    rd = runs.RunDir(Path(run_dir).expanduser())
    pred = runs.read_predictions(rd)
    if pred.task == "multilabel":
        raise ValueError(f"run_dir={str(rd.path)!r} is a multi-label run; label_issue from a run needs a "
                         "single-label (multiclass, binary or hierarchical) run")
    classes = [str(c) for c in pred.classes]
    probs = np.asarray(pred.probs, dtype=np.float64)
    held = np.isin(np.asarray(pred.splits).astype(str), ["val", "test"])
    pos = {s: i for i, s in enumerate(samples["sample_id"].astype(str))}
    rows, keep = [], []
    for r, (sid, h) in enumerate(zip(np.asarray(pred.sample_ids).astype(str), held)):
        if h and sid in pos:
            rows.append(pos[sid])
            keep.append(r)
    if not rows:
        raise ValueError(f"run_dir={str(rd.path)!r}: none of its validation / test predictions matches a sample "
                         "of this dataset (was it trained on another dataset?)")
    return np.asarray(rows, np.int64), probs[np.asarray(keep)], classes, rd.run_id


def _label_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray, skip: np.ndarray,
                  cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str],
                  notes: list[str], imagenet: np.ndarray | None = None
                  ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue rows, the source, per-row probabilities (for other detectors) and the class list.

    ``imagenet``: pretrained features (N, D) aligned to ``samples`` (see :func:`_imagenet_features`),
    appended to the image features of the quick classifier.
    """
    if schema.task == "multilabel":
        return _multilabel_issues(samples, schema, stats, ok, skip, cfg, run_dir, labels_shown, rels, notes, imagenet)
    if run_dir is None and schema.task == "hierarchical" and len(schema.label_columns) > 1:
        return _hierarchy_label_issues(samples, schema, stats, ok, skip, cfg, labels_shown, rels, notes, imagenet)
    return _single_label_issues(samples, schema, schema.label_columns[-1], stats, ok, skip, cfg, run_dir,
                                labels_shown, rels, notes, imagenet)


def _single_label_issues(samples: pd.DataFrame, schema: Any, col: str, stats: _Stats | None, ok: np.ndarray,
                         skip: np.ndarray, cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str],
                         notes: list[str], imagenet: np.ndarray | None
                         ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue rows for one label column (a run's held-out probabilities, or the quick classifier's)."""
    sids = samples["sample_id"].astype(str).tolist()
    if run_dir is not None:
        rows_idx, probs, classes, source = _run_probabilities(run_dir, samples, col)
        # the run may predict another level of a hierarchy: use the label column its classes match best
        cls = set(classes)
        col = max(reversed(schema.label_columns), key=lambda c: samples[c].astype(str).isin(cls).mean())
        given = samples[col].astype(str).to_numpy()
        cidx = {c: k for k, c in enumerate(classes)}
        sel = np.array([given[i] in cidx and ok[i] for i in rows_idx], dtype=bool)
        rows_idx, probs = rows_idx[sel], probs[sel]
        y = np.array([cidx[given[i]] for i in rows_idx], dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            notes.append("label_issue: the run's held-out predictions cover fewer than 2 classes.")
            return [], source, {}, classes
    else:
        source = "features"
        given = samples[col].astype(str).to_numpy()
        counts = Counter(given[ok & ~skip])
        usable = sorted(c for c, n in counts.items() if n >= cfg.label_issue_folds)
        if len(usable) < 2:
            notes.append(f"label_issue: {col}: needs 2 classes with >= {cfg.label_issue_folds} samples each.")
            return [], source, {}, usable
        classes = usable
        cidx = {c: k for k, c in enumerate(classes)}
        keep = ok & ~skip & np.isin(given, classes)
        if imagenet is not None:
            keep &= ~np.isnan(imagenet).any(axis=1)
        rows_idx = np.flatnonzero(keep)
        y = np.array([cidx[given[i]] for i in rows_idx], dtype=np.int64)
        X = _label_features(stats, samples["width"].to_numpy(), samples["height"].to_numpy())[rows_idx]
        reduce = True
        if imagenet is not None:
            source = "features+imagenet"
            X = np.concatenate([X, imagenet[rows_idx]], axis=1)
            reduce = X.size > _LABEL_REDUCE_ELEMENTS  # pretrained features lose precision when compressed
        probs = _oof_probs(X, y, folds=cfg.label_issue_folds, seed=cfg.seed, reduce=reduce)
    found = _confident_learning(y, probs, cfg, imagenet=source == "features+imagenet")
    out = []
    for r in found:
        i = int(rows_idx[r])
        p = probs[r]
        order = np.argsort(-p)
        best = int(order[0]) if order[0] != y[r] else int(order[1])
        detail = (f"the {'run' if run_dir is not None else 'out-of-fold classifier'} gives the label "
                  f"{classes[y[r]]!r} p={p[y[r]]:.2f}; {classes[best]!r} p={p[best]:.2f}")
        out.append(_row(sids[i], rels[i], "label_issue", 1.0 - float(p[y[r]]), "relabel", detail,
                        label=labels_shown[i], suggested_label=classes[best], label_column=col))
    per_row = {int(rows_idx[r]): probs[r] for r in range(len(rows_idx))}
    return out, source, per_row, classes


def _hierarchy_label_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray,
                            skip: np.ndarray, cfg: AuditConfig, labels_shown: list[str], rels: list[str],
                            notes: list[str], imagenet: np.ndarray | None
                            ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue on a hierarchy's finest level, each flag saying which levels are wrong.

    The suggested leaf either lies under the sample's own parent ("wrong species, right family")
    or moves it: the flag then names every coarser level that would change with it (the
    parents the suggested leaf has in the data). Classifiers on the coarser levels themselves
    add flags the leaf one does not confirm (on the demo, with the test suite's settings, they
    brought precision from above 0.7 down to 0.65), so they do not run.
    """
    cols = list(schema.label_columns)
    rows, source, per_row, classes = _single_label_issues(samples, schema, cols[-1], stats, ok, skip, cfg, None,
                                                          labels_shown, rels, notes, imagenet)
    table = samples[cols].astype(str)
    parents = {c: table.groupby(cols[-1])[c].agg(lambda v: v.value_counts().index[0]).to_dict() for c in cols[:-1]}
    pos = pd.Series(np.arange(len(samples)), index=samples["sample_id"].astype(str))
    for r in rows:
        here = table.iloc[int(pos[r["sample_id"]])]
        moved = [f"{c} {here[c]!r} -> {parents[c].get(r['suggested_label'], '?')!r}" for c in cols[:-1]
                 if parents[c].get(r["suggested_label"]) != here[c]]
        r["detail"] += (f"; wrong {cols[-1]}, right {cols[-2]} (the suggestion is under {cols[-2]} {here[cols[-2]]!r} too)"
                        if not moved else "; its " + ", ".join(moved) + " would change too")
    return rows, source, per_row, classes


def _multilabel_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray, skip: np.ndarray,
                       cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str], notes: list[str],
                       imagenet: np.ndarray | None) -> tuple[list[dict[str, Any]], str, dict, list[str]]:
    """label_issue for multi-label data: cleanlab's ``multilabel_classification`` on per-label probabilities.

    The probabilities are a run's held-out (val / test) predictions, or out-of-fold ones of one
    logistic regression per label on the quick classifier's features (plus ImageNet features when
    given). A sample is judged on the labels it has (a missing value, NaN, is never taken for 0:
    it counts as an agreeing 0, so it adds no disagreement, and is never the one flagged);
    its flag names the label most at odds with the probabilities (``label_column``) and suggests
    the label set with that one flipped (positives joined by ``|``, as the review records it).
    """
    from cleanlab.multilabel_classification.filter import find_label_issues

    cols = [str(c) for c in schema.label_columns]
    Y = samples[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    P = np.full(Y.shape, np.nan)
    if run_dir is not None:
        from core import runs

        rd = runs.RunDir(Path(run_dir).expanduser())
        pred = runs.read_predictions(rd)
        if pred.task != "multilabel" or not set(cols) <= {str(c) for c in pred.classes}:
            raise ValueError(f"run_dir={str(rd.path)!r} does not predict this dataset's labels {cols}; label_issue on "
                             "multi-label data needs a multi-label run of it")
        held = np.isin(np.asarray(pred.splits).astype(str), ["val", "test"])
        at = pd.Index(samples["sample_id"].astype(str)).get_indexer(np.asarray(pred.sample_ids).astype(str)[held])
        order = [[str(c) for c in pred.classes].index(c) for c in cols]
        P[at[at >= 0]] = np.asarray(pred.probs, np.float64)[held][at >= 0][:, order]
        source, who = rd.run_id, "the run"
    else:
        keep = ok & ~skip
        if imagenet is not None:
            keep &= ~np.isnan(imagenet).any(axis=1)
        rows_idx = np.flatnonzero(keep)
        X = _label_features(stats, samples["width"].to_numpy(), samples["height"].to_numpy())[rows_idx]
        source = "features"
        if imagenet is not None:
            source = "features+imagenet"
            X = np.concatenate([X, imagenet[rows_idx]], axis=1)
        if X.size > _LABEL_REDUCE_ELEMENTS or imagenet is None:
            X = _reduced(X)
        thin = []
        for k, col in enumerate(cols):
            known = np.isfinite(Y[rows_idx, k])
            yk = Y[rows_idx[known], k].astype(np.int64)
            if len(yk) == 0 or np.bincount(yk, minlength=2).min() < cfg.label_issue_folds:
                thin.append(col)
                continue
            P[rows_idx[known], k] = _oof_probs(X[known], yk, folds=cfg.label_issue_folds, seed=cfg.seed,
                                               reduce=False)[:, 1]
        if thin:
            notes.append(f"label_issue: labels {thin} were not checked: each needs >= {cfg.label_issue_folds} "
                         "positive and negative samples.")
        who = "the out-of-fold classifier"
    use = [k for k in range(len(cols)) if np.isfinite(P[:, k]).any()]
    if len(use) < 2:
        notes.append("label_issue: multi-label checks need probabilities for at least 2 labels.")
        return [], source, {}, cols
    # every sample with a probability for each label it has is judged on those labels: an unknown entry
    # counts as a confident, agreeing 0 (y 0, p ~0), so it adds no disagreement
    y_all, p_all = Y[:, use], P[:, use]
    known = np.isfinite(y_all)
    judged = np.flatnonzero(known.any(axis=1) & (np.isfinite(p_all) | ~known).all(axis=1))
    if len(judged) < max(10, cfg.label_issue_folds):
        notes.append("label_issue: too few samples with a probability for each label.")
        return [], source, {}, cols
    partly = int((~known[judged]).any(axis=1).sum())
    if partly:
        notes.append(f"label_issue: {partly} sample(s) with a missing label value were judged on the labels they have.")
    k_use = known[judged]
    p_use = np.clip(np.where(k_use, p_all[judged], 0.0), 1e-6, 1 - 1e-6)
    y_use = np.where(k_use, y_all[judged], 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_label_issues([np.flatnonzero(r == 1).tolist() for r in y_use], p_use,
                                  filter_by=label_filter(cfg, imagenet=False), return_indices_ranked_by="self_confidence",
                                  n_jobs=1)
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    for r in np.asarray(found, np.int64)[:int(math.ceil(cfg.label_issue_max_fraction * len(judged)))]:
        i = int(judged[r])
        gap = np.where(k_use[r], np.abs(y_use[r] - p_use[r]), 0.0)  # only a label it has can be wrong
        k = int(np.argmax(gap))
        col, cur = cols[use[k]], int(y_use[r, k])
        others = [f"{cols[use[j]]!r} {int(y_use[r, j])} (p={p_use[r, j]:.2f})" for j in np.argsort(-gap)[1:3]
                  if gap[j] > 0.5]
        detail = (f"{who} gives label {col!r} p={p_use[r, k]:.2f}, but it is {cur}"
                  + (f"; also at odds: {', '.join(others)}" if others else ""))
        # the review's multi-label relabel sets the whole label set: the positives, joined by "|"
        fixed = [c for c in cols if (Y[i, cols.index(c)] == 1) != (c == col)]
        action = "relabel" if fixed else "review"  # an empty set is chosen in the picker, not one click away
        if not fixed:
            detail += "; with it flipped the image would have no label"
        out.append(_row(sids[i], rels[i], "label_issue", float(gap[k]), action, detail, label=labels_shown[i],
                        suggested_label="|".join(fixed), label_column=col))
    return out, source, {}, cols


def _hierarchy_conflicts(samples: pd.DataFrame, schema: Any, rels: list[str], labels_shown: list[str]
                         ) -> list[dict[str, Any]]:
    if schema.task != "hierarchical" or len(schema.label_columns) < 2:
        return []
    out = []
    cols = list(schema.label_columns)
    sids = samples["sample_id"].astype(str).tolist()
    for coarse, fine in zip(cols, cols[1:]):
        par = samples[coarse].astype(str).to_numpy()
        chi = samples[fine].astype(str).to_numpy()
        table = pd.crosstab(chi, par)
        for child, counts in table.iterrows():
            counts = counts[counts > 0].sort_values(ascending=False)
            if len(counts) < 2:
                continue
            major, n_major = str(counts.index[0]), int(counts.iloc[0])
            total = int(counts.sum())
            if n_major * 2 <= total:  # no clear majority: every parent is suspect
                major = ""
            for i in np.flatnonzero((chi == child) & (par != major)):
                detail = (f"{fine} {child!r} is under {coarse} {par[i]!r} here, but under {major!r} in "
                          f"{n_major} of {total} samples" if major else
                          f"{fine} {child!r} appears under several {coarse} values: "
                          + ", ".join(f"{k} ({v})" for k, v in counts.items()))
                out.append(_row(sids[i], rels[i], "hierarchy_conflict", n_major / total if major else 0.5,
                                "relabel" if major else "review", detail, label=labels_shown[i],
                                suggested_label=major, label_column=coarse if major else ""))
    return out


def _missing_labels(samples: pd.DataFrame, schema: Any, rels: list[str], labels_shown: list[str]
                    ) -> list[dict[str, Any]]:
    cols = (list(schema.label_columns) if schema.task == "multilabel" else []) + list(schema.attribute_columns)
    if not cols:
        return []
    M = samples[cols].to_numpy(dtype=float)
    miss = np.isnan(M)
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    for i in np.flatnonzero(miss.any(axis=1)):
        names = [c for c, m in zip(cols, miss[i]) if m]
        out.append(_row(sids[i], rels[i], "missing_label", miss[i].mean(), "keep",
                        f"unknown ({len(names)} of {len(cols)}): {', '.join(names)} — missing, not 0; "
                        "fill in if you know it", label=labels_shown[i]))
    return out


def _rare_classes(samples: pd.DataFrame, schema: Any, cfg: AuditConfig, rels: list[str], labels_shown: list[str]
                  ) -> list[dict[str, Any]]:
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    if schema.task == "multilabel":
        cols = list(schema.label_columns)
        Y = samples[cols].to_numpy(dtype=float)
        for j, c in enumerate(cols):
            pos = np.flatnonzero(Y[:, j] == 1.0)
            if 0 < len(pos) < cfg.rare_min:
                for i in pos:
                    out.append(_row(sids[i], rels[i], "rare_class", 1.0 - len(pos) / cfg.rare_min, "review",
                                    f"label {c!r} has {len(pos)} positive samples (minimum {cfg.rare_min}): "
                                    "collect more, merge it, or exclude it", label=labels_shown[i], group=c))
        return out
    col = schema.label_columns[-1]
    vals = samples[col].astype(str).to_numpy()
    for c, n in Counter(vals).items():
        if n < cfg.rare_min:
            for i in np.flatnonzero(vals == c):
                out.append(_row(sids[i], rels[i], "rare_class", 1.0 - n / cfg.rare_min, "review",
                                f"class {c!r} has {n} samples (minimum {cfg.rare_min}): collect more, merge it "
                                "into another class, or exclude it", label=labels_shown[i], group=c))
    return out
