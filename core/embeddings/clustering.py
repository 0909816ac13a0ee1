"""Clusters of embedding vectors: Gaussian mixture (k by BIC) or agglomerative (Ward), against the labels.

:func:`cluster` standardises and reduces the vectors, groups them and measures agreement
with the labels (adjusted Rand index, purity); the :class:`Clustering` result also holds a
per-cluster table and each cluster's most typical samples.

scikit-learn is imported inside the functions that use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.embeddings.compute import _check_vectors

CLUSTER_METHODS = ("gmm", "agglomerative")
#: Agglomerative clustering and the BIC search run on at most this many points (the rest are assigned).
CLUSTER_FIT_MAX = 4000


@dataclass(frozen=True, eq=False)
class Clustering:
    """Cluster assignment of N points.

    ``labels`` int (N,) in 0..k-1; ``bic`` a table (k, bic) of the BIC search (GMM; empty
    for agglomerative); ``ari`` adjusted Rand index against the true labels and
    ``purity`` (share of samples in their cluster's majority label), NaN without labels;
    ``table`` one row per cluster (cluster, size, top_label, top_share); ``typical``
    cluster -> indices of the samples nearest its centre (most typical first).
    """

    labels: np.ndarray
    k: int
    method: str
    bic: pd.DataFrame
    ari: float
    purity: float
    table: pd.DataFrame
    typical: dict[int, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


def _reduce(x: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, Any]:
    from sklearn.decomposition import PCA

    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    if x.shape[1] <= dims:
        return x, None
    pca = PCA(n_components=dims, random_state=seed).fit(x)
    return pca.transform(x), pca


def _agreement(pred: np.ndarray, true: np.ndarray | None) -> tuple[float, float]:
    from sklearn.metrics import adjusted_rand_score

    if true is None:
        return float("nan"), float("nan")
    true = np.asarray(true, dtype=object)
    known = true != ""
    if known.sum() < 2:
        return float("nan"), float("nan")
    ari = float(adjusted_rand_score(true[known], pred[known]))
    ct = pd.crosstab(pred[known], true[known])
    purity = float(ct.max(axis=1).sum() / known.sum())
    return ari, purity


def cluster(vectors: np.ndarray, *, method: str = "gmm", k: int | None = None, true_labels: np.ndarray | None = None,
            k_range: Sequence[int] | None = None, n_typical: int = 6, seed: int = 0,
            reduce_dims: int = 20) -> Clustering:
    """Cluster embedding vectors and compare the clusters with the labels.

    The vectors are standardised and reduced to ``reduce_dims`` principal components
    first (a stable space for Gaussian mixtures).

    Parameters
    ----------
    vectors : ndarray of shape (N, D)
    method : {"gmm", "agglomerative"}
        ``"gmm"``: Gaussian mixture (full covariance); with ``k=None`` the k of lowest BIC
        over ``k_range`` (default 2..min(15, N-1)). ``"agglomerative"``: Ward linkage on at
        most :data:`CLUSTER_FIT_MAX` points, the rest assigned to the nearest cluster
        centre; ``k=None`` means the number of distinct labels (else 8).
    k : int, optional
    true_labels : ndarray of shape (N,), str, optional
        For the adjusted Rand index and purity ("" = unknown, left out).
    n_typical : int
        Samples per cluster in ``typical`` (nearest the cluster centre first).

    Returns
    -------
    Clustering
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.mixture import GaussianMixture

    if method not in CLUSTER_METHODS:
        raise ValueError(f"method must be one of {list(CLUSTER_METHODS)}; received method={method!r}")
    x = _check_vectors(vectors)
    n = len(x)
    if n < 3:
        raise ValueError(f"clustering needs at least 3 points; received {n}")
    if k is not None and (not isinstance(k, (int, np.integer)) or not 1 <= k < n):
        raise ValueError(f"k must be an int in 1..{n - 1}; received k={k!r}")
    if true_labels is not None and len(true_labels) != n:
        raise ValueError(f"true_labels must have {n} entries; received {len(true_labels)}")
    z, _ = _reduce(x.astype(np.float64), reduce_dims, seed)
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=CLUSTER_FIT_MAX, replace=False)) if n > CLUSTER_FIT_MAX else np.arange(n)
    zf = z[fit_idx]
    bic = pd.DataFrame(columns=["k", "bic"])
    params: dict[str, Any] = {"reduce_dims": min(reduce_dims, x.shape[1]), "n_fit": int(len(fit_idx))}
    if method == "gmm":
        def gmm(kk: int):
            return GaussianMixture(n_components=kk, covariance_type="full", reg_covar=1e-3, random_state=seed,
                                   n_init=1, max_iter=200).fit(zf)
        if k is None:
            ks = list(k_range) if k_range is not None else list(range(2, min(15, len(zf) - 1) + 1))
            ks = [kk for kk in ks if 1 <= kk < len(zf)]
            if not ks:
                raise ValueError(f"no usable k in k_range={k_range!r} for {len(zf)} points")
            rows, models = [], {}
            for kk in ks:
                m = gmm(kk)
                models[kk] = m
                rows.append({"k": kk, "bic": float(m.bic(zf))})
            bic = pd.DataFrame(rows)
            k = int(bic.loc[bic["bic"].idxmin(), "k"])
            model = models[k]
        else:
            model = gmm(int(k))
            bic = pd.DataFrame([{"k": int(k), "bic": float(model.bic(zf))}])
        labels = model.predict(z)
        centres = model.means_
    else:
        if k is None:
            distinct = len(set(np.asarray(true_labels, dtype=object)) - {""}) if true_labels is not None else 0
            k = distinct if 2 <= distinct < len(zf) else min(8, len(zf) - 1)
        agg = AgglomerativeClustering(n_clusters=int(k), linkage="ward").fit(zf)
        centres = np.stack([zf[agg.labels_ == c].mean(axis=0) for c in range(int(k))])
        labels = np.empty(n, dtype=np.int64)
        labels[fit_idx] = agg.labels_
        rest = np.setdiff1d(np.arange(n), fit_idx)
        if len(rest):
            d = ((z[rest, None, :] - centres[None]) ** 2).sum(-1)
            labels[rest] = d.argmin(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    # renumber clusters by size (largest first), dropping empty ones
    sizes = np.bincount(labels, minlength=int(k))
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    remap = {int(c): i for i, c in enumerate(order)}
    labels = np.array([remap[int(c)] for c in labels], dtype=np.int64)
    centres = centres[order]
    k_eff = len(order)
    ari, purity = _agreement(labels, true_labels)
    rows, typical = [], {}
    true = np.asarray(true_labels, dtype=object) if true_labels is not None else None
    for c in range(k_eff):
        members = np.flatnonzero(labels == c)
        d = ((z[members] - centres[c]) ** 2).sum(axis=1)
        typical[c] = members[np.argsort(d, kind="stable")[:n_typical]]
        row = {"cluster": c, "size": int(len(members))}
        if true is not None:
            known = true[members]
            known = known[known != ""]
            if len(known):
                vc = pd.Series(known).value_counts()
                row.update(top_label=str(vc.index[0]), top_share=float(vc.iloc[0] / len(known)),
                           n_labels=int(len(vc)))
        rows.append(row)
    table = pd.DataFrame(rows)
    return Clustering(labels=labels, k=k_eff, method=method, bic=bic, ari=ari, purity=purity, table=table,
                      typical=typical, params={**params, "k_requested": int(k)})
