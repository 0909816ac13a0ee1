import numpy as np
import pandas as pd
import pytest

from core import charts


def test_label_distribution_sorted_and_rare_highlighted():
    fig = charts.label_distribution(pd.Series({"a": 30, "b": 5, "c": 12}), rare_below=10)
    bar = fig.data[0]
    assert list(bar.y) == ["b", "c", "a"]
    assert list(bar.x) == [5, 12, 30]
    assert bar.marker.color[0] == charts.RARE_COLOR and bar.marker.color[2] == charts.BASE_COLOR


def test_sunburst_parent_values_are_sums_of_children():
    frame = pd.DataFrame({"g": ["in", "in", "in", "act"], "e": ["cb", "cb", "radio", "btn"]})
    sb = charts.hierarchy_sunburst(frame, ["g", "e"]).data[0]
    values = dict(zip(sb.ids, sb.values))
    assert values == {"act": 1, "in": 3, "act/btn": 1, "in/cb": 2, "in/radio": 1}
    assert dict(zip(sb.ids, sb.parents))["in/cb"] == "in"


def test_sunburst_requires_levels():
    with pytest.raises(ValueError, match="levels"):
        charts.hierarchy_sunburst(pd.DataFrame({"a": [1]}), [])


def test_cooccurrence_matches_naive_count_and_ignores_missing():
    labels = pd.DataFrame({"x": [1, 1, np.nan, 0], "y": [1, 0, 1, 1], "z": [0, np.nan, np.nan, 1]})
    z = np.asarray(charts.cooccurrence_heatmap(labels).data[0].z)
    for i, a in enumerate(labels.columns):
        for j, b in enumerate(labels.columns):
            naive = sum(1 for _, r in labels.iterrows() if r[a] == 1 and r[b] == 1)
            assert z[i, j] == naive


def test_missing_matrix_marks_nan_and_samples_large_frames():
    labels = pd.DataFrame({"x": [1.0, np.nan], "y": [np.nan, 0.0]})
    assert np.asarray(charts.missing_matrix(labels).data[0].z).tolist() == [[0, 1], [1, 0]]
    big = pd.DataFrame({"x": np.ones(5000)})
    assert len(charts.missing_matrix(big, max_rows=100).data[0].z) == 100


def test_image_size_scatter_draws_each_distinct_size_once_with_its_count():
    rng = np.random.default_rng(0)
    w, h = rng.integers(100, 140, 100_000), rng.integers(100, 103, 100_000)  # 40 x 3 distinct sizes
    pts = charts.image_size_scatter(w, h).data[0]
    assert pts.type == "scatter" and len(pts.x) == 120 and "about" not in pts.hovertemplate
    got = {(x, y): c for x, y, c in zip(pts.x, pts.y, pts.customdata)}
    want = pd.Series(1, index=pd.MultiIndex.from_arrays([w, h])).groupby(level=[0, 1]).size()
    assert got == {k: v for k, v in want.items()}
    many = charts.image_size_scatter(rng.integers(100, 5000, 20_000), rng.integers(100, 5000, 20_000)).data[0]
    assert many.type == "scattergl" and len(many.x) <= 20_000 and many.hovertemplate.startswith("about")
    assert int(np.sum(many.customdata)) == 20_000  # every image counted in some cell


def test_histogram_bins_on_the_server_like_numpy():
    v = np.r_[np.random.default_rng(1).normal(size=100_000), np.nan, np.inf]
    bar = charts.histogram(v, name="x", nbins=30).data[0]
    counts, edges = np.histogram(v[np.isfinite(v)], bins=30)
    assert bar.type == "bar" and list(bar.y) == counts.tolist() and len(bar.x) == 30
    np.testing.assert_allclose(bar.x, (edges[:-1] + edges[1:]) / 2)
    assert len(charts.histogram(np.array([np.nan]), name="x").data[0].y) == 0


def test_split_distribution_stacks_splits():
    frame = pd.DataFrame({"c": ["a", "a", "b"], "split": ["train", "test", "train"]})
    fig = charts.split_distribution(frame, label_column="c")
    assert [t.name for t in fig.data] == ["train", "test"]


def test_a_box_or_lasso_region_selects_every_sample_in_it_drawn_or_not():
    """The map draws a sample of a large dataset; the region picks every sample placed inside it."""
    from core.embedding_charts import rows_in_region

    rng = np.random.default_rng(0)
    pts = rng.uniform(-1, 1, (5000, 2))
    box = {"selection": {"points": [], "box": [{"xref": "x", "yref": "y", "x": [0.5, -0.2], "y": [-0.1, 0.4]}],
                         "lasso": []}}
    want = np.flatnonzero((pts[:, 0] >= -0.2) & (pts[:, 0] <= 0.5) & (pts[:, 1] >= -0.1) & (pts[:, 1] <= 0.4))
    np.testing.assert_array_equal(rows_in_region(box, pts), want)
    # a lasso: the triangle (0,0) (1,0) (0,1) holds the points with x, y > 0 and x + y < 1
    tri = {"points": [], "box": [], "lasso": [{"x": [0, 1, 0], "y": [0, 0, 1]}]}
    got = rows_in_region(tri, pts)
    inside = (pts[:, 0] > 0) & (pts[:, 1] > 0) & (pts.sum(axis=1) < 1)
    assert len(got) > 500 and set(got) == set(np.flatnonzero(inside))
    # a click (no region), nothing, or a 3-D map: no region
    assert rows_in_region({"points": [{"customdata": ["a", 3]}], "box": [], "lasso": []}, pts) is None
    assert rows_in_region(None, pts) is None and rows_in_region(box, np.zeros((4, 3))) is None
