"""Train: configure and launch a run (or a grid), watch it live, stop it, compare runs.

Runs execute in their own worker process (``core.jobs.launch``); this page only reads
their run directories. The live view is an ``st.fragment`` that polls every second while
the watched run is queued or running, and stops polling once it has finished.
"""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from core import jobs, models, review, runs
from core import training_charts as tc
from core.targets import IMPUTATIONS
from core.training import monitors_for, recommended_config
from ui import state
from ui.state import esc

WATCH_KEY = "train_watch"
POLL_S = 1.0  # the live view of the watched run
TABLE_POLL_S = 3.0  # the runs table
BACKBONE_NAMES = {"cnn": "Small CNN (conv blocks)", "mobilenet_v2": "MobileNetV2", "resnet50v2": "ResNet50V2",
                  "efficientnet_b0": "EfficientNetB0"}
ALPHAS = (0.35, 1.0)
POOLINGS = ("flatten", "avg", "max")
TASK_HELP = {
    "multiclass": "one class per image (softmax)",
    "binary": "one class against the rest (sigmoid-style, two outputs)",
    "multilabel": "several labels per image (independent sigmoids, masked loss for missing labels)",
    "hierarchical": "the label path coarse → fine; predictions give the full path",
}
IMPUTATION_HELP = ("mask: missing labels are ignored by the loss (default). mean: filled with the label's mean. "
                   "matrix_factorization: filled by a low-rank completion of the label matrix.")
HIER_HELP = ("flat: one model over the leaf labels (the coarse levels follow from the leaf). separate: a primary "
             "model over the first level plus one model per primary category.")

ws = state.workspace()
st.title("Train")


# ---------------------------------------------------------------------------
# Configuration: widgets -> a dict of TrainConfig options (recommended_config consumes it)
# ---------------------------------------------------------------------------

def _recipe(model: str, weights: str) -> dict:
    """Widget defaults for ``model``: the recommended recipe (core.training.RECIPES)."""
    cfg = recommended_config(model, weights=weights)
    return {
        "train_image_size": int(cfg.image_size), "train_epochs": int(cfg.epochs),
        "train_augment": cfg.augments(),
        "train_fine_tune": int(cfg.fine_tune_layers), "train_warmup": int(cfg.warmup_epochs),
        "train_dropout": float(cfg.dropout), "train_embedding": int(cfg.embedding_dim),
        "train_patience": int(cfg.patience), "train_reduce_lr": int(cfg.reduce_lr_patience),
        "train_probe_head": bool(cfg.probe_head), "train_average_weights": bool(cfg.average_weights),
        "train_flip_average": cfg.flips_averaged(),
    }


def _static_defaults() -> dict:
    base = recommended_config("cnn")
    return {
        "train_model": "cnn", "train_alpha": 0.35, "train_weights": "imagenet", "train_batch_size": base.batch_size,
        "train_lr": float(base.lr), "train_monitor": base.monitor, "train_class_weights": False,
        "train_conv_blocks": base.conv_blocks, "train_filters": base.filters, "train_kernel": base.kernel_size,
        "train_batch_norm": base.batch_norm, "train_pooling": base.pooling,
        "train_seed": base.seed, "train_log_every": base.log_every, "train_imputation": "mask",
        "train_hmode": "flat", "train_exclude": [], "train_use_review": True,
        "train_feature_warmup": base.feature_warmup,
    }


def _apply_recipe() -> None:
    """on_change of the model / weights: reset the recipe-dependent widgets to the model's recipe."""
    ss = st.session_state
    ss.update(_recipe(ss.get("train_model", "cnn"), ss.get("train_weights", "imagenet")))


def _use_random_init() -> None:
    st.session_state["train_weights"] = "none"
    _apply_recipe()


def _ensure_defaults(ds) -> None:
    """Give every widget its default once (and again when it was hidden, or the dataset changed)."""
    ss = st.session_state
    for k, v in _static_defaults().items():
        ss.setdefault(k, v)
    for k, v in _recipe(ss["train_model"], ss["train_weights"]).items():
        ss.setdefault(k, v)
    tasks = _task_options(ds)
    if ss.get("train_task") not in tasks:
        ss["train_task"] = tasks[0]


def _task_options(ds) -> list[str]:
    sc = ds.schema
    return {"multiclass": ["multiclass", "binary"], "binary": ["binary", "multiclass"],
            "multilabel": ["multilabel"], "hierarchical": ["hierarchical", "multiclass", "binary"]}.get(
        sc.task, [sc.task])


def _class_counts(ds, column: str) -> pd.Series:
    return ds.samples[column].dropna().astype(str).value_counts()


def _pick(key: str, options: list, default) -> None:
    if st.session_state.get(key) not in options:
        st.session_state[key] = default if default in options else options[0]


def task_widgets(ds) -> dict:
    """Task, its label options, exclusions and class weights for the current dataset's schema."""
    sc = ds.schema
    opts: dict = {"dataset_id": ds.dataset_id}
    try:
        n_decisions = len(review.decisions(ws, ds.dataset_id, active_only=True))
    except Exception:  # noqa: BLE001 - an unreadable decision log must not hide the form
        n_decisions = 0
    opts["_use_review"] = st.checkbox(
        f"Use review decisions ({n_decisions:,} in effect)", key="train_use_review",
        help="Train on the effective labels: the raw labels plus the Clean page's keep / exclude / relabel "
             "decisions as they are at launch (the run records which). Unticked: the raw labels.")
    task = st.radio("Task", _task_options(ds), key="train_task", horizontal=True,
                    help=" · ".join(f"{t}: {TASK_HELP[t]}" for t in _task_options(ds)))
    opts["task"] = task
    column = sc.label_columns[-1] if sc.label_columns else None
    if sc.task == "hierarchical" and task != "hierarchical":
        levels = list(sc.label_columns)
        _pick("train_level", levels, levels[-1])
        column = st.selectbox("Level to train on", levels, key="train_level")
        opts["label_columns"] = (column,)
    if task == "binary":
        classes = list(_class_counts(ds, column).index)
        _pick("train_positive", classes, sc.positive_class)
        opts["positive_class"] = st.selectbox("Positive class (the rest is negative)", classes,
                                              key="train_positive")
    if task == "multilabel":
        labels = list(sc.label_columns)
        chosen = [v for v in st.session_state.get("train_labels", labels) if v in labels]
        st.session_state["train_labels"] = chosen or labels
        picked = st.multiselect("Labels to train on", labels, key="train_labels")
        opts["label_columns"] = tuple(picked) if picked and len(picked) < len(labels) else None
        opts["imputation"] = st.radio("Missing labels", IMPUTATIONS, key="train_imputation", horizontal=True,
                                      help=IMPUTATION_HELP)
    if task == "hierarchical":
        opts["hierarchy_mode"] = st.radio("Hierarchy approach", ["flat", "separate"], key="train_hmode",
                                          horizontal=True, help=HIER_HELP)
    if task != "multilabel" and column is not None:
        counts = _class_counts(ds, column) if task != "hierarchical" else pd.concat(
            [_class_counts(ds, c) for c in sc.label_columns])
        ordered = list(counts.sort_values().index)  # rarest first
        st.session_state["train_exclude"] = [c for c in st.session_state.get("train_exclude", []) if c in ordered]
        opts["exclude_classes"] = tuple(st.multiselect(
            "Exclude classes (rarest first)", ordered, key="train_exclude",
            format_func=lambda c: f"{c} ({int(counts.get(c, 0))})",
            help="Samples with these labels are left out of training and evaluation."))
        opts["class_weights"] = st.checkbox("Balanced class weights", key="train_class_weights",
                                            help="Weigh rare classes up in the loss (single-label tasks).")
    return opts


def model_widgets() -> dict:
    """Backbone, weights (with the offline check), augmentation and the CNN's shape."""
    opts: dict = {}
    model = st.selectbox("Model", list(models.BACKBONES), key="train_model", format_func=BACKBONE_NAMES.get,
                         on_change=_apply_recipe)
    opts["model"] = model
    if model == "cnn":
        c1, c2 = st.columns(2)
        opts["conv_blocks"] = c1.number_input("Conv blocks", 1, 6, key="train_conv_blocks",
                                              help="conv + max-pool blocks; the seeds used 2")
        opts["filters"] = c2.number_input("Filters (first block, doubled per block)", 1, 512, key="train_filters")
        opts["kernel_size"] = c1.selectbox("Kernel size", [3, 5, 7], key="train_kernel")
        opts["pooling"] = c2.selectbox("Pooling to the vector", POOLINGS, key="train_pooling")
        opts["batch_norm"] = st.checkbox("Batch normalisation", key="train_batch_norm")
    else:
        if model == "mobilenet_v2":
            opts["alpha"] = st.radio("Width (alpha)", ALPHAS, key="train_alpha", horizontal=True)
        opts["weights"] = st.radio("Weights", ["imagenet", "none"], key="train_weights", horizontal=True,
                                   on_change=_apply_recipe,
                                   format_func={"imagenet": "ImageNet (pretrained)", "none": "random init"}.get)
    opts["augmentation"] = st.checkbox("Augmentation", key="train_augment",
                                       help="random flip, rotation, zoom and contrast of the training images")
    opts["flip_average"] = st.checkbox(
        "Test-time flip averaging", key="train_flip_average",
        help="every val score, the final model's choice and every prediction use the "
             "mean of the image's and its left-right mirror's probabilities (twice the inference time). On by "
             "default when the model trains on mirrored images; leave it off when left and right differ in "
             "meaning (arrows, text)")
    return opts


def weights_notice(model: str, alpha: float, image_size: int, weights: str) -> None:
    """Warn before launch when the ImageNet weights are not in Keras' cache (offline: random init)."""
    if model == "cnn" or weights != "imagenet":
        return
    if models.weights_cached(model, alpha=alpha, image_size=image_size):
        st.caption(f":material/check_circle: ImageNet weights found in `{esc(models.keras_cache_dir())}`.")
        return
    fname = models.weights_file(model, alpha=alpha, image_size=image_size)
    st.warning(
        f"**ImageNet weights for {esc(BACKBONE_NAMES[model])} are not in Keras' cache** "
        f"(`{esc(models.keras_cache_dir())}/{esc(fname)}`). Keras will try to download them; without network "
        "access the run falls back to **random initialisation** (much lower accuracy, flagged in the run). "
        "Copy the file there (or set `KERAS_HOME`), or train from random init on purpose.",
        icon=":material/cloud_off:")
    st.button("Train from random init instead", key="train_random_init", on_click=_use_random_init)


def fit_widgets(model: str, task: str) -> dict:
    opts: dict = {}
    c1, c2 = st.columns(2)
    opts["image_size"] = c1.number_input("Image size (px)", models.MIN_IMAGE_SIZE[model], 512,
                                         key="train_image_size", help="square input side")
    opts["epochs"] = c2.number_input("Epochs", 1, 1000, key="train_epochs")
    opts["batch_size"] = c1.number_input("Batch size", 1, 1024, key="train_batch_size")
    opts["lr"] = c2.number_input("Learning rate", min_value=1e-6, max_value=1.0, key="train_lr", format="%g",
                                 step=1e-4, help="Adam. Accuracy stuck at 1/K? Try 10× lower.")
    monitors = list(monitors_for(task))
    ss = st.session_state
    if ss.get("train_monitor_task") != (task == "multilabel") or ss.get("train_monitor") not in monitors:
        ss["train_monitor"], ss["train_monitor_task"] = monitors[0], task == "multilabel"  # the task's default
    opts["monitor"] = st.selectbox("Checkpoint monitor", monitors, key="train_monitor",
                                   help="best checkpoint, early stopping, LR reduction and the final model (probe, "
                                        "best epoch or weight average) follow this metric; val_map: mean average "
                                        "precision (multi-label)")
    with st.expander("Advanced"):
        a1, a2 = st.columns(2)
        opts["patience"] = a1.number_input("Early-stopping patience (0 = off)", 0, 1000, key="train_patience")
        opts["reduce_lr_patience"] = a2.number_input("Reduce-LR patience (0 = off)", 0, 1000, key="train_reduce_lr")
        opts["dropout"] = a1.number_input("Dropout", 0.0, 0.95, key="train_dropout", step=0.05)
        opts["embedding_dim"] = a2.number_input("Embedding width", 2, 2048, key="train_embedding")
        if model != "cnn" and st.session_state.get("train_weights") == "imagenet":
            opts["fine_tune_layers"] = a1.number_input("Fine-tune top N backbone layers (0 = frozen)", 0, 1000,
                                                       key="train_fine_tune")
            opts["warmup_epochs"] = a2.number_input("Warm-up epochs (frozen backbone first)", 0, 1000,
                                                    key="train_warmup")
            opts["feature_warmup"] = st.checkbox(
                "Frozen epochs on features computed once", key="train_feature_warmup",
                help="the frozen backbone's features are computed once and the head trains on them: seconds "
                     "instead of a backbone pass per image per epoch, but without augmentation")
            b1, b2 = st.columns(2)
            opts["probe_head"] = b1.checkbox(
                "Warm-up = a linear probe", key="train_probe_head",
                help="one label per image: the head is fitted as a logistic regression on the frozen features "
                     "(C picked on val), exactly, in one warm-up epoch; fine-tuning starts from it")
            opts["average_weights"] = b2.checkbox(
                "Average the fine-tuning weights", key="train_average_weights",
                help="the final model averages the weights of the fine-tuning epochs after the first third "
                     "(steadier than picking one epoch on a small validation split)")
        else:
            opts["fine_tune_layers"], opts["warmup_epochs"] = 0, 0
        opts["seed"] = a1.number_input("Seed", 0, 2**31 - 1, key="train_seed")
        opts["log_every"] = a2.number_input("Live loss line every N batches", 1, 10_000, key="train_log_every")
    return opts


def configure(ds) -> dict:
    """All the widgets of a run; returns the options for ``recommended_config(**options)``."""
    _ensure_defaults(ds)
    c_task, c_model, c_fit = st.columns(3, gap="large")
    with c_task:
        st.markdown("**Data**")
        opts = task_widgets(ds)
    with c_model:
        st.markdown("**Model**")
        opts.update(model_widgets())
    with c_fit:
        st.markdown("**Fit**")
        opts.update(fit_widgets(opts["model"], opts["task"]))
    with c_model:
        weights_notice(opts["model"], float(opts.get("alpha", 0.35)), int(opts["image_size"]),
                       opts.get("weights", "imagenet"))
    return opts


def build_config(opts: dict):
    """Options -> TrainConfig, or None with the error shown."""
    opts = {k: v for k, v in opts.items() if not k.startswith("_")}  # page-only choices
    model = opts.pop("model")
    try:
        return recommended_config(model, **opts)
    except ValueError as exc:
        st.error(f"This configuration cannot be launched: {exc}")
        return None


def launch_panel(ds, opts: dict) -> None:
    if st.button("Launch", type="primary", key="train_launch", icon=":material/play_arrow:"):
        cfg = build_config(opts)
        if cfg is None:
            return
        try:
            run_id = jobs.launch(cfg, workspace=ws, raw_labels=not opts.get("_use_review", True))
        except (ValueError, OSError) as exc:
            st.error(f"The run was not launched: {exc}")
            return
        st.session_state[WATCH_KEY] = run_id
        st.success(f"Run `{esc(run_id)}` queued: watch it below (it keeps training if you leave this page).")


# ---------------------------------------------------------------------------
# Grid
# ---------------------------------------------------------------------------

GRID_KERNELS = [3, 5, 7]
GRID_FILTERS = [16, 32, 64, 96, 128]
GRID_LRS = [1e-2, 3e-3, 1e-3, 3e-4, 1e-4]


def grid_panel(ds, opts: dict) -> None:
    st.caption("Every combination of the values below becomes one run with the settings of the *Single run* tab; "
               "the runs are queued and train one after another.")
    with st.form("train_grid_form"):
        c1, c2, c3, c4 = st.columns(4)
        kernels = c1.multiselect("CNN kernel sizes", GRID_KERNELS, key="train_grid_kernels")
        filters = c2.multiselect("CNN filters", GRID_FILTERS, key="train_grid_filters")
        lrs = c3.multiselect("Learning rates", GRID_LRS, key="train_grid_lrs", format_func=lambda v: f"{v:g}")
        backbones = c4.multiselect("Backbones", list(models.BACKBONES), key="train_grid_models",
                                   format_func=BACKBONE_NAMES.get)
        submitted = st.form_submit_button("Launch grid", type="primary")
    if not submitted:
        return
    grid = {k: list(v) for k, v in (("kernel_size", kernels), ("filters", filters), ("lr", lrs),
                                    ("model", backbones)) if v}
    if not grid:
        st.error("Choose at least one value to vary (e.g. kernel sizes 3, 5, 7 × filters 32, 64).")
        return
    cnn_only = [k for k in ("kernel_size", "filters") if k in grid]
    if cnn_only and (set(grid.get("model", [opts["model"]])) - {"cnn"}):
        st.error(f"{', '.join(cnn_only)} only apply to the small CNN; leave them empty when varying backbones.")
        return
    if any(m != "cnn" for m in grid.get("model", [])) and int(opts["image_size"]) < 32:
        st.error(f"Transfer backbones need images of at least 32 px; the image size is {opts['image_size']}.")
        return
    base = build_config(opts)
    if base is None:
        return
    if not opts.get("_use_review", True):  # a set patch version is kept as is: the raw labels
        base = base.replace(label_patch_version=getattr(jobs, "RAW_LABELS", "raw"), labels_override_path=None)
    try:
        ids = jobs.launch_grid(base, grid, workspace=ws)
    except (ValueError, OSError) as exc:
        st.error(f"The grid was not launched: {exc}")
        return
    st.session_state[WATCH_KEY] = ids[0]
    st.session_state["train_grid_id"] = runs.read_config(ws.runs_dir / ids[0]).get("grid", {}).get("id")
    st.success(f"{len(ids)} runs queued (grid of {' × '.join(f'{k} {v}' for k, v in grid.items())}).")


def grid_results() -> None:
    table = jobs.grid_table(ws)
    if table.empty:
        st.info("No grid yet: launch one above; its results table and parallel-coordinates plot appear here.")
        return
    grid_ids = sorted(table["grid_id"].dropna().unique(), reverse=True)  # ids start with their time: newest first
    _pick("train_grid_id", grid_ids, grid_ids[0])
    grid_id = st.selectbox("Grid", grid_ids, key="train_grid_id")
    active = bool(table.loc[table["grid_id"] == grid_id, "state"].isin(runs.ACTIVE_STATES).any())

    @st.fragment(run_every=2 * POLL_S if active else None)
    def results(grid_id: str, was_active: bool) -> None:
        t = jobs.grid_table(ws, grid_id=grid_id)
        now_active = bool(t["state"].isin(runs.ACTIVE_STATES).any()) if not t.empty else False
        if was_active and not now_active:
            st.rerun()  # the grid finished: one full rerun stops the polling
        params = tc.grid_params(t)
        best = tc.best_run(t)
        n_done = int((t["state"] == "done").sum())
        st.caption(f"{n_done} of {len(t)} runs done" + (f" · best run **{esc(best)}**" if best else ""))
        shown = t.drop(columns=["grid_id"]).copy()
        shown.insert(0, "best", ["★" if r == best else "" for r in shown["run_id"]])
        st.dataframe(shown, hide_index=True, width="stretch", key="train_grid_table",
                     column_config={"best_value": st.column_config.NumberColumn(format="%.4f"),
                                    "test_accuracy": st.column_config.NumberColumn(format="%.4f"),
                                    "test_macro_f1": st.column_config.NumberColumn(format="%.4f"),
                                    "val_accuracy": st.column_config.NumberColumn(format="%.4f"),
                                    "val_macro_f1": st.column_config.NumberColumn(format="%.4f"),
                                    "seconds": st.column_config.NumberColumn(format="%.1f")})
        st.plotly_chart(tc.grid_parallel_coordinates(t, params=params), key="train_grid_parcoords")

    results(grid_id, active)


# ---------------------------------------------------------------------------
# Runs and the live view
# ---------------------------------------------------------------------------

def _steps_per_epoch(cfg: dict) -> int | None:
    n_train = (cfg.get("counts") or {}).get("n_train")
    bs = cfg.get("batch_size")
    if n_train and bs:
        return max(1, math.ceil(int(n_train) / int(bs)))
    return None


def _metric_line(split: str, values: dict) -> str:
    parts = [f"{k} {v:.3f}" for k, v in values.items() if k in ("accuracy", "macro_f1", "loss")
             and isinstance(v, (int, float))]
    return f"**{split}**: " + ", ".join(parts) if parts else ""


def live_view(run_path: str) -> None:
    """Status, alerts, progress, Stop, and the loss / metric charts of one run (re-drawn by the fragment)."""
    rd = runs.RunDir(run_path)
    status = runs.read_status(rd)
    run_state = runs.effective_state(status)
    cfg = runs.read_config(rd)
    prog = tc.progress(status, run_state)
    icon = tc.STATE_ICONS.get(run_state, "")
    head, stop_col = st.columns([5, 1])
    head.markdown(f"#### {icon} `{esc(rd.run_id)}` · {esc(run_state)}")
    head.caption(f"{esc(cfg.get('model', '?'))} · task {esc(cfg.get('task') or 'from the dataset')} · "
                 f"{esc(cfg.get('image_size', '?'))} px · batch {esc(cfg.get('batch_size', '?'))} · "
                 f"lr {esc(cfg.get('lr', '?'))} · monitor {esc(cfg.get('monitor', '?'))}"
                 + (f" · weights: {esc(cfg['weights_used'])}" if cfg.get("weights_used") else ""))
    if prog.active:
        if stop_col.button("Stop", key="train_stop", icon=":material/stop:",
                           help="Finish the current batch, keep the best checkpoint, write predictions."):
            if jobs.stop(rd.path):
                st.toast("Stop requested: the worker finishes its batch and keeps the best checkpoint.")
            else:
                st.toast("The run was not running any more.")
    for a in tc.alerts(status):
        where = f" (epoch {a.get('epoch')}, {a.get('stage')})" if a.get("epoch") else ""
        body = f"**{esc(a['title'])}**{esc(where)}: {esc(a.get('message', ''))}"
        if a.get("suggestion"):
            body += f"\n\n**What to try:** {esc(a['suggestion'])}"
        (st.error if a["level"] == "error" else st.warning)(body, icon=":material/warning:")
    st.progress(prog.fraction, text=esc(prog.text))
    if run_state == "interrupted":
        kept = f" Its best checkpoint (epoch {status.get('best_epoch')}) is kept and usable." \
            if rd.model.exists() else " It left no checkpoint."
        st.warning("The worker process is gone (killed, crashed or the machine restarted): the run is shown as "
                   "interrupted." + kept)
    elif run_state == "failed":
        st.error(f"The run failed: {esc(status.get('message') or status.get('error') or 'see the log')}")
        log = rd.worker_log.read_text(errors="replace")[-4000:] if rd.worker_log.exists() else ""
        if log:
            with st.expander("Worker log (last lines)"):
                st.code(log, language=None)
    metrics = runs.read_metrics(rd)
    if run_state in ("done", "stopped"):
        lines = [_metric_line(s, status.get(s) or {}) for s in ("val", "test")]
        lines = [ln for ln in lines if ln]
        span = tc.averaged_epochs(metrics) if not metrics.empty else None
        choice = tc.final_choice(metrics) if not metrics.empty else None
        if lines:
            kept = (f"final model: the average of epochs {span[0]}-{span[1]}" if span
                    else f"final model: the {esc(choice['chosen'])} (epoch {esc(choice['epoch'])})" if choice
                    else f"best epoch {esc(status.get('best_epoch'))}")
            st.markdown(" · ".join(lines) + f" · {kept}")
            flips = (" Every val score and prediction averages each image with its left-right mirror (test-time "
                     "flip averaging).") if runs.flips_averaged(runs.read_preprocessing(rd)) else ""
            if choice is not None and isinstance(choice.get("reason"), str):
                st.caption(f"Chosen on val: {esc(choice['reason'])}. The final model is never worse on val than "
                           "its warm-up." + flips)
            elif flips:
                st.caption(flips.strip())
    if metrics.empty:
        st.info("No metrics yet: the worker is " + ("waiting in the queue." if run_state == "queued" else
                                                    "loading the data and building the model."))
        return
    stage_names = tc.stages(metrics)
    stage = stage_names[-1] if stage_names else None
    if len(stage_names) > 1:
        stage = st.selectbox("Model of the run", stage_names, index=len(stage_names) - 1, key="train_stage",
                             help="a 'separate' hierarchical run trains a primary model and one per category")
    spe = _steps_per_epoch(cfg) if len(stage_names) <= 1 else None
    monitor = cfg.get("monitor") or "val_macro_f1"
    c1, c2 = st.columns(2)
    c1.plotly_chart(tc.loss_figure(metrics, stage=stage, steps_per_epoch=spe), key="train_loss_chart")
    c2.plotly_chart(tc.metric_figure(metrics, monitor=monitor, stage=stage), key="train_metric_chart")


def _runs_dataframe(table: pd.DataFrame) -> None:
    st.dataframe(tc.runs_table(table), hide_index=True, width="stretch", key="train_runs_table",
                 column_config={"best_value": st.column_config.NumberColumn("best value", format="%.4f"),
                                "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})


def runs_section() -> None:
    """The runs table, the run picker and the live view of the picked run.

    Two pollers, each active only while there is something to follow: the table every
    few seconds while any run is queued or running, the live view every second while the
    watched run is. When what a poller follows ends, it asks for one full rerun, which
    redraws the page without the timer (no endless reruns of a finished page).
    """
    st.subheader("Runs")
    table = jobs.list_runs(ws)
    if table.empty:
        st.info("No run yet: configure one above and press Launch.")
        return
    any_active = bool(table["state"].isin(runs.ACTIVE_STATES).any())

    @st.fragment(run_every=TABLE_POLL_S if any_active else None)
    def table_view(was_active: bool) -> None:
        t = jobs.list_runs(ws) if was_active else table
        if was_active and not t["state"].isin(runs.ACTIVE_STATES).any():
            st.rerun()
        _runs_dataframe(t)

    table_view(any_active)
    ids = list(table["run_id"])
    states = dict(zip(table["run_id"], table["state"]))
    about = {r.run_id: f"{r.run_id} · {r.model} · {r.task}" for r in table.itertuples()}
    _pick(WATCH_KEY, ids, ids[0])
    # (no state in the label: the pollers do not redraw this picker, the table and the view below say it)
    run_id = st.selectbox("Watch run", ids, key=WATCH_KEY, format_func=lambda i: about.get(i, i))
    path = str(table.set_index("run_id").at[run_id, "path"])
    active = states.get(run_id) in runs.ACTIVE_STATES

    @st.fragment(run_every=POLL_S if active else None)
    def watched(path: str, was_active: bool) -> None:
        if was_active and runs.effective_state(runs.read_status(path)) not in runs.ACTIVE_STATES:
            st.rerun()
        live_view(path)

    with st.container(border=True):
        watched(path, active)


# ---------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------

ds = state.current_dataset(ws)
if ds is None:
    st.info("No dataset selected: add or choose one on the Data page, then come back to train on it.")
else:
    st.caption(f"Dataset **{esc(ds.name)}** · {esc(ds.task)} · {len(ds.samples):,} samples · "
               f"label columns {esc(', '.join(ds.label_columns))}")
    tab_single, tab_grid = st.tabs(["Single run", "Grid search"])
    with tab_single:
        options = configure(ds)
        launch_panel(ds, options)
    with tab_grid:
        grid_panel(ds, options)
        grid_results()
runs_section()
