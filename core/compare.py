"""Is run B really better than run A? Paired significance on the same test rows.

Two runs evaluated on the same N test samples are compared sample by sample (paired):

* **McNemar's exact test** (single-label and hierarchical tasks): of the samples exactly one
  run classifies correctly, how lopsided is the split? ``p`` is the two-sided binomial test
  of those discordant counts against 50 / 50 (:func:`scipy.stats.binomtest`).
* **Paired bootstrap** (every task): the same resample of test rows is scored for both
  runs, B times; the ``confidence`` interval of the difference ``B - A`` is read from the
  percentiles of those B differences. An interval that excludes 0 is a real difference at
  that level; one that straddles 0 is not, whatever the point estimate says.

Metrics: accuracy and macro F1 (single-label, each hierarchy level), mean average
precision and macro F1 (multi-label, missing entries left out as everywhere in Loupe).
The bootstrap scores every resample at once with count weights, which equals scoring the
resampled rows with scikit-learn (checked in ``tests/core/test_compare.py``): macro F1 as
``precision_recall_fscore_support(..., zero_division=0)``, AP as ``average_precision_score``.

Runs whose test rows differ, or whose true labels differ on them (review decisions made
between the runs), are refused: their difference would mix model and data.

>>> import numpy as np
>>> t = np.array([0, 1, 1, 0, 1, 0, 1, 1])
>>> r = mcnemar_exact(t == np.array([0, 1, 0, 0, 1, 1, 1, 0]), t == t)
>>> r.a_only_correct, r.b_only_correct, round(r.p_value, 3)
(0, 3, 0.25)
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from core import runs

METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro F1", "mean_average_precision": "mAP"}
_CHUNK = 250  # bootstrap resamples scored at once (bounds memory: _CHUNK x N weights)


@dataclass(frozen=True)
class McNemar:
    """McNemar's exact test on two runs' per-sample correctness.

    ``a_only_correct``: samples run A gets right and run B wrong; ``b_only_correct`` the
    reverse. ``p_value``: two-sided exact binomial test of the discordant pairs (1.0 when
    there are none).
    """

    a_only_correct: int
    b_only_correct: int
    both_correct: int
    both_wrong: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {"a_only_correct": self.a_only_correct, "b_only_correct": self.b_only_correct,
                "both_correct": self.both_correct, "both_wrong": self.both_wrong, "p": self.p_value}


@dataclass(frozen=True)
class MetricDelta:
    """One metric of both runs, the difference ``b - a`` and its paired-bootstrap interval."""

    a: float
    b: float
    delta: float
    ci_low: float
    ci_high: float

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)

    def to_dict(self) -> dict[str, Any]:
        return {"a": _num(self.a), "b": _num(self.b), "delta": _num(self.delta), "ci_low": _num(self.ci_low),
                "ci_high": _num(self.ci_high), "significant": self.significant}


@dataclass(frozen=True)
class PairedComparison:
    """Run B against run A (the baseline) on the same test rows.

    ``metrics`` maps a metric name (``accuracy``, ``macro_f1``, ``mean_average_precision``)
    to its :class:`MetricDelta`; for hierarchical runs these are the finest level's and
    ``levels`` holds every level's (with its own ``mcnemar``). ``mcnemar`` is None for
    multi-label runs.
    """

    run_a: str
    run_b: str
    task: str
    split: str
    n_common: int
    n_bootstrap: int
    confidence: float
    seed: int
    metrics: dict[str, MetricDelta]
    mcnemar: McNemar | None
    levels: dict[str, tuple[dict[str, MetricDelta], McNemar]] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``n_common``, ``metrics`` {name: {a, b, delta, ci_low, ci_high, significant}},
        ``mcnemar_p`` (None for multi-label), ``mcnemar`` counts, ``levels`` (hierarchical), ``verdict``."""
        out: dict[str, Any] = {
            "run_a": self.run_a, "run_b": self.run_b, "task": self.task, "split": self.split,
            "n_common": self.n_common, "n_bootstrap": self.n_bootstrap, "confidence": self.confidence,
            "seed": self.seed, "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "mcnemar_p": None if self.mcnemar is None else self.mcnemar.p_value,
            "mcnemar": None if self.mcnemar is None else self.mcnemar.to_dict(),
            "verdict": self.verdict(), "note": self.note}
        if self.levels:
            out["levels"] = {lv: {"metrics": {k: m.to_dict() for k, m in ms.items()}, "mcnemar_p": mc.p_value,
                                  "mcnemar": mc.to_dict()} for lv, (ms, mc) in self.levels.items()}
        return out

    def verdict(self) -> str:
        """One sentence a stakeholder can read: is the difference real?"""
        key = "mean_average_precision" if self.task == "multilabel" else "macro_f1"
        m = self.metrics[key]
        pct = f"{self.confidence:.0%}"
        what = (f"{METRIC_LABELS[key]} of {self.run_b} minus {self.run_a}: {m.delta:+.4f} "
                f"({pct} CI {m.ci_low:+.4f} to {m.ci_high:+.4f}, {self.n_common} paired test samples)")
        if m.significant:
            verdict = f"{self.run_b if m.delta > 0 else self.run_a} is better: the interval excludes 0"
        else:
            verdict = "no significant difference: the interval includes 0"
        if self.mcnemar is not None:
            verdict += (f"; McNemar p = {self.mcnemar.p_value:.3g} ({self.mcnemar.b_only_correct} samples only "
                        f"{self.run_b} gets right, {self.mcnemar.a_only_correct} only {self.run_a})")
        return f"{what}: {verdict}."


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


# ---------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------


def mcnemar_exact(correct_a: Any, correct_b: Any) -> McNemar:
    """McNemar's exact test of two classifiers' per-sample correctness (bool arrays of shape (N,))."""
    from scipy.stats import binomtest

    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a and correct_b must be 1-D of one length; received {a.shape} and {b.shape}")
    a_only, b_only = int((a & ~b).sum()), int((b & ~a).sum())
    n = a_only + b_only
    p = 1.0 if n == 0 else float(binomtest(min(a_only, b_only), n, 0.5).pvalue)
    return McNemar(a_only_correct=a_only, b_only_correct=b_only, both_correct=int((a & b).sum()),
                   both_wrong=int((~a & ~b).sum()), p_value=min(p, 1.0))


def bootstrap_weights(n: int, n_resamples: int, rng: np.random.Generator):
    """Yield count-weight matrices (r, n): row i says how often each sample is in resample i.

    Chunks of at most ``_CHUNK`` rows; the total is ``n_resamples`` rows.
    """
    done = 0
    while done < n_resamples:
        r = min(_CHUNK, n_resamples - done)
        idx = rng.integers(0, n, size=(r, n))
        flat = (np.arange(r)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=r * n).reshape(r, n).astype(np.float64)
        done += r


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def single_label_scores(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Accuracy and macro F1 (over all ``k`` classes, zero_division=0) under count weights ``w`` (r, N)."""
    eye = np.eye(k)
    t, p = eye[y_true], eye[y_pred]
    support, predicted, tp = w @ t, w @ p, w @ (t * p)
    f1 = _safe_div(2 * tp, support + predicted)
    total = w.sum(axis=1)
    return {"accuracy": _safe_div(tp.sum(axis=1), total), "macro_f1": f1.mean(axis=1)}


def multilabel_scores(w: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, probs: np.ndarray
                      ) -> dict[str, np.ndarray]:
    """mAP and macro F1 of multi-label predictions under count weights ``w`` (r, N); NaN truth left out.

    A label's AP is scikit-learn's ``average_precision_score`` on its known entries (NaN
    where a resample holds none of its positives); mAP and macro F1 average the labels
    where they are defined, as :func:`core.metrics.multilabel_summary` does.
    """
    r = w.shape[0]
    ap = np.full((r, y_true.shape[1]), np.nan)
    f1 = np.full((r, y_true.shape[1]), np.nan)
    for j in range(y_true.shape[1]):
        known = ~np.isnan(y_true[:, j])
        if not known.any():
            continue
        y, s, pr, wk = y_true[known, j], probs[known, j], y_pred[known, j], w[:, known]
        tp_all = wk @ (y * pr)
        den = wk @ y + wk @ pr
        has = wk.sum(axis=1) > 0
        f1[has, j] = _safe_div(2 * tp_all, den)[has]
        order = np.argsort(-s, kind="mergesort")
        s_sorted, y_sorted = s[order], y[order]
        ends = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s_sorted) - 1]  # last row of each tie group
        ws = wk[:, order]
        tps = np.cumsum(ws * y_sorted, axis=1)[:, ends]
        fps = np.cumsum(ws * (1 - y_sorted), axis=1)[:, ends]
        pos = tps[:, -1]
        precision = _safe_div(tps, tps + fps)
        recall = _safe_div(tps, pos[:, None])
        step = np.diff(np.c_[np.zeros(r), recall], axis=1)
        ap_j = (step * precision).sum(axis=1)
        ap[:, j] = np.where(pos > 0, ap_j, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of a resample where no label is defined
        return {"mean_average_precision": np.nanmean(ap, axis=1), "macro_f1": np.nanmean(f1, axis=1)}


def _interval(diffs: np.ndarray, confidence: float) -> tuple[float, float]:
    d = diffs[np.isfinite(diffs)]
    if not len(d):
        return float("nan"), float("nan")
    lo, hi = np.quantile(d, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)


def _paired(score, n: int, *, n_bootstrap: int, confidence: float, seed: int) -> dict[str, MetricDelta]:
    """``score(w) -> {metric: (values_a, values_b)}``; point estimates at unit weights, intervals by bootstrap."""
    point = score(np.ones((1, n)))
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in point}
    for w in bootstrap_weights(n, n_bootstrap, np.random.default_rng(seed)):
        for m, (va, vb) in score(w).items():
            diffs[m].append(vb - va)
    out = {}
    for m, (va, vb) in point.items():
        lo, hi = _interval(np.concatenate(diffs[m]) if diffs[m] else np.zeros(0), confidence)
        out[m] = MetricDelta(a=float(va[0]), b=float(vb[0]), delta=float(vb[0] - va[0]), ci_low=lo, ci_high=hi)
    return out


def paired_standard_error(task: str, y_true: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, metric: str, *,
                          n_bootstrap: int = 1000, seed: int = 0) -> float:
    """The bootstrap standard error of ``metric(B) - metric(A)``, two models' predictions of the same rows.

    Parameters
    ----------
    task : str
        ``"multilabel"`` or a single-label task.
    y_true : ndarray
        int (N,) class indices (rows with -1 left out), or float (N, K) with NaN missing (multi-label).
    probs_a, probs_b : ndarray of shape (N, K)
    metric : {"accuracy", "macro_f1", "loss", "map"}
        As :func:`core.metrics.epoch.epoch_scores` names them (``map``: multi-label only).

    Returns
    -------
    float
        The standard deviation of the paired difference over ``n_bootstrap`` resamples of the rows
        (NaN when no resample defines it). The training worker's final-model choice reads it.
    """
    pa, pb = np.asarray(probs_a, np.float64), np.asarray(probs_b, np.float64)
    if task == "multilabel":
        y = np.asarray(y_true, np.float64)
        known = ~np.isnan(y)
        yk = np.where(known, y, 0.0)

        def per_row(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # (numerator, denominator) per row
            if metric == "accuracy":
                return (((p >= 0.5) == (yk == 1)) & known).sum(axis=1), known.sum(axis=1)
            q = np.clip(p, 1e-7, 1 - 1e-7)
            bce = (-(yk * np.log(q) + (1 - yk) * np.log(1 - q)) * known).sum(axis=1)
            return bce / np.maximum(known.sum(axis=1), 1), np.ones(len(p))

        def score(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if metric in ("map", "macro_f1"):
                key = "mean_average_precision" if metric == "map" else "macro_f1"
                return tuple(multilabel_scores(w, y, (p >= 0.5).astype(float), p)[key] for p in (pa, pb))
            return tuple(_safe_div(w @ num, w @ den) for num, den in (per_row(pa), per_row(pb)))
    else:
        y = np.asarray(y_true, np.int64)
        ok = y >= 0
        y, pa, pb = y[ok], pa[ok], pb[ok]
        k = pa.shape[1]

        def score(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            if metric == "loss":
                return tuple((w @ -np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1.0))) / w.sum(axis=1)
                             for p in (pa, pb))
            return tuple(single_label_scores(w, y, p.argmax(axis=1), k)[metric] for p in (pa, pb))
    if metric not in ("accuracy", "macro_f1", "loss", "map") or (metric == "map" and task != "multilabel"):
        raise ValueError(f"metric must be accuracy, macro_f1, loss or (multi-label) map; received {metric!r}")
    n = len(y)
    if n == 0:
        return float("nan")
    diffs = []
    for w in bootstrap_weights(n, n_bootstrap, np.random.default_rng(seed)):
        va, vb = score(w)
        diffs.append(vb - va)
    d = np.concatenate(diffs)
    d = d[np.isfinite(d)]
    return float(d.std(ddof=1)) if len(d) > 1 else float("nan")


# ---------------------------------------------------------------------------
# aligning two runs' predictions
# ---------------------------------------------------------------------------


def _align(a: runs.Predictions, b: runs.Predictions, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into ``a`` and ``b`` putting the same samples side by side; refuses differing rows."""
    ids_a, ids_b = [str(s) for s in a.sample_ids], [str(s) for s in b.sample_ids]
    for name, ids in ((name_a, ids_a), (name_b, ids_b)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"run {name}'s predictions list a sample twice; cannot pair its rows")
    sa, sb = set(ids_a), set(ids_b)
    if sa != sb:
        raise ValueError(
            f"runs {name_a} and {name_b} were not evaluated on the same test rows: {len(sa - sb)} of {name_a}'s "
            f"{len(sa)} samples are not in {name_b}'s and {len(sb - sa)} of {name_b}'s {len(sb)} are not in "
            f"{name_a}'s (different datasets, splits or excluded samples). A paired comparison needs the same "
            "rows: compare runs of one dataset and split.")
    pos_b = {s: i for i, s in enumerate(ids_b)}
    return np.arange(len(ids_a)), np.array([pos_b[s] for s in ids_a], dtype=int)


def _refuse_label_mismatch(n_diff: int, n: int, name_a: str, name_b: str, what: str = "true labels") -> None:
    if n_diff:
        raise ValueError(
            f"runs {name_a} and {name_b} have different {what} on {n_diff} of their {n} common rows (labels "
            "corrected between the two runs): their difference would mix model and labels. Re-train one of "
            "them on the same label version to compare.")


def _single_block(ta, pa, ca, tb, pb, cb, name_a, name_b) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """True / predicted indices of both runs over the union of their classes; rows with unknown truth dropped."""
    classes = list(ca) + [c for c in cb if c not in ca]
    ix = {c: i for i, c in enumerate(classes)}
    map_a = np.array([ix[c] for c in ca], dtype=int)
    map_b = np.array([ix[c] for c in cb], dtype=int)
    known_a, known_b = ta >= 0, tb >= 0
    _refuse_label_mismatch(int((known_a != known_b).sum()), len(ta), name_a, name_b, "known / unknown true labels")
    keep = known_a
    true_a, true_b = map_a[ta[keep]], map_b[tb[keep]]
    _refuse_label_mismatch(int((true_a != true_b).sum()), int(keep.sum()), name_a, name_b)
    return true_a, map_a[pa[keep]], map_b[pb[keep]], len(classes)


def compare_predictions(pred_a: runs.Predictions, pred_b: runs.Predictions, *, name_a: str = "A",
                        name_b: str = "B", split: str = "test", n_bootstrap: int = 2000,
                        confidence: float = 0.95, seed: int = 0, level: str | None = None) -> PairedComparison:
    """Paired comparison of two runs' predictions (B against the baseline A) on their common rows.

    Parameters
    ----------
    pred_a, pred_b : core.runs.Predictions
        Usually one split each (:func:`core.runs.read_predictions` with ``split=``).
    name_a, name_b : str
        How the runs are named in messages and the verdict (run ids).
    n_bootstrap : int
        Paired resamples of the test rows (>= 100).
    confidence : float
        Of the interval, in (0.5, 1).
    level : str, optional
        When one run is hierarchical and the other flat (single-label): the hierarchy level
        compared with the flat run (default: the finest). Two hierarchical runs compare at
        every level.

    Raises
    ------
    ValueError
        The runs' tasks differ (single-label vs multi-label, or hierarchies with other
        levels), their rows or true labels differ, or an option is out of range.
    """
    if n_bootstrap < 100:
        raise ValueError(f"n_bootstrap must be >= 100 for a usable interval; received {n_bootstrap}")
    if not 0.5 < confidence < 1:
        raise ValueError(f"confidence must be in (0.5, 1); received {confidence}")
    single = ("multiclass", "binary")
    ta, tb = pred_a.task, pred_b.task
    task = ta if ta == tb else f"{ta} vs {tb}"
    note = ""
    if {ta, tb} & set(single) and "hierarchical" in (ta, tb):  # a flat run against one level of a hierarchy
        hier = pred_a if ta == "hierarchical" else pred_b
        lv = level if level is not None else hier.levels[-1]
        if lv not in hier.levels:
            raise ValueError(f"level must be one of {list(hier.levels)}; received {level!r}")
        flat = replace(hier, task="multiclass", classes=tuple(hier.level_classes[lv]), y_true=hier.level_true[lv],
                       y_pred=hier.level_pred[lv], probs=hier.level_probs[lv], levels=())
        pred_a, pred_b = (flat, pred_b) if ta == "hierarchical" else (pred_a, flat)
        note = f"the hierarchical run is compared at its level {lv!r}"
        ta, tb = pred_a.task, pred_b.task
    kind = lambda t: "single" if t in single else t  # noqa: E731
    if kind(ta) != kind(tb):
        raise ValueError(f"run {name_a} is a {ta} run and {name_b} a {tb} run: compare runs of one label shape")
    ia, ib = _align(pred_a, pred_b, name_a, name_b)
    kw = dict(n_bootstrap=n_bootstrap, confidence=confidence, seed=seed)
    common = dict(run_a=name_a, run_b=name_b, split=split, n_bootstrap=n_bootstrap, confidence=confidence,
                  seed=seed)
    if ta in single or ta == "hierarchical":
        if ta == "hierarchical":
            if tuple(pred_a.levels) != tuple(pred_b.levels):
                raise ValueError(f"runs {name_a} and {name_b} have other hierarchy levels "
                                 f"({list(pred_a.levels)} vs {list(pred_b.levels)})")
            blocks = [(lv, pred_a.level_true[lv][ia], pred_a.level_pred[lv][ia], pred_a.level_classes[lv],
                       pred_b.level_true[lv][ib], pred_b.level_pred[lv][ib], pred_b.level_classes[lv])
                      for lv in pred_a.levels]
            known = np.all([pred_a.level_true[lv][ia] >= 0 for lv in pred_a.levels], axis=0)
            blocks = [(lv, t1[known], p1[known], c1, t2[known], p2[known], c2)
                      for lv, t1, p1, c1, t2, p2, c2 in blocks]
        else:
            blocks = [(None, pred_a.y_true[ia], pred_a.y_pred[ia], pred_a.classes,
                       pred_b.y_true[ib], pred_b.y_pred[ib], pred_b.classes)]
        per_level: dict[str, tuple[dict[str, MetricDelta], McNemar]] = {}
        n_common = 0
        for lv, t1, p1, c1, t2, p2, c2 in blocks:
            y, pa, pb, k = _single_block(t1, p1, c1, t2, p2, c2, name_a, name_b)
            if not len(y):
                raise ValueError(f"runs {name_a} and {name_b} share no {split} row with a known true label")

            def score(w, y=y, pa=pa, pb=pb, k=k):
                sa, sb = single_label_scores(w, y, pa, k), single_label_scores(w, y, pb, k)
                return {m: (sa[m], sb[m]) for m in sa}

            per_level[lv] = (_paired(score, len(y), **kw), mcnemar_exact(pa == y, pb == y))
            n_common = len(y)
        finest = list(per_level)[-1]
        ms, mc = per_level[finest]
        if set(blocks[-1][3]) != set(blocks[-1][6]):
            note = "; ".join(filter(None, [note, "the runs predict different class sets: macro F1 is taken over "
                                                 "the union of both"]))
        return PairedComparison(task=task, n_common=n_common, metrics=ms,
                                mcnemar=mc, levels={lv: v for lv, v in per_level.items() if lv is not None},
                                note=note, **common)
    # multi-label
    la, lb = list(pred_a.classes), list(pred_b.classes)
    if set(la) != set(lb):
        raise ValueError(f"runs {name_a} and {name_b} predict other labels ({sorted(set(la) ^ set(lb))} in one "
                         "only): compare runs of one label set")
    cols_b = [lb.index(c) for c in la]
    ya, yb = pred_a.y_true[ia], pred_b.y_true[ib][:, cols_b]
    same = (np.isnan(ya) & np.isnan(yb)) | (ya == yb)
    _refuse_label_mismatch(int((~same.all(axis=1)).sum()), len(ya), name_a, name_b)
    rows = (~np.isnan(ya)).any(axis=1)
    ya = ya[rows]
    pa_pred, pa_prob = pred_a.y_pred[ia][rows].astype(float), pred_a.probs[ia][rows]
    pb_pred, pb_prob = pred_b.y_pred[ib][:, cols_b][rows].astype(float), pred_b.probs[ib][:, cols_b][rows]
    if not len(ya):
        raise ValueError(f"runs {name_a} and {name_b} share no {split} row with a known label")

    def score_ml(w):
        sa, sb = multilabel_scores(w, ya, pa_pred, pa_prob), multilabel_scores(w, ya, pb_pred, pb_prob)
        return {m: (sa[m], sb[m]) for m in sa}

    return PairedComparison(task="multilabel", n_common=int(len(ya)), metrics=_paired(score_ml, len(ya), **kw),
                            mcnemar=None, **common)


def compare_runs(run_a, run_b, *, split: str = "test", n_bootstrap: int = 2000, confidence: float = 0.95,
                 seed: int = 0, level: str | None = None) -> PairedComparison:
    """:func:`compare_predictions` of two run directories' ``predictions.csv`` (one split), named by run id."""
    rda, rdb = runs.require_predictions(run_a), runs.require_predictions(run_b)
    name_a, name_b = rda.run_id, rdb.run_id
    if rda.path.resolve() == rdb.path.resolve():
        raise ValueError(f"both arguments are run {name_a}: give two different runs")
    if name_a == name_b:
        name_a, name_b = str(rda.path), str(rdb.path)
    return compare_predictions(runs.read_predictions(rda, split=split), runs.read_predictions(rdb, split=split),
                               name_a=name_a, name_b=name_b, split=split, n_bootstrap=n_bootstrap,
                               confidence=confidence, seed=seed, level=level)


def level_verdicts(result: PairedComparison | Mapping[str, Any], metric: str = "macro_f1"
                   ) -> dict[str, tuple[str, str]]:
    """Per hierarchy level (``""`` alone for a non-hierarchical comparison): ``(winner, sentence)``.

    ``result``: a :class:`PairedComparison` or its ``to_dict()``. ``winner`` is ``run_a``, ``run_b``
    or ``""`` (``metric``'s interval includes 0); the sentence gives both scores, the difference
    B - A, its interval and McNemar's p.
    """
    d = result.to_dict() if isinstance(result, PairedComparison) else result
    blocks = d.get("levels") or {"": {"metrics": d["metrics"], "mcnemar_p": d.get("mcnemar_p")}}
    pct = f"{d['confidence']:.0%}"
    out = {}
    for lv, block in blocks.items():
        m = block["metrics"][metric]
        winner = "" if not m["significant"] else (d["run_b"] if m["delta"] > 0 else d["run_a"])
        text = (f"{METRIC_LABELS[metric]} {_fmt(m['b'], '.3f')} vs {_fmt(m['a'], '.3f')}, difference "
                f"{_fmt(m['delta'], '+.4f')} ({pct} CI {_fmt(m['ci_low'], '+.4f')} to {_fmt(m['ci_high'], '+.4f')})")
        if block.get("mcnemar_p") is not None:
            text += f", McNemar p = {block['mcnemar_p']:.3g}"
        out[lv] = (winner, text + (f": {winner} is better" if winner else ": no significant difference"))
    return out


def _fmt(v: float | None, spec: str) -> str:
    """``v`` formatted, or "n/a" where it is undefined (None or NaN)."""
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def format_comparison(c: PairedComparison) -> str:
    """Plain text of a :class:`PairedComparison` (the CLI without --json)."""
    pct = f"{c.confidence:.0%}"
    lines = [f"{c.run_b} vs {c.run_a} (baseline) · {c.task} · {c.split}: {c.n_common} paired samples, "
             f"{c.n_bootstrap} bootstrap resamples"]

    def block(ms: Mapping[str, MetricDelta], mc: McNemar | None, indent: str = "") -> None:
        for name, m in ms.items():
            lines.append(f"{indent}{METRIC_LABELS.get(name, name):>9}: {m.a:.4f} -> {m.b:.4f}  delta {m.delta:+.4f}  "
                         f"{pct} CI [{m.ci_low:+.4f}, {m.ci_high:+.4f}]{'  *' if m.significant else ''}")
        if mc is not None:
            lines.append(f"{indent}  McNemar exact p = {mc.p_value:.4g}  (only {c.run_a} right: {mc.a_only_correct}, "
                         f"only {c.run_b} right: {mc.b_only_correct}, both right: {mc.both_correct}, "
                         f"both wrong: {mc.both_wrong})")

    if c.levels:
        for lv, (ms, mc) in c.levels.items():
            lines.append(f"level {lv}:")
            block(ms, mc, "  ")
    else:
        block(c.metrics, c.mcnemar)
    if c.note:
        lines.append(f"note: {c.note}")
    lines.append(c.verdict())
    lines.append("(* the interval excludes 0)")
    return "\n".join(lines)
