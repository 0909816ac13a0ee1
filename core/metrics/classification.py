"""Single-label metrics: thresholds as a decision rule, the classification summary (confusion,
per-class table, accuracy, macro F1) and the most confident mistakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from core.metrics.checks import _check_classes, _check_probs, _check_single_labels, _f


def _threshold_vector(thresholds: Any, classes: tuple[str, ...]) -> np.ndarray:
    k = len(classes)
    if isinstance(thresholds, Mapping):
        unknown = sorted(set(map(str, thresholds)) - set(classes))
        if unknown:
            raise ValueError(f"thresholds name unknown classes {unknown}; classes are {list(classes)}")
        t = np.full(k, np.nan)
        for name, v in thresholds.items():
            if v is not None:
                t[classes.index(str(name))] = float(v)
        return t
    t = np.asarray(thresholds, dtype=float)
    if t.ndim == 0:
        return np.full(k, float(t))
    if t.shape != (k,):
        raise ValueError(f"thresholds must be a mapping {{class: threshold}} or shape ({k},); received {t.shape}")
    return t


def apply_thresholds(probs: Any, *, thresholds: Mapping[str, float | None] | Sequence[float], classes: Sequence[str]
                     ) -> np.ndarray:
    """Single-label predictions under per-class thresholds.

    The rule: a class whose probability reaches its threshold beats every class without a
    threshold, which beats a class below its threshold; within a tier the highest
    probability wins. So for a binary task with a threshold ``t`` on the positive class
    only, the positive class is predicted exactly when ``p_pos >= t``; with no thresholds
    this is the argmax.

    Parameters
    ----------
    probs : array-like of shape (N, K)
    thresholds : mapping {class: threshold or None}, or array-like of shape (K,) (NaN: none)
    classes : sequence of str, length K

    Returns
    -------
    ndarray of shape (N,), int class indices.
    """
    classes = _check_classes(classes)
    p = _check_probs(probs, k=len(classes))
    t = _threshold_vector(thresholds, classes)
    gated = ~np.isnan(t)
    tier = np.where(gated, np.where(p >= np.where(gated, t, 0.0), 2, 0), 1)
    # lexicographic (tier, prob): tiers are integers, probs lie in [0, 1]
    return np.argmax(tier * 2.0 + p, axis=1) if len(p) else np.zeros(0, dtype=int)


@dataclass(frozen=True, eq=False)
class ClassificationSummary:
    """Single-label metrics for N samples and K classes.

    Attributes
    ----------
    classes : tuple of str, length K
    n_samples : int
    accuracy : float
    precision_macro, recall_macro, f1_macro, precision_micro, recall_micro, f1_micro,
    precision_weighted, recall_weighted, f1_weighted : float
    per_class : DataFrame indexed by class name
        Columns ``precision, recall, f1, support`` (true samples), ``predicted`` (predicted
        samples), ``tp, fp, fn``.
    confusion : ndarray of shape (K, K), int
        Rows true class, columns predicted class.
    confusion_normalized : ndarray of shape (K, K), float
        Each row divided by its support (rows with no support are 0).
    y_pred : ndarray of shape (N,), int
        The predictions the summary was computed on.
    """

    classes: tuple[str, ...]
    n_samples: int
    accuracy: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    precision_micro: float
    recall_micro: float
    f1_micro: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    per_class: pd.DataFrame
    confusion: np.ndarray
    confusion_normalized: np.ndarray
    y_pred: np.ndarray

    def overall(self) -> dict[str, float]:
        """The scalar metrics as a flat dict (``accuracy``, ``macro_f1``, ``micro_f1``...)."""
        return {"accuracy": self.accuracy, "n_samples": self.n_samples,
                "macro_precision": self.precision_macro, "macro_recall": self.recall_macro, "macro_f1": self.f1_macro,
                "micro_precision": self.precision_micro, "micro_recall": self.recall_micro, "micro_f1": self.f1_micro,
                "weighted_precision": self.precision_weighted, "weighted_recall": self.recall_weighted,
                "weighted_f1": self.f1_weighted}

    def per_class_dict(self) -> dict[str, dict[str, float]]:
        """``{class: {precision, recall, f1, support}}`` (support as int)."""
        return {c: {"precision": float(r.precision), "recall": float(r.recall), "f1": float(r.f1),
                    "support": int(r.support)} for c, r in self.per_class.iterrows()}


def classification_summary(y_true: Any, probs: Any, *, classes: Sequence[str],
                           thresholds: Mapping[str, float | None] | Sequence[float] | None = None,
                           y_pred: Any = None) -> ClassificationSummary:
    """Accuracy, averaged and per-class precision / recall / F1, and the confusion matrix.

    Parameters
    ----------
    y_true : array-like of shape (N,)
        True class indices in ``[0, K)``.
    probs : array-like of shape (N, K)
        Predicted probabilities, columns in ``classes`` order.
    classes : sequence of str, length K
    thresholds : optional
        Per-class decision thresholds (see :func:`apply_thresholds`); default argmax.
    y_pred : array-like of shape (N,), optional
        The predicted class indices to score, when they are given rather than derived from
        ``probs`` (e.g. a run's recorded predictions). Not together with ``thresholds``.

    Returns
    -------
    ClassificationSummary
        Classes absent from both truth and predictions still get a row (zeros);
        undefined ratios (no predictions, no support) are 0, as scikit-learn's
        ``zero_division=0``.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = _check_classes(classes)
    p = _check_probs(probs, k=len(classes))
    y = _check_single_labels(y_true, len(p), len(classes))
    if len(y) == 0:
        raise ValueError("y_true is empty: nothing to evaluate")
    if y_pred is not None:
        if thresholds is not None:
            raise ValueError("pass either y_pred or thresholds, not both")
        y_pred = _check_single_labels(y_pred, len(p), len(classes), what="y_pred")
    elif thresholds is not None:
        y_pred = apply_thresholds(p, thresholds=thresholds, classes=classes)
    else:
        y_pred = np.argmax(p, axis=1)
    labels = np.arange(len(classes))
    cm = confusion_matrix(y, y_pred, labels=labels)
    prec, rec, f1, sup = precision_recall_fscore_support(y, y_pred, labels=labels, zero_division=0)
    avg = {a: precision_recall_fscore_support(y, y_pred, labels=labels, average=a, zero_division=0)[:3]
           for a in ("macro", "micro", "weighted")}
    rows = cm.sum(axis=1, keepdims=True)
    cmn = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    tp = np.diag(cm)
    per_class = pd.DataFrame({"precision": prec, "recall": rec, "f1": f1, "support": sup.astype(int),
                              "predicted": cm.sum(axis=0), "tp": tp, "fp": cm.sum(axis=0) - tp,
                              "fn": cm.sum(axis=1) - tp}, index=pd.Index(classes, name="class"))
    return ClassificationSummary(
        classes=classes, n_samples=int(len(y)), accuracy=float(accuracy_score(y, y_pred)),
        precision_macro=_f(avg["macro"][0]), recall_macro=_f(avg["macro"][1]), f1_macro=_f(avg["macro"][2]),
        precision_micro=_f(avg["micro"][0]), recall_micro=_f(avg["micro"][1]), f1_micro=_f(avg["micro"][2]),
        precision_weighted=_f(avg["weighted"][0]), recall_weighted=_f(avg["weighted"][1]),
        f1_weighted=_f(avg["weighted"][2]), per_class=per_class, confusion=cm, confusion_normalized=cmn,
        y_pred=np.asarray(y_pred, dtype=int))


def confident_mistakes(y_true: Any, probs: Any, *, true_class: int | None = None,
                       pred_class: int | None = None, y_pred: Any = None) -> np.ndarray:
    """Indices of misclassified samples (argmax), the most confident mistake first.

    Parameters
    ----------
    y_true : array-like of shape (N,)
    probs : array-like of shape (N, K)
    true_class, pred_class : int, optional
        Restrict to one confusion-matrix cell (or row / column). With
        ``true_class == pred_class`` the cell's correct samples are returned instead.
    y_pred : array-like of shape (N,), optional
        The predictions to judge (e.g. a run's recorded ones, such as a hierarchical run's
        predicted path); default the argmax of ``probs``. Confidence is always the
        probability of the predicted class.

    Returns
    -------
    ndarray of shape (M,), int: row indices sorted by predicted-class probability, descending.
    """
    p = _check_probs(probs)
    y = _check_single_labels(y_true, len(p), p.shape[1])
    if y_pred is not None:
        pred = _check_single_labels(y_pred, len(p), p.shape[1], what="y_pred")
    else:
        pred = np.argmax(p, axis=1) if len(p) else np.zeros(0, dtype=int)
    mask = pred != y
    if true_class is not None and pred_class is not None and true_class == pred_class:
        mask = pred == y
    if true_class is not None:
        mask &= y == int(true_class)
    if pred_class is not None:
        mask &= pred == int(pred_class)
    idx = np.flatnonzero(mask)
    conf = p[idx, pred[idx]]
    return idx[np.argsort(-conf, kind="stable")]
