"""Thumbnails and uploads for the Embeddings page's galleries, from the workspace's resized-image cache.

:func:`sample_thumbnails` / :func:`dataset_thumbnails` show dataset samples (crop boxes
applied), :func:`path_thumbnails` whole image files, and :func:`store_upload` keeps an
uploaded file content-addressed under ``<workspace>/cache/uploads/``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from core import runs
from core.workspace import Workspace, atomic_write_bytes

def sample_thumbnails(run_dir, sample_ids: Sequence[str], *, size: int = 96,
                      workspace=None) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of dataset samples (crop boxes applied) from the resized-image cache.

    Returns ``images`` (M, size, size, 3) uint8 and ``ok`` (M,) bool, in ``sample_ids`` order.
    """

    rd = runs.as_run_dir(run_dir)
    ws = runs.run_workspace(rd, workspace)
    return dataset_thumbnails(runs.run_dataset(rd, ws), sample_ids, workspace=ws, size=size)


def dataset_thumbnails(ds, sample_ids: Sequence[str], *, workspace: Workspace,
                       size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of samples of a :class:`core.datasets.Dataset` (crop boxes applied), in ``sample_ids`` order."""
    from core.images import ImageCache

    ws = workspace
    table = ds.samples.set_index(ds.samples["sample_id"].astype(str), drop=False)
    ids = [str(s) for s in sample_ids]
    known = [s for s in ids if s in table.index]
    if len(known) != len(ids):
        missing = [s for s in ids if s not in table.index][:3]
        raise ValueError(f"sample ids not in the run's dataset, e.g. {missing}")
    arrays = ImageCache(ws.cache_dir / "images").arrays(table.loc[ids].reset_index(drop=True), size)
    return np.asarray(arrays.images), np.asarray(arrays.ok, dtype=bool)


def path_thumbnails(paths: Sequence[str], *, workspace: Workspace, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of image files (whole images) from the workspace's resized-image cache."""
    from core.images import ImageCache

    arrays = ImageCache(workspace.cache_dir / "images").arrays(pd.DataFrame({"path": [str(p) for p in paths]}), size)
    return np.asarray(arrays.images), np.asarray(arrays.ok, dtype=bool)


def store_upload(workspace: Workspace, name: str, data: bytes) -> Path:
    """Keep an uploaded file under ``<workspace>/cache/uploads/<sha1><ext>`` (content-addressed) and return its path.

    The bytes are not decoded here: :func:`core.embeddings.embed_paths` decodes them safely and reports
    the files that are not images.
    """
    from core.images import IMAGE_EXTENSIONS

    ext = Path(str(name)).suffix.lower()
    ext = ext if ext in IMAGE_EXTENSIONS else ".img"
    digest = hashlib.sha1(data).hexdigest()
    path = workspace.cache_dir / "uploads" / f"{digest}{ext}"
    if not path.exists():
        atomic_write_bytes(path, data)
    return path
