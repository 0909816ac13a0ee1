"""Training: the fit loop that turns a dataset and a :class:`TrainConfig` into a run directory.

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
  (``probe_head``), then fine-tuning whose later epochs' weights are averaged
  (``average_weights``); the final model is whichever of probe / best epoch / average
  scores best on val (a ``kind == "selection"`` line in ``metrics.jsonl``);
* at the end the kept weights predict the val and test splits (``predictions.csv``).

Where things live: :mod:`~core.training.config` (TrainConfig, recipes),
:mod:`~core.training.trainer` (the fit loop, :func:`train`), :mod:`~core.training.callbacks`
(Keras callbacks, stop requests), :mod:`~core.training.probe` (the linear-probe head),
:mod:`~core.training.health` (alerts), :mod:`~core.training.data` (tf.data),
:mod:`~core.training.devices` (distribution strategy). Labels -> targets are
:mod:`core.targets`; the per-epoch scores are :func:`core.metrics.epoch_scores`.
TensorFlow/Keras are imported inside functions: ``import core.training`` is cheap.
"""

from __future__ import annotations

from core.training.callbacks import StopRequest
from core.training.config import (
    HIERARCHY_MODES, MONITORS, RECIPES, WEIGHTS, TrainConfig, monitors_for, recommended_config,
)
from core.training.data import IN_MEMORY_LIMIT_BYTES, make_dataset
from core.training.devices import MIRRORED_CPUS_ENV
from core.training.health import COLLAPSE_EPOCHS, collapse_alert, gap_alert
from core.training.trainer import SUBMODELS_DIR, TrainResult, embedding_width, train

__all__ = [
    "COLLAPSE_EPOCHS", "HIERARCHY_MODES", "IN_MEMORY_LIMIT_BYTES", "MIRRORED_CPUS_ENV", "MONITORS", "RECIPES",
    "SUBMODELS_DIR", "StopRequest", "TrainConfig", "TrainResult", "WEIGHTS", "collapse_alert", "embedding_width",
    "gap_alert", "make_dataset", "monitors_for", "recommended_config", "train",
]
