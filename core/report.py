"""The self-contained HTML report of a run: one file a stakeholder opens offline.

:func:`build_report` turns a run directory (see :mod:`core.runs`) and its workspace into
**one** HTML file: no server, no internet. plotly.js is inlined once, every figure is a
small ``Plotly.newPlot`` call on inlined JSON, thumbnails are ``data:`` URIs (small JPEGs),
and the file holds no ``http://`` or ``https://`` text at all (plotly.js's built-in URLs —
XML namespaces, map-tile servers it never contacts here — are written with escaped
slashes, which JavaScript reads as the same strings).

Sections, in order (:data:`SECTIONS`): model card, dataset, cleaning log, training curves,
confusion matrix, per-class table, PR curves with the chosen thresholds, calibration,
embedding map, out-of-distribution examples, most confident mistakes; then, when another
run is given (``compare_with``), the paired comparison with it (:mod:`core.compare`). Each
section is built on its own: a piece that is missing (no review decisions, no embeddings
module, an unreadable image) makes *that section* say so; the report is still written.

HTML comes from the Jinja2 templates in ``core/templates/`` (``report.html.j2``, the
document; ``report_macros.html.j2``, tables, notes, figures, thumbnail cards; one
``sections/<key>.html.j2`` per section), rendered with autoescaping on.

Safety: every user-controlled string (class names, file names, dataset names, notes)
reaches the HTML only as a template variable, so it is escaped; :func:`esc`, the
templates' finalize hook, also writes ``scheme://`` as ``scheme&#58;//``. The only values
marked :class:`markupsafe.Markup` (inserted as they are) are this module's own: rendered
templates, plotly.js, figure JSON and ``data:`` URIs. Strings inside figure JSON are
encoded with ``<``, ``>``, ``&`` as ``\\uXXXX`` escapes, so a label such as
``</script><script>alert(1)</script>`` cannot end a ``<script>`` element, and they are
HTML-escaped for plotly, which renders its text as SVG text (never as HTML).

>>> html_text = build_report("runs/my-run", workspace=ws)          # doctest: +SKIP
>>> build_report("runs/my-run", workspace=ws, out="report.html")   # doctest: +SKIP
"""

from __future__ import annotations

import base64
import dataclasses
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

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from core import runs
from core.workspace import Workspace, atomic_write_text

#: Section keys, in report order (the ``comparison`` section follows when another run is compared).
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

_TEMPLATES = Path(__file__).with_name("templates")

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class Section:
    """One part of the report: ``body`` is the Markup its template rendered (user text escaped)."""

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
    preprocessing: dict[str, Any] = field(default_factory=dict)
    predictions: Any = None          # runs.Predictions of the report's split
    evaluation: dict[str, Any] | None = None
    dataset: Any = None              # core.datasets.Dataset
    dataset_error: str = ""
    boxes: dict[str, tuple] = field(default_factory=dict)
    embeddings: Any = None
    embeddings_error: str = ""
    compare_with: runs.RunDir | None = None  # run B of the comparison section
    facts: dict[str, Any] = field(default_factory=dict)  # gathered for the model card
    figure_count: int = 0


# ---------------------------------------------------------------------------
# escaping and encoding
# ---------------------------------------------------------------------------

_URL_RE = re.compile(r"(?i)(https?):(//)")


def esc(text: Any) -> Markup:
    """HTML-escaped user text (``None`` -> ""; Markup is not escaped again), ``scheme://`` written ``scheme&#58;//``.

    The templates' finalize hook: every ``{{ value }}`` goes through it.
    """
    return Markup(_URL_RE.sub(r"\1&#58;//", str(escape("" if text is None else text))))


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
# templates
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


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    """The templates of ``core/templates/``: autoescaped, strict (an unknown variable is an error), ``|fmt|pct``."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True, finalize=esc,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct)
    return env


def _render(name: str, **values: Any) -> Markup:
    """Template ``name`` rendered with ``values`` (escaped by the template, hence Markup)."""
    return Markup(_env().get_template(name).render(**values))


def _macros():
    """The macros of ``report_macros.html.j2`` (``note``, ``figure``, ...), callable from Python; they return Markup."""
    return _env().get_template("report_macros.html.j2").module


def _note(text: str) -> Markup:
    return _macros().note(text)


def _figure(ctx: _Context, fig) -> Markup:
    """A plotly figure as a div + a ``Plotly.newPlot`` call on inlined, script-safe JSON."""
    ctx.figure_count += 1
    d = fig.to_plotly_json()
    height = (d.get("layout") or {}).get("height") or 420
    payload = Markup(_script_json({"data": d.get("data", []), "layout": d.get("layout", {})}))
    return _macros().figure(f"fig-{ctx.figure_count}", int(height), payload)


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


def _thumb(ctx: _Context, path: str, sample_id: str, **caption: Any) -> dict[str, Any]:
    """A thumbnail card for the ``thumb`` macro: the image (a data: URI, None if unreadable), its side, ``caption``."""
    uri = thumbnail_data_uri(path, box=ctx.boxes.get(str(sample_id)), size=ctx.thumbnail_size)
    return {"uri": None if uri is None else Markup(uri), "side": max(96, ctx.thumbnail_size), "sample_id": sample_id,
            **caption}


# ---------------------------------------------------------------------------
# loading what the sections share
# ---------------------------------------------------------------------------

def _load_context(run_dir, *, workspace: Workspace | None, split: str, max_thumbnails: int,
                  thumbnail_size: int) -> _Context:
    rd = runs.require_predictions(run_dir)
    run = runs.open_run(rd, workspace)
    ctx = _Context(rd=rd, workspace=workspace, split=split, max_thumbnails=max_thumbnails,
                   thumbnail_size=thumbnail_size, config=run.config, status=runs.read_status(rd))
    ctx.labels = runs.read_labels(rd) if run.labels is None else run.labels  # missing: read_labels names the file
    ctx.preprocessing = run.preprocessing
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
        note = f"{len(order):,} classes: the {half} largest and the {half} smallest are drawn."
    counts = counts.copy()
    counts.index = [_plot_text(i) for i in counts.index]
    return counts, note


def _section_dataset(ctx: _Context) -> Section:
    from core import charts, datasets

    title = "Dataset"
    if ctx.dataset is None:
        recorded = list((ctx.config.get("counts") or {}).items())
        body = _render("sections/dataset.html.j2", error=ctx.dataset_error, recorded=recorded)
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
    cc = s.get("class_counts") or {}
    if s["task"] == "hierarchical":
        per_level = [(lv, cc.get(lv, {})) for lv in s["levels"]]
    else:
        per_level = [(None, cc)] if cc else []
    charts_ = []
    for lv, counts in per_level:
        series, clipped = _clip_counts(pd.Series(counts, dtype=int))
        charts_.append((lv, clipped, _figure(ctx, charts.label_distribution(series))))
    invalid = [(e.get("path"), e.get("problem")) for e in (s.get("invalid_examples") or [])[:20]]
    body = _render("sections/dataset.html.j2", error="", items=items, charts=charts_,
                   warnings=list(s.get("warnings") or [])[:20], invalid=invalid)
    return Section("dataset", title, body)


def _section_cleaning(ctx: _Context) -> Section:
    title = "Cleaning log"
    patch = ctx.config.get("label_patch_version")
    page = functools.partial(_render, "sections/cleaning.html.j2", patch=patch,
                             excluded_classes=ctx.config.get("exclude_classes") or [])
    if ctx.dataset is None:
        return Section("cleaning", title, page(missing=f"No cleaning log: {ctx.dataset_error}."), "missing")
    try:
        from core import review
        log = review.decisions(ctx.workspace, ctx.dataset.dataset_id, active_only=True)
        version = review.decision_version(ctx.workspace, ctx.dataset.dataset_id)
    except (ImportError, AttributeError) as exc:
        return Section("cleaning", title, page(missing=f"The review log is not available in this installation "
                                                       f"({exc})."), "missing")
    ctx.facts["decisions"] = log
    stale = version if patch not in (None, "raw") and str(patch) != str(version) else None
    counts = {a: int((log["action"] == a).sum()) if len(log) else 0 for a in ("exclude", "relabel", "keep")}
    if not counts["exclude"] + counts["relabel"]:
        return Section("cleaning", title, page(missing="", stale_version=stale, counts=counts))
    changed = log[log["action"].isin(["exclude", "relabel"])]
    det = log.assign(detector=log["detector"].fillna("").astype(str).replace("", "(manual)"))
    by = det.groupby(["detector", "action"]).size().unstack(fill_value=0)
    by_detector = [(d, *(int(by.loc[d].get(a, 0)) for a in ("exclude", "relabel", "keep"))) for d in by.index]
    decisions = []
    for r in changed.head(MAX_LOG_ROWS).itertuples():
        when = _dt.datetime.fromtimestamp(float(r.created_at), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M") \
            if r.created_at is not None and not pd.isna(r.created_at) else ""
        decisions.append((r.sample_id, r.action, _cell(r.label_column), _cell(r.old_label), _cell(r.new_label),
                          _cell(r.detector) or "(manual)", _cell(r.note), when))
    return Section("cleaning", title, page(missing="", stale_version=stale, counts=counts, by_detector=by_detector,
                                           decisions=decisions, n_unlisted=max(0, len(changed) - MAX_LOG_ROWS)))


def _final_model(choice: Mapping[str, Any], span: tuple[int, int] | None) -> str:
    """The final model a ``selection`` record names, in words ("the weight average of epochs 4–6")."""
    name, epoch, avg = str(choice.get("chosen")), choice.get("epoch"), choice.get("epochs_averaged")
    epoch = str(int(epoch)) if isinstance(epoch, (int, float, np.number)) and math.isfinite(epoch) else "?"
    if name == "weight average":
        first, last = avg if isinstance(avg, (list, tuple)) and len(avg) == 2 else span or ("?", "?")
        return f"the weight average of epochs {first}–{last}"
    if name == "best fine-tuning epoch":
        return f"the best fine-tuning epoch ({epoch})"
    return f"the {name} (epoch {epoch})"


def _section_training(ctx: _Context) -> Section:
    title = "Training curves"
    m = runs.read_metrics(ctx.rd)
    if m.empty or "kind" not in m.columns or not (m["kind"] == "epoch").any():
        return Section("training", title, _note("No per-epoch metrics were recorded (metrics.jsonl is missing "
                                                "or empty)."), "missing")
    from core import training_charts

    ep = m[m["kind"] == "epoch"]
    st = ctx.status
    monitor = st.get("monitor") or ctx.config.get("monitor")
    span = training_charts.averaged_epochs(m)
    choice = training_charts.final_choice(m)  # None for runs before the selection record (or without fine-tuning)
    ctx.facts["epochs"] = len(ep)
    body = _render(
        "sections/training.html.j2", n_epochs=len(ep), state=runs.effective_state(st), monitor=monitor,
        best_value=st.get("best_value"), best_epoch=st.get("best_epoch"), span=span, seconds=st.get("seconds"),
        stop_reason=st.get("stop_reason"), final_model=None if choice is None else _final_model(choice, span),
        reason=_cell((choice or {}).get("reason")),
        loss_figure=_figure(ctx, training_charts.loss_figure(m, title="Loss")),
        metric_figure=_figure(ctx, training_charts.metric_figure(m, monitor=monitor or "val_macro_f1",
                                                                 title="Accuracy and F1")),
        alerts=[a.get("message", a) for a in st.get("alerts") or [] if isinstance(a, Mapping)])
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
    per_level = ctx.predictions.task == "hierarchical"
    figures = [(lv, _figure(ctx, _confusion_figure(np.asarray(ev["levels"][lv]["confusion"]["matrix"], dtype=int),
                                                   ev["levels"][lv]["confusion"]["classes"])))
               for lv in (ctx.predictions.levels[:-1] if per_level else ())]
    figures.append((ctx.predictions.levels[-1] if per_level else None, _figure(ctx, _confusion_figure(cm, classes))))
    body = _render("sections/confusion.html.j2", split=ctx.split, n_samples=int(cm.sum()), n_classes=len(classes),
                   max_classes=MAX_FIGURE_CLASSES, per_level=per_level, figures=figures)
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
    rows = []
    for c, r in (ev.get("per_class") or {}).items():
        t = thr.get(c)
        rows.append((c, _fmt(r.get("precision")), _fmt(r.get("recall")), _fmt(r.get("f1")),
                     _fmt(r.get("support")), _fmt(r.get("average_precision")), _fmt(r.get("roc_auc")),
                     _fmt(t) if t is not None else "argmax"))
    rows.sort(key=lambda r: (float(r[3]) if r[3] != "n/a" else -1))
    return Section("per_class", title, _render("sections/per_class.html.j2", split=ctx.split, summary=head, rows=rows))


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
    clipped = len(drawn) > MAX_FIGURE_CLASSES
    if clipped:
        drawn = sorted(drawn, key=lambda c: cs.curves[c].average_precision)[:MAX_FIGURE_CLASSES]
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
    body = _render("sections/pr_curves.html.j2", use_saved=use_saved, n_saved=len(saved_classes),
                   target_precision=tp, split=ctx.split, n_suggested=len(suggested), n_classes=len(cs.classes),
                   clipped=clipped, max_classes=MAX_FIGURE_CLASSES,
                   figure=_figure(ctx, charts.pr_curves(curves, points=marks, target_precision=tp)))
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
    body = _render("sections/calibration.html.j2", what=what, ece=cal.ece, verdict=verdict,
                   figure=_figure(ctx, charts.reliability_diagram(cal)))
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
        return Section("embeddings", title, _note(_sentence(ctx.embeddings_error)), "missing")
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
    body = _render("sections/embeddings.html.j2", n_shown=len(sel), n_total=n, figure=_figure(ctx, fig))
    return Section("embeddings", title, body)


def _section_ood(ctx: _Context) -> Section:
    title = "Out-of-distribution examples"
    _compute_embeddings(ctx)
    if ctx.embeddings is None:
        return Section("ood", title, _note(_sentence(ctx.embeddings_error)), "missing")
    try:
        from core import embeddings as emb
        embed_paths, evaluate_ood = emb.embed_paths, emb.evaluate_ood
    except (ImportError, AttributeError) as exc:
        return Section("ood", title, _note(f"Out-of-distribution scoring is not available in this installation "
                                           f"({exc})."), "missing")
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
    ok_paths = [p for p, k in zip(unseen_paths, ok) if k]
    cards = [_thumb(ctx, ok_paths[i], "", name=Path(ok_paths[i]).name, score=float(s_unseen[i]),
                    flagged=bool(s_unseen[i] > use_thr))
             for i in np.argsort(-s_unseen, kind="stable")[: ctx.max_thumbnails]]
    figure = _figure(ctx, _score_histogram_figure({"test images": s_test, "unseen images": s_unseen},
                                                  threshold=use_thr, xaxis="out-of-distribution score"))
    body = _render("sections/ood.html.j2", method=ev.method, n_unseen=int(ok.sum()), auroc=ev.auroc,
                   saved_threshold=thr, threshold=use_thr, fpr=ev.fpr, unseen_flagged=flagged,
                   test_flagged=test_flagged, n_undecodable=int((~ok).sum()), figure=figure, cards=cards)
    return Section("ood", title, body)


def _section_mistakes(ctx: _Context) -> Section:
    title = "Most confident mistakes"
    pred = ctx.predictions
    multilabel = pred.task == "multilabel"
    if multilabel:
        y, p = pred.y_true, pred.probs
        known = ~np.isnan(y)
        wrong = known & ((p >= 0.5).astype(float) != np.nan_to_num(y))
        err = np.where(wrong, np.abs(p - np.nan_to_num(y)), 0.0)
        rows = np.flatnonzero(wrong.any(axis=1))
        rows = rows[np.argsort(-err[rows].max(axis=1), kind="stable")][: ctx.max_thumbnails]
        cards = [_thumb(ctx, str(pred.paths[i]), str(pred.sample_ids[i]),
                        errors=[(c, y[i, k] == 1, p[i, k]) for k, c in enumerate(pred.classes) if wrong[i, k]][:3])
                 for i in rows]
        n_wrong = int(wrong.any(axis=1).sum())
    else:
        keep = np.flatnonzero(pred.y_true >= 0)
        yt, yp, p = pred.y_true[keep], pred.y_pred[keep], pred.probs[keep]
        wrong = np.flatnonzero(yt != yp)
        order = wrong[np.argsort(-p[wrong, yp[wrong]], kind="stable")][: ctx.max_thumbnails]
        cards = [_thumb(ctx, str(pred.paths[keep[j]]), str(pred.sample_ids[keep[j]]), true=pred.classes[yt[j]],
                        predicted=pred.classes[yp[j]], p=p[j, yp[j]]) for j in order]
        n_wrong = len(wrong)
    body = _render("sections/mistakes.html.j2", split=ctx.split, n_wrong=n_wrong, multilabel=multilabel, cards=cards)
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
    pre = ctx.preprocessing
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

    # limitations: generated from the facts, nothing more (the template words the ones that apply)
    acc = ev.get("accuracy") if ev else None
    n_test = ev.get("n_samples") if ev else None
    per = (ev.get("per_class") or {}) if ev else {}
    ece = ctx.facts.get("ece", ev.get("ece") if ev else None)
    dec = ctx.facts.get("decisions")
    n_changed = int(dec["action"].isin(["exclude", "relabel"]).sum()) if dec is not None and len(dec) else 0
    trained_raw = cfg.get("label_patch_version") in (None, "", 0, "0", "raw")
    state = runs.effective_state(ctx.status)
    limits = dict(
        accuracy=acc,
        one_wrong_in=max(2, round(1 / max(1e-9, 1 - acc))) if acc is not None and acc < 0.99 else None,
        small_test=n_test if n_test is not None and n_test < 300 else None,
        weak=sorted(((c, r.get("f1")) for c, r in per.items() if r.get("f1") is not None and r["f1"] < 0.5),
                    key=lambda x: x[1]),
        rare=sorted(c for c, r in per.items() if r.get("support") is not None and 0 < r["support"] < 10),
        uncalibrated_ece=ece if ece is not None and ece >= 0.05 else None,
        no_ood_threshold=ctx.facts.get("ood_threshold") is None,
        n_loader_warnings=len((ctx.facts.get("dataset") or {}).get("warnings") or []),
        unapplied_decisions=n_changed if trained_raw else 0,
        no_review=trained_raw and not n_changed and dec is not None,
        from_scratch=str(cfg.get("weights_used") or "").startswith("random") and acc is not None and acc < 0.9,
        unfinished_state=state if state != "done" else None)
    body = _render(
        "sections/model_card.html.j2", task=task, names=names, positive_class=labels.get("positive_class"),
        levels=[(lv, len(labels["level_classes"][lv])) for lv in labels.get("levels", [])] if task == "hierarchical"
        else [],
        dataset_name=ctx.dataset.name if ctx.dataset is not None else (cfg.get("dataset_id") or "an unnamed dataset"),
        counts=cfg.get("counts") or {}, architecture=_MODEL_NAMES.get(model, model),
        weights=cfg.get("weights_used") or cfg.get("weights"), image_size=cfg.get("image_size"),
        preprocess=pre.get("model_preprocess"), trained=_when(cfg.get("created_at")),
        keras_version=cfg.get("keras_version"), metrics=metric_rows,
        thresholds_saved=bool(ctx.facts.get("thresholds_saved")), hyper=hyper, **limits)
    return Section("model_card", "Model card", body)


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


def _signed(v: float) -> str:
    return f"{v:+.4f}" if v is not None and math.isfinite(v) else "n/a"


def _comparison_title(ctx: _Context) -> str:
    return f"Comparison with {ctx.compare_with.run_id}"


def _section_comparison(ctx: _Context) -> Section:
    """This run (A) against ``ctx.compare_with`` (B) on the same rows: :func:`core.compare.compare_runs`."""
    from core import compare

    title = _comparison_title(ctx)
    try:
        c = compare.compare_runs(ctx.rd.path, ctx.compare_with.path, split=ctx.split)
    except ValueError as exc:  # other rows or labels, another label shape, not a finished run
        return Section("comparison", title, _note(f"The runs cannot be compared: {exc}"), "error", str(exc))

    def rows(ms: Mapping[str, Any]) -> list[tuple[str, ...]]:
        return [(compare.METRIC_LABELS.get(k, k), _fmt(m.a, 4), _fmt(m.b, 4), _signed(m.delta),
                 f"{_signed(m.ci_low)} to {_signed(m.ci_high)}", _fmt(m.significant)) for k, m in ms.items()]

    # one table per hierarchy level when both runs are hierarchical, else one
    blocks = [(lv, rows(ms), mc) for lv, (ms, mc) in c.levels.items()] or [(None, rows(c.metrics), c.mcnemar)]
    body = _render("sections/comparison.html.j2", comparison=c, confidence=f"{c.confidence:.0%}", blocks=blocks)
    return Section("comparison", title, body)


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
                     thumbnail_size: int = 80, embeddings: bool = True, compare_with=None,
                     progress: ProgressFn | None = None) -> tuple[dict[str, Any], list[Section]]:
    """Build every section of the report (see :func:`build_report` for the parameters).

    Returns
    -------
    (meta, sections) : dict with ``run_id, title, dataset_name, task, generated_at``, and the
        sections in report order (:data:`SECTIONS`, then ``comparison`` when ``compare_with``
        is given). A section that cannot be built has ``status`` ``missing`` or ``error`` and a
        body saying why.
    """
    if not isinstance(max_thumbnails, (int, np.integer)) or max_thumbnails < 0:
        raise ValueError(f"max_thumbnails must be an int >= 0; received {max_thumbnails!r}")
    if not isinstance(thumbnail_size, (int, np.integer)) or not 16 <= thumbnail_size <= 256:
        raise ValueError(f"thumbnail_size must be an int in [16, 256]; received {thumbnail_size!r}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    report = progress or (lambda f, m: None)
    rd = runs.RunDir(Path(run_dir).expanduser())
    ws = runs.run_workspace(rd, workspace)
    report(0.02, "reading the run")
    ctx = _load_context(rd.path, workspace=ws, split=split, max_thumbnails=int(max_thumbnails),
                        thumbnail_size=int(thumbnail_size))
    _load_dataset(ctx)
    if not embeddings:
        ctx.embeddings_error = "the embedding map was not requested for this report"
    steps = [(key, *_BUILDERS[key]) for key in _BUILD_ORDER]
    if compare_with is not None:
        ctx.compare_with = runs.RunDir(Path(compare_with).expanduser())
        steps.append(("comparison", _comparison_title(ctx), _section_comparison))
    built: dict[str, Section] = {}
    for i, (key, title, fn) in enumerate(steps):
        report(0.05 + 0.9 * i / len(steps), f"building: {title[:1].lower() + title[1:]}")
        try:
            built[key] = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the whole report
            built[key] = Section(key, title, _note(f"This section could not be built: {type(exc).__name__}: {exc}"),
                                 "error", str(exc))
    for key, sec in built.items():
        if sec.status != "ok" and not sec.note:
            built[key] = dataclasses.replace(sec, note=_plain(sec.body))
    report(0.97, "writing the HTML")
    ds_name = ctx.dataset.name if ctx.dataset is not None else str(ctx.config.get("dataset_id") or "")
    meta = {"run_id": rd.run_id, "dataset_name": ds_name, "task": ctx.predictions.task, "split": split,
            "generated_at": time.time(), "title": f"Loupe report — {rd.run_id}", "headline": _headline(ctx)}
    return meta, [built[k] for k in (*SECTIONS, "comparison") if k in built]


def render_html(meta: Mapping[str, Any], sections: Sequence[Section], *, headline: Sequence[tuple[str, str]] = ()
                ) -> str:
    """The report document (``report.html.j2``): plotly.js inlined once, then the sections.

    A section's ``body`` goes in as it is when it is Markup (as :func:`collect_sections` builds
    it); a plain ``str`` body is escaped, i.e. shown as text.
    """
    return _env().get_template("report.html.j2").render(
        title=meta.get("title", "Loupe report"), dataset_name=meta.get("dataset_name"), task=meta.get("task"),
        split=meta.get("split"), generated=_when(meta.get("generated_at")), headline=headline, sections=sections,
        plotly_js=Markup(plotly_js()), plotly_config=Markup(_script_json(PLOTLY_CONFIG)))


def build_report(run_dir, *, workspace: Workspace | None = None, out: str | Path | None = None, split: str = "test",
                 max_thumbnails: int = 24, thumbnail_size: int = 80, embeddings: bool = True, compare_with=None,
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
    compare_with : path, optional
        Another run directory (B): a last section compares it with this run (A) on the same
        rows of ``split`` (:func:`core.compare.compare_runs`: metric differences B − A with
        95% paired-bootstrap intervals, McNemar's p, the verdict). Runs that cannot be
        compared (other rows or labels) make that section an ``error`` giving the reason.
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
                                      thumbnail_size=thumbnail_size, embeddings=embeddings,
                                      compare_with=compare_with, progress=progress)
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
