"""Scores of predictions as the fit loop records them each epoch: loss, accuracy and macro F1.

The training worker's val metrics (``metrics.jsonl``) and the run's final val / test
figures come from :func:`epoch_scores`; the evaluation of a finished run's predictions
(thresholds, curves, calibration) is :mod:`core.metrics.evaluation`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _xent(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def _masked_bce(Y: np.ndarray, P: np.ndarray) -> float:
    known = ~np.isnan(Y)
    y = np.where(known, Y, 0.0)
    p = np.clip(P, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)) * known
    per = bce.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return float(per.mean())


def epoch_scores(task: str, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and macro F1 (multi-label: and mAP) of predicted probabilities against targets.

    Parameters
    ----------
    task : str
        ``"multilabel"`` or a single-label task (hierarchical: leaf level).
    y : ndarray
        int (N,) class indices (rows with -1 are ignored), or float (N, K) with NaN missing.
    probs : ndarray of shape (N, K)

    Returns
    -------
    dict : ``loss``, ``accuracy`` (multi-label: over known entries), ``macro_f1``
        (multi-label: mean over labels with a known entry, each on its known rows), ``n``;
        multi-label adds ``map``: the mean, over labels with a known positive, of scikit-learn's
        average precision on the label's known rows (as :func:`core.metrics.multilabel_summary`).
    """
    from sklearn.metrics import average_precision_score, f1_score

    probs = np.asarray(probs, dtype=float)
    if task == "multilabel":
        Y = np.asarray(y, dtype=float)
        known = ~np.isnan(Y)
        if not known.any():
            return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "map": float("nan"),
                    "n": int(len(Y))}
        pred = (probs >= 0.5).astype(float)
        acc = float((pred[known] == Y[known]).mean())
        f1s = [f1_score(Y[known[:, j], j].astype(int), pred[known[:, j], j].astype(int), zero_division=0)
               for j in range(Y.shape[1]) if known[:, j].any()]
        aps = [average_precision_score(Y[known[:, j], j].astype(int), probs[known[:, j], j])
               for j in range(Y.shape[1]) if (Y[known[:, j], j] == 1).any()]
        return {"loss": _masked_bce(Y, probs), "accuracy": acc, "macro_f1": float(np.mean(f1s)),
                "map": float(np.mean(aps)) if aps else float("nan"), "n": int(len(Y))}
    y = np.asarray(y, dtype=np.int64)
    ok = y >= 0
    if not ok.any():
        return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    y, probs = y[ok], probs[ok]
    pred = probs.argmax(axis=1)
    return {
        "loss": _xent(y, probs),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=np.arange(probs.shape[1]), average="macro", zero_division=0)),
        "n": int(len(y)),
    }


def finite_number(v: Any) -> bool:
    """Whether ``v`` converts to a finite float (None, NaN, inf and text do not)."""
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
