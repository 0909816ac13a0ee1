"""Argument checks shared by every metric: class names, probability matrices, single- and multi-label targets.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


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
