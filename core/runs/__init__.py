"""The run directory: the one module that knows its file names and formats.

A *run directory* (``runs/<run_id>/``) is the only thing the UI and the training worker
share. Everything that reads or writes one goes through this module::

    config.json        everything needed to reproduce the run, written once: by the launcher
                       (:func:`core.jobs.launch`), or by a worker started without one
    resolved.json      what the worker resolved while it ran (the dataset id of a dataset given
                       as a spec, the review labels it applied, the weights it used, outputs,
                       counts, versions, a hierarchy's sub-models); :func:`read_config` lays it
                       over config.json
    label_patch.parquet the effective-label patch (review decisions) the run trained on
    status.json        {"state", "pid", "pid_start", "host", "epoch", "message", "created_at",
                       "updated_at", ...} written atomically on every change (:func:`write_status`);
                       optional "monitor", "best_value", "best_epoch" spare :func:`list_runs`
                       from reading metrics.jsonl
    metrics.jsonl      one JSON object per line (per epoch, and per N batches), appended and
                       fsync'ed (:func:`append_metrics`); a truncated last line is normal
    model.keras        the best checkpoint
    labels.json        what the model's outputs mean (:func:`write_labels`, contract below)
    preprocessing.json how images were prepared (image size, ...), owned by training
    predictions.csv    per sample predictions (:func:`write_predictions`, contract below)
    thresholds.json    chosen decision thresholds, merge-updated by section (:func:`write_thresholds`)
    worker.log         the worker's stdout and stderr

**States** (``status.json["state"]``): ``queued``, ``running``, ``done``, ``failed``,
``stopped``, ``interrupted``. A ``running`` / ``queued`` status whose worker process is
gone is *shown* as ``interrupted`` by :func:`effective_state` (the file is not rewritten:
reading never writes). A worker that writes ``running`` must record its ``pid``.

**labels.json**::

    {"task": "multiclass" | "binary" | "multilabel" | "hierarchical",
     "classes": [...],            # multiclass/binary: in probability-column order
     "positive_class": str|null,  # binary: one of classes
     "labels": [...],             # multilabel: the K label names
     "levels": [...],             # hierarchical: level names, coarse -> fine
     "level_classes": {level: [...]},            # hierarchical
     "parents": {level: {child: parent}}}        # hierarchical, for every level but the first

**predictions.csv** columns: ``sample_id, path, split`` then

* multiclass / binary: ``true, pred`` (class names; ``true`` empty when unknown) and
  ``p_<class>`` for every class, in ``classes`` order;
* multilabel: per label ``true_<label>`` (1 / 0 / empty for missing), ``pred_<label>``
  (0/1) and ``p_<label>``;
* hierarchical: per level ``<level>_true, <level>_pred`` and ``<level>_p_<class>``.

Where things live: :mod:`~core.runs.layout` (file names, :class:`RunDir`, config.json /
resolved.json, labels.json), :mod:`~core.runs.status` (status.json, worker liveness,
metrics.jsonl), :mod:`~core.runs.predictions` (predictions.csv, thresholds.json),
:mod:`~core.runs.listing` (the runs table, a run's workspace and dataset, :func:`open_run`).
This face only hands their public names on.
"""

from __future__ import annotations

from core.runs.layout import (
    ACTIVE_STATES, BASE_PREDICTION_COLUMNS, CONFIG, FLIP_AVERAGE, LABELS, LABEL_PATCH, METRICS, MODEL, PREDICTIONS,
    PREPROCESSING, RESOLVED, RunDir, STATES, STATUS, TASKS, THRESHOLDS, UNKNOWN_STATE, WORKER_LOG, as_run_dir,
    flips_averaged, json_default, output_names, read_config, read_labels, read_preprocessing, record_resolved, validate_labels,
    write_config, write_labels,
)
from core.runs.listing import RUN_COLUMNS, Run, list_runs, open_run, run_dataset, run_summary, run_workspace
from core.runs.predictions import (
    Predictions, class_thresholds, prediction_columns, predictions_frame, read_predictions, read_thresholds,
    require_predictions, write_predictions, write_thresholds,
)
from core.runs.status import (
    append_metrics, effective_state, pid_alive, process_start_ticks, read_metrics, read_status, write_status,
)

__all__ = [
    "ACTIVE_STATES", "BASE_PREDICTION_COLUMNS", "CONFIG", "FLIP_AVERAGE", "LABELS", "LABEL_PATCH", "METRICS", "MODEL",
    "PREDICTIONS", "PREPROCESSING", "Predictions", "RESOLVED", "RUN_COLUMNS", "Run", "RunDir", "STATES", "STATUS",
    "TASKS", "THRESHOLDS", "UNKNOWN_STATE", "WORKER_LOG", "append_metrics", "as_run_dir", "class_thresholds",
    "effective_state", "flips_averaged", "json_default", "list_runs", "open_run", "output_names", "pid_alive", "prediction_columns",
    "predictions_frame", "process_start_ticks", "read_config", "read_labels", "read_metrics", "read_predictions",
    "read_preprocessing", "read_status", "read_thresholds", "record_resolved", "require_predictions",
    "run_dataset", "run_summary", "run_workspace", "validate_labels", "write_config", "write_labels",
    "write_predictions", "write_status", "write_thresholds",
]
