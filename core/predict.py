"""Predict new images with a trained run (or a model bundle), and export that bundle.

Vocabulary: a *source* is a run directory (``runs/<run_id>/``) or a *model bundle*, the zip
:func:`export_bundle` writes (``model.keras``, ``labels.json``, ``preprocessing.json``,
``thresholds.json``, ``config.json``, ``resolved.json`` and what the out-of-distribution score needs). The
model has K outputs (classes, or labels for multi-label); N images are predicted at once.

:class:`Predictor` loads a source once (Keras ``safe_mode``) and predicts files, folders,
uploaded bytes or arrays. Every entry point returns one table with one row per image
(see :data:`BASE_COLUMNS`): an image that cannot be used gets a row with an ``error`` and
never stops the batch. Decisions follow the run's saved thresholds (``thresholds.json``,
written by Evaluate):

* binary: the positive class when its probability reaches its threshold (0.5 if none saved);
* multi-label: every label whose probability reaches its threshold (0.5 if none saved),
  joined by ``;``;
* multi-class / hierarchical: the most probable class (hierarchical: its full path
  ``group > element``); ``uncertain`` is True when that class has a saved threshold and
  its probability is below it.

``ood_score`` (higher = more unusual) comes from the run's out-of-distribution scorer
(:func:`core.embeddings.ood_model`, fitted on the train embeddings) applied to the model's
``"embedding"`` layer, computed in the same forward pass as the probabilities;
``ood_flag`` compares it with the threshold of the ``ood`` section of thresholds.json. Both
are empty when the run has no out-of-distribution detector yet (see
:attr:`Predictor.ood_note`).

Example::

    from core.predict import Predictor
    predictor = Predictor.load("bundle.zip")
    table = predictor.predict_paths(["photos/"])      # DataFrame: path, prediction, confidence, ...

TensorFlow/Keras are imported inside functions: ``import core.predict`` is cheap.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from core import archives, runs
from core import engines
from core.images import IMAGE_EXTENSIONS, ImageError
from core.targets import hierarchy_path
from core.workspace import read_json

#: Columns every prediction table starts with (then ``top<i>``/``top<i>_p``, per-level or
#: per-label decision columns, ``p_<class>`` for every output, and ``error``).
BASE_COLUMNS = ("path", "prediction", "confidence", "threshold", "uncertain", "ood_score", "ood_flag")
#: Separator of multi-label tags in ``prediction``.
TAG_SEPARATOR = ";"
#: Separator of a hierarchical path in ``prediction``.
PATH_SEPARATOR = " > "
#: Bundle manifest file name and format tag.
BUNDLE_MANIFEST = "bundle.json"
BUNDLE_FORMAT = "loupe-model-bundle"
BUNDLE_VERSION = 1
#: Files of a run directory a bundle carries (model, labels and preprocessing are required).
BUNDLE_FILES = (runs.MODEL, runs.LABELS, runs.PREPROCESSING, runs.THRESHOLDS, runs.CONFIG, runs.RESOLVED)
BUNDLE_REQUIRED = (runs.MODEL, runs.LABELS, runs.PREPROCESSING)
#: Limits on what an uploaded file / zip / bundle may expand to.
MAX_UPLOAD_BYTES = 200 * 1024**2
MAX_ZIP_TOTAL_BYTES = 1024**3
MAX_ZIP_FILES = 20_000
MAX_BUNDLE_BYTES = 4 * 1024**3
MAX_BUNDLE_FILES = 2_000
#: Images per forward pass.
BATCH_SIZE = 64

Progress = Callable[[int, int], None]


class PredictError(ValueError):
    """A source or an input that cannot be used; the message names it and says what to do."""


# ---------------------------------------------------------------------------
# Collecting inputs
# ---------------------------------------------------------------------------

def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (:data:`core.images.IMAGE_EXTENSIONS`)."""
    return Path(str(name)).suffix.lower() in IMAGE_EXTENSIONS


def collect_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files to predict: each file as given, each folder's images recursively (sorted).

    Hidden files and folders (name starting with ``.``) inside folders are skipped, and so
    are files without an image extension; a file named explicitly is kept whatever its
    extension (predicting it reports what is wrong with it). A path that does not exist
    is kept too, so it gets a row with an error.
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw).expanduser()
        if p.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(Path(dirpath) / f for f in filenames if not f.startswith(".") and is_image_name(f))
            out.extend(sorted(found))
        else:
            out.append(p)
    return out


def _checked_members(zf: zipfile.ZipFile, label: str, *, max_total_bytes: int, max_files: int,
                     keep: Callable[[PurePosixPath], bool]) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry of ``zf`` before anything is extracted (see :mod:`core.archives`)."""
    try:
        return archives.checked_members(zf, label, max_total_bytes=max_total_bytes, max_files=max_files,
                                        skip=lambda part: part.startswith(".") or part == "__MACOSX", keep=keep)
    except archives.UnsafeArchive as exc:
        raise PredictError(str(exc)) from None


def _extract(zf: zipfile.ZipFile, members, dest: Path, label: str, *, max_total_bytes: int) -> list[Path]:
    """Extract validated ``members`` under ``dest``, counting the bytes really written."""
    try:
        return archives.extract_members(zf, members, dest, label, max_total_bytes=max_total_bytes)
    except archives.UnsafeArchive as exc:
        raise PredictError(str(exc)) from None


def extract_image_zip(data: bytes | str | os.PathLike, dest: str | os.PathLike, *, name: str = "the zip",
                      max_total_bytes: int = MAX_ZIP_TOTAL_BYTES, max_files: int = MAX_ZIP_FILES
                      ) -> list[tuple[str, Path]]:
    """Extract the images of a zip (bytes or a file) safely under ``dest``.

    Every entry is checked before anything is written: absolute paths and ``..``
    (zip-slip), symbolic links, more than ``max_files`` images, a declared total over
    ``max_total_bytes`` and suspicious compression ratios are refused with a
    :class:`PredictError` naming the zip and the entry. Non-image entries are skipped.

    Returns
    -------
    list of (entry name, extracted path), in the zip's order.
    """
    label = name
    try:
        zf = archives.open_zip(data, label)
    except archives.UnsafeArchive as exc:
        raise PredictError(str(exc)) from None
    with zf:
        members = _checked_members(zf, label, max_total_bytes=max_total_bytes, max_files=max_files,
                                   keep=lambda rel: is_image_name(rel.name))
        if not members:
            raise PredictError(f"{label}: no images inside (expected .jpg, .png, ... files).")
        try:
            files = _extract(zf, members, Path(dest), label, max_total_bytes=max_total_bytes)
        except zipfile.BadZipFile as exc:
            raise PredictError(f"{label}: the zip is damaged ({exc}).") from None
    return [(str(rel), path) for (_, rel), path in zip(members, files)]


# ---------------------------------------------------------------------------
# Model bundle
# ---------------------------------------------------------------------------

def _ood_bundle_files(run_dir: Path) -> list[str]:
    """Run-relative files the out-of-distribution score needs: the cached embeddings, when computed."""
    from core import embeddings

    path = embeddings.embeddings_path(run_dir)
    return [path.name] if path.is_file() else []


def export_bundle(run_dir: str | os.PathLike, out_zip: str | os.PathLike) -> Path:
    """Write a self-contained model bundle of a run: one zip another machine can predict with.

    Parameters
    ----------
    run_dir : path
        A run directory with ``model.keras``, ``labels.json`` and ``preprocessing.json``.
    out_zip : path
        The zip to write (parent folders are created; an existing file is replaced atomically).

    Returns
    -------
    Path
        ``out_zip``. It holds ``bundle.json`` (manifest), the run's ``model.keras``,
        ``labels.json``, ``preprocessing.json``, ``thresholds.json`` and ``config.json``, ``resolved.json``
        when present, and the files :mod:`core.embeddings` declares for the
        out-of-distribution score. Load it with ``Predictor.load(out_zip)``.
    """
    rd = runs.RunDir(Path(run_dir).expanduser())
    if not rd.path.is_dir():
        raise PredictError(f"{rd.path} is not a folder; pass a run directory (runs/<run_id>/)")
    missing = [n for n in BUNDLE_REQUIRED if not (rd.path / n).is_file()]
    if missing:
        raise PredictError(f"{rd.path} cannot be exported: it lacks {', '.join(missing)} (a run writes them when "
                           "training finishes an epoch)")
    labels = runs.read_labels(rd)  # validated before shipping
    names = [n for n in BUNDLE_FILES if (rd.path / n).is_file()]
    names += [n for n in _ood_bundle_files(rd.path) if n not in names]
    manifest = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "run_id": rd.run_id, "created_at": time.time(),
        "files": names, "task": labels["task"],
    }
    import keras

    manifest["keras_version"] = keras.__version__
    out = Path(out_zip).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.writestr(BUNDLE_MANIFEST, json.dumps(manifest, indent=2), compress_type=zipfile.ZIP_DEFLATED)
            for n in names:
                # model.keras is a zip already: store it as is
                zf.write(rd.path / n, n, compress_type=zipfile.ZIP_STORED if n.endswith(".keras")
                         else zipfile.ZIP_DEFLATED)
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return out


def _open_bundle(path: Path) -> tuple[Path, dict]:
    """Extract a bundle zip into a new temporary folder; return it and the manifest."""
    label = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise PredictError(f"{label}: not a readable zip file ({exc}); pass a run directory or a bundle written "
                           "by `python -m core export`") from None
    with zf:
        names = set(zf.namelist())
        missing = [n for n in BUNDLE_REQUIRED if n not in names]
        if missing:
            raise PredictError(f"{label} is not a Loupe model bundle: it lacks {', '.join(missing)} at its top level "
                               "(write one with `python -m core export RUN_DIR --out bundle.zip`)")
        members = _checked_members(zf, label, max_total_bytes=MAX_BUNDLE_BYTES, max_files=MAX_BUNDLE_FILES,
                                   keep=lambda rel: True)
        tmp = Path(tempfile.mkdtemp(prefix="loupe-bundle-"))
        try:
            _extract(zf, members, tmp, label, max_total_bytes=MAX_BUNDLE_BYTES)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    manifest = read_json(tmp / BUNDLE_MANIFEST, default={})
    return tmp, manifest if isinstance(manifest, dict) else {}


# ---------------------------------------------------------------------------
# The predictor
# ---------------------------------------------------------------------------

def _float_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class Predictor:
    """A loaded model with its labels, preprocessing and thresholds; thread-safe predictions.

    Make one with :meth:`load`. Attributes: ``source`` (what was loaded), ``run_dir`` (the
    folder read: the run, or the bundle's extracted copy), ``run_id``, ``task``,
    ``labels`` (labels.json), ``outputs`` (the K output names, in probability order),
    ``image_size``, ``thresholds`` (thresholds.json), ``class_thresholds``
    (``{name: float}``, usable ones only), ``ood_threshold`` (float or None),
    ``ood_method``, ``ood_note`` (why OOD scores are missing, or None), ``model``.
    """

    def __init__(self, run_dir: Path, *, source: str, model, labels: dict, preprocessing: dict,
                 thresholds: dict, config: dict, manifest: dict | None = None, is_bundle: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.source = source
        self.model = model
        self.labels = labels
        self.preprocessing = preprocessing
        self.thresholds = thresholds
        self.config = config
        self.manifest = manifest or {}
        self.is_bundle = bool(is_bundle)
        self.task = labels["task"]
        self.outputs = runs.output_names(labels)
        self.run_id = str(self.manifest.get("run_id") or Path(source).name)
        size = preprocessing.get("image_size") or config.get("image_size")
        if not isinstance(size, int) or size < 1:
            shape = getattr(model, "input_shape", None)
            size = shape[1] if shape and isinstance(shape[1], int) else None
        if not size:
            raise PredictError(f"{source}: preprocessing.json has no image_size and the model input has no fixed size")
        self.image_size = int(size)
        lo, hi = (preprocessing.get("input_range") or [0, 255])[:2]
        self._scale = (float(lo), (float(hi) - float(lo)) / 255.0)
        self.flip_average = runs.flips_averaged(preprocessing)
        self.class_thresholds: dict[str, float] = {}
        for k, v in (thresholds.get("classes") or {}).items():
            t = _float_or_none(v.get("threshold")) if isinstance(v, Mapping) else None
            if t is not None and k in self.outputs:
                self.class_thresholds[k] = t
        ood = thresholds.get("ood") if isinstance(thresholds.get("ood"), Mapping) else {}
        self.ood_threshold = _float_or_none(ood.get("threshold"))
        self.ood_method = ood.get("method")
        self.ood_note: str | None = None
        self._lock = threading.Lock()
        self._ood_fn = None
        self._twin = self._make_twin(model)
        n_out = int(model.output_shape[-1])
        if n_out != len(self.outputs):
            raise PredictError(f"{source}: the model has {n_out} outputs but labels.json names {len(self.outputs)} "
                               f"({self.outputs[:6]}...): the files belong to different runs")
        self._ood_fn = self._find_ood()
        self._tmp_finalizer = None

    # -- loading -------------------------------------------------------------
    @classmethod
    def load(cls, source: str | os.PathLike) -> "Predictor":
        """Load a run directory or a bundle zip (models load with Keras ``safe_mode``).

        Raises
        ------
        PredictError
            The source is missing, not a run directory / bundle, or its files disagree.
        """
        src = Path(source).expanduser()
        tmp = None
        manifest: dict = {}
        if src.is_file():
            tmp, manifest = _open_bundle(src)
            folder = tmp
        elif src.is_dir():
            folder = src
        else:
            raise PredictError(f"{src} does not exist; pass a run directory (runs/<run_id>/) or a bundle zip")
        try:
            rd = runs.RunDir(folder)
            missing = [n for n in BUNDLE_REQUIRED if not (folder / n).is_file()]
            if missing:
                raise PredictError(f"{src} cannot predict: it lacks {', '.join(missing)} (is it a finished run "
                                   "directory or a bundle from `python -m core export`?)")
            try:
                labels = runs.read_labels(rd)
            except ValueError as exc:
                raise PredictError(str(exc)) from exc
            preprocessing = _read_json_obj(rd.preprocessing)
            from core.models import load_model

            try:
                model = load_model(rd.model)
            except Exception as exc:  # Keras raises many types for a bad file
                raise PredictError(f"{rd.model} cannot be loaded with Keras safe_mode: {type(exc).__name__}: "
                                   f"{' '.join(str(exc).split())[:400]}") from exc
            pred = cls(folder, source=str(src), model=model, labels=labels, preprocessing=preprocessing,
                       thresholds=runs.read_thresholds(rd), config=runs.read_config(rd), manifest=manifest,
                       is_bundle=tmp is not None)
        except BaseException:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        if tmp is not None:
            pred._tmp_finalizer = weakref.finalize(pred, shutil.rmtree, str(tmp), True)
        return pred

    @staticmethod
    def _make_twin(model):
        """One model giving (probabilities, embedding) in a single forward pass, or None without an embedding."""
        from core.models import twin_model

        try:
            return twin_model(model)
        except ValueError:
            return None

    def _find_ood(self):
        """A callable scoring embedding vectors (higher = more unusual), or None with :attr:`ood_note` set.

        A run directory uses :func:`core.embeddings.ood_model` (fitted on the run's cached
        train embeddings, recomputed by that module when stale). A bundle carries the
        embeddings file itself: the scorer is fitted on it here, no dataset needed. When
        the run has no embeddings yet, nothing is computed behind the user's back: the
        scores stay empty and the note says where to compute them.
        """
        if self._twin is None:
            self.ood_note = "the model has no layer named 'embedding', so it gives no out-of-distribution score"
            return None
        from core import embeddings

        method = self.ood_method or "mahalanobis"
        npz = embeddings.embeddings_path(self.run_dir)
        if not npz.exists():
            self.ood_note = ("no out-of-distribution score: the run's embeddings are not computed yet (open the "
                             "Embeddings page for this run, or run `python -m core ood RUN_DIR --unseen FOLDER "
                             "--save`), then load the run again")
            return None
        try:
            if self.is_bundle:
                emb = embeddings.load_embeddings(self.run_dir)
                if emb is None:
                    raise ValueError(f"the bundle's {npz.name} is unreadable")
                scorer = embeddings.fit_ood(emb, method=method)
            else:
                try:
                    scorer = embeddings.ood_model(self.run_dir, method=method)
                except (ValueError, OSError, KeyError):
                    # e.g. a run folder moved out of its workspace: its dataset cannot be opened to check
                    # the cache, but embeddings computed with this very checkpoint are still right
                    emb = embeddings.load_embeddings(self.run_dir)
                    model_mtime = runs.RunDir(self.run_dir).model.stat().st_mtime_ns
                    if emb is None or emb.model_mtime_ns != model_mtime:
                        raise
                    scorer = embeddings.fit_ood(emb, method=method)
        except (ValueError, OSError, KeyError) as exc:
            self.ood_note = f"no out-of-distribution score: {exc}"
            return None
        if self.ood_threshold is None:
            self.ood_note = ("out-of-distribution scores are shown without a flag: the run has no saved OOD "
                             "threshold (choose one on the Embeddings page)")
        return scorer.score

    # -- inference -----------------------------------------------------------
    def _forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(probabilities (n, K), embeddings (n, D) or None) for resized uint8 images (n, S, S, 3)."""
        n = len(batch)
        # pad to a power of two: the compiled graph is traced once per batch shape, so a stream of
        # odd-sized uploads would otherwise retrace (slow) on every new size
        size = 1 << max(0, (n - 1).bit_length())
        x = np.zeros((size, *batch.shape[1:]), dtype=np.float32)
        x[:n] = batch
        lo, step = self._scale
        if (lo, step) != (0.0, 1.0):
            x[:n] = lo + x[:n] * step
        # predict_on_batch runs the compiled graph: ~10-40x faster than model.predict for one image
        # (no tf.data pipeline per call), and than an eager model(x) call for deep backbones
        if self.flip_average:  # the run's own predictions average each image with its mirror: so do these
            x = np.concatenate([x, x[:, :, ::-1]])
        with self._lock:
            if self._twin is None or self._ood_fn is None:  # no OOD scorer: the embedding is not needed
                probs, emb = self.model.predict_on_batch(x), None
            else:
                probs, emb = self._twin.predict_on_batch(x)
        probs = np.asarray(probs, dtype=np.float64)
        if self.flip_average:
            probs = (probs[:size] + probs[size:]) / 2
        # the embedding is the image's as it is: the OOD scorer was fitted on those
        return probs[:n], None if emb is None else np.asarray(emb, dtype=np.float32)[:n]

    def _ood(self, vectors: np.ndarray | None, n: int) -> np.ndarray:
        """Scores (n,) of embedding vectors; NaN when there is no scorer (or no vectors)."""
        if vectors is None or self._ood_fn is None or n == 0:
            return np.full(n, np.nan)
        try:
            scores = np.asarray(self._ood_fn(vectors), dtype=float).reshape(-1)
        except (ValueError, OSError, KeyError) as exc:
            self.ood_note = f"no out-of-distribution score: {exc}"
            return np.full(n, np.nan)
        if len(scores) != n:
            self.ood_note = f"the out-of-distribution scorer returned {len(scores)} scores for {n} images"
            return np.full(n, np.nan)
        return scores

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Raw model outputs for resized images.

        Parameters
        ----------
        images : ndarray of shape (N, S, S, 3), uint8
            ``S`` = :attr:`image_size`, RGB 0..255.

        Returns
        -------
        ndarray of shape (N, K)
        """
        arr = self._check_batch(images)
        out = [self._forward(arr[i:i + BATCH_SIZE])[0] for i in range(0, len(arr), BATCH_SIZE)]
        return np.concatenate(out) if out else np.zeros((0, len(self.outputs)))

    def _check_batch(self, images) -> np.ndarray:
        arr = np.asarray(images)
        s = self.image_size
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (s, s, 3):
            raise ValueError(f"images must be uint8 of shape (N, {s}, {s}, 3); received shape={arr.shape}, "
                             f"dtype={arr.dtype}")
        return arr

    def _decode(self, path: Path) -> np.ndarray:
        from core.images import _decode  # the same decode + resize as the training cache

        arr, _info = _decode(Path(path), target=self.image_size)
        return arr

    def predict_paths(self, paths: Iterable[str | os.PathLike], *, top_k: int = 3, progress: Progress | None = None,
                      names: Sequence[str] | None = None, engine: str = "local") -> pd.DataFrame:
        """Predict image files; folders are searched recursively for images.

        Parameters
        ----------
        paths : iterable of paths
            Files and folders (see :func:`collect_images`).
        top_k : int >= 1
            How many ``top<i>`` / ``top<i>_p`` column pairs to add (capped at K).
        progress : callable(done, total), optional
            Called after every batch.
        names : sequence of str, optional
            What the ``path`` column shows for each collected file (default: the path).
        engine : {"local", "ray"}
            ``ray``: Ray Data actors, each loading this predictor's ``source``, predict the files
            (see :mod:`core.engines`); the table is the same, row for row.

        Returns
        -------
        DataFrame
            One row per file, in order. ``path``; ``prediction`` (class name; multi-label:
            the tags joined by ``;``; hierarchical: ``group > element``; empty on error);
            ``confidence`` (probability of the decided class; multi-label: of the most
            probable label); ``threshold`` (the saved threshold applied to that class, NaN
            if none); ``uncertain`` (below that threshold); ``ood_score`` (higher = more
            unusual; NaN without a scorer) and ``ood_flag`` (score above the saved OOD
            threshold; NA without one); ``top<i>`` / ``top<i>_p``; hierarchical
            ``pred_<level>``, multi-label ``pred_<label>`` (0/1); ``p_<name>`` per output;
            ``error`` (empty unless the file could not be used: names it and says why).
        """
        files = collect_images(paths)
        shown = [str(p) for p in files] if names is None else [str(n) for n in names]
        if len(shown) != len(files):
            raise ValueError(f"names must name every collected file ({len(files)}); received {len(shown)}")
        if engines.check_engine(engine) == "ray" and files:
            dtypes = self._predict_files(files[:1], shown[:1], top_k=top_k, progress=None).dtypes.to_dict()
            rows = pd.DataFrame({"file": [str(Path(f).resolve()) for f in files], "shown": shown})
            return engines.map_rows_with_ray(rows, _RayPredictor, dtypes=dtypes, progress=progress,
                                             actor_kwargs={"source": str(Path(self.source).resolve()),
                                                           "top_k": _check_top_k(top_k)})
        return self._predict_files(files, shown, top_k=top_k, progress=progress)

    def _predict_files(self, files: Sequence[Path], shown: Sequence[str], *, top_k: int,
                       progress: Progress | None, errors: Mapping[int, str] | None = None) -> pd.DataFrame:
        top_k = _check_top_k(top_k)
        n = len(files)
        errs: dict[int, str] = dict(errors or {})
        probs = np.full((n, len(self.outputs)), np.nan)
        ood = np.full(n, np.nan)
        todo = [i for i in range(n) if i not in errs]

        def decode(i: int) -> tuple[int, np.ndarray | None, str | None]:
            try:
                return i, self._decode(files[i]), None
            except ImageError as exc:
                return i, None, f"{shown[i]}: {_reason(exc)}"
            except Exception as exc:  # noqa: BLE001 - one odd file must not stop a batch
                return i, None, f"{shown[i]}: unexpected decoder error ({type(exc).__name__}: {exc})"

        done = n - len(todo)
        if progress:
            progress(done, n)
        workers = max(1, min(4, os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for start in range(0, len(todo), BATCH_SIZE):
                chunk = todo[start:start + BATCH_SIZE]
                rows, arrays = [], []
                for i, arr, err in pool.map(decode, chunk):
                    if err is not None:
                        errs[i] = err
                    else:
                        rows.append(i)
                        arrays.append(arr)
                if rows:
                    p, emb = self._forward(np.stack(arrays))
                    probs[rows] = p
                    ood[rows] = self._ood(emb, len(rows))
                done += len(chunk)
                if progress:
                    progress(done, n)
        return self._table(shown, probs, ood, errs, top_k=top_k)

    def predict_images(self, images: Sequence[np.ndarray] | np.ndarray, *, names: Sequence[str] | None = None,
                       top_k: int = 3) -> pd.DataFrame:
        """Predict decoded images (each ``(H, W, 3)`` uint8 RGB; resized here to :attr:`image_size`)."""
        from core.images import resize_image

        imgs = list(images)
        shown = [f"image {i}" for i in range(len(imgs))] if names is None else [str(n) for n in names]
        if len(shown) != len(imgs):
            raise ValueError(f"names must have one entry per image ({len(imgs)}); received {len(shown)}")
        batch = [im if np.shape(im)[:2] == (self.image_size, self.image_size) and np.asarray(im).dtype == np.uint8
                 else resize_image(np.asarray(im), self.image_size) for im in imgs]
        n = len(batch)
        probs = np.full((n, len(self.outputs)), np.nan)
        ood = np.full(n, np.nan)
        for start in range(0, n, BATCH_SIZE):
            p, emb = self._forward(self._check_batch(np.stack(batch[start:start + BATCH_SIZE])))
            probs[start:start + len(p)] = p
            ood[start:start + len(p)] = self._ood(emb, len(p))
        return self._table(shown, probs, ood, {}, top_k=_check_top_k(top_k))

    def predict_bytes(self, files: Sequence[tuple[str, bytes]], *, top_k: int = 3, progress: Progress | None = None,
                      max_bytes: int = MAX_UPLOAD_BYTES, max_zip_bytes: int = MAX_ZIP_TOTAL_BYTES) -> pd.DataFrame:
        """Predict uploaded files given as ``(file name, content)``; zips are expanded safely.

        A file over ``max_bytes``, a non-image, or an unsafe zip (entries escaping their
        folder, absolute paths, symbolic links, more than ``max_zip_bytes`` once
        extracted) gets a row whose ``error`` names the file and the reason; the rest of
        the batch is predicted. Images inside a zip are shown as ``<zip name>/<entry>``.
        """
        with tempfile.TemporaryDirectory(prefix="loupe-upload-") as tmp:
            tmpdir = Path(tmp)
            paths: list[Path] = []
            shown: list[str] = []
            errors: dict[int, str] = {}
            for j, (name, data) in enumerate(files):
                name = str(name)
                data = bytes(data)
                if len(data) > max_bytes:
                    errors[len(paths)] = (f"{name}: refused — {len(data):,} bytes is over the upload limit of "
                                          f"{max_bytes:,} bytes")
                    paths.append(tmpdir / "_refused")
                    shown.append(name)
                    continue
                if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
                    try:
                        entries = extract_image_zip(data, tmpdir / f"zip{j}", name=name, max_total_bytes=max_zip_bytes)
                    except PredictError as exc:
                        errors[len(paths)] = str(exc)
                        paths.append(tmpdir / "_refused")
                        shown.append(name)
                        continue
                    for entry, path in entries:
                        paths.append(path)
                        shown.append(f"{name}/{entry}")
                    continue
                suffix = Path(name).suffix.lower()
                target = tmpdir / f"upload{j}{suffix if suffix.isascii() and len(suffix) <= 6 else ''}"
                target.write_bytes(data)
                paths.append(target)
                shown.append(name)
            return self._predict_files(paths, shown, top_k=top_k, progress=progress, errors=errors)

    # -- decisions -----------------------------------------------------------
    def _table(self, shown: Sequence[str], probs: np.ndarray, ood: np.ndarray, errors: Mapping[int, str], *,
               top_k: int) -> pd.DataFrame:
        n, k = probs.shape
        ok = ~np.isnan(probs).any(axis=1)
        prediction = np.full(n, "", dtype=object)
        confidence = np.full(n, np.nan)
        threshold = np.full(n, np.nan)
        uncertain = pd.array([pd.NA] * n, dtype="boolean")
        extra: dict[str, Any] = {}
        names = np.array(self.outputs, dtype=object)
        safe = np.where(ok[:, None], probs, 0.0)
        if self.task == "multilabel":
            th = np.array([self.class_thresholds.get(c, 0.5) for c in self.outputs])
            on = (safe >= th) & ok[:, None]
            prediction[:] = [TAG_SEPARATOR.join(names[row]) for row in on]
            confidence[:] = np.where(ok, safe.max(axis=1) if k else np.nan, np.nan)
            uncertain[ok] = False
            for j, c in enumerate(self.outputs):
                col = pd.array(on[:, j].astype(int), dtype="Int64")
                col[~ok] = pd.NA
                extra[f"pred_{c}"] = col
        else:
            best = np.argmax(safe, axis=1)
            if self.task == "binary":
                pos = self.labels.get("positive_class")
                jp = self.outputs.index(pos)
                jn = 1 - jp if k == 2 else None
                t = self.class_thresholds.get(pos, 0.5)
                if jn is not None:
                    best = np.where(safe[:, jp] >= t, jp, jn)
                threshold[:] = t
            conf = safe[np.arange(n), best]
            prediction[:] = names[best]
            confidence[:] = conf
            if self.task != "binary":
                threshold[:] = [self.class_thresholds.get(c, np.nan) for c in names[best]]
                uncertain[ok] = pd.array(~np.isnan(threshold[ok]) & (conf[ok] < threshold[ok]), dtype="boolean")
            else:
                uncertain[ok] = False
            if self.task == "hierarchical":
                path = hierarchy_path(safe, self.labels)
                levels = self.labels["levels"]
                level_names = {lv: np.array(self.labels["level_classes"][lv], dtype=object)[path[lv]]
                               for lv in levels}
                prediction[:] = [PATH_SEPARATOR.join(str(level_names[lv][i]) for lv in levels) for i in range(n)]
                for lv in levels:
                    extra[f"pred_{lv}"] = np.where(ok, level_names[lv], "")
        prediction[~ok] = ""
        confidence[~ok] = np.nan
        threshold[~ok] = np.nan
        ood = np.where(ok, ood, np.nan)
        flag = pd.array([pd.NA] * n, dtype="boolean")
        if self.ood_threshold is not None:
            has = ~np.isnan(ood)
            flag[has] = pd.array(ood[has] > self.ood_threshold, dtype="boolean")
        table = {"path": list(shown), "prediction": prediction, "confidence": confidence, "threshold": threshold,
                 "uncertain": uncertain, "ood_score": ood, "ood_flag": flag}
        kk = min(top_k, k)
        order = np.argsort(-safe, axis=1, kind="stable")[:, :kk]
        for r in range(kk):
            table[f"top{r + 1}"] = np.where(ok, names[order[:, r]], "")
            table[f"top{r + 1}_p"] = np.where(ok, safe[np.arange(n), order[:, r]], np.nan)
        table.update(extra)
        for j, c in enumerate(self.outputs):
            table[f"p_{c}"] = probs[:, j]
        err = np.full(n, "", dtype=object)
        for i, msg in errors.items():
            err[i] = msg
        table["error"] = err
        return pd.DataFrame(table)

    # -- description ---------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What the page and the CLI show about the loaded model (JSON-ready)."""
        return {
            "source": self.source, "run_id": self.run_id, "task": self.task, "outputs": list(self.outputs),
            "image_size": self.image_size, "class_thresholds": dict(self.class_thresholds),
            "ood_threshold": self.ood_threshold, "ood_method": self.ood_method, "ood_note": self.ood_note,
            "levels": self.labels.get("levels"), "positive_class": self.labels.get("positive_class"),
        }


def _read_json_obj(path: Path) -> dict:
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PredictError(f"{path} is unreadable: {exc}") from exc
    if not isinstance(obj, dict):
        raise PredictError(f"{path} must hold a JSON object; found {type(obj).__name__}")
    return obj


def _reason(exc: ImageError) -> str:
    """The ImageError message without its leading ``<path>: `` (the caller names the file)."""
    msg = str(exc)
    prefix = f"{exc.path}: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def _check_top_k(top_k: Any) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an int >= 1; received top_k={top_k!r}")
    return int(top_k)


def top_probabilities(row: Mapping[str, Any], outputs: Sequence[str], *, top_k: int = 5) -> pd.Series:
    """The ``top_k`` largest ``p_<name>`` values of one prediction row, largest first (index = names)."""
    s = pd.Series({c: float(row[f"p_{c}"]) for c in outputs})
    return s.sort_values(ascending=False, kind="stable").head(_check_top_k(top_k))


class _RayPredictor:
    """A Ray Data actor of :meth:`Predictor.predict_paths` (``engine="ray"``): loads the predictor once,
    then predicts batch after batch of files (see :func:`core.engines.map_rows_with_ray`)."""

    def __init__(self, source: str, top_k: int):
        self.predictor = Predictor.load(source)
        self.top_k = top_k

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        engines.crash_once_for_tests()
        df = self.predictor._predict_files([Path(p) for p in batch["file"]], batch["shown"].astype(str).tolist(),
                                           top_k=self.top_k, progress=None)
        df.insert(0, "_row", batch["_row"].to_numpy())
        return df
