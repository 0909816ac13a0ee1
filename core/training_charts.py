"""What the Train page draws: live training curves, run progress, health alerts, grid results.

Every function takes plain data read from a run directory (``core.runs.read_metrics``,
``core.runs.read_status``) or a grid table (``core.jobs.grid_table``) and returns a
plotly figure, a DataFrame or a small frozen dataclass; none reads files or knows about
Streamlit. Vocabulary of ``metrics.jsonl`` rows (written by :mod:`core.training`):

* ``kind == "epoch"``: ``stage, epoch, epochs, loss, accuracy, val_loss, val_accuracy,
  val_macro_f1 (multi-label: val_map), best_value, best_epoch, ...`` once per epoch;
* ``kind == "batch"``: ``stage, epoch, batch, step, loss`` every ``log_every`` batches
  (the live loss line);
* ``kind == "alert"``: a health alert raised mid-epoch (NaN loss);
* ``kind == "average"``: ``stage, epoch, epochs_averaged [first, last], val_loss,
  val_accuracy, val_macro_f1``: the weights of those fine-tuning epochs averaged;
* ``kind == "selection"``: ``stage, monitor, chosen, epoch, epochs_averaged, candidates,
  reason``: which of the warm-up (linear probe), the best fine-tuning epoch and the
  average became the stage's final model, chosen on val (runs before it: the average).

A "stage" is one model of a run: ``main``, or for a hierarchical "separate" run
``primary`` then ``sub:<category>`` per primary category.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from core.charts import _layout
from core.metrics import finite_number

TRAIN_COLOR = "#4338CA"
VAL_COLOR = "#F59E0B"
F1_COLOR = "#10B981"
MAP_COLOR = "#0EA5E9"
BATCH_COLOR = "#A5B4FC"
BEST_COLOR = "#EF4444"
PHASE_COLOR = "#64748B"  # frozen warm-up shading, fine-tuning marker

#: How a health alert is shown: ``error`` (training is broken) or ``warning`` (worth a look).
ALERT_LEVELS = {"nan_loss": "error", "collapse": "error", "overfitting": "warning", "weights": "warning"}
ALERT_TITLES = {"nan_loss": "Loss is NaN / inf", "collapse": "Predictions collapsed onto one class",
                "overfitting": "Train-val gap widening", "weights": "ImageNet weights unavailable"}

STATE_ICONS = {"queued": "⏳", "running": "▶️", "done": "✅", "failed": "❌", "stopped": "⏹️",
               "interrupted": "⚠️", "unknown": "?"}


# ---------------------------------------------------------------------------
# Curves
# ---------------------------------------------------------------------------

def stages(metrics: pd.DataFrame) -> list[str]:
    """The stages present in ``metrics``, in the order they were trained."""
    if metrics is None or metrics.empty or "stage" not in metrics.columns:
        return []
    return [str(s) for s in pd.unique(metrics["stage"].dropna())]


def _stage_rows(metrics: pd.DataFrame, kind: str, stage: str | None) -> pd.DataFrame:
    if metrics is None or metrics.empty or "kind" not in metrics.columns:
        return pd.DataFrame()
    rows = metrics[metrics["kind"] == kind]
    if stage is not None and "stage" in rows.columns:
        rows = rows[rows["stage"] == stage]
    return rows


def curve_frame(metrics: pd.DataFrame, *, stage: str | None = None,
                steps_per_epoch: int | None = None) -> pd.DataFrame:
    """Epoch and live-batch rows of one stage on a common x axis (fractional epochs).

    Parameters
    ----------
    metrics : DataFrame
        ``core.runs.read_metrics`` output.
    stage : str, optional
        Default: the last stage trained.
    steps_per_epoch : int, optional
        Batches per epoch (``ceil(n_train / batch_size)``); places the batch rows inside
        their epoch. Default: the largest batch number logged in a finished epoch (or in
        the current one during the first epoch).

    Returns
    -------
    DataFrame with columns ``x, kind, epoch, loss`` and, for epoch rows, every metric
    column; epoch ``e`` ends at ``x == e``, a batch ``b`` of epoch ``e`` sits at
    ``e - 1 + b / steps_per_epoch``.
    """
    if stage is None:
        st = stages(metrics)
        stage = st[-1] if st else None
    ep = _stage_rows(metrics, "epoch", stage).copy()
    bt = _stage_rows(metrics, "batch", stage).copy()
    if not ep.empty:
        ep["x"] = pd.to_numeric(ep["epoch"], errors="coerce").astype(float)
    if not bt.empty:
        spe = steps_per_epoch
        if not spe or spe < 1:
            done = set(pd.to_numeric(ep["epoch"], errors="coerce").dropna().astype(int)) if not ep.empty else set()
            finished = bt[bt["epoch"].isin(done)]
            spe = int((finished if not finished.empty else bt)["batch"].max())
        b = pd.to_numeric(bt["batch"], errors="coerce").clip(upper=spe)
        bt["x"] = pd.to_numeric(bt["epoch"], errors="coerce") - 1 + b / max(spe, 1)
    frames = [f for f in (bt, ep) if not f.empty]
    if not frames:
        return pd.DataFrame(columns=["x", "kind", "epoch", "loss"])
    out = pd.concat(frames, ignore_index=True).sort_values(["x", "kind"]).reset_index(drop=True)
    return out


def final_choice(metrics: pd.DataFrame, *, stage: str | None = None) -> dict | None:
    """The stage's ``kind == "selection"`` record (``chosen``, ``epoch``, ``candidates``, ``reason``), or None."""
    if stage is None:
        st = stages(metrics)
        stage = st[-1] if st else None
    rows = _stage_rows(metrics, "selection", stage)
    if rows.empty or "chosen" not in rows.columns:
        return None
    return rows.iloc[-1].to_dict()


def _average_row(metrics: pd.DataFrame, stage: str | None) -> dict | None:
    """The stage's ``kind == "average"`` record when the averaged weights are its final model, or None."""
    if stage is None:
        st = stages(metrics)
        stage = st[-1] if st else None
    choice = final_choice(metrics, stage=stage)
    if choice is not None and choice.get("chosen") != "weight average":
        return None
    rows = _stage_rows(metrics, "average", stage)
    if rows.empty or "epochs_averaged" not in rows.columns:
        return None
    row = rows.iloc[-1].to_dict()
    span = row.get("epochs_averaged")
    if not isinstance(span, (list, tuple)) or len(span) != 2:
        return None
    return row


def averaged_epochs(metrics: pd.DataFrame, *, stage: str | None = None) -> tuple[int, int] | None:
    """``(first, last)`` when the stage's final model averages the weights of those epochs, else None."""
    row = _average_row(metrics, stage)
    return None if row is None else (int(row["epochs_averaged"][0]), int(row["epochs_averaged"][1]))


def _epoch_axis(fig: go.Figure, frame: pd.DataFrame) -> None:
    """x axis in epochs: whole-epoch ticks while there are few epochs (no "0.5 epoch" labels)."""
    top = pd.to_numeric(frame.get("x"), errors="coerce").max() if frame is not None and not frame.empty else None
    fig.update_xaxes(title="epoch", rangemode="tozero", dtick=1 if top is not None and top <= 10 else None)


def _line(fig: go.Figure, rows: pd.DataFrame, col: str, *, name: str, color: str, width: float = 2,
          dash: str | None = None, markers: bool = True) -> None:
    if rows.empty or col not in rows.columns:
        return
    y = pd.to_numeric(rows[col], errors="coerce").astype(float)
    ok = y.notna() & np.isfinite(y)
    if not ok.any():
        return
    fig.add_scatter(x=rows.loc[ok, "x"], y=y[ok], name=name, mode="lines+markers" if markers else "lines",
                    line=dict(color=color, width=width, dash=dash), marker=dict(size=6),
                    hovertemplate=f"{name}: %{{y:.4f}}<br>epoch %{{x:.2f}}<extra></extra>")


def _phases(fig: go.Figure, epochs: pd.DataFrame, *, where: str = "top") -> None:
    """Shade a two-phase transfer run's frozen warm-up epochs and label where fine-tuning starts.

    ``where``: ``"top"`` or ``"bottom"`` of the plot for the labels (scores sit near the top).
    """
    if epochs is None or epochs.empty or "phase" not in epochs.columns:
        return
    warm = epochs[epochs["phase"] == "frozen warm-up"]
    if warm.empty:
        return
    end = float(pd.to_numeric(warm["x"], errors="coerce").max())
    on_features = "input" in warm.columns and (warm["input"] == "backbone features").any()
    label = "frozen warm-up" + (" (on features)" if on_features else "")
    tuning = (epochs["phase"] == "fine-tuning").any()
    last = float(pd.to_numeric(epochs["x"], errors="coerce").max())
    narrow = tuning and end <= 0.25 * last  # e.g. a one-epoch linear-probe warm-up: one label, no overlap
    text = {} if narrow else dict(annotation_text=label, annotation_position=f"{where} left",
                                  annotation_font_size=11)
    fig.add_vrect(x0=0, x1=end, fillcolor=PHASE_COLOR, opacity=0.12, line_width=0, layer="below", **text)
    if tuning:
        fig.add_vline(x=end, line=dict(color=PHASE_COLOR, width=1, dash="dot"),
                      annotation_text=f"fine-tuning after a {label}" if narrow else "fine-tuning",
                      annotation_position=f"{where} right", annotation_font_size=11)


def loss_figure(metrics: pd.DataFrame, *, stage: str | None = None, steps_per_epoch: int | None = None,
                title: str | None = "Loss") -> go.Figure:
    """Train vs val loss per epoch, with the live per-batch train loss as a thin line.

    The x axis is in epochs (see :func:`curve_frame`); NaN / inf losses are left out.
    """
    frame = curve_frame(metrics, stage=stage, steps_per_epoch=steps_per_epoch)
    fig = go.Figure()
    _line(fig, frame[frame["kind"] == "batch"], "loss", name="train loss (live, per batch)", color=BATCH_COLOR,
          width=1, markers=False)
    epochs = frame[frame["kind"] == "epoch"]
    _line(fig, epochs, "loss", name="train loss", color=TRAIN_COLOR)
    _line(fig, epochs, "val_loss", name="val loss", color=VAL_COLOR)
    _phases(fig, epochs)
    _epoch_axis(fig, frame)
    fig.update_yaxes(title="loss")
    fig.update_layout(legend=dict(orientation="h", y=-0.25), uirevision="loss")
    return _layout(fig, title=title, height=340)


def metric_figure(metrics: pd.DataFrame, *, monitor: str = "val_macro_f1", stage: str | None = None,
                  title: str | None = "Metrics") -> go.Figure:
    """Train vs val accuracy, val macro F1 (and, multi-label, val mAP) per epoch; the monitored metric's best
    epoch starred.

    ``monitor`` is the run's checkpoint metric (``val_macro_f1``, ``val_accuracy``, ``val_map``
    or ``val_loss``); its line is drawn thicker. ``_line`` skips a metric the run did not log.
    """
    frame = curve_frame(metrics, stage=stage)
    epochs = frame[frame["kind"] == "epoch"] if not frame.empty else frame
    fig = go.Figure()
    for col, name, color, dash in (("accuracy", "train accuracy", TRAIN_COLOR, None),
                                   ("val_accuracy", "val accuracy", VAL_COLOR, None),
                                   ("val_macro_f1", "val macro F1", F1_COLOR, "dot"),
                                   ("val_map", "val mAP", MAP_COLOR, "dash")):
        _line(fig, epochs, col, name=name, color=color, dash=dash, width=3.5 if col == monitor else 2)
    average = _average_row(metrics, stage)
    if average is not None and monitor in average:
        # the final model averages the later fine-tuning epochs' weights: mark it, not one epoch
        first, last = average["epochs_averaged"]
        name = f"final model: average of epochs {first}-{last}"
        y = float(average[monitor]) if finite_number(average.get(monitor)) else None
        if monitor != "val_loss" and y is not None:
            fig.add_scatter(x=[float(last)], y=[y], mode="markers", name=name,
                            marker=dict(symbol="star", size=16, color=BEST_COLOR),
                            hovertemplate=f"{name}<br>{monitor}: %{{y:.4f}}<extra></extra>")
        else:
            fig.add_vline(x=float(last), line=dict(color=BEST_COLOR, dash="dash"), annotation_text=name)
    elif not epochs.empty and monitor in epochs.columns:
        vals = pd.to_numeric(epochs[monitor], errors="coerce")
        ok = vals.notna() & np.isfinite(vals)
        if ok.any():
            i = vals[ok].idxmin() if monitor == "val_loss" else vals[ok].idxmax()
            y = float(vals[i]) if monitor != "val_loss" else None
            x = float(epochs.at[i, "x"])
            choice = final_choice(metrics, stage=stage)
            label = (f"final model: {choice['chosen']}" if choice is not None and isinstance(choice.get("chosen"), str)
                     else f"best {monitor}")
            if y is not None:
                fig.add_scatter(x=[x], y=[y], mode="markers", name=label,
                                marker=dict(symbol="star", size=16, color=BEST_COLOR),
                                hovertemplate=f"best {monitor}: %{{y:.4f}} at epoch %{{x:.0f}}<extra></extra>")
            else:
                fig.add_vline(x=x, line=dict(color=BEST_COLOR, dash="dash"),
                              annotation_text=f"best val_loss (epoch {x:.0f})")
    _phases(fig, epochs, where="bottom")
    _epoch_axis(fig, frame)
    fig.update_yaxes(title="score", range=[0, 1.02])
    fig.update_layout(legend=dict(orientation="h", y=-0.25), uirevision="metrics")
    return _layout(fig, title=title, height=340)


# ---------------------------------------------------------------------------
# Progress and alerts
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """A run's progress as the Train page shows it.

    ``fraction`` in [0, 1]; ``text`` e.g. ``"epoch 3/10 · ETA 42 s"``; ``active``: the
    run is queued or running.
    """

    state: str
    fraction: float
    text: str
    active: bool


def format_seconds(seconds: Any) -> str:
    """``75`` -> ``"1 min 15 s"``; unknown -> ``"?"``."""
    if not finite_number(seconds):
        return "?"
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def progress(status: Mapping[str, Any], state: str) -> Progress:
    """Progress of a run from its ``status.json`` and its effective state (``core.runs.effective_state``)."""
    active = state in ("queued", "running")
    frac = status.get("progress")
    frac = float(frac) if finite_number(frac) else 0.0
    if state == "done":
        frac = 1.0
    parts = []
    if state == "queued":
        parts.append(str(status.get("message") or "queued"))
    else:
        ep, eps = status.get("epoch"), status.get("epochs")
        if ep is not None and eps:
            parts.append(f"epoch {ep}/{eps}")
        n_stages = status.get("stages") or 1
        if n_stages and int(n_stages) > 1:
            parts.append(f"model {status.get('stage_index', '?')}/{n_stages} ({status.get('stage')})")
        if active and state == "running":
            if finite_number(status.get("eta_s")) and frac > 0:
                parts.append(f"ETA {format_seconds(status.get('eta_s'))}")
            elif status.get("message"):
                parts.append(str(status.get("message")))
        else:
            parts.append(state)
            if finite_number(status.get("seconds")):
                parts.append(f"took {format_seconds(status.get('seconds'))}")
    return Progress(state=state, fraction=min(max(frac, 0.0), 1.0), text=" · ".join(parts) or state,
                    active=active)


def alerts(status: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The run's health alerts, most serious first, each with ``level`` and ``title`` added.

    Alerts come from ``status["alerts"]`` (one per kind and stage, kept up to date by the worker).
    """
    out = []
    for a in status.get("alerts") or []:
        if not isinstance(a, Mapping):
            continue
        kind = str(a.get("kind") or "alert")
        out.append({**a, "level": ALERT_LEVELS.get(kind, "warning"), "title": ALERT_TITLES.get(kind, kind)})
    return sorted(out, key=lambda a: 0 if a["level"] == "error" else 1)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

RUNS_TABLE_COLUMNS = ("run_id", "state", "task", "model", "epoch", "monitor", "best_value", "best_epoch",
                      "message", "created")


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    """``core.jobs.list_runs`` reduced to what the runs table shows, the state prefixed with an icon."""
    if runs is None or runs.empty:
        return pd.DataFrame(columns=list(RUNS_TABLE_COLUMNS))
    out = runs[[c for c in RUNS_TABLE_COLUMNS if c in runs.columns]].copy()
    out["state"] = [f"{STATE_ICONS.get(s, '')} {s}".strip() for s in out["state"].astype(str)]
    out["best_value"] = pd.to_numeric(out["best_value"], errors="coerce").round(4)
    return out.reset_index(drop=True)


def grid_params(table: pd.DataFrame) -> list[str]:
    """The grid's varied parameters: ``core.jobs.grid_table`` columns between ``state`` and ``monitor``."""
    if table is None or table.empty:
        return []
    cols = list(table.columns)
    try:
        return cols[cols.index("state") + 1: cols.index("monitor")]
    except ValueError:
        return []


def best_run(table: pd.DataFrame) -> str | None:
    """The run id with the best ``best_value`` of a grid table (``val_loss``: lowest), or None."""
    if table is None or table.empty or "best_value" not in table.columns:
        return None
    vals = pd.to_numeric(table["best_value"], errors="coerce")
    if not vals.notna().any():
        return None
    low = bool((table["monitor"] == "val_loss").all()) if "monitor" in table.columns else False
    return str(table.loc[vals.idxmin() if low else vals.idxmax(), "run_id"])


def grid_parallel_coordinates(table: pd.DataFrame, *, params: Sequence[str] | None = None,
                              title: str | None = None) -> go.Figure:
    """Parallel coordinates of a grid: one line per finished run through its parameters and scores.

    Parameters
    ----------
    table : DataFrame
        ``core.jobs.grid_table`` output.
    params : list of str, optional
        Parameter columns (default :func:`grid_params`). Text values (e.g. backbones)
        become categorical axes.

    Lines are coloured by ``best_value`` (the monitored val metric); the best run is red.
    """
    params = list(params) if params is not None else grid_params(table)
    rows = table[pd.to_numeric(table.get("best_value"), errors="coerce").notna()] if table is not None and \
        not table.empty else pd.DataFrame()
    fig = go.Figure()
    if rows.empty:
        fig.add_annotation(text="No finished grid run yet", showarrow=False, x=0.5, y=0.5, xref="paper",
                           yref="paper")
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
        return _layout(fig, title=title, height=360)
    rows = rows.reset_index(drop=True)
    dims = []
    for p in params:
        vals = rows[p]
        num = pd.to_numeric(vals, errors="coerce")
        if num.notna().all():
            ticks = sorted(set(num.astype(float).tolist()))
            dims.append(dict(label=p, values=num.astype(float).tolist(), tickvals=ticks,
                             ticktext=[f"{t:g}" for t in ticks]))
        else:
            cats = sorted({str(v) for v in vals})
            codes = [cats.index(str(v)) for v in vals]
            dims.append(dict(label=p, values=codes, tickvals=list(range(len(cats))), ticktext=cats))
    monitor = str(rows["monitor"].iloc[0]) if "monitor" in rows.columns else "best_value"
    score = pd.to_numeric(rows["best_value"], errors="coerce").astype(float)
    dims.append(dict(label=monitor, values=score.tolist(), tickformat=".3f"))
    for col in ("test_accuracy", "test_macro_f1"):
        if col in rows.columns and pd.to_numeric(rows[col], errors="coerce").notna().all():
            dims.append(dict(label=col, values=pd.to_numeric(rows[col]).astype(float).tolist(), tickformat=".3f"))
    low = monitor == "val_loss"
    best = score.idxmin() if low else score.idxmax()
    lo, hi = float(score.min()), float(score.max())
    norm = (score - lo) / (hi - lo) if hi > lo else pd.Series(0.5, index=score.index)
    if low:
        norm = 1 - norm
    color = (0.1 + 0.75 * norm).tolist()  # the rest: light -> dark indigo by score
    color[best] = 1.0  # the best run: red
    fig.add_trace(go.Parcoords(
        line=dict(color=color, cmin=0.0, cmax=1.0,
                  colorscale=[[0.0, "#E0E7FF"], [0.85, "#312E81"], [0.86, BEST_COLOR], [1.0, BEST_COLOR]]),
        dimensions=dims, labelangle=0, labelfont=dict(size=13), rangefont=dict(size=9), tickfont=dict(size=11),
    ))
    _layout(fig, title=title or f"Best run (red): {rows.at[best, 'run_id']} · {monitor} {score[best]:.4f}",
            height=380)
    fig.update_layout(margin=dict(l=60, r=60, t=110, b=30), title=dict(y=0.97))  # room for the axis labels above the lines
    return fig


__all__ = ["ALERT_LEVELS", "Progress", "alerts", "best_run", "curve_frame", "format_seconds",
           "grid_parallel_coordinates", "grid_params", "loss_figure", "metric_figure", "progress", "runs_table",
           "stages"]
