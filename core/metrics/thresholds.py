"""The threshold that reaches a target precision, per class, with a bootstrap interval of what it gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from core.metrics.checks import _check_binary, _check_classes, _check_multilabel, _check_probs, _check_single_labels


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
