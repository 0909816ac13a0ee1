"""Maps of embedding vectors: PCA / UMAP projections to 2-D or 3-D, and which points to draw.

:func:`project` maps vectors with one of :data:`PROJECTIONS`; the returned :class:`Projection`
keeps the fitted model so new points are placed on the same map with
``projection.model.transform(vectors)`` -- no refit. :func:`warm_up_umap` compiles UMAP's
numba code ahead of a user's first map; :func:`sample_for_display` picks the points a
large map draws.

scikit-learn and umap-learn are imported inside the functions that use them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.embeddings.compute import _check_vectors

PROJECTION_METHODS = ("pca", "umap")


@dataclass(frozen=True, eq=False)
class Projection:
    """Points of a 2-D / 3-D map; ``model.transform(vectors)`` places new points without refitting."""

    points: np.ndarray
    method: str
    dims: int
    params: dict[str, Any]
    model: Any


class _PCAMap:
    """PCA to ``dims`` (padded with zeros when the data has fewer dimensions)."""

    def __init__(self, dims: int, seed: int):
        self.dims = dims
        self.seed = seed

    def fit(self, x: np.ndarray) -> "_PCAMap":
        from sklearn.decomposition import PCA

        n_comp = max(1, min(self.dims, x.shape[0], x.shape[1]))
        # many points, few dimensions (embeddings): the D x D covariance's eigenvectors are exact and fast
        solver = "covariance_eigh" if x.shape[1] <= 1024 and x.shape[0] >= 4 * x.shape[1] else "full"
        self.pca_ = PCA(n_components=n_comp, random_state=self.seed, svd_solver=solver).fit(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _check_vectors(x)
        out = self.pca_.transform(x).astype(np.float32)
        if out.shape[1] < self.dims:
            out = np.hstack([out, np.zeros((len(out), self.dims - out.shape[1]), np.float32)])
        return out

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        return self.pca_.explained_variance_ratio_


class _UMAPMap:
    """UMAP to ``dims``; ``transform`` embeds new points into the fitted map (no refit)."""

    def __init__(self, dims: int, seed: int, n_neighbors: int, min_dist: float, n_epochs: int | None = None):
        self.dims = dims
        self.seed = seed
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs

    def fit(self, x: np.ndarray) -> "_UMAPMap":
        try:
            import umap
        except ImportError as exc:  # pragma: no cover - umap-learn is a requirement
            raise ImportError("UMAP needs umap-learn (pip install umap-learn); use method='pca' meanwhile") from exc
        nn = max(2, min(self.n_neighbors, x.shape[0] - 1))
        self.umap_ = umap.UMAP(n_components=self.dims, n_neighbors=nn, min_dist=self.min_dist,
                               n_epochs=self.n_epochs, random_state=self.seed, n_jobs=1,
                               init="spectral" if x.shape[0] > self.dims + 2 else "random")
        self.embedding_ = self.umap_.fit_transform(x).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _check_vectors(x)
        return np.asarray(self.umap_.transform(x), dtype=np.float32)


def _pca(vectors: np.ndarray, *, dims: int, seed: int, **_: Any) -> tuple[np.ndarray, Any, dict]:
    m = _PCAMap(dims, seed).fit(vectors)
    return m.transform(vectors), m, {"explained_variance_ratio": [float(v) for v in m.explained_variance_ratio_]}


def _umap(vectors: np.ndarray, *, dims: int, seed: int, n_neighbors: int = 15, min_dist: float = 0.1,
          fit_size: int | None = None, n_epochs: int | None = None, **_: Any) -> tuple[np.ndarray, Any, dict]:
    n = len(vectors)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points; received {n} (use method='pca')")
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist}
    if fit_size is not None and n > fit_size:
        rng = np.random.default_rng(seed)
        fit_idx = np.sort(rng.choice(n, size=int(fit_size), replace=False))
        m = _UMAPMap(dims, seed, n_neighbors, min_dist, n_epochs).fit(vectors[fit_idx])
        points = np.zeros((n, dims), np.float32)
        rest = np.setdiff1d(np.arange(n), fit_idx)
        points[fit_idx] = m.embedding_
        points[rest] = m.transform(vectors[rest])
        params["fit_size"] = int(fit_size)
        return points, m, params
    m = _UMAPMap(dims, seed, n_neighbors, min_dist, n_epochs).fit(vectors)
    return m.embedding_, m, params


#: method -> function(vectors, *, dims, seed, **options) -> (points, model, params).
PROJECTIONS: dict[str, Callable[..., tuple[np.ndarray, Any, dict]]] = {"pca": _pca, "umap": _umap}


def project(vectors: np.ndarray, *, method: str = "pca", dims: int = 2, seed: int = 0, **options: Any) -> Projection:
    """Map vectors to 2-D or 3-D.

    Parameters
    ----------
    vectors : ndarray of shape (N, D)
    method : {"pca", "umap"}
    dims : {2, 3}
    seed : int
        Same seed, same input -> same points.
    **options
        UMAP: ``n_neighbors`` (15), ``min_dist`` (0.1), ``n_epochs`` (default: umap-learn's),
        ``fit_size`` (fit on a seeded random subset of this many points and place the rest with ``transform``: how a
        50k-point map stays interactive).

    Returns
    -------
    Projection
        ``points`` float32 (N, dims); ``model.transform(new_vectors)`` places new points
        on the same map without refitting.

    Examples
    --------
    >>> p = project(np.eye(5, 3), method="pca", dims=2)
    >>> p.points.shape
    (5, 2)
    """
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {list(PROJECTIONS)}; received method={method!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3; received dims={dims!r}")
    x = _check_vectors(vectors)
    t = time.perf_counter()
    points, model, params = PROJECTIONS[method](x, dims=dims, seed=int(seed), **options)
    params = {**params, "seed": int(seed), "n": int(len(x)), "seconds": round(time.perf_counter() - t, 3)}
    return Projection(points=np.asarray(points, np.float32), method=method, dims=dims, params=params, model=model)


def warm_up_umap(*, n: int = 300, dims: int = 2, seed: int = 0) -> float:
    """Fit and apply a cheap UMAP so numba compiles its functions in this process; returns seconds taken.

    Few optimisation epochs: the compiled code is the same as a real map's, the work is not.
    Use ``n`` > 4096 to compile the approximate-neighbours path that larger maps take.
    """
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    p = project(x, method="umap", dims=dims, seed=seed, n_epochs=5)
    p.model.transform(x[:10])
    return time.perf_counter() - t


def sample_for_display(n: int, max_points: int, *, keep: np.ndarray | None = None,
                       strata: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points to draw, sorted.

    Every ``keep`` point (e.g. mistakes, flagged samples) is kept; the rest is a seeded
    random sample stratified by ``strata`` (e.g. labels) so small classes stay visible.
    """
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep_idx = np.flatnonzero(keep) if keep is not None else np.zeros(0, np.int64)
    if len(keep_idx) >= max_points:
        return np.sort(rng.choice(keep_idx, size=max_points, replace=False))
    rest = np.setdiff1d(np.arange(n), keep_idx)
    budget = max_points - len(keep_idx)
    if strata is None:
        pick = rng.choice(rest, size=budget, replace=False)
    else:
        s = np.asarray(strata)[rest]
        groups = {g: rest[s == g] for g in pd.unique(s)}
        floor = max(1, budget // (4 * max(len(groups), 1)))  # every group gets at least a few points
        pick_list = []
        for g, idx in groups.items():
            share = max(floor, int(round(budget * len(idx) / len(rest))))
            pick_list.append(rng.choice(idx, size=min(share, len(idx)), replace=False))
        pick = np.concatenate(pick_list)
        if len(pick) > budget:
            pick = rng.choice(pick, size=budget, replace=False)
    return np.sort(np.concatenate([keep_idx, pick]))
