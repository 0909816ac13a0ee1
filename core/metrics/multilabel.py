"""Multi-label metrics with missing entries: masked per-label averages, mAP and the worst mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from core.metrics.checks import _check_classes, _check_multilabel
from core.metrics.classification import _threshold_vector


@dataclass(frozen=True, eq=False)
class MultilabelSummary:
    """Multi-label metrics with missing labels masked out of every number.

    Attributes
    ----------
    labels : tuple of str, length K
    n_samples : int
    per_label : DataFrame indexed by label
        ``precision, recall, f1`` on the label's known entries, ``support`` (known
        positives), ``n_known``, ``n_missing``, ``average_precision``.
    micro_precision, micro_recall, micro_f1 : float
        Pooled over all known (sample, label) entries.
    macro_precision, macro_recall, macro_f1 : float
        Mean over labels that have at least one known entry.
    subset_accuracy : float
        Fraction of samples whose prediction matches on **every known entry**; samples
        with no known entry are left out (``n_subset`` counts the samples used).
    hamming_accuracy : float
        Fraction of known entries predicted correctly.
    """

    labels: tuple[str, ...]
    n_samples: int
    per_label: pd.DataFrame
    micro_precision: float
    micro_recall: float
    micro_f1: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    subset_accuracy: float
    n_subset: int
    hamming_accuracy: float
    y_pred: np.ndarray

    def overall(self) -> dict[str, float]:
        return {"n_samples": self.n_samples, "micro_precision": self.micro_precision,
                "micro_recall": self.micro_recall, "micro_f1": self.micro_f1,
                "macro_precision": self.macro_precision, "macro_recall": self.macro_recall,
                "macro_f1": self.macro_f1, "subset_accuracy": self.subset_accuracy, "n_subset": self.n_subset,
                "hamming_accuracy": self.hamming_accuracy}


def multilabel_summary(y_true: Any, probs: Any, *, labels: Sequence[str],
                       thresholds: float | Mapping[str, float | None] | Sequence[float] = 0.5,
                       y_pred: Any = None) -> MultilabelSummary:
    """Per-label and averaged metrics for multi-label predictions, missing entries masked.

    Parameters
    ----------
    y_true : array-like of shape (N, K)
        1 / 0 / NaN; NaN (missing) entries are left out of every metric — never read as 0.
    probs : array-like of shape (N, K)
    labels : sequence of str, length K
    thresholds : float, mapping {label: threshold} or array-like of shape (K,)
        A label is predicted when its probability is >= its threshold (default 0.5;
        labels without a threshold in a mapping use 0.5).
    y_pred : array-like of shape (N, K) of 0/1, optional
        The predictions to score when given (e.g. a run's recorded ones); overrides ``thresholds``.
    """
    from sklearn.metrics import average_precision_score, precision_recall_fscore_support

    labels = _check_classes(labels, "labels")
    y, p = _check_multilabel(y_true, probs, len(labels))
    if y_pred is not None:
        pred = np.asarray(y_pred)
        if pred.shape != p.shape or not np.all((pred == 0) | (pred == 1)):
            raise ValueError(f"y_pred must be 0/1 of shape {p.shape}; received shape {pred.shape}")
        pred = pred.astype(int)
    else:
        t = _threshold_vector(thresholds, labels)
        t = np.where(np.isnan(t), 0.5, t)
        pred = (p >= t).astype(int)
    known = ~np.isnan(y)
    rows = []
    for k, name in enumerate(labels):
        m = known[:, k]
        yk, pk = y[m, k].astype(int), pred[m, k]
        if m.any():
            pr, rc, f1, _ = precision_recall_fscore_support(yk, pk, average="binary", zero_division=0)
            ap = float(average_precision_score(yk, p[m, k])) if yk.any() else float("nan")
        else:
            pr = rc = f1 = ap = float("nan")
        rows.append({"label": name, "precision": float(pr), "recall": float(rc), "f1": float(f1),
                     "support": int(yk.sum()), "n_known": int(m.sum()), "n_missing": int((~m).sum()),
                     "average_precision": ap})
    per_label = pd.DataFrame(rows).set_index("label")
    if known.any():
        mp, mr, mf, _ = precision_recall_fscore_support(y[known].astype(int), pred[known], average="binary",
                                                        zero_division=0)
        hamming = float(np.mean(y[known] == pred[known]))
    else:
        mp = mr = mf = hamming = float("nan")
    any_known = known.any(axis=1)
    exact = np.all(~known | (np.nan_to_num(y, nan=-1) == pred), axis=1)
    subset = float(np.mean(exact[any_known])) if any_known.any() else float("nan")
    defined = per_label[per_label.n_known > 0]

    def mean(col: str) -> float:
        return float(defined[col].mean()) if len(defined) else float("nan")

    return MultilabelSummary(labels=labels, n_samples=int(len(y)), per_label=per_label, micro_precision=float(mp),
                             micro_recall=float(mr), micro_f1=float(mf), macro_precision=mean("precision"),
                             macro_recall=mean("recall"), macro_f1=mean("f1"), subset_accuracy=subset,
                             n_subset=int(any_known.sum()), hamming_accuracy=hamming, y_pred=pred)


def multilabel_mistakes(y_true: Any, probs: Any, *, y_pred: Any = None, threshold: float = 0.5) -> np.ndarray:
    """Samples with a wrong known entry, the most confident mistake first (multi-label).

    A (sample, label) entry is a mistake when it is known and the prediction differs; its
    confidence is ``p`` for a false positive and ``1 - p`` for a false negative. Samples
    are ranked by their most confident mistake; missing entries never count.

    Parameters
    ----------
    y_true : array-like of shape (N, K), 1 / 0 / NaN
    probs : array-like of shape (N, K)
    y_pred : array-like of shape (N, K) of 0/1, optional
        Default ``probs >= threshold``.

    Returns
    -------
    ndarray of shape (M,), int: row indices, most confident mistake first.
    """
    y, p = _check_multilabel(y_true, probs)
    pred = (p >= float(threshold)).astype(int) if y_pred is None else np.asarray(y_pred).astype(int)
    if pred.shape != p.shape:
        raise ValueError(f"y_pred must have the shape of probs {p.shape}; received {pred.shape}")
    wrong = ~np.isnan(y) & (np.nan_to_num(y, nan=-1) != pred)
    conf = np.where(pred == 1, p, 1.0 - p)
    worst = np.where(wrong, conf, -1.0).max(axis=1) if p.size else np.zeros(len(p))
    idx = np.flatnonzero(wrong.any(axis=1))
    return idx[np.argsort(-worst[idx], kind="stable")]
