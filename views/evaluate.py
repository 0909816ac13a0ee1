"""Evaluate: where a run fails, which threshold to ship at a target precision, and whether it beats another run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import charts, compare, metrics, runs
from ui import state
from ui.state import esc

THUMB = 112          # thumbnail side, px
GALLERY = 24         # images per gallery
GALLERY_COLUMNS = 8
N_BOOTSTRAP = 1000
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]

ws = state.workspace()
st.title("Evaluate")
st.caption("Where does the model fail, which threshold gives the most recall at the precision you need, "
           "and is a run better than another? Everything is computed from the run's `predictions.csv`.")


# ---------------------------------------------------------------------------
# cached reading (keyed by run directory + predictions.csv mtime, never by arrays)
# ---------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=64)
def _splits(run_dir: str, mtime: float) -> list[str]:
    """The splits present in predictions.csv."""
    try:
        col = pd.read_csv(runs.RunDir(run_dir).predictions, usecols=["split"], dtype=str, keep_default_na=False)
    except (OSError, ValueError):
        return []
    return sorted(set(col["split"]))


@st.cache_data(show_spinner="Reading predictions…", max_entries=32)
def _predictions(run_dir: str, mtime: float, split: str) -> runs.Predictions:
    return runs.read_predictions(run_dir, split=split)


@st.cache_data(show_spinner="Testing the difference (paired bootstrap)…", max_entries=32)
def _paired(dir_a: str, mtime_a: float, dir_b: str, mtime_b: float, split: str,
            level: str | None) -> tuple[dict | None, str]:
    """``(core.compare result as a dict, "")``, or ``(None, why the runs cannot be paired)``."""
    try:
        return compare.compare_runs(dir_a, dir_b, split=split, n_bootstrap=N_BOOTSTRAP, level=level).to_dict(), ""
    except ValueError as exc:
        return None, str(exc)


def significance_table(base_dir: str, others: dict[str, str], split: str, level: str | None) -> None:
    """Is each run's difference from the baseline real? Paired bootstrap CI and McNemar's p per run."""
    rows, refused = [], []
    for rid, path in others.items():
        got, why = _paired(base_dir, state.mtime(runs.RunDir(base_dir).predictions), path,
                           state.mtime(runs.RunDir(path).predictions), split, level)
        if got is None:
            refused.append(why)
            continue
        block = got["levels"].get(level, got) if got.get("levels") and level else got
        for name, m in block["metrics"].items():
            rows.append({"run": rid, "metric": compare.METRIC_LABELS.get(name, name), "Δ (run − baseline)": m["delta"],
                         "CI low": m["ci_low"], "CI high": m["ci_high"],
                         "McNemar p": block.get("mcnemar_p") if name == "accuracy" else None,
                         "real difference?": "yes" if m["significant"] else "no: the interval includes 0"})
        st.caption(esc(got["verdict"]))
    for why in refused:
        st.warning(f"No significance test: {esc(why)}")
    if rows:
        df = pd.DataFrame(rows)
        num = ["Δ (run − baseline)", "CI low", "CI high"]
        st.dataframe(df.style.format("{:+.4f}", subset=num, na_rep="n/a").format("{:.3g}", subset=["McNemar p"],
                                                                                na_rep="—"),
                     width="stretch", hide_index=True, key="ev_compare_significance")
        st.caption(f"95 % intervals from {N_BOOTSTRAP} paired bootstrap resamples of the same test rows; "
                   "McNemar's exact test on the samples exactly one run gets right. Same as "
                   "`python -m core compare BASELINE RUN`.")


def _single_view(pred: runs.Predictions, level: str | None) -> dict:
    """The single-label arrays of one level (hierarchical) or of the task, rows with a known truth only."""
    if pred.task == "hierarchical":
        level = level if level in pred.levels else pred.levels[-1]
        y, yp, p = pred.level_true[level], pred.level_pred[level], pred.level_probs[level]
        classes = tuple(pred.level_classes[level])
    else:
        y, yp, p, classes = pred.y_true, pred.y_pred, pred.probs, tuple(pred.classes)
    keep = y >= 0
    return dict(classes=classes, y=y[keep], y_pred=yp[keep], p=p[keep], paths=pred.paths[keep],
                sample_ids=pred.sample_ids[keep], n_unlabelled=int((~keep).sum()),
                positive_class=pred.positive_class if pred.task == "binary" else None, level=level)


@st.cache_data(show_spinner="Computing metrics…", max_entries=32)
def _single_eval(run_dir: str, mtime: float, split: str, level: str | None):
    v = _single_view(_predictions(run_dir, mtime, split), level)
    if len(v["y"]) == 0:
        raise ValueError(f"no {split} rows with a known true label")
    summary = metrics.classification_summary(v["y"], v["p"], classes=v["classes"], y_pred=v["y_pred"])
    curves = metrics.one_vs_rest_curves(v["y"], v["p"], classes=v["classes"])
    return v, summary, curves, metrics.calibration_bins(v["y"], v["p"])


@st.cache_data(show_spinner="Searching thresholds (with bootstrap)…", max_entries=64)
def _single_thresholds(run_dir: str, mtime: float, split: str, level: str | None, target: float):
    v = _single_view(_predictions(run_dir, mtime, split), level)
    return metrics.thresholds_at_precision(v["y"], v["p"], classes=v["classes"], target_precision=target,
                                           positive_class=v["positive_class"], n_bootstrap=N_BOOTSTRAP)


@st.cache_data(show_spinner="Fitting a temperature on val…", max_entries=32)
def _temperature(run_dir: str, mtime: float, level: str | None) -> metrics.TemperatureFit:
    v = _single_view(_predictions(run_dir, mtime, "val"), level)
    return metrics.fit_temperature(v["y"], v["p"])


@st.cache_data(show_spinner=False, max_entries=32)
def _hierarchy(run_dir: str, mtime: float, split: str) -> metrics.HierarchicalSummary:
    pred = _predictions(run_dir, mtime, split)
    keep = np.all([pred.level_true[lv] >= 0 for lv in pred.levels], axis=0)
    return metrics.hierarchical_summary({lv: pred.level_true[lv][keep] for lv in pred.levels},
                                        {lv: pred.level_probs[lv][keep] for lv in pred.levels},
                                        levels=pred.levels, level_classes=pred.level_classes, parents=pred.parents,
                                        level_pred={lv: pred.level_pred[lv][keep] for lv in pred.levels})


@st.cache_data(show_spinner="Computing metrics…", max_entries=32)
def _multilabel_eval(run_dir: str, mtime: float, split: str):
    pred = _predictions(run_dir, mtime, split)
    y, p = pred.y_true, pred.probs
    summary = metrics.multilabel_summary(y, p, labels=pred.classes, y_pred=pred.y_pred)
    curves = metrics.multilabel_curves(y, p, labels=pred.classes)
    known = ~np.isnan(y)
    cal = metrics.calibration_bins(y[known].astype(int), p[known]) if known.any() else None
    return pred, summary, curves, cal


@st.cache_data(show_spinner="Searching thresholds (with bootstrap)…", max_entries=64)
def _multilabel_thresholds(run_dir: str, mtime: float, split: str, target: float):
    pred = _predictions(run_dir, mtime, split)
    return metrics.thresholds_at_precision(pred.y_true, pred.probs, classes=pred.classes, target_precision=target,
                                           n_bootstrap=N_BOOTSTRAP)


@st.cache_data(show_spinner=False, max_entries=8)
def _boxes(root: str, dataset_id: str, updated_at: float) -> dict[str, tuple]:
    """``{sample_id: (x1, y1, x2, y2)}`` for the dataset's region-crop samples (empty when none)."""
    from core import datasets
    from core import workspace as wsmod

    try:
        s = datasets.open_dataset(wsmod.home(root), dataset_id).samples
    except (OSError, ValueError):
        return {}
    if not set(BOX_COLUMNS) <= set(s.columns):
        return {}
    boxed = s[s[BOX_COLUMNS].notna().all(axis=1)]
    return {str(sid): tuple(float(v) for v in row) for sid, row in zip(boxed["sample_id"],
                                                                       boxed[BOX_COLUMNS].to_numpy())}


@st.cache_data(show_spinner=False, max_entries=1024)
def _thumbnail(path: str, box: tuple | None, mtime: float) -> np.ndarray | None:
    from PIL import Image

    from core.images import load_image

    try:
        arr = load_image(path, box=box)
    except (OSError, ValueError):
        return None
    im = Image.fromarray(arr)
    im.thumbnail((THUMB, THUMB))
    canvas = Image.new("RGB", (THUMB, THUMB), (243, 244, 248))  # a tidy grid whatever the aspect ratio
    canvas.paste(im, ((THUMB - im.width) // 2, (THUMB - im.height) // 2))
    return np.asarray(canvas)


def _run_boxes(run_dir: str) -> dict[str, tuple]:
    ds_id = runs.read_config(run_dir).get("dataset_id")
    row = next((r for r in ws.list_datasets() if r["dataset_id"] == ds_id), None)
    return _boxes(str(ws.root), ds_id, row["updated_at"]) if row else {}


def _gallery(items: list[dict], run_dir: str) -> None:
    """Thumbnails with a caption each: ``items`` hold path, sample_id and caption."""
    if not items:
        st.info("No images here.")
        return
    boxes = _run_boxes(run_dir)
    for i, it in enumerate(items):
        if i % GALLERY_COLUMNS == 0:  # a fresh row each time, so wrapped captions never shift the grid
            cols = st.columns(GALLERY_COLUMNS)
        with cols[i % GALLERY_COLUMNS]:
            img = _thumbnail(str(it["path"]), boxes.get(str(it["sample_id"])), state.mtime(Path(str(it["path"]))))
            if img is None:
                st.caption(f"(image unavailable: {esc(Path(str(it['path'])).name)})")
            else:
                st.image(img, width="stretch")
            st.caption(esc(it["caption"]))


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ci(pair) -> str:
    lo, hi = pair
    return "n/a" if lo is None or hi is None or math.isnan(lo) or math.isnan(hi) else f"{lo:.3f} – {hi:.3f}"


def _color_delta(v) -> str:
    if not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)) or v == 0:
        return ""
    return f"color: {charts.GOOD_COLOR if v > 0 else charts.BAD_COLOR}; font-weight: 600"


# ---------------------------------------------------------------------------
# threshold picker (single- and multi-label share it)
# ---------------------------------------------------------------------------

def _threshold_table(choices: dict) -> pd.DataFrame:
    rows = []
    for name, ch in choices.items():
        rows.append({"class": name, "status": "ok" if ch.reachable else "unreachable",
                     "threshold": _fmt(ch.threshold, 4), "precision": _fmt(ch.precision),
                     "precision 95% CI": _ci(ch.precision_ci), "recall": _fmt(ch.recall),
                     "recall 95% CI": _ci(ch.recall_ci), "P(precision ≥ target)": _fmt(ch.p_target_met, 2),
                     "positives": ch.n_positive, "flagged": ch.n_predicted_positive})
    return pd.DataFrame(rows).set_index("class")


def threshold_panel(run_dir: str, choices: dict, curves, *, target: float, split: str, can_save: bool,
                    save_note: str = "", level: str | None = None, binary: str | None = None,
                    noun: str = "classes") -> None:
    reachable = {c: ch for c, ch in choices.items() if ch.reachable}
    unreachable = {c: ch for c, ch in choices.items() if not ch.reachable}
    if binary is not None:
        ch = choices[binary]
        st.markdown(f"**Positive class `{esc(binary)}`** at precision ≥ {target:.2f}")
        if ch.reachable:
            c = st.columns(4)
            c[0].metric("Threshold", f"{ch.threshold:.4f}")
            c[1].metric("Recall", f"{ch.recall:.3f}", help=f"95% bootstrap CI {_ci(ch.recall_ci)}")
            c[2].metric("Precision", f"{ch.precision:.3f}", help=f"95% bootstrap CI {_ci(ch.precision_ci)}")
            c[3].metric("P(precision ≥ target)", _fmt(ch.p_target_met, 2),
                        help="Share of bootstrap resamples whose precision still meets the target")
            st.caption(f"Recall 95% CI {_ci(ch.recall_ci)} · precision 95% CI {_ci(ch.precision_ci)} · "
                       f"{ch.n_predicted_positive} of {ch.n_positive + ch.n_negative} samples flagged "
                       f"({N_BOOTSTRAP} bootstrap resamples)")
    else:
        st.markdown(f"**{len(reachable)} of {len(choices)}** {noun} reach precision ≥ {target:.2f}. "
                    f"Per {noun[:-2] if noun == 'classes' else noun[:-1]}: the threshold with the highest recall at that precision, with 95% bootstrap "
                    f"intervals ({N_BOOTSTRAP} resamples).")
    if unreachable:
        st.warning("Target precision unreachable for "
                   + "; ".join(f"**{esc(c)}** ({esc(ch.message.split(': ', 1)[-1])})" for c, ch in unreachable.items())
                   + ". These classes get no threshold (they are saved as null).")
    table = _threshold_table(choices)
    st.dataframe(table.style.map(lambda v: f"color: {charts.BAD_COLOR}" if v == "unreachable" else "", subset=["status"]),
                 width="stretch", key="ev_threshold_table")
    names = list(choices)
    a, b = st.columns(2)
    with a:
        pick = st.selectbox("Class to inspect", names, key="ev_threshold_class") if len(names) > 1 else names[0]
        ch = choices[pick]
        st.plotly_chart(charts.threshold_sweep(curves.curves[pick], target_precision=target,
                                               threshold=ch.threshold if ch.reachable else None,
                                               title=f"Precision and recall vs threshold · {pick}"),
                        key="ev_sweep_chart")
    with b:
        shown = {pick: curves.curves[pick]}
        st.plotly_chart(charts.pr_curves(shown, points={pick: (ch.recall, ch.precision)} if ch.reachable else None,
                                         target_precision=target, title=f"PR curve · {pick}"),
                        key="ev_threshold_pr_chart")
    if st.button("Save thresholds to this run", key="ev_save_thresholds", type="primary", disabled=not can_save,
                 help=save_note or "Writes thresholds.json (Predict and Report use it); other sections are kept"):
        runs.write_thresholds(run_dir, classes={c: (ch.to_dict() if ch.reachable else None)
                                                for c, ch in choices.items()},
                              meta={"target_precision": float(target), "split": split, "level": level,
                                    "n_bootstrap": N_BOOTSTRAP, "source": "evaluate page"})
        st.success(f"Saved {len(reachable)} thresholds ({len(unreachable)} unreachable, saved as null) to "
                   f"{runs.RunDir(run_dir).thresholds.name}.")
    saved = runs.read_thresholds(run_dir)
    meta = saved.get("meta") or {}
    if saved.get("classes"):
        st.caption(f"Now in this run: {sum(v is not None for v in saved['classes'].values())} thresholds "
                   f"at target precision {meta.get('target_precision', '?')} ({meta.get('split', '?')} split)"
                   + (" · out-of-distribution threshold kept" if saved.get("ood") else ""))
    if save_note and not can_save:
        st.caption(save_note)


# ---------------------------------------------------------------------------
# single-label (multiclass, binary, one level of a hierarchy)
# ---------------------------------------------------------------------------

def headline(summary: metrics.ClassificationSummary, curves, cal, positive: str | None) -> None:
    c = st.columns(6)
    c[0].metric("Accuracy", _fmt(summary.accuracy))
    c[1].metric("Macro F1", _fmt(summary.f1_macro))
    if positive is not None:  # binary: the positive class is what matters
        pc = summary.per_class.loc[positive]
        c[2].metric(f"F1 · {positive}", _fmt(pc.f1), help=f"Precision {pc.precision:.3f}, recall {pc.recall:.3f}")
        c[3].metric(f"AP · {positive}", _fmt(curves.curves[positive].average_precision))
        c[4].metric(f"ROC AUC · {positive}", _fmt(curves.curves[positive].roc_auc))
    else:
        c[2].metric("Weighted F1", _fmt(summary.f1_weighted))
        c[3].metric("Mean AP", _fmt(curves.mean_average_precision), help="Mean one-vs-rest average precision")
        c[4].metric("Macro ROC AUC", _fmt(curves.macro_roc_auc))
    c[5].metric("ECE", _fmt(cal.ece), help="Expected calibration error (lower is better)")


def _cell_from_selection(classes: tuple[str, ...]) -> None:
    """A click on the confusion matrix picks the cell (only when the selection changed)."""
    sel = st.session_state.get("ev_cm_chart")
    points = []
    try:
        points = list(sel["selection"]["points"]) if sel else []
    except (KeyError, TypeError):
        points = []
    if not points:
        return
    cd = points[0].get("customdata")
    if isinstance(cd, dict):
        cd = [cd[k] for k in sorted(cd, key=int)]
    try:
        i, j = int(cd[0]), int(cd[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return
    if st.session_state.get("_ev_cm_applied") == (i, j) or not (0 <= i < len(classes) and 0 <= j < len(classes)):
        return
    st.session_state["_ev_cm_applied"] = (i, j)
    st.session_state["ev_cell_true"] = classes[i]
    st.session_state["ev_cell_pred"] = classes[j]


def confusion_tab(v: dict, summary: metrics.ClassificationSummary, run_dir: str) -> None:
    classes = summary.classes
    cm = summary.confusion
    off = cm.copy()
    np.fill_diagonal(off, 0)
    i0, j0 = np.unravel_index(int(np.argmax(off)), off.shape) if off.any() else (0, 0)
    for key, default in (("ev_cell_true", classes[i0]), ("ev_cell_pred", classes[j0])):
        if st.session_state.get(key) not in classes:
            st.session_state[key] = default
    _cell_from_selection(classes)
    left, right = st.columns([3, 2])
    with right:
        st.markdown("**Images behind a cell**: click a cell, or choose it")
        t = st.selectbox("True class", classes, key="ev_cell_true")
        p = st.selectbox("Predicted class", classes, key="ev_cell_pred")
        i, j = classes.index(t), classes.index(p)
        row = int(cm[i].sum())
        st.metric("Samples in this cell", f"{int(cm[i, j])}")
        st.caption(f"{cm[i, j] / row:.1%} of the {row} true **{esc(t)}** samples are predicted **{esc(p)}**"
                   if row else f"No samples of class **{esc(t)}** here.")
    with left:
        normalized = st.toggle("Row-normalised (share of each true class)", key="ev_cm_norm")
        fig = charts.confusion_matrix(summary.confusion_normalized if normalized else cm, classes, counts=cm,
                                      normalized=normalized, selected=(i, j),
                                      title=f"Confusion matrix · {summary.n_samples} samples")
        st.plotly_chart(fig, key="ev_cm_chart", on_select="rerun", selection_mode="points")
    idx = metrics.confident_mistakes(v["y"], v["p"], true_class=i, pred_class=j, y_pred=v["y_pred"])
    st.markdown(f"**{'Correct' if i == j else 'Mistakes'}: true {esc(t)} → predicted {esc(p)}** "
                f"({len(idx)}, most confident first" + (f", first {GALLERY} shown)" if len(idx) > GALLERY else ")"))
    _gallery([{"path": v["paths"][k], "sample_id": v["sample_ids"][k],
               "caption": f"{classes[v['y'][k]]} → {classes[v['y_pred'][k]]} · {v['p'][k, v['y_pred'][k]]:.2f}"}
              for k in idx[:GALLERY]], run_dir)


def per_class_tab(summary: metrics.ClassificationSummary, curves) -> None:
    table = summary.per_class[["precision", "recall", "f1", "support", "predicted"]].copy()
    table["average_precision"] = pd.Series(curves.average_precision)
    table["roc_auc"] = pd.Series(curves.roc_auc)
    order = st.selectbox("Sort by", ["f1 (worst first)", "recall (worst first)", "precision (worst first)",
                                     "support (largest first)", "class name"], key="ev_sort")
    col = order.split(" ")[0]
    table = table.sort_index() if col == "class" else table.sort_values(col, ascending="worst" in order)
    st.dataframe(table.style.format({c: "{:.3f}" for c in ("precision", "recall", "f1", "average_precision",
                                                           "roc_auc")}, na_rep="n/a"),
                 width="stretch", key="ev_per_class_table")
    avg = pd.DataFrame({"precision": [summary.precision_macro, summary.precision_micro, summary.precision_weighted],
                        "recall": [summary.recall_macro, summary.recall_micro, summary.recall_weighted],
                        "f1": [summary.f1_macro, summary.f1_micro, summary.f1_weighted]},
                       index=pd.Index(["macro", "micro", "weighted"], name="average"))
    a, b = st.columns([3, 1])
    a.dataframe(avg.style.format("{:.3f}"), width="stretch", key="ev_averages_table")
    b.metric("Accuracy", _fmt(summary.accuracy), help="Equals micro-averaged precision / recall / F1 here")
    worst = table.sort_values("f1").head(3)
    st.caption("Weakest classes by F1: " + ", ".join(f"{esc(c)} ({r.f1:.2f})" for c, r in worst.iterrows()))


def curves_tab(curves, *, positive: str | None) -> None:
    names = list(curves.classes)
    if positive is not None:
        c = curves.curves[positive]
        m = st.columns(2)
        m[0].metric(f"Average precision · {positive}", _fmt(c.average_precision))
        m[1].metric(f"ROC AUC · {positive}", _fmt(c.roc_auc))
        shown = [positive]
    else:
        shown = st.multiselect("Classes", names, default=names[:10], key="ev_curve_classes")
    sel = {n: curves.curves[n] for n in shown}
    a, b = st.columns(2)
    a.plotly_chart(charts.pr_curves(sel, title="Precision-recall (one-vs-rest)"), key="ev_pr_chart")
    b.plotly_chart(charts.roc_curves(sel, title="ROC (one-vs-rest)"), key="ev_roc_chart")
    if positive is None:
        st.dataframe(curves.table().style.format({"average_precision": "{:.3f}", "roc_auc": "{:.3f}"}, na_rep="n/a"),
                     width="stretch", key="ev_curve_table")


def calibration_tab(v: dict, cal, run_dir: str, mtime: float, split: str, has_val: bool) -> None:
    use_t = st.toggle("Temperature scaling (fitted on the val split)", key="ev_temperature", disabled=not has_val,
                      help=None if has_val else "This run's predictions.csv has no val rows to fit on")
    after, fit = None, None
    if use_t and has_val:
        try:
            fit = _temperature(run_dir, mtime, v["level"])
        except ValueError as exc:
            st.warning(f"No temperature fitted: {exc}")
        else:
            after = metrics.calibration_bins(v["y"], metrics.apply_temperature(v["p"], temperature=fit.temperature))
    c = st.columns(4)
    c[0].metric("ECE", _fmt(cal.ece), help="Expected calibration error: confidence-weighted gap (lower is better)")
    c[1].metric("Max calibration error", _fmt(cal.mce))
    if after is not None:
        c[2].metric("ECE after scaling", _fmt(after.ece), delta=f"{after.ece - cal.ece:+.3f}", delta_color="inverse")
        c[3].metric("Temperature", f"{fit.temperature:.3f}",
                    help=f"Val NLL {fit.nll_before:.3f} → {fit.nll_after:.3f} on {fit.n_samples} samples; "
                         "T > 1 softens over-confident probabilities (predictions are unchanged)")
        if split == "val":
            st.caption("Fitted and shown on the same val rows: an optimistic view; look at the test split.")
    st.plotly_chart(charts.reliability_diagram(cal, after=after, title="Reliability diagram (top-label confidence)"),
                    key="ev_reliability_chart")


def mistakes_tab(v: dict, run_dir: str) -> None:
    classes = v["classes"]
    pick = st.selectbox("True class", ["(all)"] + list(classes), key="ev_mistakes_class")
    idx = metrics.confident_mistakes(v["y"], v["p"], y_pred=v["y_pred"],
                                     true_class=None if pick == "(all)" else classes.index(pick))
    st.caption(f"{len(idx)} misclassified samples, the most confident mistakes first"
               + (f" (first {GALLERY} shown)" if len(idx) > GALLERY else "")
               + ". Confident mistakes are often label errors: review them on the Clean page.")
    _gallery([{"path": v["paths"][k], "sample_id": v["sample_ids"][k],
               "caption": f"true {classes[v['y'][k]]} · predicted {classes[v['y_pred'][k]]} "
                          f"({v['p'][k, v['y_pred'][k]]:.2f})"} for k in idx[:GALLERY]], run_dir)


def hierarchy_panel(run_dir: str, mtime: float, split: str) -> None:
    hs = _hierarchy(run_dir, mtime, split)
    a, b = st.columns([3, 1])
    a.dataframe(hs.table.style.format({"accuracy": "{:.3f}", "macro_f1": "{:.3f}", "weighted_f1": "{:.3f}"}),
                width="stretch", key="ev_levels_table")
    b.metric("Hierarchy-consistent predictions", f"{hs.consistency_rate:.1%}",
             help="Share of samples whose predicted path respects the hierarchy (each class under its parent)")
    flat_vs_separate(run_dir, split)


def flat_vs_separate(run_dir: str, split: str) -> None:
    """The flat and separate hierarchical runs of this run's dataset, side by side (when both exist)."""
    cfg = runs.read_config(run_dir)
    table = state.runs_table(ws)
    if table.empty:
        return
    table = table[table["has_predictions"].astype(bool) & (table["task"] == "hierarchical")
                  & (table["dataset_id"] == cfg.get("dataset_id"))]
    rows = []
    for r in table.itertuples():
        mode = runs.read_config(r.path).get("hierarchy_mode") or "flat"
        try:
            hs = _hierarchy(str(r.path), state.mtime(runs.RunDir(r.path).predictions), split)
        except ValueError:
            continue
        row = {"run": r.run_id, "mode": mode, "model": r.model}
        for lv in hs.levels:
            row[f"{lv} accuracy"] = hs.table.loc[lv, "accuracy"]
            row[f"{lv} macro F1"] = hs.table.loc[lv, "macro_f1"]
        row["consistent"] = hs.consistency_rate
        rows.append((row, str(r.path)))
    if not {"flat", "separate"} <= {row["mode"] for row, _ in rows}:
        return
    st.markdown("**Flat vs separate models** on this dataset (same split)")
    df = pd.DataFrame([row for row, _ in rows]).set_index("run")
    num = [c for c in df.columns if c not in ("mode", "model")]
    st.dataframe(df.style.format({c: "{:.3f}" for c in num}).highlight_max(subset=num, color="#D1FAE5"),
                 width="stretch", key="ev_flat_vs_separate")
    # is the difference real? this run against the newest run of the other mode (else the newest of each)
    here = runs.RunDir(run_dir).run_id
    mine = next(((row, path) for row, path in rows if row["run"] == here), None)
    newest = {mode: next((row, path) for row, path in rows if row["mode"] == mode) for mode in ("flat", "separate")}
    if mine is not None:
        newest[mine[0]["mode"]] = mine
    (flat, flat_dir), (sep, sep_dir) = newest["flat"], newest["separate"]
    result, why = _paired(flat_dir, state.mtime(runs.RunDir(flat_dir).predictions), sep_dir,
                          state.mtime(runs.RunDir(sep_dir).predictions), split, None)
    if result is None:
        st.caption(f"Flat run {esc(flat['run'])} and separate run {esc(sep['run'])} cannot be paired: {esc(why)}")
        return
    verdicts = compare.level_verdicts(result)
    lost = [lv for lv, (winner, _) in verdicts.items() if winner == flat["run"]]
    lines = "\n".join(f"- **{esc(lv)}**: {esc(text)}" for lv, (_, text) in verdicts.items())
    head = (f"Separate run **{esc(sep['run'])}** against flat run **{esc(flat['run'])}** on the {esc(split)} split "
            f"(macro F1, paired bootstrap, {result['n_common']:,} samples):")
    if lost:
        st.warning(f"{head} **separate loses to flat** on {', '.join(esc(lv) for lv in lost)}.\n\n{lines}")
    else:
        st.info(f"{head}\n\n{lines}")


def compare_tab(run_dir: str, split: str, level: str | None, *, multilabel: bool = False) -> None:
    table = state.runs_table(ws)
    table = table[table["has_predictions"].astype(bool)] if not table.empty else table
    ids = list(table["run_id"]) if not table.empty else []
    here = runs.RunDir(run_dir).run_id
    if len(ids) < 2:
        st.info("Only one run has predictions: train another (Train page) to compare them here.")
        return
    ds_id = runs.read_config(run_dir).get("dataset_id")
    same = [i for i, d in zip(table["run_id"], table["dataset_id"]) if i != here and d == ds_id]
    default = [here] + (same[:1] or [i for i in ids if i != here][:1])
    if "ev_compare_runs" not in st.session_state or here not in st.session_state.get("_ev_compare_for", ()):
        st.session_state["ev_compare_runs"] = default
        st.session_state["_ev_compare_for"] = (here,)
    else:  # runs deleted since: drop them from the choice
        st.session_state["ev_compare_runs"] = [i for i in st.session_state["ev_compare_runs"] if i in ids]
    chosen = st.multiselect("Runs to compare (the first is the baseline)", ids, key="ev_compare_runs")
    if len(chosen) < 2:
        st.info("Choose two or more runs.")
        return
    paths = dict(zip(table["run_id"], table["path"]))
    summaries, curve_sets, samples, skipped = {}, {}, {}, []
    for rid in chosen:
        p = str(paths[rid])
        try:
            pred = _predictions(p, state.mtime(runs.RunDir(p).predictions), split)
        except ValueError as exc:
            skipped.append(f"{rid}: {exc}")
            continue
        if (pred.task == "multilabel") != multilabel:
            skipped.append(f"{rid}: a {pred.task} run cannot be compared with a "
                           f"{'multi-label' if multilabel else 'single-label'} one")
            continue
        try:
            if multilabel:
                _, s, cs, _ = _multilabel_eval(p, state.mtime(runs.RunDir(p).predictions), split)
            else:
                _, s, cs, _ = _single_eval(p, state.mtime(runs.RunDir(p).predictions), split, level)
        except ValueError as exc:
            skipped.append(f"{rid}: {exc}")
            continue
        summaries[rid], curve_sets[rid], samples[rid] = s, cs, frozenset(pred.sample_ids)
    for msg in skipped:
        st.warning(f"Left out {esc(msg)}")
    if len(summaries) < 2:
        st.info("Fewer than two comparable runs left.")
        return
    if len(set(samples.values())) > 1:
        st.warning(f"These runs were not evaluated on the same {split} samples (different datasets or splits): "
                   "differences mix model and data.")
    cmp = metrics.compare_runs(summaries)
    base = cmp.baseline
    if len({frozenset(cs.classes) for cs in curve_sets.values()}) > 1:
        st.caption("The runs do not predict the same classes: a class missing from a run shows n/a.")
    st.markdown(f"**Overall** (baseline `{esc(base)}`; Δ = run − baseline)")
    overall = cmp.overall.drop(index=["n_samples"], errors="ignore")
    deltas = [c for c in overall.columns if c.startswith("delta_")]
    st.dataframe(overall.style.format("{:.3f}", na_rep="n/a").format("{:+.3f}", subset=deltas, na_rep="n/a")
                 .map(_color_delta, subset=deltas), width="stretch",
                 key="ev_compare_overall")
    others = [r for r in cmp.runs if r != base]
    st.markdown("**Is the difference real?**")
    significance_table(str(paths[base]), {r: str(paths[r]) for r in others}, split, level)
    other = st.selectbox("Per-class change of", others, key="ev_compare_other") if len(others) > 1 else others[0]
    a, b = st.columns([2, 3])
    a.plotly_chart(charts.metric_deltas(cmp.per_class[f"delta_f1_{other}"], name=f"Δ F1 ({other} − {base})",
                                        title="Per-class F1 change, largest first"), key="ev_compare_deltas")
    with b:
        classes = list(cmp.per_class.index)
        cls = st.selectbox("Class for the overlaid PR curves", classes, key="ev_compare_class")
        overlay = {r: cs.curves[cls] for r, cs in curve_sets.items() if cls in cs.curves}
        st.plotly_chart(charts.pr_curves(overlay, title=f"PR curves · {cls}"), key="ev_compare_pr")
    pc = cmp.per_class
    cols = ([c for c in pc.columns if c.startswith("f1_")] + [c for c in pc.columns if c.startswith("delta_f1_")]
            + [c for c in pc.columns if c.startswith(("precision_", "recall_"))])
    st.dataframe(pc[cols + [c for c in pc.columns if c.startswith("support_")]]
                 .style.format({c: ("{:+.3f}" if c.startswith("delta_") else "{:.3f}") for c in cols}, na_rep="n/a")
                 .map(_color_delta, subset=[c for c in cols if c.startswith("delta_")]),
                 width="stretch", key="ev_compare_per_class")


def single_label_page(run_dir: str, mtime: float, split: str, level: str | None, task: str, has_val: bool) -> None:
    v, summary, curves, cal = _single_eval(run_dir, mtime, split, level)
    headline(summary, curves, cal, v["positive_class"])
    st.caption(f"{summary.n_samples} {split} samples"
               + (f" at level **{esc(level)}**" if task == "hierarchical" else "")
               + (f" · {v['n_unlabelled']} without a true label left out" if v["n_unlabelled"] else ""))
    if task == "hierarchical":
        with st.expander("Hierarchy: every level and the consistency of predicted paths", expanded=True):
            hierarchy_panel(run_dir, mtime, split)
    tabs = st.tabs(["Confusion matrix", "Per class", "PR / ROC", "Threshold", "Calibration", "Mistakes",
                    "Compare runs"])
    with tabs[0]:
        confusion_tab(v, summary, run_dir)
    with tabs[1]:
        per_class_tab(summary, curves)
    with tabs[2]:
        curves_tab(curves, positive=v["positive_class"])
    with tabs[3]:
        target = st.slider("Target precision", 0.50, 0.99, 0.90, 0.01, key="ev_target")
        choices = _single_thresholds(run_dir, mtime, split, level, target)
        fine = task != "hierarchical" or level == runs.read_labels(run_dir)["levels"][-1]
        threshold_panel(run_dir, choices, curves, target=target, split=split, can_save=fine, level=level,
                        binary=v["positive_class"],
                        save_note="" if fine else "Thresholds apply to the model's outputs (the finest level): "
                                                  "switch the level to save them.")
    with tabs[4]:
        calibration_tab(v, cal, run_dir, mtime, split, has_val)
    with tabs[5]:
        mistakes_tab(v, run_dir)
    with tabs[6]:
        compare_tab(run_dir, split, level)


# ---------------------------------------------------------------------------
# multi-label
# ---------------------------------------------------------------------------

def multilabel_page(run_dir: str, mtime: float, split: str) -> None:
    pred, ms, curves, cal = _multilabel_eval(run_dir, mtime, split)
    known = ~np.isnan(pred.y_true)
    c = st.columns(6)
    c[0].metric("Micro F1", _fmt(ms.micro_f1))
    c[1].metric("Macro F1", _fmt(ms.macro_f1))
    c[2].metric("Subset accuracy", _fmt(ms.subset_accuracy),
                help="Samples whose prediction is right on every known label")
    c[3].metric("Accuracy (known entries)", _fmt(ms.hamming_accuracy))
    c[4].metric("Mean AP", _fmt(curves.mean_average_precision))
    c[5].metric("Missing entries", f"{int((~known).sum()):,}", help="Left out of every metric, never read as 0")
    st.caption(f"{ms.n_samples} {split} samples · {ms.n_subset} with at least one known label · missing label "
               "entries are masked out of every number on this page")
    tabs = st.tabs(["Per label", "PR / ROC", "Threshold", "Calibration", "Mistakes", "Compare runs"])
    with tabs[0]:
        table = ms.per_label.copy()
        table["roc_auc"] = pd.Series(curves.roc_auc)
        st.dataframe(table.sort_values("f1").style.format(
            {c: "{:.3f}" for c in ("precision", "recall", "f1", "average_precision", "roc_auc")}, na_rep="n/a"),
            width="stretch", key="ev_per_label_table")
        avg = pd.DataFrame({"precision": [ms.micro_precision, ms.macro_precision],
                            "recall": [ms.micro_recall, ms.macro_recall], "f1": [ms.micro_f1, ms.macro_f1]},
                           index=pd.Index(["micro", "macro"], name="average"))
        st.dataframe(avg.style.format("{:.3f}"), width="content", key="ev_ml_averages")
    with tabs[1]:
        curves_tab(curves, positive=None)
    with tabs[2]:
        target = st.slider("Target precision", 0.50, 0.99, 0.90, 0.01, key="ev_target")
        choices = _multilabel_thresholds(run_dir, mtime, split, target)
        threshold_panel(run_dir, choices, curves, target=target, split=split, can_save=True, noun="labels")
    with tabs[3]:
        if cal is None:
            st.info("No known label entries to calibrate.")
        else:
            st.metric("ECE (per known label entry)", _fmt(cal.ece))
            st.caption("Calibration of every known (sample, label) probability. Temperature scaling applies to "
                       "single-label (softmax) runs.")
            st.plotly_chart(charts.reliability_diagram(cal, title="Reliability diagram (label probabilities)"),
                            key="ev_reliability_chart")
    with tabs[4]:
        idx = metrics.multilabel_mistakes(pred.y_true, pred.probs, y_pred=pred.y_pred)
        st.caption(f"{len(idx)} samples with at least one wrong known label, the most confident mistake first")
        items = []
        for k in idx[:GALLERY]:
            wrong = [f"{'+' if pred.y_pred[k, j] else '−'}{pred.classes[j]} ({pred.probs[k, j]:.2f})"
                     for j in range(len(pred.classes)) if known[k, j] and pred.y_pred[k, j] != pred.y_true[k, j]]
            items.append({"path": pred.paths[k], "sample_id": pred.sample_ids[k],
                          "caption": "wrong: " + ", ".join(wrong)})
        _gallery(items, run_dir)
        st.caption("+label: predicted but absent; −label: present but missed; (the label's probability).")
    with tabs[5]:
        compare_tab(run_dir, split, None, multilabel=True)


# ---------------------------------------------------------------------------

top = st.columns([3, 1, 1])
run_dir = state.pick_run(ws, container=top[0])
if run_dir is None:
    st.info("No finished run with predictions yet. Train one on the Train page: a finished (or stopped) run "
            "writes `predictions.csv` for its val and test splits, and it appears here.")
    st.stop()
rd = runs.RunDir(run_dir)
mtime = state.mtime(rd.predictions)
present = _splits(run_dir, mtime)
options = [s for s in ("test", "val") if s in present]
if not options:
    st.info(f"`{esc(rd.predictions)}` has no test or val rows to evaluate (splits present: "
            f"{esc(', '.join(present) or 'none')}).")
    st.stop()
if st.session_state.get("ev_split") not in options:
    st.session_state["ev_split"] = options[0]
split = top[1].radio("Split", options, key="ev_split", horizontal=True)
try:
    labels = runs.read_labels(run_dir)
except ValueError as exc:
    st.error(str(exc))
    st.stop()
task = labels["task"]
level = None
if task == "hierarchical":
    levels = labels["levels"]
    if st.session_state.get("ev_level") not in levels:
        st.session_state["ev_level"] = levels[-1]
    level = top[2].selectbox("Level", levels, key="ev_level")
try:
    if task == "multilabel":
        multilabel_page(run_dir, mtime, split)
    else:
        single_label_page(run_dir, mtime, split, level, task, has_val="val" in present)
except ValueError as exc:
    st.error(f"This run's predictions cannot be evaluated: {exc}")
