"""Hierarchical metrics: per-level summaries and how often the predicted levels agree with the tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from core.metrics.checks import _check_classes
from core.metrics.classification import ClassificationSummary, classification_summary


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
