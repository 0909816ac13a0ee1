"""Training: targets for every label shape, the tf.data pipeline, the fit loop and its run directory.

Vocabulary: a dataset has N samples split into ``train`` / ``val`` / ``test``; a model has
K outputs (classes for single-label tasks, labels for multi-label). The fit loop:

* images come from the resized uint8 image cache (:class:`core.images.ImageCache`), row
  ``i`` = sample ``i``; :func:`make_dataset` streams them with ``tf.data`` (indices ->
  shuffle -> batch -> parallel gather -> prefetch), copying to RAM only when small;
* one callback (``RunRecorder``) predicts the val split after every epoch, computes
  loss / accuracy / macro F1 with scikit-learn, writes ``metrics.jsonl`` and ``status.json``,
  checkpoints the best epoch by the monitor (``model.keras``, uncompiled) and raises
  health alerts (NaN loss, predictions collapsed onto one class, widening train-val gap);
* a batch callback writes a live loss line every ``log_every`` batches and honours a stop
  request (SIGTERM) after the current batch;
* transfer backbones (the recipe): a linear-probe head fitted on the frozen features
  (``probe_head``), then fine-tuning whose later epochs' weights are averaged into the
  final model (``average_weights``; a ``kind == "average"`` line in ``metrics.jsonl``);
* at the end the kept weights (best epoch, or the average) predict the val and test
  splits (``predictions.csv``).

The run directory's file names belong to :mod:`core.runs`; this module only calls it.
TensorFlow/Keras are imported inside functions: ``import core.training`` is cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import threading
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from core import runs
from core.workspace import atomic_write_json

TASKS = ("multiclass", "binary", "multilabel", "hierarchical")
MONITORS = ("val_macro_f1", "val_loss", "val_accuracy")
HIERARCHY_MODES = ("flat", "separate")
IMPUTATIONS = ("mask", "mean", "matrix_factorization")
WEIGHTS = ("imagenet", "none")

#: Sub-models of a "separate" hierarchical run live in this folder of the run directory.
SUBMODELS_DIR = "models"
#: Arrays up to this many bytes are copied to RAM for the pipeline; larger ones stream from the memmap.
IN_MEMORY_LIMIT_BYTES = 512 * 1024**2
#: Share of the train split held out for validation when a dataset has no val split.
VAL_FRACTION = 0.15
#: The collapse alert fires when predictions stay collapsed for this many consecutive epochs.
COLLAPSE_EPOCHS = 2


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (saved as ``config.json``, reloadable).

    Data: ``dataset`` (a :class:`core.datasets.DatasetSpec` as a dict) or ``dataset_id`` (a
    dataset registered in the workspace); ``task`` (default: the dataset's; ``"binary"`` on
    a multi-class dataset trains ``positive_class`` vs the rest); ``positive_class``;
    ``label_columns`` (a subset of the dataset's label columns -- multi-label: which labels,
    hierarchical: which levels, coarse -> fine; default all); ``hierarchy_mode`` ``"flat"``
    (one model over the leaf labels) or ``"separate"`` (a primary model over the first
    level plus one model per primary category over its leaves); ``exclude_classes``
    (samples with these labels are dropped, at any level); ``imputation`` for missing
    multi-label entries (see :func:`impute_labels`); ``label_patch_version`` records
    which review decisions (effective labels) the run used and ``labels_override_path``
    the patch file (CSV/Parquet, see :func:`apply_label_overrides`) the worker applies.

    Model: ``model`` (backbone), ``alpha``, ``weights`` (``"imagenet"`` / ``"none"``),
    ``image_size``, ``augmentation`` (``None``: on for transfer, off for the CNN),
    ``embedding_dim``, ``dropout``, ``feature_norm`` (BatchNorm on the pooled features;
    ``None``: on for transfer) and the CNN's ``conv_blocks``, ``filters``, ``kernel_size``,
    ``batch_norm``, ``pooling``.

    Fit: ``epochs``, ``batch_size``, ``lr`` (Adam), ``monitor`` (checkpoint / early
    stopping / LR schedule), ``patience`` (early stopping, 0 = off),
    ``reduce_lr_patience`` (0 = off), ``reduce_lr_factor``, ``class_weights``
    (balanced, single-label tasks), ``seed``, ``fine_tune_layers`` (>0: after
    ``warmup_epochs`` epochs with a frozen backbone, unfreeze its top N layers and go on
    at ``lr * fine_tune_lr_factor``), ``feature_warmup`` (ImageNet backbones: the
    frozen-backbone epochs train the head on backbone features computed once, without
    augmentation, instead of a backbone forward pass per image per epoch; ``False``:
    frozen epochs see augmented images), ``probe_head`` (ImageNet backbones, one label per
    image: the warm-up fits the head as a linear probe -- a logistic regression on the
    standardized frozen features, its C picked on the validation split by ``monitor`` --
    written exactly into the model, see :func:`core.models.set_linear_head`; the warm-up is
    then one epoch), ``average_weights`` (fine-tuning: the final model averages the weights
    of the fine-tuning epochs after the first third, a stochastic weight average; it
    replaces the best checkpoint at the end), ``log_every`` (live loss line every N batches).
    """

    dataset: dict | None = None
    dataset_id: str | None = None
    task: str | None = None
    positive_class: str | None = None
    label_columns: tuple[str, ...] | None = None
    hierarchy_mode: str = "flat"
    exclude_classes: tuple[str, ...] = ()
    imputation: str = "mask"
    label_patch_version: str | None = None
    labels_override_path: str | None = None
    model: str = "cnn"
    alpha: float = 0.35
    weights: str = "imagenet"
    image_size: int = 64
    augmentation: bool | None = None
    embedding_dim: int = 64
    dropout: float = 0.2
    conv_blocks: int = 2
    filters: int = 32
    kernel_size: int = 3
    batch_norm: bool = False
    pooling: str = "flatten"
    feature_norm: bool | None = None
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    monitor: str = "val_macro_f1"
    patience: int = 5
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    class_weights: bool = False
    seed: int = 0
    fine_tune_layers: int = 0
    warmup_epochs: int = 0
    fine_tune_lr_factor: float = 0.1
    feature_warmup: bool = True
    probe_head: bool = False
    average_weights: bool = False
    log_every: int = 10

    def __post_init__(self) -> None:
        for name in ("label_columns", "exclude_classes"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                if isinstance(value, str):
                    value = tuple(v.strip() for v in value.split(",") if v.strip())
                else:
                    value = tuple(str(v) for v in value)
                object.__setattr__(self, name, value)
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {list(TASKS)}; received task={self.task!r}")
        from core.models import BACKBONES, POOLINGS

        if self.model not in BACKBONES:
            raise ValueError(f"model must be one of {list(BACKBONES)}; received model={self.model!r}")
        checks = {
            "hierarchy_mode": HIERARCHY_MODES, "imputation": IMPUTATIONS, "weights": WEIGHTS,
            "monitor": MONITORS, "pooling": POOLINGS,
        }
        for name, choices in checks.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {list(choices)}; received {name}={getattr(self, name)!r}")
        ints = {"image_size": 8, "epochs": 1, "batch_size": 1, "embedding_dim": 1, "conv_blocks": 1,
                "filters": 1, "kernel_size": 1, "patience": 0, "reduce_lr_patience": 0, "seed": 0,
                "fine_tune_layers": 0, "warmup_epochs": 0, "log_every": 1}
        for name, lo in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an int >= {lo}; received {name}={v!r}")
        for name, lo, hi in (("lr", 0.0, 100.0), ("reduce_lr_factor", 0.0, 1.0), ("fine_tune_lr_factor", 0.0, 10.0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not lo < float(v) <= hi:
                raise ValueError(f"{name} must be a number in ({lo}, {hi}]; received {name}={v!r}")
        for name in ("feature_warmup", "probe_head", "average_weights"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true or false; received {name}={getattr(self, name)!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received dropout={self.dropout!r}")
        if self.fine_tune_layers and self.model == "cnn":
            raise ValueError("fine_tune_layers applies to transfer backbones; the CNN trains all its layers "
                             f"(received model='cnn', fine_tune_layers={self.fine_tune_layers})")
        if self.fine_tune_layers and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be < epochs to leave epochs for fine-tuning; received "
                             f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        """Build from a dict (e.g. ``config.json``); unknown keys are ignored, tuples restored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in names}
        for k in ("label_columns", "exclude_classes"):
            if isinstance(kwargs.get(k), list):
                kwargs[k] = tuple(kwargs[k])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


#: The frozen warm-up trains on backbone features held in RAM up to this size, else on images.
FEATURE_WARMUP_LIMIT_BYTES = 2 * 2**30
#: Inverse L2 strengths tried for a linear-probe head (``probe_head``), picked by cross-validation on train.
PROBE_CS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: Folds of the cross-validation that picks the probe's C on the training split.
PROBE_FOLDS = 3


def _probe_folds(y_train: np.ndarray, *, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified folds of the training rows for picking C, or ``[]`` when too few images per class."""
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(y_train)
    counts = counts[counts > 0]
    if len(counts) < 2 or counts.max() < PROBE_FOLDS or len(y_train) < 2 * PROBE_FOLDS:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a class with fewer images than folds: scikit-learn warns, and copes
        return list(StratifiedKFold(PROBE_FOLDS, shuffle=True, random_state=seed).split(y_train, y_train))


def _fit_logistic(x: np.ndarray, y: np.ndarray, c: float, class_weight):
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on tiny sets
        return LogisticRegression(C=c, max_iter=1000, class_weight=class_weight).fit(x, y)


def _probe_coefs(clf, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A fitted logistic regression as ``(coef (k, d), intercept (k,))`` over all ``k`` classes."""
    coef = np.zeros((k, clf.coef_.shape[1]))
    intercept = np.full(k, -30.0)  # classes absent from the training rows: never predicted
    present = clf.classes_.astype(np.int64)
    if len(present) == 2 and clf.coef_.shape[0] == 1:  # binary: logits (0, z) give sigmoid(z)
        coef[present[1]], intercept[present] = clf.coef_[0], (0.0, clf.intercept_[0])
    else:
        coef[present], intercept[present] = clf.coef_, clf.intercept_
    return coef, intercept


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def _multilabel_coefs(x: np.ndarray, Y: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """One logistic regression per label on the rows where it is known, 0 or 1 (NaN, and the soft values an
    imputation writes, are left out): ``(coef (K, d), intercept (K,))``. A label with one value on those rows
    gets a constant logit (+-8: p 0.9997)."""
    k, d = Y.shape[1], x.shape[1]
    coef, intercept = np.zeros((k, d)), np.zeros(k)
    for j in range(k):
        known = (Y[:, j] == 0) | (Y[:, j] == 1)
        yj = Y[known, j].astype(np.int64)
        if len(np.unique(yj)) < 2:
            intercept[j] = 8.0 if len(yj) and yj[0] == 1 else -8.0
            continue
        clf = _fit_logistic(x[known], yj, c, None)
        coef[j], intercept[j] = clf.coef_[0], clf.intercept_[0]
    return coef, intercept


def _softmax(logits: np.ndarray) -> np.ndarray:
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


@contextlib.contextmanager
def _recording_on_features(recorder, ctx, model, head, f_val: np.ndarray, *, n_images: int, seconds: float):
    """While the head fits on backbone features: ``recorder`` evaluates ``head`` on the val features and
    checkpoints the whole ``model``; afterwards its context is the images' again, its throughput counts
    ``n_images`` in ``seconds`` (the feature pass, not the head steps) and its best weights are whole-model."""
    import tensorflow as tf

    image_ctx = recorder.ctx
    seen, secs = recorder.images_seen, recorder.train_seconds
    recorder.ctx = dataclasses.replace(ctx, val_ds=tf.data.Dataset.from_tensor_slices(f_val).batch(256),
                                       source="backbone features",
                                       save_checkpoint=lambda _head: image_ctx.save_checkpoint(model))
    try:
        yield
    finally:
        recorder.ctx = image_ctx
        recorder.set_model(model)
    recorder.images_seen = seen + n_images
    recorder.train_seconds = secs + seconds
    if recorder.best_weights is not None:
        head.set_weights(recorder.best_weights)
        recorder.best_weights = model.get_weights()


def _weight_average(first: int):
    """A Keras callback summing the model's weights at the end of every epoch >= ``first`` (0-based)."""
    import keras

    class WeightAverage(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.sums: list[np.ndarray] | None = None
            self.dtypes: list = []
            self.epochs: list[int] = []

        @property
        def count(self) -> int:
            return len(self.epochs)

        def on_epoch_end(self, epoch, logs=None):
            if epoch < first:
                return
            w = self.model.get_weights()
            if self.sums is None:
                self.sums, self.dtypes = [np.array(x, dtype=np.float64) for x in w], [x.dtype for x in w]
            else:
                for acc, x in zip(self.sums, w):
                    acc += x
            self.epochs.append(epoch + 1)

        def weights(self) -> list[np.ndarray]:
            return [(acc / self.count).astype(dt) for acc, dt in zip(self.sums, self.dtypes)]

    return WeightAverage()

#: Recommended settings per model family: what the Train page and the CLI start from.
#: Transfer (measured on flowers12 in bench/bench_training.py): a linear probe on the frozen
#: backbone's features written into the head (one warm-up epoch), then the top 40 layers
#: fine-tuned at lr * 0.03 for 12 epochs at a constant learning rate, no dropout, the final
#: model the average of the fine-tuning epochs' weights after the first third.
RECIPES: dict[str, dict[str, Any]] = {
    "cnn": {"image_size": 64, "epochs": 10, "dropout": 0.2, "embedding_dim": 64, "patience": 5,
            "reduce_lr_patience": 2, "warmup_epochs": 0, "fine_tune_layers": 0, "fine_tune_lr_factor": 0.1,
            "probe_head": False, "average_weights": False},
    "transfer": {"image_size": 128, "epochs": 13, "dropout": 0.0, "embedding_dim": 128, "patience": 0,
                 "reduce_lr_patience": 0, "warmup_epochs": 1, "fine_tune_layers": 40, "fine_tune_lr_factor": 0.03,
                 "probe_head": True, "average_weights": True},
}


def recommended_config(model: str = "cnn", **overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` with the recommended recipe for ``model`` (see :data:`RECIPES`).

    ``overrides`` win over the recipe; with ``weights="none"`` the transfer recipe trains the
    whole network from the start (no warm-up / fine-tuning phases).
    """
    recipe = dict(RECIPES["cnn" if model == "cnn" else "transfer"])
    if model != "cnn" and overrides.get("weights") == "none":
        recipe.update(warmup_epochs=0, fine_tune_layers=0)
    recipe.update(overrides)
    epochs = recipe.get("epochs", TrainConfig.epochs)
    if recipe.get("fine_tune_layers") and recipe.get("warmup_epochs", 0) >= epochs and "warmup_epochs" not in overrides:
        if epochs < 2 and "fine_tune_layers" not in overrides:
            recipe["fine_tune_layers"] = 0  # one epoch: frozen backbone only
        else:
            recipe["warmup_epochs"] = max(1, epochs // 3)  # a short run keeps the warm-up/fine-tune proportion
    return TrainConfig(model=model, **recipe)


# ---------------------------------------------------------------------------
# Missing multi-label entries
# ---------------------------------------------------------------------------

def impute_labels(Y: np.ndarray, *, method: str = "mask", rank: int | None = None, l2: float = 0.1,
                  iterations: int = 30, seed: int = 0) -> np.ndarray:
    """Fill missing entries of a multi-label matrix (the fourth seed's comparison).

    Parameters
    ----------
    Y : ndarray of shape (N, K)
        1.0 / 0.0 for known labels, NaN for missing.
    method : {"mask", "mean", "matrix_factorization"}
        ``"mask"``: nothing is filled (the masked loss ignores NaN entries).
        ``"mean"``: each missing entry gets its label's mean over the known entries (a
        soft target); a label with no known entry stays NaN.
        ``"matrix_factorization"``: low-rank completion ``Y ~ mu + U V^T`` fitted by
        alternating least squares on the known entries with L2 penalty ``l2``; missing
        entries get the reconstruction clipped to [0, 1].
    rank : int, optional
        Rank of ``U V^T`` (default ``max(1, K // 2)``).
    l2 : float
        Ridge penalty (per known entry) on U and V.
    iterations : int
        Alternating least-squares sweeps.
    seed : int
        Seed of the initial factors.

    Returns
    -------
    ndarray of shape (N, K), float
        A new array; known entries are unchanged.

    Examples
    --------
    >>> impute_labels(np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), method="mean")[0, 1]
    1.0
    """
    Y = np.asarray(Y, dtype=float)
    if Y.ndim != 2:
        raise ValueError(f"Y must have shape (N, K); received shape {Y.shape}")
    if method not in IMPUTATIONS:
        raise ValueError(f"method must be one of {list(IMPUTATIONS)}; received method={method!r}")
    known = ~np.isnan(Y)
    bad = Y[known & (Y != 0) & (Y != 1)]
    if bad.size:
        raise ValueError(f"Y must hold 1, 0 or NaN; received values {sorted(set(bad.tolist()))[:5]}")
    out = Y.copy()
    if method == "mask" or known.all():
        return out
    counts = known.sum(axis=0)
    with np.errstate(invalid="ignore"):
        mu = np.where(counts > 0, np.nansum(Y, axis=0) / np.maximum(counts, 1), np.nan)
    if method == "mean":
        return np.where(known, Y, mu[None, :])
    n, k = Y.shape
    r = rank if rank is not None else max(1, k // 2)
    if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 1 <= r <= k:
        raise ValueError(f"rank must be an int in 1..{k}; received rank={rank!r}")
    mu0 = np.nan_to_num(mu, nan=0.5)
    R = np.where(known, Y - mu0[None, :], 0.0)
    M = known.astype(float)
    rng = np.random.default_rng(seed)
    U = rng.normal(scale=0.1, size=(n, r))
    V = rng.normal(scale=0.1, size=(k, r))
    eye = np.eye(r)

    def solve(F, Mt, Rt):
        # For each row i: (sum_j m_ij f_j f_j^T + l2 * n_i I) x_i = sum_j m_ij r_ij f_j
        A = np.einsum("ij,jr,js->irs", Mt, F, F) + l2 * np.maximum(Mt.sum(axis=1), 1.0)[:, None, None] * eye
        b = (Mt * Rt) @ F
        return np.linalg.solve(A, b[..., None])[..., 0]

    for _ in range(int(iterations)):
        U = solve(V, M, R)
        V = solve(U, M.T, R.T)
    recon = np.clip(mu0[None, :] + U @ V.T, 0.0, 1.0)
    out = np.where(known, Y, recon)
    out[:, counts == 0] = np.nan  # no information at all: leave it to the mask
    return out


# ---------------------------------------------------------------------------
# Targets: the samples table -> arrays the model trains on, and labels.json
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Targets:
    """What the model learns, for the N rows of ``samples`` (all splits, row order).

    ``task``; ``names``: the K output names (classes, or labels for multi-label; the
    leaf classes for hierarchical); ``y``: int (N,) class index (-1 unknown) or float
    (N, K) with NaN missing; ``labels``: the labels.json object; ``samples``: the rows
    kept (excluded classes and unknown training labels dropped), with a positional
    index; ``levels`` / ``level_y`` / ``level_names``: hierarchical per-level int targets;
    ``dropped``: why rows were left out, ``{reason: count}``; ``warnings``: messages.
    """

    task: str
    names: tuple[str, ...]
    y: np.ndarray
    labels: dict[str, Any]
    samples: pd.DataFrame
    levels: tuple[str, ...] = ()
    level_y: dict[str, np.ndarray] = field(default_factory=dict)
    level_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip()) \
        or v is pd.NA or v is pd.NaT


def _label_strings(col: pd.Series) -> np.ndarray:
    return np.array(["" if _is_missing(v) else str(v) for v in col.tolist()], dtype=object)


def apply_label_overrides(samples: pd.DataFrame, overrides: pd.DataFrame | None) -> pd.DataFrame:
    """Effective labels = raw labels + a patch (the review decisions of the Clean page).

    Parameters
    ----------
    samples : DataFrame
        The samples table (``sample_id`` + label columns).
    overrides : DataFrame or None
        One row per patched sample: ``sample_id``, optionally ``excluded`` (bool; True
        drops the sample), and any label columns whose non-missing values replace the
        raw ones.

    Returns
    -------
    DataFrame : a new table (the input is not modified).
    """
    if overrides is None or len(overrides) == 0:
        return samples
    if "sample_id" not in overrides.columns:
        raise ValueError(f"labels_override needs a 'sample_id' column; received columns {list(overrides.columns)}")
    unknown = sorted(set(overrides["sample_id"].astype(str)) - set(samples["sample_id"].astype(str)))
    if unknown:
        raise ValueError(f"labels_override names {len(unknown)} sample_id(s) not in the dataset, e.g. {unknown[:3]}")
    out = samples.copy()
    pos = pd.Series(np.arange(len(out)), index=out["sample_id"].astype(str))
    rows = pos.loc[overrides["sample_id"].astype(str)].to_numpy()
    for col in overrides.columns:
        if col in ("sample_id", "excluded") or col not in out.columns:
            continue
        vals = overrides[col].to_numpy(dtype=object)
        keep = np.array([not _is_missing(v) for v in vals])
        if keep.any():
            col_pos = out.columns.get_loc(col)
            if pd.api.types.is_float_dtype(out[col].dtype):
                out.iloc[rows[keep], col_pos] = pd.to_numeric(pd.Series(vals[keep]), errors="coerce").to_numpy()
            else:
                out[col] = out[col].astype(object)
                out.iloc[rows[keep], col_pos] = vals[keep]
    if "excluded" in overrides.columns:
        excl = overrides["excluded"].fillna(False).astype(bool).to_numpy()
        drop = set(rows[excl].tolist())
        out = out.iloc[[i for i in range(len(out)) if i not in drop]]
    return out.reset_index(drop=True)


def _require_columns(samples: pd.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in samples.columns]
    if missing:
        raise ValueError(f"{what}: the samples table has no column(s) {missing}; columns: {list(samples.columns)}")


def build_targets(samples: pd.DataFrame, schema, *, task: str | None = None,
                  label_columns: Sequence[str] | None = None, exclude_classes: Sequence[str] = (),
                  positive_class: str | None = None) -> Targets:
    """Turn the samples table's label columns into training targets and a labels.json.

    Parameters
    ----------
    samples : DataFrame
        The samples table (see :mod:`core.datasets`) with a ``split`` column.
    schema : LabelSchema
        What the label columns mean.
    task : str, optional
        Defaults to ``schema.task``. ``"binary"`` on a column with more than two classes
        means ``positive_class`` vs ``not_<positive_class>``.
    positive_class : str, optional
        Binary: the positive class (default: the schema's).
    label_columns : sequence of str, optional
        Subset of ``schema.label_columns`` (multi-label: labels; hierarchical: levels).
    exclude_classes : sequence of str
        Class names whose samples are dropped (any level for hierarchical).

    Returns
    -------
    Targets
    """
    task = task or schema.task
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}; received task={task!r}")
    cols = tuple(label_columns) if label_columns else tuple(schema.label_columns)
    unknown = [c for c in cols if c not in schema.label_columns and c not in samples.columns]
    if unknown:
        raise ValueError(f"label_columns {unknown} are not label columns of this dataset "
                         f"(available: {list(schema.label_columns)})")
    _require_columns(samples, ("sample_id", "path", "split", *cols), "build_targets")
    samples = samples.reset_index(drop=True)
    dropped: dict[str, int] = {}
    warnings: list[str] = []
    excl = {str(c) for c in exclude_classes}

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal samples
        if mask.any():
            dropped[reason] = dropped.get(reason, 0) + int(mask.sum())
            samples = samples.loc[~mask].reset_index(drop=True)

    split = samples["split"].astype(str).to_numpy()

    if task == "multilabel":
        if excl:
            raise ValueError("exclude_classes applies to single-label and hierarchical tasks; for multi-label "
                             "choose the labels to train on with label_columns")
        Y = np.column_stack([pd.to_numeric(samples[c], errors="coerce").to_numpy(dtype=float) for c in cols]) \
            if len(samples) else np.zeros((0, len(cols)))
        bad = ~np.isnan(Y) & (Y != 0) & (Y != 1)
        if bad.any():
            i, j = (int(v[0]) for v in np.nonzero(bad))
            raise ValueError(f"multi-label column {cols[j]!r}, sample {samples['sample_id'].iloc[i]!r}: expected "
                             f"1, 0 or missing; found {samples[cols[j]].iloc[i]!r}")
        none_known = np.isnan(Y).all(axis=1) & (split == "train")
        drop(none_known, "no known label (train)")
        Y = Y[~none_known]
        for j, c in enumerate(cols):
            tr = Y[samples["split"].to_numpy() == "train", j]
            if np.all(np.isnan(tr)):
                warnings.append(f"label {c!r} has no known value in the train split: the masked loss ignores it")
        labels = {"task": "multilabel", "labels": list(cols)}
        return Targets("multilabel", tuple(cols), Y, labels, samples, dropped=dropped, warnings=tuple(warnings))

    if task in ("multiclass", "binary"):
        if len(cols) != 1:
            raise ValueError(f"a {task} task trains on one label column; received label_columns={list(cols)}")
        col = cols[0]
        y_str = _label_strings(samples[col])
        if excl:
            drop(np.isin(y_str, list(excl)), "excluded class")
            y_str = _label_strings(samples[col])
        split = samples["split"].astype(str).to_numpy()
        drop((y_str == "") & (split != "test"), "missing label")
        y_str = _label_strings(samples[col])
        split = samples["split"].astype(str).to_numpy()
        if task == "binary":
            pos = positive_class or schema.positive_class
            present = sorted(set(y_str[y_str != ""].tolist()))
            if pos is None:
                if len(present) != 2:
                    raise ValueError(f"a binary task needs a positive class when column {col!r} has "
                                     f"{len(present)} classes ({present[:10]})")
                pos = present[1]
            if str(pos) not in present:
                raise ValueError(f"positive_class {pos!r} does not occur in column {col!r} (classes: {present[:10]})")
            pos = str(pos)
            others = [c for c in present if c != pos]
            neg = others[0] if len(others) == 1 else f"not_{pos}"
            if len(others) > 1:
                warnings.append(f"binary task: {len(others)} classes other than {pos!r} merged into {neg!r}")
            y_str = np.array(["" if v == "" else (pos if v == pos else neg) for v in y_str], dtype=object)
            classes = [neg, pos]
            labels = {"task": "binary", "classes": classes, "positive_class": pos}
        else:
            train_classes = sorted(set(y_str[(split == "train") & (y_str != "")].tolist()))
            if len(train_classes) < 2:
                raise ValueError(f"column {col!r} has {len(train_classes)} class(es) in the train split "
                                 f"({train_classes}); a classifier needs at least 2")
            unseen = (y_str != "") & ~np.isin(y_str, train_classes)
            if unseen.any():
                warnings.append(f"{int(unseen.sum())} val/test samples have classes absent from the train split "
                                f"({sorted(set(y_str[unseen].tolist()))[:5]}); they are left out")
                drop(unseen, "class absent from train")
                y_str = y_str[~unseen]
            classes = train_classes
            labels = {"task": "multiclass", "classes": classes, "positive_class": None}
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index.get(v, -1) for v in y_str], dtype=np.int64)
        return Targets(task, tuple(classes), y, labels, samples, dropped=dropped, warnings=tuple(warnings))

    # hierarchical
    if len(cols) < 2:
        raise ValueError(f"a hierarchical task needs at least 2 level columns (coarse -> fine); "
                         f"received label_columns={list(cols)}")
    strs = {c: _label_strings(samples[c]) for c in cols}
    if excl:
        m = np.zeros(len(samples), dtype=bool)
        for c in cols:
            m |= np.isin(strs[c], list(excl))
        drop(m, "excluded class")
        strs = {c: _label_strings(samples[c]) for c in cols}
    split = samples["split"].astype(str).to_numpy()
    leaf = cols[-1]
    drop((strs[leaf] == "") & (split != "test"), "missing leaf label")
    strs = {c: _label_strings(samples[c]) for c in cols}
    split = samples["split"].astype(str).to_numpy()
    train_leaves = sorted(set(strs[leaf][(split == "train") & (strs[leaf] != "")].tolist()))
    if len(train_leaves) < 2:
        raise ValueError(f"level {leaf!r} has {len(train_leaves)} class(es) in the train split; need at least 2")
    unseen = (strs[leaf] != "") & ~np.isin(strs[leaf], train_leaves)
    if unseen.any():
        warnings.append(f"{int(unseen.sum())} val/test samples have leaf classes absent from the train split; "
                        "they are left out")
        drop(unseen, "class absent from train")
        strs = {c: _label_strings(samples[c]) for c in cols}
    # parents: each child's most frequent parent (conflicts are the audit's hierarchy_conflict)
    parents: dict[str, dict[str, str]] = {}
    for upper, lower in zip(cols[:-1], cols[1:]):
        pairs = Counter((c, p) for c, p in zip(strs[lower], strs[upper]) if c and p)
        best: dict[str, tuple[int, str]] = {}
        for (c, p), n in pairs.items():
            if c not in best or (n, p) > best[c]:
                best[c] = (n, p)
        conflicts = sorted({c for (c, p) in pairs if p != best[c][1]})
        if conflicts:
            warnings.append(f"{len(conflicts)} {lower!r} class(es) appear under more than one {upper!r} "
                            f"(e.g. {conflicts[:3]}); each is placed under its most frequent parent")
        parents[lower] = {c: p for c, (n, p) in best.items()}
    # the path of every leaf, through the parents maps
    level_classes: dict[str, list[str]] = {leaf: train_leaves}
    for i in range(len(cols) - 2, -1, -1):
        child, up = cols[i + 1], cols[i]
        missing = [c for c in level_classes[child] if c not in parents[child]]
        if missing:
            raise ValueError(f"level {child!r} classes {missing[:5]} never appear with a {up!r} label")
        level_classes[up] = sorted({parents[child][c] for c in level_classes[child]})
    parents = {lv: {c: parents[lv][c] for c in level_classes[lv]} for lv in cols[1:]}
    labels = {"task": "hierarchical", "levels": list(cols),
              "level_classes": {lv: level_classes[lv] for lv in cols}, "parents": parents}
    leaf_index = {c: i for i, c in enumerate(train_leaves)}
    y = np.array([leaf_index.get(v, -1) for v in strs[leaf]], dtype=np.int64)
    level_y, level_names = {}, {}
    for lv in cols:
        idx = {c: i for i, c in enumerate(level_classes[lv])}
        level_y[lv] = np.array([idx.get(v, -1) for v in strs[lv]], dtype=np.int64)
        level_names[lv] = tuple(level_classes[lv])
    return Targets("hierarchical", tuple(train_leaves), y, labels, samples, levels=tuple(cols),
                   level_y=level_y, level_names=level_names, dropped=dropped, warnings=tuple(warnings))


def leaf_ancestors(labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """For a hierarchical labels.json: ``{level: int (K_leaf,)}`` the index of each leaf's ancestor."""
    levels = labels["levels"]
    leaves = labels["level_classes"][levels[-1]]
    out = {levels[-1]: np.arange(len(leaves))}
    current = list(leaves)
    for i in range(len(levels) - 2, -1, -1):
        child = levels[i + 1]
        current = [labels["parents"][child][c] for c in current]
        idx = {c: j for j, c in enumerate(labels["level_classes"][levels[i]])}
        out[levels[i]] = np.array([idx[c] for c in current], dtype=np.int64)
    return out


def hierarchy_probabilities(leaf_probs: np.ndarray, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-level probabilities from leaf probabilities: each class gets the sum of its leaves.

    Parameters
    ----------
    leaf_probs : ndarray of shape (N, K_leaf)
        The model's output (columns in ``labels["level_classes"][leaf level]`` order).
    labels : dict
        A hierarchical labels.json object.

    Returns
    -------
    dict : ``{level: ndarray of shape (N, K_level)}``, coarse -> fine.
    """
    leaf_probs = np.asarray(leaf_probs, dtype=float)
    out = {}
    for lv, anc in leaf_ancestors(labels).items():
        k = len(labels["level_classes"][lv])
        m = np.zeros((leaf_probs.shape[1], k))
        m[np.arange(leaf_probs.shape[1]), anc] = 1.0
        out[lv] = leaf_probs @ m
    return {lv: out[lv] for lv in labels["levels"]}


def hierarchy_path(leaf_probs: np.ndarray, labels: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The predicted path: the most probable leaf and its ancestors, ``{level: int (N,)}``."""
    best = np.argmax(np.asarray(leaf_probs), axis=1)
    return {lv: anc[best] for lv, anc in leaf_ancestors(labels).items() if lv in labels["levels"]}


def carve_validation(train_idx: np.ndarray, y: np.ndarray | None, *, fraction: float | None = None,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of the train rows as a validation set (stratified on ``y`` when possible).

    Parameters
    ----------
    train_idx : ndarray of shape (M,), int
        Row indices of the train split.
    y : ndarray of shape (N,), int, or None
        Class index per row (all rows); ``None``: a plain random hold-out.
    fraction : float, optional
        Default :data:`VAL_FRACTION`.
    seed : int
        Fixed by default, so every run of a dataset validates on the same rows.

    Returns
    -------
    (train_idx, val_idx) : two sorted int arrays partitioning ``train_idx``.
    """
    from sklearn.model_selection import train_test_split

    fraction = VAL_FRACTION if fraction is None else fraction
    train_idx = np.asarray(train_idx, dtype=np.int64)
    strat = None
    if y is not None:
        labels = np.asarray(y)[train_idx]
        counts = Counter(labels.tolist())
        n_val = int(math.ceil(fraction * len(train_idx)))
        if min(counts.values()) >= 2 and n_val >= len(counts):
            strat = labels
    tr, va = train_test_split(train_idx, test_size=fraction, random_state=seed, stratify=strat)
    return np.sort(tr), np.sort(va)


# ---------------------------------------------------------------------------
# Metrics (numpy / scikit-learn), shared by the epoch callback and the final report
# ---------------------------------------------------------------------------

def _xent(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)
    return float(-np.mean(np.log(p)))


def _masked_bce(Y: np.ndarray, P: np.ndarray) -> float:
    known = ~np.isnan(Y)
    y = np.where(known, Y, 0.0)
    p = np.clip(P, 1e-7, 1 - 1e-7)
    bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)) * known
    per = bce.sum(axis=1) / np.maximum(known.sum(axis=1), 1)
    return float(per.mean())


def evaluate_predictions(task: str, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Loss, accuracy and macro F1 of predicted probabilities against targets.

    Parameters
    ----------
    task : str
        ``"multilabel"`` or a single-label task (hierarchical: leaf level).
    y : ndarray
        int (N,) class indices (rows with -1 are ignored), or float (N, K) with NaN missing.
    probs : ndarray of shape (N, K)

    Returns
    -------
    dict : ``loss``, ``accuracy`` (multi-label: over known entries), ``macro_f1``
        (multi-label: mean over labels with a known entry, each on its known rows), ``n``.
    """
    from sklearn.metrics import f1_score

    probs = np.asarray(probs, dtype=float)
    if task == "multilabel":
        Y = np.asarray(y, dtype=float)
        known = ~np.isnan(Y)
        if not known.any():
            return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "n": int(len(Y))}
        pred = (probs >= 0.5).astype(float)
        acc = float((pred[known] == Y[known]).mean())
        f1s = [f1_score(Y[known[:, j], j].astype(int), pred[known[:, j], j].astype(int), zero_division=0)
               for j in range(Y.shape[1]) if known[:, j].any()]
        return {"loss": _masked_bce(Y, probs), "accuracy": acc, "macro_f1": float(np.mean(f1s)), "n": int(len(Y))}
    y = np.asarray(y, dtype=np.int64)
    ok = y >= 0
    if not ok.any():
        return {"loss": float("nan"), "accuracy": float("nan"), "macro_f1": float("nan"), "n": 0}
    y, probs = y[ok], probs[ok]
    pred = probs.argmax(axis=1)
    return {
        "loss": _xent(y, probs),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=np.arange(probs.shape[1]), average="macro", zero_division=0)),
        "n": int(len(y)),
    }


def collapse_alert(task: str, y: np.ndarray, probs: np.ndarray, names: Sequence[str], *,
                   share: float = 0.95) -> dict[str, Any] | None:
    """Detect predictions collapsed onto one answer while the labels are spread out.

    Single-label: more than ``share`` of the predictions are one class while the most
    common true class holds less than ``share`` of the labels (the seeds' "accuracy stuck
    at 0.2"). Multi-label: every label is predicted the same way (all 0 or all 1) for
    more than ``share`` of the rows while some label varies in truth.

    Returns
    -------
    dict or None : an alert ``{"kind": "collapse", "message", "suggestion", "share", "class"}``.
    """
    probs = np.asarray(probs)
    if len(probs) < 5:
        return None
    if task == "multilabel":
        Y = np.asarray(y, dtype=float)
        pred = probs >= 0.5
        rate = pred.mean(axis=0)
        const = np.maximum(rate, 1 - rate)
        counts = (~np.isnan(Y)).sum(axis=0)
        true_rate = np.where(counts > 0, np.nansum(Y, axis=0) / np.maximum(counts, 1), np.nan)
        varies = np.nan_to_num(np.minimum(true_rate, 1 - true_rate), nan=0.0) > (1 - share)
        if np.all(const > share) and varies.any():
            return {"kind": "collapse", "share": float(const.min()), "class": None,
                    "message": "Predictions collapsed: every label gets the same answer for almost every image "
                               "while the true labels vary.",
                    "suggestion": "Lower the learning rate (e.g. 10x), check label balance, and check that the "
                                  "images differ (not all blank)."}
        return None
    y = np.asarray(y, dtype=np.int64)
    ok = y >= 0
    if ok.sum() < 5:
        return None
    pred = probs[ok].argmax(axis=1)
    top, n_top = Counter(pred.tolist()).most_common(1)[0]
    pred_share = n_top / len(pred)
    true_share = Counter(y[ok].tolist()).most_common(1)[0][1] / ok.sum()
    if pred_share > share and true_share < share:
        k = probs.shape[1]
        return {"kind": "collapse", "share": float(pred_share), "class": str(names[top]),
                "message": f"Predictions collapsed onto one class: {pred_share:.0%} of the val predictions are "
                           f"{names[top]!r} while the labels are spread over {k} classes (accuracy stuck near "
                           f"{true_share:.2f} or 1/{k} is this failure).",
                "suggestion": "Lower the learning rate (e.g. 10x smaller), check class balance (turn on class "
                              "weights or exclude rare classes), and check that the images are not all alike."}
    return None


def gap_alert(history: Sequence[Mapping[str, Any]], *, window: int = 3, rise: float = 0.05) -> dict[str, Any] | None:
    """A widening train-val gap: ``val_loss - loss`` grew over the last ``window`` epochs
    while the train loss fell and val loss sits ``rise`` above its best."""
    rows = [h for h in history if _finite(h.get("loss")) and _finite(h.get("val_loss"))]
    if len(rows) < window + 1:
        return None
    last = rows[-(window + 1):]
    gaps = [h["val_loss"] - h["loss"] for h in last]
    widening = all(b > a for a, b in zip(gaps, gaps[1:]))
    train_falling = last[-1]["loss"] < last[0]["loss"]
    best_val = min(h["val_loss"] for h in rows)
    if widening and train_falling and last[-1]["val_loss"] > best_val * (1 + rise) and gaps[-1] > 0:
        return {"kind": "overfitting", "gap": float(gaps[-1]),
                "message": f"The train-val gap is widening: val loss {last[-1]['val_loss']:.3f} vs train loss "
                           f"{last[-1]['loss']:.3f}, growing for {window} epochs (best val loss {best_val:.3f}).",
                "suggestion": "The model is memorising the train split: use augmentation, more dropout, a smaller "
                              "model or fewer epochs (early stopping keeps the best checkpoint)."}
    return None


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------
# The tf.data pipeline
# ---------------------------------------------------------------------------

def make_dataset(images: np.ndarray, indices: np.ndarray, y: np.ndarray | None = None, *, batch_size: int,
                 shuffle: bool = False, seed: int = 0, in_memory_limit: int = IN_MEMORY_LIMIT_BYTES):
    """A ``tf.data.Dataset`` of ``(float32 images (B, S, S, 3) in 0..255, targets)`` batches.

    Parameters
    ----------
    images : ndarray of shape (N, S, S, 3), uint8
        Usually the image cache's memmap.
    indices : ndarray of shape (M,), int
        Rows of ``images`` (and ``y``) to serve.
    y : ndarray of shape (N,) or (N, K), optional
        Targets aligned with ``images``; ``None`` gives image-only batches (prediction).
    batch_size : int
    shuffle : bool
        Reshuffle every epoch (seeded).
    in_memory_limit : int
        When the selected rows take at most this many bytes they are copied to RAM once
        and gathered in-graph; otherwise each batch is read from the memmap in a
        parallel ``numpy_function`` (sorted reads), so RAM stays flat.

    Returns
    -------
    tf.data.Dataset
    """
    import tensorflow as tf

    indices = np.asarray(indices, dtype=np.int64)
    size = images.shape[1:]
    per = int(np.prod(size))
    pos = tf.data.Dataset.from_tensor_slices(np.arange(len(indices), dtype=np.int64))
    if shuffle:
        pos = pos.shuffle(max(1, len(indices)), seed=seed, reshuffle_each_iteration=True)
    pos = pos.batch(batch_size)
    if len(indices) * per <= in_memory_limit:
        table = tf.constant(np.ascontiguousarray(images[np.sort(indices)])[np.argsort(np.argsort(indices))]
                            if len(indices) else np.zeros((0, *size), np.uint8))

        def load(p):
            return tf.cast(tf.gather(table, p), tf.float32)
    else:
        rows = indices

        def gather(p):
            idx = rows[p]
            order = np.argsort(idx, kind="stable")
            out = np.empty((len(idx), *size), dtype=np.uint8)
            out[order] = images[idx[order]]
            return out

        def load(p):
            x = tf.numpy_function(gather, [p], tf.uint8, stateful=False)
            x.set_shape((None, *size))
            return tf.cast(x, tf.float32)

    if y is None:
        ds = pos.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        y_sel = np.asarray(y)[indices]
        y_t = tf.constant(y_sel.astype(np.float32) if y_sel.dtype.kind == "f" else y_sel.astype(np.int64))
        ds = pos.map(lambda p: (load(p), tf.gather(y_t, p)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# Stop requests (SIGTERM) and results
# ---------------------------------------------------------------------------

class _Stopped(Exception):
    """A stop request arrived before any model was fitted."""


class StopRequest:
    """A thread-safe flag a signal handler sets; the batch callback stops the fit after the batch."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.model = None
        self.reason = ""

    def request(self, reason: str = "stop requested") -> None:
        self.reason = self.reason or reason
        self._event.set()
        model = self.model
        if model is not None:
            model.stop_training = True

    @property
    def requested(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train` (also summarised in status.json and the CLI's --json line).

    ``state``: ``"done"`` or ``"stopped"``; ``best_epoch`` (1-based, None when no epoch
    finished); ``val`` / ``test``: metric dicts (``accuracy``, ``macro_f1``, ``loss``, ``n``;
    hierarchical adds ``<level>_accuracy`` / ``<level>_macro_f1``); ``seconds``: wall time;
    ``images_per_second``: training throughput (train images seen / training seconds).
    """

    run_dir: str
    state: str
    best_epoch: int | None
    monitor: str
    best_value: float | None
    val: dict[str, Any]
    test: dict[str, Any]
    seconds: float
    images_per_second: float
    weights_used: str
    alerts: tuple[dict, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": self.run_dir, "state": self.state, "best_epoch": self.best_epoch,
            "monitor": self.monitor, "best_value": self.best_value, "val": self.val, "test": self.test,
            "seconds": round(self.seconds, 3), "images_per_second": round(self.images_per_second, 2),
            "weights_used": self.weights_used, "alerts": [a.get("kind") for a in self.alerts],
            "counts": self.counts,
        }


# ---------------------------------------------------------------------------
# Callbacks
# ---------------------------------------------------------------------------

def _make_callbacks_module():
    """Define the Keras callback classes (Keras imported lazily, once)."""
    import keras

    class BatchLogger(keras.callbacks.Callback):
        """Every ``every`` batches: a ``{"kind": "batch"}`` metrics line; every batch: NaN check
        and stop requests. ``async_safe``: Keras may run it off the training thread."""

        async_safe = True

        def __init__(self, recorder, every: int) -> None:
            super().__init__()
            self.recorder = recorder
            self.every = every

        def on_train_batch_end(self, batch, logs=None):
            rec = self.recorder
            if rec.stop.requested:
                self.model.stop_training = True
            loss = (logs or {}).get("loss")
            if loss is not None and not _finite(loss):
                rec.nan_loss(batch, loss)
                self.model.stop_training = True
                return
            rec.batches_seen += 1
            if (batch + 1) % self.every == 0 and loss is not None:
                rec.append({"kind": "batch", "stage": rec.stage, "epoch": rec.epoch_number, "batch": batch + 1,
                            "step": rec.batches_seen, "loss": float(loss), "time": time.time()})

    class RunRecorder(keras.callbacks.Callback):
        """Per epoch: val predictions -> metrics injected into ``logs`` (for early stopping
        and the LR schedule, which run after it), metrics.jsonl, status, health alerts,
        and the best checkpoint."""

        def __init__(self, ctx: "_FitContext") -> None:
            super().__init__()
            self.ctx = ctx
            self.stop = ctx.stop
            self.stage = ctx.stage
            self.history: list[dict] = []
            self.best_value: float | None = None
            self.best_epoch: int | None = None
            self.best_weights = None
            self.batches_seen = 0
            self.epoch_number = 0
            self.train_seconds = 0.0
            self.images_seen = 0
            self._t0 = 0.0
            self._collapsed = 0
            self._lock = threading.Lock()

        # -- helpers used by BatchLogger -------------------------------------------------
        def append(self, record: dict) -> None:
            with self._lock:
                runs.append_metrics(self.ctx.run_dir, record)

        def nan_loss(self, batch: int, loss: Any) -> None:
            if any(a["kind"] == "nan_loss" for a in self.ctx.alerts):
                return
            alert = {"kind": "nan_loss", "epoch": self.epoch_number, "batch": batch + 1, "stage": self.stage,
                     "message": f"The training loss became {loss} at epoch {self.epoch_number}, batch {batch + 1}; "
                                "training stopped (the best checkpoint so far is kept).",
                     "suggestion": "Lower the learning rate (e.g. 10x), and check for corrupt or constant images."}
            self.ctx.add_alert(alert)
            self.stop.reason = self.stop.reason or "nan_loss"
            self.append({"kind": "alert", "stage": self.stage, "epoch": self.epoch_number, "time": time.time(),
                         "alert": alert})

        # -- Keras hooks ---------------------------------------------------------------
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_number = epoch + 1
            self._t0 = time.perf_counter()
            self._batches_at_start = self.batches_seen

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            ctx = self.ctx
            train_s = time.perf_counter() - self._t0
            n_batches = self.batches_seen - self._batches_at_start
            n_images = min(ctx.n_train, n_batches * ctx.batch_size) if n_batches else ctx.n_train
            self.train_seconds += train_s
            self.images_seen += n_images
            t1 = time.perf_counter()
            probs = self.model.predict(ctx.val_ds, verbose=0)
            val = evaluate_predictions(ctx.metric_task, ctx.val_y, probs)
            for k in ("loss", "accuracy", "macro_f1"):
                logs[f"val_{k}"] = val[k]
            if ctx.metric_task == "multilabel" and "masked_binary_accuracy" in logs:
                logs["accuracy"] = logs.pop("masked_binary_accuracy")
            lr = _current_lr(self.model)
            record = {
                "kind": "epoch", "stage": self.stage, "epoch": epoch + 1, "epochs": ctx.epochs,
                "loss": _num(logs.get("loss")), "accuracy": _num(logs.get("accuracy")),
                "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                "lr": lr, "seconds": round(train_s + (time.perf_counter() - t1), 3),
                "train_seconds": round(train_s, 3), "images_per_second": round(n_images / max(train_s, 1e-9), 2),
                "time": time.time(),
            }
            if ctx.source != "images":
                record["input"] = ctx.source
            if ctx.phase:
                record["phase"] = ctx.phase
            self.history.append(record)
            new_alerts = []
            if ctx.alert_collapse:
                # a collapse right after the first epoch is often transient: alert when it persists
                a = collapse_alert(ctx.metric_task, ctx.val_y, probs, ctx.names)
                self._collapsed = self._collapsed + 1 if a else 0
                if a and self._collapsed >= COLLAPSE_EPOCHS:
                    new_alerts.append({**a, "epoch": epoch + 1, "stage": self.stage})
            a = gap_alert(self.history)
            if a:
                new_alerts.append({**a, "epoch": epoch + 1, "stage": self.stage})
            for a in new_alerts:
                ctx.add_alert(a)
            if new_alerts:
                record["alerts"] = [a["kind"] for a in new_alerts]
            # checkpoint the best epoch by the monitor
            value = record[ctx.monitor]
            improved = _finite(value) and _finite(record["loss"]) and (
                self.best_value is None
                or (value < self.best_value if ctx.monitor == "val_loss" else value > self.best_value))
            if improved:
                self.best_value, self.best_epoch = float(value), epoch + 1
                self.best_weights = self.model.get_weights()
                ctx.save_checkpoint(self.model)
                record["checkpoint"] = True
            record["best_value"], record["best_epoch"] = self.best_value, self.best_epoch
            self.append(record)
            ctx.on_epoch(record)

    return BatchLogger, RunRecorder


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _current_lr(model) -> float | None:
    try:
        return float(np.asarray(model.optimizer.learning_rate))
    except Exception:  # noqa: BLE001 - a schedule object: not worth failing over
        return None


@dataclass
class _FitContext:
    """State shared by the callbacks of one fit stage."""

    run_dir: Path
    stage: str
    stop: StopRequest
    val_ds: Any
    val_y: np.ndarray
    metric_task: str
    names: tuple[str, ...]
    monitor: str
    epochs: int
    batch_size: int
    n_train: int
    save_checkpoint: Callable[[Any], None]
    on_epoch: Callable[[dict], None]
    alerts: list
    alert_collapse: bool = True
    source: str = "images"  # what the fitted model reads: "images", or "backbone features" (frozen warm-up)
    phase: str | None = None  # two-phase transfer runs: "frozen warm-up", then "fine-tuning"

    def add_alert(self, alert: dict) -> None:
        # keep one alert per (kind, stage); update it with the latest epoch
        for i, a in enumerate(self.alerts):
            if a["kind"] == alert["kind"] and a.get("stage") == alert.get("stage"):
                self.alerts[i] = {**alert, "first_epoch": a.get("first_epoch", a.get("epoch"))}
                return
        self.alerts.append({**alert, "first_epoch": alert.get("epoch")})


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------

#: Testing aid: ``LOUPE_MIRRORED_CPUS=N`` (N >= 2) splits the CPU into N logical devices and
#: trains under a MirroredStrategy over them, so the multi-device path runs without GPUs.
MIRRORED_CPUS_ENV = "LOUPE_MIRRORED_CPUS"


def _mirrored_cpus() -> int:
    try:
        n = int(os.environ.get(MIRRORED_CPUS_ENV, "0") or 0)
    except ValueError:
        raise ValueError(f"{MIRRORED_CPUS_ENV} must be an integer; received {os.environ[MIRRORED_CPUS_ENV]!r}") from None
    return n if n >= 2 else 0


def _configure_devices() -> None:
    """Before TensorFlow runs anything: the logical CPU devices :data:`MIRRORED_CPUS_ENV` asks for."""
    n = _mirrored_cpus()
    if not n:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.get_logical_device_configuration(cpu) or ()) != n:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])


def _strategy():
    """MirroredStrategy when several GPUs are visible (or :data:`MIRRORED_CPUS_ENV` asks for logical CPUs),
    else the default strategy."""
    import tensorflow as tf

    n = _mirrored_cpus()
    if n:
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def embedding_width(config: TrainConfig, num_outputs: int) -> int:
    """The embedding's units: ``config.embedding_dim``, widened to ``2 * num_outputs`` when a linear-probe head
    must fit in it (:func:`core.models.set_linear_head` carries K logits as 2K units), e.g. 200 for 100 classes."""
    if config.probe_head and config.model != "cnn":
        return max(int(config.embedding_dim), 2 * int(num_outputs))
    return int(config.embedding_dim)


def _build(config: TrainConfig, num_outputs: int, activation: str, *, weights: str | None, name: str | None = None):
    from core import models

    # a backbone without pretrained weights is useless frozen: it trains with the head
    return models.build_model(
        num_outputs, backbone=config.model, image_size=config.image_size, activation=activation,
        embedding_dim=embedding_width(config, num_outputs), augmentation=config.augmentation, dropout=config.dropout,
        alpha=config.alpha, weights=weights, train_backbone=config.model != "cnn" and weights is None,
        conv_blocks=config.conv_blocks, filters=config.filters, kernel_size=config.kernel_size,
        batch_norm=config.batch_norm, pooling=config.pooling, feature_norm=config.feature_norm, seed=config.seed,
        name=name,
    )


def _compile(model, *, task: str, lr: float) -> None:
    import keras

    from core import models

    if task == "multilabel":
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=models.masked_binary_crossentropy(),
                      metrics=[models.masked_binary_accuracy()])
    else:
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])


def _class_weight(y: np.ndarray, k: int) -> dict[int, float]:
    counts = np.bincount(y[y >= 0], minlength=k).astype(float)
    w = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 0.0)
    return {i: float(w[i]) for i in range(k)}


def _slug(name: str, i: int) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:40]
    return f"{i:02d}_{s or 'category'}"


class _Trainer:
    """One run: data, model(s), fit stages, final predictions. Used by :func:`train`."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, stop: StopRequest, log: Callable[[str], None]):
        self.config = config
        self.run_dir = Path(run_dir)
        self.stop = stop
        self.log = log
        self.alerts: list[dict] = []
        self.t_start = time.perf_counter()
        self.train_seconds = 0.0
        self.images_seen = 0
        self.weights_used = "random (CNN)" if config.model == "cnn" else (
            "imagenet" if config.weights == "imagenet" else "random (--weights none)")
        self.stage_no = 0
        self.n_stages = 1
        self._epoch_end = self.t_start  # ETA bookkeeping (see _eta)
        self._stage_t0 = self.t_start
        self._eta_stage = 0
        self._eta_key: tuple | None = None
        self._epoch_seconds: list[float] = []

    # -- status ------------------------------------------------------------------------
    def status(self, state: str, **fields: Any) -> None:
        runs.write_status(self.run_dir, state, alerts=self.alerts, **fields)

    def _eta(self, record: dict, stage_epochs: int) -> float | None:
        """Seconds left: this phase's epoch time x epochs left, each later model as long as this one.

        ``None`` during the frozen warm-up of a two-phase run: its epochs (on features, or
        with no backward pass through the backbone) say nothing about fine-tuning epochs.
        """
        now = time.perf_counter()
        if self._eta_stage != self.stage_no:
            self._eta_stage, self._stage_t0 = self.stage_no, self._epoch_end
        key = (self.stage_no, record.get("phase"))
        if key != self._eta_key:  # a phase's first epoch includes its set-up (compile, tracing)
            self._eta_key, self._epoch_seconds = key, []
        self._epoch_seconds.append(now - self._epoch_end)
        self._epoch_end = now
        if record.get("phase") == "frozen warm-up":
            return None
        steady = self._epoch_seconds[1:] or self._epoch_seconds
        left = sum(steady) / len(steady) * max(stage_epochs - record["epoch"], 0)
        later = self.n_stages - self.stage_no - 1
        return left + later * (now - self._stage_t0 + left)

    def on_epoch(self, record: dict, *, stage_epochs: int) -> None:
        done_frac = (self.stage_no + record["epoch"] / stage_epochs) / self.n_stages
        eta = self._eta(record, stage_epochs)
        msg = (f"{record['stage']} epoch {record['epoch']}/{stage_epochs}: loss {record['loss']:.4f}, "
               f"{self.config.monitor} {record[self.config.monitor]:.4f}"
               if _finite(record.get("loss")) and _finite(record.get(self.config.monitor)) else
               f"{record['stage']} epoch {record['epoch']}/{stage_epochs}")
        self.log(msg)
        self.status("running", epoch=record["epoch"], epochs=stage_epochs, stage=record["stage"],
                    stage_index=self.stage_no + 1, stages=self.n_stages, progress=round(done_frac, 4),
                    eta_s=None if eta is None else round(eta, 1), monitor=self.config.monitor,
                    best_value=record.get("best_value"), best_epoch=record.get("best_epoch"),
                    message="frozen warm-up: ETA once fine-tuning starts" if eta is None else msg)

    # -- model building with the weights fallback ----------------------------------------
    def build(self, num_outputs: int, activation: str, name: str | None = None):
        from core.models import WeightsUnavailable

        cfg = self.config
        weights = "imagenet" if (cfg.model != "cnn" and cfg.weights == "imagenet") else None
        if weights and self.weights_used.startswith("random"):
            weights = None  # an earlier stage already fell back
        width = embedding_width(cfg, num_outputs)
        if width != cfg.embedding_dim:
            self.log(f"note: embedding widened from {cfg.embedding_dim} to {width} units so the linear-probe head "
                     f"fits its {num_outputs} outputs")
        try:
            return _build(cfg, num_outputs, activation, weights=weights, name=name)
        except WeightsUnavailable as exc:
            self.weights_used = f"random (ImageNet weights unavailable: {exc.reason})"
            alert = {"kind": "weights", "epoch": 0, "stage": name,
                     "message": f"WARNING: {exc} Training {cfg.model} from random initialisation instead.",
                     "suggestion": "Expect much lower accuracy than with pretrained weights; provide the weights "
                                   "file or use the small CNN."}
            self.alerts.append(alert)
            self.log(alert["message"])
            self.status("running", message=alert["message"])
            runs.write_config(self.run_dir, {**runs.read_config(self.run_dir), "weights_used": self.weights_used})
            return _build(cfg, num_outputs, activation, weights=None, name=name)

    # -- one model, possibly in two phases (frozen warm-up, then fine-tuning) ---------------
    def fit_model(self, *, stage: str, images, train_idx, val_idx, y, val_y, metric_task: str, names, activation,
                  checkpoint: Path, strategy, class_weight=None):
        import keras

        from core import models

        cfg = self.config
        with strategy.scope():
            model = self.build(len(names), activation, name=None)
            _compile(model, task=metric_task, lr=cfg.lr)
        self.stop.model = model
        train_ds = make_dataset(images, train_idx, y, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed)
        val_ds = make_dataset(images, val_idx, None, batch_size=max(cfg.batch_size, 64))
        ctx = _FitContext(
            run_dir=self.run_dir, stage=stage, stop=self.stop, val_ds=val_ds, val_y=val_y, metric_task=metric_task,
            names=tuple(names), monitor=cfg.monitor, epochs=cfg.epochs, batch_size=cfg.batch_size,
            n_train=len(train_idx), save_checkpoint=lambda m: models.save_model(m, checkpoint),
            on_epoch=lambda rec: self.on_epoch(rec, stage_epochs=cfg.epochs), alerts=self.alerts,
        )
        BatchLogger, RunRecorder = _CALLBACKS()
        recorder = RunRecorder(ctx)
        mode = "min" if cfg.monitor == "val_loss" else "max"

        def callbacks():
            cbs = [recorder, BatchLogger(recorder, cfg.log_every)]
            if cfg.patience:
                cbs.append(keras.callbacks.EarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.patience))
            if cfg.reduce_lr_patience:
                cbs.append(keras.callbacks.ReduceLROnPlateau(
                    monitor=cfg.monitor, mode=mode, factor=cfg.reduce_lr_factor, patience=cfg.reduce_lr_patience,
                    min_lr=1e-7, verbose=0))
            return cbs

        pretrained = cfg.model != "cnn" and not self.weights_used.startswith("random")
        self._warmup_name = "frozen warm-up"  # "linear probe" once _fit_probe_head writes one
        phases = [(0, cfg.epochs)]
        if cfg.fine_tune_layers and pretrained:
            phases = [(0, max(1, cfg.warmup_epochs)), (max(1, cfg.warmup_epochs), cfg.epochs)]
        for i, (start, end) in enumerate(phases):
            if self.stop.requested:
                break
            if len(phases) > 1:
                recorder.ctx = dataclasses.replace(recorder.ctx, phase="fine-tuning" if i else "frozen warm-up")
                ctx = recorder.ctx
            if i == 0 and pretrained and cfg.feature_warmup and self._features_fit(model, len(train_idx) + len(val_idx)):
                # the backbone is frozen in this phase: its features never change, so compute them
                # once and fit the head on them: as a linear probe (exact, one fit) or by epochs of Adam
                why_not = self._probe_unsupported(model, activation, len(names), y, train_idx) \
                    if cfg.probe_head else "off"
                if why_not is None:
                    self._fit_probe_head(model, recorder, ctx, images=images, train_idx=train_idx, val_idx=val_idx,
                                         y=y, start=start, metric_task=metric_task, strategy=strategy,
                                         class_weight=class_weight)
                    continue
                if cfg.probe_head:
                    self.log(f"{stage}: note: the head trains by epochs on the features instead of a linear "
                             f"probe ({why_not})")
                self._fit_head_on_features(model, recorder, ctx, images=images, train_idx=train_idx,
                                           val_idx=val_idx, y=y, start=start, end=end, metric_task=metric_task,
                                           strategy=strategy, callbacks=callbacks(), class_weight=class_weight)
                continue
            if i == 1:
                if recorder.best_weights is not None:
                    model.set_weights(recorder.best_weights)
                with strategy.scope():
                    n = models.unfreeze_top(model, min(cfg.fine_tune_layers, len(models.backbone_of(model).layers)))
                    _compile(model, task=metric_task, lr=cfg.lr * cfg.fine_tune_lr_factor)
                self.log(f"{stage}: fine-tuning the top {cfg.fine_tune_layers} backbone layers ({n} with weights) "
                         f"at lr {cfg.lr * cfg.fine_tune_lr_factor:g}")
                self.stop.model = model
            cbs = callbacks()
            average = None
            if i == 1 and cfg.average_weights:
                average = _weight_average(first=start + (end - start) // 3)
                cbs.append(average)
            model.fit(train_ds, epochs=end, initial_epoch=start, callbacks=cbs, verbose=0, shuffle=False,
                      class_weight=class_weight)
            if i == 1:
                self._choose_final(model, recorder, average, checkpoint=checkpoint)
        self.train_seconds += recorder.train_seconds
        self.images_seen += recorder.images_seen
        if recorder.best_weights is not None:
            model.set_weights(recorder.best_weights)
        return model, recorder

    @staticmethod
    def _probe_unsupported(model, activation: str, k: int, y, train_idx) -> str | None:
        """Why a linear-probe head cannot be written into ``model`` (None: it can)."""
        from core import models

        if activation == "softmax" and len(np.unique(np.asarray(y)[train_idx])) < 2:
            return "the training split holds fewer than 2 classes"
        width = int(model.get_layer(models.EMBEDDING_LAYER).units)
        if width < 2 * k:
            return f"the embedding ({width} units) is narrower than twice the {k} classes"
        return None

    def _frozen_features(self, model, ctx, *, images, train_idx, val_idx, metric_task: str, strategy,
                         what: str):
        """The frozen backbone's features of the train and val rows, computed once, and the compiled head
        that reads them: ``(head, f_train, f_val)``, or None when a stop was requested meanwhile."""
        from core import models

        cfg = self.config
        self.status("running", message="computing the frozen backbone's features once for the warm-up",
                    stage=ctx.stage)
        self.log(f"{ctx.stage}: frozen warm-up {what} backbone features computed once "
                 f"({len(train_idx)} train + {len(val_idx)} val images)")
        with strategy.scope():
            features, head = models.split_at_backbone(model)
            _compile(head, task=metric_task, lr=cfg.lr)
        batch = max(cfg.batch_size, 64)
        f_train = features.predict(make_dataset(images, train_idx, None, batch_size=batch), verbose=0)
        if self.stop.requested:
            return None
        f_val = features.predict(make_dataset(images, val_idx, None, batch_size=batch), verbose=0)
        return head, f_train, f_val

    def _fit_probe_head(self, model, recorder, ctx, *, images, train_idx, val_idx, y, start: int, metric_task: str,
                        strategy, class_weight) -> None:
        """The frozen warm-up as a linear probe: logistic regression on standardized backbone features
        (multi-label: one per label, on the rows where it is known; the head's sigmoids carry them).

        C is picked from :data:`PROBE_CS` by the run's monitor on out-of-fold predictions of
        a :data:`PROBE_FOLDS`-fold cross-validation of the training split (on val only when a
        split is too small to fold), so the probe's val score is as unbiased as any later
        epoch's; the winner is written exactly into the model's head
        (:func:`core.models.set_linear_head`) and recorded as one warm-up epoch (metrics,
        checkpoint of the whole model).
        """
        from core import models

        cfg = self.config
        k = len(ctx.names)
        t0 = time.perf_counter()
        got = self._frozen_features(model, ctx, images=images, train_idx=train_idx, val_idx=val_idx,
                                    metric_task=metric_task, strategy=strategy, what="= a linear probe on")
        if got is None:
            return
        head, f_train, f_val = got
        multilabel = metric_task == "multilabel"
        y_train = np.asarray(y, np.float64)[train_idx] if multilabel else np.asarray(y)[train_idx].astype(np.int64)
        try:
            eps = float(model.get_layer("features_norm").epsilon)
        except ValueError:
            eps = 0.0
        mean = f_train.mean(axis=0, dtype=np.float64)
        scale = np.sqrt(f_train.var(axis=0, dtype=np.float64) + max(eps, 1e-6))
        x_train, x_val = (f_train - mean) / scale, (f_val - mean) / scale
        key = cfg.monitor[len("val_"):]
        if multilabel:  # independent sigmoids: one regression per label, on the rows where it is known
            from sklearn.model_selection import KFold

            folds = list(KFold(PROBE_FOLDS, shuffle=True, random_state=cfg.seed).split(x_train)) \
                if len(x_train) >= 2 * PROBE_FOLDS else []
            fit = (lambda xs, ys, c: _multilabel_coefs(xs, ys, c))
            link = _sigmoid
        else:
            folds = _probe_folds(y_train, seed=cfg.seed)
            fit = (lambda xs, ys, c: _probe_coefs(_fit_logistic(xs, ys, c, class_weight), k))
            link = _softmax

        def score(c: float) -> float:
            """The monitor for C: out of fold on the training split, or on val when it cannot be folded."""
            if not folds:  # too few images per class to hold any out: picked on val, as before
                w, b = fit(x_train, y_train, c)
                return evaluate_predictions(metric_task, ctx.val_y, link(x_val @ w.T + b))[key]
            oof = np.zeros((len(y_train), k))  # val stays unseen until the final choice
            for fit_rows, held in folds:
                w, b = fit(x_train[fit_rows], y_train[fit_rows], c)
                oof[held] = link(x_train[held] @ w.T + b)
            return evaluate_predictions(metric_task, y_train, oof)[key]

        _value, c = None, None
        for candidate in PROBE_CS:  # ties keep the smaller C
            value = score(candidate)
            if _value is None or (value < _value if key == "loss" else value > _value):
                _value, c = value, candidate
        coef, intercept = fit(x_train, y_train, c)
        how = (f"{len(folds)}-fold cross-validation on the train split ({key} {_value:.4f} out of fold)" if folds
               else f"val ({cfg.monitor} {_value:.4f}; too few train images per class to cross-validate)")
        models.set_linear_head(model, coef, intercept, mean, scale)
        self.log(f"{ctx.stage}: linear probe C={c:g} picked by {how}")
        self._warmup_name = "linear probe"
        fit_s = time.perf_counter() - t0
        train_probs = head.predict(f_train, verbose=0, batch_size=1024)
        train_eval = evaluate_predictions(metric_task, y_train, train_probs)
        with _recording_on_features(recorder, ctx, model, head, f_val, n_images=len(train_idx) + len(val_idx),
                                    seconds=fit_s):
            recorder.set_model(head)
            recorder.on_epoch_begin(start)
            recorder._t0 -= fit_s  # the epoch's time is the feature pass and the probe's fits
            recorder.on_epoch_end(start, {"loss": train_eval["loss"], "accuracy": train_eval["accuracy"]})

    def _average_candidate(self, model, recorder, average) -> tuple[dict, list] | None:
        """The averaged fine-tuning weights and their val record, or None (stopped, < 2 epochs, non-finite)."""
        ctx = recorder.ctx
        if average is None or self.stop.requested:
            return None
        if average.count < 2:
            self.log(f"{ctx.stage}: weight averaging skipped ({average.count} fine-tuning epoch to average)")
            return None
        weights = average.weights()
        if not all(np.all(np.isfinite(w)) for w in weights if np.issubdtype(w.dtype, np.floating)):
            self.log(f"{ctx.stage}: weight averaging skipped (non-finite weights)")
            return None
        kept = model.get_weights()
        model.set_weights(weights)
        val = evaluate_predictions(ctx.metric_task, ctx.val_y, model.predict(ctx.val_ds, verbose=0))
        model.set_weights(kept)
        first, last = average.epochs[0], average.epochs[-1]
        return ({"kind": "average", "stage": ctx.stage, "epoch": last, "epochs_averaged": [first, last],
                 "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                 "time": time.time()}, weights)

    def _choose_final(self, model, recorder, average, *, checkpoint: Path) -> None:
        """After fine-tuning: the final model is whichever of the warm-up (linear probe), the best
        fine-tuning epoch and the weight average scores best on val by the monitor (ties keep the
        earlier), so it is never worse on val than its warm-up; a ``kind == "selection"`` line in
        metrics.jsonl records the candidates, the choice and why."""
        from core import models

        ctx = recorder.ctx
        monitor = ctx.monitor
        lower = monitor == "val_loss"
        mine = [r for r in recorder.history if r.get("stage") == ctx.stage and _finite(r.get(monitor))]

        def best_of(phase: str) -> dict | None:
            rows = [r for r in mine if r.get("phase") == phase]
            return (min if lower else max)(rows, key=lambda r: r[monitor]) if rows else None  # first of ties

        warm, tuned = best_of("frozen warm-up"), best_of("fine-tuning")
        warm_name = self._warmup_name
        candidates = []
        if warm is not None:
            candidates.append({"name": warm_name, "epoch": warm["epoch"], "value": float(warm[monitor])})
        if tuned is not None:
            candidates.append({"name": "best fine-tuning epoch", "epoch": tuned["epoch"],
                               "value": float(tuned[monitor])})
        avg = self._average_candidate(model, recorder, average)
        if avg is not None:
            record, weights = avg
            recorder.append(record)
            if _finite(record[monitor]):
                candidates.append({"name": "weight average", "epoch": record["epoch"],
                                   "epochs_averaged": record["epochs_averaged"], "value": float(record[monitor])})
        if not candidates:
            return
        chosen = candidates[0]
        for cand in candidates[1:]:
            if cand["value"] < chosen["value"] if lower else cand["value"] > chosen["value"]:
                chosen = cand
        others = ", ".join(f"{c['name']} {c['value']:.4f}" for c in candidates if c is not chosen)
        reason = (f"{chosen['name']} has the best {monitor} ({chosen['value']:.4f})"
                  + (f"; {others}" if others else ""))
        if chosen["name"] == "weight average":
            model.set_weights(weights)
            models.save_model(model, checkpoint)
            recorder.best_weights = model.get_weights()
        elif recorder.best_weights is not None:
            # the recorder checkpointed the best epoch over both phases: the warm-up's or a fine-tuning one
            model.set_weights(recorder.best_weights)
        recorder.best_value, recorder.best_epoch = chosen["value"], chosen["epoch"]
        recorder.append({"kind": "selection", "stage": ctx.stage, "monitor": monitor, "chosen": chosen["name"],
                         "epoch": chosen["epoch"], "epochs_averaged": chosen.get("epochs_averaged"),
                         "candidates": candidates, "reason": reason, "time": time.time()})
        self.log(f"{ctx.stage}: final model = {chosen['name']}"
                 + (f" of epochs {chosen['epochs_averaged'][0]}-{chosen['epochs_averaged'][1]}"
                    if chosen.get("epochs_averaged") else f" (epoch {chosen['epoch']})") + f", chosen on val: {reason}")

    def _features_fit(self, model, n: int) -> bool:
        """Whether ``n`` images' backbone features fit in :data:`FEATURE_WARMUP_LIMIT_BYTES` of RAM."""
        from core import models

        dim = int(np.prod(models.backbone_of(model).output.shape[1:]))
        need = n * dim * 4
        if need <= FEATURE_WARMUP_LIMIT_BYTES:
            return True
        self.log(f"note: the frozen warm-up runs on images: {n} images' features would take {need / 2**30:.1f} GiB "
                 f"(limit {FEATURE_WARMUP_LIMIT_BYTES / 2**30:.0f} GiB)")
        return False

    def _fit_head_on_features(self, model, recorder, ctx, *, images, train_idx, val_idx, y, start: int, end: int,
                              metric_task: str, strategy, callbacks, class_weight) -> None:
        """Epochs ``start..end`` of a frozen backbone: the head trained on features computed once.

        The recorder sees head epochs like any other (metrics, alerts, checkpoints of the
        whole model); afterwards ``model`` holds the best head and ``recorder.best_weights``
        are whole-model weights again. Throughput counts the feature pass (images through
        the backbone), not the head steps.
        """
        import tensorflow as tf

        cfg = self.config
        t0 = time.perf_counter()
        got = self._frozen_features(model, ctx, images=images, train_idx=train_idx, val_idx=val_idx,
                                    metric_task=metric_task, strategy=strategy, what="on")
        if got is None:
            return
        head, f_train, f_val = got
        extract_s = time.perf_counter() - t0
        y_train = np.asarray(y)[train_idx]
        y_train = y_train.astype(np.float32) if y_train.dtype.kind == "f" else y_train.astype(np.int64)
        train_ds = (tf.data.Dataset.from_tensor_slices((f_train, y_train))
                    .shuffle(max(1, len(train_idx)), seed=cfg.seed, reshuffle_each_iteration=True)
                    .batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE))
        self.stop.model = head
        try:
            with _recording_on_features(recorder, ctx, model, head, f_val,
                                        n_images=len(train_idx) + len(val_idx), seconds=extract_s):
                head.fit(train_ds, epochs=end, initial_epoch=start, callbacks=callbacks, verbose=0, shuffle=False,
                         class_weight=class_weight)
        finally:
            self.stop.model = model

    # -- the run -------------------------------------------------------------------------
    def run(self, samples: pd.DataFrame, schema, *, workspace, labels_override=None) -> TrainResult:
        import keras

        from core.images import ImageCache

        cfg = self.config
        _configure_devices()
        keras.utils.set_random_seed(cfg.seed)
        samples = apply_label_overrides(samples, labels_override)
        targets = build_targets(samples, schema, task=cfg.task, label_columns=cfg.label_columns,
                                exclude_classes=cfg.exclude_classes, positive_class=cfg.positive_class)
        for w in targets.warnings:
            self.log(f"warning: {w}")
        self.status("running", message=f"decoding images at {cfg.image_size}px", epoch=0, epochs=cfg.epochs)
        self.log(f"preparing {len(targets.samples)} images at {cfg.image_size}px")
        cache = ImageCache(workspace.cache_dir / "images")
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if self.stop.requested:
                raise _Stopped("stopped while decoding images")
            if time.monotonic() - last[0] > 1.0 or done == total:
                last[0] = time.monotonic()
                self.status("running", message=f"decoding images at {cfg.image_size}px: {done}/{total}",
                            progress=0.0)

        arrays = cache.arrays(targets.samples, cfg.image_size, progress=progress)
        images = arrays.images
        ok = np.asarray(arrays.ok, dtype=bool)
        split = targets.samples["split"].astype(str).to_numpy()
        n_bad = int((~ok).sum())
        if n_bad:
            first = next(iter(arrays.errors.values()), "")
            self.log(f"warning: {n_bad} image(s) could not be decoded and are left out, e.g. {first}")
        idx = {s: np.flatnonzero((split == s) & ok) for s in ("train", "val", "test")}
        task = targets.task
        y = targets.y
        if task == "multilabel" and cfg.imputation != "mask":
            tr = idx["train"]
            y = y.copy()
            y[tr] = impute_labels(y[tr], method=cfg.imputation, seed=cfg.seed)
        # training rows need a known target (single-label); val rows too, for the monitor
        if task != "multilabel":
            idx["train"] = idx["train"][y[idx["train"]] >= 0]
            idx["val"] = idx["val"][y[idx["val"]] >= 0]
        val_source = "the dataset's val split"
        if len(idx["val"]) == 0 and len(idx["train"]) >= 10:
            # e.g. a dataset given as train/ and test/ folders: hold out part of train, always the same part
            idx["train"], idx["val"] = carve_validation(idx["train"], y if task != "multilabel" else None)
            val_source = (f"carved from train ({VAL_FRACTION:.0%}, stratified, seed 0): the dataset has no val "
                          "split")
            self.log(f"note: validation set {val_source}")
        for s in ("train", "val"):
            if len(idx[s]) == 0:
                raise ValueError(f"the {s} split has no usable samples (after dropping undecodable images and "
                                 f"unknown labels); check the dataset's split")
        counts = {f"n_{s}": int(len(idx[s])) for s in idx}
        counts["val_source"] = val_source
        counts.update({"n_undecodable": n_bad, **{f"dropped {k}": v for k, v in targets.dropped.items()}})
        class_weight = None
        if cfg.class_weights:
            if task == "multilabel":
                raise ValueError("class_weights applies to single-label tasks; multi-label uses the masked loss")
            class_weight = _class_weight(y[idx["train"]], len(targets.names))

        runs.write_labels(self.run_dir, targets.labels)
        atomic_write_json(self.run_dir / runs.PREPROCESSING, {
            "image_size": cfg.image_size, "channels": "RGB", "dtype": "float32", "input_range": [0, 255],
            "resize": "stretch to a square (antialiased bicubic), crop box applied first; EXIF orientation applied",
            "preprocessing_in_model": True, "model": cfg.model,
            "model_preprocess": "rescale 1/255" if cfg.model == "cnn" else
            ("built into the backbone" if cfg.model == "efficientnet_b0" else "scale to [-1, 1]"),
        })
        runs.write_config(self.run_dir, {**runs.read_config(self.run_dir), **cfg.to_dict(),
                                         "weights_used": self.weights_used, "counts": counts,
                                         "outputs": list(targets.names), "task_resolved": task,
                                         "keras_version": keras.__version__, "python": sys.version.split()[0]})

        if self.stop.requested:
            raise _Stopped("stopped before training started")
        strategy = _strategy()
        if strategy.num_replicas_in_sync > 1:
            self.log(f"distribution: {type(strategy).__name__} over {strategy.num_replicas_in_sync} devices "
                     f"({', '.join(strategy.extended.worker_devices)}); batch {cfg.batch_size} split across them")
        stages_done = []
        if task == "hierarchical" and cfg.hierarchy_mode == "separate":
            model, stages_done = self._run_separate(targets, images, idx, strategy)
        else:
            metric_task = "multilabel" if task == "multilabel" else "multiclass"
            activation = "sigmoid" if task == "multilabel" else "softmax"
            model, rec = self.fit_model(stage="main", images=images, train_idx=idx["train"], val_idx=idx["val"], y=y,
                                        val_y=targets.y[idx["val"]], metric_task=metric_task, names=targets.names,
                                        activation=activation, checkpoint=runs.RunDir(self.run_dir).model,
                                        strategy=strategy, class_weight=class_weight)
            stages_done = [rec]
            if rec.best_epoch is None:
                raise RuntimeError("no epoch finished with a finite loss, so there is no checkpoint"
                                   + (f" ({self.stop.reason})" if self.stop.reason else ""))

        # final predictions with the best weights (val + test)
        self.status("running", message="predicting val and test with the best checkpoint")
        frames, metrics = [], {}
        for s in ("val", "test"):
            if len(idx[s]) == 0:
                metrics[s] = {}
                continue
            probs = model.predict(make_dataset(images, idx[s], None, batch_size=max(cfg.batch_size, 64)), verbose=0)
            frames.append(self._prediction_frame(targets, idx[s], probs, s))
            metrics[s] = self._final_metrics(targets, idx[s], probs)
        if frames:
            runs.write_predictions(self.run_dir, pd.concat(frames, ignore_index=True))
        main = stages_done[0]
        seconds = time.perf_counter() - self.t_start
        state = "stopped" if self.stop.requested or self.stop.reason else "done"
        return TrainResult(
            run_dir=str(self.run_dir), state=state, best_epoch=main.best_epoch, monitor=cfg.monitor,
            best_value=main.best_value, val=metrics.get("val", {}), test=metrics.get("test", {}), seconds=seconds,
            images_per_second=self.images_seen / max(self.train_seconds, 1e-9), weights_used=self.weights_used,
            alerts=tuple(self.alerts), counts=counts,
        )

    def _run_separate(self, targets: Targets, images, idx, strategy):
        """A primary model over the first level + one model per primary category over its leaves."""
        from core import models

        cfg = self.config
        labels = targets.labels
        levels = targets.levels
        top = levels[0]
        anc = leaf_ancestors(labels)[top]
        top_names = targets.level_names[top]
        leaf_names = targets.names
        y_top = targets.level_y[top]
        # the level-1 target of a row follows its leaf's path (consistent with the parents map)
        y_top_path = np.where(targets.y >= 0, anc[np.maximum(targets.y, 0)], y_top)
        groups = {c: np.flatnonzero(anc == i) for i, c in enumerate(top_names)}
        trainable = [c for c in top_names if len(groups[c]) > 1]
        self.n_stages = 1 + len(trainable)
        sub_dir = self.run_dir / SUBMODELS_DIR
        files = {"primary": f"{SUBMODELS_DIR}/primary.keras"}
        primary, rec = self.fit_model(
            stage="primary", images=images, train_idx=idx["train"], val_idx=idx["val"], y=y_top_path,
            val_y=y_top_path[idx["val"]], metric_task="multiclass", names=top_names, activation="softmax",
            checkpoint=sub_dir / "primary.keras", strategy=strategy,
            class_weight=_class_weight(y_top_path[idx["train"]], len(top_names)) if cfg.class_weights else None)
        if rec.best_epoch is None:
            raise RuntimeError("the primary model finished no epoch with a finite loss")
        records = [rec]
        subs: dict[str, Any] = {}
        for c in trainable:
            if self.stop.requested:
                break
            self.stage_no += 1
            leaves = groups[c]
            local = {int(g): j for j, g in enumerate(leaves)}
            y_local = np.array([local.get(int(v), -1) for v in targets.y], dtype=np.int64)
            tr = idx["train"][y_local[idx["train"]] >= 0]
            va = idx["val"][y_local[idx["val"]] >= 0]
            slug = _slug(c, len(subs))
            if len(tr) == 0:
                continue
            if len(va) == 0:
                va = tr  # no val sample of this category: monitor on train (recorded as a warning)
                self.log(f"warning: category {c!r} has no val samples; its model is monitored on train")
            m, r = self.fit_model(
                stage=f"sub:{c}", images=images, train_idx=tr, val_idx=va, y=y_local, val_y=y_local[va],
                metric_task="multiclass", names=[leaf_names[g] for g in leaves], activation="softmax",
                checkpoint=sub_dir / f"{slug}.keras", strategy=strategy,
                class_weight=_class_weight(y_local[tr], len(leaves)) if cfg.class_weights else None)
            subs[c] = m
            files[c] = f"{SUBMODELS_DIR}/{slug}.keras"
            records.append(r)
        combined = combine_hierarchy(primary, subs, labels)
        models.save_model(combined, runs.RunDir(self.run_dir).model)
        cfg_now = runs.read_config(self.run_dir)
        runs.write_config(self.run_dir, {**cfg_now, "hierarchy": {
            "mode": "separate", "primary_level": top, "models": files,
            "note": "model.keras combines them: P(leaf) = P(category) * P(leaf | category)"}})
        return combined, records

    def _prediction_frame(self, targets: Targets, rows: np.ndarray, probs: np.ndarray, split: str) -> pd.DataFrame:
        s = targets.samples.iloc[rows]
        common = dict(sample_ids=s["sample_id"].to_numpy(), paths=s["path"].to_numpy(), splits=split)
        if targets.task == "multilabel":
            return runs.predictions_frame(targets.labels, y_true=targets.y[rows], probs=probs, **common)
        if targets.task == "hierarchical":
            lp = hierarchy_probabilities(probs, targets.labels)
            path = hierarchy_path(probs, targets.labels)
            yt = {lv: targets.level_y[lv][rows] for lv in targets.levels}
            return runs.predictions_frame(targets.labels, y_true=yt, probs=lp, y_pred=path, **common)
        return runs.predictions_frame(targets.labels, y_true=targets.y[rows], probs=probs, **common)

    def _final_metrics(self, targets: Targets, rows: np.ndarray, probs: np.ndarray) -> dict[str, Any]:
        if targets.task == "multilabel":
            return evaluate_predictions("multilabel", targets.y[rows], probs)
        out = evaluate_predictions("multiclass", targets.y[rows], probs)
        if targets.task == "hierarchical":
            from sklearn.metrics import f1_score

            lp = hierarchy_probabilities(probs, targets.labels)
            path = hierarchy_path(probs, targets.labels)
            for lv in targets.levels:
                yt = targets.level_y[lv][rows]
                ok = yt >= 0
                if ok.any():
                    out[f"{lv}_accuracy"] = float((path[lv][ok] == yt[ok]).mean())
                    out[f"{lv}_macro_f1"] = float(f1_score(yt[ok], path[lv][ok], labels=np.arange(lp[lv].shape[1]),
                                                           average="macro", zero_division=0))
        return out


_CALLBACK_CLASSES: tuple | None = None


def _CALLBACKS():
    global _CALLBACK_CLASSES
    if _CALLBACK_CLASSES is None:
        _CALLBACK_CLASSES = _make_callbacks_module()
    return _CALLBACK_CLASSES


def combine_hierarchy(primary, subs: Mapping[str, Any], labels: Mapping[str, Any]):
    """One model from a "separate" hierarchy: ``P(leaf) = P(category) * P(leaf | category)``.

    Parameters
    ----------
    primary : keras.Model
        Softmax over the first level's classes (``labels["level_classes"][levels[0]]`` order).
    subs : dict
        ``{category: keras.Model}`` softmax over that category's leaves (in leaf-class
        order); a category with a single leaf needs no model.
    labels : dict
        The hierarchical labels.json.

    Returns
    -------
    keras.Model
        Input raw pixels, output ``"predictions"`` (N, K_leaf) in leaf-class order, and a
        top-level ``"embedding"`` layer (the primary model's embedding). Only standard
        layers (fixed Dense maps, Multiply, Concatenate): loads with ``safe_mode=True``.
    """
    import keras

    levels = labels["levels"]
    top_names = labels["level_classes"][levels[0]]
    leaf_names = labels["level_classes"][levels[-1]]
    anc = leaf_ancestors(labels)[levels[0]]
    inputs = keras.Input(shape=primary.input_shape[1:], dtype="float32", name="image")
    twin = keras.Model(primary.inputs, [primary.output, primary.get_layer("embedding").output], name="primary")
    p_top, emb = twin(inputs)
    emb = keras.layers.Identity(name="embedding")(emb)
    parts, order = [], []
    for i, c in enumerate(top_names):
        leaves = np.flatnonzero(anc == i)
        if len(leaves) == 0:
            continue
        if c in subs:
            sub = subs[c]
            sub_named = keras.Model(sub.inputs, sub.output, name=f"sub_{i:02d}")
            parts.append(sub_named(inputs))
        else:
            if len(leaves) > 1:
                raise ValueError(f"category {c!r} has {len(leaves)} leaves but no sub-model")
            ones = keras.layers.Dense(1, use_bias=True, kernel_initializer="zeros", bias_initializer="ones",
                                      trainable=False, name=f"one_{i:02d}")
            parts.append(ones(p_top))
        order.extend(leaves.tolist())
    q = keras.layers.Concatenate(name="conditional")(parts) if len(parts) > 1 else parts[0]
    n_leaf = len(leaf_names)
    expand = np.zeros((len(top_names), n_leaf), dtype="float32")
    for j, leaf_i in enumerate(order):
        expand[anc[leaf_i], j] = 1.0
    p_exp = keras.layers.Dense(n_leaf, use_bias=False, trainable=False, name="category_prob")
    joint = keras.layers.Multiply(name="joint")([p_exp(p_top), q])
    perm = np.zeros((n_leaf, n_leaf), dtype="float32")
    for j, leaf_i in enumerate(order):
        perm[j, leaf_i] = 1.0
    reorder = keras.layers.Dense(n_leaf, use_bias=False, trainable=False, name="leaf_probs")
    # The embedding must lie on a path to the output to be part of the saved graph (and
    # reachable by name): a fixed all-zero map from it is added to the probabilities.
    tap = keras.layers.Dense(n_leaf, use_bias=False, kernel_initializer="zeros", trainable=False,
                             name="embedding_tap")(emb)
    out = keras.layers.Add(name="predictions")([reorder(joint), tap])
    model = keras.Model(inputs, out, name="loupe_hierarchy_separate")
    p_exp.set_weights([expand])
    reorder.set_weights([perm])
    return model


# ---------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------

def train(config: TrainConfig, *, out: str | os.PathLike, samples: pd.DataFrame, schema, workspace,
          labels_override: pd.DataFrame | None = None, stop: StopRequest | None = None,
          handle_signals: bool = False, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train one run and write its run directory (the worker's whole job).

    Parameters
    ----------
    config : TrainConfig
    out : path
        The run directory (created). ``config.json`` there is kept and extended.
    samples : DataFrame
        The dataset's samples table (with ``split``), e.g. ``load_dataset(...).samples``.
    schema : LabelSchema
    workspace : core.workspace.Workspace
        Where the image cache lives.
    labels_override : DataFrame, optional
        Effective-label patch (see :func:`apply_label_overrides`).
    stop : StopRequest, optional
        Set it (from another thread or a signal handler) to stop after the current batch.
    handle_signals : bool
        Install SIGTERM/SIGINT handlers that request a graceful stop (main thread only).
    log : callable(str), optional
        Progress lines (the CLI prints them to stderr).

    Returns
    -------
    TrainResult
        Also written as the final ``status.json`` (state ``done`` or ``stopped``). On an
        error the status is ``failed`` with the message, and the exception propagates.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; received {type(config).__name__}")
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or StopRequest()
    log = log or (lambda msg: None)
    previous = {}
    if handle_signals and threading.current_thread() is threading.main_thread():
        def handler(signum, frame):
            stop.request("stopped by the user" if signum == signal.SIGTERM else "interrupted (Ctrl-C)")
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
    trainer = _Trainer(config, run_dir, stop=stop, log=log)
    if not runs.read_config(run_dir):
        runs.write_config(run_dir, config.to_dict())
    trainer.status("running", pid=os.getpid(), message="starting", started_at=time.time())
    try:
        result = trainer.run(samples, schema, workspace=workspace, labels_override=labels_override)
    except _Stopped as exc:
        runs.write_status(run_dir, "stopped", alerts=trainer.alerts, message=str(exc), stop_reason=stop.reason,
                          finished_at=time.time())
        return TrainResult(run_dir=str(run_dir), state="stopped", best_epoch=None, monitor=config.monitor,
                           best_value=None, val={}, test={}, seconds=time.perf_counter() - trainer.t_start,
                           images_per_second=0.0, weights_used=trainer.weights_used, alerts=tuple(trainer.alerts))
    except BaseException as exc:
        msg = f"{type(exc).__name__}: {exc}"
        state = "stopped" if stop.requested and not isinstance(exc, ValueError) else "failed"
        runs.write_status(run_dir, state, alerts=trainer.alerts, message=msg,
                          error=traceback.format_exc(limit=5)[-4000:], finished_at=time.time())
        raise
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
    reason = stop.reason or ""
    message = (f"stopped ({reason}); best checkpoint kept (epoch {result.best_epoch})" if result.state == "stopped"
               else f"done: best {result.monitor} {result.best_value:.4f} at epoch {result.best_epoch}"
               if result.best_value is not None else "done")
    runs.write_status(run_dir, result.state, alerts=trainer.alerts, message=message, stop_reason=reason or None,
                      best_epoch=result.best_epoch, best_value=result.best_value, monitor=result.monitor,
                      val=result.val, test=result.test, seconds=round(result.seconds, 3),
                      images_per_second=round(result.images_per_second, 2), weights_used=result.weights_used,
                      progress=1.0, eta_s=0, finished_at=time.time())
    return result
