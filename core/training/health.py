"""Health alerts raised while a run trains: predictions collapsed onto one answer, and a
widening train-val gap (NaN losses are caught per batch by the callbacks).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from core.metrics.epoch import finite_number

#: The collapse alert fires when predictions stay collapsed for this many consecutive epochs.
COLLAPSE_EPOCHS = 2

def collapse_alert(task: str, y: np.ndarray, probs: np.ndarray, names: Sequence[str], *,
                   share: float = 0.95) -> dict[str, Any] | None:
    """Detect predictions collapsed onto one answer while the labels are spread out.

    Single-label: more than ``share`` of the predictions are one class while the most
    common true class holds less than ``share`` of the labels (the seeds' "accuracy stuck
    at 0.2"). Multi-label: every label is predicted the same way (all 0 or all 1) for
    more than ``share`` of the rows while some label varies in truth.

    Returns
    -------
    dict or None : an alert ``{"kind": "collapse", "message", "suggestion", "share", "class"}``.
    """
    probs = np.asarray(probs)
    if len(probs) < 5:
        return None
    if task == "multilabel":
        Y = np.asarray(y, dtype=float)
        pred = probs >= 0.5
        rate = pred.mean(axis=0)
        const = np.maximum(rate, 1 - rate)
        counts = (~np.isnan(Y)).sum(axis=0)
        true_rate = np.where(counts > 0, np.nansum(Y, axis=0) / np.maximum(counts, 1), np.nan)
        varies = np.nan_to_num(np.minimum(true_rate, 1 - true_rate), nan=0.0) > (1 - share)
        if np.all(const > share) and varies.any():
            return {"kind": "collapse", "share": float(const.min()), "class": None,
                    "message": "Predictions collapsed: every label gets the same answer for almost every image "
                               "while the true labels vary.",
                    "suggestion": "Lower the learning rate (e.g. 10x), check label balance, and check that the "
                                  "images differ (not all blank)."}
        return None
    y = np.asarray(y, dtype=np.int64)
    ok = y >= 0
    if ok.sum() < 5:
        return None
    pred = probs[ok].argmax(axis=1)
    top, n_top = Counter(pred.tolist()).most_common(1)[0]
    pred_share = n_top / len(pred)
    true_share = Counter(y[ok].tolist()).most_common(1)[0][1] / ok.sum()
    if pred_share > share and true_share < share:
        k = probs.shape[1]
        return {"kind": "collapse", "share": float(pred_share), "class": str(names[top]),
                "message": f"Predictions collapsed onto one class: {pred_share:.0%} of the val predictions are "
                           f"{names[top]!r} while the labels are spread over {k} classes (accuracy stuck near "
                           f"{true_share:.2f} or 1/{k} is this failure).",
                "suggestion": "Lower the learning rate (e.g. 10x smaller), check class balance (turn on class "
                              "weights or exclude rare classes), and check that the images are not all alike."}
    return None


def gap_alert(history: Sequence[Mapping[str, Any]], *, window: int = 3, rise: float = 0.05) -> dict[str, Any] | None:
    """A widening train-val gap: ``val_loss - loss`` grew over the last ``window`` epochs
    while the train loss fell and val loss sits ``rise`` above its best."""
    rows = [h for h in history if finite_number(h.get("loss")) and finite_number(h.get("val_loss"))]
    if len(rows) < window + 1:
        return None
    last = rows[-(window + 1):]
    gaps = [h["val_loss"] - h["loss"] for h in last]
    widening = all(b > a for a, b in zip(gaps, gaps[1:]))
    train_falling = last[-1]["loss"] < last[0]["loss"]
    best_val = min(h["val_loss"] for h in rows)
    if widening and train_falling and last[-1]["val_loss"] > best_val * (1 + rise) and gaps[-1] > 0:
        return {"kind": "overfitting", "gap": float(gaps[-1]),
                "message": f"The train-val gap is widening: val loss {last[-1]['val_loss']:.3f} vs train loss "
                           f"{last[-1]['loss']:.3f}, growing for {window} epochs (best val loss {best_val:.3f}).",
                "suggestion": "The model is memorising the train split: use augmentation, more dropout, a smaller "
                              "model or fewer epochs (early stopping keeps the best checkpoint)."}
    return None
