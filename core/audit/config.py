"""What an audit is asked and what it answers: the names of the contract, the thresholds, the result.

:data:`DETECTORS`, :data:`ISSUE_COLUMNS` and the other public constants, :class:`AuditConfig`
(the detectors' thresholds), :class:`AuditResult`, and the helpers that build the rows of the
issues table (:func:`_row`, :func:`_empty_issues`, :func:`_current_labels`). Every other
submodule of :mod:`core.audit` builds on these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

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

#: Near duplicates on pretrained features (see :func:`core.audit.duplicates._feature_duplicates`): candidate
#: pairs at least this cosine-similar (MobileNetV2-0.35 at 96 px), confirmed by at least ``NEAR_MATCHES`` agreeing
#: keypoints.
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


#: ``label_issue_filter`` values: ``auto`` or a cleanlab ``filter_by`` method. ``auto`` (the default) is
#: ``low_self_confidence`` when the quick classifier sees pretrained ImageNet features: the samples with the
#: lowest probability of their own label, as many as cleanlab's ``num_label_issues`` estimates. The
#: confident-learning filters flag every sample the confident joint counts off the diagonal, which on
#: fine-grained photos includes the classifier's honest confusions between similar classes: with 5 % flipped
#: labels, F1 0.40 -> 0.52 on cub100 and 0.71 -> 0.82 on flowers12 (bench/bench_audit.py). On cheap image
#: features alone, and for a run's predictions or multi-label data (not measured), ``auto`` stays ``both``:
#: on the demo's UI crops with image features ``low_self_confidence`` fell from F1 0.87 to 0.53.
LABEL_FILTERS = ("auto", "low_self_confidence", "low_normalized_margin", "both", "prune_by_noise_rate",
                 "prune_by_class", "confident_learning", "predicted_neq_given")


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
    ``label_issue_filter``: ``auto`` or a cleanlab ``filter_by`` method (see :data:`LABEL_FILTERS`).
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
    label_issue_filter: str = "auto"
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
        if self.label_issue_filter not in LABEL_FILTERS:
            raise ValueError(f"label_issue_filter must be one of {LABEL_FILTERS}; "
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
    """What :func:`core.audit.audit_dataset` found.

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


def label_filter(cfg: AuditConfig, *, imagenet: bool) -> str:
    """The cleanlab ``filter_by`` method ``cfg.label_issue_filter`` stands for (``auto`` resolved, see
    :data:`LABEL_FILTERS`); ``imagenet``: the probabilities come from a classifier on ImageNet features."""
    if cfg.label_issue_filter != "auto":
        return cfg.label_issue_filter
    return "low_self_confidence" if imagenet else "both"
