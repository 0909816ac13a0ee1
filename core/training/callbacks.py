"""Keras callbacks of the fit loop and the stop request they honour.

``RunRecorder`` scores the val split after every epoch (:func:`core.metrics.epoch_scores`),
appends ``metrics.jsonl``, updates ``status.json``, raises health alerts and checkpoints the
best epoch; ``BatchLogger`` writes a live loss line every N batches and stops the fit after
the batch when a :class:`StopRequest` is set; the weight average sums the fine-tuning
epochs' weights; :func:`recording_on_features` points the recorder at a head fitted on
backbone features. Keras is imported when the classes are first needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core import runs
from core.metrics.epoch import epoch_scores, finite_number
from core.training.health import COLLAPSE_EPOCHS, collapse_alert, gap_alert


@contextlib.contextmanager
def recording_on_features(recorder, ctx, model, head, f_val: np.ndarray, *, n_images: int, seconds: float,
                          f_val_mirrored: np.ndarray | None = None):
    """While the head fits on backbone features: ``recorder`` evaluates ``head`` on the val features (and
    the mirrored images' features, when flips are averaged) and checkpoints the whole ``model``; afterwards
    its context is the images' again, its throughput counts ``n_images`` in ``seconds`` (the feature pass,
    not the head steps) and its best weights are whole-model."""
    import tensorflow as tf

    image_ctx = recorder.ctx
    seen, secs = recorder.images_seen, recorder.train_seconds
    mirrored = None if f_val_mirrored is None else tf.data.Dataset.from_tensor_slices(f_val_mirrored).batch(256)
    recorder.ctx = dataclasses.replace(ctx, val_ds=tf.data.Dataset.from_tensor_slices(f_val).batch(256),
                                       val_ds_mirrored=mirrored, source="backbone features",
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


def weight_average(first: int):
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


class Stopped(Exception):
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
            if loss is not None and not finite_number(loss):
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

        def __init__(self, ctx: "FitContext") -> None:
            super().__init__()
            self.ctx = ctx
            self.stop = ctx.stop
            self.stage = ctx.stage
            self.history: list[dict] = []
            # per phase: (epoch record, val probabilities) of its best epoch (first of ties), for the final choice
            self.phase_best: dict[str | None, tuple[dict, np.ndarray]] = {}
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
            probs = ctx.val_probs(self.model)
            val = epoch_scores(ctx.metric_task, ctx.val_y, probs)
            for k in ("loss", "accuracy", "macro_f1", "map"):
                if k in val:
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
            if "map" in val:
                record["val_map"] = val["map"]
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
            lower = ctx.monitor == "val_loss"
            if finite_number(value):
                prev = self.phase_best.get(ctx.phase)
                if prev is None or (value < prev[0][ctx.monitor] if lower else value > prev[0][ctx.monitor]):
                    self.phase_best[ctx.phase] = (record, np.asarray(probs))
            improved = finite_number(value) and finite_number(record["loss"]) and (
                self.best_value is None or (value < self.best_value if lower else value > self.best_value))
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
class FitContext:
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
    val_ds_mirrored: Any = None  # flip averaging: the val inputs mirrored left-right (None: off)

    def val_probs(self, model) -> np.ndarray:
        """``model``'s val predictions, averaged with the mirrored images' when flips are averaged."""
        probs = model.predict(self.val_ds, verbose=0)
        if self.val_ds_mirrored is None:
            return probs
        return (np.asarray(probs, np.float64) + np.asarray(model.predict(self.val_ds_mirrored, verbose=0),
                                                           np.float64)) / 2

    def add_alert(self, alert: dict) -> None:
        # keep one alert per (kind, stage); update it with the latest epoch
        for i, a in enumerate(self.alerts):
            if a["kind"] == alert["kind"] and a.get("stage") == alert.get("stage"):
                self.alerts[i] = {**alert, "first_epoch": a.get("first_epoch", a.get("epoch"))}
                return
        self.alerts.append({**alert, "first_epoch": alert.get("epoch")})


_CALLBACK_CLASSES: tuple | None = None


def callback_classes():
    """``(BatchLogger, RunRecorder)``, defined on first use (Keras is imported then)."""
    global _CALLBACK_CLASSES
    if _CALLBACK_CLASSES is None:
        _CALLBACK_CLASSES = _make_callbacks_module()
    return _CALLBACK_CLASSES
