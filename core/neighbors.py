"""Nearest neighbours by cosine similarity or Euclidean distance without an N x N matrix (faiss).

:func:`cosine_neighbors` finds each vector's ``k`` most similar others; :func:`l2_index` /
:func:`l2_search` find the closest by squared Euclidean distance. Below
:data:`EXACT_LIMIT` vectors it searches exhaustively (``IndexFlatIP`` on unit vectors: exact,
and at 50k x 1280 floats still seconds on 2 cores); above, an inverted-file index
(``4 * sqrt(N)`` lists trained on a sample), so time grows about as N * sqrt(N) and memory as
N: no quadratic step anywhere. Wide vectors (more than ``2 *`` :data:`REDUCED_DIMS` dims, such
as 1280-dim ImageNet features) are searched in their first :data:`REDUCED_DIMS` principal
components and the ``4 k`` candidates found are re-ranked by their exact distance
(faiss' ``PCA128,IVF...,Flat,RFlat``): 3x faster than the plain inverted lists on 100k
features, and closer to exact (true 10 nearest found 0.99 of the time against 0.98).

>>> import numpy as np
>>> v = np.array([[1, 0], [0.99, 0.1], [0, 1]], np.float32)
>>> sim, idx = cosine_neighbors(v, 1)
>>> idx[:, 0].tolist()
[1, 0, 1]
"""

from __future__ import annotations

import numpy as np

#: Exhaustive search up to this many vectors; an IVF index above.
EXACT_LIMIT = 50_000
#: Inverted lists probed per query in the IVF index of narrow vectors.
NPROBE = 16
#: Wide vectors are searched in this many principal components, then re-ranked exactly ...
REDUCED_DIMS = 128
#: ... probing this many lists, and re-ranking this many times k candidates. Measured on 100k
#: ImageNet features of real photos (70k indexed): true 10 nearest found 0.994 of the time, 10.7 s
#: to build and search; plain inverted lists at 16 probes: 0.980, 30.8 s.
NPROBE_REDUCED = 48
REFINE_FACTOR = 4
#: Queries per search call (bounds the (chunk, k) result buffers and faiss' scratch space).
_CHUNK = 16_384


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (all-zero rows stay zero)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def cosine_index(vectors: np.ndarray, *, seed: int = 0, exact_limit: int = EXACT_LIMIT):
    """A faiss index of ``vectors`` scaled to unit length, for :func:`cosine_search`: exhaustive up to
    ``exact_limit`` rows, inverted lists above (see the module's note)."""
    return _index(unit_rows(vectors), seed=seed, exact_limit=exact_limit)


def cosine_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar indexed rows of each query (similarities best first, row indices;
    ``-inf`` / ``-1`` where the index holds fewer than k), in chunks of bounded memory."""
    import faiss

    sim, idx = _search(index, unit_rows(queries), k)
    if index.metric_type == faiss.METRIC_L2:  # a reduced index ranks unit vectors by distance: |a-b|^2 = 2 - 2 cos
        sim = np.where(idx < 0, -np.inf, 1.0 - sim / 2.0).astype(np.float32)
    return sim, idx


def l2_index(vectors: np.ndarray, *, seed: int = 0, exact_limit: int = EXACT_LIMIT):
    """A faiss squared-Euclidean index of ``vectors``: exhaustive up to ``exact_limit`` rows, inverted lists above."""
    return _index(np.ascontiguousarray(vectors, dtype=np.float32), seed=seed, exact_limit=exact_limit, l2=True)


def l2_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of each query (squared distances nearest first, row indices;
    ``inf`` / ``-1`` where the index holds fewer than k); a query that is itself indexed finds itself."""
    return _search(index, np.ascontiguousarray(queries, dtype=np.float32), k, missing=np.inf)


def _index(rows: np.ndarray, *, seed: int, exact_limit: int, l2: bool = False):
    """Inner-product (or, with ``l2``, squared Euclidean) faiss index of float32 ``rows``; above
    ``exact_limit`` rows of more than ``2 * REDUCED_DIMS`` dims, a squared-Euclidean one whatever ``l2``
    (the rows of an inner-product request are unit vectors, which it ranks alike)."""
    import faiss

    n, d = rows.shape
    flat = faiss.IndexFlatL2 if l2 else faiss.IndexFlatIP
    if n <= exact_limit:
        index = flat(d)
        index.add(rows)
        return index
    nlist = int(4 * np.sqrt(n))
    rng = np.random.default_rng(seed)
    if d > 2 * REDUCED_DIMS:
        # distances after a PCA are those of the projections (an inner product would be of centred rows)
        index = faiss.index_factory(d, f"PCA{REDUCED_DIMS},IVF{nlist},Flat,RFlat", faiss.METRIC_L2)
        index.train(rows[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
        faiss.extract_index_ivf(index).nprobe = NPROBE_REDUCED
        faiss.downcast_index(index).k_factor = REFINE_FACTOR
    else:
        index = faiss.IndexIVFFlat(flat(d), d, nlist, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        index.train(rows[rng.choice(n, size=min(n, 64 * nlist), replace=False)])
        index.nprobe = NPROBE
    index.add(rows)
    return index


def _search(index, queries: np.ndarray, k: int, *, missing: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    k = int(min(k, index.ntotal))
    sims, idxs = [np.zeros((0, k), np.float32)], [np.zeros((0, k), np.int64)]
    for a in range(0, len(queries), _CHUNK):
        s, i = index.search(queries[a:a + _CHUNK], k)
        sims.append(s)
        idxs.append(i.astype(np.int64))
    sim, idx = np.concatenate(sims), np.concatenate(idxs)
    sim[idx < 0] = missing
    return sim, idx


def cosine_neighbors(vectors: np.ndarray, k: int, *, seed: int = 0, exact_limit: int = EXACT_LIMIT
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows by cosine similarity.

    Returns
    -------
    sim : float32 (N, k), similarities in [-1, 1], best first (``-inf`` where fewer than k exist)
    idx : int64 (N, k), row indices (``-1`` where fewer than k exist); a row is never its own neighbour.
    """
    v = unit_rows(vectors)
    n = len(v)
    k = int(min(k, max(n - 1, 0)))
    if n == 0 or k == 0:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    s, i = cosine_search(_index(v, seed=seed, exact_limit=exact_limit), v, k + 1)  # +1: a row is (usually) its own best match
    self_hit = i == np.arange(n)[:, None]
    # drop the self match (or, when a tie pushed it out, the last column) keeping order
    drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), k)
    keep = np.ones_like(self_hit)
    keep[np.arange(n), drop] = False
    return s[keep].reshape(n, k), i[keep].reshape(n, k)
