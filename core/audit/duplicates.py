"""Duplicate detectors: exact copies, near copies on pixels and on pretrained features, their clusters.

Exact copies share file bytes (or the cached pixels of a crop); near copies are close 16 px
thumbnails after the best crop alignment, or, optionally, ImageNet-feature neighbours confirmed
by ORB keypoints. Matched pairs are grouped by union-find into ``duplicate`` / ``near_duplicate``
rows (:func:`_cluster_rows`).
"""

from __future__ import annotations

import hashlib
from collections import Counter, OrderedDict, defaultdict
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.audit.config import AuditConfig, _row
from core.audit.image_stats import _LUMA, _STAT_THREADS, _Stats, _balanced_step, _block_mean, _chunk_map, _gray

# ---------------------------------------------------------------------------
# Exact and near duplicates
# ---------------------------------------------------------------------------

def _file_sha1(path: str) -> str | None:
    h = hashlib.sha1()
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def _cluster_rows(clusters: list[list[int]], issue: str, prefix: str, *, sids: list[str], rels: list[str],
                  labels: list[str], label_col: str, score_of: Callable[[int, list[int]], float],
                  how: Callable[[int, int], str]) -> list[dict[str, Any]]:
    """Rows for duplicate clusters: the first member is kept, the others excluded; conflicting labels -> review."""
    rows = []
    for members in clusters:
        members = sorted(members)
        cid = f"{prefix}:{hashlib.sha1(sids[members[0]].encode()).hexdigest()[:10]}"
        labs = Counter(labels[i] for i in members)
        conflict = len(labs) > 1
        top = labs.most_common()
        majority = top[0][0] if conflict and top[0][1] > top[1][1] else ""
        for k, i in enumerate(members):
            others = [j for j in members if j != i]
            names = ", ".join(rels[j] for j in others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            ref = others[0]
            detail = f"{how(i, ref)} {names}"
            if conflict:
                detail += " — conflicting labels: " + ", ".join(f"{lab} ({c})" for lab, c in top)
                action = "review" if not majority or labels[i] == majority else "relabel"
                sugg = majority if majority and labels[i] != majority else ""
            else:
                action = "keep" if k == 0 else "exclude"
                sugg = ""
                detail += "; same label" + ("" if k else " (this copy is the one to keep)")
            rows.append(_row(sids[i], rels[i], issue, score_of(i, members), action, detail, label=labels[i],
                             suggested_label=sugg, label_column=label_col if sugg else "", group=cid))
    return rows


def _exact_duplicates(samples: pd.DataFrame, stats: _Stats, ok: np.ndarray) -> list[list[int]]:
    """Clusters of identical files (whole images) or identical cached pixels (crops of the same box)."""
    groups: dict[str, list[int]] = defaultdict(list)
    boxed = samples[["x1", "y1", "x2", "y2"]].notna().any(axis=1).to_numpy()
    paths = samples["path"].astype(str).tolist()
    file_hash: dict[str, str | None] = {}
    for i, p in enumerate(paths):
        if not ok[i]:
            continue
        if boxed[i]:
            key = "px:" + stats.pix_hash[i] if stats.pix_hash else None
        else:
            if p not in file_hash:
                file_hash[p] = _file_sha1(p)
            key = "file:" + file_hash[p] if file_hash[p] else None
        if key:
            groups[key].append(i)
    return [g for g in groups.values() if len(g) > 1]


def _box_means(sats: np.ndarray, which: np.ndarray, boxes: np.ndarray, out: int) -> np.ndarray:
    """Exact area means over an ``out`` x ``out`` grid inside each box -> (B, out*out).

    ``sats`` (U, S+1, S+1) are summed-area tables of S x S grayscale images; box ``b`` lies
    in image ``which[b]`` as fractions (x1, y1, x2, y2). Each SAT, bilinearly interpolated
    at the cell corners, gives the mean over each (fractional) cell: a box filter, like a
    downscale. All boxes at once (fancy indexing), no Python loop.
    """
    s = sats.shape[1] - 1
    t = np.arange(out + 1, dtype=np.float64) / out
    xs = np.clip((boxes[:, 0:1] + t[None] * (boxes[:, 2:3] - boxes[:, 0:1])) * s, 0, s)  # (B, out+1)
    ys = np.clip((boxes[:, 1:2] + t[None] * (boxes[:, 3:4] - boxes[:, 1:2])) * s, 0, s)
    x0 = np.minimum(np.floor(xs).astype(np.int64), s - 1)
    y0 = np.minimum(np.floor(ys).astype(np.int64), s - 1)
    wx = (xs - x0)[:, None, :]
    wy = (ys - y0)[:, :, None]
    # one flat index per corner (B, out+1, out+1) and four np.take calls: much cheaper than
    # four three-array fancy indexings
    w = s + 1
    flat = sats.reshape(-1)
    i00 = (which[:, None, None] * (w * w) + y0[:, :, None] * w) + x0[:, None, :]
    c = (np.take(flat, i00) * (1 - wx) + np.take(flat, i00 + 1) * wx) * (1 - wy) \
        + (np.take(flat, i00 + w) * (1 - wx) + np.take(flat, i00 + w + 1) * wx) * wy
    cell = c[:, 1:, 1:] - c[:, :-1, 1:] - c[:, 1:, :-1] + c[:, :-1, :-1]
    area = np.diff(xs, axis=1)[:, None, :] * np.diff(ys, axis=1)[:, :, None]
    return (cell / np.maximum(area, 1e-9)).reshape(len(boxes), out * out).astype(np.float32)


def _sat(g: np.ndarray) -> np.ndarray:
    """Summed-area tables (U, S+1, S+1) float64 of grayscale images (U, S, S)."""
    sats = np.zeros((len(g), g.shape[1] + 1, g.shape[2] + 1), np.float64)
    np.cumsum(g, axis=1, dtype=np.float64, out=sats[:, 1:, 1:])
    np.cumsum(sats[:, 1:, 1:], axis=2, out=sats[:, 1:, 1:])
    return sats


def _dist16(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Near-duplicate distance of 16 px grayscale thumbnails (..., 256): 95th percentile abs difference."""
    d = np.abs(a - b)
    k = int(round(0.95 * (d.shape[-1] - 1)))
    return np.partition(d, k, axis=-1)[..., k]


def _crop_distances(sats: np.ndarray, which: np.ndarray, wb: np.ndarray, hb: np.ndarray, small16: np.ndarray,
                    ws: np.ndarray, hs: np.ndarray, steps: int, grid: int = 16) -> np.ndarray:
    """Distance between each small image and the best-aligned crop of its big partner (same pixel scale): (P,).

    Pair ``p``: the big image is ``sats[which[p]]`` (SAT of the cached grayscale image of the
    ``wb x hb`` original), the small one's 16 px thumbnail ``small16[p]`` of a ``ws x hs``
    original; the crop is ``ws x hs`` original pixels at every offset of the slack, subsampled
    to ``steps`` per axis. All pairs' offsets in one flat batch; a segmented min per pair.
    ``grid=8`` compares 8 px thumbnails instead (``small16`` then holds 8 x 8 = 64 values).
    """
    if not len(which):
        return np.zeros(0, np.float32)
    dx, dy = (wb - ws).astype(np.int64), (hb - hs).astype(np.int64)
    nx, ny = np.minimum(steps, dx + 1), np.minimum(steps, dy + 1)
    counts = nx * ny
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pid = np.repeat(np.arange(len(which)), counts)
    local = np.arange(int(counts.sum())) - starts[pid]
    ix, iy = local // ny[pid], local % ny[pid]
    L = np.round(ix / np.maximum(nx[pid] - 1, 1) * dx[pid])
    T = np.round(iy / np.maximum(ny[pid] - 1, 1) * dy[pid])
    wbf, hbf = wb[pid].astype(np.float64), hb[pid].astype(np.float64)
    boxes = np.stack([L / wbf, T / hbf, (L + ws[pid]) / wbf, (T + hs[pid]) / hbf], axis=1)
    d = np.empty(len(boxes), np.float32)
    for a in range(0, len(boxes), _BOX_CHUNK):  # bounded temporaries: (chunk, grid+1, grid+1) float64 each
        b = a + _BOX_CHUNK
        d[a:b] = _dist16(_box_means(sats, which[pid[a:b]], boxes[a:b], grid), small16[pid[a:b]])
    return np.minimum.reduceat(d, starts)


def _crop_aligned(images: np.ndarray, pairs: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                  gray16: np.ndarray, thr: float) -> np.ndarray:
    """Crop-aligned distance of (big, small) ``pairs`` (P, 2), or inf when clearly different.

    Three stages, each on the pairs the previous one left open: a 3 x 3 offset screen of 8 px
    thumbnails cut from the big image's 16 px thumbnail (no pixels read; pairs beyond
    ``4 * thr + 8`` there are dropped: on the demo the true matches screen at <= 16 and the
    screen keeps 309 of 771 pairs, against 300 when screened on half-resolution pixels),
    a coarse 4 x 4 offset search on 16 px thumbnails at full cached resolution,
    and the exact 13 x 13 one only for pairs close to ``thr``. Pairs sorted by big image
    share its summed-area table; chunks bound RAM.
    """
    out = np.full(len(pairs), np.inf, np.float32)
    order = np.argsort(pairs[:, 0], kind="stable")

    def one(a: int) -> None:  # <= 128 x 169 crops in flight per thread
        rows = order[a:a + step]
        big, small = pairs[rows, 0], pairs[rows, 1]
        ubig, which = np.unique(big, return_inverse=True)
        small8 = _block_mean(gray16[small].reshape(-1, 16, 16, 1), 8).reshape(len(small), 64)
        screen = _crop_distances(_sat(gray16[ubig].reshape(-1, 16, 16)), which, widths[big], heights[big], small8,
                                 widths[small], heights[small], steps=3, grid=8)
        keep = np.flatnonzero(screen <= 4 * thr + 8)
        if not len(keep):
            return
        big, small = big[keep], small[keep]
        ukeep, which = np.unique(which[keep], return_inverse=True)
        raw = np.asarray(images[ubig[ukeep]])  # only the big images that passed the screen are read
        sats = _sat(_gray(raw.astype(np.float32)))  # full cached resolution: the alignment itself
        geo = (widths[big], heights[big], gray16[small], widths[small], heights[small])
        coarse = _crop_distances(sats, which, *geo, steps=4)
        d = coarse.copy()
        close = np.flatnonzero((coarse > thr) & (coarse <= 4 * thr + 8))  # worth the exact search
        if len(close):
            fine = _crop_distances(sats, which[close], *(v[close] for v in geo), steps=13)
            d[close] = np.minimum(coarse[close], fine)
        out[rows[keep]] = d  # each chunk owns its rows

    step = _balanced_step(len(order), 128, _STAT_THREADS)
    for _ in _chunk_map(one, range(0, len(order), step)):
        pass
    return out


#: Candidate pairs differ in log aspect ratio by at most this (|log(w/h) - log(w'/h')|).
_MAX_LOG_ASPECT = 0.35
#: Thumbnail neighbours searched first per kept candidate (those of another aspect ratio are dropped).
_ASPECT_SLACK = 4
#: The widest thumbnail search for an image short of candidates of its own aspect ratio.
_MAX_SEARCH = 1024
#: Crop boxes evaluated at once in the crop-aligned distance (~2.4 MB per 17 x 17 float64 temporary).
_BOX_CHUNK = 1024


def _aspect_neighbors(T: np.ndarray, la: np.ndarray, k: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest other rows of ``T`` (squared Euclidean, a faiss index:
    :func:`core.neighbors.l2_index`) among those whose log aspect ratio ``la`` is within
    :data:`_MAX_LOG_ASPECT`: ``(row, neighbour)`` index arrays.

    The nearest ``_ASPECT_SLACK * k`` are searched first; rows that find fewer than ``k`` of a
    similar shape there (a rare aspect ratio in a dataset of another) search again 4 times
    wider, up to :data:`_MAX_SEARCH` neighbours, and keep what they found by then.
    """
    from core.neighbors import l2_index, l2_search

    n = len(T)
    index = l2_index(T, seed=seed)
    rows, want = np.arange(n), _ASPECT_SLACK * k
    found_r, found_c = [], []
    while len(rows):
        m = min(want + 1, n)  # +1: a row finds itself
        _, nn = l2_search(index, T[rows], m)
        live = (nn >= 0) & (nn != rows[:, None])
        live &= np.abs(la[rows, None] - la[np.maximum(nn, 0)]) <= _MAX_LOG_ASPECT
        done = (live.sum(axis=1) >= k) | (m >= n) | (want >= _MAX_SEARCH)
        r, c = np.nonzero(live & (np.cumsum(live, axis=1) <= k) & done[:, None])
        found_r.append(rows[r])
        found_c.append(nn[r, c])
        rows, want = rows[~done], want * 4
    return np.concatenate(found_r), np.concatenate(found_c)


def _near_duplicates(images: np.ndarray, stats: _Stats, ok: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                     skip: np.ndarray, cfg: AuditConfig, exact_of: np.ndarray) -> dict[tuple[int, int], float]:
    """Pixel near duplicates: ``{(i, j): distance}`` of each matched pair (i < j).

    Candidates: each image's ``near_duplicate_neighbors`` nearest by coarse 8 px colour
    thumbnail among images of similar aspect ratio (:func:`_aspect_neighbors`: a faiss index, no
    N x N matrix). Verified by the 95th percentile absolute difference of 16 px grayscale
    thumbnails, directly (resized / recompressed copies) or after aligning the best crop of the
    larger image (cropped copies). Blank images and extra exact copies are skipped.
    """
    idx = np.flatnonzero(ok & ~skip)
    idx = idx[exact_of[idx] == idx]  # one representative per exact-duplicate cluster
    if len(idx) < 2 or cfg.near_duplicate_neighbors < 1:
        return {}
    T = stats.thumb8[idx]
    T = T - T.mean(axis=1, keepdims=True)
    la = np.log(np.maximum(widths[idx], 1) / np.maximum(heights[idx], 1)).astype(np.float32)
    r, c = _aspect_neighbors(T, la, min(cfg.near_duplicate_neighbors, len(idx) - 1), seed=cfg.seed)
    i1, i2 = idx[r], idx[c]
    pairs = np.stack([np.minimum(i1, i2), np.maximum(i1, i2)], axis=1)
    cand = np.unique(pairs, axis=0).astype(np.int64)  # each pair once
    if not len(cand):
        return {}
    direct = np.empty(len(cand), np.float32)
    for a in range(0, len(cand), 4096):  # bounded temporaries (4096 x 256 floats)
        c = cand[a:a + 4096]
        direct[a:a + 4096] = _dist16(stats.gray16[c[:, 0]], stats.gray16[c[:, 1]])
    thr = cfg.near_duplicate_distance
    best = direct.astype(np.float64)
    if cfg.near_duplicate_max_crop > 0:
        # a slightly different crop of the same picture? align the smaller on the larger
        i, j = cand[:, 0], cand[:, 1]
        i_big = widths[i] * heights[i] >= widths[j] * heights[j]
        big, small = np.where(i_big, i, j), np.where(i_big, j, i)
        dx, dy = widths[big] - widths[small], heights[big] - heights[small]
        lim = 2 * cfg.near_duplicate_max_crop
        need = (direct > thr) & (dx >= 0) & (dy >= 0) & (dx + dy > 0) \
            & (dx <= lim * widths[big] + 1) & (dy <= lim * heights[big] + 1)
        if need.any():
            k = np.flatnonzero(need)
            crop = _crop_aligned(images, np.stack([big[k], small[k]], axis=1), widths, heights, stats.gray16, thr)
            best[k] = np.minimum(best[k], crop)
    return {(int(i), int(j)): float(dv) for (i, j), dv in zip(cand.tolist(), best.tolist()) if dv <= thr}


def _feature_duplicates(vectors: np.ndarray, candidates: np.ndarray, images: np.ndarray, cfg: AuditConfig
                        ) -> dict[tuple[int, int], tuple[float, int]]:
    """Near duplicates found by pretrained features and verified by keypoints: ``{(i, j): (similarity, matches)}``.

    Each candidate's ``near_duplicate_neighbors`` nearest others by cosine similarity of its
    ImageNet features (faiss, :mod:`core.neighbors`: no N x N matrix) are candidate pairs when
    at least ``near_duplicate_similarity`` alike; a pair is a near duplicate when at least
    ``near_duplicate_matches`` ORB keypoints of the two cached images agree on one affine
    transform (RANSAC). Features find copies that were cropped, rotated, re-lit or recompressed;
    the keypoints tell them from photos that merely look alike (same species, same scene).

    ``vectors``: (N, D), NaN rows where an image has none; ``candidates``: the rows compared.
    """
    from core.neighbors import cosine_neighbors

    rows = candidates[np.isfinite(vectors[candidates]).all(axis=1)]
    if len(rows) < 2 or cfg.near_duplicate_neighbors < 1:
        return {}
    sim, nn = cosine_neighbors(vectors[rows], cfg.near_duplicate_neighbors, seed=cfg.seed)
    hit = (sim >= cfg.near_duplicate_similarity) & (nn >= 0)
    a, b = rows[np.nonzero(hit)[0]], rows[nn[hit]]
    pairs: dict[tuple[int, int], float] = {}
    for i, j, v in zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist(), sim[hit].tolist()):
        pairs[(i, j)] = max(pairs.get((i, j), -1.0), min(float(v), 1.0))
    matches = _keypoint_matches(images, list(pairs))
    return {pair: (v, m) for (pair, v), m in zip(pairs.items(), matches) if m >= cfg.near_duplicate_matches}


#: ORB on the cached 96 px images: keypoints per image, border and patch sizes fit for small images.
_ORB = {"nfeatures": 400, "edgeThreshold": 10, "patchSize": 10, "fastThreshold": 5}
#: RANSAC reprojection threshold (cached-image pixels) of the affine fit between two images' keypoints.
_RANSAC_PX = 4.0


#: Images whose keypoints are kept at once (~16 KB each: ~320 MB); the least recently used are recomputed.
_KEYPOINT_CACHE = 20_000


def _sweep_order(pairs: np.ndarray) -> np.ndarray:
    """An order of the (i, j) ``pairs`` that visits each image's pairs close together.

    Images are numbered by reverse Cuthill-McKee on the pair graph (a small bandwidth), pairs
    sorted by their images' numbers: a bounded keypoint cache then misses rarely, where the
    pairs' own order (copies of one photo far apart in the table) would recompute most images.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    nodes, inv = np.unique(pairs, return_inverse=True)
    inv = inv.reshape(-1, 2)
    m = len(nodes)
    g = coo_matrix((np.ones(len(inv), np.int8), (inv[:, 0], inv[:, 1])), shape=(m, m)).tocsr()
    rank = np.empty(m, np.int64)
    rank[reverse_cuthill_mckee((g + g.T).tocsr(), symmetric_mode=True)] = np.arange(m)
    r = rank[inv]
    return np.lexsort((r.max(axis=1), r.min(axis=1)))


def _keypoint_matches(images: np.ndarray, pairs: list[tuple[int, int]], *, cache: int = _KEYPOINT_CACHE
                      ) -> list[int]:
    """Per pair, the ORB keypoint matches (cross-checked) consistent with one affine transform (RANSAC inliers).

    Cached images are stretched to a square, so two crops of one photo differ by an affine map
    (scale per axis, shift, a small rotation), not just a similarity. Keypoints are computed
    on each image's luminance and kept for at most ``cache`` images at once (least recently
    used dropped; pairs visited in :func:`_sweep_order`), so memory does not grow with the
    dataset; 0 when either image has too few.
    """
    import cv2

    if not pairs:
        return []
    orb = cv2.ORB_create(**_ORB)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    keys: OrderedDict[int, tuple] = OrderedDict()

    def keypoints(i: int) -> tuple:
        if i in keys:
            keys.move_to_end(i)
            return keys[i]
        gray = np.asarray(images[i], np.float32) @ _LUMA
        kp, desc = orb.detectAndCompute(np.clip(gray, 0, 255).astype(np.uint8), None)
        keys[i] = (np.float32([k.pt for k in kp]).reshape(-1, 2), desc)
        if len(keys) > cache:
            keys.popitem(last=False)
        return keys[i]

    arr = np.asarray(pairs, np.int64)
    out = [0] * len(arr)
    for t in _sweep_order(arr).tolist():
        i, j = int(arr[t, 0]), int(arr[t, 1])
        (pa, da), (pb, db) = keypoints(i), keypoints(j)
        m = matcher.match(da, db) if da is not None and db is not None and len(pa) >= 8 and len(pb) >= 8 else ()
        if len(m) < 8:
            continue
        _, inl = cv2.estimateAffine2D(pa[[x.queryIdx for x in m]], pb[[x.trainIdx for x in m]], method=cv2.RANSAC,
                                      ransacReprojThreshold=_RANSAC_PX)
        out[t] = 0 if inl is None else int(inl.sum())
    return out


def _pair_clusters(pairs, n: int) -> list[list[int]]:
    """Connected groups of the matched ``pairs`` (an iterable of (i, j)), each sorted."""
    uf = _UnionFind(n)
    pairs = list(pairs)
    for i, j in pairs:
        uf.union(i, j)
    members: dict[int, set[int]] = defaultdict(set)
    for i, j in pairs:
        members[uf.find(i)].update((i, j))
    return [sorted(m) for m in members.values()]
