"""The Evaluate page's threshold picker side by side with the naive way of getting the same answer.

For N samples and K = 10 classes (synthetic softmax outputs, seeded), per class: the threshold
with the highest recall at precision >= 0.9 and 95 % bootstrap intervals on precision and
recall from 1,000 resamples.

* ``loupe_s``: ``core.metrics.thresholds_at_precision`` (one ``precision_recall_curve`` per
  class; the bootstrap is an exact multinomial draw over the four outcome cells).
* ``naive_s``: what a notebook does — ``precision_recall_curve`` for the threshold, then 1,000
  index resamples (``rng.integers``) counted with numpy at that threshold (vectorised per
  resample; calling sklearn's ``precision_score`` per resample instead is ~1,000x slower still).
* ``ratio`` = naive_s / loupe_s (higher is better for Loupe); ``same_thresholds`` checks that
  both chose the same thresholds; ``ci_max_abs_diff`` the largest gap between their intervals
  (both are Monte-Carlo estimates of the same quantity, so a gap of ~0.01 is expected).
Also ``summary_s``: classification summary + one-vs-rest curves + calibration bins.

Each N is measured ``common.REPEATS`` (3) times (ratio within each repeat; median and min-max).
Usage: ``python bench/bench_evaluate.py [N ...]`` (default 10000 100000). Prints one JSON object
per N, then the combined object as the last stdout line.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from bench.common import repeated  # noqa: E402


def _data(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 2.0
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p


def _naive(y, p, k, target=0.9, n_boot=1000, seed=0):
    from sklearn.metrics import precision_recall_curve

    rng = np.random.default_rng(seed)
    out = {}
    for c in range(k):
        yb, s = (y == c).astype(int), p[:, c]
        prec, rec, thr = precision_recall_curve(yb, s)
        ok = np.flatnonzero(prec[:-1] >= target)
        if not ok.size:
            out[c] = None
            continue
        # highest recall, then highest precision, then highest threshold (Loupe's tie rule)
        t = float(thr[ok[np.lexsort((thr[ok], prec[:-1][ok], rec[:-1][ok]))[-1]]])
        pred = s >= t
        pos = yb == 1
        ps, rs = [], []
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            tp = np.count_nonzero(pred[i] & pos[i])
            flagged, positives = np.count_nonzero(pred[i]), np.count_nonzero(pos[i])
            ps.append(tp / flagged if flagged else np.nan)
            rs.append(tp / positives if positives else np.nan)
        out[c] = (t, np.nanpercentile(ps, [2.5, 97.5]), np.nanpercentile(rs, [2.5, 97.5]))
    return out


def _time(f):
    t = time.perf_counter()
    r = f()
    return time.perf_counter() - t, r


def bench(n: int, k: int = 10) -> dict:
    from core import metrics as M

    y, p = _data(n, k)
    classes = [f"c{i}" for i in range(k)]
    M.classification_summary([0, 1], np.eye(2), classes=["a", "b"])  # imports out of the timing
    loupe_s, ours = _time(lambda: M.thresholds_at_precision(y, p, classes=classes, target_precision=0.9,
                                                             n_bootstrap=1000))
    naive_s, ref = _time(lambda: _naive(y, p, k))
    same = all((ref[i] is None) == (not ours[c].reachable)
               and (ref[i] is None or abs(ref[i][0] - ours[c].threshold) < 1e-12) for i, c in enumerate(classes))
    gaps = [max(np.max(np.abs(np.array(ours[c].precision_ci) - ref[i][1])),
                np.max(np.abs(np.array(ours[c].recall_ci) - ref[i][2])))
            for i, c in enumerate(classes) if ref[i] is not None]
    summary_s, _ = _time(lambda: (M.classification_summary(y, p, classes=classes),
                                  M.one_vs_rest_curves(y, p, classes=classes), M.calibration_bins(y, p)))
    return {"n": n, "k": k, "loupe_s": loupe_s, "naive_s": naive_s, "ratio": naive_s / loupe_s, "same_thresholds": bool(same),
            "ci_max_abs_diff": round(float(max(gaps)), 4) if gaps else None, "summary_s": summary_s}


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [10_000, 100_000]
    results = []
    for n in sizes:
        results.append(repeated(lambda: bench(n)))
        print(json.dumps(results[-1]), flush=True)
    print(json.dumps({"bench": "evaluate_thresholds", "results": results}))


if __name__ == "__main__":
    main(sys.argv[1:])
