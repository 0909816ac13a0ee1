"""Evaluation metrics: pure functions over label and probability arrays.

Vocabulary: N samples, K classes (or labels). ``y_true`` holds class indices of shape
(N,) for single-label tasks, or a (N, K) float matrix of 1 / 0 / NaN (missing) for
multi-label tasks. ``probs`` is a (N, K) matrix of predicted probabilities, columns in
``classes`` order. Everything here wraps :mod:`sklearn.metrics`; only what scikit-learn
lacks (the threshold search with its bootstrap, masked multi-label averages, hierarchy
consistency, expected calibration error, temperature scaling) is written out.

Naming: functions ending in ``_score`` return a value where higher is better; rankings
(:func:`confident_mistakes`) list the most suspect sample first.

>>> import numpy as np
>>> s = classification_summary(np.array([0, 1, 1]), np.array([[.9, .1], [.2, .8], [.6, .4]]), classes=["a", "b"])
>>> round(s.accuracy, 3), s.confusion.tolist()
(0.667, [[1, 0], [1, 1]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

# ---------------------------------------------------------------------------
# validation shared by every public function
# ---------------------------------------------------------------------------


def _check_classes(classes: Sequence[Any], what: str = "classes") -> tuple[str, ...]:
    if isinstance(classes, str) or classes is None:
        raise ValueError(f"{what} must be a sequence of names; received {classes!r}")
    names = tuple(str(c) for c in classes)
    if not names:
        raise ValueError(f"{what} must not be empty")
    if len(set(names)) != len(names):
        raise ValueError(f"{what} has duplicate names: {list(names)}")
    return names


def _check_probs(probs: Any, *, k: int | None = None, what: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array of shape (N, K); received shape {p.shape}")
    if k is not None and p.shape[1] != k:
        raise ValueError(f"{what} must have {k} columns (one per class); received shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{what} holds NaN or infinite values")
    return p


def _check_single_labels(y_true: Any, n: int, k: int, *, what: str = "y_true") -> np.ndarray:
    y = np.asarray(y_true)
    if y.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},) to match probs; received {y.shape}")
    if n and y.dtype.kind not in "iu":
        if y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(int)
        else:
            raise ValueError(f"{what} must hold integer class indices; received dtype {y.dtype}")
    y = y.astype(int)
    bad = y[(y < 0) | (y >= k)]
    if bad.size:
        raise ValueError(f"{what} holds class indices outside [0, {k - 1}]: {np.unique(bad)[:5].tolist()} "
                         "(drop unknown labels, coded -1, before evaluating)")
    return y


def _check_multilabel(y_true: Any, probs: Any, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    p = _check_probs(probs, k=k)
    y = np.asarray(y_true, dtype=float)
    if y.shape != p.shape:
        raise ValueError(f"y_true must have the shape of probs {p.shape}; received {y.shape}")
    bad = y[~np.isnan(y) & (y != 0) & (y != 1)]
    if bad.size:
        raise ValueError(f"y_true must hold 1, 0 or NaN (missing); received {np.unique(bad)[:5].tolist()}")
    return y, p


def _f(x: Any) -> float:
    return float(x) if x is not None else float("nan")


# ---------------------------------------------------------------------------
# thresholds as a decision rule
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# single-label summary
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# one-vs-rest curves
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# threshold at a target precision
# ---------------------------------------------------------------------------


def _check_binary(y_true_binary: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true_binary)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"y_true_binary must be 1-D of shape (N,); received shape {y.shape}")
    if s.shape != y.shape:
        raise ValueError(f"scores must have the shape of y_true_binary {y.shape}; received {s.shape}")
    if y.dtype.kind == "b":
        y = y.astype(int)
    yf = y.astype(float) if y.dtype.kind in "iuf" else None
    if yf is None or not np.all((yf == 0) | (yf == 1)):
        vals = np.unique(y)[:5].tolist()
        raise ValueError(f"y_true_binary must hold only 0 and 1; received values {vals}")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores hold NaN or infinite values")
    return yf.astype(int), s


@dataclass(frozen=True)
class ThresholdChoice:
    """The operating point with the highest recall at precision >= a target.

    Decision rule: positive when ``score >= threshold``. When ``reachable`` is False no
    threshold reaches the target: ``threshold``, ``precision``, ``recall`` and the
    intervals are NaN, and ``message`` says why. ``precision_ci`` / ``recall_ci`` are
    percentile bootstrap intervals (resampling the N samples, threshold held fixed);
    ``p_target_met`` is the fraction of resamples whose precision still reaches the
    target — the answer to "how sure is that?".
    """

    reachable: bool
    target_precision: float
    threshold: float
    precision: float
    recall: float
    precision_ci: tuple[float, float]
    recall_ci: tuple[float, float]
    p_target_met: float
    confidence: float
    n_bootstrap: int
    n_positive: int
    n_negative: int
    n_predicted_positive: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        def clean(v: float) -> float | None:
            return None if v is None or math.isnan(v) else float(v)

        return {"reachable": self.reachable, "target_precision": self.target_precision,
                "threshold": clean(self.threshold), "precision": clean(self.precision), "recall": clean(self.recall),
                "precision_ci": [clean(v) for v in self.precision_ci], "recall_ci": [clean(v) for v in self.recall_ci],
                "p_target_met": clean(self.p_target_met), "confidence": self.confidence,
                "n_bootstrap": self.n_bootstrap, "n_positive": self.n_positive, "n_negative": self.n_negative,
                "n_predicted_positive": self.n_predicted_positive, "message": self.message}


def threshold_at_precision(y_true_binary: Any, scores: Any, *, target_precision: float = 0.9,
                           n_bootstrap: int = 1000, confidence: float = 0.95, seed: int = 0) -> ThresholdChoice:
    """The threshold with the highest recall among those with precision >= ``target_precision``.

    Candidates are the distinct score values (scikit-learn's ``precision_recall_curve``);
    among equal recalls the higher precision, then the higher threshold, wins. The
    bootstrap resamples the N samples with replacement ``n_bootstrap`` times, keeping the
    threshold fixed, and reports percentile intervals on precision and recall.

    Parameters
    ----------
    y_true_binary : array-like of shape (N,), 0/1
    scores : array-like of shape (N,)
        Higher means more likely positive (e.g. the class probability).
    target_precision : float in (0, 1]
    n_bootstrap : int >= 0
        0 skips the bootstrap (intervals NaN).
    confidence : float in (0, 1)
        Width of the intervals (0.95: the 2.5th and 97.5th percentiles).
    seed : int

    Returns
    -------
    ThresholdChoice
        Always this type; ``reachable`` False (with ``message``) when the target cannot be met.

    Examples
    --------
    >>> c = threshold_at_precision([0, 0, 1, 1, 0, 1], [.1, .2, .3, .8, .85, .9], target_precision=.6,
    ...                            n_bootstrap=0)
    >>> c.reachable, c.threshold, round(c.precision, 2), round(c.recall, 2)
    (True, 0.3, 0.75, 1.0)
    """
    from sklearn.metrics import precision_recall_curve

    if not isinstance(target_precision, (int, float)) or not 0 < float(target_precision) <= 1:
        raise ValueError(f"target_precision must be in (0, 1]; received {target_precision!r}")
    if not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap must be an integer >= 0; received {n_bootstrap!r}")
    if not 0 < float(confidence) < 1:
        raise ValueError(f"confidence must be in (0, 1); received {confidence!r}")
    y, s = _check_binary(y_true_binary, scores)
    target = float(target_precision)
    n_pos = int(y.sum())
    n_neg = int(len(y) - n_pos)
    nan2 = (float("nan"), float("nan"))

    def unreachable(msg: str) -> ThresholdChoice:
        return ThresholdChoice(reachable=False, target_precision=target, threshold=float("nan"),
                               precision=float("nan"), recall=float("nan"), precision_ci=nan2, recall_ci=nan2,
                               p_target_met=float("nan"), confidence=float(confidence), n_bootstrap=int(n_bootstrap),
                               n_positive=n_pos, n_negative=n_neg, n_predicted_positive=0, message=msg)

    if len(y) == 0:
        return unreachable("no samples to choose a threshold on")
    if n_pos == 0:
        return unreachable("no positive samples: precision is undefined at every threshold")
    prec, rec, thr = precision_recall_curve(y, s)
    prec, rec = prec[:-1], rec[:-1]  # the last point (recall 0, precision 1) has no threshold
    ok = prec >= target - 1e-12
    if not ok.any():
        return unreachable(f"target precision {target:.3g} is unreachable: the best precision at any threshold "
                           f"is {prec.max():.3g}")
    cand = np.flatnonzero(ok)
    # highest recall, then highest precision, then highest threshold
    best = cand[np.lexsort((thr[cand], prec[cand], rec[cand]))[-1]]
    t = float(thr[best])
    pred = s >= t
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = n_pos - tp
    tn = n_neg - fp
    precision, recall = tp / (tp + fp), tp / n_pos
    pci, rci, p_met = nan2, nan2, float("nan")
    if n_bootstrap > 0:
        # Resampling N samples with replacement at a fixed threshold is a multinomial draw
        # over the four outcome cells (tp, fp, fn, tn): exact and O(n_bootstrap).
        rng = np.random.default_rng(seed)
        counts = rng.multinomial(len(y), np.array([tp, fp, fn, tn], dtype=float) / len(y), size=int(n_bootstrap))
        btp, bfp, bfn = counts[:, 0].astype(float), counts[:, 1].astype(float), counts[:, 2].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            bprec = np.where(btp + bfp > 0, btp / (btp + bfp), np.nan)
            brec = np.where(btp + bfn > 0, btp / (btp + bfn), np.nan)
        q = [100 * (1 - confidence) / 2, 100 * (1 + confidence) / 2]
        if np.isfinite(bprec).any():
            pci = tuple(float(v) for v in np.nanpercentile(bprec, q))
            p_met = float(np.mean(bprec[np.isfinite(bprec)] >= target - 1e-12))
        if np.isfinite(brec).any():
            rci = tuple(float(v) for v in np.nanpercentile(brec, q))
    msg = (f"threshold {t:.4g}: precision {precision:.3f}, recall {recall:.3f} "
           f"({tp} of {n_pos} positives found, {fp} false alarms)")
    return ThresholdChoice(reachable=True, target_precision=target, threshold=t, precision=float(precision),
                           recall=float(recall), precision_ci=pci, recall_ci=rci, p_target_met=p_met,
                           confidence=float(confidence), n_bootstrap=int(n_bootstrap), n_positive=n_pos,
                           n_negative=n_neg, n_predicted_positive=tp + fp, message=msg)


def thresholds_at_precision(y_true: Any, probs: Any, *, classes: Sequence[str], target_precision: float = 0.9,
                            positive_class: str | None = None, n_bootstrap: int = 1000, confidence: float = 0.95,
                            seed: int = 0) -> dict[str, ThresholdChoice]:
    """:func:`threshold_at_precision` one-vs-rest for every class (single-label) or label (multi-label).

    Parameters
    ----------
    y_true : array-like of shape (N,) class indices, or (N, K) 1 / 0 / NaN (multi-label;
        each label uses its known entries only)
    probs : array-like of shape (N, K)
    classes : sequence of str, length K
    positive_class : str, optional
        Binary task: only this class is returned.

    Returns
    -------
    dict {name: ThresholdChoice}, in ``classes`` order.
    """
    classes = _check_classes(classes)
    p = _check_probs(probs, k=len(classes))
    kw = dict(target_precision=target_precision, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    if np.asarray(y_true).ndim == 2:
        y, p = _check_multilabel(y_true, p, len(classes))
        out = {}
        for k, c in enumerate(classes):
            known = ~np.isnan(y[:, k])
            out[c] = threshold_at_precision(y[known, k].astype(int), p[known, k], **kw)
        return out
    y = _check_single_labels(y_true, len(p), len(classes))
    if positive_class is not None:
        if str(positive_class) not in classes:
            raise ValueError(f"positive_class must be one of {list(classes)}; received {positive_class!r}")
        names = [str(positive_class)]
    else:
        names = list(classes)
    return {c: threshold_at_precision((y == classes.index(c)).astype(int), p[:, classes.index(c)], **kw)
            for c in names}


# ---------------------------------------------------------------------------
# multi-label with missing entries
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# hierarchical
# ---------------------------------------------------------------------------


def hierarchy_consistency(level_preds: Mapping[str, Any], *, levels: Sequence[str],
                          parents: Mapping[str, Mapping[str, str]]) -> np.ndarray:
    """Whether each sample's predicted path is consistent with the hierarchy.

    A sample is consistent when, for every level but the first, the predicted class's
    parent (``parents[level][child]``) equals the prediction at the level above.

    Parameters
    ----------
    level_preds : mapping {level: array-like of shape (N,) of class names}
    levels : sequence of str, coarse -> fine
    parents : mapping {level: {child: parent}} for every level but the first

    Returns
    -------
    ndarray of shape (N,), bool.
    """
    levels = _check_classes(levels, "levels")
    missing = [lv for lv in levels if lv not in level_preds]
    if missing:
        raise ValueError(f"level_preds has no entry for levels {missing}")
    preds = {lv: np.asarray(level_preds[lv], dtype=object) for lv in levels}
    n = len(preds[levels[0]])
    for lv in levels:
        if preds[lv].shape != (n,):
            raise ValueError(f"level_preds[{lv!r}] must have shape ({n},); received {preds[lv].shape}")
    ok = np.ones(n, dtype=bool)
    for upper, lower in zip(levels[:-1], levels[1:]):
        if lower not in parents:
            raise ValueError(f"parents has no entry for level {lower!r}")
        m = parents[lower]
        unknown = sorted({str(c) for c in preds[lower] if str(c) not in m})
        if unknown:
            raise ValueError(f"parents[{lower!r}] has no parent for predicted classes {unknown[:5]}")
        ok &= np.array([m[str(c)] == str(u) for c, u in zip(preds[lower], preds[upper])], dtype=bool)
    return ok


@dataclass(frozen=True, eq=False)
class HierarchicalSummary:
    """Metrics at every level of a hierarchy and how often predicted paths are consistent.

    ``per_level``: ``{level: ClassificationSummary}``; ``table``: one row per level
    (``accuracy, macro_f1, weighted_f1, n_classes, n_samples``); ``consistency_rate``:
    fraction of samples whose predicted path respects ``parents`` (see
    :func:`hierarchy_consistency`); ``consistent``: (N,) bool.
    """

    levels: tuple[str, ...]
    per_level: dict[str, ClassificationSummary]
    table: pd.DataFrame
    consistency_rate: float
    consistent: np.ndarray


def hierarchical_summary(level_true: Mapping[str, Any], level_probs: Mapping[str, Any], *, levels: Sequence[str],
                         level_classes: Mapping[str, Sequence[str]], parents: Mapping[str, Mapping[str, str]],
                         level_pred: Mapping[str, Any] | None = None) -> HierarchicalSummary:
    """Per-level :func:`classification_summary` plus the hierarchy-consistency rate.

    Parameters
    ----------
    level_true : mapping {level: array-like of shape (N,), class indices}
    level_probs : mapping {level: array-like of shape (N, K_level)}
    levels : sequence of str, coarse -> fine
    level_classes : mapping {level: class names}
    parents : mapping {level: {child: parent}}
    level_pred : mapping {level: (N,) class indices}, optional
        The predicted path to score and check for consistency (e.g. the ancestors of the
        predicted leaf, or a "separate" model's routed path); default: the argmax at each
        level, independently.
    """
    levels = _check_classes(levels, "levels")
    per_level = {}
    names = {}
    for lv in levels:
        if lv not in level_true or lv not in level_probs or lv not in level_classes:
            raise ValueError(f"level {lv!r} is missing from level_true, level_probs or level_classes")
        cls = _check_classes(level_classes[lv], f"level_classes[{lv!r}]")
        if level_pred is not None and lv not in level_pred:
            raise ValueError(f"level_pred has no entry for level {lv!r}")
        per_level[lv] = classification_summary(level_true[lv], level_probs[lv], classes=cls,
                                               y_pred=None if level_pred is None else level_pred[lv])
        names[lv] = np.array(cls, dtype=object)[per_level[lv].y_pred]
    consistent = hierarchy_consistency(names, levels=levels, parents=parents)
    table = pd.DataFrame([{"level": lv, "accuracy": s.accuracy, "macro_f1": s.f1_macro, "weighted_f1": s.f1_weighted,
                           "n_classes": len(s.classes), "n_samples": s.n_samples} for lv, s in per_level.items()]
                         ).set_index("level")
    return HierarchicalSummary(levels=levels, per_level=per_level, table=table,
                               consistency_rate=float(consistent.mean()) if len(consistent) else float("nan"),
                               consistent=consistent)


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Calibration:
    """A reliability diagram and its expected calibration error.

    ``bin_edges`` (B+1,); per bin (B,): ``confidence`` (mean predicted probability),
    ``accuracy`` (observed frequency), ``count``; empty bins hold NaN with count 0.
    ``ece``: sum over bins of ``count / N * |accuracy - confidence|``; ``mce``: the largest
    such gap over non-empty bins.
    """

    bin_edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float
    mce: float
    n_samples: int


def calibration_bins(y_true: Any, probs: Any, *, n_bins: int = 15) -> Calibration:
    """Reliability diagram bins and expected calibration error (equal-width bins on [0, 1]).

    Parameters
    ----------
    y_true : array-like
        With 2-D ``probs``: (N,) class indices — top-label calibration (confidence is the
        max probability, "accuracy" whether the argmax is right). With 1-D ``probs``: (N,)
        0/1 — calibration of P(positive) (e.g. one binary class, or the known entries of a
        multi-label matrix, flattened).
    probs : array-like of shape (N, K) or (N,)
    n_bins : int >= 1
    """
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be an integer >= 1; received {n_bins!r}")
    p = np.asarray(probs, dtype=float)
    if p.ndim == 2:
        p = _check_probs(p)
        y = _check_single_labels(y_true, len(p), p.shape[1])
        conf = p.max(axis=1) if len(p) else np.zeros(0)
        hit = (np.argmax(p, axis=1) == y).astype(float) if len(p) else np.zeros(0)
    elif p.ndim == 1:
        yb, conf = _check_binary(y_true, p)
        hit = yb.astype(float)
    else:
        raise ValueError(f"probs must be of shape (N, K) or (N,); received {p.shape}")
    if len(conf) == 0:
        raise ValueError("y_true is empty: nothing to calibrate")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins are (lo, hi], the first one [0, hi]
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        mean_acc = np.bincount(idx, weights=hit, minlength=n_bins) / count
    gap = np.abs(mean_acc - mean_conf)
    nonempty = count > 0
    ece = float(np.sum(count[nonempty] / len(conf) * gap[nonempty]))
    return Calibration(bin_edges=edges, confidence=mean_conf, accuracy=mean_acc, count=count, ece=ece,
                       mce=float(gap[nonempty].max()), n_samples=int(len(conf)))


def expected_calibration_error(y_true: Any, probs: Any, *, n_bins: int = 15) -> float:
    """ECE of :func:`calibration_bins` (lower is better)."""
    return calibration_bins(y_true, probs, n_bins=n_bins).ece


@dataclass(frozen=True)
class TemperatureFit:
    """A fitted softmax temperature (``T > 1`` softens over-confident probabilities).

    ``nll_before`` / ``nll_after``: mean negative log-likelihood on the data it was fitted on.
    """

    temperature: float
    nll_before: float
    nll_after: float
    n_samples: int


_EPS = 1e-12


def _log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(probs, _EPS, 1.0))


def apply_temperature(probs: Any, *, temperature: float) -> np.ndarray:
    """Rescale probabilities by a temperature: ``softmax(log(probs) / T)``.

    Parameters
    ----------
    probs : array-like of shape (N, K)
        Softmax outputs (for a sigmoid binary model pass ``[1 - p, p]``).
    temperature : float > 0

    Returns
    -------
    ndarray of shape (N, K), rows summing to 1; the argmax is unchanged.
    """
    from scipy.special import softmax

    if not isinstance(temperature, (int, float)) or not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a finite number > 0; received {temperature!r}")
    p = _check_probs(probs)
    return softmax(_log_probs(p) / float(temperature), axis=1)


def _nll(y: np.ndarray, logp: np.ndarray, temperature: float) -> float:
    from scipy.special import log_softmax

    return float(-np.mean(log_softmax(logp / temperature, axis=1)[np.arange(len(y)), y]))


def fit_temperature(y_true: Any, probs: Any, *, bounds: tuple[float, float] = (0.05, 20.0)) -> TemperatureFit:
    """Fit the temperature that minimises the negative log-likelihood (fit on val, apply on test).

    Parameters
    ----------
    y_true : array-like of shape (N,), class indices
    probs : array-like of shape (N, K)
        Probabilities (``log(probs)`` act as logits; same result as scaling the logits).
    bounds : (float, float)
        Search range for T (bounded 1-D search in log T).
    """
    from scipy.optimize import minimize_scalar

    p = _check_probs(probs)
    y = _check_single_labels(y_true, len(p), p.shape[1])
    if len(y) == 0:
        raise ValueError("y_true is empty: nothing to fit a temperature on")
    lo, hi = bounds
    if not 0 < lo < hi:
        raise ValueError(f"bounds must satisfy 0 < low < high; received {bounds!r}")
    logp = _log_probs(p)
    res = minimize_scalar(lambda lt: _nll(y, logp, math.exp(lt)), bounds=(math.log(lo), math.log(hi)),
                          method="bounded", options={"xatol": 1e-5})
    t = float(math.exp(res.x))
    before = _nll(y, logp, 1.0)
    after = _nll(y, logp, t)
    if after > before:  # the bounded search never does worse than T = 1
        t, after = 1.0, before
    return TemperatureFit(temperature=t, nll_before=before, nll_after=after, n_samples=int(len(y)))


# ---------------------------------------------------------------------------
# comparing runs
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunComparison:
    """Metrics of several runs side by side.

    ``overall``: rows are metrics (accuracy, macro_f1, ...), one column per run, plus
    ``delta_<run>`` columns (run minus ``baseline``). ``per_class``: rows are classes
    (union over runs), columns ``f1_<run>``, ``precision_<run>``, ``recall_<run>``,
    ``support_<run>`` and ``delta_f1_<run>`` for each non-baseline run; sorted by the
    largest absolute F1 change first.
    """

    runs: tuple[str, ...]
    baseline: str
    overall: pd.DataFrame
    per_class: pd.DataFrame


def compare_runs(summaries: Mapping[str, ClassificationSummary | MultilabelSummary], *,
                 baseline: str | None = None) -> RunComparison:
    """Side-by-side metrics and per-class deltas of two or more runs.

    Parameters
    ----------
    summaries : mapping {run_id: ClassificationSummary}, or {run_id: MultilabelSummary}
        In display order; runs evaluated on the same test split compare fairly. All of one
        kind (multi-label runs compare per label: the ``per_class`` rows are labels).
    baseline : str, optional
        The run the deltas are taken against (default: the first).
    """
    if not isinstance(summaries, Mapping) or len(summaries) < 1:
        raise ValueError("summaries must be a non-empty mapping {run_id: ClassificationSummary}")
    runs = tuple(str(r) for r in summaries)
    for r, s in summaries.items():
        if not isinstance(s, (ClassificationSummary, MultilabelSummary)):
            raise ValueError(f"summaries[{r!r}] must be a ClassificationSummary or MultilabelSummary; "
                             f"received {type(s).__name__}")
    if len({type(s) for s in summaries.values()}) > 1:
        raise ValueError("summaries mix single-label and multi-label runs; compare runs of one kind")
    base = runs[0] if baseline is None else str(baseline)
    if base not in runs:
        raise ValueError(f"baseline must be one of {list(runs)}; received {baseline!r}")
    by = {str(r): s for r, s in summaries.items()}
    overall = pd.DataFrame({r: by[r].overall() for r in runs})
    others = [r for r in runs if r != base]
    for r in others:
        overall[f"delta_{r}"] = overall[r] - overall[base]
    classes: list[str] = []
    def names(x: ClassificationSummary | MultilabelSummary) -> tuple[str, ...]:
        return x.classes if isinstance(x, ClassificationSummary) else x.labels

    def table(x: ClassificationSummary | MultilabelSummary) -> pd.DataFrame:
        return x.per_class if isinstance(x, ClassificationSummary) else x.per_label

    for r in runs:
        classes += [c for c in names(by[r]) if c not in classes]
    cols = {}
    for r in runs:
        pc = table(by[r]).reindex(classes)
        for m in ("precision", "recall", "f1", "support"):
            cols[f"{m}_{r}"] = pc[m]
    per_class = pd.DataFrame(cols, index=pd.Index(classes, name="class"))
    for r in others:
        per_class[f"delta_f1_{r}"] = per_class[f"f1_{r}"] - per_class[f"f1_{base}"]
    if others:
        key = per_class[[f"delta_f1_{r}" for r in others]].abs().max(axis=1)
        per_class = per_class.loc[key.sort_values(ascending=False, na_position="last").index]
    return RunComparison(runs=runs, baseline=base, overall=overall, per_class=per_class)


# ---------------------------------------------------------------------------
# one JSON-ready evaluation of a run's predictions (the CLI's and the report's)
# ---------------------------------------------------------------------------


def _clean(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _single_label_block(y: np.ndarray, p: np.ndarray, classes: tuple[str, ...], *, positive_class: str | None,
                        kw: dict[str, Any], y_pred: np.ndarray | None = None) -> dict[str, Any]:
    s = classification_summary(y, p, classes=classes, y_pred=y_pred)
    curves = one_vs_rest_curves(y, p, classes=classes)
    per_class = s.per_class_dict()
    for c in classes:
        per_class[c]["average_precision"] = _clean(curves.curves[c].average_precision)
        per_class[c]["roc_auc"] = _clean(curves.curves[c].roc_auc)
        per_class[c] = {k: _clean(v) for k, v in per_class[c].items()}
    choices = thresholds_at_precision(y, p, classes=classes, positive_class=positive_class, **kw)
    return {**{k: _clean(v) for k, v in s.overall().items()},
            "per_class": per_class,
            "mean_average_precision": _clean(curves.mean_average_precision),
            "macro_roc_auc": _clean(curves.macro_roc_auc),
            "ece": _clean(calibration_bins(y, p).ece),
            "confusion": {"classes": list(classes), "matrix": s.confusion.tolist()},
            "thresholds": {c: (ch.to_dict() if ch.reachable else None) for c, ch in choices.items()},
            "threshold_messages": {c: ch.message for c, ch in choices.items()}}


def evaluate_predictions(predictions: Any, *, target_precision: float = 0.9, n_bootstrap: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Every headline metric of a run's predictions as one JSON-ready dict.

    Parameters
    ----------
    predictions : core.runs.Predictions
        (read with :func:`core.runs.read_predictions`, usually for one split).
    target_precision, n_bootstrap, seed
        For the per-class threshold picker (:func:`thresholds_at_precision`).

    Returns
    -------
    dict with ``task, n_samples, n_unlabelled, accuracy, macro_f1, per_class, thresholds,
    target_precision`` and, by task: single-label — averaged P/R/F1, ``confusion``,
    ``mean_average_precision``, ``ece``, ``positive_class`` (binary: ``thresholds`` holds
    the positive class only); multi-label — ``per_label`` (= ``per_class``), ``micro_f1``,
    ``subset_accuracy``, and ``accuracy`` = the fraction of known (sample, label) entries
    predicted correctly (as the training worker reports it);
    hierarchical — ``levels`` {level: single-label block}, ``consistency_rate``, and the
    finest level's block at top level. ``thresholds[name]`` is ``{threshold, precision,
    recall, precision_ci, recall_ci, ...}`` or None when the target is unreachable. NaN
    becomes None. Rows with an unknown true label are left out (``n_unlabelled``).
    Accuracy, precision / recall / F1, the confusion matrix and the hierarchy-consistency
    rate score the file's ``pred`` columns (what the run predicted: for hierarchical runs
    the full predicted path); curves, AP / AUC, thresholds and calibration use the
    probability columns.
    """
    kw = dict(target_precision=target_precision, n_bootstrap=n_bootstrap, seed=seed)
    task = predictions.task
    classes = tuple(predictions.classes)
    out: dict[str, Any] = {"task": task, "target_precision": float(target_precision)}
    if task in ("multiclass", "binary"):
        keep = predictions.y_true >= 0
        if not keep.any():
            raise ValueError("no rows with a known true label to evaluate")
        out.update(n_unlabelled=int((~keep).sum()), positive_class=predictions.positive_class)
        out.update(_single_label_block(predictions.y_true[keep], predictions.probs[keep], classes,
                                       positive_class=predictions.positive_class if task == "binary" else None,
                                       kw=kw, y_pred=predictions.y_pred[keep]))
        return out
    if task == "multilabel":
        y, p = predictions.y_true, predictions.probs
        known_rows = (~np.isnan(y)).any(axis=1)
        ms = multilabel_summary(y, p, labels=classes, y_pred=predictions.y_pred)
        curves = multilabel_curves(y, p, labels=classes)
        choices = thresholds_at_precision(y, p, classes=classes, **kw)
        per_label = {c: {k: _clean(v) for k, v in row.items()} for c, row in ms.per_label.to_dict("index").items()}
        for c in classes:
            per_label[c]["roc_auc"] = _clean(curves.curves[c].roc_auc)
        known = ~np.isnan(y)
        out.update({k: _clean(v) for k, v in ms.overall().items()})
        out.update(n_unlabelled=int((~known_rows).sum()), accuracy=_clean(ms.hamming_accuracy),
                   per_class=per_label, per_label=per_label,
                   mean_average_precision=_clean(curves.mean_average_precision),
                   ece=_clean(calibration_bins(y[known].astype(int), p[known]).ece) if known.any() else None,
                   thresholds={c: (ch.to_dict() if ch.reachable else None) for c, ch in choices.items()},
                   threshold_messages={c: ch.message for c, ch in choices.items()})
        return out
    if task == "hierarchical":
        levels = tuple(predictions.levels)
        keep = np.all([predictions.level_true[lv] >= 0 for lv in levels], axis=0)
        if not keep.any():
            raise ValueError("no rows with a known true label at every level to evaluate")
        blocks = {lv: _single_label_block(predictions.level_true[lv][keep], predictions.level_probs[lv][keep],
                                          tuple(predictions.level_classes[lv]), positive_class=None, kw=kw,
                                          y_pred=predictions.level_pred[lv][keep])
                  for lv in levels}
        names = {lv: np.array(predictions.level_classes[lv], dtype=object)[predictions.level_pred[lv]]
                 for lv in levels}
        consistent = hierarchy_consistency(names, levels=levels, parents=predictions.parents)
        out.update(blocks[levels[-1]])
        out.update(n_unlabelled=int((~keep).sum()), levels=blocks, level_order=list(levels),
                   consistency_rate=_clean(float(consistent.mean())) if len(consistent) else None)
        return out
    raise ValueError(f"predictions.task must be one of multiclass, binary, multilabel, hierarchical; "
                     f"received {task!r}")


def format_evaluation(result: Mapping[str, Any]) -> str:
    """A plain-text rendering of :func:`evaluate_predictions` (for the CLI without --json)."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    lines = [f"task: {result.get('task')}   split: {result.get('split', '?')}   samples: {result.get('n_samples')}"
             + (f"   (left out, no true label: {result['n_unlabelled']})" if result.get("n_unlabelled") else "")]
    if result.get("task") == "multilabel":
        lines.append(f"accuracy over known entries: {fmt(result.get('accuracy'))}   "
                     f"subset accuracy (known entries): {fmt(result.get('subset_accuracy'))}   "
                     f"micro F1: {fmt(result.get('micro_f1'))}   macro F1: {fmt(result.get('macro_f1'))}")
        cols = ["precision", "recall", "f1", "support", "n_known", "n_missing", "average_precision"]
    else:
        lines.append(f"accuracy: {fmt(result.get('accuracy'))}   macro F1: {fmt(result.get('macro_f1'))}   "
                     f"weighted F1: {fmt(result.get('weighted_f1'))}   ECE: {fmt(result.get('ece'))}")
        cols = ["precision", "recall", "f1", "support", "average_precision", "roc_auc"]
    for lv in result.get("level_order", []):
        b = result["levels"][lv]
        lines.append(f"  level {lv}: accuracy {fmt(b.get('accuracy'))}, macro F1 {fmt(b.get('macro_f1'))}")
    if "consistency_rate" in result:
        lines.append(f"hierarchy-consistent predictions: {fmt(result['consistency_rate'])}")
    table = pd.DataFrame.from_dict(result.get("per_class", {}), orient="index")
    table = table.apply(lambda col: pd.to_numeric(col, errors="coerce"))
    if not table.empty:
        lines.append(table[[c for c in cols if c in table.columns]].to_string(float_format=lambda x: f"{x:.3f}"))
    lines.append(f"thresholds at precision >= {result.get('target_precision')}:")
    for name, th in (result.get("thresholds") or {}).items():
        if th is None:
            lines.append(f"  {name}: {result.get('threshold_messages', {}).get(name, 'unreachable')}")
        else:
            pci, rci = th.get("precision_ci") or [None, None], th.get("recall_ci") or [None, None]
            lines.append(f"  {name}: threshold {fmt(th['threshold'])}  precision {fmt(th['precision'])} "
                         f"[{fmt(pci[0])}, {fmt(pci[1])}]  recall {fmt(th['recall'])} [{fmt(rci[0])}, {fmt(rci[1])}]")
    return "\n".join(lines)
