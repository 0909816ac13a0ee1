"""What defines a training run: :class:`TrainConfig` (saved as the run's ``config.json``) and the
recommended recipe per model family (:data:`RECIPES`, :func:`recommended_config`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from core.targets import IMPUTATIONS, TASKS

#: Checkpoint / model-selection metrics; ``val_map`` (mean average precision, threshold-free) is for
#: multi-label tasks only, and their recipe's default (:func:`monitors_for`).
MONITORS = ("val_macro_f1", "val_loss", "val_accuracy", "val_map")
HIERARCHY_MODES = ("flat", "separate")
WEIGHTS = ("imagenet", "none")


def monitors_for(task: str | None) -> tuple[str, ...]:
    """The monitors a task can use, its default first: multi-label runs select on ``val_map`` (what they are
    judged by), single-label runs on ``val_macro_f1``; ``None`` (the task comes from the dataset): all of them."""
    single = tuple(m for m in MONITORS if m != "val_map")
    if task is None:
        return MONITORS
    return ("val_map", *single) if task == "multilabel" else single


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
    multi-label entries (see :func:`core.targets.impute_labels`); ``label_patch_version`` records
    which review decisions (effective labels) the run used and ``labels_override_path``
    the patch file (CSV/Parquet, see :func:`core.targets.apply_label_overrides`) the worker applies.

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
    then one epoch), ``average_weights`` (fine-tuning: the weights of the fine-tuning epochs
    after the first third are averaged, a stochastic weight average, and that average is a
    final-model candidate beside the probe and the best epoch; see
    :func:`core.training.trainer.pick_final`), ``flip_average`` (the model's probabilities for an
    image are the mean of its own and its left-right mirror's, in every val score, the final model's
    choice, predictions.csv and every later prediction; ``None``: on when the model trained on
    mirrored images, i.e. with augmentation, see :meth:`flips_averaged`), ``log_every`` (live loss
    line every N batches).
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
    flip_average: bool | None = None
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
        if self.monitor not in monitors_for(self.task):
            raise ValueError(f"monitor='val_map' (mean average precision) needs a multi-label task; received "
                             f"task={self.task!r}: use val_macro_f1, val_accuracy or val_loss")
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
        for name in ("augmentation", "flip_average"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"{name} must be true, false or unset; received {name}={getattr(self, name)!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1); received dropout={self.dropout!r}")
        if self.fine_tune_layers and self.model == "cnn":
            raise ValueError("fine_tune_layers applies to transfer backbones; the CNN trains all its layers "
                             f"(received model='cnn', fine_tune_layers={self.fine_tune_layers})")
        if self.fine_tune_layers and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be < epochs to leave epochs for fine-tuning; received "
                             f"warmup_epochs={self.warmup_epochs}, epochs={self.epochs}")

    def flips_averaged(self) -> bool:
        """Whether the run averages each image's prediction with its mirror's: ``flip_average`` when set,
        else whether training mirrors images (``augmentation``, on by default for transfer backbones).

        Measured with ``bench/bench_tta.py`` (the default recipe, 3 seeds each): test accuracy
        +1.0 point on flowers12 and +0.9 on cub100 species, mAP +0.5 on miml_scene, higher in 9 of 9 runs.
        A model that never saw a mirrored image (the CNN's default) is not asked about one.
        """
        return bool(self.flip_average) if self.flip_average is not None else self.augments()

    def augments(self) -> bool:
        """Whether training mirrors, rotates and zooms images: ``augmentation``, or by default for transfer
        backbones (as :func:`core.models.build_model` resolves it)."""
        return bool(self.augmentation) if self.augmentation is not None else self.model != "cnn"

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


#: Recommended settings per model family: what the Train page and the CLI start from.
#: Transfer (measured on flowers12 in bench/bench_training.py): a linear probe on the frozen
#: backbone's features written into the head (one warm-up epoch), then the top 40 layers
#: fine-tuned at lr * 0.03 for 12 epochs at a constant learning rate, no dropout, the weights of
#: the fine-tuning epochs after the first third averaged; the final model is the probe unless a
#: fine-tuned candidate beats it significantly on val (bench/bench_quality.py: flowers12, cub100, miml_scene).
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
    whole network from the start (no warm-up / fine-tuning phases). A multi-label task selects
    its checkpoint and final model on ``val_map`` unless ``monitor`` is given.
    """
    recipe = dict(RECIPES["cnn" if model == "cnn" else "transfer"])
    if model != "cnn" and overrides.get("weights") == "none":
        recipe.update(warmup_epochs=0, fine_tune_layers=0)
    recipe.update(overrides)
    if recipe.get("monitor") is None:
        recipe["monitor"] = monitors_for(recipe.get("task"))[0]
    epochs = recipe.get("epochs", TrainConfig.epochs)
    if recipe.get("fine_tune_layers") and recipe.get("warmup_epochs", 0) >= epochs and "warmup_epochs" not in overrides:
        if epochs < 2 and "fine_tune_layers" not in overrides:
            recipe["fine_tune_layers"] = 0  # one epoch: frozen backbone only
        else:
            recipe["warmup_epochs"] = max(1, epochs // 3)  # a short run keeps the warm-up/fine-tune proportion
    return TrainConfig(model=model, **recipe)
