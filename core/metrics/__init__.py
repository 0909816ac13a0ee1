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

Where things live: :mod:`~core.metrics.classification` (single-label summary, decision
thresholds, confident mistakes), :mod:`~core.metrics.curves` (PR / ROC), :mod:`~core.metrics.thresholds`
(threshold at a target precision), :mod:`~core.metrics.multilabel`, :mod:`~core.metrics.hierarchical`,
:mod:`~core.metrics.calibration`, :mod:`~core.metrics.evaluation` (a run's whole evaluation and run
comparison), :mod:`~core.metrics.epoch` (the fit loop's per-epoch scores); argument checks in
:mod:`~core.metrics.checks`. This face only hands their public names on.
"""

from __future__ import annotations

from core.metrics.calibration import (
    Calibration, TemperatureFit, apply_temperature, calibration_bins, expected_calibration_error, fit_temperature,
)
from core.metrics.classification import (
    ClassificationSummary, apply_thresholds, classification_summary, confident_mistakes,
)
from core.metrics.curves import Curve, CurveSet, binary_curve, multilabel_curves, one_vs_rest_curves
from core.metrics.epoch import epoch_scores, finite_number
from core.metrics.evaluation import RunComparison, compare_runs, evaluate_predictions, format_evaluation
from core.metrics.hierarchical import HierarchicalSummary, hierarchical_summary, hierarchy_consistency
from core.metrics.multilabel import MultilabelSummary, multilabel_mistakes, multilabel_summary
from core.metrics.thresholds import ThresholdChoice, threshold_at_precision, thresholds_at_precision

__all__ = [
    "Calibration",
    "ClassificationSummary",
    "Curve",
    "CurveSet",
    "HierarchicalSummary",
    "MultilabelSummary",
    "RunComparison",
    "TemperatureFit",
    "ThresholdChoice",
    "apply_temperature",
    "apply_thresholds",
    "binary_curve",
    "calibration_bins",
    "classification_summary",
    "compare_runs",
    "confident_mistakes",
    "epoch_scores",
    "evaluate_predictions",
    "expected_calibration_error",
    "finite_number",
    "fit_temperature",
    "format_evaluation",
    "hierarchical_summary",
    "hierarchy_consistency",
    "multilabel_curves",
    "multilabel_mistakes",
    "multilabel_summary",
    "one_vs_rest_curves",
    "threshold_at_precision",
    "thresholds_at_precision",
]
