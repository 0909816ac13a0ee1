"""The fit loop and its run directory: :func:`train` builds the targets, decodes the images,
fits the model(s) (a linear-probe warm-up, then fine-tuning; a model per category for a
"separate" hierarchy), chooses the final model on val and writes predictions and status.

The run directory's file names belong to :mod:`core.runs`; this module only calls it.
TensorFlow/Keras are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from core import runs
from core.metrics.epoch import epoch_scores, finite_number
from core.models import combine_hierarchy
from core.targets import (
    Targets, VAL_FRACTION, apply_label_overrides, build_targets, carve_validation, hierarchy_path,
    hierarchy_probabilities, impute_labels, leaf_ancestors,
)
from core.training.callbacks import (
    FitContext, StopRequest, Stopped, callback_classes, recording_on_features, weight_average,
)
from core.training.config import TrainConfig, monitors_for
from core.training.data import make_dataset, predict_images
from core.training.devices import configure_devices, distribution_strategy
from core.training.probe import (
    PROBE_CS, PROBE_FOLDS, fit_logistic, multilabel_coefs, probe_coefs, probe_folds, sigmoid, softmax,
)
from core.workspace import atomic_write_json

#: Sub-models of a "separate" hierarchical run live in this folder of the run directory.
SUBMODELS_DIR = "models"

#: A fine-tuned candidate replaces the warm-up (the linear probe) only when its val gain exceeds this many
#: standard errors of the paired difference: significant at the 5 % level (two-sided), the bar every
#: "significantly better" in Loupe uses. The best fine-tuning epoch is the best of many noisy val scores,
#: so a smaller bar picks noise on a small val split (flowers12, 3 seeds: the best epoch won by 1.3-1.6
#: standard errors on 108 val images, then scored 0.3 points below the probe on test, bench/bench_quality.py).
SIGNIFICANT_Z = 1.959964

#: The frozen warm-up trains on backbone features held in RAM up to this size, else on images.
FEATURE_WARMUP_LIMIT_BYTES = 2 * 2**30


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
        self.flip_average = config.flips_averaged()
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
               if finite_number(record.get("loss")) and finite_number(record.get(self.config.monitor)) else
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
            runs.record_resolved(self.run_dir, {"weights_used": self.weights_used})
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
        mirrored = make_dataset(images, val_idx, None, batch_size=max(cfg.batch_size, 64), mirror=True) \
            if self.flip_average else None
        ctx = FitContext(
            run_dir=self.run_dir, stage=stage, stop=self.stop, val_ds=val_ds, val_y=val_y, metric_task=metric_task,
            names=tuple(names), monitor=cfg.monitor, epochs=cfg.epochs, batch_size=cfg.batch_size,
            n_train=len(train_idx), save_checkpoint=lambda m: models.save_model(m, checkpoint),
            on_epoch=lambda rec: self.on_epoch(rec, stage_epochs=cfg.epochs), alerts=self.alerts,
            val_ds_mirrored=mirrored,
        )
        BatchLogger, RunRecorder = callback_classes()
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
        self._warm_weights = None  # the warm-up's best weights, set when fine-tuning starts
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
                    self._warm_weights = recorder.best_weights  # get_weights() copies: the warm-up's, kept
                with strategy.scope():
                    n = models.unfreeze_top(model, min(cfg.fine_tune_layers, len(models.backbone_of(model).layers)))
                    _compile(model, task=metric_task, lr=cfg.lr * cfg.fine_tune_lr_factor)
                self.log(f"{stage}: fine-tuning the top {cfg.fine_tune_layers} backbone layers ({n} with weights) "
                         f"at lr {cfg.lr * cfg.fine_tune_lr_factor:g}")
                self.stop.model = model
            cbs = callbacks()
            average = None
            if i == 1 and cfg.average_weights:
                average = weight_average(first=start + (end - start) // 3)
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
        that reads them: ``(head, f_train, f_val, f_val_mirrored)`` (the last None unless flips are
        averaged), or None when a stop was requested meanwhile."""
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
        f_val_mirrored = None
        if self.flip_average and not self.stop.requested:
            f_val_mirrored = features.predict(make_dataset(images, val_idx, None, batch_size=batch, mirror=True),
                                              verbose=0)
        return head, f_train, f_val, f_val_mirrored

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
        head, f_train, f_val, f_val_mirrored = got
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
            fit = (lambda xs, ys, c: multilabel_coefs(xs, ys, c))
            link = sigmoid
        else:
            folds = probe_folds(y_train, seed=cfg.seed)
            fit = (lambda xs, ys, c: probe_coefs(fit_logistic(xs, ys, c, class_weight), k))
            link = softmax

        def score(c: float) -> float:
            """The monitor for C: out of fold on the training split, or on val when it cannot be folded."""
            if not folds:  # too few images per class to hold any out: picked on val, as before
                w, b = fit(x_train, y_train, c)
                return epoch_scores(metric_task, ctx.val_y, link(x_val @ w.T + b))[key]
            oof = np.zeros((len(y_train), k))  # val stays unseen until the final choice
            for fit_rows, held in folds:
                w, b = fit(x_train[fit_rows], y_train[fit_rows], c)
                oof[held] = link(x_train[held] @ w.T + b)
            return epoch_scores(metric_task, y_train, oof)[key]

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
        train_eval = epoch_scores(metric_task, y_train, train_probs)
        with recording_on_features(recorder, ctx, model, head, f_val, n_images=len(train_idx) + len(val_idx),
                                    seconds=fit_s, f_val_mirrored=f_val_mirrored):
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
        probs = np.asarray(ctx.val_probs(model))
        val = epoch_scores(ctx.metric_task, ctx.val_y, probs)
        model.set_weights(kept)
        first, last = average.epochs[0], average.epochs[-1]
        record = {"kind": "average", "stage": ctx.stage, "epoch": last, "epochs_averaged": [first, last],
                  "val_loss": val["loss"], "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"],
                  "time": time.time()}
        if "map" in val:
            record["val_map"] = val["map"]
        return record, weights, probs

    def _choose_final(self, model, recorder, average, *, checkpoint: Path) -> None:
        """After fine-tuning: the final model is the warm-up (linear probe) unless the best of the
        fine-tuning candidates (the best fine-tuning epoch, the weight average; ties keep the earlier)
        beats it on val by the monitor significantly: by more than :data:`SIGNIFICANT_Z` standard
        errors of the paired difference (:func:`core.compare.paired_standard_error`, a bootstrap of the
        val rows). The simpler model is kept when the validation split cannot tell them apart, so the
        final model is never worse on val than its warm-up. A ``kind == "selection"`` line in
        metrics.jsonl records the candidates, the standard error, the choice and why."""
        from core import compare, models

        ctx = recorder.ctx
        monitor = ctx.monitor
        warm_name = self._warmup_name
        candidates, probs = [], {}
        # the recorder kept each phase's best epoch (first of ties) with its val predictions
        for phase, name in (("frozen warm-up", warm_name), ("fine-tuning", "best fine-tuning epoch")):
            if phase in recorder.phase_best:
                record, probs[name] = recorder.phase_best[phase]
                candidates.append({"name": name, "epoch": record["epoch"], "value": float(record[monitor])})
        avg = self._average_candidate(model, recorder, average)
        if avg is not None:
            record, weights, probs["weight average"] = avg
            recorder.append(record)
            if finite_number(record[monitor]):
                candidates.append({"name": "weight average", "epoch": record["epoch"],
                                   "epochs_averaged": record["epochs_averaged"], "value": float(record[monitor])})
        if not candidates:
            return

        def standard_error(name: str) -> float | None:
            if probs.get(warm_name) is None or probs.get(name) is None:
                return None
            return compare.paired_standard_error(ctx.metric_task, ctx.val_y, probs[warm_name], probs[name],
                                                 monitor[len("val_"):], seed=self.config.seed)

        chosen, best, se, rule = pick_final(candidates, monitor=monitor, standard_error=standard_error,
                                            n_val=len(ctx.val_y))
        others = ", ".join(f"{c['name']} {c['value']:.4f}" for c in candidates if c is not chosen)
        reason = rule if chosen is not best else (
            f"{chosen['name']} has the best {monitor} ({chosen['value']:.4f})" + (f", {rule}" if rule else ""))
        reason += f"; {others}" if others else ""
        if chosen["name"] == "weight average":
            model.set_weights(weights)
            models.save_model(model, checkpoint)
            recorder.best_weights = model.get_weights()
        elif chosen is candidates[0] and best is not chosen and self._warm_weights is not None:
            model.set_weights(self._warm_weights)  # the recorder checkpointed a fine-tuning epoch: back to the warm-up
            models.save_model(model, checkpoint)
            recorder.best_weights = model.get_weights()
        elif recorder.best_weights is not None:
            # the recorder checkpointed the best epoch over both phases: the warm-up's or a fine-tuning one
            model.set_weights(recorder.best_weights)
        recorder.best_value, recorder.best_epoch = chosen["value"], chosen["epoch"]
        recorder.append({"kind": "selection", "stage": ctx.stage, "monitor": monitor, "chosen": chosen["name"],
                         "epoch": chosen["epoch"], "epochs_averaged": chosen.get("epochs_averaged"),
                         "candidates": candidates, "best_on_val": best["name"], "standard_error": se,
                         "reason": reason, "time": time.time()})
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
        head, f_train, f_val, f_val_mirrored = got
        extract_s = time.perf_counter() - t0
        y_train = np.asarray(y)[train_idx]
        y_train = y_train.astype(np.float32) if y_train.dtype.kind == "f" else y_train.astype(np.int64)
        train_ds = (tf.data.Dataset.from_tensor_slices((f_train, y_train))
                    .shuffle(max(1, len(train_idx)), seed=cfg.seed, reshuffle_each_iteration=True)
                    .batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE))
        self.stop.model = head
        try:
            with recording_on_features(recorder, ctx, model, head, f_val, f_val_mirrored=f_val_mirrored,
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
        configure_devices()
        keras.utils.set_random_seed(cfg.seed)
        samples = apply_label_overrides(samples, labels_override)
        targets = build_targets(samples, schema, task=cfg.task, label_columns=cfg.label_columns,
                                exclude_classes=cfg.exclude_classes, positive_class=cfg.positive_class)
        if cfg.monitor not in monitors_for(targets.task):  # the task came from the dataset
            raise ValueError(f"monitor='val_map' (mean average precision) needs a multi-label task; this dataset's "
                             f"task is {targets.task}: use val_macro_f1, val_accuracy or val_loss")
        for w in targets.warnings:
            self.log(f"warning: {w}")
        self.status("running", message=f"decoding images at {cfg.image_size}px", epoch=0, epochs=cfg.epochs)
        self.log(f"preparing {len(targets.samples)} images at {cfg.image_size}px")
        cache = ImageCache(workspace.cache_dir / "images")
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if self.stop.requested:
                raise Stopped("stopped while decoding images")
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
            runs.FLIP_AVERAGE: self.flip_average,
            "test_time": ("each image's probabilities are the mean of its own and its left-right mirror's"
                          if self.flip_average else "each image once, as it is"),
        })
        if self.flip_average:
            self.log("test-time flip averaging: every val score, the final model's choice and every prediction "
                     "average each image with its left-right mirror (the model trained on mirrored images)")
        runs.record_resolved(self.run_dir, {"weights_used": self.weights_used, "counts": counts,
                                            "outputs": list(targets.names), "task_resolved": task,
                                            "keras_version": keras.__version__, "python": sys.version.split()[0]})

        if self.stop.requested:
            raise Stopped("stopped before training started")
        strategy = distribution_strategy()
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
            probs = predict_images(model, images, idx[s], batch_size=max(cfg.batch_size, 64),
                                   flip_average=self.flip_average)
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
        runs.record_resolved(self.run_dir, {"hierarchy": {
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
            return epoch_scores("multilabel", targets.y[rows], probs)
        out = epoch_scores("multiclass", targets.y[rows], probs)
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


def pick_final(candidates: list[dict], *, monitor: str, standard_error: Callable[[str], float | None],
               n_val: int) -> tuple[dict, dict, float | None, str]:
    """The final model among a run's candidates: the best on val only when its gain is significant.

    ``candidates``: ``{"name", "value", ...}`` dicts, the warm-up first (the simplest model), then the
    fine-tuning ones; ``value`` is the val ``monitor`` (lower is better for ``val_loss``).
    ``standard_error(name)``: the standard error of the paired difference between that candidate
    and the warm-up on val (None or NaN: unknown, and then the best wins). The best by value (ties
    keep the earlier) wins only when it beats the warm-up by more than :data:`SIGNIFICANT_Z` standard
    errors; else the warm-up is kept.

    Returns ``(chosen, best, standard_error, why)``: ``why`` is empty when the rule did not apply.
    """
    lower = monitor == "val_loss"
    best = candidates[0]
    for cand in candidates[1:]:
        if cand["value"] < best["value"] if lower else cand["value"] > best["value"]:
            best = cand
    if best is candidates[0]:
        return best, best, None, ""
    se = standard_error(best["name"])
    if not finite_number(se):
        return best, best, None, ""
    warm = candidates[0]
    gain = (warm["value"] - best["value"]) if lower else (best["value"] - warm["value"])
    if gain > SIGNIFICANT_Z * se:
        return best, best, float(se), (f"{gain:.4f} better than the {warm['name']}, significant: over "
                                       f"{SIGNIFICANT_Z:.2f} standard errors ({se:.4f})")
    return warm, best, float(se), (
        f"{warm['name']} kept: the {best['name']}'s {monitor} ({best['value']:.4f}) beats it by {gain:.4f}, "
        f"{gain / se if se > 0 else 0:.1f} standard errors ({se:.4f}) of the paired difference on {n_val} val "
        f"images, not significant (under {SIGNIFICANT_Z:.2f})")


def train(config: TrainConfig, *, out: str | os.PathLike, samples: pd.DataFrame, schema, workspace,
          labels_override: pd.DataFrame | None = None, stop: StopRequest | None = None,
          handle_signals: bool = False, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train one run and write its run directory (the worker's whole job).

    Parameters
    ----------
    config : TrainConfig
    out : path
        The run directory (created). ``config.json`` there is kept (written when missing); what training resolves goes to ``resolved.json``.
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
    if not runs.RunDir(run_dir).config.exists():
        runs.write_config(run_dir, config.to_dict())
    trainer.status("running", pid=os.getpid(), message="starting", started_at=time.time())
    try:
        result = trainer.run(samples, schema, workspace=workspace, labels_override=labels_override)
    except Stopped as exc:
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
