"""Out-of-distribution scores of embedding vectors (higher = more unusual), fitted on a run's train split.

:func:`fit_ood` fits a scorer (:data:`OOD_METHODS`: Mahalanobis distance to the nearest class
mean, Gaussian-mixture negative log-likelihood, k-nearest-neighbour cosine distance);
:func:`evaluate_ood` scores the test split against a set of unseen images (AUROC, threshold at
a false-alarm rate, :class:`OODEvaluation`); :func:`save_ood_threshold` writes the chosen
threshold to ``thresholds.json`` for Predict, and :func:`ood_model` / :func:`ood_scores`
score vectors with the saved method (the fitted scorer cached per embeddings file).

scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core import runs
from core.embeddings.compute import Embeddings, _check_vectors, compute_embeddings, embeddings_path

OOD_METHODS = ("mahalanobis", "gmm", "knn")
#: Default false-alarm rate on the test split for the out-of-distribution threshold.
DEFAULT_FPR = 0.05


@dataclass(frozen=True, eq=False)
class OODEvaluation:
    """Scores of the test split (in-distribution) and of unseen images, with the chosen threshold.

    ``auroc``: test = negative vs unseen = positive (NaN when either side is empty);
    ``threshold``: the (1 - fpr) quantile of the test scores, so about ``fpr`` of the
    test split is flagged; ``n_flagged``: unseen images scoring above it.
    """

    method: str
    test_scores: np.ndarray
    unseen_scores: np.ndarray
    auroc: float
    threshold: float
    fpr: float
    n_unseen: int
    n_flagged: int
    test_fpr: float
    model: Any = None

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "auroc": self.auroc, "threshold": self.threshold, "fpr": self.fpr,
                "n_test": int(len(self.test_scores)), "n_unseen": self.n_unseen, "n_flagged": self.n_flagged,
                "recall": (self.n_flagged / self.n_unseen) if self.n_unseen else float("nan"),
                "test_flagged_rate": self.test_fpr}


class OODModel:
    """A fitted out-of-distribution scorer: ``score(vectors)`` -> (N,), higher = more unusual."""

    method: str = ""

    def score(self, vectors: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class MahalanobisOOD(OODModel):
    """Smallest Mahalanobis distance to a class mean, with one shared (Ledoit-Wolf shrunk) covariance."""

    method = "mahalanobis"

    def fit(self, x: np.ndarray, labels: np.ndarray | None) -> "MahalanobisOOD":
        from sklearn.covariance import LedoitWolf

        groups = []
        if labels is not None:
            lab = np.asarray(labels, dtype=object)
            groups = [g for g in pd.unique(lab) if g != "" and (lab == g).sum() >= 2]
        if len(groups) < 1:
            self.means_ = x.mean(axis=0, keepdims=True)
            centred = x - self.means_
        else:
            lab = np.asarray(labels, dtype=object)
            self.means_ = np.stack([x[lab == g].mean(axis=0) for g in groups])
            centred = np.concatenate([x[lab == g] - self.means_[i] for i, g in enumerate(groups)])
        cov = LedoitWolf().fit(centred).covariance_
        self.precision_ = np.linalg.pinv(cov + 1e-6 * np.eye(cov.shape[0]) * max(np.trace(cov) / len(cov), 1e-12))
        self.classes_ = list(groups)
        return self

    #: Rows scored at once (bounds the (rows, D) float64 product with the precision matrix).
    CHUNK = 4096

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """(x - m)' P (x - m) = x'Px - 2 x'Pm + m'Pm for every class mean m at once: matrix
        products (BLAS), not a per-class loop over rows (a 3-operand einsum that took 6 s for 240
        vectors of 1280 dims and 12 classes)."""
        x = _check_vectors(vectors).astype(np.float64)
        pm = self.means_ @ self.precision_  # (C, D)
        mpm = (pm * self.means_).sum(axis=1)  # (C,)
        best = np.empty(len(x))
        for a in range(0, len(x), self.CHUNK):
            xa = x[a:a + self.CHUNK]
            xpx = ((xa @ self.precision_) * xa).sum(axis=1)
            best[a:a + self.CHUNK] = (xpx[:, None] - 2 * (xa @ pm.T) + mpm[None, :]).min(axis=1)
        return np.sqrt(np.maximum(best, 0.0))


class GMMOOD(OODModel):
    """Negative log-likelihood under a Gaussian mixture fitted on standardised train vectors."""

    method = "gmm"
    #: Wider vectors are reduced to this many principal components (fitted on train) first.
    MAX_DIMS = 64

    def fit(self, x: np.ndarray, labels: np.ndarray | None, *, seed: int = 0) -> "GMMOOD":
        from sklearn.mixture import GaussianMixture

        self.mu_ = x.mean(axis=0)
        self.sd_ = x.std(axis=0) + 1e-6
        z = (x - self.mu_) / self.sd_
        self.pca_ = None
        if z.shape[1] > self.MAX_DIMS:  # a full-covariance mixture in 1,000+ dims is neither stable nor fast
            from sklearn.decomposition import PCA

            self.pca_ = PCA(n_components=min(self.MAX_DIMS, len(z) - 1), random_state=seed).fit(z)
            z = self.pca_.transform(z)
        k = len(set(np.asarray(labels, dtype=object)) - {""}) if labels is not None else 0
        k = int(np.clip(k or 8, 1, max(1, min(20, len(x) // 10))))
        self.gmm_ = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-2, random_state=seed,
                                    max_iter=200).fit(z)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        x = _check_vectors(vectors).astype(np.float64)
        z = (x - self.mu_) / self.sd_
        if self.pca_ is not None:
            z = self.pca_.transform(z)
        return -self.gmm_.score_samples(z)


class KNNOOD(OODModel):
    """Mean cosine distance to the k nearest train vectors, through a faiss index
    (:func:`core.neighbors.cosine_index`), so scoring N images against M train vectors never builds
    an N x M matrix. Exact up to :attr:`EXACT_LIMIT` train vectors; above, approximate (inverted
    lists on the leading principal components, candidates re-ranked exactly): a score needs its
    neighbours' distances, not every pair, and exact search would grow as N x M. Measured on the
    ImageNet features of 30k / 100k photos (``bench/bench_scale.py``'s, 21k / 70k of them train):
    fit and score every image in 4.6 / 12.8 s where exact search took 9.4 / 104 s; about 0.99 of
    the true 10 nearest found, scores correlated 0.9998 with the exact ones at 30k."""

    method = "knn"
    EXACT_LIMIT = 10_000

    def fit(self, x: np.ndarray, labels: np.ndarray | None, *, k: int = 10) -> "KNNOOD":
        from core.neighbors import cosine_index

        self.k = int(max(1, min(k, len(x))))
        self.index_ = cosine_index(np.asarray(x, np.float32), exact_limit=self.EXACT_LIMIT)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        from core.neighbors import cosine_search

        sim, _ = cosine_search(self.index_, _check_vectors(vectors).astype(np.float32), self.k)
        return (1.0 - sim.astype(np.float64)).mean(axis=1)  # cosine distance


_OOD_CLASSES = {"mahalanobis": MahalanobisOOD, "gmm": GMMOOD, "knn": KNNOOD}


def fit_ood(emb: Embeddings, *, method: str = "mahalanobis", split: str | None = "train") -> OODModel:
    """Fit an out-of-distribution scorer on the embeddings of one split (default: train).

    Parameters
    ----------
    emb : Embeddings
    method : {"mahalanobis", "gmm", "knn"}
        ``"mahalanobis"``: distance to the nearest class mean under a shared covariance;
        ``"gmm"``: negative log-likelihood under a Gaussian mixture (one component per
        class); ``"knn"``: mean cosine distance to the 10 nearest train vectors.
    split : str or None
        Which split to fit on (``None``: all samples).

    Returns
    -------
    OODModel
        ``.score(vectors)`` -> ndarray (N,), higher = more unusual.
    """
    if method not in _OOD_CLASSES:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    mask = np.ones(len(emb), bool) if split is None else emb.split_mask(split)
    if mask.sum() < 3:
        raise ValueError(f"the {split!r} split has {int(mask.sum())} embedded samples; need at least 3 to fit "
                         "an out-of-distribution scorer")
    x = emb.vectors[mask].astype(np.float64)
    labels = emb.labels[mask] if emb.task != "multilabel" else None
    return _OOD_CLASSES[method]().fit(x, labels)


def threshold_at_fpr(scores_in: np.ndarray, fpr: float) -> float:
    """Score above which about ``fpr`` of the in-distribution scores lie (the (1 - fpr) quantile)."""
    s = np.asarray(scores_in, dtype=float)
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1); received fpr={fpr!r}")
    if len(s) == 0:
        raise ValueError("need at least one in-distribution score to choose a threshold")
    return float(np.quantile(s, 1.0 - fpr, method="higher")) if fpr > 0 else float(s.max())


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """Area under the ROC curve for telling ``scores_out`` (positive) from ``scores_in``; NaN if one is empty."""
    from sklearn.metrics import roc_auc_score

    a, b = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


def evaluate_ood(emb: Embeddings, unseen_vectors: np.ndarray | None, *, method: str = "mahalanobis",
                 fpr: float = DEFAULT_FPR, model: OODModel | None = None) -> OODEvaluation:
    """Score the test split (in-distribution) and unseen images; AUROC and the threshold at ``fpr``.

    The scorer is fitted on the train split (or ``model`` is used). When the dataset has no
    test split, the val split stands in.
    """
    model = model or fit_ood(emb, method=method)
    ref = "test" if emb.split_mask("test").any() else "val"
    test_scores = model.score(emb.vectors[emb.split_mask(ref)]) if emb.split_mask(ref).any() else np.zeros(0)
    if unseen_vectors is not None and len(unseen_vectors):
        unseen_scores = model.score(unseen_vectors)
    else:
        unseen_scores = np.zeros(0)
    thr = threshold_at_fpr(test_scores, fpr)
    return OODEvaluation(
        method=model.method, test_scores=test_scores, unseen_scores=unseen_scores,
        auroc=auroc(test_scores, unseen_scores), threshold=thr, fpr=float(fpr),
        n_unseen=int(len(unseen_scores)), n_flagged=int((unseen_scores > thr).sum()),
        test_fpr=float((test_scores > thr).mean()) if len(test_scores) else float("nan"), model=model,
    )


_OOD_CACHE: "OrderedDict[tuple, OODModel]" = OrderedDict()
_OOD_LOCK = threading.Lock()


def ood_model(run_dir, *, method: str | None = None, workspace=None) -> OODModel:
    """The run's OOD scorer fitted on its train embeddings (cached per embeddings file and method).

    ``method=None``: the method saved in ``thresholds.json`` (``ood`` section), else Mahalanobis.
    """
    rd = runs.as_run_dir(run_dir)
    if method is None:
        method = (runs.read_thresholds(rd).get("ood") or {}).get("method") or "mahalanobis"
    if method not in _OOD_CLASSES:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    emb = compute_embeddings(rd, workspace=workspace)
    path = embeddings_path(rd)
    key = (str(path.resolve()), path.stat().st_mtime_ns, method)
    with _OOD_LOCK:
        if key in _OOD_CACHE:
            return _OOD_CACHE[key]
    model = fit_ood(emb, method=method)
    with _OOD_LOCK:
        _OOD_CACHE[key] = model
        while len(_OOD_CACHE) > 8:
            _OOD_CACHE.popitem(last=False)
    return model


def ood_scores(run_dir, vectors: np.ndarray, *, method: str | None = None, workspace=None) -> np.ndarray:
    """Out-of-distribution scores (N,) of embedding vectors for a run; higher = more unusual.

    Uses the method saved with the run's threshold (``thresholds.json`` ``ood.method``),
    else ``method``, else Mahalanobis; fitted on the run's train embeddings and cached.
    Compare with ``runs.read_thresholds(run_dir)["ood"]["threshold"]`` to flag an image
    as unlike anything in training.
    """
    return ood_model(run_dir, method=method, workspace=workspace).score(vectors)


def save_ood_threshold(run_dir, *, method: str, threshold: float, fpr: float, **meta: Any) -> dict[str, Any]:
    """Write the out-of-distribution threshold to ``thresholds.json`` (section ``ood``; others kept).

    ``meta``: anything else worth recording (``auroc``, ``n_unseen``, ``unseen``...).
    Returns the whole file as written.
    """
    if method not in OOD_METHODS:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; received threshold={threshold!r}")
    section = {"method": method, "threshold": threshold, "fpr": float(fpr), "split": "test",
               "higher_is_unusual": True, "saved_at": time.time(), **meta}
    return runs.write_thresholds(runs.as_run_dir(run_dir), ood=section)
