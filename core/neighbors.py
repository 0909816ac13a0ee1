"""Nearest neighbours by cosine similarity or Euclidean distance without an N x N matrix (faiss).

:func:`cosine_neighbors` finds each vector's ``k`` most similar others; :func:`l2_index` /
:func:`l2_search` find the closest by squared Euclidean distance. Below
:data:`EXACT_LIMIT` vectors it searches exhaustively (``IndexFlatIP`` on unit vectors: exact,
and at 50k x 1280 floats still seconds on 2 cores); above, an inverted-file index
(``IndexIVFFlat``: ``4 * sqrt(N)`` lists trained on a sample, :data:`NPROBE` probed), so time
grows about as N * sqrt(N) and memory as N: no quadratic step anywhere.

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
#: Inverted lists probed per query in the IVF index (recall of the true top neighbours ~0.99 at 16).
NPROBE = 16
#: Queries per search call (bounds the (chunk, k) result buffers and faiss' scratch space).
_CHUNK = 16_384


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """float32 rows scaled to length 1 (all-zero rows stay zero)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def cosine_index(vectors: np.ndarray, *, seed: int = 0, exact_limit: int = EXACT_LIMIT):
    """A faiss inner-product index of ``vectors`` scaled to unit length: exhaustive up to ``exact_limit``
    rows, an inverted-file index (``4 * sqrt(N)`` lists, :data:`NPROBE` probed) above."""
    return _index(unit_rows(vectors), seed=seed, exact_limit=exact_limit)


def cosine_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most cosine-similar indexed rows of each query (similarities best first, row indices;
    ``-inf`` / ``-1`` where the index holds fewer than k), in chunks of bounded memory."""
    return _search(index, unit_rows(queries), k)


def l2_index(vectors: np.ndarray, *, seed: int = 0, exact_limit: int = EXACT_LIMIT):
    """A faiss squared-Euclidean index of ``vectors``: exhaustive up to ``exact_limit`` rows, inverted lists above."""
    return _index(np.ascontiguousarray(vectors, dtype=np.float32), seed=seed, exact_limit=exact_limit, l2=True)


def l2_search(index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest indexed rows of each query (squared distances nearest first, row indices;
    ``inf`` / ``-1`` where the index holds fewer than k); a query that is itself indexed finds itself."""
    return _search(index, np.ascontiguousarray(queries, dtype=np.float32), k, missing=np.inf)


def _index(rows: np.ndarray, *, seed: int, exact_limit: int, l2: bool = False):
    """Inner-product (or, with ``l2``, squared Euclidean) faiss index of float32 ``rows``."""
    import faiss

    n, d = rows.shape
    flat = faiss.IndexFlatL2 if l2 else faiss.IndexFlatIP
    if n <= exact_limit:
        index = flat(d)
    else:
        nlist = int(4 * np.sqrt(n))
        index = faiss.IndexIVFFlat(flat(d), d, nlist, faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
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
    s, i = _search(_index(v, seed=seed, exact_limit=exact_limit), v, k + 1)  # +1: a row is (usually) its own best match
    self_hit = i == np.arange(n)[:, None]
    # drop the self match (or, when a tie pushed it out, the last column) keeping order
    drop = np.where(self_hit.any(axis=1), self_hit.argmax(axis=1), k)
    keep = np.ones_like(self_hit)
    keep[np.arange(n), drop] = False
    return s[keep].reshape(n, k), i[keep].reshape(n, k)
