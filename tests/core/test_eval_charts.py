"""The evaluation figure builders in core.charts, fed with real core.metrics results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import charts
from core import metrics as M


@pytest.fixture
def three():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3))
    logits[np.arange(200), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, p, ("cat", "dog", "<b>fox</b>")


def test_confusion_matrix_cells_text_and_click_targets(three):
    y, p, classes = three
    s = M.classification_summary(y, p, classes=classes)
    fig = charts.confusion_matrix(s.confusion, classes, selected=(0, 2))
    heat, cells = fig.data
    np.testing.assert_array_equal(np.asarray(heat.z), s.confusion)
    assert list(heat.x) == list(classes) and list(heat.y) == list(classes)
    assert heat.text[1][1] == str(s.confusion[1, 1])
    # one invisible click target per cell, carrying (true, predicted) indices
    assert len(cells.customdata) == 9 and cells.customdata[5].tolist() == [1, 2]
    assert cells.x[5] == classes[2] and cells.y[5] == classes[1]
    [rect] = fig.layout.shapes
    assert (rect.x0, rect.x1, rect.y0, rect.y1) == (1.5, 2.5, -0.5, 0.5)
    assert fig.layout.yaxis.autorange == "reversed"  # first class on top, as in a table


def test_confusion_matrix_normalised_keeps_counts_in_hover(three):
    y, p, classes = three
    s = M.classification_summary(y, p, classes=classes)
    fig = charts.confusion_matrix(s.confusion_normalized, classes, counts=s.confusion, normalized=True)
    heat = fig.data[0]
    assert heat.zmax == 1 and heat.text[0][0] == f"{s.confusion_normalized[0, 0]:.2f}"
    assert f"{s.confusion[0, 1]} samples" in heat.hovertext[0][1]
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        charts.confusion_matrix(np.zeros((2, 2)), classes)


def test_pr_and_roc_curves_label_scores_and_mark_operating_points(three):
    y, p, classes = three
    cs = M.one_vs_rest_curves(y, p, classes=classes)
    ch = M.thresholds_at_precision(y, p, classes=classes, target_precision=0.6, n_bootstrap=0)
    points = {c: (x.recall, x.precision) for c, x in ch.items() if x.reachable}
    fig = charts.pr_curves(cs.curves, points=points, target_precision=0.6)
    lines = [t for t in fig.data if t.mode == "lines"]
    assert [t.name for t in lines] == [f"{c} (AP {cs.curves[c].average_precision:.3f})" for c in classes]
    np.testing.assert_allclose(lines[0].x, cs.curves["cat"].recall)
    markers = [t for t in fig.data if t.mode == "markers"]
    assert len(markers) == len(points) and markers[0].x[0] == pytest.approx(next(iter(points.values()))[0])
    assert any(sh.y0 == 0.6 for sh in fig.layout.shapes)  # the target line
    roc = charts.roc_curves(cs.curves)
    assert roc.data[0].name == "chance"
    assert roc.data[1].name == f"cat (AUC {cs.curves['cat'].roc_auc:.3f})"


def test_curves_without_positives_say_na():
    cs = M.one_vs_rest_curves([0, 0, 1], np.array([[0.9, 0.1, 0], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]),
                              classes=["a", "b", "c"])
    assert charts.pr_curves(cs.curves).data[2].name == "c (AP n/a)"
    assert charts.roc_curves(cs.curves).data[3].name == "c (AUC n/a)"


def test_threshold_sweep_shows_target_and_choice(three):
    y, p, classes = three
    curve = M.one_vs_rest_curves(y, p, classes=classes).curves["dog"]
    ch = M.threshold_at_precision((y == 1).astype(int), p[:, 1], target_precision=0.7, n_bootstrap=0)
    fig = charts.threshold_sweep(curve, target_precision=0.7, threshold=ch.threshold)
    prec, rec = fig.data
    np.testing.assert_allclose(prec.x, curve.pr_thresholds)
    np.testing.assert_allclose(rec.y, curve.recall[:-1])
    assert {round(s.x0, 6) for s in fig.layout.shapes if s.x0 == s.x1} == {round(ch.threshold, 6)}
    none = charts.threshold_sweep(curve, target_precision=0.99, threshold=None)
    assert all(s.x0 != s.x1 or s.x0 is None for s in none.layout.shapes)


def test_reliability_diagram_bins_and_after(three):
    y, p, _ = three
    cal = M.calibration_bins(y, p, n_bins=10)
    after = M.calibration_bins(y, M.apply_temperature(p, temperature=2.0), n_bins=10)
    fig = charts.reliability_diagram(cal, after=after)
    bars, diagonal, model, scaled = fig.data
    np.testing.assert_array_equal(bars.y, cal.count)
    assert len(model.x) == int((cal.count > 0).sum())
    assert model.name == f"model (ECE {cal.ece:.3f})" and scaled.name.endswith(f"(ECE {after.ece:.3f})")
    assert len(charts.reliability_diagram(cal).data) == 3


def test_metric_deltas_largest_change_on_top_and_coloured():
    fig = charts.metric_deltas(pd.Series({"a": 0.05, "b": -0.3, "c": np.nan, "d": 0.1}))
    bar = fig.data[0]
    assert list(bar.y) == ["c", "a", "d", "b"]  # plotly draws the last bar on top
    assert bar.marker.color[-1] == charts.BAD_COLOR and bar.marker.color[2] == charts.GOOD_COLOR
    assert bar.marker.color[0] == charts.NEUTRAL_COLOR and bar.text[0] == "n/a"
    assert fig.layout.xaxis.range[0] == -fig.layout.xaxis.range[1]
