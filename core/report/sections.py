"""The report's sections, one builder each: dataset, cleaning log, training curves, confusion matrix,
per-class table, precision-recall curves, calibration, embedding map, out-of-distribution
examples and the most confident mistakes.
"""

from __future__ import annotations

import datetime as _dt
import functools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from core import runs
from core.report.context import (
    MAX_CURVE_POINTS, MAX_FIGURE_CLASSES, MAX_LOG_ROWS, MAX_MAP_COLOURS, MAX_MAP_POINTS, Section, _Context,
    _single_label_view,
)
from core.report.markup import _cell, _figure, _fmt, _note, _plot_text, _render, _sentence, _thumb


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
