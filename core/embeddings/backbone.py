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
from typing import Sequence

import numpy as np
import pandas as pd

from core.embeddings.compute import (
    _FORMAT_VERSION,
    Embeddings,
    ProgressFn,
    _cached_key,
    _label_strings,
    _load_cached,
    _save,
)
from core.embeddings.forward import forward_paths, forward_samples
from core.workspace import Workspace

#: The backbone used for a dataset without a run (ImageNet MobileNetV2-0.35, global average pooled).
BACKBONE = {"backbone": "mobilenet_v2", "alpha": 0.35, "image_size": 96}


def backbone_embeddings_path(workspace: Workspace, dataset_id: str, *, backbone: str = BACKBONE["backbone"],
                             alpha: float = BACKBONE["alpha"], image_size: int = BACKBONE["image_size"]) -> Path:
    return workspace.cache_dir / "embeddings" / f"{dataset_id}-{backbone}-{alpha}-{image_size}.npz"


def _backbone_key(samples: pd.DataFrame, backbone: str, alpha: float, image_size: int) -> str:
    """What the cached file must have been computed from: the backbone and every sample's id and path."""
    h = hashlib.sha1(f"v{_FORMAT_VERSION}\0{backbone}\0{alpha}\0{image_size}\0".encode())
    for col in ("sample_id", "path"):
        h.update("\n".join(samples[col].astype(str).tolist()).encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def backbone_embeddings_fresh(workspace: Workspace, dataset_id: str, *, backbone: str = BACKBONE["backbone"],
                              alpha: float = BACKBONE["alpha"], image_size: int = BACKBONE["image_size"]) -> bool:
    """Whether :func:`backbone_embeddings` would return its cached file as is (cheap: reads neither images
    nor vectors; False when the dataset cannot be opened)."""
    from core import datasets

    try:
        samples = datasets.open_dataset(workspace, dataset_id).samples.reset_index(drop=True)
    except (OSError, ValueError):
        return False
    path = backbone_embeddings_path(workspace, dataset_id, backbone=backbone, alpha=alpha, image_size=image_size)
    return _cached_key(path) == _backbone_key(samples, backbone, alpha, image_size)


def backbone_embeddings(workspace: Workspace, dataset_id: str, *, backbone: str = BACKBONE["backbone"],
                        alpha: float = BACKBONE["alpha"], image_size: int = BACKBONE["image_size"],
                        progress: ProgressFn | None = None, engine: str = "local") -> Embeddings:
    """Embeddings of a dataset before any training: a pretrained ImageNet backbone's pooled features.

    Cached under ``<workspace>/cache/embeddings/``; ``labels`` are the dataset's labels
    (finest level for hierarchies), ``preds`` are empty (there is no classifier), ``probs``
    has shape (N, 0). ``run_id`` is ``"backbone:<name>"``. ``engine``: where the images are decoded
    and embedded when the cache is stale (``local`` or ``ray``, see :mod:`core.embeddings.forward`).

    Raises
    ------
    core.models.WeightsUnavailable
        The ImageNet weights are not in Keras' cache (offline): the message says where to put them.
    """
    from core import datasets

    ds = datasets.open_dataset(workspace, dataset_id)
    samples = ds.samples.reset_index(drop=True)
    path = backbone_embeddings_path(workspace, dataset_id, backbone=backbone, alpha=alpha, image_size=image_size)
    key = _backbone_key(samples, backbone, alpha, image_size)
    cached = _load_cached(path=path)
    if cached is not None and cached[1] == key:
        if progress:
            progress(1, 1)
        return cached[0]
    n = len(samples)
    total = 2 * max(n, 1)
    ok, (vectors,) = forward_samples(samples, image_size, {"backbone": backbone, "alpha": alpha, "size": image_size},
                                     workspace, engine=engine, progress=progress)
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
    ok, (vectors,) = forward_paths(paths, image_size, {"backbone": backbone, "alpha": alpha, "size": image_size},
                                   workspace)
    return vectors, ok
