"""core.compare: paired significance of two runs on the same test rows (and the ``compare`` CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import average_precision_score, precision_recall_fscore_support

from core import compare, runs

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["daisy", "tulip", "rose", "iris"]
MULTILABEL = {"task": "multilabel", "labels": ["sea", "sunset", "trees"]}
HIER = {"task": "hierarchical", "levels": ["master", "article"],
        "level_classes": {"master": ["Apparel", "Footwear"], "article": ["Tshirts", "Jeans", "Shoes"]},
        "parents": {"article": {"Tshirts": "Apparel", "Jeans": "Apparel", "Shoes": "Footwear"}}}


def _probs(rng, pred, k):
    p = rng.random((len(pred), k)) * 0.5
    p[np.arange(len(pred)), pred] += 1.0
    return p / p.sum(axis=1, keepdims=True)


def _single_run(path, y, pred, *, ids=None, classes=CLASSES, seed=0):
    rng = np.random.default_rng(seed)
    labels = {"task": "multiclass", "classes": list(classes)}
    runs.write_labels(path, labels)
    n = len(y)
    ids = ids if ids is not None else [f"s{i:04d}" for i in range(n)]
    runs.write_predictions(path, runs.predictions_frame(labels, sample_ids=ids, paths=[f"{i}.png" for i in ids],
                                                        splits="test", y_true=y, probs=_probs(rng, pred, len(classes)),
                                                        y_pred=pred))
    return path


def _noisy(rng, y, acc, k):
    return np.where(rng.random(len(y)) < acc, y, rng.integers(0, k, len(y)))


def test_weighted_scores_equal_scikit_learn_on_resampled_rows():
    """The vectorised bootstrap scores a resample exactly as scikit-learn scores the resampled rows."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 6, 400)
    pred = _noisy(rng, y, 0.6, 6)
    w = next(compare.bootstrap_weights(len(y), 4, rng))
    got = compare.single_label_scores(w, y, pred, 6)
    for i in range(4):
        idx = np.repeat(np.arange(len(y)), w[i].astype(int))  # the resample, row by row
        ref = precision_recall_fscore_support(y[idx], pred[idx], labels=np.arange(6), average="macro",
                                              zero_division=0)[2]
        assert got["macro_f1"][i] == pytest.approx(ref, abs=1e-12)
        assert got["accuracy"][i] == pytest.approx(np.mean(y[idx] == pred[idx]), abs=1e-12)
    yt = (rng.random((400, 3)) < 0.3).astype(float)
    yt[rng.random((400, 3)) < 0.15] = np.nan  # missing entries are left out, never 0
    scores = np.round(rng.random((400, 3)), 2)  # ties, as real probabilities have
    yp = (scores >= 0.5).astype(float)
    got = compare.multilabel_scores(w, yt, yp, scores)
    for i in range(4):
        idx = np.repeat(np.arange(400), w[i].astype(int))
        aps, f1s = [], []
        for j in range(3):
            kn = ~np.isnan(yt[idx, j])
            aps.append(average_precision_score(yt[idx][kn, j], scores[idx][kn, j]))
            f1s.append(precision_recall_fscore_support(yt[idx][kn, j], yp[idx][kn, j], average="binary",
                                                       zero_division=0)[2])
        assert got["mean_average_precision"][i] == pytest.approx(np.mean(aps), abs=1e-12)
        assert got["macro_f1"][i] == pytest.approx(np.mean(f1s), abs=1e-12)


def test_mcnemar_is_the_exact_binomial_test_of_the_discordant_pairs():
    a = np.array([1] * 30 + [0] * 5 + [1] * 40 + [0] * 25, dtype=bool)
    b = np.array([0] * 30 + [1] * 5 + [1] * 40 + [0] * 25, dtype=bool)
    r = compare.mcnemar_exact(a, b)
    assert (r.a_only_correct, r.b_only_correct, r.both_correct, r.both_wrong) == (30, 5, 40, 25)
    assert r.p_value == pytest.approx(binomtest(5, 35, 0.5).pvalue)
    assert r.p_value < 0.001
    assert compare.mcnemar_exact(a, a).p_value == 1.0  # no discordant pair: no evidence either way


def test_a_real_gain_is_significant_and_a_one_image_gain_is_not(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 600)
    base = _noisy(rng, y, 0.6, 4)
    better = np.where(rng.random(600) < 0.5, y, base)  # fixes about half the mistakes
    one_more = base.copy()
    one_more[np.flatnonzero(base != y)[0]] = y[np.flatnonzero(base != y)[0]]  # one image more right
    a = _single_run(tmp_path / "a", y, base)
    b = _single_run(tmp_path / "b", y, better, seed=1)
    c = _single_run(tmp_path / "c", y, one_more, seed=2)
    real = compare.compare_runs(a, b, n_bootstrap=500)
    assert real.n_common == 600 and real.run_a == "a" and real.run_b == "b"
    acc = real.metrics["accuracy"]
    assert acc.delta == pytest.approx(np.mean(better == y) - np.mean(base == y))
    assert acc.ci_low > 0 and acc.significant and real.metrics["macro_f1"].significant
    assert real.mcnemar.p_value < 1e-6 and real.mcnemar.a_only_correct == 0
    assert "b is better" in real.verdict()
    tiny = compare.compare_runs(a, c, n_bootstrap=500)
    assert tiny.metrics["accuracy"].delta == pytest.approx(1 / 600)
    assert tiny.metrics["accuracy"].ci_low <= 0 <= tiny.metrics["accuracy"].ci_high
    assert tiny.mcnemar.p_value == 1.0 and "no significant difference" in tiny.verdict()
    # same seed, same answer; the rows are paired by sample id, not by file order
    shuffled = np.random.default_rng(5).permutation(600)
    ids = [f"s{i:04d}" for i in range(600)]
    d = _single_run(tmp_path / "d", y[shuffled], better[shuffled], ids=[ids[i] for i in shuffled], seed=1)
    again = compare.compare_runs(a, d, n_bootstrap=500)
    assert again.metrics["macro_f1"].delta == pytest.approx(real.metrics["macro_f1"].delta)
    assert again.mcnemar == real.mcnemar


def test_runs_on_other_rows_or_other_labels_are_refused_with_a_clear_message(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 100)
    a = _single_run(tmp_path / "a", y, y)
    b = _single_run(tmp_path / "b", y[:90], y[:90], ids=[f"s{i:04d}" for i in range(90)])
    with pytest.raises(ValueError, match=r"not evaluated on the same test rows: 10 of a's 100 samples"):
        compare.compare_runs(a, b)
    relabelled = y.copy()
    relabelled[:3] = (relabelled[:3] + 1) % 4
    c = _single_run(tmp_path / "c", relabelled, y)
    with pytest.raises(ValueError, match=r"different true labels on 3 of their 100 common rows"):
        compare.compare_runs(a, c)
    ml = tmp_path / "ml"
    runs.write_labels(ml, MULTILABEL)
    runs.write_predictions(ml, runs.predictions_frame(MULTILABEL, sample_ids=[f"s{i:04d}" for i in range(100)],
                                                      paths=[f"{i}.png" for i in range(100)], splits="test",
                                                      y_true=np.ones((100, 3)), probs=np.full((100, 3), 0.6)))
    with pytest.raises(ValueError, match="multiclass run and ml a multilabel run"):
        compare.compare_runs(a, ml)
    with pytest.raises(ValueError, match="give two different runs"):
        compare.compare_runs(a, a)


def test_multilabel_and_hierarchical_runs_compare_per_metric_and_per_level(tmp_path):
    rng = np.random.default_rng(2)
    n = 300
    y = (rng.random((n, 3)) < 0.4).astype(float)
    y[rng.random((n, 3)) < 0.1] = np.nan
    ids = [f"s{i:04d}" for i in range(n)]
    for name, noise in (("a", 0.45), ("b", 0.15)):
        truth = np.nan_to_num(y, nan=0)
        probs = np.clip(truth * 0.6 + 0.2 + rng.normal(0, noise, (n, 3)), 0, 1)
        runs.write_labels(tmp_path / name, MULTILABEL)
        runs.write_predictions(tmp_path / name, runs.predictions_frame(
            MULTILABEL, sample_ids=ids, paths=[f"{i}.png" for i in ids], splits="test", y_true=y, probs=probs))
    ml = compare.compare_runs(tmp_path / "a", tmp_path / "b", n_bootstrap=300)
    assert ml.mcnemar is None and set(ml.metrics) == {"mean_average_precision", "macro_f1"}
    assert ml.metrics["mean_average_precision"].delta > 0 and ml.metrics["mean_average_precision"].significant
    assert ml.to_dict()["mcnemar_p"] is None

    art = rng.integers(0, 3, n)
    master = np.where(art == 2, 1, 0)
    for name, acc in (("ha", 0.7), ("hb", 0.72)):
        pa = _noisy(rng, art, acc, 3)
        runs.write_labels(tmp_path / name, HIER)
        runs.write_predictions(tmp_path / name, runs.predictions_frame(
            HIER, sample_ids=ids, paths=[f"{i}.png" for i in ids], splits="test",
            y_true={"master": master, "article": art},
            probs={"master": _probs(rng, np.where(pa == 2, 1, 0), 2), "article": _probs(rng, pa, 3)},
            y_pred={"master": np.where(pa == 2, 1, 0), "article": pa}))
    h = compare.compare_runs(tmp_path / "ha", tmp_path / "hb", n_bootstrap=300)
    assert list(h.levels) == ["master", "article"]
    assert h.metrics == h.levels["article"][0] and h.mcnemar == h.levels["article"][1]
    out = h.to_dict()
    assert set(out["levels"]) == {"master", "article"} and out["mcnemar_p"] == h.levels["article"][1].p_value
    # a flat run on the leaf classes against the hierarchy's leaf level (flat vs separate, say)
    flat_pred = _noisy(rng, art, 0.9, 3)
    _single_run(tmp_path / "flat", art, flat_pred, ids=ids, classes=HIER["level_classes"]["article"])
    mixed = compare.compare_runs(tmp_path / "ha", tmp_path / "flat", n_bootstrap=300)
    assert mixed.task == "hierarchical vs multiclass" and "level 'article'" in mixed.note
    assert mixed.mcnemar == compare.mcnemar_exact(
        runs.read_predictions(tmp_path / "ha").level_pred["article"] == art, flat_pred == art)
    coarse = compare.compare_runs(tmp_path / "flat", tmp_path / "ha", level="article", n_bootstrap=300)
    assert coarse.metrics["accuracy"].delta == pytest.approx(-mixed.metrics["accuracy"].delta)


def test_level_verdicts_name_the_better_run_per_level_only_when_the_interval_excludes_zero(tmp_path):
    rng = np.random.default_rng(5)
    n = 400
    ids = [f"s{i:04d}" for i in range(n)]
    art = rng.integers(0, 3, n)
    master = np.where(art == 2, 1, 0)
    # run "sep" is much worse at the leaf and exactly as good as "flat" at the top level
    leaf = {"flat": _noisy(rng, art, 0.9, 3), "sep": _noisy(rng, art, 0.6, 3)}
    for name, pa in leaf.items():
        runs.write_labels(tmp_path / name, HIER)
        runs.write_predictions(tmp_path / name, runs.predictions_frame(
            HIER, sample_ids=ids, paths=[f"{i}.png" for i in ids], splits="test",
            y_true={"master": master, "article": art},
            probs={"master": _probs(rng, master, 2), "article": _probs(rng, pa, 3)},
            y_pred={"master": master, "article": pa}))
    c = compare.compare_runs(tmp_path / "flat", tmp_path / "sep", n_bootstrap=300)
    verdicts = compare.level_verdicts(c)
    assert verdicts == compare.level_verdicts(c.to_dict())  # the page passes the cached dict
    assert list(verdicts) == ["master", "article"]
    assert verdicts["master"][0] == "" and "no significant difference" in verdicts["master"][1]
    winner, text = verdicts["article"]
    m = c.levels["article"][0]["macro_f1"]
    assert winner == "flat" and m.ci_high < 0 and f"{m.delta:+.4f}" in text and "McNemar p" in text
    y = rng.integers(0, 4, n)
    _single_run(tmp_path / "one", y, _noisy(rng, y, 0.8, 4), ids=ids)
    _single_run(tmp_path / "two", y, _noisy(rng, y, 0.8, 4), ids=ids)
    single = compare.level_verdicts(compare.compare_runs(tmp_path / "one", tmp_path / "two", n_bootstrap=300))
    assert list(single) == [""] and "McNemar p" in single[""][1]


def test_cli_compare_prints_json_with_deltas_intervals_and_mcnemar(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 4, 200)
    ws = tmp_path / "ws"
    _single_run(ws / "runs" / "run_a", y, _noisy(rng, y, 0.6, 4))
    _single_run(ws / "runs" / "run_b", y, _noisy(rng, y, 0.9, 4))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOUPE_HOME": str(ws)}
    proc = subprocess.run([sys.executable, "-m", "core", "compare", "run_a", str(ws / "runs" / "run_b"), "--json",
                           "--n-bootstrap", "300"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["n_common"] == 200 and out["run_a"] == "run_a" and out["run_b"] == "run_b"
    m = out["metrics"]["macro_f1"]
    assert m["ci_low"] <= m["delta"] <= m["ci_high"] and m["ci_low"] > 0
    assert 0 <= out["mcnemar_p"] < 0.001
    text = subprocess.run([sys.executable, "-m", "core", "compare", "run_a", "run_b"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)
    assert text.returncode == 0 and "McNemar exact p" in text.stdout and "run_b is better" in text.stdout
    _single_run(ws / "runs" / "run_c", y[:50], y[:50], ids=[f"s{i:04d}" for i in range(50)])
    bad = subprocess.run([sys.executable, "-m", "core", "compare", "run_a", "run_c", "--json"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and "not evaluated on the same test rows" in bad.stderr
    assert "Traceback" not in bad.stderr and bad.stdout == ""
    missing = subprocess.run([sys.executable, "-m", "core", "compare", "run_a", "nope"], capture_output=True,
                             text=True, env=env, cwd=tmp_path, timeout=120)
    assert missing.returncode == 2 and "nope is neither a run directory nor a run id" in missing.stderr


@pytest.mark.parametrize("task, metric", [("multiclass", "accuracy"), ("multiclass", "macro_f1"),
                                          ("multiclass", "loss"), ("multilabel", "map"), ("multilabel", "macro_f1"),
                                          ("multilabel", "accuracy"), ("multilabel", "loss")])
def test_paired_standard_error_is_the_spread_of_differences_over_resampled_rows(task, metric):
    """The final-model choice's standard error equals a plain loop: the same resamples of the rows, each scored
    for both models with epoch_scores (scikit-learn), the standard deviation of the differences."""
    from core.metrics.epoch import epoch_scores

    rng = np.random.default_rng(3)
    n, k = 60, 4
    if task == "multilabel":
        y = rng.integers(0, 2, (n, k)).astype(float)
        y[rng.random((n, k)) < 0.15] = np.nan
        pa = np.clip(np.nan_to_num(y) * 0.3 + rng.random((n, k)) * 0.7, 0.01, 0.99)
        pb = np.clip(np.nan_to_num(y) * 0.5 + rng.random((n, k)) * 0.5, 0.01, 0.99)
    else:
        y = rng.integers(0, k, n)
        y[:3] = -1  # unlabelled rows are left out, as epoch_scores leaves them out
        pa = rng.dirichlet(np.ones(k), n)
        pb = 0.6 * rng.dirichlet(np.ones(k), n) + 0.4 * np.eye(k)[np.maximum(y, 0)]
    se = compare.paired_standard_error(task, y, pa, pb, metric, n_bootstrap=120, seed=5)
    kept = np.arange(n) if task == "multilabel" else np.flatnonzero(y >= 0)
    idx = np.random.default_rng(5).integers(0, len(kept), size=(120, len(kept)))  # the same draws (one chunk)
    diffs = [epoch_scores(task, y[kept][i], pb[kept][i])[metric] - epoch_scores(task, y[kept][i], pa[kept][i])[metric]
             for i in idx]
    assert se == pytest.approx(np.std(diffs, ddof=1), rel=1e-6)
    assert compare.paired_standard_error(task, y, pa, pa, metric, n_bootstrap=50) == 0.0
    with pytest.raises(ValueError, match="metric"):
        compare.paired_standard_error("multiclass" if task == "multilabel" else task, np.zeros(3, int),
                                      np.ones((3, 2)) / 2, np.ones((3, 2)) / 2, "map")
