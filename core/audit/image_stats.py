"""Per-image measurements: one streamed pass of statistics over the cached images, and the corrupt files.

:func:`_image_stats` reads the cached images in chunks (two threads) and returns every
per-image number the detectors use (blank / dark / bright / blur statistics, thumbnails,
the quick classifier's features); :func:`_corrupt` lists the files that never decoded. The
streaming and pixel helpers (:func:`_chunk_map`, :func:`_balanced_step`, :func:`_half`,
:func:`_gray`, :func:`_block_mean`) live here because the duplicate detectors reuse them.
"""

from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from core.audit.config import AUDIT_SIZE, _row
from core.workspace import Workspace, read_json

_CHUNK = 256  # images per streamed chunk
#: Chunks of image statistics (and of crop alignments) computed at once: threads, numpy releases the GIL.
_STAT_THREADS = max(1, min(2, os.cpu_count() or 1))
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# ---------------------------------------------------------------------------
# Image statistics (one streamed pass over the cached arrays)
# ---------------------------------------------------------------------------

@dataclass
class _Stats:
    std: np.ndarray        # (N,) max per-channel pixel std (48 px)
    p05: np.ndarray        # (N,) 5th percentile luminance (48 px)
    p95: np.ndarray        # (N,) 95th percentile luminance
    sharp: np.ndarray      # (N,) sharpness ratio
    thumb8: np.ndarray     # (N, 8*8*3) float32 coarse RGB thumbnails (near-duplicate candidates)
    gray16: np.ndarray     # (N, 16*16) float32 grayscale thumbnails (near-duplicate distance, features)
    color: np.ndarray      # (N, 4*4*3 + 6) float32 colour layout + channel mean/std
    hog: np.ndarray        # (N, 8*8*9) float32 histograms of oriented gradients
    hsv: np.ndarray        # (N, 12*3*3) float32 hue / saturation / value histogram (sqrt of frequencies)
    pix_hash: list[str]    # sha1 of the cached pixels (exact duplicates of crops)


def _block_mean(x: np.ndarray, k: int) -> np.ndarray:
    """(n, S, S, c) -> (n, k, k, c) by averaging S/k x S/k blocks (S divisible by k)."""
    n, s, _, c = x.shape
    b = s // k
    # two single-axis sums: numpy reduces one axis at a time much faster than two non-adjacent ones
    rows = x.reshape(n, k, b, s, c).sum(axis=2)
    return rows.reshape(n, k, k, b, c).sum(axis=3) * (1.0 / (b * b))


def _hog(g: np.ndarray, cells: int = 8, bins: int = 9) -> np.ndarray:
    """Histograms of oriented gradients of grayscale images (m, S, S): (m, cells*cells*bins), L2-normalised."""
    m, s, _ = g.shape
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.hypot(gx, gy)
    ang = np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((ang * (bins / np.pi)).astype(np.int64), bins - 1)
    c = s // cells
    h = np.zeros((m, s, s, bins), np.float32)
    np.put_along_axis(h, b[..., None], mag[..., None], axis=3)
    h = h[:, :c * cells, :c * cells].reshape(m, cells, c, cells, c, bins).sum(axis=(2, 4)).reshape(m, -1)
    h /= np.linalg.norm(h, axis=1, keepdims=True) + 1e-3
    return np.sqrt(h)


def _hsv_hist(raw: np.ndarray) -> np.ndarray:
    """Colour histograms of uint8 RGB images (m, S, S, 3): 12 hues x 3 saturations x 3 values, sqrt-scaled."""
    from PIL import Image

    out = np.zeros((len(raw), 108), np.float32)
    for r, im in enumerate(raw):
        h = np.asarray(Image.fromarray(im).convert("HSV"), dtype=np.int32)
        idx = ((h[..., 0] * 12 // 256) * 3 + h[..., 1] * 3 // 256) * 3 + h[..., 2] * 3 // 256
        c = np.bincount(idx.ravel(), minlength=108).astype(np.float32)
        out[r] = np.sqrt(c / max(c.sum(), 1.0))
    return out


def _half(raw: np.ndarray) -> np.ndarray:
    """uint8 images (m, S, S, 3) -> float32 (m, S/2, S/2, 3), each pixel the exact mean of a 2 x 2 block.

    Row pairs first, as one add of two contiguous (m, S/2, S*3) halves into uint16 (long
    inner loops), then column pairs: the pixel pairs are adjacent 6-value groups of a row.
    """
    m, h = raw.shape[0], raw.shape[1] // 2
    rows = raw[:, :2 * h, :2 * h].reshape(m, h, 2, 2 * h * 3)
    acc = np.add(rows[:, :, 0], rows[:, :, 1], dtype=np.uint16).reshape(m, h, h, 6)
    x = np.add(acc[..., :3], acc[..., 3:], dtype=np.float32)
    x *= 0.25
    return x


def _gray(x: np.ndarray) -> np.ndarray:
    return x @ _LUMA


def _area_resize_matrices(targets: np.ndarray, s: int) -> np.ndarray:
    """(m,) target sides -> (m, s, s) area-resampling matrices from ``s`` pixels to ``t``, zero rows past ``t``.

    Row ``o`` averages source pixels over ``[o * s / t, (o + 1) * s / t)``, partial pixels
    weighted by their overlap: a box filter, like PIL's BOX downscale. Each distinct side
    is built once (a chunk holds few distinct sides), then gathered.
    """
    sides, inv = np.unique(targets, return_inverse=True)
    t = sides.astype(np.float64)[:, None, None]
    scale = s / t
    o = np.arange(s, dtype=np.float64)[None, :, None]
    i = np.arange(s, dtype=np.float64)[None, None, :]
    overlap = np.clip(np.minimum((o + 1) * scale, i + 1) - np.maximum(o * scale, i), 0.0, None) / scale
    overlap[np.broadcast_to(o >= t, overlap.shape)] = 0.0
    return overlap.astype(np.float32)[inv.reshape(-1)]


def _sharpness(g: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Second-derivative energy / (variance + 25) of grayscale images (m, S, S), each at no more than its original resolution.

    The cached image of a small original is an upscale (smooth by construction), so each is
    first brought back to ``min(original, S)`` pixels per axis (box filter), all at once as
    ``R_h @ g @ R_w^T`` with zero-padded resampling matrices; statistics are then taken over
    each image's valid ``th x tw`` corner. The best direction counts.
    """
    m, s, _ = g.shape
    tw = np.clip(widths, 3, s).astype(np.int64)
    th = np.clip(heights, 3, s).astype(np.int64)
    small = (tw < s) | (th < s)
    if small.any():
        g = g.copy()
        k = np.flatnonzero(small)
        g[k] = _area_resize_matrices(th[k], s) @ g[k] @ _area_resize_matrices(tw[k], s).transpose(0, 2, 1)
    n_px = (th * tw).astype(np.float64)
    flat = g.reshape(m, -1)
    mean = flat.sum(axis=1, dtype=np.float64) / n_px  # padding is zero
    var = np.maximum(np.einsum("ij,ij->i", flat, flat, dtype=np.float64) / n_px - mean ** 2, 0.0)
    # Second differences. Rows past th and columns past tw are zero, so they add nothing, except
    # where a difference reaches from the valid corner into the padding: the last two columns
    # (x) or rows (y) of each image, left out by summing per column / row and cutting there.
    lx = g[:, :, 2:] - 2 * g[:, :, 1:-1] + g[:, :, :-2]  # (m, S, S-2): column j valid while j + 2 < tw
    lx *= lx
    ly = g[:, 2:, :] - 2 * g[:, 1:-1, :] + g[:, :-2, :]  # (m, S-2, S): row i valid while i + 2 < th
    ly *= ly
    per_col = np.cumsum(lx.sum(axis=1), axis=1, dtype=np.float64)
    per_row = np.cumsum(ly.sum(axis=2), axis=1, dtype=np.float64)
    at = np.arange(m)
    ex = per_col[at, tw - 3] / (th * (tw - 2))
    ey = per_row[at, th - 3] / ((th - 2) * tw)
    return (np.maximum(ex, ey) / (var + 25.0)).astype(np.float32)


def _balanced_step(n: int, most: int, workers: int) -> int:
    """Chunk length <= ``most`` that splits ``n`` items into a multiple of ``workers`` nearly equal chunks
    (1,042 images in 256-chunks would leave one thread 3 chunks and the other 2)."""
    chunks = max(1, -(-n // most))
    chunks = -(-chunks // workers) * workers
    return max(1, -(-n // chunks))


def _chunk_map(fn: Callable[[int], Any], starts: range) -> Iterator[Any]:
    """``fn`` over chunk ``starts``, results in order: ``_STAT_THREADS`` chunks at once when there are several
    (numpy, and Pillow's HSV conversion, release the GIL on whole chunks: both cores of a small machine)."""
    if len(starts) < 2 or _STAT_THREADS < 2:
        yield from map(fn, starts)
        return
    with ThreadPoolExecutor(max_workers=_STAT_THREADS) as pool:
        yield from pool.map(fn, starts)


def _image_stats(images: np.ndarray, ok: np.ndarray, widths: np.ndarray, heights: np.ndarray, *, want_hash: bool,
                 want_features: bool = True, progress: Callable[[int, int], None] | None = None) -> _Stats:
    """One streamed pass over the cached images (chunks of a memory map): every per-image number the detectors use.

    Statistics are taken at half the cached size (2 x 2 integer box average), which is
    what blank / dark / blur checks need; ``want_features`` adds the classifier's HOG and
    colour histograms (only ``label_issue`` uses them).
    """
    n = len(images)
    std = np.zeros(n, np.float32)
    p05 = np.zeros(n, np.float32)
    p95 = np.zeros(n, np.float32)
    sharp = np.zeros(n, np.float32)
    thumb8 = np.zeros((n, 8 * 8 * 3), np.float32)
    gray16 = np.zeros((n, 16 * 16), np.float32)
    color = np.zeros((n, 4 * 4 * 3 + 6), np.float32)
    hog = np.zeros((n, 8 * 8 * 9 if want_features else 0), np.float32)
    hsv = np.zeros((n, 108 if want_features else 0), np.float32)
    hashes: list[str] = [""] * n if want_hash else []
    step = _balanced_step(n, _CHUNK, _STAT_THREADS)

    def one(a: int) -> int:
        b = min(n, a + step)
        raw = np.asarray(images[a:b])  # (m, S, S, 3) uint8: one chunk per thread in RAM at a time
        m = raw.shape[0]
        x = _half(raw)
        flat = x.reshape(m, -1, 3)
        # per-channel mean and std as matrix products (BLAS) instead of strided reductions; the
        # centred second pass keeps the std of near-uniform images exact enough for ``uniform``
        ones = np.ones((1, flat.shape[1]), np.float32)
        mu = (ones @ flat)[:, 0] / flat.shape[1]
        dev = flat - mu[:, None, :]
        dev *= dev
        sd = np.sqrt((ones @ dev)[:, 0] / flat.shape[1])
        del dev
        std[a:b] = sd.max(axis=1)
        g = _gray(x)  # (m, S/2, S/2)
        gs = g.reshape(m, -1)
        k05, k95 = int(round(0.05 * (gs.shape[1] - 1))), int(round(0.95 * (gs.shape[1] - 1)))
        q = np.partition(gs, (k05, k95), axis=1)
        p05[a:b], p95[a:b] = q[:, k05], q[:, k95]
        sharp[a:b] = _sharpness(g, widths[a:b], heights[a:b])
        thumb8[a:b] = _block_mean(x, 8).reshape(m, -1)
        gray16[a:b] = _block_mean(g[..., None], 16).reshape(m, -1)
        color[a:b] = np.concatenate([_block_mean(x, 4).reshape(m, -1) / 255.0, mu / 255.0, sd / 64.0], axis=1)
        if want_features:
            hog[a:b] = _hog(g)
            hsv[a:b] = _hsv_hist(raw)
        if want_hash:
            hashes[a:b] = [hashlib.sha1(raw[i].tobytes()).hexdigest() for i in range(m)]
        return b

    for b in _chunk_map(one, range(0, n, step)):  # each chunk writes only its own rows of the outputs
        if progress:
            progress(b, n)
    std[~ok] = np.nan
    return _Stats(std, p05, p95, sharp, thumb8, gray16, color, hog, hsv, hashes)


# ---------------------------------------------------------------------------
# Corrupt files (they never became samples)
# ---------------------------------------------------------------------------

def _corrupt(ds: Any, workspace: Workspace) -> list[dict[str, Any]]:
    """Every candidate that failed to decode while loading (from the load report and the cache)."""
    from core.images import IMAGE_EXTENSIONS, REASONS, ImageCache

    rep = ds.report
    root = Path(ds.root)
    found: dict[str, tuple[str, str]] = {}  # rel path -> (reason, message)
    total = 0
    for kind, g in rep.problems.items():
        if kind.startswith("unseen_") or kind not in REASONS:
            continue
        total += g.count
        for p in g.examples:
            found.setdefault(p.path, (kind, p.message))
    if total > len(found):
        # The report keeps a few examples per kind: ask the cache (failures are remembered, nothing decodes).
        inputs = read_json(workspace.dataset_dir(ds.dataset_id) / "inputs.json", default={}) or {}
        have = set(ds.samples["path"].astype(str))
        unseen = str(Path(ds.spec.unseen).absolute()) + os.sep if ds.spec.unseen else None
        cands = [p for p in inputs.get("paths", []) if p not in have and os.path.splitext(p)[1].lower()
                 in IMAGE_EXTENSIONS and not (unseen and p.startswith(unseen)) and not os.path.isdir(p)]
        if cands:
            frame = pd.DataFrame({"path": cands})
            for c in ("x1", "y1", "x2", "y2"):
                frame[c] = math.nan
            arr = ImageCache(workspace.cache_dir / "images").arrays(frame, AUDIT_SIZE)
            for i, p in enumerate(cands):
                if not arr.ok[i]:
                    rel = os.path.relpath(p, root) if p.startswith(str(root) + os.sep) else p
                    rel = Path(rel).as_posix()
                    if rel not in found:
                        found[rel] = (arr.reasons.get(i, "truncated"), arr.errors.get(i, ""))
    rows = []
    for rel, (reason, msg) in sorted(found.items()):
        text = REASONS.get(reason, reason)
        if msg:  # "row 12: /abs/path/x.png: what is wrong. What to do." -> what is wrong. What to do.
            text = msg
            for marker in (str(root / rel) + ": ", rel + ": "):
                if marker in text:
                    text = text.split(marker, 1)[1]
                    break
        rows.append(_row(rel, rel, "corrupt", 1.0, "exclude",
                         f"{reason}: {text}".strip(), label=""))
    return rows
