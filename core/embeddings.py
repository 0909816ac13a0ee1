"""Embeddings of a run: feature extraction, PCA/UMAP maps, clusters and out-of-distribution scores.

Vocabulary: a run's dataset has N samples; the run's model has a layer named
``"embedding"`` (see :mod:`core.models`) whose output is a D-dimensional vector per image.

* :func:`compute_embeddings` runs the model once over **every** sample of the run's dataset
  (all splits) and caches the result in the run directory (``embeddings.npz``, written
  atomically; recomputed when the checkpoint or the sample list changes). It returns an
  :class:`Embeddings` with the vectors (N, D), the model's probabilities (N, K) and the
  true / predicted label of every sample as strings.
* :func:`embed_images` / :func:`embed_paths` embed new images (uploads, an unseen folder)
  with the same model.
* :func:`project` maps vectors to 2-D or 3-D with PCA or UMAP (:data:`PROJECTIONS`); the
  returned :class:`Projection` keeps the fitted model so new points are placed on the same
  map with ``projection.model.transform(vectors)`` -- no refit.
* :func:`cluster` groups vectors with a Gaussian mixture (k chosen by BIC) or
  agglomerative (Ward) clustering and measures agreement with the labels (adjusted Rand
  index, purity).
* :func:`fit_ood` fits an out-of-distribution scorer on the **train** embeddings
  (:data:`OOD_METHODS`: Mahalanobis distance to the nearest class mean, Gaussian-mixture
  negative log-likelihood, k-nearest-neighbour cosine distance). Every ``score`` is
  *higher = more unusual* (less like anything in training). :func:`evaluate_ood` scores
  the test split against a set of unseen images (AUROC, threshold at a false-alarm rate);
  :func:`save_ood_threshold` writes the chosen threshold to ``thresholds.json`` for
  Predict, and :func:`ood_scores` scores vectors with the saved method.

TensorFlow, scikit-learn and umap-learn are imported inside the functions that use them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from core import runs
from core.workspace import Workspace, atomic_write_bytes

#: File of the cached embeddings inside a run directory.
EMBEDDINGS_FILE = "embeddings.npz"
#: Bumped when the cached file's layout changes (older files are recomputed).
_FORMAT_VERSION = 1
#: Images per forward pass.
BATCH_SIZE = 256
PROJECTION_METHODS = ("pca", "umap")
OOD_METHODS = ("mahalanobis", "gmm", "knn")
CLUSTER_METHODS = ("gmm", "agglomerative")
#: Default false-alarm rate on the test split for the out-of-distribution threshold.
DEFAULT_FPR = 0.05
#: Agglomerative clustering and the BIC search run on at most this many points (the rest are assigned).
CLUSTER_FIT_MAX = 4000

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


@dataclass(frozen=True, eq=False)
class Projection:
    """Points of a 2-D / 3-D map; ``model.transform(vectors)`` places new points without refitting."""

    points: np.ndarray
    method: str
    dims: int
    params: dict[str, Any]
    model: Any


@dataclass(frozen=True, eq=False)
class Clustering:
    """Cluster assignment of N points.

    ``labels`` int (N,) in 0..k-1; ``bic`` a table (k, bic) of the BIC search (GMM; empty
    for agglomerative); ``ari`` adjusted Rand index against the true labels and
    ``purity`` (share of samples in their cluster's majority label), NaN without labels;
    ``table`` one row per cluster (cluster, size, top_label, top_share); ``typical``
    cluster -> indices of the samples nearest its centre (most typical first).
    """

    labels: np.ndarray
    k: int
    method: str
    bic: pd.DataFrame
    ari: float
    purity: float
    table: pd.DataFrame
    typical: dict[int, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class OODEvaluation:
    """Scores of the test split (in-distribution) and of unseen images, with the chosen threshold.

    ``auroc``: test = negative vs unseen = positive (NaN when either side is empty);
    ``threshold``: the (1 - fpr) quantile of the test scores, so about ``fpr`` of the
    test split is flagged; ``n_flagged``: unseen images scoring above it.
    """

    method: str
    test_scores: np.ndarray
    unseen_scores: np.ndarray
    auroc: float
    threshold: float
    fpr: float
    n_unseen: int
    n_flagged: int
    test_fpr: float
    model: Any = None

    def summary(self) -> dict[str, Any]:
        return {"method": self.method, "auroc": self.auroc, "threshold": self.threshold, "fpr": self.fpr,
                "n_test": int(len(self.test_scores)), "n_unseen": self.n_unseen, "n_flagged": self.n_flagged,
                "recall": (self.n_flagged / self.n_unseen) if self.n_unseen else float("nan"),
                "test_flagged_rate": self.test_fpr}


# ---------------------------------------------------------------------------
# Helpers: run directory, workspace, dataset
# ---------------------------------------------------------------------------

def _rd(run_dir) -> runs.RunDir:
    return run_dir if isinstance(run_dir, runs.RunDir) else runs.RunDir(Path(run_dir))


def embeddings_path(run_dir) -> Path:
    """Where :func:`compute_embeddings` caches its result."""
    return _rd(run_dir).path / EMBEDDINGS_FILE


def image_size(run_dir) -> int:
    """The run's input side in pixels (preprocessing.json, else config.json)."""
    from core.workspace import read_json

    rd = _rd(run_dir)
    pre = read_json(rd.preprocessing, default=None) or {}
    size = pre.get("image_size") or runs.read_config(rd).get("image_size")
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


# ---------------------------------------------------------------------------
# The model (loaded once per checkpoint, guarded by a lock: Keras predict is not thread-safe)
# ---------------------------------------------------------------------------

_MODELS: "OrderedDict[tuple[str, int], Any]" = OrderedDict()
_MODELS_LOCK = threading.Lock()
_PREDICT_LOCK = threading.Lock()


def _twin_model(rd: runs.RunDir):
    """:func:`core.models.twin_model` of the run's checkpoint, ``[predictions, embedding]`` (cached per mtime)."""
    key = (str(rd.model.resolve()), rd.model.stat().st_mtime_ns)
    with _MODELS_LOCK:
        if key in _MODELS:
            _MODELS.move_to_end(key)
            return _MODELS[key]
    from core import models

    try:
        twin = models.twin_model(models.load_model(rd.model))
    except ValueError as exc:
        raise ValueError(f"{rd.model}: {exc}") from exc
    with _MODELS_LOCK:
        _MODELS[key] = twin
        while len(_MODELS) > 4:
            _MODELS.popitem(last=False)
    return twin


def _forward(twin, images: np.ndarray, *, progress: ProgressFn | None = None,
             offset: int = 0, total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    n = len(images)
    total = n if total is None else total
    vecs, probs = [], []
    with _PREDICT_LOCK:
        for start in range(0, n, BATCH_SIZE):
            batch = np.asarray(images[start:start + BATCH_SIZE], dtype=np.float32)
            p, e = twin.predict_on_batch(batch)
            vecs.append(np.asarray(e, dtype=np.float32).reshape(len(batch), -1))
            probs.append(np.asarray(p, dtype=np.float32).reshape(len(batch), -1))
            if progress:
                progress(offset + min(start + BATCH_SIZE, n), total)
    if not vecs:
        k = int(twin.outputs[0].shape[-1])
        d = int(twin.outputs[1].shape[-1])
        return np.zeros((0, d), np.float32), np.zeros((0, k), np.float32)
    return np.concatenate(vecs), np.concatenate(probs)


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
    rd = _rd(run_dir)
    _check_run(rd)
    images = np.asarray(images)
    size = image_size(rd)
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must have shape (N, {size}, {size}, 3) for run {rd.run_id}; "
                         f"received shape {images.shape}")
    vecs, _ = _forward(_twin_model(rd), images)
    return vecs


def embed_images_with_probs(run_dir, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`embed_images`, also returning the model's probabilities (N, K)."""
    rd = _rd(run_dir)
    _check_run(rd)
    return _forward(_twin_model(rd), np.asarray(images))


def embed_paths(run_dir, paths: Sequence[str], *, workspace=None,
                progress: ProgressFn | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Embed image files (e.g. an unseen folder) through the workspace's resized-image cache.

    Returns
    -------
    vectors : ndarray of shape (M, D), float32, for the decodable files only
    ok : ndarray of shape (len(paths),), bool -- which files were decodable
    """
    from core.images import ImageCache

    rd = _rd(run_dir)
    _check_run(rd)
    ws = runs.run_workspace(rd, workspace)
    frame = pd.DataFrame({"path": [str(p) for p in paths]})
    arrays = ImageCache(ws.cache_dir / "images").arrays(frame, image_size(rd))
    ok = np.asarray(arrays.ok, dtype=bool)
    vecs, _ = _forward(_twin_model(rd), arrays.images[np.flatnonzero(ok)] if ok.any() else
                       np.zeros((0, *arrays.images.shape[1:]), np.uint8), progress=progress)
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


def _run_samples(rd: runs.RunDir, ds) -> pd.DataFrame:
    """The dataset's samples with the run's effective labels (its label patch; exclusions ignored)."""
    cfg = runs.read_config(rd)
    samples = ds.samples.reset_index(drop=True)
    path = cfg.get("labels_override_path")
    if path and Path(path).exists():
        from core.training import apply_label_overrides

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
        from core.training import hierarchy_path

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


def _cache_key(rd: runs.RunDir, samples: pd.DataFrame, size: int) -> str:
    st = rd.model.stat()
    h = hashlib.sha1()
    h.update(f"v{_FORMAT_VERSION}\0{st.st_mtime_ns}\0{st.st_size}\0{size}\0".encode())
    for col in ("sample_id", "path"):
        h.update("\n".join(samples[col].astype(str).tolist()).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    cfg = runs.read_config(rd)
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


def _load_cached(run_dir=None, *, path: Path | None = None) -> tuple[Embeddings, str] | None:
    path = path if path is not None else embeddings_path(run_dir)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("version") != _FORMAT_VERSION:
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
    rd = _rd(run_dir)
    try:
        _check_run(rd)
        ws = runs.run_workspace(rd, workspace)
        samples = _run_samples(rd, runs.run_dataset(rd, ws))
        key = _cache_key(rd, samples, image_size(rd))
    except Exception:  # noqa: BLE001 - compute_embeddings will say what is wrong
        return False
    cached = _load_cached(rd)
    return cached is not None and cached[1] == key


def compute_embeddings(run_dir, *, workspace=None, progress: ProgressFn | None = None,
                       force: bool = False) -> Embeddings:
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

    Returns
    -------
    Embeddings
        N = the dataset's samples whose image decodes.

    Raises
    ------
    ValueError
        Not a finished run, no dataset recorded, or no layer named ``"embedding"``.
    """
    from core.images import ImageCache

    rd = _rd(run_dir)
    _check_run(rd)
    ws = runs.run_workspace(rd, workspace)
    ds = runs.run_dataset(rd, ws)
    samples = _run_samples(rd, ds)
    size = image_size(rd)
    key = _cache_key(rd, samples, size)
    path = embeddings_path(rd)
    if not force:
        cached = _load_cached(rd)
        if cached is not None and cached[1] == key:
            if progress:
                progress(1, 1)
            return cached[0]
    n = len(samples)
    total = 2 * max(n, 1)
    decode_progress = (lambda done, tot: progress(done, total)) if progress else None
    arrays = ImageCache(ws.cache_dir / "images").arrays(samples, size, progress=decode_progress)
    ok = np.flatnonzero(np.asarray(arrays.ok, dtype=bool))
    twin = _twin_model(rd)
    probs = np.zeros((0, int(twin.outputs[0].shape[-1])), np.float32)  # twin: [predictions, embedding]
    vectors = np.zeros((0, int(twin.outputs[1].shape[-1])), np.float32)
    chunks_v, chunks_p = [vectors], [probs]
    step = 4096  # gather from the memmap in chunks: bounded memory at 100k images
    for start in range(0, len(ok), step):
        rows = ok[start:start + step]
        v, p = _forward(twin, arrays.images[rows], progress=progress, offset=n + start, total=total)
        chunks_v.append(v)
        chunks_p.append(p)
    vectors, probs = np.concatenate(chunks_v), np.concatenate(chunks_p)
    kept = samples.iloc[ok].reset_index(drop=True)
    labels_json = runs.read_labels(rd)
    classes, true, pred, extra = _labels_and_preds(labels_json, runs.read_config(rd), ds.schema, kept, probs)
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


# ---------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------

def _check_vectors(vectors: Any, name: str = "vectors") -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (N, D); received shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


class _PCAMap:
    """PCA to ``dims`` (padded with zeros when the data has fewer dimensions)."""

    def __init__(self, dims: int, seed: int):
        self.dims = dims
        self.seed = seed

    def fit(self, x: np.ndarray) -> "_PCAMap":
        from sklearn.decomposition import PCA

        n_comp = max(1, min(self.dims, x.shape[0], x.shape[1]))
        # many points, few dimensions (embeddings): the D x D covariance's eigenvectors are exact and fast
        solver = "covariance_eigh" if x.shape[1] <= 1024 and x.shape[0] >= 4 * x.shape[1] else "full"
        self.pca_ = PCA(n_components=n_comp, random_state=self.seed, svd_solver=solver).fit(x)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _check_vectors(x)
        out = self.pca_.transform(x).astype(np.float32)
        if out.shape[1] < self.dims:
            out = np.hstack([out, np.zeros((len(out), self.dims - out.shape[1]), np.float32)])
        return out

    @property
    def explained_variance_ratio_(self) -> np.ndarray:
        return self.pca_.explained_variance_ratio_


class _UMAPMap:
    """UMAP to ``dims``; ``transform`` embeds new points into the fitted map (no refit)."""

    def __init__(self, dims: int, seed: int, n_neighbors: int, min_dist: float, n_epochs: int | None = None):
        self.dims = dims
        self.seed = seed
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs

    def fit(self, x: np.ndarray) -> "_UMAPMap":
        try:
            import umap
        except ImportError as exc:  # pragma: no cover - umap-learn is a requirement
            raise ImportError("UMAP needs umap-learn (pip install umap-learn); use method='pca' meanwhile") from exc
        nn = max(2, min(self.n_neighbors, x.shape[0] - 1))
        self.umap_ = umap.UMAP(n_components=self.dims, n_neighbors=nn, min_dist=self.min_dist,
                               n_epochs=self.n_epochs, random_state=self.seed, n_jobs=1,
                               init="spectral" if x.shape[0] > self.dims + 2 else "random")
        self.embedding_ = self.umap_.fit_transform(x).astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = _check_vectors(x)
        return np.asarray(self.umap_.transform(x), dtype=np.float32)


def _pca(vectors: np.ndarray, *, dims: int, seed: int, **_: Any) -> tuple[np.ndarray, Any, dict]:
    m = _PCAMap(dims, seed).fit(vectors)
    return m.transform(vectors), m, {"explained_variance_ratio": [float(v) for v in m.explained_variance_ratio_]}


def _umap(vectors: np.ndarray, *, dims: int, seed: int, n_neighbors: int = 15, min_dist: float = 0.1,
          fit_size: int | None = None, n_epochs: int | None = None, **_: Any) -> tuple[np.ndarray, Any, dict]:
    n = len(vectors)
    if n < 4:
        raise ValueError(f"UMAP needs at least 4 points; received {n} (use method='pca')")
    params = {"n_neighbors": n_neighbors, "min_dist": min_dist}
    if fit_size is not None and n > fit_size:
        rng = np.random.default_rng(seed)
        fit_idx = np.sort(rng.choice(n, size=int(fit_size), replace=False))
        m = _UMAPMap(dims, seed, n_neighbors, min_dist, n_epochs).fit(vectors[fit_idx])
        points = np.zeros((n, dims), np.float32)
        rest = np.setdiff1d(np.arange(n), fit_idx)
        points[fit_idx] = m.embedding_
        points[rest] = m.transform(vectors[rest])
        params["fit_size"] = int(fit_size)
        return points, m, params
    m = _UMAPMap(dims, seed, n_neighbors, min_dist, n_epochs).fit(vectors)
    return m.embedding_, m, params


#: method -> function(vectors, *, dims, seed, **options) -> (points, model, params).
PROJECTIONS: dict[str, Callable[..., tuple[np.ndarray, Any, dict]]] = {"pca": _pca, "umap": _umap}


def project(vectors: np.ndarray, *, method: str = "pca", dims: int = 2, seed: int = 0, **options: Any) -> Projection:
    """Map vectors to 2-D or 3-D.

    Parameters
    ----------
    vectors : ndarray of shape (N, D)
    method : {"pca", "umap"}
    dims : {2, 3}
    seed : int
        Same seed, same input -> same points.
    **options
        UMAP: ``n_neighbors`` (15), ``min_dist`` (0.1), ``n_epochs`` (default: umap-learn's),
        ``fit_size`` (fit on a seeded random subset of this many points and place the rest with ``transform``: how a
        50k-point map stays interactive).

    Returns
    -------
    Projection
        ``points`` float32 (N, dims); ``model.transform(new_vectors)`` places new points
        on the same map without refitting.

    Examples
    --------
    >>> p = project(np.eye(5, 3), method="pca", dims=2)
    >>> p.points.shape
    (5, 2)
    """
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {list(PROJECTIONS)}; received method={method!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3; received dims={dims!r}")
    x = _check_vectors(vectors)
    t = time.perf_counter()
    points, model, params = PROJECTIONS[method](x, dims=dims, seed=int(seed), **options)
    params = {**params, "seed": int(seed), "n": int(len(x)), "seconds": round(time.perf_counter() - t, 3)}
    return Projection(points=np.asarray(points, np.float32), method=method, dims=dims, params=params, model=model)


def warm_up_umap(*, n: int = 300, dims: int = 2, seed: int = 0) -> float:
    """Fit and apply a cheap UMAP so numba compiles its functions in this process; returns seconds taken.

    Few optimisation epochs: the compiled code is the same as a real map's, the work is not.
    Use ``n`` > 4096 to compile the approximate-neighbours path that larger maps take.
    """
    t = time.perf_counter()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16)).astype(np.float32)
    p = project(x, method="umap", dims=dims, seed=seed, n_epochs=5)
    p.model.transform(x[:10])
    return time.perf_counter() - t


def sample_for_display(n: int, max_points: int, *, keep: np.ndarray | None = None,
                       strata: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points to draw, sorted.

    Every ``keep`` point (e.g. mistakes, flagged samples) is kept; the rest is a seeded
    random sample stratified by ``strata`` (e.g. labels) so small classes stay visible.
    """
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    keep_idx = np.flatnonzero(keep) if keep is not None else np.zeros(0, np.int64)
    if len(keep_idx) >= max_points:
        return np.sort(rng.choice(keep_idx, size=max_points, replace=False))
    rest = np.setdiff1d(np.arange(n), keep_idx)
    budget = max_points - len(keep_idx)
    if strata is None:
        pick = rng.choice(rest, size=budget, replace=False)
    else:
        s = np.asarray(strata)[rest]
        groups = {g: rest[s == g] for g in pd.unique(s)}
        floor = max(1, budget // (4 * max(len(groups), 1)))  # every group gets at least a few points
        pick_list = []
        for g, idx in groups.items():
            share = max(floor, int(round(budget * len(idx) / len(rest))))
            pick_list.append(rng.choice(idx, size=min(share, len(idx)), replace=False))
        pick = np.concatenate(pick_list)
        if len(pick) > budget:
            pick = rng.choice(pick, size=budget, replace=False)
    return np.sort(np.concatenate([keep_idx, pick]))


# ---------------------------------------------------------------------------
# Clustering
# ---------------------------------------------------------------------------

def _reduce(x: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, Any]:
    from sklearn.decomposition import PCA

    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
    if x.shape[1] <= dims:
        return x, None
    pca = PCA(n_components=dims, random_state=seed).fit(x)
    return pca.transform(x), pca


def _agreement(pred: np.ndarray, true: np.ndarray | None) -> tuple[float, float]:
    from sklearn.metrics import adjusted_rand_score

    if true is None:
        return float("nan"), float("nan")
    true = np.asarray(true, dtype=object)
    known = true != ""
    if known.sum() < 2:
        return float("nan"), float("nan")
    ari = float(adjusted_rand_score(true[known], pred[known]))
    ct = pd.crosstab(pred[known], true[known])
    purity = float(ct.max(axis=1).sum() / known.sum())
    return ari, purity


def cluster(vectors: np.ndarray, *, method: str = "gmm", k: int | None = None, true_labels: np.ndarray | None = None,
            k_range: Sequence[int] | None = None, n_typical: int = 6, seed: int = 0,
            reduce_dims: int = 20) -> Clustering:
    """Cluster embedding vectors and compare the clusters with the labels.

    The vectors are standardised and reduced to ``reduce_dims`` principal components
    first (a stable space for Gaussian mixtures).

    Parameters
    ----------
    vectors : ndarray of shape (N, D)
    method : {"gmm", "agglomerative"}
        ``"gmm"``: Gaussian mixture (full covariance); with ``k=None`` the k of lowest BIC
        over ``k_range`` (default 2..min(15, N-1)). ``"agglomerative"``: Ward linkage on at
        most :data:`CLUSTER_FIT_MAX` points, the rest assigned to the nearest cluster
        centre; ``k=None`` means the number of distinct labels (else 8).
    k : int, optional
    true_labels : ndarray of shape (N,), str, optional
        For the adjusted Rand index and purity ("" = unknown, left out).
    n_typical : int
        Samples per cluster in ``typical`` (nearest the cluster centre first).

    Returns
    -------
    Clustering
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.mixture import GaussianMixture

    if method not in CLUSTER_METHODS:
        raise ValueError(f"method must be one of {list(CLUSTER_METHODS)}; received method={method!r}")
    x = _check_vectors(vectors)
    n = len(x)
    if n < 3:
        raise ValueError(f"clustering needs at least 3 points; received {n}")
    if k is not None and (not isinstance(k, (int, np.integer)) or not 1 <= k < n):
        raise ValueError(f"k must be an int in 1..{n - 1}; received k={k!r}")
    if true_labels is not None and len(true_labels) != n:
        raise ValueError(f"true_labels must have {n} entries; received {len(true_labels)}")
    z, _ = _reduce(x.astype(np.float64), reduce_dims, seed)
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=CLUSTER_FIT_MAX, replace=False)) if n > CLUSTER_FIT_MAX else np.arange(n)
    zf = z[fit_idx]
    bic = pd.DataFrame(columns=["k", "bic"])
    params: dict[str, Any] = {"reduce_dims": min(reduce_dims, x.shape[1]), "n_fit": int(len(fit_idx))}
    if method == "gmm":
        def gmm(kk: int):
            return GaussianMixture(n_components=kk, covariance_type="full", reg_covar=1e-3, random_state=seed,
                                   n_init=1, max_iter=200).fit(zf)
        if k is None:
            ks = list(k_range) if k_range is not None else list(range(2, min(15, len(zf) - 1) + 1))
            ks = [kk for kk in ks if 1 <= kk < len(zf)]
            if not ks:
                raise ValueError(f"no usable k in k_range={k_range!r} for {len(zf)} points")
            rows, models = [], {}
            for kk in ks:
                m = gmm(kk)
                models[kk] = m
                rows.append({"k": kk, "bic": float(m.bic(zf))})
            bic = pd.DataFrame(rows)
            k = int(bic.loc[bic["bic"].idxmin(), "k"])
            model = models[k]
        else:
            model = gmm(int(k))
            bic = pd.DataFrame([{"k": int(k), "bic": float(model.bic(zf))}])
        labels = model.predict(z)
        centres = model.means_
    else:
        if k is None:
            distinct = len(set(np.asarray(true_labels, dtype=object)) - {""}) if true_labels is not None else 0
            k = distinct if 2 <= distinct < len(zf) else min(8, len(zf) - 1)
        agg = AgglomerativeClustering(n_clusters=int(k), linkage="ward").fit(zf)
        centres = np.stack([zf[agg.labels_ == c].mean(axis=0) for c in range(int(k))])
        labels = np.empty(n, dtype=np.int64)
        labels[fit_idx] = agg.labels_
        rest = np.setdiff1d(np.arange(n), fit_idx)
        if len(rest):
            d = ((z[rest, None, :] - centres[None]) ** 2).sum(-1)
            labels[rest] = d.argmin(axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    # renumber clusters by size (largest first), dropping empty ones
    sizes = np.bincount(labels, minlength=int(k))
    order = [c for c in np.argsort(-sizes, kind="stable") if sizes[c] > 0]
    remap = {int(c): i for i, c in enumerate(order)}
    labels = np.array([remap[int(c)] for c in labels], dtype=np.int64)
    centres = centres[order]
    k_eff = len(order)
    ari, purity = _agreement(labels, true_labels)
    rows, typical = [], {}
    true = np.asarray(true_labels, dtype=object) if true_labels is not None else None
    for c in range(k_eff):
        members = np.flatnonzero(labels == c)
        d = ((z[members] - centres[c]) ** 2).sum(axis=1)
        typical[c] = members[np.argsort(d, kind="stable")[:n_typical]]
        row = {"cluster": c, "size": int(len(members))}
        if true is not None:
            known = true[members]
            known = known[known != ""]
            if len(known):
                vc = pd.Series(known).value_counts()
                row.update(top_label=str(vc.index[0]), top_share=float(vc.iloc[0] / len(known)),
                           n_labels=int(len(vc)))
        rows.append(row)
    table = pd.DataFrame(rows)
    return Clustering(labels=labels, k=k_eff, method=method, bic=bic, ari=ari, purity=purity, table=table,
                      typical=typical, params={**params, "k_requested": int(k)})


# ---------------------------------------------------------------------------
# Out-of-distribution scores (higher = more unusual)
# ---------------------------------------------------------------------------

class OODModel:
    """A fitted out-of-distribution scorer: ``score(vectors)`` -> (N,), higher = more unusual."""

    method: str = ""

    def score(self, vectors: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class MahalanobisOOD(OODModel):
    """Smallest Mahalanobis distance to a class mean, with one shared (Ledoit-Wolf shrunk) covariance."""

    method = "mahalanobis"

    def fit(self, x: np.ndarray, labels: np.ndarray | None) -> "MahalanobisOOD":
        from sklearn.covariance import LedoitWolf

        groups = []
        if labels is not None:
            lab = np.asarray(labels, dtype=object)
            groups = [g for g in pd.unique(lab) if g != "" and (lab == g).sum() >= 2]
        if len(groups) < 1:
            self.means_ = x.mean(axis=0, keepdims=True)
            centred = x - self.means_
        else:
            lab = np.asarray(labels, dtype=object)
            self.means_ = np.stack([x[lab == g].mean(axis=0) for g in groups])
            centred = np.concatenate([x[lab == g] - self.means_[i] for i, g in enumerate(groups)])
        cov = LedoitWolf().fit(centred).covariance_
        self.precision_ = np.linalg.pinv(cov + 1e-6 * np.eye(cov.shape[0]) * max(np.trace(cov) / len(cov), 1e-12))
        self.classes_ = list(groups)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        x = _check_vectors(vectors).astype(np.float64)
        best = np.full(len(x), np.inf)
        for m in self.means_:
            d = x - m
            best = np.minimum(best, np.einsum("ij,jk,ik->i", d, self.precision_, d))
        return np.sqrt(np.maximum(best, 0.0))


class GMMOOD(OODModel):
    """Negative log-likelihood under a Gaussian mixture fitted on standardised train vectors."""

    method = "gmm"
    #: Wider vectors are reduced to this many principal components (fitted on train) first.
    MAX_DIMS = 64

    def fit(self, x: np.ndarray, labels: np.ndarray | None, *, seed: int = 0) -> "GMMOOD":
        from sklearn.mixture import GaussianMixture

        self.mu_ = x.mean(axis=0)
        self.sd_ = x.std(axis=0) + 1e-6
        z = (x - self.mu_) / self.sd_
        self.pca_ = None
        if z.shape[1] > self.MAX_DIMS:  # a full-covariance mixture in 1,000+ dims is neither stable nor fast
            from sklearn.decomposition import PCA

            self.pca_ = PCA(n_components=min(self.MAX_DIMS, len(z) - 1), random_state=seed).fit(z)
            z = self.pca_.transform(z)
        k = len(set(np.asarray(labels, dtype=object)) - {""}) if labels is not None else 0
        k = int(np.clip(k or 8, 1, max(1, min(20, len(x) // 10))))
        self.gmm_ = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-2, random_state=seed,
                                    max_iter=200).fit(z)
        return self

    def score(self, vectors: np.ndarray) -> np.ndarray:
        x = _check_vectors(vectors).astype(np.float64)
        z = (x - self.mu_) / self.sd_
        if self.pca_ is not None:
            z = self.pca_.transform(z)
        return -self.gmm_.score_samples(z)


class KNNOOD(OODModel):
    """Mean cosine distance to the k nearest train vectors (L2-normalised)."""

    method = "knn"

    def fit(self, x: np.ndarray, labels: np.ndarray | None, *, k: int = 10) -> "KNNOOD":
        from sklearn.neighbors import NearestNeighbors

        self.k = int(max(1, min(k, len(x))))
        self.nn_ = NearestNeighbors(n_neighbors=self.k).fit(self._norm(x))
        return self

    @staticmethod
    def _norm(x: np.ndarray) -> np.ndarray:
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)

    def score(self, vectors: np.ndarray) -> np.ndarray:
        x = _check_vectors(vectors).astype(np.float64)
        dist, _ = self.nn_.kneighbors(self._norm(x))
        # euclidean distance between unit vectors -> cosine distance = d^2 / 2
        return (dist ** 2 / 2.0).mean(axis=1)


_OOD_CLASSES = {"mahalanobis": MahalanobisOOD, "gmm": GMMOOD, "knn": KNNOOD}


def fit_ood(emb: Embeddings, *, method: str = "mahalanobis", split: str | None = "train") -> OODModel:
    """Fit an out-of-distribution scorer on the embeddings of one split (default: train).

    Parameters
    ----------
    emb : Embeddings
    method : {"mahalanobis", "gmm", "knn"}
        ``"mahalanobis"``: distance to the nearest class mean under a shared covariance;
        ``"gmm"``: negative log-likelihood under a Gaussian mixture (one component per
        class); ``"knn"``: mean cosine distance to the 10 nearest train vectors.
    split : str or None
        Which split to fit on (``None``: all samples).

    Returns
    -------
    OODModel
        ``.score(vectors)`` -> ndarray (N,), higher = more unusual.
    """
    if method not in _OOD_CLASSES:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    mask = np.ones(len(emb), bool) if split is None else emb.split_mask(split)
    if mask.sum() < 3:
        raise ValueError(f"the {split!r} split has {int(mask.sum())} embedded samples; need at least 3 to fit "
                         "an out-of-distribution scorer")
    x = emb.vectors[mask].astype(np.float64)
    labels = emb.labels[mask] if emb.task != "multilabel" else None
    return _OOD_CLASSES[method]().fit(x, labels)


def threshold_at_fpr(scores_in: np.ndarray, fpr: float) -> float:
    """Score above which about ``fpr`` of the in-distribution scores lie (the (1 - fpr) quantile)."""
    s = np.asarray(scores_in, dtype=float)
    if not 0.0 <= fpr < 1.0:
        raise ValueError(f"fpr must be in [0, 1); received fpr={fpr!r}")
    if len(s) == 0:
        raise ValueError("need at least one in-distribution score to choose a threshold")
    return float(np.quantile(s, 1.0 - fpr, method="higher")) if fpr > 0 else float(s.max())


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """Area under the ROC curve for telling ``scores_out`` (positive) from ``scores_in``; NaN if one is empty."""
    from sklearn.metrics import roc_auc_score

    a, b = np.asarray(scores_in, float), np.asarray(scores_out, float)
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(roc_auc_score(np.r_[np.zeros(len(a)), np.ones(len(b))], np.r_[a, b]))


def evaluate_ood(emb: Embeddings, unseen_vectors: np.ndarray | None, *, method: str = "mahalanobis",
                 fpr: float = DEFAULT_FPR, model: OODModel | None = None) -> OODEvaluation:
    """Score the test split (in-distribution) and unseen images; AUROC and the threshold at ``fpr``.

    The scorer is fitted on the train split (or ``model`` is used). When the dataset has no
    test split, the val split stands in.
    """
    model = model or fit_ood(emb, method=method)
    ref = "test" if emb.split_mask("test").any() else "val"
    test_scores = model.score(emb.vectors[emb.split_mask(ref)]) if emb.split_mask(ref).any() else np.zeros(0)
    if unseen_vectors is not None and len(unseen_vectors):
        unseen_scores = model.score(unseen_vectors)
    else:
        unseen_scores = np.zeros(0)
    thr = threshold_at_fpr(test_scores, fpr)
    return OODEvaluation(
        method=model.method, test_scores=test_scores, unseen_scores=unseen_scores,
        auroc=auroc(test_scores, unseen_scores), threshold=thr, fpr=float(fpr),
        n_unseen=int(len(unseen_scores)), n_flagged=int((unseen_scores > thr).sum()),
        test_fpr=float((test_scores > thr).mean()) if len(test_scores) else float("nan"), model=model,
    )


_OOD_CACHE: "OrderedDict[tuple, OODModel]" = OrderedDict()
_OOD_LOCK = threading.Lock()


def ood_model(run_dir, *, method: str | None = None, workspace=None) -> OODModel:
    """The run's OOD scorer fitted on its train embeddings (cached per embeddings file and method).

    ``method=None``: the method saved in ``thresholds.json`` (``ood`` section), else Mahalanobis.
    """
    rd = _rd(run_dir)
    if method is None:
        method = (runs.read_thresholds(rd).get("ood") or {}).get("method") or "mahalanobis"
    if method not in _OOD_CLASSES:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    emb = compute_embeddings(rd, workspace=workspace)
    path = embeddings_path(rd)
    key = (str(path.resolve()), path.stat().st_mtime_ns, method)
    with _OOD_LOCK:
        if key in _OOD_CACHE:
            return _OOD_CACHE[key]
    model = fit_ood(emb, method=method)
    with _OOD_LOCK:
        _OOD_CACHE[key] = model
        while len(_OOD_CACHE) > 8:
            _OOD_CACHE.popitem(last=False)
    return model


def ood_scores(run_dir, vectors: np.ndarray, *, method: str | None = None, workspace=None) -> np.ndarray:
    """Out-of-distribution scores (N,) of embedding vectors for a run; higher = more unusual.

    Uses the method saved with the run's threshold (``thresholds.json`` ``ood.method``),
    else ``method``, else Mahalanobis; fitted on the run's train embeddings and cached.
    Compare with ``runs.read_thresholds(run_dir)["ood"]["threshold"]`` to flag an image
    as unlike anything in training.
    """
    return ood_model(run_dir, method=method, workspace=workspace).score(vectors)


def save_ood_threshold(run_dir, *, method: str, threshold: float, fpr: float, **meta: Any) -> dict[str, Any]:
    """Write the out-of-distribution threshold to ``thresholds.json`` (section ``ood``; others kept).

    ``meta``: anything else worth recording (``auroc``, ``n_unseen``, ``unseen``...).
    Returns the whole file as written.
    """
    if method not in OOD_METHODS:
        raise ValueError(f"method must be one of {list(OOD_METHODS)}; received method={method!r}")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number; received threshold={threshold!r}")
    section = {"method": method, "threshold": threshold, "fpr": float(fpr), "split": "test",
               "higher_is_unusual": True, "saved_at": time.time(), **meta}
    return runs.write_thresholds(_rd(run_dir), ood=section)


# ---------------------------------------------------------------------------
# Thumbnails and uploads (for the page's galleries)
# ---------------------------------------------------------------------------

def sample_thumbnails(run_dir, sample_ids: Sequence[str], *, size: int = 96,
                      workspace=None) -> tuple[np.ndarray, np.ndarray]:
    """Thumbnails of dataset samples (crop boxes applied) from the resized-image cache.

    Returns ``images`` (M, size, size, 3) uint8 and ``ok`` (M,) bool, in ``sample_ids`` order.
    """
    from core.images import ImageCache

    rd = _rd(run_dir)
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

    The bytes are not decoded here: :func:`embed_paths` decodes them safely and reports
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


# ---------------------------------------------------------------------------
# Before any training: embeddings from a pretrained backbone
# ---------------------------------------------------------------------------

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
