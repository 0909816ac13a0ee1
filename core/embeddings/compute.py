"""Embeddings of a run's dataset: the run's model over every sample, cached in the run directory.

Vocabulary: a run's dataset has N samples; the run's model has a layer named
``"embedding"`` (see :mod:`core.models`) whose output is a D-dimensional vector per image.
This module holds the :class:`Embeddings` result, the run look-ups (:func:`image_size`,
:func:`embeddings_path`), the per-checkpoint model cache and its forward pass,
:func:`embed_images` / :func:`embed_paths` / :func:`find_images` for new images, and
:func:`compute_embeddings` with its cache file (``embeddings.npz``: key, save, load,
:func:`embeddings_fresh`). The other submodules of :mod:`core.embeddings` build on it.

TensorFlow is imported inside the functions that use it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from core import runs
from core.embeddings.forward import _twin_model, forward_paths, forward_samples, predict_outputs
from core.workspace import atomic_write_bytes

#: File of the cached embeddings inside a run directory.
EMBEDDINGS_FILE = "embeddings.npz"
#: Bumped when the cached file's layout changes (older files are recomputed).
_FORMAT_VERSION = 1

ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Embeddings:
    """The embedding of every (decodable) sample of a run's dataset.

    Attributes
    ----------
    run_id : str
    sample_ids, paths, splits : ndarray of shape (N,), object (str)
    vectors : ndarray of shape (N, D), float32
        Output of the model's ``"embedding"`` layer.
    probs : ndarray of shape (N, K), float32
        The model's output probabilities (``classes`` order).
    classes : tuple of str, length K
        Output names (classes; leaf classes for hierarchical; labels for multi-label).
    labels : ndarray of shape (N,), object (str)
        The true label the run trained on ("" when unknown). Hierarchical: the finest
        level. Multi-label: the positive labels joined by ``"|"``.
    preds : ndarray of shape (N,), object (str)
        The model's prediction, in the same form as ``labels``.
    task : str
    n_failed : int
        Samples left out because their image could not be decoded.
    model_mtime_ns : int
        Of the checkpoint the vectors came from.
    extra : dict
        More per-sample string columns (hierarchical: one per level, ``<level>``).
    """

    run_id: str
    sample_ids: np.ndarray
    paths: np.ndarray
    splits: np.ndarray
    vectors: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    labels: np.ndarray
    preds: np.ndarray
    task: str
    n_failed: int = 0
    model_mtime_ns: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def correct(self) -> np.ndarray:
        """bool (N,): prediction equals the known label (False where the label is unknown)."""
        return (self.labels != "") & (self.labels == self.preds)

    @property
    def confidence(self) -> np.ndarray:
        """float (N,): the largest output probability."""
        return self.probs.max(axis=1) if self.probs.size else np.zeros(len(self), np.float32)

    def split_mask(self, split: str) -> np.ndarray:
        return self.splits == split

    def frame(self) -> pd.DataFrame:
        """One row per sample: sample_id, path, split, label, prediction, correct, confidence (+ extra)."""
        df = pd.DataFrame({
            "sample_id": self.sample_ids, "path": self.paths, "split": self.splits,
            "label": self.labels, "prediction": self.preds, "correct": self.correct,
            "confidence": self.confidence.astype(float),
        })
        for k, v in self.extra.items():
            if k not in df.columns:
                df[k] = v
        return df


# Vector arguments (checked by the projection, clustering and out-of-distribution functions)

def _check_vectors(vectors: Any, name: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D); received shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


# ---------------------------------------------------------------------------
# Helpers: run directory, workspace, dataset
# ---------------------------------------------------------------------------

def embeddings_path(run_dir) -> Path:
    """Where :func:`compute_embeddings` caches its result."""
    return runs.as_run_dir(run_dir).path / EMBEDDINGS_FILE


def image_size(run_dir) -> int:
    """The run's input side in pixels (preprocessing.json, else config.json)."""
    rd = runs.as_run_dir(run_dir)
    pre = runs.read_preprocessing(rd)
    return _input_size(rd, pre, {} if pre.get("image_size") else runs.read_config(rd))


def _input_size(rd: runs.RunDir, preprocessing: Mapping[str, Any], config: Mapping[str, Any]) -> int:
    size = preprocessing.get("image_size") or config.get("image_size")
    if not size:
        raise ValueError(f"{rd.path}: cannot tell the run's image size (no preprocessing.json or config.json "
                         "image_size)")
    return int(size)


def _check_run(rd: runs.RunDir) -> None:
    if not rd.path.is_dir():
        raise ValueError(f"{rd.path} is not a folder; pass a run directory (runs/<run_id>/)")
    if not rd.model.exists():
        raise ValueError(f"{rd.path} has no {rd.model.name}: the run has not saved a checkpoint (yet)")
    if not rd.labels.exists():
        raise ValueError(f"{rd.path} has no {rd.labels.name}: the run has not finished preparing its labels")


def embed_images(run_dir, images: np.ndarray) -> np.ndarray:
    """Embed images with a run's model.

    Parameters
    ----------
    run_dir : path or RunDir
    images : ndarray of shape (N, S, S, 3), uint8 (or float 0..255)
        RGB images at the run's image size S (:func:`image_size`), e.g. from
        ``core.images.load_image`` + ``resize_image``.

    Returns
    -------
    ndarray of shape (N, D), float32
    """
    rd = runs.as_run_dir(run_dir)
    _check_run(rd)
    images = np.asarray(images)
    size = image_size(rd)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape (N, {size}, {size}, 3) for run {rd.run_id}; "
                         f"received shape {images.shape}")
    _, vecs = predict_outputs(_twin_model(rd), images)  # the twin: [predictions, embedding]
    return vecs


def embed_images_with_probs(run_dir, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`embed_images`, also returning the model's probabilities (N, K)."""
    rd = runs.as_run_dir(run_dir)
    _check_run(rd)
    probs, vecs = predict_outputs(_twin_model(rd), np.asarray(images),
                                  flip_average=runs.flips_averaged(runs.read_preprocessing(rd)))
    return vecs, probs


def embed_paths(run_dir, paths: Sequence[str], *, workspace=None, progress: ProgressFn | None = None,
                engine: str = "local") -> tuple[np.ndarray, np.ndarray]:
    """Embed image files (e.g. an unseen folder) through the workspace's resized-image cache (or on Ray:
    ``engine``, see :func:`core.embeddings.forward.forward_samples`).

    Returns
    -------
    vectors : ndarray of shape (M, D), float32, for the decodable files only
    ok : ndarray of shape (len(paths),), bool -- which files were decodable
    """
    rd = runs.as_run_dir(run_dir)
    _check_run(rd)
    ok, (_, vecs) = forward_paths(paths, image_size(rd), {"run": str(rd.path)}, runs.run_workspace(rd, workspace),
                                  engine=engine, progress=progress)
    return vecs, ok


def find_images(folder: str | os.PathLike) -> list[str]:
    """Image files under ``folder`` (recursively, sorted); ``ValueError`` if it is not a folder."""
    from core.images import IMAGE_EXTENSIONS

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder of images")
    return sorted(str(p.resolve()) for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


# ---------------------------------------------------------------------------
# compute_embeddings
# ---------------------------------------------------------------------------

def _label_strings(values: Sequence[Any]) -> np.ndarray:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA or str(v).strip() == "":
            out.append("")
        else:
            out.append(str(v))
    return np.array(out, dtype=object)


def _run_samples(ds, cfg: Mapping[str, Any]) -> pd.DataFrame:
    """The dataset's samples with the run's effective labels (its label patch; exclusions ignored).

    ``cfg``: the run's config.json (:func:`core.runs.read_config`).
    """
    samples = ds.samples.reset_index(drop=True)
    path = cfg.get("labels_override_path")
    if path and Path(path).exists():
        from core.targets import apply_label_overrides

        p = Path(path)
        over = (pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq")
                else pd.read_csv(p, dtype={"sample_id": str}))
        over = over.drop(columns=[c for c in ("excluded",) if c in over.columns])
        over = over[over["sample_id"].astype(str).isin(set(samples["sample_id"].astype(str)))]
        if len(over):
            samples = apply_label_overrides(samples, over)
    return samples


def _labels_and_preds(labels_json: Mapping[str, Any], cfg: Mapping[str, Any], schema, samples: pd.DataFrame,
                      probs: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    task = labels_json["task"]
    names = tuple(runs.output_names(labels_json))
    extra: dict[str, np.ndarray] = {}
    n = len(samples)
    if task == "multilabel":
        cols = list(names)
        y = np.column_stack([pd.to_numeric(samples[c], errors="coerce").to_numpy(float) if c in samples.columns
                             else np.full(n, np.nan) for c in cols]) if n else np.zeros((0, len(cols)))
        true = np.array(["|".join(c for c, v in zip(cols, row) if v == 1) for row in y], dtype=object)
        pred = np.array(["|".join(c for c, v in zip(cols, row) if v >= 0.5) for row in probs], dtype=object)
        known = ~np.isnan(y).all(axis=1) if n else np.zeros(0, bool)
        true = np.where(known, true, "")
        return names, true, pred, extra
    pred = np.array([names[i] for i in probs.argmax(axis=1)], dtype=object) if n else np.zeros(0, object)
    if task == "hierarchical":
        levels = list(labels_json["levels"])
        for lv in levels:
            if lv in samples.columns:
                extra[lv] = _label_strings(samples[lv].tolist())
        from core.targets import hierarchy_path

        path = hierarchy_path(probs, labels_json) if n else {}
        for lv in levels:
            if lv in path:
                cls = labels_json["level_classes"][lv]
                extra[f"{lv}_pred"] = np.array([cls[i] for i in path[lv]], dtype=object)
        true = extra.get(levels[-1], np.full(n, "", dtype=object))
        return names, true, pred, extra
    cols = cfg.get("label_columns") or list(schema.label_columns)
    col = cols[0] if cols else None
    true = _label_strings(samples[col].tolist()) if col in samples.columns else np.full(n, "", dtype=object)
    if task == "binary":
        pos = labels_json.get("positive_class")
        neg = [c for c in names if c != pos]
        neg = neg[0] if neg else ""
        true = np.array(["" if v == "" else (v if v == pos else (v if v in names else neg)) for v in true],
                        dtype=object)
    return names, true, pred, extra


def _cache_key(rd: runs.RunDir, samples: pd.DataFrame, size: int, cfg: Mapping[str, Any]) -> str:
    st = rd.model.stat()
    h = hashlib.sha1()
    h.update(f"v{_FORMAT_VERSION}\0{st.st_mtime_ns}\0{st.st_size}\0{size}\0".encode())
    for col in ("sample_id", "path"):
        h.update("\n".join(samples[col].astype(str).tolist()).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    h.update(str(cfg.get("labels_override_path") or "").encode())
    return h.hexdigest()


def _save(path: Path, emb: Embeddings, key: str) -> None:
    buf = io.BytesIO()
    meta = {"version": _FORMAT_VERSION, "key": key, "run_id": emb.run_id, "classes": list(emb.classes),
            "task": emb.task, "n_failed": emb.n_failed, "model_mtime_ns": emb.model_mtime_ns,
            "extra": list(emb.extra), "created_at": time.time()}
    arrays = {"vectors": emb.vectors, "probs": emb.probs,
              "sample_ids": emb.sample_ids.astype(str), "paths": emb.paths.astype(str),
              "splits": emb.splits.astype(str), "labels": emb.labels.astype(str), "preds": emb.preds.astype(str),
              **{f"extra__{k}": v.astype(str) for k, v in emb.extra.items()}}
    np.savez(buf, meta=np.array(json.dumps(meta)), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_embeddings(run_dir) -> Embeddings | None:
    """The cached embeddings of a run as written last (``None`` when absent or unreadable); no validity check."""
    cached = _load_cached(run_dir)
    return cached[0] if cached else None


def _meta(z) -> dict | None:
    """The ``meta`` member of an opened embeddings file, ``None`` when it is of another format version."""
    meta = json.loads(str(z["meta"]))
    return meta if meta.get("version") == _FORMAT_VERSION else None


def _cached_key(path: Path) -> str | None:
    """The cache key stored in an embeddings file, reading only its small ``meta`` member (not the
    vectors: 512 MB at 100k images); ``None`` when absent, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = _meta(z)
    except (OSError, ValueError, KeyError):
        return None
    return None if meta is None else meta.get("key")


def _load_cached(run_dir=None, *, path: Path | None = None) -> tuple[Embeddings, str] | None:
    path = path if path is not None else embeddings_path(run_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = _meta(z)
            if meta is None:
                return None
            obj = lambda name: z[name].astype(object)  # noqa: E731
            return Embeddings(
                run_id=meta["run_id"], sample_ids=obj("sample_ids"), paths=obj("paths"), splits=obj("splits"),
                vectors=z["vectors"].astype(np.float32), probs=z["probs"].astype(np.float32),
                classes=tuple(meta["classes"]), labels=obj("labels"), preds=obj("preds"), task=meta["task"],
                n_failed=int(meta.get("n_failed", 0)), model_mtime_ns=int(meta.get("model_mtime_ns", 0)),
                extra={k: obj(f"extra__{k}") for k in meta.get("extra", [])},
            ), meta["key"]
    except (OSError, ValueError, KeyError):
        return None


def embeddings_fresh(run_dir, *, workspace=None) -> bool:
    """Whether ``embeddings.npz`` is up to date with the run's checkpoint and dataset (cheap: reads no images)."""
    rd = runs.as_run_dir(run_dir)
    try:
        _check_run(rd)
        run = runs.open_run(rd, workspace)  # each of the run's files read once
        samples = _run_samples(run.dataset(), run.config)
        key = _cache_key(rd, samples, _input_size(rd, run.preprocessing, run.config), run.config)
    except Exception:  # noqa: BLE001 - compute_embeddings will say what is wrong
        return False
    return _cached_key(embeddings_path(rd)) == key


def compute_embeddings(run_dir, *, workspace=None, progress: ProgressFn | None = None,
                       force: bool = False, engine: str = "local") -> Embeddings:
    """Embeddings of every sample of a run's dataset, computed once and cached in the run directory.

    Images come from the workspace's resized-image cache at the run's image size; the
    run's checkpoint (``model.keras``) maps them to its ``"embedding"`` layer. The result
    is saved to ``<run_dir>/embeddings.npz`` (atomically) and reused while the checkpoint
    and the dataset's sample list are unchanged.

    Parameters
    ----------
    run_dir : path or RunDir
        A run with ``model.keras``, ``labels.json`` and ``config.json`` naming its dataset.
    workspace : Workspace or path, optional
        Where the dataset is registered (default: the run's workspace, see :func:`core.runs.run_workspace`).
    progress : callable(done, total), optional
        Called while images are decoded and embedded (decoding counts as the first half).
    force : bool
        Recompute even when the cache is valid.
    engine : {"local", "ray"}
        Where the images are decoded and embedded when the cache is stale (see
        :func:`core.embeddings.forward.forward_samples`); the cached result is the same.

    Returns
    -------
    Embeddings
        N = the dataset's samples whose image decodes.

    Raises
    ------
    ValueError
        Not a finished run, no dataset recorded, or no layer named ``"embedding"``.
    """
    rd = runs.as_run_dir(run_dir)
    _check_run(rd)
    run = runs.open_run(rd, workspace)  # each of the run's files read once
    ws, cfg = run.workspace, run.config
    ds = run.dataset()
    samples = _run_samples(ds, cfg)
    size = _input_size(rd, run.preprocessing, run.config)
    key = _cache_key(rd, samples, size, cfg)
    path = embeddings_path(rd)
    if not force:
        cached = _load_cached(rd)
        if cached is not None and cached[1] == key:
            if progress:
                progress(1, 1)
            return cached[0]
    n = len(samples)
    total = 2 * max(n, 1)
    ok, (probs, vectors) = forward_samples(samples, size, {"run": str(rd.path)}, ws, engine=engine,
                                           progress=progress)  # the twin: [predictions, embedding]
    kept = samples.iloc[ok].reset_index(drop=True)
    labels_json = run.labels
    classes, true, pred, extra = _labels_and_preds(labels_json, cfg, ds.schema, kept, probs)
    emb = Embeddings(
        run_id=rd.run_id, sample_ids=kept["sample_id"].astype(str).to_numpy(object),
        paths=kept["path"].astype(str).to_numpy(object), splits=kept["split"].astype(str).to_numpy(object),
        vectors=vectors, probs=probs, classes=classes, labels=true, preds=pred, task=labels_json["task"],
        n_failed=int(n - len(ok)), model_mtime_ns=rd.model.stat().st_mtime_ns, extra=extra,
    )
    _save(path, emb, key)
    if progress:
        progress(total, total)
    return emb
