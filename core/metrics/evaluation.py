"""Run-level evaluation: one JSON-ready evaluation of a run's predictions (the CLI's and the report's),
its plain-text rendering, and the side-by-side comparison of runs' summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from core.metrics.calibration import calibration_bins
from core.metrics.classification import ClassificationSummary, classification_summary
from core.metrics.curves import multilabel_curves, one_vs_rest_curves
from core.metrics.hierarchical import hierarchy_consistency
from core.metrics.multilabel import MultilabelSummary, multilabel_summary
from core.metrics.thresholds import thresholds_at_precision


@dataclass(frozen=True, eq=False)
class RunComparison:
    """Metrics of several runs side by side.

    ``overall``: rows are metrics (accuracy, macro_f1, ...), one column per run, plus
    ``delta_<run>`` columns (run minus ``baseline``). ``per_class``: rows are classes
    (union over runs), columns ``f1_<run>``, ``precision_<run>``, ``recall_<run>``,
    ``support_<run>`` and ``delta_f1_<run>`` for each non-baseline run; sorted by the
    largest absolute F1 change first.
    """

    runs: tuple[str, ...]
    baseline: str
    overall: pd.DataFrame
    per_class: pd.DataFrame


def compare_runs(summaries: Mapping[str, ClassificationSummary | MultilabelSummary], *,
                 baseline: str | None = None) -> RunComparison:
    """Side-by-side metrics and per-class deltas of two or more runs.

    Parameters
    ----------
    summaries : mapping {run_id: ClassificationSummary}, or {run_id: MultilabelSummary}
        In display order; runs evaluated on the same test split compare fairly. All of one
        kind (multi-label runs compare per label: the ``per_class`` rows are labels).
    baseline : str, optional
        The run the deltas are taken against (default: the first).
    """
    if not isinstance(summaries, Mapping) or len(summaries) < 1:
        raise ValueError("summaries must be a non-empty mapping {run_id: ClassificationSummary}")
    runs = tuple(str(r) for r in summaries)
    for r, s in summaries.items():
        if not isinstance(s, (ClassificationSummary, MultilabelSummary)):
            raise ValueError(f"summaries[{r!r}] must be a ClassificationSummary or MultilabelSummary; "
                             f"received {type(s).__name__}")
    if len({type(s) for s in summaries.values()}) > 1:
        raise ValueError("summaries mix single-label and multi-label runs; compare runs of one kind")
    base = runs[0] if baseline is None else str(baseline)
    if base not in runs:
        raise ValueError(f"baseline must be one of {list(runs)}; received {baseline!r}")
    by = {str(r): s for r, s in summaries.items()}
    overall = pd.DataFrame({r: by[r].overall() for r in runs})
    others = [r for r in runs if r != base]
    for r in others:
        overall[f"delta_{r}"] = overall[r] - overall[base]
    classes: list[str] = []
    def names(x: ClassificationSummary | MultilabelSummary) -> tuple[str, ...]:
        return x.classes if isinstance(x, ClassificationSummary) else x.labels

    def table(x: ClassificationSummary | MultilabelSummary) -> pd.DataFrame:
        return x.per_class if isinstance(x, ClassificationSummary) else x.per_label

    for r in runs:
        classes += [c for c in names(by[r]) if c not in classes]
    cols = {}
    for r in runs:
        pc = table(by[r]).reindex(classes)
        for m in ("precision", "recall", "f1", "support"):
            cols[f"{m}_{r}"] = pc[m]
    per_class = pd.DataFrame(cols, index=pd.Index(classes, name="class"))
    for r in others:
        per_class[f"delta_f1_{r}"] = per_class[f"f1_{r}"] - per_class[f"f1_{base}"]
    if others:
        key = per_class[[f"delta_f1_{r}" for r in others]].abs().max(axis=1)
        per_class = per_class.loc[key.sort_values(ascending=False, na_position="last").index]
    return RunComparison(runs=runs, baseline=base, overall=overall, per_class=per_class)


def _clean(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) else float(v)
    if isinstance(v, np.integer):
        return int(v)
    return v


def _single_label_block(y: np.ndarray, p: np.ndarray, classes: tuple[str, ...], *, positive_class: str | None,
                        kw: dict[str, Any], y_pred: np.ndarray | None = None) -> dict[str, Any]:
    s = classification_summary(y, p, classes=classes, y_pred=y_pred)
    curves = one_vs_rest_curves(y, p, classes=classes)
    per_class = s.per_class_dict()
    for c in classes:
        per_class[c]["average_precision"] = _clean(curves.curves[c].average_precision)
        per_class[c]["roc_auc"] = _clean(curves.curves[c].roc_auc)
        per_class[c] = {k: _clean(v) for k, v in per_class[c].items()}
    choices = thresholds_at_precision(y, p, classes=classes, positive_class=positive_class, **kw)
    return {**{k: _clean(v) for k, v in s.overall().items()},
            "per_class": per_class,
            "mean_average_precision": _clean(curves.mean_average_precision),
            "macro_roc_auc": _clean(curves.macro_roc_auc),
            "ece": _clean(calibration_bins(y, p).ece),
            "confusion": {"classes": list(classes), "matrix": s.confusion.tolist()},
            "thresholds": {c: (ch.to_dict() if ch.reachable else None) for c, ch in choices.items()},
            "threshold_messages": {c: ch.message for c, ch in choices.items()}}


def evaluate_predictions(predictions: Any, *, target_precision: float = 0.9, n_bootstrap: int = 1000,
                         seed: int = 0) -> dict[str, Any]:
    """Every headline metric of a run's predictions as one JSON-ready dict.

    Parameters
    ----------
    predictions : core.runs.Predictions
        (read with :func:`core.runs.read_predictions`, usually for one split).
    target_precision, n_bootstrap, seed
        For the per-class threshold picker (:func:`thresholds_at_precision`).

    Returns
    -------
    dict with ``task, n_samples, n_unlabelled, accuracy, macro_f1, per_class, thresholds,
    target_precision`` and, by task: single-label — averaged P/R/F1, ``confusion``,
    ``mean_average_precision``, ``ece``, ``positive_class`` (binary: ``thresholds`` holds
    the positive class only); multi-label — ``per_label`` (= ``per_class``), ``micro_f1``,
    ``subset_accuracy``, and ``accuracy`` = the fraction of known (sample, label) entries
    predicted correctly (as the training worker reports it);
    hierarchical — ``levels`` {level: single-label block}, ``consistency_rate``, and the
    finest level's block at top level. ``thresholds[name]`` is ``{threshold, precision,
    recall, precision_ci, recall_ci, ...}`` or None when the target is unreachable. NaN
    becomes None. Rows with an unknown true label are left out (``n_unlabelled``).
    Accuracy, precision / recall / F1, the confusion matrix and the hierarchy-consistency
    rate score the file's ``pred`` columns (what the run predicted: for hierarchical runs
    the full predicted path); curves, AP / AUC, thresholds and calibration use the
    probability columns.
    """
    kw = dict(target_precision=target_precision, n_bootstrap=n_bootstrap, seed=seed)
    task = predictions.task
    classes = tuple(predictions.classes)
    out: dict[str, Any] = {"task": task, "target_precision": float(target_precision)}
    if task in ("multiclass", "binary"):
        keep = predictions.y_true >= 0
        if not keep.any():
            raise ValueError("no rows with a known true label to evaluate")
        out.update(n_unlabelled=int((~keep).sum()), positive_class=predictions.positive_class)
        out.update(_single_label_block(predictions.y_true[keep], predictions.probs[keep], classes,
                                       positive_class=predictions.positive_class if task == "binary" else None,
                                       kw=kw, y_pred=predictions.y_pred[keep]))
        return out
    if task == "multilabel":
        y, p = predictions.y_true, predictions.probs
        known_rows = (~np.isnan(y)).any(axis=1)
        ms = multilabel_summary(y, p, labels=classes, y_pred=predictions.y_pred)
        curves = multilabel_curves(y, p, labels=classes)
        choices = thresholds_at_precision(y, p, classes=classes, **kw)
        per_label = {c: {k: _clean(v) for k, v in row.items()} for c, row in ms.per_label.to_dict("index").items()}
        for c in classes:
            per_label[c]["roc_auc"] = _clean(curves.curves[c].roc_auc)
        known = ~np.isnan(y)
        out.update({k: _clean(v) for k, v in ms.overall().items()})
        out.update(n_unlabelled=int((~known_rows).sum()), accuracy=_clean(ms.hamming_accuracy),
                   per_class=per_label, per_label=per_label,
                   mean_average_precision=_clean(curves.mean_average_precision),
                   ece=_clean(calibration_bins(y[known].astype(int), p[known]).ece) if known.any() else None,
                   thresholds={c: (ch.to_dict() if ch.reachable else None) for c, ch in choices.items()},
                   threshold_messages={c: ch.message for c, ch in choices.items()})
        return out
    if task == "hierarchical":
        levels = tuple(predictions.levels)
        keep = np.all([predictions.level_true[lv] >= 0 for lv in levels], axis=0)
        if not keep.any():
            raise ValueError("no rows with a known true label at every level to evaluate")
        blocks = {lv: _single_label_block(predictions.level_true[lv][keep], predictions.level_probs[lv][keep],
                                          tuple(predictions.level_classes[lv]), positive_class=None, kw=kw,
                                          y_pred=predictions.level_pred[lv][keep])
                  for lv in levels}
        names = {lv: np.array(predictions.level_classes[lv], dtype=object)[predictions.level_pred[lv]]
                 for lv in levels}
        consistent = hierarchy_consistency(names, levels=levels, parents=predictions.parents)
        out.update(blocks[levels[-1]])
        out.update(n_unlabelled=int((~keep).sum()), levels=blocks, level_order=list(levels),
                   consistency_rate=_clean(float(consistent.mean())) if len(consistent) else None)
        return out
    raise ValueError(f"predictions.task must be one of multiclass, binary, multilabel, hierarchical; "
                     f"received {task!r}")


def format_evaluation(result: Mapping[str, Any]) -> str:
    """A plain-text rendering of :func:`evaluate_predictions` (for the CLI without --json)."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))

    lines = [f"task: {result.get('task')}   split: {result.get('split', '?')}   samples: {result.get('n_samples')}"
             + (f"   (left out, no true label: {result['n_unlabelled']})" if result.get("n_unlabelled") else "")]
    if result.get("task") == "multilabel":
        lines.append(f"accuracy over known entries: {fmt(result.get('accuracy'))}   "
                     f"subset accuracy (known entries): {fmt(result.get('subset_accuracy'))}   "
                     f"micro F1: {fmt(result.get('micro_f1'))}   macro F1: {fmt(result.get('macro_f1'))}")
        cols = ["precision", "recall", "f1", "support", "n_known", "n_missing", "average_precision"]
    else:
        lines.append(f"accuracy: {fmt(result.get('accuracy'))}   macro F1: {fmt(result.get('macro_f1'))}   "
                     f"weighted F1: {fmt(result.get('weighted_f1'))}   ECE: {fmt(result.get('ece'))}")
        cols = ["precision", "recall", "f1", "support", "average_precision", "roc_auc"]
    for lv in result.get("level_order", []):
        b = result["levels"][lv]
        lines.append(f"  level {lv}: accuracy {fmt(b.get('accuracy'))}, macro F1 {fmt(b.get('macro_f1'))}")
    if "consistency_rate" in result:
        lines.append(f"hierarchy-consistent predictions: {fmt(result['consistency_rate'])}")
    table = pd.DataFrame.from_dict(result.get("per_class", {}), orient="index")
    table = table.apply(lambda col: pd.to_numeric(col, errors="coerce"))
    if not table.empty:
        lines.append(table[[c for c in cols if c in table.columns]].to_string(float_format=lambda x: f"{x:.3f}"))
    lines.append(f"thresholds at precision >= {result.get('target_precision')}:")
    for name, th in (result.get("thresholds") or {}).items():
        if th is None:
            lines.append(f"  {name}: {result.get('threshold_messages', {}).get(name, 'unreachable')}")
        else:
            pci, rci = th.get("precision_ci") or [None, None], th.get("recall_ci") or [None, None]
            lines.append(f"  {name}: threshold {fmt(th['threshold'])}  precision {fmt(th['precision'])} "
                         f"[{fmt(pci[0])}, {fmt(pci[1])}]  recall {fmt(th['recall'])} [{fmt(rci[0])}, {fmt(rci[1])}]")
    return "\n".join(lines)
