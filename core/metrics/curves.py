"""One-vs-rest precision-recall and ROC curves (single-label and multi-label), from scikit-learn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.metrics.checks import _check_binary, _check_classes, _check_multilabel, _check_probs, _check_single_labels


@dataclass(frozen=True, eq=False)
class Curve:
    """One binary (one-vs-rest) PR and ROC curve, as scikit-learn returns them.

    ``precision``, ``recall`` of shape (T+1,) and ``pr_thresholds`` (T,) from
    ``precision_recall_curve``; ``fpr``, ``tpr``, ``roc_thresholds`` from ``roc_curve``.
    Arrays are empty and the score NaN where undefined (no positives for PR/AP; only one
    class present for ROC/AUC).
    """

    precision: np.ndarray
    recall: np.ndarray
    pr_thresholds: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    roc_thresholds: np.ndarray
    average_precision: float
    roc_auc: float
    n_positive: int
    n_negative: int


def binary_curve(y_true_binary: Any, scores: Any) -> Curve:
    """PR and ROC curve with AP and AUC for one binary problem.

    Parameters
    ----------
    y_true_binary : array-like of shape (N,), 0/1 (or bool)
    scores : array-like of shape (N,)
    """
    from sklearn.metrics import auc as area_under, precision_recall_curve, roc_curve

    y, s = _check_binary(y_true_binary, scores)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    empty = np.zeros(0)
    if n_pos > 0:
        prec, rec, pth = precision_recall_curve(y, s)
        # scikit-learn's own definition of average_precision_score (binary), from the same
        # curve: saves a second sort of the scores
        ap = float(-np.sum(np.diff(rec) * np.asarray(prec)[:-1]))
    else:
        prec, rec, pth, ap = empty, empty, empty, float("nan")
    if n_pos > 0 and n_neg > 0:
        fpr, tpr, rth = roc_curve(y, s, drop_intermediate=True)
        auc = float(area_under(fpr, tpr))  # = roc_auc_score(y, s)
    else:
        fpr, tpr, rth, auc = empty, empty, empty, float("nan")
    return Curve(precision=prec, recall=rec, pr_thresholds=pth, fpr=fpr, tpr=tpr, roc_thresholds=rth,
                 average_precision=ap, roc_auc=auc, n_positive=n_pos, n_negative=n_neg)


@dataclass(frozen=True, eq=False)
class CurveSet:
    """One-vs-rest curves for every class (or label), keyed by name, in ``classes`` order."""

    classes: tuple[str, ...]
    curves: dict[str, Curve]

    @property
    def average_precision(self) -> dict[str, float]:
        return {c: self.curves[c].average_precision for c in self.classes}

    @property
    def roc_auc(self) -> dict[str, float]:
        return {c: self.curves[c].roc_auc for c in self.classes}

    @property
    def mean_average_precision(self) -> float:
        """Mean AP over classes where it is defined (NaN when none is)."""
        v = [x for x in self.average_precision.values() if not math.isnan(x)]
        return float(np.mean(v)) if v else float("nan")

    @property
    def macro_roc_auc(self) -> float:
        v = [x for x in self.roc_auc.values() if not math.isnan(x)]
        return float(np.mean(v)) if v else float("nan")

    def table(self) -> pd.DataFrame:
        """``average_precision, roc_auc, n_positive, n_negative`` per class."""
        return pd.DataFrame([{"class": c, "average_precision": k.average_precision, "roc_auc": k.roc_auc,
                              "n_positive": k.n_positive, "n_negative": k.n_negative}
                             for c, k in self.curves.items()]).set_index("class")


def one_vs_rest_curves(y_true: Any, probs: Any, *, classes: Sequence[str]) -> CurveSet:
    """Per-class one-vs-rest PR / ROC curves with AP and AUC (single-label).

    Parameters
    ----------
    y_true : array-like of shape (N,), class indices
    probs : array-like of shape (N, K)
    classes : sequence of str, length K
    """
    classes = _check_classes(classes)
    p = _check_probs(probs, k=len(classes))
    y = _check_single_labels(y_true, len(p), len(classes))
    return CurveSet(classes=classes, curves={c: binary_curve(y == k, p[:, k]) for k, c in enumerate(classes)})


def multilabel_curves(y_true: Any, probs: Any, *, labels: Sequence[str]) -> CurveSet:
    """Per-label PR / ROC curves with AP and AUC, each computed on that label's known entries.

    Parameters
    ----------
    y_true : array-like of shape (N, K), 1 / 0 / NaN (missing, left out)
    probs : array-like of shape (N, K)
    labels : sequence of str, length K
    """
    labels = _check_classes(labels, "labels")
    y, p = _check_multilabel(y_true, probs, len(labels))
    curves = {}
    for k, name in enumerate(labels):
        known = ~np.isnan(y[:, k])
        curves[name] = binary_curve(y[known, k].astype(int), p[known, k])
    return CurveSet(classes=labels, curves=curves)
