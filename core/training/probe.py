"""The linear probe: logistic regressions on frozen backbone features, as head weights.

Softmax heads get one multinomial regression (:func:`probe_coefs`), sigmoid heads one
regression per label on the rows where it is known (:func:`multilabel_coefs`); the C that
the trainer picks comes from :data:`PROBE_CS`, by :data:`PROBE_FOLDS`-fold cross-validation
of the training split (:func:`probe_folds`).
"""

from __future__ import annotations

import warnings

import numpy as np


#: Inverse L2 strengths tried for a linear-probe head (``probe_head``), picked by cross-validation on train.
PROBE_CS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Folds of the cross-validation that picks the probe's C on the training split.
PROBE_FOLDS = 3


def probe_folds(y_train: np.ndarray, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the training rows for picking C, or ``[]`` when too few images per class."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y_train)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.max() < PROBE_FOLDS or len(y_train) < 2 * PROBE_FOLDS:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer images than folds: scikit-learn warns, and copes
        return list(StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=seed).split(y_train, y_train))


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float, class_weight):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on tiny sets
        return LogisticRegression(C=c, max_iter=1000, class_weight=class_weight).fit(x, y)


def probe_coefs(clf, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted logistic regression as ``(coef (k, d), intercept (k,))`` over all ``k`` classes."""
    coef = np.zeros((k, clf.coef_.shape[1]))
    intercept = np.full(k, -30.0)  # classes absent from the training rows: never predicted
    present = clf.classes_.astype(np.int64)
    if len(present) == 2 and clf.coef_.shape[0] == 1:  # binary: logits (0, z) give sigmoid(z)
        coef[present[1]], intercept[present] = clf.coef_[0], (0.0, clf.intercept_[0])
    else:
        coef[present], intercept[present] = clf.coef_, clf.intercept_
    return coef, intercept


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def multilabel_coefs(x: np.ndarray, Y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per label on the rows where it is known, 0 or 1 (NaN, and the soft values an
    imputation writes, are left out): ``(coef (K, d), intercept (K,))``. A label with one value on those rows
    gets a constant logit (+-8: p 0.9997)."""
    k, d = Y.shape[1], x.shape[1]
    coef, intercept = np.zeros((k, d)), np.zeros(k)
    for j in range(k):
        known = (Y[:, j] == 0) | (Y[:, j] == 1)
        yj = Y[known, j].astype(np.int64)
        if len(np.unique(yj)) < 2:
            intercept[j] = 8.0 if len(yj) and yj[0] == 1 else -8.0
            continue
        clf = fit_logistic(x[known], yj, c, None)
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
    return coef, intercept


def softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)
