"""core.neighbors: cosine and Euclidean nearest neighbours through faiss, exact and IVF, against scikit-learn's brute force."""

from __future__ import annotations

import numpy as np
from sklearn.neighbors import NearestNeighbors

from core.neighbors import cosine_neighbors, l2_index, l2_search, unit_rows


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(n // 50, 2), d))
    return (centres[rng.integers(0, len(centres), n)] + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def _spectral(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered rows whose variance falls off with the dimension (~1 / j), as image features' does:
    the few leading principal components carry most of the distance between two rows."""
    rng = np.random.default_rng(seed)
    scale = (1.0 + np.arange(d)) ** -0.5
    centres = rng.normal(size=(max(n // 50, 2), d)) * scale
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, d)) * scale).astype(np.float32)


def test_exact_search_equals_brute_force_and_never_returns_the_row_itself():
    x = _clustered(600, 32)
    sim, idx = cosine_neighbors(x, 5)
    ref = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(x)
    dist, ref_idx = ref.kneighbors(x)
    assert sim.shape == idx.shape == (600, 5)
    assert not (idx == np.arange(600)[:, None]).any()
    np.testing.assert_allclose(sim, 1 - dist[:, 1:], atol=1e-5)
    assert (idx == ref_idx[:, 1:]).mean() > 0.99  # ties may swap order
    assert (np.diff(sim, axis=1) <= 1e-6).all()  # best first


def test_ivf_index_above_the_exact_limit_finds_the_true_nearest_neighbour():
    x = _clustered(4000, 16, seed=1)
    _, exact = cosine_neighbors(x, 1)
    sim, approx = cosine_neighbors(x, 1, exact_limit=1000)
    assert (approx[:, 0] == exact[:, 0]).mean() >= 0.95
    v = unit_rows(x)
    np.testing.assert_allclose(sim[:, 0], (v * v[approx[:, 0]]).sum(axis=1), atol=1e-5)


def test_tiny_inputs_and_zero_rows():
    sim, idx = cosine_neighbors(np.zeros((1, 4), np.float32), 3)
    assert sim.shape == (1, 0) and idx.shape == (1, 0)
    sim, idx = cosine_neighbors(np.array([[1, 0], [1, 0.01], [0, 0]], np.float32), 5)
    assert idx.shape == (3, 2) and idx[0, 0] == 1 and idx[1, 0] == 0
    assert np.isfinite(unit_rows(np.zeros((2, 3)))).all()


def test_l2_search_equals_brute_force_exact_and_ivf():
    x = _clustered(3000, 24, seed=2)
    dist, idx = l2_search(l2_index(x), x, 5)
    ref_d, ref_idx = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(x).kneighbors(x)
    np.testing.assert_allclose(dist, ref_d ** 2, rtol=1e-3, atol=1e-3)  # squared distances, the row itself first
    assert (idx == ref_idx).mean() > 0.99
    assert (np.diff(dist, axis=1) >= -1e-4).all()  # nearest first
    approx_d, approx = l2_search(l2_index(x, exact_limit=500), x, 2)
    assert (approx[:, 1] == ref_idx[:, 1]).mean() >= 0.95
    np.testing.assert_allclose(approx_d[:, 1], ((x - x[approx[:, 1]]) ** 2).sum(axis=1), rtol=1e-3, atol=1e-3)
    d, i = l2_search(l2_index(x[:2]), x[:1], 5)  # fewer indexed rows than k
    assert i.tolist() == [[0, 1]] and np.isfinite(d).all()


def test_aspect_neighbors_are_the_k_nearest_of_a_similar_shape_even_for_a_rare_shape():
    """95 % of the images square, 5 % portrait: a portrait image's nearest thumbnails are mostly
    square ones, yet it gets its k nearest portrait ones, as an exhaustive search finds them."""
    from core.audit.duplicates import _MAX_LOG_ASPECT, _aspect_neighbors

    rng = np.random.default_rng(3)
    n, k = 2000, 5
    x = _clustered(n, 16, seed=3)
    la = np.where(rng.random(n) < 0.05, np.log(0.6), 0.0).astype(np.float32)
    r, c = _aspect_neighbors(x, la, k, seed=0)
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)  # the N x N reference
    d[np.abs(la[:, None] - la[None, :]) > _MAX_LOG_ASPECT] = np.inf
    np.fill_diagonal(d, np.inf)
    for i in range(n):
        mine = np.sort(c[r == i])
        assert np.array_equal(mine, np.sort(np.argsort(d[i], kind="stable")[:k])) or \
            np.allclose(np.sort(d[i, mine]), np.sort(d[i])[:k], rtol=1e-4), i  # ties may swap
    portrait = np.flatnonzero(la < 0)
    assert len(portrait) > 50 and all((r == i).sum() == k for i in portrait)


def test_wide_vectors_above_the_exact_limit_are_searched_in_principal_components_and_re_ranked_exactly():
    """1280-dim features (more than 2 x REDUCED_DIMS): the reduced index finds the exact search's
    neighbours, and the similarities / distances it returns are the exact ones of the rows it returns."""
    import faiss

    from core import neighbors

    x = _spectral(3000, 512, seed=4)
    exact_sim, exact = cosine_neighbors(x, 5)
    index = neighbors.cosine_index(x, exact_limit=1000)
    assert isinstance(faiss.downcast_index(index), faiss.IndexRefineFlat)
    sim, approx = cosine_neighbors(x, 5, exact_limit=1000)
    assert np.mean([len(set(a) & set(b)) / 5 for a, b in zip(approx, exact)]) >= 0.95
    v = unit_rows(x)
    np.testing.assert_allclose(sim, np.einsum("nd,nkd->nk", v, v[approx]), atol=1e-4)
    assert (np.diff(sim, axis=1) <= 1e-5).all()
    d, i = l2_search(l2_index(x, exact_limit=1000), x[:200], 3)
    assert (i[:, 0] == np.arange(200)).all()  # each row finds itself first, at distance 0
    np.testing.assert_allclose(d, ((x[:200, None, :] - x[i]) ** 2).sum(axis=2), rtol=1e-3, atol=1e-2)


def test_knn_ood_scores_above_its_exact_limit_match_the_exact_scores(monkeypatch):
    from core.embeddings.ood import KNNOOD

    x = _spectral(3000, 512, seed=5)
    train, queries = x[:2000], np.concatenate([x[2000:], _spectral(200, 512, seed=6)])
    exact = KNNOOD().fit(train, None).score(queries)
    monkeypatch.setattr(KNNOOD, "EXACT_LIMIT", 500)
    approx = KNNOOD().fit(train, None).score(queries)
    assert np.corrcoef(exact, approx)[0, 1] > 0.99
    assert np.median(np.abs(approx - exact)) < 1e-4 and (approx >= exact - 1e-5).all()  # a missed neighbour only adds
