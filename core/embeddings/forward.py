"""One forward pass over a dataset's images, in this process or on Ray (``engine``).

:func:`forward_samples` is what :func:`core.embeddings.compute_embeddings` (a run's model: its
probabilities and ``embedding`` layer) and :func:`core.embeddings.backbone_embeddings` (the ImageNet
backbone's pooled features, which the audit reads too) both run. ``local`` reads the pixels from
the workspace's image cache and predicts in batches of :data:`BATCH_SIZE`; ``ray`` sends the rows
(path and box) to Ray Data actors that decode them the same way (:func:`core.images.decode_rows`)
and predict with the same model (see :mod:`core.engines`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import pandas as pd

from core import engines
from core.runs import RunDir
from core.workspace import Workspace

ProgressFn = Callable[[int, int], None]
#: Images per forward pass.
BATCH_SIZE = 256

# The models, loaded once per checkpoint / backbone and guarded by locks: Keras predict is not thread-safe.
_MODELS: "OrderedDict[tuple[str, int], Any]" = OrderedDict()
_MODELS_LOCK = threading.Lock()
_PREDICT_LOCK = threading.Lock()
_BACKBONES: dict[tuple, Any] = {}


def _twin_model(rd: RunDir):
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


def backbone_model(backbone: str, alpha: float, size: int):
    """The pretrained ImageNet ``backbone`` at ``size`` px with its preprocessing, pooled (cached per process)."""
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


def _model(spec: dict):
    """The Keras model a spec names: ``{"run": path}`` (the run's twin: predictions, embedding) or
    ``{"backbone": name, "alpha": a, "size": s}`` (pooled ImageNet features)."""
    if "run" in spec:
        return _twin_model(RunDir(spec["run"]))
    return backbone_model(spec["backbone"], spec["alpha"], spec["size"])


def flips_averaged(spec: dict) -> bool:
    """Whether the spec's model predicts as the mean over each image and its mirror (a run that says so)."""
    from core import runs

    return "run" in spec and runs.flips_averaged(runs.read_preprocessing(spec["run"]))


def predict_outputs(model, images: np.ndarray, *, flip_average: bool = False) -> list[np.ndarray]:
    """The model's outputs (a list, one (n, d) float32 array each) for ``images``, in batches.

    ``flip_average``: the first output (a run's predictions) is the mean over each image and its
    left-right mirror, as the run's own predictions are; the others (the embedding) are the image's own.
    """
    n_out = len(model.outputs)
    parts: list[list[np.ndarray]] = [[] for _ in range(n_out)]
    with _PREDICT_LOCK:
        for start in range(0, len(images), BATCH_SIZE):
            batch = np.asarray(images[start:start + BATCH_SIZE], dtype=np.float32)
            m = len(batch)
            if flip_average:
                batch = np.concatenate([batch, batch[:, :, ::-1]])
            out = model.predict_on_batch(batch)
            out = list(out) if isinstance(out, (list, tuple)) else [out]
            if flip_average:
                out = [(np.asarray(out[0], np.float64)[:m] + np.asarray(out[0], np.float64)[m:]) / 2,
                       *(np.asarray(o)[:m] for o in out[1:])]
            for k, o in enumerate(out):
                parts[k].append(np.asarray(o, dtype=np.float32).reshape(m, -1))
    return [np.concatenate(p) if p else np.zeros((0, int(model.outputs[k].shape[-1])), np.float32)
            for k, p in enumerate(parts)]


def forward_samples(samples: pd.DataFrame, size: int, spec: dict, workspace: Workspace, *, engine: str = "local",
                    progress: ProgressFn | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The model's outputs for every decodable row of ``samples`` (``path`` and optional box columns).

    Returns ``ok`` (indices of the decodable rows, ascending) and the outputs, one (len(ok), d) float32
    array per model output. ``progress(done, 2 * N)``: decoding is the first half, the forward pass the second.
    """
    from core.images import ImageCache, release_pages

    n = len(samples)
    total = 2 * max(n, 1)
    model = _model(spec)
    flip = flips_averaged(spec)
    if engines.check_engine(engine) == "ray" and n:
        return _forward_with_ray(samples, size, spec, model, progress=progress, total=total)
    arrays = ImageCache(workspace.cache_dir / "images").arrays(
        samples, size, progress=(lambda d, t: progress(d, total)) if progress else None)
    ok = np.flatnonzero(np.asarray(arrays.ok, dtype=bool))
    chunks: list[list[np.ndarray]] = [[] for _ in model.outputs]
    step = 4096  # gather from the memmap in chunks: bounded memory at 100k images
    for start in range(0, len(ok), step):
        batch = arrays.images[ok[start:start + step]]  # a copy: the map's pages are released below
        release_pages(arrays.images)  # else the process keeps every page of the cache mapped (2.7 GB at 100k)
        for k, out in enumerate(predict_outputs(model, batch, flip_average=flip)):
            chunks[k].append(out)
        if progress:
            progress(n + min(start + step, len(ok)), total)
    outs = [np.concatenate(c) if c else np.zeros((0, int(model.outputs[k].shape[-1])), np.float32)
            for k, c in enumerate(chunks)]
    return ok, outs


def forward_paths(paths, size: int, spec: dict, workspace: Workspace, *, engine: str = "local",
                  progress: ProgressFn | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """:func:`forward_samples` for image files: ``ok`` (a bool mask over ``paths``) and the outputs of the
    decodable ones."""
    frame = pd.DataFrame({"path": [str(p) for p in paths]})
    rows, outs = forward_samples(frame, size, spec, workspace, engine=engine, progress=progress)
    ok = np.zeros(len(frame), bool)
    ok[rows] = True
    return ok, outs


class _RayForward:
    """A Ray Data actor: builds the model once, then decodes and predicts batch after batch of rows."""

    def __init__(self, spec: dict, size: int):
        self.model = _model(spec)
        self.flip = flips_averaged(spec)
        self.size = int(size)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from core.images import decode_rows

        engines.crash_once_for_tests()
        images, ok, errors = decode_rows(batch, self.size)
        outs = predict_outputs(self.model, images[ok], flip_average=self.flip)
        result = pd.DataFrame({"_row": batch["_row"].to_numpy(), "ok": ok, "error": errors})
        at = np.flatnonzero(ok)
        for k, out in enumerate(outs):
            col = [np.zeros(0, np.float32)] * len(batch)
            for j, i in enumerate(at):
                col[i] = out[j]
            result[f"out{k}"] = col
        return result


def _forward_with_ray(samples: pd.DataFrame, size: int, spec: dict, model, *, progress: ProgressFn | None,
                      total: int) -> tuple[np.ndarray, list[np.ndarray]]:
    n = len(samples)
    cols = [c for c in ("path", "x1", "y1", "x2", "y2") if c in samples.columns]
    rows = samples[cols].reset_index(drop=True)
    n_out = len(model.outputs)
    dtypes = {"ok": bool, "error": object, **{f"out{k}": object for k in range(n_out)}}
    table = engines.map_rows_with_ray(rows, _RayForward, actor_kwargs={"spec": spec, "size": int(size)},
                                      dtypes=dtypes, batch_size=BATCH_SIZE,
                                      progress=(lambda d, t: progress(n + d, total)) if progress else None)
    ok = np.flatnonzero(table["ok"].to_numpy(bool))
    outs = []
    for k in range(n_out):
        width = int(model.outputs[k].shape[-1])
        vals = table[f"out{k}"].to_numpy(object)[ok]
        outs.append(np.stack([np.asarray(v, np.float32) for v in vals]) if len(ok) else
                    np.zeros((0, width), np.float32))
    return ok, outs
