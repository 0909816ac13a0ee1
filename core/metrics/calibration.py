"""Calibration: reliability bins, expected calibration error and temperature scaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.metrics.checks import _check_binary, _check_probs, _check_single_labels


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
