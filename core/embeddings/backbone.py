"""Embeddings before any training: a pretrained ImageNet backbone's pooled features of a dataset.

:func:`backbone_embeddings` embeds every sample of a dataset with :data:`BACKBONE` (no run
needed; the audit uses it too) and caches the result under ``<workspace>/cache/embeddings/``
in the same file format as a run's ``embeddings.npz``; :func:`backbone_embed_paths` embeds
image files with it.

TensorFlow / Keras are imported inside the functions that use them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.embeddings.compute import (
    _FORMAT_VERSION,
    _MODELS_LOCK,
    _PREDICT_LOCK,
    BATCH_SIZE,
    Embeddings,
    ProgressFn,
    _label_strings,
    _load_cached,
    _save,
)
from core.workspace import Workspace

#: The backbone used for a dataset without a run (ImageNet MobileNetV2-0.35, global average pooled).
BACKBONE = {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": 96}
_BACKBONES: dict[tuple, Any] = {}


def _backbone_model(backbone: str, alpha: float, size: int):
    key = (backbone, float(alpha), int(size))
    with _MODELS_LOCK:
        if key in _BACKBONES:
            return _BACKBONES[key]
    import keras

    from core import models

    base = models._load_backbone(backbone, size, alpha=alpha, weights="imagenet")  # WeightsUnavailable if absent
    inputs = keras.Input(shape=(size, size, 3), dtype="float32", name="image")
    x = models._TRANSFER[backbone][1]()(inputs)
    feats = base(x, training=False)
    twin = keras.Model(inputs, feats, name=f"{backbone}_features")
    with _MODELS_LOCK:
        _BACKBONES[key] = twin
    return twin


def _backbone_forward(model, images: np.ndarray, *, progress: ProgressFn | None = None, offset: int = 0,
                      total: int | None = None) -> np.ndarray:
    n = len(images)
    total = n if total is None else total
    out = []
    with _PREDICT_LOCK:
        for start in range(0, n, BATCH_SIZE):
            batch = np.asarray(images[start:start + BATCH_SIZE], dtype=np.float32)
            out.append(np.asarray(model.predict_on_batch(batch), dtype=np.float32).reshape(len(batch), -1))
            if progress:
                progress(offset + min(start + BATCH_SIZE, n), total)
    return np.concatenate(out) if out else np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)


def backbone_embeddings_path(workspace: Workspace, dataset_id: str, *, backbone: str = BACKBONE["backbone"],
                             alpha: float = BACKBONE["alpha"], image_size: int = BACKBONE["image_size"]) -> Path:
    return workspace.cache_dir / "embeddings" / f"{dataset_id}-{backbone}-{alpha}-{image_size}.npz"


def backbone_embeddings(workspace: Workspace, dataset_id: str, *, backbone: str = BACKBONE["backbone"],
                        alpha: float = BACKBONE["alpha"], image_size: int = BACKBONE["image_size"],
                        progress: ProgressFn | None = None) -> Embeddings:
    """Embeddings of a dataset before any training: a pretrained ImageNet backbone's pooled features.

    Cached under ``<workspace>/cache/embeddings/``; ``labels`` are the dataset's labels
    (finest level for hierarchies), ``preds`` are empty (there is no classifier), ``probs``
    has shape (N, 0). ``run_id`` is ``"backbone:<name>"``.

    Raises
    ------
    core.models.WeightsUnavailable
        The ImageNet weights are not in Keras' cache (offline): the message says where to put them.
    """
    from core import datasets
    from core.images import ImageCache

    ds = datasets.open_dataset(workspace, dataset_id)
    samples = ds.samples.reset_index(drop=True)
    path = backbone_embeddings_path(workspace, dataset_id, backbone=backbone, alpha=alpha, image_size=image_size)
    h = hashlib.sha1(f"v{_FORMAT_VERSION}\0{backbone}\0{alpha}\0{image_size}\0".encode())
    for col in ("sample_id", "path"):
        h.update("\n".join(samples[col].astype(str).tolist()).encode("utf-8", "surrogateescape"))
    key = h.hexdigest()
    cached = _load_cached(path=path)
    if cached is not None and cached[1] == key:
        if progress:
            progress(1, 1)
        return cached[0]
    model = _backbone_model(backbone, alpha, image_size)
    n = len(samples)
    total = 2 * max(n, 1)
    arrays = ImageCache(workspace.cache_dir / "images").arrays(
        samples, image_size, progress=(lambda d, t: progress(d, total)) if progress else None)
    ok = np.flatnonzero(np.asarray(arrays.ok, dtype=bool))
    chunks = [np.zeros((0, int(model.outputs[0].shape[-1])), np.float32)]
    for start in range(0, len(ok), 4096):
        chunks.append(_backbone_forward(model, arrays.images[ok[start:start + 4096]], progress=progress,
                                        offset=n + start, total=total))
    vectors = np.concatenate(chunks)
    kept = samples.iloc[ok].reset_index(drop=True)
    schema = ds.schema
    if schema.task == "multilabel":
        cols = list(schema.label_columns)
        y = np.column_stack([pd.to_numeric(kept[c], errors="coerce").to_numpy(float) for c in cols])
        labels = np.array(["|".join(c for c, v in zip(cols, row) if v == 1) for row in y], dtype=object)
    else:
        labels = _label_strings(kept[schema.label_columns[-1]].tolist())
    extra = {}
    if schema.task == "hierarchical":
        extra = {lv: _label_strings(kept[lv].tolist()) for lv in schema.label_columns}
    emb = Embeddings(
        run_id=f"backbone:{backbone}", sample_ids=kept["sample_id"].astype(str).to_numpy(object),
        paths=kept["path"].astype(str).to_numpy(object), splits=kept["split"].astype(str).to_numpy(object),
        vectors=vectors, probs=np.zeros((len(kept), 0), np.float32), classes=(), labels=labels,
        preds=np.full(len(kept), "", dtype=object), task=schema.task, n_failed=int(n - len(ok)), extra=extra)
    _save(path, emb, key)
    if progress:
        progress(total, total)
    return emb


def backbone_embed_paths(paths: Sequence[str], *, workspace: Workspace, backbone: str = BACKBONE["backbone"],
                         alpha: float = BACKBONE["alpha"],
                         image_size: int = BACKBONE["image_size"]) -> tuple[np.ndarray, np.ndarray]:
    """Embed image files with the pretrained backbone (as :func:`backbone_embeddings`); returns (vectors, ok)."""
    from core.images import ImageCache

    arrays = ImageCache(workspace.cache_dir / "images").arrays(pd.DataFrame({"path": [str(p) for p in paths]}),
                                                              image_size)
    ok = np.asarray(arrays.ok, dtype=bool)
    model = _backbone_model(backbone, alpha, image_size)
    return _backbone_forward(model, arrays.images[np.flatnonzero(ok)]), ok
