"""The self-contained HTML report of a run: one file a stakeholder opens offline.

:func:`build_report` turns a run directory (see :mod:`core.runs`) and its workspace into
**one** HTML file: no server, no internet. plotly.js is inlined once, every figure is a
small ``Plotly.newPlot`` call on inlined JSON, thumbnails are ``data:`` URIs (small JPEGs),
and the file holds no ``http://`` or ``https://`` text at all (plotly.js's built-in URLs —
XML namespaces, map-tile servers it never contacts here — are written with escaped
slashes, which JavaScript reads as the same strings).

Sections, in order (:data:`SECTIONS`): model card, dataset, cleaning log, training curves,
confusion matrix, per-class table, PR curves with the chosen thresholds, calibration,
embedding map, out-of-distribution examples, most confident mistakes. Each section is
built on its own: a piece that is missing (no review decisions, no embeddings module, an
unreadable image) makes *that section* say so; the report is still written.

Safety: every user-controlled string (class names, file names, dataset names, notes) is
escaped with :func:`html.escape` before it reaches the HTML; strings inside figure JSON
are encoded with ``<``, ``>``, ``&`` as ``\\uXXXX`` escapes, so a label such as
``</script><script>alert(1)</script>`` cannot end a ``<script>`` element, and they are
HTML-escaped for plotly, which renders its text as SVG text (never as HTML).

>>> html_text = build_report("runs/my-run", workspace=ws)          # doctest: +SKIP
>>> build_report("runs/my-run", workspace=ws, out="report.html")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from core import runs
from core.workspace import Workspace, atomic_write_text

#: Section keys, in report order.
SECTIONS = ("model_card", "dataset", "cleaning", "training", "confusion", "per_class", "pr_curves",
            "calibration", "embeddings", "ood", "mistakes")

#: Section status: ``ok`` (built from the run's data), ``missing`` (the data does not exist;
#: the section says what is missing), ``error`` (the data exists but could not be used; the
#: section gives the reason).
STATUSES = ("ok", "missing", "error")

#: plotly.js options for every figure: no logo, no link to plotly's cloud.
PLOTLY_CONFIG = {"displaylogo": False, "showLink": False, "showSendToCloud": False, "showEditInChartStudio": False,
                 "responsive": True, "plotlyServerURL": "", "modeBarButtonsToRemove": ["sendDataToCloud"]}

MAX_CURVE_POINTS = 200
MAX_MAP_POINTS = 5000
MAX_MAP_COLOURS = 20
#: Figures with one row / line per class show at most this many classes (the tables list all).
MAX_FIGURE_CLASSES = 40
MAX_LOG_ROWS = 300

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Section:
    """One part of the report: ``body`` is trusted HTML built by this module (user text escaped)."""

    key: str
    title: str
    body: str
    status: str = "ok"
    note: str = ""


@dataclass
class _Context:
    """What every section builder may read (loaded once)."""

    rd: runs.RunDir
    workspace: Workspace | None
    split: str
    max_thumbnails: int
    thumbnail_size: int
    config: dict[str, Any]
    status: dict[str, Any]
    labels: dict[str, Any] | None = None
    predictions: Any = None          # runs.Predictions of the report's split
    evaluation: dict[str, Any] | None = None
    dataset: Any = None              # core.datasets.Dataset
    dataset_error: str = ""
    boxes: dict[str, tuple] = field(default_factory=dict)
    embeddings: Any = None
    embeddings_error: str = ""
    facts: dict[str, Any] = field(default_factory=dict)  # gathered for the model card
    figure_count: int = 0


# ---------------------------------------------------------------------------
# escaping and encoding
# ---------------------------------------------------------------------------

_URL_RE = re.compile(r"(?i)(https?):(//)")


def esc(text: Any) -> str:
    """HTML-escape user text for element content and quoted attributes (also breaks ``scheme://``)."""
    return _URL_RE.sub(r"\1&#58;//", html.escape("" if text is None else str(text), quote=True))


def _plot_text(text: Any) -> str:
    """A label for plotly: HTML-escaped (plotly shows the entities as the characters)."""
    return html.escape(str(text), quote=False)


def _script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>``, ``&`` and no ``scheme://`` text."""
    import plotly.io.json as pjson

    text = pjson.to_json_plotly(obj)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _URL_RE.sub(r"\1:\\/\\/", text)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js (the version plotly.py ships), with ``http(s)://`` written ``http(s):\\/\\/``.

    In JavaScript strings, regular expressions and comments ``\\/`` stands for ``/``, so the
    library behaves the same; the report simply holds no URL text. It never contacts
    those URLs anyway: they serve map tiles and plotly's cloud, which the report does not use.
    """
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if re.search(r"(?i)</script", js):  # not the case for the bundled versions; keep the guarantee
        js = re.sub(r"(?i)</script", r"<\\/script", js)
    return _URL_RE.sub(r"\1:\\/\\/", js)


# ---------------------------------------------------------------------------
# small HTML helpers
# ---------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(f) else f"{100 * f:.1f}%"


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _table(rows: Sequence[Sequence[Any]], header: Sequence[str], *, numeric: Sequence[bool] | None = None,
           cls: str = "") -> str:
    """An HTML table; every cell is escaped (pass pre-formatted strings)."""
    numeric = list(numeric or [False] * len(header))
    th = "".join(f'<th class="{"num" if n else ""}">{esc(h)}</th>' for h, n in zip(header, numeric))
    body = []
    for r in rows:
        tds = "".join(f'<td class="{"num" if n else ""}">{esc(c)}</td>' for c, n in zip(r, numeric))
        body.append(f"<tr>{tds}</tr>")
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _kv_table(items: Sequence[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v) if not isinstance(v, str) else v)}</td></tr>"
                   for k, v in items)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _figure(ctx: _Context, fig) -> str:
    """A plotly figure as a div + a ``Plotly.newPlot`` call on inlined, script-safe JSON."""
    ctx.figure_count += 1
    div_id = f"fig-{ctx.figure_count}"
    d = fig.to_plotly_json()
    height = (d.get("layout") or {}).get("height") or 420
    payload = _script_json({"data": d.get("data", []), "layout": d.get("layout", {})})
    return (f'<div id="{div_id}" class="plotly-graph-div fig" style="height:{int(height)}px"></div>'
            f'<script>(function(){{var f={payload};'
            f'Plotly.newPlot("{div_id}",f.data,f.layout,LOUPE_PLOTLY_CONFIG);}})();</script>')


# ---------------------------------------------------------------------------
# thumbnails
# ---------------------------------------------------------------------------

def thumbnail_data_uri(path: str | Path, *, box: Sequence[float] | None = None, size: int = 80,
                       quality: int = 80) -> str | None:
    """A small JPEG of an image (longest side ``size`` px) as a ``data:image/jpeg;base64,...`` URI.

    ``None`` when the image cannot be decoded (missing, corrupt, too large): callers show a
    placeholder. Decoding goes through :func:`core.images.load_image` (EXIF, modes, bombs).
    """
    from PIL import Image

    from core import images

    try:
        arr = images.load_image(path, box=box)
    except (images.ImageError, OSError, ValueError):
        return None
    im = Image.fromarray(arr)
    im.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb_card(ctx: _Context, path: str, sample_id: str, caption_html: str) -> str:
    uri = thumbnail_data_uri(path, box=ctx.boxes.get(str(sample_id)), size=ctx.thumbnail_size)
    side = max(96, ctx.thumbnail_size)  # small crops are shown enlarged (object-fit keeps the aspect)
    box = f"width:{side}px;height:{side}px"
    if uri is None:
        img = f'<div class="noimg" style="{box}">image unreadable</div>'
    else:
        img = f'<img src="{uri}" alt="{esc(sample_id)}" title="{esc(sample_id)}" style="{box}">'
    return f'<figure class="thumb" style="width:{side + 40}px">{img}<figcaption>{caption_html}</figcaption></figure>'


# ---------------------------------------------------------------------------
# loading what the sections share
# ---------------------------------------------------------------------------

def _default_workspace(rd: runs.RunDir) -> Workspace:
    from core import workspace as wsmod

    parent = rd.path.resolve().parent
    if parent.name == "runs" and (parent.parent / "loupe.sqlite").exists():
        return Workspace(parent.parent)
    return wsmod.home()


def _load_context(run_dir, *, workspace: Workspace | None, split: str, max_thumbnails: int,
                  thumbnail_size: int) -> _Context:
    rd = runs.require_predictions(run_dir)
    ctx = _Context(rd=rd, workspace=workspace, split=split, max_thumbnails=max_thumbnails,
                   thumbnail_size=thumbnail_size, config=runs.read_config(rd), status=runs.read_status(rd))
    ctx.labels = runs.read_labels(rd)
    ctx.predictions = runs.read_predictions(rd, split=split)
    return ctx


def _load_dataset(ctx: _Context) -> None:
    from core import datasets

    ds_id = ctx.config.get("dataset_id")
    if not ds_id:
        ctx.dataset_error = "the run's config.json names no dataset_id"
        return
    if ctx.workspace is None:
        ctx.dataset_error = "no workspace was given"
        return
    try:
        ctx.dataset = datasets.open_dataset(ctx.workspace, ds_id)
    except (ValueError, OSError) as exc:
        ctx.dataset_error = f"dataset {ds_id!r} cannot be opened: {exc}"
        return
    s = ctx.dataset.samples
    if {"x1", "y1", "x2", "y2"} <= set(s.columns):
        b = s[["x1", "y1", "x2", "y2"]].to_numpy(dtype=float)
        has = ~np.isnan(b).any(axis=1)
        ctx.boxes = {str(sid): tuple(row) for sid, row, h in zip(s["sample_id"], b, has) if h}


def _single_label_view(pred) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """(y_true, y_pred, probs, classes) of the labelled rows of a single-label or hierarchical run (finest level)."""
    keep = pred.y_true >= 0
    return pred.y_true[keep], pred.y_pred[keep], pred.probs[keep], tuple(pred.classes)


# ---------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------

def _clip_counts(counts: pd.Series) -> tuple[pd.Series, str]:
    """Counts ready for a bar chart (labels escaped for plotly); above MAX_FIGURE_CLASSES, the largest and smallest."""
    note = ""
    if len(counts) > MAX_FIGURE_CLASSES:
        order = counts.sort_values(ascending=False)
        half = MAX_FIGURE_CLASSES // 2
        counts = pd.concat([order.head(half), order.tail(half)])
        note = _p(f"{len(order):,} classes: the {half} largest and the {half} smallest are drawn.")
    counts = counts.copy()
    counts.index = [_plot_text(i) for i in counts.index]
    return counts, note


def _section_dataset(ctx: _Context) -> Section:
    from core import charts, datasets

    title = "Dataset"
    if ctx.dataset is None:
        counts = ctx.config.get("counts") or {}
        body = _note(f"The dataset could not be opened ({esc(ctx.dataset_error)}); what the run recorded:")
        if counts:
            body += _kv_table([(k, v) for k, v in counts.items()])
        return Section("dataset", title, body, "missing", ctx.dataset_error)
    ds = ctx.dataset
    s = datasets.dataset_summary(ds)
    ctx.facts["dataset"] = s
    items = [("name", ds.name), ("dataset id", ds.dataset_id), ("task", s["task"]),
             ("images found", s["n_samples"]), ("valid samples", s["n_valid"]), ("invalid files", s["n_invalid"]),
             ("split (train / val / test)", " / ".join(f"{s['split_counts'].get(k, 0):,}"
                                                       for k in ("train", "val", "test"))),
             ("unseen images (for out-of-distribution checks)", s.get("n_unseen", 0))]
    if s["task"] == "hierarchical":
        items.insert(3, ("levels (coarse → fine)", " › ".join(s["levels"])))
    body = _kv_table(items)
    body += _p("Label counts are over the whole dataset (all splits), as loaded — before review decisions.")
    cc = s.get("class_counts") or {}
    if s["task"] == "hierarchical":
        for lv in s["levels"]:
            series, cut = _clip_counts(pd.Series(cc.get(lv, {}), dtype=int))
            body += f"<h3>Level {esc(lv)}</h3>" + cut + _figure(ctx, charts.label_distribution(series))
    elif cc:
        series, cut = _clip_counts(pd.Series(cc, dtype=int))
        body += cut + _figure(ctx, charts.label_distribution(series))
    warnings = list(s.get("warnings") or [])
    if warnings:
        body += "<h3>Loader warnings</h3><ul>" + "".join(f"<li>{esc(w)}</li>" for w in warnings[:20]) + "</ul>"
    if s.get("invalid_examples"):
        rows = [(e.get("path"), e.get("problem")) for e in s["invalid_examples"][:20]]
        body += "<h3>Files that could not be used</h3>" + _table(rows, ["file", "problem"])
    return Section("dataset", title, body)


def _section_cleaning(ctx: _Context) -> Section:
    title = "Cleaning log"
    cfg = ctx.config
    run_bits = []
    patch = cfg.get("label_patch_version")
    if patch == "raw":
        run_bits.append("The run trained on the raw labels as loaded (review decisions deliberately ignored).")
    elif patch not in (None, "", 0, "0"):
        run_bits.append(f"The run trained on the labels after review (decision version <b>{esc(patch)}</b>).")
    elif patch is not None:
        run_bits.append("The run trained on the labels as loaded (no review decision was in effect).")
    if cfg.get("exclude_classes"):
        run_bits.append("Classes left out of training: " + ", ".join(f"<code>{esc(c)}</code>"
                                                                     for c in cfg["exclude_classes"]) + ".")
    head = "".join(_p(b) for b in run_bits)
    if ctx.dataset is None:
        return Section("cleaning", title, head + _note(f"No cleaning log: {esc(ctx.dataset_error)}."), "missing")
    try:
        from core import review
        log = review.decisions(ctx.workspace, ctx.dataset.dataset_id, active_only=True)
        version = review.decision_version(ctx.workspace, ctx.dataset.dataset_id)
    except (ImportError, AttributeError) as exc:
        return Section("cleaning", title, head + _note(f"The review log is not available in this installation "
                                                       f"({esc(exc)})."), "missing")
    ctx.facts["decisions"] = log
    if patch not in (None, "raw") and str(patch) != str(version):
        head += _note(f"The review state has changed since (now version {esc(version)}): the log below is the "
                      "current one, not necessarily what this run trained on.")
    changed = log[log["action"].isin(["exclude", "relabel"])] if len(log) else log
    if not len(changed):
        kept = int((log["action"] == "keep").sum()) if len(log) else 0
        msg = "No review decisions recorded for this dataset: nothing was excluded or relabelled."
        if kept:
            msg = (f"No sample was excluded or relabelled ({kept:,} flagged sample(s) reviewed and kept as they "
                   "were).")
        return Section("cleaning", title, head + _p(esc(msg)))
    n_excl = int((changed["action"] == "exclude").sum())
    n_rel = int((changed["action"] == "relabel").sum())
    n_keep = int((log["action"] == "keep").sum())
    body = head + _p(f"<b>{n_excl:,}</b> sample(s) excluded and <b>{n_rel:,}</b> relabelled after review; "
                     f"{n_keep:,} flagged sample(s) reviewed and kept unchanged.")
    det = log.assign(detector=log["detector"].fillna("").astype(str).replace("", "(manual)"))
    by = det.groupby(["detector", "action"]).size().unstack(fill_value=0)
    rows = [(d, *(int(by.loc[d].get(a, 0)) for a in ("exclude", "relabel", "keep"))) for d in by.index]
    body += "<h3>By detector (why)</h3>" + _table(rows, ["detector", "excluded", "relabelled", "kept"],
                                                   numeric=[False, True, True, True])
    shown = changed.head(MAX_LOG_ROWS)
    rows = []
    for r in shown.itertuples():
        when = _dt.datetime.fromtimestamp(float(r.created_at), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M") \
            if r.created_at is not None and not pd.isna(r.created_at) else ""
        rows.append((r.sample_id, r.action, _cell(r.label_column), _cell(r.old_label), _cell(r.new_label),
                     _cell(r.detector) or "(manual)", _cell(r.note), when))
    body += "<h3>Decisions in effect</h3>" + _table(
        rows, ["sample", "action", "label column", "old label", "new label", "detector", "note", "when (UTC)"])
    if len(changed) > MAX_LOG_ROWS:
        body += _note(f"{len(changed) - MAX_LOG_ROWS:,} more decision(s) not listed.")
    return Section("cleaning", title, body)


def _section_training(ctx: _Context) -> Section:
    title = "Training curves"
    m = runs.read_metrics(ctx.rd)
    if m.empty or "kind" not in m.columns or not (m["kind"] == "epoch").any():
        return Section("training", title, _note("No per-epoch metrics were recorded (metrics.jsonl is missing "
                                                "or empty)."), "missing")
    ep = m[m["kind"] == "epoch"]
    st = ctx.status
    monitor = st.get("monitor") or ctx.config.get("monitor")
    from core import training_charts

    span = training_charts.averaged_epochs(m)
    kept = (f"; the final model averages the weights of epochs {span[0]}-{span[1]} ({esc(monitor)} "
            f"{_fmt(st.get('best_value'))} on val)" if span and st.get("best_value") is not None else
            f"; best {esc(monitor)} {_fmt(st.get('best_value'))} at epoch {esc(st.get('best_epoch'))} "
            "(the checkpoint kept)" if st.get("best_value") is not None else "")
    text = (f"{len(ep)} epoch(s) trained; state <b>{esc(runs.effective_state(st))}</b>" + kept
            + (f"; {_fmt(st.get('seconds'), 1)} s" if st.get("seconds") is not None else "") + ".")
    if st.get("stop_reason"):
        text += f" Stopped early: {esc(st['stop_reason'])}."
    alerts = st.get("alerts") or []

    body = _p(text) + _figure(ctx, training_charts.loss_figure(m, title="Loss"))
    body += _figure(ctx, training_charts.metric_figure(m, monitor=monitor or "val_macro_f1", title="Accuracy and F1"))
    if alerts:
        body += "<h3>Health alerts during training</h3><ul>" + "".join(
            f"<li>{esc(a.get('message', a))}</li>" for a in alerts if isinstance(a, Mapping)) + "</ul>"
    ctx.facts["epochs"] = len(ep)
    return Section("training", title, body)


def _evaluation(ctx: _Context) -> dict[str, Any]:
    if ctx.evaluation is None:
        from core import metrics

        ctx.evaluation = metrics.evaluate_predictions(ctx.predictions, n_bootstrap=0)  # CIs not shown
    return ctx.evaluation


def _confusion_figure(cm: np.ndarray, classes: Sequence[str]):
    """Row-normalised confusion heatmap; above MAX_FIGURE_CLASSES, the classes with the most errors."""
    from core import charts

    if len(classes) > MAX_FIGURE_CLASSES:
        off = cm - np.diag(np.diag(cm))
        worst = np.sort(np.argsort(-(off.sum(axis=0) + off.sum(axis=1)), kind="stable")[:MAX_FIGURE_CLASSES])
        cm, classes = cm[np.ix_(worst, worst)], [classes[i] for i in worst]
    rows = cm.sum(axis=1, keepdims=True).astype(float)
    share = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    return charts.confusion_matrix(share, [_plot_text(c) for c in classes], counts=cm, normalized=True)


def _section_confusion(ctx: _Context) -> Section:
    title = "Confusion matrix"
    if ctx.predictions.task == "multilabel":
        return Section("confusion", title, _note("A multi-label run has no single confusion matrix; see the "
                                                 "per-label table and PR curves."), "missing")
    ev = _evaluation(ctx)
    cm = np.asarray(ev["confusion"]["matrix"], dtype=int)
    classes = ev["confusion"]["classes"]
    fig = _confusion_figure(cm, classes)
    body = _p(f"Rows: true class; columns: predicted class; colour and numbers: share of the row (the class's "
              f"recall on the diagonal); hover for counts. {esc(ctx.split)} split, {int(cm.sum()):,} samples.")
    if len(classes) > MAX_FIGURE_CLASSES:
        body += _p(f"{len(classes):,} classes: the {MAX_FIGURE_CLASSES} involved in the most mistakes are drawn "
                   "(shares are of the row within them).")
    if ctx.predictions.task == "hierarchical":
        body += _p("One matrix per level, coarse to fine.")
        for lv in ctx.predictions.levels[:-1]:
            b = ev["levels"][lv]
            body += f"<h3>Level {esc(lv)}</h3>" + _figure(ctx, _confusion_figure(
                np.asarray(b["confusion"]["matrix"], dtype=int), b["confusion"]["classes"]))
        body += f"<h3>Level {esc(ctx.predictions.levels[-1])}</h3>"
    body += _figure(ctx, fig)
    return Section("confusion", title, body)


def _section_per_class(ctx: _Context) -> Section:
    title = "Per-class metrics"
    ev = _evaluation(ctx)
    ctx.facts["evaluation"] = ev
    thr = runs.class_thresholds(ctx.rd)
    head = [("accuracy" if ev["task"] != "multilabel" else "accuracy (known entries)", ev.get("accuracy")),
            ("macro F1", ev.get("macro_f1")), ("mean average precision", ev.get("mean_average_precision")),
            ("expected calibration error", ev.get("ece")), ("samples", ev.get("n_samples"))]
    if ev["task"] == "hierarchical":
        for lv in ev.get("level_order", []):
            head.append((f"level {lv}: accuracy / macro F1",
                         f"{_fmt(ev['levels'][lv].get('accuracy'))} / {_fmt(ev['levels'][lv].get('macro_f1'))}"))
        head.append(("hierarchy-consistent predictions", ev.get("consistency_rate")))
    body = _p(f"On the <b>{esc(ctx.split)}</b> split (never used for training or model selection).") + _kv_table(head)
    rows = []
    for c, r in (ev.get("per_class") or {}).items():
        t = thr.get(c)
        rows.append((c, _fmt(r.get("precision")), _fmt(r.get("recall")), _fmt(r.get("f1")),
                     _fmt(r.get("support")), _fmt(r.get("average_precision")), _fmt(r.get("roc_auc")),
                     _fmt(t) if t is not None else "argmax"))
    rows.sort(key=lambda r: (float(r[3]) if r[3] != "n/a" else -1))
    body += _p("Sorted by F1, weakest first. <i>threshold</i>: the decision threshold saved for the class "
               "(on the Evaluate page or with <code>python -m core evaluate --save-thresholds</code>); "
               "<i>argmax</i> = the most probable class wins.")
    body += _table(rows, ["class", "precision", "recall", "F1", "support", "AP", "ROC AUC", "threshold"],
                   numeric=[False] + [True] * 7)
    return Section("per_class", title, body)


def _pr_at(y: np.ndarray, s: np.ndarray, t: float) -> tuple[float, float]:
    pos = s >= t
    tp = int((pos & y).sum())
    prec = tp / int(pos.sum()) if pos.any() else float("nan")
    rec = tp / int(y.sum()) if y.any() else float("nan")
    return prec, rec


def _section_pr(ctx: _Context) -> Section:
    from core import charts, metrics

    title = "Precision-recall curves"
    pred = ctx.predictions
    if pred.task == "multilabel":
        known = ~np.isnan(pred.y_true)
        cs = metrics.multilabel_curves(pred.y_true, pred.probs, labels=pred.classes)
        ybin = {c: (pred.y_true[known[:, k], k] == 1, pred.probs[known[:, k], k]) for k, c in enumerate(pred.classes)}
    else:
        y, _, p, classes = _single_label_view(pred)
        cs = metrics.one_vs_rest_curves(y, p, classes=classes)
        ybin = {c: (y == k, p[:, k]) for k, c in enumerate(classes)}
    saved = runs.read_thresholds(ctx.rd)
    saved_classes = runs.class_thresholds(ctx.rd)
    ev = _evaluation(ctx)
    suggested = {c: v["threshold"] for c, v in (ev.get("thresholds") or {}).items() if v}
    use_saved = bool(saved_classes)
    chosen = saved_classes if use_saved else suggested
    curves, marks = {}, {}
    drawn = [c for c in cs.classes if len(cs.curves[c].recall)]
    clipped = ""
    if len(drawn) > MAX_FIGURE_CLASSES:
        drawn = sorted(drawn, key=lambda c: cs.curves[c].average_precision)[:MAX_FIGURE_CLASSES]
        clipped = (f" {len(cs.classes):,} classes: the {MAX_FIGURE_CLASSES} with the lowest average precision "
                   "are drawn.")
    for c in drawn:
        cv = cs.curves[c]
        if len(cv.recall) == 0:
            continue
        idx = np.unique(np.linspace(0, len(cv.recall) - 1, min(len(cv.recall), MAX_CURVE_POINTS)).astype(int))
        curves[_plot_text(c)] = SimpleNamespace(recall=cv.recall[idx], precision=cv.precision[idx],
                                                average_precision=cv.average_precision)
        if c in chosen:
            yb, sc = ybin[c]
            pr, rc = _pr_at(np.asarray(yb, bool), sc, float(chosen[c]))
            marks[_plot_text(c)] = (rc, pr)
    if not curves:
        return Section("pr_curves", title, _note("No class has a positive sample in this split: no curve."),
                       "missing")
    tp = (saved.get("meta") or {}).get("target_precision") if use_saved else ev.get("target_precision")
    fig = charts.pr_curves(curves, points=marks, target_precision=tp)
    if use_saved:
        text = (f"Markers: the thresholds saved with the run ({len(saved_classes)} class(es)"
                + (f", chosen for precision ≥ {_fmt(tp, 2)}" if tp is not None else "")
                + f"), placed at the precision and recall they give on the {esc(ctx.split)} split.")
    else:
        text = (f"No thresholds were saved with this run, so decisions are the argmax. Markers: the threshold "
                f"that would give precision ≥ {_fmt(tp, 2)} on this split, where reachable "
                f"({len(suggested)} of {len(cs.classes)} classes).")
    body = _p(esc("One-vs-rest curves, one per class (click a legend entry to hide it). ") + text + esc(clipped))
    body += _figure(ctx, fig)
    ctx.facts["thresholds_saved"] = use_saved
    ctx.facts["ood_threshold"] = (saved.get("ood") or {}).get("threshold")
    return Section("pr_curves", title, body)


def _section_calibration(ctx: _Context) -> Section:
    from core import charts, metrics

    title = "Calibration"
    pred = ctx.predictions
    if pred.task == "multilabel":
        known = ~np.isnan(pred.y_true)
        cal = metrics.calibration_bins(pred.y_true[known].astype(int), pred.probs[known])
        what = "each known (sample, label) entry's probability against how often the label is present"
    else:
        y, _, p, _ = _single_label_view(pred)
        cal = metrics.calibration_bins(y, p)
        what = "the top predicted probability (confidence) against how often that prediction is right"
    ctx.facts["ece"] = cal.ece
    nonempty = cal.count > 0
    over = float(np.sum((cal.confidence - cal.accuracy)[nonempty] * cal.count[nonempty]) / max(1, cal.n_samples))
    verdict = ("well calibrated" if cal.ece < 0.05 else
               ("over-confident (probabilities higher than the hit rate)" if over > 0 else
                "under-confident (probabilities lower than the hit rate)"))
    body = _p(f"Reliability diagram: {esc(what)}, in 15 equal-width bins. Expected calibration error "
              f"<b>{_fmt(cal.ece)}</b> (0 is perfect); on the whole the model is {esc(verdict)}.")
    body += _figure(ctx, charts.reliability_diagram(cal))
    return Section("calibration", title, body)


def _compute_embeddings(ctx: _Context) -> None:
    if ctx.embeddings is not None or ctx.embeddings_error:
        return
    try:
        from core import embeddings as emb
        compute = emb.compute_embeddings
    except (ImportError, AttributeError) as exc:
        ctx.embeddings_error = f"embeddings are not available in this installation ({exc})"
        return
    try:
        ctx.embeddings = compute(str(ctx.rd.path), workspace=ctx.workspace)
    except (ValueError, OSError, RuntimeError) as exc:
        ctx.embeddings_error = f"the embeddings could not be computed: {exc}"


def _embedding_map_figure(points: np.ndarray, labels: Sequence[str], hover: Sequence[str], wrong: np.ndarray):
    """2-D scatter of embedded samples, one trace per label (SVG, not WebGL: opens anywhere)."""
    import plotly.graph_objects as go

    from core.charts import PALETTE, _layout

    fig = go.Figure()
    labels = np.asarray(labels, dtype=object)
    hover = np.asarray(hover, dtype=object)
    for i, lab in enumerate(sorted(set(labels.tolist()))):
        m = labels == lab
        fig.add_trace(go.Scatter(
            x=points[m, 0], y=points[m, 1], mode="markers", name=str(lab) or "(unknown)",
            marker=dict(size=np.where(wrong[m], 9, 6), color=PALETTE[i % len(PALETTE)], opacity=0.75,
                        symbol=np.where(wrong[m], "x", "circle").tolist()),
            hovertext=hover[m], hoverinfo="text"))
    fig.update_xaxes(title="component 1", showticklabels=False)
    fig.update_yaxes(title="component 2", showticklabels=False)
    return _layout(fig, height=520)


def _score_histogram_figure(groups: Mapping[str, np.ndarray], *, threshold: float | None, xaxis: str):
    import plotly.graph_objects as go

    from core.charts import BAD_COLOR, PALETTE, _layout

    fig = go.Figure()
    for i, (name, v) in enumerate(groups.items()):
        fig.add_trace(go.Histogram(x=np.asarray(v, dtype=float), name=name, opacity=0.6, nbinsx=40,
                                   marker_color=PALETTE[i % len(PALETTE)], histnorm="probability"))
    if threshold is not None:
        fig.add_vline(x=float(threshold), line=dict(color=BAD_COLOR, width=2), annotation_text="threshold")
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.25))
    fig.update_xaxes(title=xaxis)
    fig.update_yaxes(title="share of images")
    return _layout(fig, height=320)


def _section_embeddings(ctx: _Context) -> Section:
    title = "Embedding map"
    _compute_embeddings(ctx)
    if ctx.embeddings is None:
        return Section("embeddings", title, _note(esc(_sentence(ctx.embeddings_error))), "missing")
    from core import embeddings as emb

    E = ctx.embeddings
    n = len(E.sample_ids)
    sel = np.arange(n)
    if n > MAX_MAP_POINTS:
        sel = np.sort(np.random.default_rng(0).choice(n, MAX_MAP_POINTS, replace=False))
    proj = emb.project(np.asarray(E.vectors)[sel], method="pca", dims=2, seed=0)
    pts = np.asarray(proj.points, dtype=float)
    labels = np.asarray(E.labels, dtype=object)[sel].astype(str)
    preds = np.asarray(E.preds, dtype=object)[sel].astype(str)
    ids = np.asarray(E.sample_ids, dtype=object)[sel]
    splits = np.asarray(E.splits, dtype=object)[sel]
    wrong = (labels != "") & (labels != preds)
    colour = labels.copy()
    values, counts = np.unique(colour, return_counts=True)
    if len(values) > MAX_MAP_COLOURS:  # e.g. multi-label tag sets: colour the most common, lump the rest
        keep = set(values[np.argsort(-counts, kind="stable")][: MAX_MAP_COLOURS - 1].tolist())
        colour = np.array([v if v in keep else "(other)" for v in colour], dtype=object)
    fig = _embedding_map_figure(pts, [_plot_text(v) for v in colour],
                                [_plot_text(f"{i} ({s}) · true {t or '?'} · predicted {p}")
                                 for i, s, t, p in zip(ids, splits, labels, preds)], wrong)
    body = _p(f"The model's embedding of {len(sel):,} image(s) (all splits) projected to 2-D with PCA, coloured by "
              "true label; crosses mark wrong predictions. Tight single-colour clusters are classes the model "
              "separates well; mixed clusters are classes it confuses."
              + (f" A random {MAX_MAP_POINTS:,} of the {n:,} images are shown." if n > MAX_MAP_POINTS else ""))
    body += _figure(ctx, fig)
    return Section("embeddings", title, body)


def _section_ood(ctx: _Context) -> Section:
    title = "Out-of-distribution examples"
    _compute_embeddings(ctx)
    if ctx.embeddings is None:
        return Section("ood", title, _note(esc(_sentence(ctx.embeddings_error))), "missing")
    try:
        from core import embeddings as emb
        embed_paths, evaluate_ood = emb.embed_paths, emb.evaluate_ood
    except (ImportError, AttributeError) as exc:
        return Section("ood", title, _note(f"Out-of-distribution scoring is not available in this installation "
                                           f"({esc(exc)})."), "missing")
    unseen_paths = list(ctx.dataset.unseen_paths) if ctx.dataset is not None else []
    if not unseen_paths:
        return Section("ood", title, _note("The dataset has no unseen images (a folder of unlabelled images kept "
                                           "beside it, for out-of-distribution checks), so there is nothing to "
                                           "show here."), "missing")
    E = ctx.embeddings
    vecs, ok = embed_paths(str(ctx.rd.path), unseen_paths, workspace=ctx.workspace)
    ok = np.asarray(ok, dtype=bool)
    saved = runs.read_thresholds(ctx.rd).get("ood") or {}
    ev = evaluate_ood(E, vecs, method=saved.get("method") or "mahalanobis")
    thr = float(saved["threshold"]) if saved.get("threshold") is not None else None
    use_thr = thr if thr is not None else float(ev.threshold)
    s_unseen, s_test = np.asarray(ev.unseen_scores, float), np.asarray(ev.test_scores, float)
    flagged = float(np.mean(s_unseen > use_thr)) if len(s_unseen) else float("nan")
    test_flagged = float(np.mean(s_test > use_thr)) if len(s_test) else float("nan")
    ctx.facts["ood_flag_rate"] = flagged
    body = _p(f"Scores from the model's embedding ({esc(ev.method)}; higher = less like the training images) for "
              f"{int(ok.sum()):,} unseen image(s) and the test images. Separation (AUROC, 1 = perfect): "
              f"<b>{_fmt(ev.auroc)}</b>.")
    if thr is not None:
        body += _p(f"Saved threshold <b>{_fmt(thr)}</b>: it flags {_pct(flagged)} of the unseen images as "
                   f"out-of-distribution and {_pct(test_flagged)} of the test images (false alarms).")
    else:
        body += _note(f"No out-of-distribution threshold is saved with this run (set one on the Embeddings page). "
                      f"For illustration, the threshold that flags {_pct(ev.fpr)} of test images "
                      f"({_fmt(use_thr)}) would flag {_pct(flagged)} of the unseen images.")
    if int((~ok).sum()):
        body += _note(f"{int((~ok).sum())} unseen file(s) could not be decoded and were skipped.")
    body += _figure(ctx, _score_histogram_figure({"test images": s_test, "unseen images": s_unseen},
                                                 threshold=use_thr, xaxis="out-of-distribution score"))
    ok_paths = [p for p, k in zip(unseen_paths, ok) if k]
    order = np.argsort(-s_unseen, kind="stable")[: ctx.max_thumbnails]
    cards = []
    for i in order:
        flag = "flagged" if s_unseen[i] > use_thr else "not flagged"
        cap = f"{esc(Path(ok_paths[i]).name)}<br>score {_fmt(float(s_unseen[i]), 2)} · {flag}"
        cards.append(_thumb_card(ctx, ok_paths[i], "", cap))
    if cards:
        body += (f"<h3>The {len(cards)} most unusual unseen images</h3>"
                 f"<div class='grid'>{''.join(cards)}</div>")
    return Section("ood", title, body)


def _section_mistakes(ctx: _Context) -> Section:
    title = "Most confident mistakes"
    pred = ctx.predictions
    cards = []
    if pred.task == "multilabel":
        y, p = pred.y_true, pred.probs
        known = ~np.isnan(y)
        wrong = known & ((p >= 0.5).astype(float) != np.nan_to_num(y))
        err = np.where(wrong, np.abs(p - np.nan_to_num(y)), 0.0)
        rows = np.flatnonzero(wrong.any(axis=1))
        rows = rows[np.argsort(-err[rows].max(axis=1), kind="stable")][: ctx.max_thumbnails]
        for i in rows:
            bits = [f"{esc(c)} {'missed' if y[i, k] == 1 else 'wrongly tagged'} ({_fmt(p[i, k], 2)})"
                    for k, c in enumerate(pred.classes) if wrong[i, k]]
            cards.append(_thumb_card(ctx, str(pred.paths[i]), str(pred.sample_ids[i]),
                                     f"{esc(pred.sample_ids[i])}<br>" + "<br>".join(bits[:3])))
        n_wrong = int(wrong.any(axis=1).sum())
    else:
        keep = np.flatnonzero(pred.y_true >= 0)
        yt, yp, p = pred.y_true[keep], pred.y_pred[keep], pred.probs[keep]
        wrong = np.flatnonzero(yt != yp)
        conf = p[wrong, yp[wrong]]
        order = wrong[np.argsort(-conf, kind="stable")][: ctx.max_thumbnails]
        n_wrong = len(wrong)
        for j in order:
            i = keep[j]
            cap = (f"<span class='t'>true</span> {esc(pred.classes[yt[j]])}<br><span class='p'>predicted</span> "
                   f"{esc(pred.classes[yp[j]])} ({_fmt(p[j, yp[j]], 2)})")
            cards.append(_thumb_card(ctx, str(pred.paths[i]), str(pred.sample_ids[i]), cap))
    if not cards:
        return Section("mistakes", title, _p(f"No mistakes on the {esc(ctx.split)} split."))
    body = _p(f"{n_wrong:,} mistake(s) on the {esc(ctx.split)} split; the {len(cards)} the model was most sure about "
              "are shown (hover for the file). Confident mistakes are often label errors worth a second look.")
    body += f"<div class='grid'>{''.join(cards)}</div>"
    return Section("mistakes", title, body)


# ---------------------------------------------------------------------------
# model card
# ---------------------------------------------------------------------------

_HYPER = ("model", "weights_used", "image_size", "hierarchy_mode", "epochs", "batch_size", "lr", "dropout",
          "embedding_dim", "conv_blocks", "filters", "pooling", "augmentation", "class_weights", "monitor", "patience",
          "warmup_epochs", "fine_tune_layers", "fine_tune_lr_factor", "imputation", "seed")

_MODEL_NAMES = {"cnn": "a small convolutional network trained from scratch",
                "mobilenet_v2": "MobileNetV2 (transfer learning)", "resnet50v2": "ResNet50V2 (transfer learning)",
                "efficientnet_b0": "EfficientNet-B0 (transfer learning)"}


def _section_model_card(ctx: _Context) -> Section:
    cfg, labels = ctx.config, ctx.labels or {}
    ev = ctx.facts.get("evaluation") or (_evaluation(ctx) if ctx.predictions is not None else {})
    task = labels.get("task") or cfg.get("task_resolved") or cfg.get("task")
    names = runs.output_names(labels) if labels else []
    model = str(cfg.get("model") or "?")
    arch = _MODEL_NAMES.get(model, model)
    dsname = ctx.dataset.name if ctx.dataset is not None else (cfg.get("dataset_id") or "an unnamed dataset")
    counts = cfg.get("counts") or {}
    pre = _read_json(ctx.rd.preprocessing)

    if task == "hierarchical":
        levels = labels.get("levels", [])
        task_text = (f"hierarchical classification over {len(levels)} levels ("
                     + " › ".join(f"{esc(lv)}: {len(labels['level_classes'][lv])} classes" for lv in levels) + ")")
    elif task == "multilabel":
        task_text = f"multi-label tagging with {len(names)} labels (any number per image)"
    elif task == "binary":
        task_text = f"binary classification (positive class <code>{esc(labels.get('positive_class'))}</code>)"
    else:
        task_text = f"single-label classification into {len(names)} classes"
    facts = [("Task", task_text),
             ("Data", f"{esc(dsname)}: {_fmt(counts.get('n_train'))} training, {_fmt(counts.get('n_val'))} "
                      f"validation and {_fmt(counts.get('n_test'))} test images"
                      + (f" ({esc(counts['val_source'])})" if counts.get("val_source") else "")),
             ("Architecture", f"{esc(arch)}; weights: {esc(cfg.get('weights_used') or cfg.get('weights'))}; input "
                              f"{esc(cfg.get('image_size'))}×{esc(cfg.get('image_size'))} RGB"
                              + (f", {esc(pre.get('model_preprocess'))} inside the model" if pre else "")),
             ("Outputs", ", ".join(f"<code>{esc(n)}</code>" for n in names[:40])
              + (f" and {len(names) - 40} more" if len(names) > 40 else "")),
             ("Trained", _when(cfg.get("created_at")) + (f" with Keras {esc(cfg.get('keras_version'))}"
                                                         if cfg.get("keras_version") else ""))]
    metric_rows = []
    if ev:
        if task == "multilabel":
            metric_rows += [("accuracy over known (image, label) entries", ev.get("accuracy")),
                            ("micro F1", ev.get("micro_f1")), ("macro F1", ev.get("macro_f1"))]
        else:
            metric_rows += [("accuracy", ev.get("accuracy")), ("macro F1", ev.get("macro_f1")),
                            ("weighted F1", ev.get("weighted_f1"))]
        metric_rows += [("mean average precision", ev.get("mean_average_precision")),
                        ("expected calibration error", ev.get("ece")), ("test samples", ev.get("n_samples"))]
        if task == "hierarchical":
            for lv in ev.get("level_order", []):
                metric_rows.append((f"accuracy at level {lv}", ev["levels"][lv].get("accuracy")))
    hyper = [(k, cfg[k]) for k in _HYPER if k in cfg and cfg[k] not in (None, "", [])]
    hyper = [(k, json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in hyper]

    # intended use and limitations: generated from the facts, nothing more
    acc = ev.get("accuracy") if ev else None
    use = (f"Sorting or pre-tagging images like those in <i>{esc(dsname)}</i> (same kind of subject, camera and "
           f"framing) into the {len(names)} output{'s' if len(names) != 1 else ''} above, with a person checking "
           "the decisions that matter. ")
    if ctx.facts.get("thresholds_saved"):
        use += "Decisions should use the per-class thresholds saved with the model (see the PR curves)."
    else:
        use += ("No decision thresholds were saved: the most probable class is taken, whatever its probability; "
                "set thresholds on the Evaluate page before relying on a class.")
    limits = []
    if acc is not None:
        limits.append(f"On held-out test images the model is right {_pct(acc)} of the time"
                      + (" — roughly one image in " + str(max(2, round(1 / max(1e-9, 1 - acc)))) + " is wrong."
                         if acc < 0.99 else "."))
    n_test = ev.get("n_samples") if ev else None
    if n_test is not None and n_test < 300:
        limits.append(f"The test set is small ({n_test} images): the metrics above are uncertain by several "
                      "percentage points.")
    per = (ev.get("per_class") or {}) if ev else {}
    weak = sorted(((c, r.get("f1")) for c, r in per.items() if r.get("f1") is not None and r["f1"] < 0.5),
                  key=lambda x: x[1])
    if weak:
        limits.append("Weak classes (F1 below 0.5): " + ", ".join(f"<code>{esc(c)}</code> ({_fmt(f, 2)})"
                                                                for c, f in weak[:10])
                      + (f" and {len(weak) - 10} more" if len(weak) > 10 else "") + ".")
    rare = sorted(c for c, r in per.items() if r.get("support") is not None and 0 < r["support"] < 10)
    if rare:
        limits.append(f"{len(rare)} class(es) have fewer than 10 test images, so their scores are unreliable: "
                      + ", ".join(f"<code>{esc(c)}</code>" for c in rare[:10]) + ".")
    ece = ctx.facts.get("ece", ev.get("ece") if ev else None)
    if ece is not None and ece >= 0.05:
        limits.append(f"Probabilities are not well calibrated (ECE {_fmt(ece, 2)}): read them as a ranking, not "
                      "as chances.")
    if ctx.facts.get("ood_threshold") is None:
        limits.append("No out-of-distribution threshold is set: an image unlike the training data (another "
                      "subject, a blank frame) still gets one of the known classes.")
    d = ctx.facts.get("dataset") or {}
    if d.get("warnings"):
        limits.append(f"The dataset loader reported {len(d['warnings'])} warning(s) about the labels (see Dataset).")
    dec = ctx.facts.get("decisions")
    n_changed = int(dec["action"].isin(["exclude", "relabel"]).sum()) if dec is not None and len(dec) else 0
    if cfg.get("label_patch_version") in (None, "", 0, "0", "raw"):
        if n_changed:
            limits.append(f"The model was trained on the labels as loaded; {n_changed} review decision(s) "
                          "(exclusions / relabels, see Cleaning log) are not in it yet: retrain to use them.")
        elif dec is not None:
            limits.append("No label review was recorded: label errors in the training data, if any, were learnt.")
    if str(cfg.get("weights_used") or "").startswith("random") and acc is not None and acc < 0.9:
        limits.append("The network was trained from scratch on this data only; a pretrained backbone usually "
                      "does better with few images.")
    state = runs.effective_state(ctx.status)
    if state != "done":
        limits.append(f"Training did not finish normally (state: {esc(state)}); the best checkpoint so far is used.")
    limits.append("The model only knows the classes listed above and has only seen images from this dataset; "
                  "its accuracy on other sources is unknown until measured.")

    body = "<div class='card'>" + "".join(f"<p><b>{esc(k)}.</b> {v}</p>" for k, v in facts)
    body += "<h3>Metrics (test split)</h3>" + _kv_table(metric_rows) if metric_rows else ""
    body += "<h3>Intended use</h3>" + _p(use)
    body += "<h3>Limitations</h3><ul>" + "".join(f"<li>{x}</li>" for x in limits) + "</ul>"
    body += "<h3>Hyper-parameters</h3>" + _kv_table(hyper)
    body += "</div>"
    return Section("model_card", "Model card", body)


def _read_json(path: Path) -> dict[str, Any]:
    from core.workspace import read_json

    obj = read_json(path, default=None)
    return obj if isinstance(obj, dict) else {}


def _cell(v: Any) -> str:
    """A table cell from a value that may be None / NaN (shown empty)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)


def _sentence(text: str) -> str:
    """``text`` with a capital first letter and a final full stop."""
    text = str(text).strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")) if text else text


def _plain(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded), on one line."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _when(t: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "at an unknown time"


# ---------------------------------------------------------------------------
# assembling
# ---------------------------------------------------------------------------

_BUILDERS: dict[str, tuple[str, Callable[[_Context], Section]]] = {
    "dataset": ("Dataset", _section_dataset),
    "cleaning": ("Cleaning log", _section_cleaning),
    "training": ("Training curves", _section_training),
    "confusion": ("Confusion matrix", _section_confusion),
    "per_class": ("Per-class metrics", _section_per_class),
    "pr_curves": ("Precision-recall curves", _section_pr),
    "calibration": ("Calibration", _section_calibration),
    "embeddings": ("Embedding map", _section_embeddings),
    "ood": ("Out-of-distribution examples", _section_ood),
    "mistakes": ("Most confident mistakes", _section_mistakes),
    "model_card": ("Model card", _section_model_card),
}
# built in this order (the model card last: it summarises facts the others gathered)
_BUILD_ORDER = ("dataset", "cleaning", "training", "per_class", "confusion", "pr_curves", "calibration",
                "embeddings", "ood", "mistakes", "model_card")


def collect_sections(run_dir, *, workspace: Workspace | None = None, split: str = "test", max_thumbnails: int = 24,
                     thumbnail_size: int = 80, embeddings: bool = True,
                     progress: ProgressFn | None = None) -> tuple[dict[str, Any], list[Section]]:
    """Build every section of the report (see :func:`build_report` for the parameters).

    Returns
    -------
    (meta, sections) : dict with ``run_id, title, dataset_name, task, generated_at``, and the
        sections in report order (:data:`SECTIONS`). A section that cannot be built has
        ``status`` ``missing`` or ``error`` and a body saying why.
    """
    if not isinstance(max_thumbnails, (int, np.integer)) or max_thumbnails < 0:
        raise ValueError(f"max_thumbnails must be an int >= 0; received {max_thumbnails!r}")
    if not isinstance(thumbnail_size, (int, np.integer)) or not 16 <= thumbnail_size <= 256:
        raise ValueError(f"thumbnail_size must be an int in [16, 256]; received {thumbnail_size!r}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    report = progress or (lambda f, m: None)
    rd = runs.RunDir(Path(run_dir).expanduser())
    ws = workspace if workspace is not None else _default_workspace(rd)
    report(0.02, "reading the run")
    ctx = _load_context(rd.path, workspace=ws, split=split, max_thumbnails=int(max_thumbnails),
                        thumbnail_size=int(thumbnail_size))
    _load_dataset(ctx)
    if not embeddings:
        ctx.embeddings_error = "the embedding map was not requested for this report"
    built: dict[str, Section] = {}
    for i, key in enumerate(_BUILD_ORDER):
        title, fn = _BUILDERS[key]
        report(0.05 + 0.9 * i / len(_BUILD_ORDER), f"building: {title.lower()}")
        try:
            built[key] = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the whole report
            built[key] = Section(key, title, _note(f"This section could not be built: {esc(type(exc).__name__)}: "
                                                   f"{esc(exc)}"), "error", str(exc))
    for key, sec in built.items():
        if sec.status != "ok" and not sec.note:
            built[key] = Section(sec.key, sec.title, sec.body, sec.status, _plain(sec.body))
    report(0.97, "writing the HTML")
    ds_name = ctx.dataset.name if ctx.dataset is not None else str(ctx.config.get("dataset_id") or "")
    meta = {"run_id": rd.run_id, "dataset_name": ds_name, "task": ctx.predictions.task, "split": split,
            "generated_at": time.time(), "title": f"Loupe report — {rd.run_id}", "headline": _headline(ctx)}
    return meta, [built[k] for k in SECTIONS]


_CSS = """
:root{--ink:#111827;--mute:#6B7280;--line:#E5E7EB;--accent:#4338CA;--bg:#F9FAFB}
*{box-sizing:border-box}body{margin:0;font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#fff;border-bottom:1px solid var(--line);padding:20px 32px}
header h1{margin:0 0 4px;font-size:22px}header .sub{color:var(--mute)}
.headline{display:flex;gap:12px;flex-wrap:wrap;margin-top:12px}
.headline div{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:6px 12px}
.headline b{display:block;font-size:18px}
nav{padding:8px 32px;background:#fff;border-bottom:1px solid var(--line);position:sticky;top:0;z-index:5}
nav a{margin-right:14px;color:var(--accent);text-decoration:none;white-space:nowrap;font-size:13px}
main{max-width:1200px;margin:0 auto;padding:16px 32px 64px}
section{background:#fff;border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin:16px 0}
section h2{margin:0 0 8px;font-size:18px}section h3{font-size:15px;margin:16px 0 6px}
.status-missing h2:after,.status-error h2:after{font-size:12px;font-weight:normal;margin-left:8px;padding:2px 8px;border-radius:10px}
.status-missing h2:after{content:"not available";background:#FEF3C7;color:#92400E}
.status-error h2:after{content:"could not be built";background:#FEE2E2;color:#991B1B}
.note{color:#92400E;background:#FFFBEB;border-left:3px solid #F59E0B;padding:6px 10px}
table{border-collapse:collapse;margin:6px 0;font-size:13px}th,td{border-bottom:1px solid var(--line);padding:4px 10px;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}table.kv th{color:var(--mute);font-weight:normal}
code{background:#F3F4F6;padding:0 4px;border-radius:4px}
.grid{display:flex;flex-wrap:wrap;gap:10px}.thumb{margin:0;font-size:12px}
.thumb img{display:block;object-fit:contain;background:#F3F4F6;border-radius:4px;border:1px solid var(--line)}
.noimg{display:flex;align-items:center;justify-content:center;background:#F3F4F6;color:var(--mute);font-size:11px;text-align:center}
.thumb figcaption{word-break:break-word}.t{color:#047857}.p{color:#B91C1C}
.card p{margin:4px 0}footer{color:var(--mute);text-align:center;font-size:12px;padding:24px}
"""


def render_html(meta: Mapping[str, Any], sections: Sequence[Section], *, headline: Sequence[tuple[str, str]] = ()
                ) -> str:
    """The report document: plotly.js inlined once, then the sections (bodies are trusted HTML)."""
    navlinks = "".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    blocks = "".join(f'<section id="{s.key}" class="status-{s.status}"><h2>{esc(s.title)}</h2>{s.body}</section>'
                     for s in sections)
    head = "".join(f"<div>{esc(k)}<b>{esc(v)}</b></div>" for k, v in headline)
    generated = _when(meta.get("generated_at"))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<meta name=\"generator\" content=\"Loupe\"><title>{esc(meta.get('title', 'Loupe report'))}</title>"
        f"<style>{_CSS}</style>"
        f"<script>{plotly_js()}</script>"
        f"<script>var LOUPE_PLOTLY_CONFIG={_script_json(PLOTLY_CONFIG)};</script>"
        "</head><body>"
        f"<header><h1>{esc(meta.get('title', 'Loupe report'))}</h1>"
        f"<div class=\"sub\">Dataset <b>{esc(meta.get('dataset_name'))}</b> · task {esc(meta.get('task'))} · "
        f"metrics on the {esc(meta.get('split'))} split · generated {esc(generated)} by Loupe. "
        "This file is self-contained: it works offline.</div>"
        f"<div class=\"headline\">{head}</div></header>"
        f"<nav>{navlinks}</nav><main>{blocks}</main>"
        "<footer>Generated by Loupe from the run directory; every number is recomputed from its predictions."
        "</footer></body></html>\n")


def build_report(run_dir, *, workspace: Workspace | None = None, out: str | Path | None = None, split: str = "test",
                 max_thumbnails: int = 24, thumbnail_size: int = 80, embeddings: bool = True,
                 progress: ProgressFn | None = None) -> str:
    """One self-contained HTML file describing a finished run.

    Parameters
    ----------
    run_dir : path
        A run directory with ``labels.json`` and ``predictions.csv`` (a finished run).
    workspace : Workspace, optional
        Where the run's dataset and review decisions live. Default: the workspace the run
        directory lies in (``<ws>/runs/<run_id>``), else ``$LOUPE_HOME``.
    out : path, optional
        Also write the HTML there (atomically).
    split : str
        Which rows of predictions.csv the metrics use (default ``"test"``).
    max_thumbnails : int >= 0
        At most this many thumbnails per gallery (mistakes, out-of-distribution examples).
        Thumbnails are ~3 KB each, so the file stays small for any dataset size.
    thumbnail_size : int in [16, 256]
        Longest side of a thumbnail, in pixels.
    embeddings : bool
        Compute the embedding map and out-of-distribution examples (runs the model over the
        dataset: seconds for thousands of small images).
    progress : callable(fraction, message), optional
        Called as sections are built.

    Returns
    -------
    str : the HTML document (UTF-8 text; no external references).

    Raises
    ------
    ValueError
        ``run_dir`` is not a finished run (no labels / predictions), or the split has no rows.
    """
    meta, sections = collect_sections(run_dir, workspace=workspace, split=split, max_thumbnails=max_thumbnails,
                                      thumbnail_size=thumbnail_size, embeddings=embeddings, progress=progress)
    text = render_html(meta, sections, headline=meta.get("headline", ()))
    if out is not None:
        atomic_write_text(Path(out).expanduser(), text)
    if progress:
        progress(1.0, "done")
    return text


def _headline(ctx: _Context) -> list[tuple[str, str]]:
    ev = ctx.evaluation or {}
    out = [("model", str(ctx.config.get("model") or "?")), ("state", runs.effective_state(ctx.status))]
    if ev.get("accuracy") is not None:
        out.append((f"{ctx.split} accuracy", _pct(ev["accuracy"])))
    if ev.get("macro_f1") is not None:
        out.append((f"{ctx.split} macro F1", _fmt(ev["macro_f1"])))
    if ev.get("n_samples") is not None:
        out.append((f"{ctx.split} images", _fmt(ev["n_samples"])))
    return out
