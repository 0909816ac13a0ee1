"""Dirty-sample detectors: what is wrong with a dataset, one row per flag.

Vocabulary: a dataset has N samples (see :mod:`core.datasets`); an *issue* is one flag
raised by one detector on one sample. :func:`audit_dataset` runs the enabled detectors
and returns an :class:`AuditResult` whose ``issues`` table has one row per flag:

``sample_id``        the sample (as in the samples table; for ``corrupt`` files, which never
                     became samples, the path relative to the dataset folder).
``path``             the image path as the dataset gives it (``rel_path``).
``issue``            one of :data:`DETECTORS`.
``score``            float, **higher = more suspect**; within an issue the rows are sorted
                     most suspect first. Scores compare within one issue only.
``suggested_action`` one of :data:`ACTIONS`: ``exclude`` (drop from training), ``relabel``
                     (to ``suggested_label``), ``keep`` (shown, nothing to fix), ``review``
                     (a person must look).
``suggested_label``  str, the likely right label ('' when there is none).
``label``            the current label (str; hierarchical: the leaf level; multilabel:
                     the positive labels joined by ``|``).
``label_column``     the label column ``suggested_label`` applies to ('' when none).
``detail``           one human-readable sentence: what was measured and why it is suspect.
``group``            related samples: a duplicate cluster id shared by its members
                     (``dup:...`` / ``near:...``), the class for ``rare_class``, else ''.

Every detector reads the resized images of the workspace's image cache
(:class:`core.images.ImageCache`, the same 96 px arrays the loader decoded), streamed in
chunks from a memory map, so memory stays flat as the dataset grows; exact duplicates
also hash the file bytes (streamed). ``label_issue`` uses confident learning
(:func:`cleanlab.filter.find_label_issues`) on out-of-sample predicted probabilities only:
cross-validated (``cross_val_predict``) logistic regression on cheap image features (plus
a pretrained ImageNet backbone's features when its weights are at hand, see
:data:`LABEL_FEATURES`), or a trained run's validation / test predictions when ``run_dir``
is given.

The latest audit of each dataset is saved under ``<workspace>/cache/audit/<dataset_id>/``
(:func:`save_audit`, :func:`load_audit`), together with the config that produced it.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import time
import uuid
import warnings
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from core.workspace import Workspace, atomic_write_bytes, atomic_write_json, read_json

#: issue name -> one line on what it measures (the order is the display order).
DETECTORS: dict[str, str] = {
    "corrupt": "The file cannot be decoded (truncated, empty, not an image): it never loads.",
    "uniform": "Almost no information: the pixel standard deviation is below a threshold (blank crop).",
    "duplicate": "Exact copies: identical file bytes (or identical pixels of a crop); conflicting labels flagged.",
    "near_duplicate": "Perceptual copies (resized, recompressed, slightly cropped): small pixel distance "
                      "after the best crop alignment; on photos, optionally ImageNet features checked by keypoints.",
    "dark": "Underexposed: even the brightest pixels (95th percentile luminance) stay dark.",
    "bright": "Overexposed: even the darkest pixels (5th percentile luminance) are near white.",
    "blurry": "Little fine detail: the second-derivative energy is low relative to the image contrast.",
    "odd_size": "Tiny (shortest side below a minimum) or extreme aspect ratio (long / short side above a maximum).",
    "rare_class": "The sample's class has fewer samples than the minimum: exclude it or merge it into another class.",
    "label_issue": "Probably mislabelled: confident learning (cleanlab) on out-of-sample predicted probabilities "
                   "(multi-label: per label; hierarchies: the leaf, saying whether the parent is wrong too).",
    "hierarchy_conflict": "A sub-label placed under a parent other than the one it has in most samples.",
    "missing_label": "Multi-label or attribute entries that are unknown (missing, never read as 0).",
}
#: What a reviewer may do with a flag.
ACTIONS = ("exclude", "relabel", "keep", "review")
#: Columns of :attr:`AuditResult.issues`, in order.
ISSUE_COLUMNS = ("sample_id", "path", "issue", "score", "suggested_action", "suggested_label", "label",
                 "label_column", "detail", "group")
#: Side of the cached images the detectors read (the loader's preview size: no new decoding).
AUDIT_SIZE = 96

#: What the quick label classifier may see -> one line for a UI. ``auto``: ``image+imagenet`` when the
#: backbone's weights are already cached, else ``image`` (with a note saying how to get the better one).
LABEL_FEATURES: dict[str, str] = {
    "auto": "image features, plus pretrained ImageNet features when their weights are already cached",
    "image+imagenet": "image features plus pretrained ImageNet features (Keras downloads the weights if needed)",
    "image": "cheap image features only (gradients, layout, colours): fastest, no TensorFlow",
}

#: Near duplicates on pretrained features (see :func:`_feature_duplicates`): candidate pairs at least this
#: cosine-similar (MobileNetV2-0.35 at 96 px), confirmed by at least ``NEAR_MATCHES`` agreeing keypoints.
#: Chosen on flowers12 and miml_scene with edited copies; cub100 is the held-out check (bench/bench_audit.py).
NEAR_SIMILARITY = 0.5
NEAR_MATCHES = 25

#: Where near-duplicate candidates come from -> one line for a UI. ``pixels`` (the default) finds exact
#: and lightly edited copies; ImageNet features + keypoints find copies of *photos* cropped, rotated,
#: re-lit and recompressed (pixels find none of those), but on synthetic renderings (UI crops of one
#: layout in several themes) they also pair the look-alikes, so they are chosen, not automatic.
NEAR_FEATURES: dict[str, str] = {
    "pixels": "pixels only (thumbnail distance after crop alignment): exact and lightly edited copies, no TensorFlow",
    "auto": "pixels, plus ImageNet features + keypoints when the weights are already cached (for photos)",
    "pixels+imagenet": "pixels, plus ImageNet features + keypoints (for photos; Keras downloads the weights if needed)",
}

_CHUNK = 256  # images per streamed chunk
#: Chunks of image statistics (and of crop alignments) computed at once: threads, numpy releases the GIL.
_STAT_THREADS = max(1, min(2, os.cpu_count() or 1))
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class AuditConfig:
    """Thresholds of the detectors; every one has a default that suits typical datasets.

    Pixel values are on the 0..255 scale; statistics are taken on the cached images at 48 px.

    ``enabled``: detector names to run (default: all of :data:`DETECTORS`).
    ``uniform_std``: flag when the largest per-channel pixel standard deviation is below this.
    ``dark``: flag when the 95th percentile luminance is below this.
    ``bright``: flag when the 5th percentile luminance is above this.
    ``blurry``: flag when the sharpness ratio (second-derivative energy / pixel variance, best
    direction) is below this.
    ``odd_min_side``: flag images whose shortest original side is below this many pixels.
    ``odd_max_aspect``: flag images whose long side / short side exceeds this.
    ``near_duplicate_distance``: flag pairs whose 95th percentile absolute pixel difference
    (0..255, 16 px grayscale thumbnails, after the best crop alignment) is at most this.
    ``near_duplicate_neighbors``: candidates compared per image (nearest by coarse thumbnail).
    ``near_duplicate_max_crop``: largest crop per side (fraction) tried when aligning two images.
    ``near_duplicate_features``: see :data:`NEAR_FEATURES` (default ``"pixels"``). With ImageNet
    features (the Embeddings page's cached vectors), each image's ``near_duplicate_neighbors`` nearest by
    feature similarity (at least ``near_duplicate_similarity``; a faiss index, never an N x N
    matrix) are near duplicates too when ``near_duplicate_matches`` keypoints agree: copies
    cropped, rotated, re-lit or recompressed beyond what the pixel check aligns.
    ``rare_min``: classes with fewer samples are ``rare_class``.
    ``label_issue_folds``: cross-validation folds of the quick classifier.
    ``label_issue_filter``: cleanlab ``filter_by`` method.
    ``label_issue_max_fraction``: at most this fraction of the samples is flagged (the most suspect).
    ``label_issue_features``: what the quick classifier sees (see :data:`LABEL_FEATURES`): ``"auto"``
    (default) adds a pretrained ImageNet backbone's features when its weights are already in
    Keras' cache (never a download during an audit), ``"image+imagenet"`` adds them and lets
    Keras download the weights if needed, ``"image"`` uses the cheap image features only.
    ``seed``: of the cross-validation split.
    """

    enabled: tuple[str, ...] = tuple(DETECTORS)
    uniform_std: float = 3.0
    dark: float = 40.0
    bright: float = 235.0
    blurry: float = 0.02
    odd_min_side: int = 10
    odd_max_aspect: float = 12.0
    near_duplicate_distance: float = 5.0
    near_duplicate_neighbors: int = 5
    near_duplicate_max_crop: float = 0.08
    near_duplicate_features: str = "pixels"
    near_duplicate_similarity: float = NEAR_SIMILARITY
    near_duplicate_matches: int = NEAR_MATCHES
    rare_min: int = 20
    label_issue_folds: int = 5
    label_issue_filter: str = "both"
    label_issue_max_fraction: float = 0.2
    label_issue_features: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        enabled = self.enabled
        if isinstance(enabled, str):
            enabled = tuple(e.strip() for e in enabled.split(",") if e.strip())
        enabled = tuple(enabled)
        unknown = [e for e in enabled if e not in DETECTORS]
        if unknown:
            raise ValueError(f"enabled must name detectors among {list(DETECTORS)}; received unknown {unknown}")
        object.__setattr__(self, "enabled", tuple(d for d in DETECTORS if d in enabled))
        for name in ("uniform_std", "dark", "bright", "blurry", "odd_max_aspect", "near_duplicate_distance",
                     "near_duplicate_max_crop", "near_duplicate_similarity", "label_issue_max_fraction"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(float(v)) or float(v) < 0:
                raise ValueError(f"{name} must be a number >= 0; received {name}={v!r}")
            object.__setattr__(self, name, float(v))
        for name in ("odd_min_side", "near_duplicate_neighbors", "near_duplicate_matches", "rare_min", "label_issue_folds", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 0:
                raise ValueError(f"{name} must be an int >= 0; received {name}={v!r}")
            object.__setattr__(self, name, int(v))
        if self.label_issue_folds < 2:
            raise ValueError(f"label_issue_folds must be >= 2; received label_issue_folds={self.label_issue_folds}")
        if self.near_duplicate_max_crop >= 0.5:
            raise ValueError("near_duplicate_max_crop must be < 0.5; received "
                             f"near_duplicate_max_crop={self.near_duplicate_max_crop}")
        filters = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
        if self.label_issue_filter not in filters:
            raise ValueError(f"label_issue_filter must be one of {filters}; "
                             f"received label_issue_filter={self.label_issue_filter!r}")
        if self.near_duplicate_features not in NEAR_FEATURES:
            raise ValueError(f"near_duplicate_features must be one of {list(NEAR_FEATURES)}; "
                             f"received near_duplicate_features={self.near_duplicate_features!r}")
        if not 0 < self.near_duplicate_similarity <= 1:
            raise ValueError("near_duplicate_similarity must be in (0, 1]; received "
                             f"near_duplicate_similarity={self.near_duplicate_similarity}")
        if self.label_issue_features not in LABEL_FEATURES:
            raise ValueError(f"label_issue_features must be one of {list(LABEL_FEATURES)}; "
                             f"received label_issue_features={self.label_issue_features!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["enabled"] = list(self.enabled)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "AuditConfig":
        """Build from a dict (unknown keys are ignored, so old saved configs still load)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k == "enabled" and isinstance(v, list) else v)
                      for k, v in (d or {}).items() if k in names})


#: Threshold fields for a UI: name -> (label, min, max, step, help). Ranges are sensible, not enforced.
CONFIG_FIELDS: dict[str, tuple[str, float, float, float, str]] = {
    "uniform_std": ("Uniform: max pixel std", 0.0, 20.0, 0.5, "Flag images whose pixel std is below this."),
    "dark": ("Dark: max 95th pct luminance", 0.0, 128.0, 1.0, "Flag images darker than this."),
    "bright": ("Bright: min 5th pct luminance", 128.0, 255.0, 1.0, "Flag images brighter than this."),
    "blurry": ("Blurry: min sharpness", 0.0, 0.2, 0.005, "Flag images less sharp than this."),
    "odd_min_side": ("Odd size: min side (px)", 1, 256, 1, "Flag images whose shortest side is smaller."),
    "odd_max_aspect": ("Odd size: max aspect ratio", 1.0, 50.0, 0.5, "Flag images more elongated than this."),
    "near_duplicate_distance": ("Near duplicate: max pixel distance", 0.0, 30.0, 0.5,
                                "Pairs at most this far apart (95th pct abs difference, 0..255) are near duplicates."),
    "near_duplicate_matches": ("Near duplicate: min keypoint matches", 5, 200, 1,
                               "With ImageNet features: a candidate pair is a near duplicate when at least this many "
                               "keypoints agree on one geometric transform."),
    "rare_min": ("Rare class: min samples", 1, 500, 1, "Classes with fewer samples are flagged."),
    "label_issue_folds": ("Label issues: CV folds", 2, 10, 1, "Folds of the quick out-of-fold classifier."),
}


@dataclass(frozen=True)
class AuditResult:
    """What :func:`audit_dataset` found.

    ``issues``: DataFrame with :data:`ISSUE_COLUMNS`, one row per flag, issues in
    :data:`DETECTORS` order and most suspect first within an issue. ``counts``: issue ->
    number of flags (every detector name present, 0 when nothing was found or it did not
    run). ``seconds``: wall time; ``timings``: seconds per detector stage. ``n_samples``:
    samples audited. ``source``: where the ``label_issue`` probabilities came from
    (``"features"``: the quick classifier on image features, ``"features+imagenet"``: on
    image and pretrained ImageNet features, or a run id). ``notes``: detectors skipped and why.
    """

    issues: pd.DataFrame
    dataset_id: str
    config: AuditConfig
    counts: dict[str, int]
    seconds: float
    n_samples: int
    source: str = "features"
    timings: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    created_at: float = 0.0

    def meta(self) -> dict[str, Any]:
        """Everything but the table, JSON-ready."""
        return {"dataset_id": self.dataset_id, "config": self.config.to_dict(), "counts": dict(self.counts),
                "seconds": self.seconds, "n_samples": self.n_samples, "source": self.source,
                "timings": dict(self.timings), "notes": list(self.notes), "created_at": self.created_at}


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------

def _row(sample_id: str, path: str, issue: str, score: float, action: str, detail: str, *, label: str = "",
         suggested_label: str = "", label_column: str = "", group: str = "") -> dict[str, Any]:
    return {"sample_id": str(sample_id), "path": str(path), "issue": issue, "score": float(score),
            "suggested_action": action, "suggested_label": str(suggested_label), "label": str(label),
            "label_column": str(label_column), "detail": detail, "group": str(group)}


def _empty_issues() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=float if c == "score" else object) for c in ISSUE_COLUMNS})
    return df.astype({c: str for c in ISSUE_COLUMNS if c != "score"})


def _current_labels(samples: pd.DataFrame, schema: Any) -> tuple[list[str], str]:
    """The label shown per sample (leaf level; multilabel: positives joined by '|') and its column."""
    cols = list(schema.label_columns)
    if schema.task == "multilabel":
        Y = samples[cols].to_numpy(dtype=float)
        return ["|".join(c for c, v in zip(cols, row) if v == 1.0) for row in Y], ""
    col = cols[-1]
    return samples[col].astype(str).tolist(), col


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
# Detectors
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


#: Candidate search chunk: rows x N distances at most this many elements (~1 MB per float32 temporary).
_NN_CHUNK_ELEMENTS = 262_144
#: Crop boxes evaluated at once in the crop-aligned distance (~2.4 MB per 17 x 17 float64 temporary).
_BOX_CHUNK = 1024


def _near_duplicates(images: np.ndarray, stats: _Stats, ok: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                     skip: np.ndarray, cfg: AuditConfig, exact_of: np.ndarray) -> dict[tuple[int, int], float]:
    """Pixel near duplicates: ``{(i, j): distance}`` of each matched pair (i < j).

    Candidates: each image's ``near_duplicate_neighbors`` nearest by coarse 8 px colour
    thumbnail among images of similar aspect ratio (chunked, O(N^2) time, about 256k-element
    chunks). Verified by the 95th percentile absolute difference of 16 px grayscale
    thumbnails, directly (resized / recompressed copies) or after aligning the best crop
    of the larger image (cropped copies). Blank images and extra exact copies are skipped.
    """
    idx = np.flatnonzero(ok & ~skip)
    idx = idx[exact_of[idx] == idx]  # one representative per exact-duplicate cluster
    if len(idx) < 2 or cfg.near_duplicate_neighbors < 1:
        return {}
    T = stats.thumb8[idx]
    T = T - T.mean(axis=1, keepdims=True)
    sq = (T ** 2).sum(axis=1)
    la = np.log(np.maximum(widths[idx], 1) / np.maximum(heights[idx], 1)).astype(np.float32)
    k = min(cfg.near_duplicate_neighbors, len(idx) - 1)
    found: list[np.ndarray] = []
    rows = int(min(1024, max(16, _NN_CHUNK_ELEMENTS // len(idx))))  # a chunk's temporaries stay ~1-2 MB each
    for a in range(0, len(idx), rows):
        b = min(len(idx), a + rows)
        d = T[a:b] @ T.T
        d *= -2
        d += sq[a:b, None]
        d += sq[None, :]
        d[np.abs(la[a:b, None] - la[None, :]) > 0.35] = np.inf  # aspect ratios must roughly agree
        d[np.arange(b - a), np.arange(a, b)] = np.inf
        nn = np.argpartition(d, k - 1, axis=1)[:, :k]
        r = np.repeat(np.arange(b - a), k)
        j = nn.reshape(-1)
        live = np.isfinite(d[r, j])
        i1, i2 = idx[a + r[live]], idx[j[live]]
        found.append(np.stack([np.minimum(i1, i2), np.maximum(i1, i2)], axis=1))
    cand = np.unique(np.concatenate(found), axis=0).astype(np.int64)  # each pair once, sorted
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


def _keypoint_matches(images: np.ndarray, pairs: list[tuple[int, int]]) -> list[int]:
    """Per pair, the ORB keypoint matches (cross-checked) consistent with one affine transform (RANSAC inliers).

    Cached images are stretched to a square, so two crops of one photo differ by an affine map
    (scale per axis, shift, a small rotation), not just a similarity. Keypoints are computed
    once per image, on its luminance; 0 when either image has too few.
    """
    import cv2

    orb = cv2.ORB_create(**_ORB)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    keys: dict[int, tuple] = {}

    def keypoints(i: int) -> tuple:
        if i not in keys:
            gray = np.asarray(images[i], np.float32) @ _LUMA
            kp, desc = orb.detectAndCompute(np.clip(gray, 0, 255).astype(np.uint8), None)
            keys[i] = (np.float32([k.pt for k in kp]).reshape(-1, 2), desc)
        return keys[i]

    out = []
    for i, j in pairs:
        (pa, da), (pb, db) = keypoints(i), keypoints(j)
        m = matcher.match(da, db) if da is not None and db is not None and len(pa) >= 8 and len(pb) >= 8 else ()
        if len(m) < 8:
            out.append(0)
            continue
        _, inl = cv2.estimateAffine2D(pa[[x.queryIdx for x in m]], pb[[x.trainIdx for x in m]], method=cv2.RANSAC,
                                      ransacReprojThreshold=_RANSAC_PX)
        out.append(0 if inl is None else int(inl.sum()))
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


def _label_features(stats: _Stats, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Cheap per-image features for the quick classifier: gradients (HOG), layout, colours, geometry."""
    w = np.maximum(widths, 1).astype(np.float32)
    h = np.maximum(heights, 1).astype(np.float32)
    geo = np.stack([np.log(w), np.log(h), np.log(w / h)], axis=1)
    g = stats.gray16
    g = (g - g.mean(axis=1, keepdims=True)) / (g.std(axis=1, keepdims=True) + 8.0)
    return np.concatenate([stats.hog, g, stats.color, stats.hsv, geo], axis=1)


#: Width the quick label classifier's features are reduced to (principal components).
_LABEL_DIMS = 256
#: Image + ImageNet features are used whole up to this many values (rows x columns), reduced above.
_LABEL_REDUCE_ELEMENTS = 20_000_000


def _imagenet_features(ds: Any, workspace: Workspace, samples: pd.DataFrame, mode: str, notes: list[str],
                       progress: Callable[[int, int], None] | None = None, *, who: str = "label_issue",
                       choice: str = "label_issue_features=image+imagenet") -> np.ndarray | None:
    """A pretrained ImageNet backbone's pooled features (N, D) aligned to ``samples`` (NaN rows: none), or None.

    The backbone and its per-dataset cache are the Embeddings page's
    (:func:`core.embeddings.backbone_embeddings`), so the two share the work. ``mode`` is
    :attr:`AuditConfig.label_issue_features` or :attr:`AuditConfig.near_duplicate_features`
    (``who`` names the detector in notes, ``choice`` the setting that allows a download);
    when the features cannot be had a note says why and the detector goes on without them.
    """
    from core import embeddings, models

    if mode in ("image", "pixels"):
        return None
    alone = "image features only" if who == "label_issue" else "pixels only"
    bb = embeddings.BACKBONE
    if mode == "auto" and not models.weights_cached(bb["backbone"], alpha=bb["alpha"], image_size=bb["image_size"]):
        notes.append(f"{who}: {alone}. Pretrained ImageNet features (far more precise on photos) "
                     f"need the {bb['backbone']} weights in Keras' cache ({models.keras_cache_dir()}): choose "
                     f"ImageNet features ({choice}) to let Keras download them.")
        return None
    try:
        emb = embeddings.backbone_embeddings(workspace, ds.dataset_id, progress=progress)
    except models.WeightsUnavailable as exc:
        notes.append(f"{who}: {alone}: {exc}")
        return None
    except Exception as exc:  # noqa: BLE001 - optional features must not sink the whole audit
        notes.append(f"{who}: {alone}: the ImageNet features failed ({type(exc).__name__}: {exc})")
        return None
    at = pd.Index(emb.sample_ids.astype(str)).get_indexer(samples["sample_id"].astype(str))  # -1: no vector
    out = np.full((len(samples), emb.vectors.shape[1]), np.nan, np.float32)
    out[at >= 0] = emb.vectors[at[at >= 0]]
    return out


def _reduced(X: np.ndarray) -> np.ndarray:
    """Features wider than :data:`_LABEL_DIMS`: standardized (in place) and projected on their top principal components."""
    if X.shape[1] <= _LABEL_DIMS or len(X) <= _LABEL_DIMS:
        return X
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    X = StandardScaler(copy=False).fit_transform(np.asarray(X, dtype=np.float32))  # in place: X is ours
    return PCA(n_components=_LABEL_DIMS, svd_solver="covariance_eigh").fit_transform(X)


def _oof_probs(X: np.ndarray, y: np.ndarray, *, folds: int, seed: int, reduce: bool = True) -> np.ndarray:
    """Out-of-fold class probabilities (N, K) of a standardized logistic regression.

    With ``reduce``, features wider than :data:`_LABEL_DIMS` are first standardized and
    projected on their top principal components (unsupervised, so fitted on all rows
    without leaking labels): the regression's working copies then take a quarter of the
    memory and time. ``X`` may be overwritten (the caller builds it for this call).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if reduce:
        X = _reduced(X)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=200))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cross_val_predict(clf, X, y, cv=cv, method="predict_proba")


def _confident_learning(y: np.ndarray, probs: np.ndarray, cfg: AuditConfig) -> np.ndarray:
    """Indices (into ``y``) of suspected label errors, most suspect first (cleanlab)."""
    from cleanlab.filter import find_label_issues

    probs = np.clip(probs, 1e-6, 1.0)
    probs = probs / probs.sum(axis=1, keepdims=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_label_issues(y, probs, filter_by=cfg.label_issue_filter,
                                  return_indices_ranked_by="self_confidence", n_jobs=1)
    cap = int(math.ceil(cfg.label_issue_max_fraction * len(y)))
    return np.asarray(found[:cap], dtype=np.int64)


def _run_probabilities(run_dir: str | os.PathLike, samples: pd.DataFrame, label_col: str
                       ) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """A run's out-of-sample (val / test) probabilities aligned to ``samples``.

    Returns (row indices into samples, probs (n, K), class names, run id).
    """
    from core import runs

    rd = runs.RunDir(Path(run_dir).expanduser())
    pred = runs.read_predictions(rd)
    if pred.task == "multilabel":
        raise ValueError(f"run_dir={str(rd.path)!r} is a multi-label run; label_issue from a run needs a "
                         "single-label (multiclass, binary or hierarchical) run")
    classes = [str(c) for c in pred.classes]
    probs = np.asarray(pred.probs, dtype=np.float64)
    held = np.isin(np.asarray(pred.splits).astype(str), ["val", "test"])
    pos = {s: i for i, s in enumerate(samples["sample_id"].astype(str))}
    rows, keep = [], []
    for r, (sid, h) in enumerate(zip(np.asarray(pred.sample_ids).astype(str), held)):
        if h and sid in pos:
            rows.append(pos[sid])
            keep.append(r)
    if not rows:
        raise ValueError(f"run_dir={str(rd.path)!r}: none of its validation / test predictions matches a sample "
                         "of this dataset (was it trained on another dataset?)")
    return np.asarray(rows, np.int64), probs[np.asarray(keep)], classes, rd.run_id


def _label_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray, skip: np.ndarray,
                  cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str],
                  notes: list[str], imagenet: np.ndarray | None = None
                  ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue rows, the source, per-row probabilities (for other detectors) and the class list.

    ``imagenet``: pretrained features (N, D) aligned to ``samples`` (see :func:`_imagenet_features`),
    appended to the image features of the quick classifier.
    """
    if schema.task == "multilabel":
        return _multilabel_issues(samples, schema, stats, ok, skip, cfg, run_dir, labels_shown, rels, notes, imagenet)
    if run_dir is None and schema.task == "hierarchical" and len(schema.label_columns) > 1:
        return _hierarchy_label_issues(samples, schema, stats, ok, skip, cfg, labels_shown, rels, notes, imagenet)
    return _single_label_issues(samples, schema, schema.label_columns[-1], stats, ok, skip, cfg, run_dir,
                                labels_shown, rels, notes, imagenet)


def _single_label_issues(samples: pd.DataFrame, schema: Any, col: str, stats: _Stats | None, ok: np.ndarray,
                         skip: np.ndarray, cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str],
                         notes: list[str], imagenet: np.ndarray | None
                         ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue rows for one label column (a run's held-out probabilities, or the quick classifier's)."""
    sids = samples["sample_id"].astype(str).tolist()
    if run_dir is not None:
        rows_idx, probs, classes, source = _run_probabilities(run_dir, samples, col)
        # the run may predict another level of a hierarchy: use the label column its classes match best
        cls = set(classes)
        col = max(reversed(schema.label_columns), key=lambda c: samples[c].astype(str).isin(cls).mean())
        given = samples[col].astype(str).to_numpy()
        cidx = {c: k for k, c in enumerate(classes)}
        sel = np.array([given[i] in cidx and ok[i] for i in rows_idx], dtype=bool)
        rows_idx, probs = rows_idx[sel], probs[sel]
        y = np.array([cidx[given[i]] for i in rows_idx], dtype=np.int64)
        present = np.unique(y)
        if len(present) < 2:
            notes.append("label_issue: the run's held-out predictions cover fewer than 2 classes.")
            return [], source, {}, classes
    else:
        source = "features"
        given = samples[col].astype(str).to_numpy()
        counts = Counter(given[ok & ~skip])
        usable = sorted(c for c, n in counts.items() if n >= cfg.label_issue_folds)
        if len(usable) < 2:
            notes.append(f"label_issue: {col}: needs 2 classes with >= {cfg.label_issue_folds} samples each.")
            return [], source, {}, usable
        classes = usable
        cidx = {c: k for k, c in enumerate(classes)}
        keep = ok & ~skip & np.isin(given, classes)
        if imagenet is not None:
            keep &= ~np.isnan(imagenet).any(axis=1)
        rows_idx = np.flatnonzero(keep)
        y = np.array([cidx[given[i]] for i in rows_idx], dtype=np.int64)
        X = _label_features(stats, samples["width"].to_numpy(), samples["height"].to_numpy())[rows_idx]
        reduce = True
        if imagenet is not None:
            source = "features+imagenet"
            X = np.concatenate([X, imagenet[rows_idx]], axis=1)
            reduce = X.size > _LABEL_REDUCE_ELEMENTS  # pretrained features lose precision when compressed
        probs = _oof_probs(X, y, folds=cfg.label_issue_folds, seed=cfg.seed, reduce=reduce)
    found = _confident_learning(y, probs, cfg)
    out = []
    for r in found:
        i = int(rows_idx[r])
        p = probs[r]
        order = np.argsort(-p)
        best = int(order[0]) if order[0] != y[r] else int(order[1])
        detail = (f"the {'run' if run_dir is not None else 'out-of-fold classifier'} gives the label "
                  f"{classes[y[r]]!r} p={p[y[r]]:.2f}; {classes[best]!r} p={p[best]:.2f}")
        out.append(_row(sids[i], rels[i], "label_issue", 1.0 - float(p[y[r]]), "relabel", detail,
                        label=labels_shown[i], suggested_label=classes[best], label_column=col))
    per_row = {int(rows_idx[r]): probs[r] for r in range(len(rows_idx))}
    return out, source, per_row, classes


def _hierarchy_label_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray,
                            skip: np.ndarray, cfg: AuditConfig, labels_shown: list[str], rels: list[str],
                            notes: list[str], imagenet: np.ndarray | None
                            ) -> tuple[list[dict[str, Any]], str, dict[int, np.ndarray], list[str]]:
    """label_issue on a hierarchy's finest level, each flag saying which levels are wrong.

    The suggested leaf either lies under the sample's own parent ("wrong species, right family")
    or moves it: the flag then names every coarser level that would change with it (the
    parents the suggested leaf has in the data). Classifiers on the coarser levels themselves
    add flags the leaf one does not confirm (on the demo, with the test suite's settings, they
    brought precision from above 0.7 down to 0.65), so they do not run.
    """
    cols = list(schema.label_columns)
    rows, source, per_row, classes = _single_label_issues(samples, schema, cols[-1], stats, ok, skip, cfg, None,
                                                          labels_shown, rels, notes, imagenet)
    table = samples[cols].astype(str)
    parents = {c: table.groupby(cols[-1])[c].agg(lambda v: v.value_counts().index[0]).to_dict() for c in cols[:-1]}
    pos = pd.Series(np.arange(len(samples)), index=samples["sample_id"].astype(str))
    for r in rows:
        here = table.iloc[int(pos[r["sample_id"]])]
        moved = [f"{c} {here[c]!r} -> {parents[c].get(r['suggested_label'], '?')!r}" for c in cols[:-1]
                 if parents[c].get(r["suggested_label"]) != here[c]]
        r["detail"] += (f"; wrong {cols[-1]}, right {cols[-2]} (the suggestion is under {cols[-2]} {here[cols[-2]]!r} too)"
                        if not moved else "; its " + ", ".join(moved) + " would change too")
    return rows, source, per_row, classes


def _multilabel_issues(samples: pd.DataFrame, schema: Any, stats: _Stats | None, ok: np.ndarray, skip: np.ndarray,
                       cfg: AuditConfig, run_dir: Any, labels_shown: list[str], rels: list[str], notes: list[str],
                       imagenet: np.ndarray | None) -> tuple[list[dict[str, Any]], str, dict, list[str]]:
    """label_issue for multi-label data: cleanlab's ``multilabel_classification`` on per-label probabilities.

    The probabilities are a run's held-out (val / test) predictions, or out-of-fold ones of one
    logistic regression per label on the quick classifier's features (plus ImageNet features when
    given). A sample is judged on the labels it has (a missing value, NaN, is never taken for 0:
    it counts as an agreeing 0, so it adds no disagreement, and is never the one flagged);
    its flag names the label most at odds with the probabilities (``label_column``) and suggests
    the label set with that one flipped (positives joined by ``|``, as the review records it).
    """
    from cleanlab.multilabel_classification.filter import find_label_issues

    cols = [str(c) for c in schema.label_columns]
    n = len(samples)
    Y = samples[cols].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    P = np.full(Y.shape, np.nan)
    if run_dir is not None:
        from core import runs

        rd = runs.RunDir(Path(run_dir).expanduser())
        pred = runs.read_predictions(rd)
        if pred.task != "multilabel" or not set(cols) <= {str(c) for c in pred.classes}:
            raise ValueError(f"run_dir={str(rd.path)!r} does not predict this dataset's labels {cols}; label_issue on "
                             "multi-label data needs a multi-label run of it")
        held = np.isin(np.asarray(pred.splits).astype(str), ["val", "test"])
        at = pd.Index(samples["sample_id"].astype(str)).get_indexer(np.asarray(pred.sample_ids).astype(str)[held])
        order = [[str(c) for c in pred.classes].index(c) for c in cols]
        P[at[at >= 0]] = np.asarray(pred.probs, np.float64)[held][at >= 0][:, order]
        source, who = rd.run_id, "the run"
    else:
        keep = ok & ~skip
        if imagenet is not None:
            keep &= ~np.isnan(imagenet).any(axis=1)
        rows_idx = np.flatnonzero(keep)
        X = _label_features(stats, samples["width"].to_numpy(), samples["height"].to_numpy())[rows_idx]
        source = "features"
        if imagenet is not None:
            source = "features+imagenet"
            X = np.concatenate([X, imagenet[rows_idx]], axis=1)
        if X.size > _LABEL_REDUCE_ELEMENTS or imagenet is None:
            X = _reduced(X)
        thin = []
        for k, col in enumerate(cols):
            known = np.isfinite(Y[rows_idx, k])
            yk = Y[rows_idx[known], k].astype(np.int64)
            if len(yk) == 0 or np.bincount(yk, minlength=2).min() < cfg.label_issue_folds:
                thin.append(col)
                continue
            P[rows_idx[known], k] = _oof_probs(X[known], yk, folds=cfg.label_issue_folds, seed=cfg.seed,
                                               reduce=False)[:, 1]
        if thin:
            notes.append(f"label_issue: labels {thin} were not checked: each needs >= {cfg.label_issue_folds} "
                         "positive and negative samples.")
        who = "the out-of-fold classifier"
    use = [k for k in range(len(cols)) if np.isfinite(P[:, k]).any()]
    if len(use) < 2:
        notes.append("label_issue: multi-label checks need probabilities for at least 2 labels.")
        return [], source, {}, cols
    # every sample with a probability for each label it has is judged on those labels: an unknown entry
    # counts as a confident, agreeing 0 (y 0, p ~0), so it adds no disagreement
    y_all, p_all = Y[:, use], P[:, use]
    known = np.isfinite(y_all)
    judged = np.flatnonzero(known.any(axis=1) & (np.isfinite(p_all) | ~known).all(axis=1))
    if len(judged) < max(10, cfg.label_issue_folds):
        notes.append("label_issue: too few samples with a probability for each label.")
        return [], source, {}, cols
    partly = int((~known[judged]).any(axis=1).sum())
    if partly:
        notes.append(f"label_issue: {partly} sample(s) with a missing label value were judged on the labels they have.")
    k_use = known[judged]
    p_use = np.clip(np.where(k_use, p_all[judged], 0.0), 1e-6, 1 - 1e-6)
    y_use = np.where(k_use, y_all[judged], 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = find_label_issues([np.flatnonzero(r == 1).tolist() for r in y_use], p_use,
                                  filter_by=cfg.label_issue_filter, return_indices_ranked_by="self_confidence",
                                  n_jobs=1)
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    for r in np.asarray(found, np.int64)[:int(math.ceil(cfg.label_issue_max_fraction * len(judged)))]:
        i = int(judged[r])
        gap = np.where(k_use[r], np.abs(y_use[r] - p_use[r]), 0.0)  # only a label it has can be wrong
        k = int(np.argmax(gap))
        col, cur = cols[use[k]], int(y_use[r, k])
        others = [f"{cols[use[j]]!r} {int(y_use[r, j])} (p={p_use[r, j]:.2f})" for j in np.argsort(-gap)[1:3]
                  if gap[j] > 0.5]
        detail = (f"{who} gives label {col!r} p={p_use[r, k]:.2f}, but it is {cur}"
                  + (f"; also at odds: {', '.join(others)}" if others else ""))
        # the review's multi-label relabel sets the whole label set: the positives, joined by "|"
        fixed = [c for c in cols if (Y[i, cols.index(c)] == 1) != (c == col)]
        action = "relabel" if fixed else "review"  # an empty set is chosen in the picker, not one click away
        if not fixed:
            detail += "; with it flipped the image would have no label"
        out.append(_row(sids[i], rels[i], "label_issue", float(gap[k]), action, detail, label=labels_shown[i],
                        suggested_label="|".join(fixed), label_column=col))
    return out, source, {}, cols


def _hierarchy_conflicts(samples: pd.DataFrame, schema: Any, rels: list[str], labels_shown: list[str]
                         ) -> list[dict[str, Any]]:
    if schema.task != "hierarchical" or len(schema.label_columns) < 2:
        return []
    out = []
    cols = list(schema.label_columns)
    sids = samples["sample_id"].astype(str).tolist()
    for coarse, fine in zip(cols, cols[1:]):
        par = samples[coarse].astype(str).to_numpy()
        chi = samples[fine].astype(str).to_numpy()
        table = pd.crosstab(chi, par)
        for child, counts in table.iterrows():
            counts = counts[counts > 0].sort_values(ascending=False)
            if len(counts) < 2:
                continue
            major, n_major = str(counts.index[0]), int(counts.iloc[0])
            total = int(counts.sum())
            if n_major * 2 <= total:  # no clear majority: every parent is suspect
                major = ""
            for i in np.flatnonzero((chi == child) & (par != major)):
                detail = (f"{fine} {child!r} is under {coarse} {par[i]!r} here, but under {major!r} in "
                          f"{n_major} of {total} samples" if major else
                          f"{fine} {child!r} appears under several {coarse} values: "
                          + ", ".join(f"{k} ({v})" for k, v in counts.items()))
                out.append(_row(sids[i], rels[i], "hierarchy_conflict", n_major / total if major else 0.5,
                                "relabel" if major else "review", detail, label=labels_shown[i],
                                suggested_label=major, label_column=coarse if major else ""))
    return out


def _missing_labels(samples: pd.DataFrame, schema: Any, rels: list[str], labels_shown: list[str]
                    ) -> list[dict[str, Any]]:
    cols = (list(schema.label_columns) if schema.task == "multilabel" else []) + list(schema.attribute_columns)
    if not cols:
        return []
    M = samples[cols].to_numpy(dtype=float)
    miss = np.isnan(M)
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    for i in np.flatnonzero(miss.any(axis=1)):
        names = [c for c, m in zip(cols, miss[i]) if m]
        out.append(_row(sids[i], rels[i], "missing_label", miss[i].mean(), "keep",
                        f"unknown ({len(names)} of {len(cols)}): {', '.join(names)} — missing, not 0; "
                        "fill in if you know it", label=labels_shown[i]))
    return out


def _rare_classes(samples: pd.DataFrame, schema: Any, cfg: AuditConfig, rels: list[str], labels_shown: list[str]
                  ) -> list[dict[str, Any]]:
    sids = samples["sample_id"].astype(str).tolist()
    out = []
    if schema.task == "multilabel":
        cols = list(schema.label_columns)
        Y = samples[cols].to_numpy(dtype=float)
        for j, c in enumerate(cols):
            pos = np.flatnonzero(Y[:, j] == 1.0)
            if 0 < len(pos) < cfg.rare_min:
                for i in pos:
                    out.append(_row(sids[i], rels[i], "rare_class", 1.0 - len(pos) / cfg.rare_min, "review",
                                    f"label {c!r} has {len(pos)} positive samples (minimum {cfg.rare_min}): "
                                    "collect more, merge it, or exclude it", label=labels_shown[i], group=c))
        return out
    col = schema.label_columns[-1]
    vals = samples[col].astype(str).to_numpy()
    for c, n in Counter(vals).items():
        if n < cfg.rare_min:
            for i in np.flatnonzero(vals == c):
                out.append(_row(sids[i], rels[i], "rare_class", 1.0 - n / cfg.rare_min, "review",
                                f"class {c!r} has {n} samples (minimum {cfg.rare_min}): collect more, merge it "
                                "into another class, or exclude it", label=labels_shown[i], group=c))
    return out


# ---------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------

def audit_dataset(ds: Any, *, workspace: Workspace, config: AuditConfig | dict | None = None,
                  run_dir: str | os.PathLike | None = None,
                  progress: Callable[[str, float], None] | None = None) -> AuditResult:
    """Run the enabled detectors over a dataset and save the result as its latest audit.

    Parameters
    ----------
    ds : core.datasets.Dataset
        The loaded dataset (its N valid samples, schema and load report).
    workspace : Workspace
        Holds the image cache the detectors read, and where the audit is saved.
    config : AuditConfig or dict, optional
        Thresholds and enabled detectors (default: :class:`AuditConfig()`).
    run_dir : path, optional
        A finished run of this dataset: ``label_issue`` then uses its validation / test
        predicted probabilities (out-of-sample) instead of the quick classifier.
    progress : callable(stage: str, fraction: float), optional
        Called as stages advance (``fraction`` in 0..1 over the whole audit).

    Returns
    -------
    AuditResult
        ``issues`` with :data:`ISSUE_COLUMNS`, one row per flag, most suspect first per issue.

    Raises
    ------
    ValueError
        ``config`` or ``run_dir`` is invalid (the message names it).
    """
    from threadpoolctl import threadpool_limits

    # Small matrices: one BLAS thread is fastest, and never oversubscribes a shared machine.
    with threadpool_limits(limits=1):
        return _audit(ds, workspace=workspace, config=config, run_dir=run_dir, progress=progress)


def _audit(ds: Any, *, workspace: Workspace, config: Any, run_dir: Any, progress: Any) -> AuditResult:
    from core.datasets import Dataset
    from core.images import ImageCache

    t0 = time.perf_counter()
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a core.datasets.Dataset; received {type(ds).__name__}")
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    cfg = config if isinstance(config, AuditConfig) else AuditConfig.from_dict(config) \
        if isinstance(config, dict) or config is None else None
    if cfg is None:
        raise ValueError(f"config must be an AuditConfig, a dict or None; received {type(config).__name__}")
    if run_dir is not None and not Path(run_dir).expanduser().is_dir():
        raise ValueError(f"run_dir={str(run_dir)!r} is not a folder; pass a run directory (runs/<run_id>/)")
    on = set(cfg.enabled)
    timings: dict[str, float] = {}
    notes: list[str] = []
    rows: list[dict[str, Any]] = []

    def tick(stage: str, frac: float) -> None:
        if progress:
            progress(stage, float(min(1.0, max(0.0, frac))))

    def timed(name: str, t: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 4)

    samples = ds.samples.reset_index(drop=True)
    schema = ds.schema
    n = len(samples)
    sids = samples["sample_id"].astype(str).tolist()
    rels = samples["rel_path"].astype(str).tolist()
    labels_shown, label_col = _current_labels(samples, schema)
    widths = samples["width"].to_numpy(dtype=np.int64)
    heights = samples["height"].to_numpy(dtype=np.int64)

    t = time.perf_counter()
    tick("corrupt", 0.0)
    if "corrupt" in on:
        rows += _corrupt(ds, workspace)
    timed("corrupt", t)

    pixel_detectors = {"uniform", "duplicate", "near_duplicate", "dark", "bright", "blurry"}
    need_pixels = bool(on & pixel_detectors) or ("label_issue" in on and run_dir is None)
    stats = None
    ok = np.ones(n, dtype=bool)
    images = np.zeros((0, AUDIT_SIZE, AUDIT_SIZE, 3), np.uint8)
    if need_pixels and n:
        t = time.perf_counter()
        tick("reading images", 0.05)
        arrays = ImageCache(workspace.cache_dir / "images").arrays(samples, AUDIT_SIZE, lazy=True)
        images, ok = arrays.images, np.asarray(arrays.ok, dtype=bool)
        boxed = samples[["x1", "y1", "x2", "y2"]].notna().any(axis=1).any()
        stats = _image_stats(images, ok, widths, heights, want_hash=bool(boxed) and "duplicate" in on,
                             want_features="label_issue" in on and run_dir is None,
                             progress=lambda d, tot: tick("image statistics", 0.05 + 0.35 * d / max(tot, 1)))
        timed("image statistics", t)

    uniform = np.zeros(n, dtype=bool)
    if stats is not None:
        std = np.nan_to_num(stats.std, nan=np.inf)
        uniform = std < cfg.uniform_std
        if "uniform" in on:
            for i in np.flatnonzero(uniform):
                rows.append(_row(sids[i], rels[i], "uniform", 1.0 - std[i] / max(cfg.uniform_std, 1e-9), "exclude",
                                 f"pixel std {std[i]:.2f} < {cfg.uniform_std:g}: a blank, (near-)uniform image",
                                 label=labels_shown[i]))
        live = ok & ~uniform
        if "dark" in on:
            for i in np.flatnonzero(live & (stats.p95 < cfg.dark)):
                rows.append(_row(sids[i], rels[i], "dark", 1.0 - stats.p95[i] / max(cfg.dark, 1e-9), "review",
                                 f"95th percentile luminance {stats.p95[i]:.0f} < {cfg.dark:g}: underexposed",
                                 label=labels_shown[i]))
        if "bright" in on:
            for i in np.flatnonzero(live & (stats.p05 > cfg.bright)):
                rows.append(_row(sids[i], rels[i], "bright", (stats.p05[i] - cfg.bright) / max(255 - cfg.bright, 1e-9),
                                 "review", f"5th percentile luminance {stats.p05[i]:.0f} > {cfg.bright:g}: "
                                 "overexposed / washed out", label=labels_shown[i]))
        if "blurry" in on:
            for i in np.flatnonzero(live & (stats.sharp < cfg.blurry)):
                rows.append(_row(sids[i], rels[i], "blurry", 1.0 - stats.sharp[i] / max(cfg.blurry, 1e-12), "review",
                                 f"sharpness {stats.sharp[i]:.4f} < {cfg.blurry:g}: little fine detail",
                                 label=labels_shown[i]))

    if "odd_size" in on:
        short = np.minimum(widths, heights)
        aspect = np.maximum(widths, heights) / np.maximum(short, 1)
        for i in np.flatnonzero((short < cfg.odd_min_side) | (aspect > cfg.odd_max_aspect)):
            if short[i] < cfg.odd_min_side:
                score = 1.0 + (1.0 - short[i] / max(cfg.odd_min_side, 1))
                why = f"shortest side {short[i]} px < {cfg.odd_min_side}: tiny"
            else:
                score = aspect[i] / max(cfg.odd_max_aspect, 1e-9) - 1.0
                why = f"aspect ratio {aspect[i]:.1f} > {cfg.odd_max_aspect:g}"
            rows.append(_row(sids[i], rels[i], "odd_size", score, "review", f"{widths[i]}x{heights[i]} px: {why}",
                             label=labels_shown[i]))

    exact_of = np.arange(n)
    if stats is not None and ("duplicate" in on or "near_duplicate" in on):
        t = time.perf_counter()
        tick("duplicates", 0.45)
        clusters = _exact_duplicates(samples, stats, ok)
        for members in clusters:
            exact_of[members] = min(members)
        if "duplicate" in on:
            rows += _cluster_rows(clusters, "duplicate", "dup", sids=sids, rels=rels, labels=labels_shown,
                                  label_col=label_col, score_of=lambda i, m: 1.0,
                                  how=lambda i, j: "identical file bytes as")
        timed("duplicate", t)
        if "near_duplicate" in on:
            t = time.perf_counter()
            tick("near duplicates", 0.5)
            dist = _near_duplicates(images, stats, ok, widths, heights, uniform, cfg, exact_of)
            sims: dict[tuple[int, int], tuple[float, int]] = {}
            if cfg.near_duplicate_features != "pixels":
                vectors = _imagenet_features(ds, workspace, samples, cfg.near_duplicate_features, notes,
                                             who="near_duplicate", choice="near_duplicate_features=pixels+imagenet",
                                             progress=lambda d, tot: tick("near duplicates: ImageNet features",
                                                                          0.5 + 0.15 * d / max(tot, 1)))
                if vectors is not None:
                    reps = np.flatnonzero(ok & ~uniform)
                    sims = _feature_duplicates(vectors, reps[exact_of[reps] == reps], images, cfg)
            near = _pair_clusters({**dist, **sims}, n)
            lim = max(cfg.near_duplicate_distance, 1e-9)
            need = cfg.near_duplicate_matches
            score: dict[int, float] = {}
            how: dict[int, str] = {}
            for (i, j), dv in dist.items():  # pixel matches score 0.5..1 (distance lim..0)
                for a in (i, j):
                    if 1.0 - dv / (2 * lim) > score.get(a, -1.0):
                        score[a], how[a] = 1.0 - dv / (2 * lim), f"pixel distance {dv:.1f} to"
            for (i, j), (sv, mv) in sims.items():  # keypoint-verified: 0.5..1 as matches grow to 4x the minimum
                v = 0.5 + 0.5 * min(1.0, (mv - need) / max(3.0 * need, 1.0))
                for a in (i, j):
                    if v > score.get(a, -1.0):
                        score[a], how[a] = v, f"{mv} matching keypoints (ImageNet-feature similarity {sv:.2f}) with"
            rows += _cluster_rows(near, "near_duplicate", "near", sids=sids, rels=rels, labels=labels_shown,
                                  label_col=label_col, score_of=lambda i, m: score.get(i, 0.5),
                                  how=lambda i, j: how.get(i, "near duplicate of"))
            timed("near_duplicate", t)

    source = "features"
    if "label_issue" in on and n:
        t = time.perf_counter()
        tick("label issues", 0.7)
        imagenet = None
        if run_dir is None:
            imagenet = _imagenet_features(ds, workspace, samples, cfg.label_issue_features, notes,
                                          progress=lambda d, tot: tick("label issues: ImageNet features",
                                                                       0.7 + 0.2 * d / max(tot, 1)))
        li, source, _probs, _classes = _label_issues(samples, schema, stats, ok, uniform, cfg, run_dir,
                                                     labels_shown, rels, notes, imagenet)
        rows += li
        timed("label_issue", t)
    if "hierarchy_conflict" in on:
        rows += _hierarchy_conflicts(samples, schema, rels, labels_shown)
    if "missing_label" in on:
        rows += _missing_labels(samples, schema, rels, labels_shown)
    if "rare_class" in on:
        rows += _rare_classes(samples, schema, cfg, rels, labels_shown)

    issues = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS)) if rows else _empty_issues()
    if len(issues):
        order = {k: r for r, k in enumerate(DETECTORS)}
        issues["_o"] = issues["issue"].map(order)
        issues = issues.sort_values(["_o", "score", "sample_id"], ascending=[True, False, True], kind="stable")
        issues = issues.drop(columns="_o").reset_index(drop=True)
    issues["score"] = issues["score"].astype(float).round(6)
    counts = {k: int((issues["issue"] == k).sum()) for k in DETECTORS}
    result = AuditResult(issues=issues, dataset_id=ds.dataset_id, config=cfg, counts=counts,
                         seconds=round(time.perf_counter() - t0, 3), n_samples=n, source=source,
                         timings=timings, notes=tuple(notes), created_at=time.time())
    save_audit(workspace, result)
    tick("done", 1.0)
    return result


def issues_by_class(result: AuditResult) -> pd.DataFrame:
    """Counts of flags per current label (rows) and issue (columns), for the summary table."""
    df = result.issues
    if df.empty:
        return pd.DataFrame(columns=list(DETECTORS))
    t = pd.crosstab(df["label"].replace("", "(none)"), df["issue"])
    return t.reindex(columns=[d for d in DETECTORS if d in t.columns]).fillna(0).astype(int)


# ---------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------

def _audit_dir(ws: Workspace, dataset_id: str) -> Path:
    return ws.cache_dir / "audit" / str(dataset_id)


def save_audit(ws: Workspace, result: AuditResult) -> Path:
    """Save ``result`` as the latest audit of its dataset; returns the folder.

    The table goes to a new ``issues-<token>.parquet``; ``audit.json`` (config, counts,
    token) is written last and atomically, so a reader always sees a complete pair.
    """
    if not isinstance(ws, Workspace):
        raise ValueError(f"ws must be a core.workspace.Workspace; received {type(ws).__name__}")
    d = _audit_dir(ws, result.dataset_id)
    token = uuid.uuid4().hex[:12]
    buf = io.BytesIO()
    result.issues.to_parquet(buf, index=False)
    atomic_write_bytes(d / f"issues-{token}.parquet", buf.getvalue())
    atomic_write_json(d / "audit.json", {**result.meta(), "token": token, "format": 1})
    for old in d.glob("issues-*.parquet"):
        if old.name != f"issues-{token}.parquet":
            try:
                old.unlink()
            except OSError:
                pass
    return d


def load_audit(ws: Workspace, dataset_id: str) -> AuditResult | None:
    """The latest saved audit of ``dataset_id``, or None when there is none (or it is unreadable)."""
    if not isinstance(ws, Workspace):
        raise ValueError(f"ws must be a core.workspace.Workspace; received {type(ws).__name__}")
    d = _audit_dir(ws, dataset_id)
    meta = read_json(d / "audit.json")
    if not isinstance(meta, dict) or "token" not in meta:
        return None
    try:
        issues = pd.read_parquet(d / f"issues-{meta['token']}.parquet")
        cfg = AuditConfig.from_dict(meta.get("config"))
    except Exception:  # noqa: BLE001 - a damaged audit is simply absent: run it again
        return None
    for c in ISSUE_COLUMNS:
        if c not in issues.columns:
            issues[c] = 0.0 if c == "score" else ""
    counts = {k: int(meta.get("counts", {}).get(k, 0)) for k in DETECTORS}
    return AuditResult(issues=issues[list(ISSUE_COLUMNS)], dataset_id=str(meta["dataset_id"]), config=cfg,
                       counts=counts, seconds=float(meta.get("seconds", 0.0)), n_samples=int(meta.get("n_samples", 0)),
                       source=str(meta.get("source", "features")), timings=dict(meta.get("timings", {})),
                       notes=tuple(meta.get("notes", ())), created_at=float(meta.get("created_at", 0.0)))
