"""core.metrics (checked against scikit-learn or a naive reference) and ``python -m core evaluate``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from core import metrics as M
from core import runs

REPO = Path(__file__).resolve().parents[2]


def _probs(y, k, *, strength=1.5, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(len(y), k))
    logits[np.arange(len(y)), y] += strength
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


@pytest.fixture
def mc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    y[y == 3] = 2  # class 3 never occurs in the truth
    return y, _probs(y, 4, seed=1), ("a", "b", "c", "d")


# -- single-label summary ------------------------------------------------------

def test_classification_summary_matches_sklearn(mc):
    y, p, classes = mc
    s = M.classification_summary(y, p, classes=classes)
    pred = p.argmax(1)
    labels = np.arange(4)
    assert s.accuracy == pytest.approx(skm.accuracy_score(y, pred))
    for avg in ("macro", "micro", "weighted"):
        ref = skm.precision_recall_fscore_support(y, pred, labels=labels, average=avg, zero_division=0)
        got = (getattr(s, f"precision_{avg}"), getattr(s, f"recall_{avg}"), getattr(s, f"f1_{avg}"))
        np.testing.assert_allclose(got, ref[:3])
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    np.testing.assert_allclose(s.per_class[["precision", "recall", "f1"]].to_numpy(), np.c_[pr, rc, f1])
    np.testing.assert_array_equal(s.per_class["support"], sup)
    cm = skm.confusion_matrix(y, pred, labels=labels)
    np.testing.assert_array_equal(s.confusion, cm)
    np.testing.assert_allclose(s.confusion_normalized[:3], skm.confusion_matrix(y, pred, labels=labels,
                                                                                normalize="true")[:3])
    assert s.confusion_normalized[3].tolist() == [0, 0, 0, 0]  # no support: a zero row, not NaN
    assert s.per_class.loc["d", "support"] == 0
    np.testing.assert_array_equal(s.per_class["predicted"], cm.sum(0))
    assert s.overall()["macro_f1"] == s.f1_macro and set(s.per_class_dict()) == set(classes)


def test_classification_summary_scores_given_predictions(mc):
    y, p, classes = mc
    rng = np.random.default_rng(9)
    given = rng.integers(0, 4, len(y))
    s = M.classification_summary(y, p, classes=classes, y_pred=given)
    assert s.accuracy == pytest.approx(skm.accuracy_score(y, given))
    assert s.f1_macro == pytest.approx(skm.f1_score(y, given, labels=range(4), average="macro", zero_division=0))
    np.testing.assert_array_equal(s.confusion, skm.confusion_matrix(y, given, labels=range(4)))
    with pytest.raises(ValueError, match="either y_pred or thresholds"):
        M.classification_summary(y, p, classes=classes, y_pred=given, thresholds={"a": 0.5})
    with pytest.raises(ValueError, match=r"y_pred holds class indices outside"):
        M.classification_summary(y, p, classes=classes, y_pred=given + 4)


def test_classification_summary_validates():
    with pytest.raises(ValueError, match=r"probs must have 2 columns"):
        M.classification_summary([0, 1], np.eye(3)[:2], classes=["a", "b"])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]: \[-1\]"):
        M.classification_summary([0, -1], np.eye(2), classes=["a", "b"])
    with pytest.raises(ValueError, match="shape \\(2,\\)"):
        M.classification_summary([0], np.eye(2), classes=["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        M.classification_summary([0, 1], [[np.nan, 1], [0, 1]], classes=["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        M.classification_summary([0, 1], np.eye(2), classes=["a", "a"])


def test_apply_thresholds_rule():
    p = np.array([[0.7, 0.3], [0.45, 0.55], [0.85, 0.15]])
    # binary: positive exactly when p_pos >= t, whatever the other column says
    np.testing.assert_array_equal(M.apply_thresholds(p, thresholds={"pos": 0.3}, classes=["neg", "pos"]), [1, 1, 0])
    np.testing.assert_array_equal(M.apply_thresholds(p, thresholds={"pos": 0.6}, classes=["neg", "pos"]), [0, 0, 0])
    np.testing.assert_array_equal(M.apply_thresholds(p, thresholds={}, classes=["neg", "pos"]), p.argmax(1))
    q = np.array([[0.5, 0.3, 0.2], [0.4, 0.35, 0.25], [0.1, 0.2, 0.7]])
    t = [0.6, np.nan, 0.8]  # a gated class below its threshold loses to an ungated one
    np.testing.assert_array_equal(M.apply_thresholds(q, thresholds=t, classes=["a", "b", "c"]), [1, 1, 1])
    # all gated, none reached: falls back to the argmax
    np.testing.assert_array_equal(M.apply_thresholds(q, thresholds=[0.9, 0.9, 0.9], classes=["a", "b", "c"]),
                                  q.argmax(1))
    s = M.classification_summary([1, 1, 0], p, classes=["neg", "pos"], thresholds={"pos": 0.3})
    assert s.accuracy == 1.0
    with pytest.raises(ValueError, match="unknown classes"):
        M.apply_thresholds(p, thresholds={"cat": 0.5}, classes=["neg", "pos"])


def test_confident_mistakes_most_confident_first():
    y = np.array([0, 0, 1, 1, 2])
    p = np.array([[0.1, 0.9, 0], [0.4, 0.6, 0], [0.9, 0.1, 0], [0, 1, 0], [0.3, 0.3, 0.4]])
    np.testing.assert_array_equal(M.confident_mistakes(y, p), [0, 2, 1])
    np.testing.assert_array_equal(M.confident_mistakes(y, p, true_class=0, pred_class=1), [0, 1])
    np.testing.assert_array_equal(M.confident_mistakes(y, p, true_class=1, pred_class=1), [3])


# -- curves --------------------------------------------------------------------

def test_one_vs_rest_curves_match_sklearn(mc):
    y, p, classes = mc
    cs = M.one_vs_rest_curves(y, p, classes=classes)
    for k, c in enumerate(classes[:3]):
        yb = (y == k).astype(int)
        prec, rec, thr = skm.precision_recall_curve(yb, p[:, k])
        fpr, tpr, _ = skm.roc_curve(yb, p[:, k])
        cv = cs.curves[c]
        np.testing.assert_allclose(cv.precision, prec)
        np.testing.assert_allclose(cv.recall, rec)
        np.testing.assert_allclose(cv.pr_thresholds, thr)
        np.testing.assert_allclose(cv.fpr, fpr)
        np.testing.assert_allclose(cv.tpr, tpr)
        assert cv.average_precision == pytest.approx(skm.average_precision_score(yb, p[:, k]))
        assert cv.roc_auc == pytest.approx(skm.roc_auc_score(yb, p[:, k]))
    d = cs.curves["d"]  # no positives: undefined, not an exception
    assert np.isnan(d.average_precision) and np.isnan(d.roc_auc) and d.precision.size == 0
    assert cs.mean_average_precision == pytest.approx(np.mean([cs.curves[c].average_precision for c in "abc"]))
    assert list(cs.table().columns) == ["average_precision", "roc_auc", "n_positive", "n_negative"]


def test_multilabel_curves_use_known_entries_only():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (100, 3)).astype(float)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, y.shape), 0, 1)
    y[rng.uniform(size=y.shape) < 0.3] = np.nan
    cs = M.multilabel_curves(y, p, labels=["x", "y", "z"])
    for k, name in enumerate("xyz"):
        m = ~np.isnan(y[:, k])
        assert cs.curves[name].average_precision == pytest.approx(skm.average_precision_score(y[m, k], p[m, k]))
        assert cs.curves[name].roc_auc == pytest.approx(skm.roc_auc_score(y[m, k], p[m, k]))


# -- threshold at precision ----------------------------------------------------

def test_threshold_known_answer():
    y = [0, 0, 1, 1, 0, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    c = M.threshold_at_precision(y, s, target_precision=0.8, n_bootstrap=0)
    # t=0.3: tp 5, fp 1 -> precision 5/6 >= 0.8, recall 1.0
    assert c.reachable and c.threshold == 0.3
    assert (c.precision, c.recall) == pytest.approx((5 / 6, 1.0))
    assert c.n_predicted_positive == 6 and np.isnan(c.recall_ci[0])
    c = M.threshold_at_precision(y, s, target_precision=0.9, n_bootstrap=0)
    # t=0.6: tp 3, fp 0 -> recall 0.6; t=0.4 gives 4/5 = 0.8 < 0.9
    assert c.threshold == 0.6 and c.precision == 1.0 and c.recall == pytest.approx(0.6)


def test_threshold_unreachable_is_same_type_with_message():
    c = M.threshold_at_precision([1, 0, 0, 1], [0.2, 0.9, 0.8, 0.1], target_precision=0.9)
    assert isinstance(c, M.ThresholdChoice) and not c.reachable
    assert np.isnan(c.threshold) and "unreachable" in c.message and "0.5" in c.message
    d = c.to_dict()
    assert d["threshold"] is None and d["reachable"] is False
    json.dumps(d)
    c = M.threshold_at_precision([0, 0, 0], [0.2, 0.9, 0.8])
    assert not c.reachable and "no positive" in c.message


def test_threshold_ties_cannot_be_split():
    # the top score is shared by a positive and a negative: precision there is 0.5
    y = [1, 0, 1, 1, 0]
    s = [0.9, 0.9, 0.5, 0.5, 0.1]
    c = M.threshold_at_precision(y, s, target_precision=0.6, n_bootstrap=0)
    assert c.threshold == 0.5 and c.precision == pytest.approx(0.75) and c.recall == 1.0
    assert not M.threshold_at_precision([1, 0], [0.5, 0.5], target_precision=0.6).reachable
    # equal recall at two thresholds: the higher precision (and higher threshold) wins
    c = M.threshold_at_precision([1, 0, 0], [0.9, 0.5, 0.1], target_precision=0.3, n_bootstrap=0)
    assert c.threshold == 0.9 and c.precision == 1.0


def test_threshold_all_positive():
    c = M.threshold_at_precision([1, 1, 1, 1], [0.3, 0.1, 0.9, 0.5], target_precision=0.95, n_bootstrap=200)
    assert c.reachable and c.threshold == 0.1 and c.recall == 1.0 and c.precision == 1.0
    assert c.precision_ci == (1.0, 1.0) and c.recall_ci == (1.0, 1.0) and c.p_target_met == 1.0
    assert c.n_negative == 0


@pytest.mark.parametrize("seed", range(8))
def test_threshold_matches_naive_search(seed):
    rng = np.random.default_rng(seed)
    n = 60
    y = rng.integers(0, 2, n)
    y[0] = 1
    s = np.round(np.clip(y * 0.3 + rng.uniform(0, 0.7, n), 0, 1), 2)  # rounding makes ties
    for target in (0.6, 0.8, 0.95):
        c = M.threshold_at_precision(y, s, target_precision=target, n_bootstrap=0)
        ref = None
        for t in np.unique(s):
            pred = s >= t
            tp, fp = np.sum(pred & (y == 1)), np.sum(pred & (y == 0))
            prec, rec = tp / (tp + fp), tp / y.sum()
            if prec >= target and (ref is None or (rec, prec, t) > (ref[2], ref[1], ref[0])):
                ref = (t, prec, rec)
        if ref is None:
            assert not c.reachable
        else:
            assert c.reachable and (c.threshold, c.precision, c.recall) == pytest.approx(ref)


def test_threshold_bootstrap_agrees_with_naive_resampling():
    rng = np.random.default_rng(5)
    n = 400
    y = rng.integers(0, 2, n)
    s = np.clip(y * 0.35 + rng.uniform(0, 0.65, n), 0, 1)
    c = M.threshold_at_precision(y, s, target_precision=0.85, n_bootstrap=4000, seed=3)
    assert c == M.threshold_at_precision(y, s, target_precision=0.85, n_bootstrap=4000, seed=3)  # seeded
    pred = s >= c.threshold
    idx = rng.integers(0, n, (4000, n))
    tp = (pred[idx] & (y[idx] == 1)).sum(1)
    fp = (pred[idx] & (y[idx] == 0)).sum(1)
    ref_p = np.percentile(tp / (tp + fp), [2.5, 97.5])
    ref_r = np.percentile(tp / (y[idx] == 1).sum(1), [2.5, 97.5])
    np.testing.assert_allclose(c.precision_ci, ref_p, atol=0.015)
    np.testing.assert_allclose(c.recall_ci, ref_r, atol=0.015)
    assert c.precision_ci[0] <= c.precision <= c.precision_ci[1]
    assert c.recall_ci[0] <= c.recall <= c.recall_ci[1]
    assert 0 < c.p_target_met < 1


@pytest.mark.parametrize("kw, words", [({"target_precision": 0}, "target_precision"),
                                       ({"target_precision": 1.5}, "target_precision"),
                                       ({"n_bootstrap": -1}, "n_bootstrap"),
                                       ({"confidence": 1.0}, "confidence")])
def test_threshold_validates_options(kw, words):
    with pytest.raises(ValueError, match=words):
        M.threshold_at_precision([0, 1], [0.1, 0.9], **kw)


def test_threshold_validates_arrays():
    with pytest.raises(ValueError, match=r"only 0 and 1; received values \[0, 2\]"):
        M.threshold_at_precision([0, 2], [0.1, 0.9])
    with pytest.raises(ValueError, match="shape"):
        M.threshold_at_precision([0, 1], [0.1])


def test_thresholds_at_precision_per_class_and_binary(mc):
    y, p, classes = mc
    all_ = M.thresholds_at_precision(y, p, classes=classes, target_precision=0.8, n_bootstrap=0)
    assert list(all_) == list(classes) and not all_["d"].reachable
    for k, c in enumerate(classes[:3]):
        ref = M.threshold_at_precision((y == k).astype(int), p[:, k], target_precision=0.8, n_bootstrap=0)
        assert all_[c].to_dict() == ref.to_dict()
    only = M.thresholds_at_precision(y, p, classes=classes, positive_class="b", n_bootstrap=0)
    assert list(only) == ["b"]
    with pytest.raises(ValueError, match="positive_class"):
        M.thresholds_at_precision(y, p, classes=classes, positive_class="zz")


# -- multi-label ----------------------------------------------------------------

def test_multilabel_without_missing_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, (80, 4)).astype(float)
    p = np.clip(y * 0.4 + rng.uniform(0, 0.6, y.shape), 0, 1)
    ms = M.multilabel_summary(y, p, labels=list("abcd"))
    pred = (p >= 0.5).astype(int)
    assert ms.micro_f1 == pytest.approx(skm.f1_score(y, pred, average="micro"))
    assert ms.macro_f1 == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert ms.micro_precision == pytest.approx(skm.precision_score(y, pred, average="micro"))
    assert ms.subset_accuracy == pytest.approx(skm.accuracy_score(y, pred))
    assert ms.hamming_accuracy == pytest.approx(1 - skm.hamming_loss(y, pred))
    np.testing.assert_allclose(ms.per_label["f1"], skm.f1_score(y, pred, average=None))
    np.testing.assert_allclose(ms.per_label["average_precision"], skm.average_precision_score(y, p, average=None))


def test_multilabel_missing_entries_are_masked_not_zero():
    y = np.array([[1, 0, np.nan],
                  [np.nan, 1, 1],
                  [0, np.nan, np.nan],
                  [np.nan, np.nan, np.nan],
                  [1, 1, 0]])
    p = np.array([[0.9, 0.1, 0.9],
                  [0.9, 0.8, 0.2],
                  [0.2, 0.9, 0.9],
                  [0.9, 0.9, 0.9],
                  [0.3, 0.7, 0.1]])
    ms = M.multilabel_summary(y, p, labels=["a", "b", "c"])
    pred = (p >= 0.5).astype(int)
    known = ~np.isnan(y)
    # by hand on the known entries: tp=4 (a0, b1, b4... ) computed naively
    tp = np.sum((pred == 1) & (y == 1) & known)
    fp = np.sum((pred == 1) & (y == 0) & known)
    fn = np.sum((pred == 0) & (y == 1) & known)
    assert (tp, fp, fn) == (3, 0, 2)
    assert ms.micro_precision == pytest.approx(tp / (tp + fp))
    assert ms.micro_recall == pytest.approx(tp / (tp + fn))
    assert ms.micro_f1 == pytest.approx(2 * tp / (2 * tp + fp + fn))
    for k, name in enumerate("abc"):
        m = known[:, k]
        assert ms.per_label.loc[name, "f1"] == pytest.approx(skm.f1_score(y[m, k], pred[m, k], zero_division=0))
        assert ms.per_label.loc[name, "n_missing"] == (~m).sum()
    assert ms.macro_f1 == pytest.approx(ms.per_label["f1"].mean())
    # subset accuracy over known entries; row 3 (nothing known) left out:
    # row0 a ok b ok -> exact; row1 b ok c wrong; row2 a ok; row4 a wrong -> 2 of 4
    assert ms.n_subset == 4 and ms.subset_accuracy == pytest.approx(0.5)
    assert ms.hamming_accuracy == pytest.approx(np.mean(pred[known] == y[known]))
    # filling missing with 0 would give different numbers: the mask matters
    filled = M.multilabel_summary(np.nan_to_num(y), p, labels=["a", "b", "c"])
    assert filled.micro_precision < ms.micro_precision


def test_multilabel_scores_given_predictions():
    y = np.array([[1, 0], [np.nan, 1], [0, 1]])
    p = np.array([[0.9, 0.1], [0.2, 0.2], [0.1, 0.9]])
    given = np.array([[1, 1], [0, 1], [0, 1]])
    ms = M.multilabel_summary(y, p, labels=["a", "b"], y_pred=given)
    assert ms.per_label.loc["b", "precision"] == pytest.approx(2 / 3)
    assert ms.subset_accuracy == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="y_pred must be 0/1"):
        M.multilabel_summary(y, p, labels=["a", "b"], y_pred=given * 2)


def test_multilabel_validates():
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        M.multilabel_summary([[0.5, 1]], [[0.1, 0.2]], labels=["a", "b"])
    with pytest.raises(ValueError, match="shape of probs"):
        M.multilabel_summary([[1, 0, 1]], [[0.1, 0.2]], labels=["a", "b"])


# -- hierarchical -----------------------------------------------------------------

PARENTS = {"article": {"Tshirts": "Apparel", "Jeans": "Apparel", "Shoes": "Footwear"}}


def test_hierarchy_consistency_hand_made():
    preds = {"master": ["Apparel", "Footwear", "Footwear", "Apparel"],
             "article": ["Jeans", "Shoes", "Tshirts", "Shoes"]}
    ok = M.hierarchy_consistency(preds, levels=["master", "article"], parents=PARENTS)
    assert ok.tolist() == [True, True, False, False]
    three = {"a": ["x", "x"], "b": ["x1", "x1"], "c": ["x1a", "y1a"]}
    parents3 = {"b": {"x1": "x"}, "c": {"x1a": "x1", "y1a": "y1"}}
    assert M.hierarchy_consistency(three, levels=["a", "b", "c"], parents=parents3).tolist() == [True, False]
    with pytest.raises(ValueError, match=r"parents\['article'\] has no parent for predicted classes \['Bags'\]"):
        M.hierarchy_consistency({"master": ["Apparel"], "article": ["Bags"]}, levels=["master", "article"],
                                parents=PARENTS)


def test_hierarchical_summary_per_level():
    lt = {"master": np.array([0, 1, 0, 0]), "article": np.array([1, 2, 0, 1])}
    lp = {"master": np.array([[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]]),
          "article": np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]])}
    lc = {"master": ["Apparel", "Footwear"], "article": ["Tshirts", "Jeans", "Shoes"]}
    hs = M.hierarchical_summary(lt, lp, levels=["master", "article"], level_classes=lc, parents=PARENTS)
    assert hs.per_level["master"].accuracy == pytest.approx(0.75)
    assert hs.per_level["article"].accuracy == pytest.approx(0.75)
    assert hs.table.loc["article", "macro_f1"] == pytest.approx(
        skm.f1_score(lt["article"], lp["article"].argmax(1), average="macro"))
    # argmax paths: Apparel/Jeans ok, Footwear/Shoes ok, Footwear/Tshirts no, Apparel/Shoes no
    assert hs.consistent.tolist() == [True, True, False, False] and hs.consistency_rate == 0.5
    # scoring the predicted path (the leaf's ancestors) instead of each level's argmax
    path = {"master": np.array([0, 0, 0, 1]), "article": np.array([1, 0, 0, 2])}  # argmax master: 0.75
    hp = M.hierarchical_summary(lt, lp, levels=["master", "article"], level_classes=lc, parents=PARENTS,
                                level_pred=path)
    assert hp.per_level["master"].accuracy == pytest.approx(0.5) and hp.consistency_rate == 1.0
    np.testing.assert_array_equal(hp.per_level["master"].y_pred, path["master"])


# -- calibration -------------------------------------------------------------------

def _naive_ece(conf, hit, n_bins):
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        m = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(hit[m].mean() - conf[m].mean())
    return total


def test_ece_perfectly_calibrated_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200_000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    cal = M.calibration_bins(y, p, n_bins=10)
    assert cal.ece < 0.005
    assert cal.count.sum() == p.size
    np.testing.assert_allclose(cal.accuracy, cal.confidence, atol=0.01)
    # a constant over-confidence of +0.1 shows up as ECE ~ 0.1
    y_bad = (rng.uniform(size=p.size) < np.clip(p - 0.1, 0, 1)).astype(int)
    assert M.calibration_bins(y_bad, p, n_bins=10).ece == pytest.approx(0.1, abs=0.02)


def test_ece_matches_naive_loop(mc):
    y, p, _ = mc
    cal = M.calibration_bins(y, p, n_bins=12)
    conf, hit = p.max(1), (p.argmax(1) == y).astype(float)
    assert cal.ece == pytest.approx(_naive_ece(conf, hit, 12))
    assert M.expected_calibration_error(y, p, n_bins=12) == cal.ece
    edges = np.array([0, 0.5, 1.0])  # bin edges: 0.5 belongs to the first bin
    cal2 = M.calibration_bins([1, 0, 1], np.array([0.5, 0.5, 1.0]), n_bins=2)
    np.testing.assert_allclose(cal2.bin_edges, edges)
    assert cal2.count.tolist() == [2, 1]
    # sklearn's calibration_curve agrees on the non-empty bins
    from sklearn.calibration import calibration_curve

    yb = (y == 0).astype(int)
    prob_true, prob_pred = calibration_curve(yb, p[:, 0], n_bins=10)
    cal3 = M.calibration_bins(yb, p[:, 0], n_bins=10)
    nonempty = cal3.count > 0
    np.testing.assert_allclose(cal3.accuracy[nonempty], prob_true)
    np.testing.assert_allclose(cal3.confidence[nonempty], prob_pred)


def test_temperature_scaling_recovers_overconfidence():
    rng = np.random.default_rng(4)
    n, k = 4000, 5
    logits = rng.normal(scale=1.5, size=(n, k))
    true_p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in true_p])
    over = np.exp(logits * 3) / np.exp(logits * 3).sum(1, keepdims=True)  # sharpened: T* = 3
    fit = M.fit_temperature(y[:2000], over[:2000])
    assert fit.temperature == pytest.approx(3.0, rel=0.15)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_before == pytest.approx(skm.log_loss(y[:2000], over[:2000], labels=range(k)), rel=1e-6)
    test = M.apply_temperature(over[2000:], temperature=fit.temperature)
    np.testing.assert_allclose(test.sum(1), 1.0)
    np.testing.assert_array_equal(test.argmax(1), over[2000:].argmax(1))
    assert M.expected_calibration_error(y[2000:], test) < M.expected_calibration_error(y[2000:], over[2000:]) / 2
    with pytest.raises(ValueError, match="temperature"):
        M.apply_temperature(over, temperature=0)


# -- run comparison ------------------------------------------------------------------

def test_compare_runs_side_by_side_and_deltas(mc):
    y, p, classes = mc
    old = M.classification_summary(y, p, classes=classes)
    better = M.classification_summary(y, _probs(y, 4, strength=3.0, seed=1), classes=classes)
    cmp = M.compare_runs({"old": old, "new": better})
    assert cmp.baseline == "old" and cmp.runs == ("old", "new")
    assert cmp.overall.loc["accuracy", "old"] == old.accuracy
    assert cmp.overall.loc["macro_f1", "delta_new"] == pytest.approx(better.f1_macro - old.f1_macro)
    assert cmp.overall.loc["macro_f1", "delta_new"] > 0
    d = cmp.per_class["delta_f1_new"]
    assert d.loc["a"] == pytest.approx(better.per_class.loc["a", "f1"] - old.per_class.loc["a", "f1"])
    assert list(d.abs()) == sorted(d.abs(), reverse=True)  # largest change first
    other = M.classification_summary([0, 1], np.eye(2), classes=["a", "z"])
    cmp2 = M.compare_runs({"old": old, "other": other}, baseline="other")
    assert set(cmp2.per_class.index) == {"a", "b", "c", "d", "z"} and np.isnan(cmp2.per_class.loc["z", "f1_old"])
    with pytest.raises(ValueError, match="baseline"):
        M.compare_runs({"old": old}, baseline="x")


# -- the evaluate CLI -------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core", "evaluate", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def _run_dir(tmp_path, labels, y_true, probs, *, splits="test", name="run", y_pred=None):
    rd = tmp_path / name
    runs.write_labels(rd, labels)
    n = len(probs[next(iter(probs))]) if isinstance(probs, dict) else len(probs)
    runs.write_predictions(rd, runs.predictions_frame(labels, sample_ids=[f"s{i}" for i in range(n)],
                                                      paths=[f"/img/s{i}.png" for i in range(n)], splits=splits,
                                                      y_true=y_true, probs=probs, y_pred=y_pred))
    return rd


def test_cli_multiclass_json_matches_sklearn_and_saves_thresholds(tmp_path, mc):
    y, p, classes = mc
    labels = {"task": "multiclass", "classes": list(classes)}
    splits = np.where(np.arange(len(y)) < 200, "test", "val")
    rd = _run_dir(tmp_path, labels, y, p, splits=splits)
    runs.write_thresholds(rd, ood={"threshold": 2.5})
    out = _cli(rd, "--json", "--target-precision", "0.8", "--save-thresholds", "--n-bootstrap", "200")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    yt, pt = y[:200], p[:200]
    pred = pt.argmax(1)
    assert res["n_samples"] == 200 and res["split"] == "test"
    assert res["accuracy"] == pytest.approx(skm.accuracy_score(yt, pred))
    assert res["macro_f1"] == pytest.approx(skm.f1_score(yt, pred, average="macro", labels=range(4),
                                                         zero_division=0))
    f1 = skm.f1_score(yt, pred, average=None, labels=range(4), zero_division=0)
    for k, c in enumerate(classes):
        assert set(res["per_class"][c]) >= {"precision", "recall", "f1", "support"}
        assert res["per_class"][c]["f1"] == pytest.approx(f1[k])
        ref = M.threshold_at_precision((yt == k).astype(int), pt[:, k], target_precision=0.8, n_bootstrap=0)
        if ref.reachable:
            th = res["thresholds"][c]
            assert (th["threshold"], th["precision"], th["recall"]) == pytest.approx(
                (ref.threshold, ref.precision, ref.recall))
        else:
            assert res["thresholds"][c] is None
    assert res["thresholds"]["d"] is None  # no positives in the test rows
    saved = runs.read_thresholds(rd)
    assert saved["ood"] == {"threshold": 2.5}  # the other section is kept
    assert saved["classes"]["a"]["threshold"] == res["thresholds"]["a"]["threshold"]
    assert saved["classes"]["d"] is None and saved["meta"]["target_precision"] == 0.8
    val = json.loads(_cli(rd, "--json", "--split", "val", "--n-bootstrap", "0").stdout.splitlines()[-1])
    assert val["n_samples"] == len(y) - 200


def test_cli_binary_reports_positive_class_only_and_text_mode(tmp_path):
    labels = {"task": "binary", "classes": ["other", "sunflower"], "positive_class": "sunflower"}
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    rd = _run_dir(tmp_path, labels, y, np.c_[1 - s, s])
    res = json.loads(_cli(rd, "--json", "--target-precision", "0.9").stdout.splitlines()[-1])
    assert list(res["thresholds"]) == ["sunflower"]
    th = res["thresholds"]["sunflower"]
    assert th["threshold"] == pytest.approx(0.6) and th["recall"] == pytest.approx(0.6) and th["precision"] == 1.0
    assert set(res["per_class"]) == {"other", "sunflower"}
    unreachable = json.loads(_cli(rd, "--json", "--target-precision", "1.0", "--n-bootstrap", "0")
                             .stdout.splitlines()[-1])
    assert unreachable["thresholds"]["sunflower"] is not None  # precision 1.0 at t=0.6 is reachable
    text = _cli(rd)
    assert text.returncode == 0 and "accuracy" in text.stdout and "sunflower: threshold 0.6" in text.stdout


def test_cli_multilabel_and_hierarchical(tmp_path):
    labels = {"task": "multilabel", "labels": ["sea", "sunset"]}
    y = np.array([[1, 0], [np.nan, 1], [0, np.nan], [1, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.7], [0.6, 0.3], [0.4, 0.8]])
    rd = _run_dir(tmp_path, labels, y, p, name="ml")
    res = json.loads(_cli(rd, "--json", "--n-bootstrap", "0").stdout.splitlines()[-1])
    ms = M.multilabel_summary(y, p, labels=["sea", "sunset"])
    assert res["micro_f1"] == pytest.approx(ms.micro_f1) and res["macro_f1"] == pytest.approx(ms.macro_f1)
    assert res["subset_accuracy"] == pytest.approx(ms.subset_accuracy)
    assert res["accuracy"] == pytest.approx(ms.hamming_accuracy)  # entry-wise, as `train --json` reports
    assert res["per_label"]["sea"]["n_missing"] == 1 and set(res["thresholds"]) == {"sea", "sunset"}

    hier = {"task": "hierarchical", "levels": ["master", "article"],
            "level_classes": {"master": ["Apparel", "Footwear"], "article": ["Tshirts", "Jeans", "Shoes"]},
            "parents": PARENTS}
    lt = {"master": [0, 1, 0, 0], "article": [1, 2, 0, 1]}
    lp = {"master": [[0.9, 0.1], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]],
          "article": [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]}
    rd = _run_dir(tmp_path, hier, lt, lp, name="hier")
    res = json.loads(_cli(rd, "--json", "--n-bootstrap", "0").stdout.splitlines()[-1])
    assert set(res["levels"]) == {"master", "article"}
    assert res["levels"]["master"]["accuracy"] == pytest.approx(0.75)
    assert res["consistency_rate"] == pytest.approx(0.5)
    assert res["accuracy"] == res["levels"]["article"]["accuracy"] and "Shoes" in res["per_class"]
    # the recorded predicted path (pred columns) is what gets scored, not each level's argmax
    lt2 = {"master": [0, 1, 0, 1], "article": [1, 2, 0, 2]}
    rd = _run_dir(tmp_path, hier, lt2, lp, name="hier_path", y_pred={"master": [0, 1, 0, 1], "article": [1, 2, 0, 2]})
    res = json.loads(_cli(rd, "--json", "--n-bootstrap", "0").stdout.splitlines()[-1])
    assert res["levels"]["master"]["accuracy"] == 1.0 and res["consistency_rate"] == 1.0


def test_cli_refuses_what_is_not_a_run_dir(tmp_path):
    out = _cli(tmp_path)
    assert out.returncode == 2 and "not a finished run" in out.stderr and "labels.json" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli(tmp_path / "missing")
    assert out.returncode == 2 and "not a folder" in out.stderr
    labels = {"task": "multiclass", "classes": ["a", "b"]}
    rd = _run_dir(tmp_path, labels, [0, 1], np.eye(2))
    pd.read_csv(rd / "predictions.csv").drop(columns=["p_b"]).to_csv(rd / "predictions.csv", index=False)
    out = _cli(rd, "--json")
    assert out.returncode == 2 and "missing column 'p_b'" in out.stderr and "predictions.csv" in out.stderr
    assert out.stdout == ""
    out = _cli(rd, "--split", "val")
    assert out.returncode == 2
    out = _cli(_run_dir(tmp_path, labels, [0, 1], np.eye(2), name="ok"), "--split", "val")
    assert out.returncode == 2 and "no rows with split 'val'" in out.stderr


# -- evaluation page helpers and remaining sklearn cross-checks (issue 5) ------------------

def test_confident_mistakes_judges_given_predictions():
    # a hierarchical run's recorded path can differ from the argmax of a level's probabilities
    y = np.array([0, 1, 1, 2])
    p = np.array([[0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    given = np.array([0, 2, 0, 1])  # row 0 right (despite the argmax), rows 1-3 wrong
    np.testing.assert_array_equal(M.confident_mistakes(y, p, y_pred=given), [2, 1, 3])  # p of the given class
    np.testing.assert_array_equal(M.confident_mistakes(y, p, y_pred=given, true_class=0, pred_class=0), [0])
    np.testing.assert_array_equal(M.confident_mistakes(y, p), [0, 2])  # argmax: 0 -> 1 and 1 -> 0
    with pytest.raises(ValueError, match="y_pred"):
        M.confident_mistakes(y, p, y_pred=[0, 1])


def test_multilabel_mistakes_rank_known_entries_only():
    y = np.array([[1, 0], [np.nan, 1], [0, 0], [1, np.nan], [1, 1]])
    p = np.array([[0.2, 0.1], [0.99, 0.8], [0.7, 0.95], [0.9, 0.99], [0.6, 0.7]])
    # row 0: missed a (conf 0.8); row 1: only the missing entry is "wrong" -> no mistake;
    # row 2: false b at 0.95 (and a at 0.7); row 3: right on the known entry; row 4: right
    np.testing.assert_array_equal(M.multilabel_mistakes(y, p), [2, 0])
    given = (p >= 0.5).astype(int)
    given[4, 0] = 0  # a recorded miss, confidence 1 - 0.6
    np.testing.assert_array_equal(M.multilabel_mistakes(y, p, y_pred=given), [2, 0, 4])
    assert M.multilabel_mistakes(np.full((2, 2), np.nan), np.full((2, 2), 0.9)).size == 0


def test_threshold_numbers_are_sklearns_scores_at_that_threshold(mc):
    y, p, classes = mc
    choices = M.thresholds_at_precision(y, p, classes=classes, target_precision=0.7, n_bootstrap=0)
    checked = 0
    for k, c in enumerate(classes):
        ch = choices[c]
        if not ch.reachable:
            continue
        yb, pred = (y == k).astype(int), (p[:, k] >= ch.threshold).astype(int)
        assert ch.precision == pytest.approx(skm.precision_score(yb, pred))
        assert ch.recall == pytest.approx(skm.recall_score(yb, pred))
        assert ch.n_predicted_positive == pred.sum() and ch.n_positive == yb.sum()
        # no other threshold on sklearn's curve reaches the target with more recall
        prec, rec, _ = skm.precision_recall_curve(yb, p[:, k])
        assert ch.recall == pytest.approx(rec[:-1][prec[:-1] >= 0.7].max())
        checked += 1
    assert checked >= 2


def test_threshold_hand_made_three_classes():
    # a: positives score .8 .6 .5, negatives at most .3 -> t=0.5, precision and recall 1.
    # b: positives .7 .4 .5, negatives .3 .45 .3 .2 .1 -> at precision >= 2/3, t=0.4 flags one
    #    negative (.45): precision 3/4, recall 1; at 0.9, t=0.5: recall 2/3.
    # c: positives .4 .7, a negative at .5 -> t=0.4 gives precision exactly 2/3; at 0.9, t=0.7.
    y = np.array([0, 0, 1, 1, 2, 0, 1, 2])
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.4, 0.5],
                  [0.3, 0.3, 0.4], [0.5, 0.45, 0.05], [0.3, 0.5, 0.2], [0.1, 0.2, 0.7]])
    ch = M.thresholds_at_precision(y, p, classes=["a", "b", "c"], target_precision=2 / 3, n_bootstrap=0)
    assert ch["a"].threshold == 0.5 and ch["a"].precision == 1.0 and ch["a"].recall == 1.0
    assert ch["b"].threshold == 0.4 and ch["b"].recall == 1.0 and ch["b"].precision == pytest.approx(0.75)
    assert ch["c"].threshold == 0.4 and ch["c"].recall == 1.0 and ch["c"].precision == pytest.approx(2 / 3)
    strict = M.thresholds_at_precision(y, p, classes=["a", "b", "c"], target_precision=0.9, n_bootstrap=0)
    assert strict["b"].threshold == 0.5 and strict["b"].recall == pytest.approx(2 / 3)
    assert strict["c"].threshold == 0.7 and strict["c"].recall == pytest.approx(0.5)


def test_multilabel_thresholds_use_known_entries_only():
    y = np.array([[1, 0], [np.nan, 1], [0, 1], [1, np.nan], [0, 0], [np.nan, 0]])
    p = np.array([[0.9, 0.2], [0.95, 0.8], [0.3, 0.7], [0.6, 0.9], [0.4, 0.1], [0.99, 0.6]])
    ch = M.thresholds_at_precision(y, p, classes=["x", "z"], target_precision=1.0, n_bootstrap=0)
    # known x entries: (1, .9), (0, .3), (1, .6), (0, .4) -> t=0.6, recall 1; the missing rows
    # (scores .95 and .99) would be false positives if read as 0
    assert ch["x"].threshold == 0.6 and ch["x"].recall == 1.0 and ch["x"].n_negative == 2
    assert ch["z"].threshold == 0.7 and ch["z"].recall == 1.0 and ch["z"].n_positive == 2
    filled = M.thresholds_at_precision(np.nan_to_num(y), p, classes=["x", "z"], target_precision=1.0,
                                       n_bootstrap=0)
    assert not filled["x"].reachable


def test_evaluate_predictions_averages_match_sklearn(mc):
    y, p, classes = mc
    pred = runs.Predictions(task="multiclass", classes=classes, y_true=y, y_pred=p.argmax(1), probs=p,
                            sample_ids=np.array([f"s{i}" for i in range(len(y))], dtype=object),
                            paths=np.array(["x"] * len(y), dtype=object),
                            splits=np.array(["test"] * len(y), dtype=object))
    res = M.evaluate_predictions(pred, target_precision=0.8, n_bootstrap=0)
    onehot = np.eye(4)[y]
    present = onehot.sum(0) > 0
    assert res["mean_average_precision"] == pytest.approx(
        skm.average_precision_score(onehot[:, present], p[:, present], average="macro"))
    assert res["macro_roc_auc"] == pytest.approx(
        skm.roc_auc_score(onehot[:, present], p[:, present], average="macro"))
    assert res["weighted_f1"] == pytest.approx(skm.f1_score(y, p.argmax(1), average="weighted", labels=range(4),
                                                            zero_division=0))
    assert res["confusion"]["matrix"] == skm.confusion_matrix(y, p.argmax(1), labels=range(4)).tolist()
    assert res["ece"] == pytest.approx(_naive_ece(p.max(1), (p.argmax(1) == y).astype(float), 15))
    for k, c in enumerate(classes):
        if present[k]:
            assert res["per_class"][c]["roc_auc"] == pytest.approx(skm.roc_auc_score(onehot[:, k], p[:, k]))
        else:
            assert res["per_class"][c]["average_precision"] is None


def test_compare_runs_of_multilabel_summaries():
    y = np.array([[1, 0, 1], [0, 1, np.nan], [1, 1, 0], [0, 0, 1]])
    weak = np.array([[0.6, 0.6, 0.4], [0.4, 0.4, 0.9], [0.3, 0.6, 0.6], [0.6, 0.4, 0.6]])
    strong = np.where(np.isnan(y), 0.5, np.nan_to_num(y) * 0.8 + 0.1)
    a = M.multilabel_summary(y, weak, labels=["x", "y", "z"])
    b = M.multilabel_summary(y, strong, labels=["x", "y", "z"])
    cmp = M.compare_runs({"weak": a, "strong": b})
    assert cmp.overall.loc["micro_f1", "delta_strong"] == pytest.approx(b.micro_f1 - a.micro_f1) and b.micro_f1 == 1
    assert cmp.per_class.loc["x", "f1_weak"] == a.per_label.loc["x", "f1"]
    assert set(cmp.per_class.index) == {"x", "y", "z"}
    single = M.classification_summary([0, 1], np.eye(2), classes=["x", "y"])
    with pytest.raises(ValueError, match="mix single-label and multi-label"):
        M.compare_runs({"weak": a, "single": single})
