"""Plotly figures of the Embeddings page (and the report): the embedding map, OOD histograms, BIC.

Plain data in, ``plotly.graph_objects.Figure`` out; no file reads, no Streamlit. Every
point of the map carries ``customdata = [sample_id, row]`` (row = index into the
:class:`core.embeddings.Embeddings` arrays), so a box / lasso selection can be mapped back
to samples whatever trace (colour group) a point landed in.
"""

from __future__ import annotations


import numpy as np
import pandas as pd
import plotly.graph_objects as go

from plotly.colors import qualitative

from core.charts import BAD_COLOR, GOOD_COLOR, NEUTRAL_COLOR, _layout

#: Colours for the fixed groups of the "correct" and "split" colourings.
FIXED_COLORS = {"correct": GOOD_COLOR, "wrong": BAD_COLOR, "unknown": NEUTRAL_COLOR, "no flag": "#CBD5E1",
                "train": "#4338CA", "val": "#F59E0B", "test": "#10B981"}
UNSEEN_COLOR = "#111827"
#: Colour groups beyond this many are merged into "other" (largest groups keep their colour).
MAX_GROUPS = 24


def _groups(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Group name per point (small groups beyond MAX_GROUPS merged into "other") and the group order."""
    vals = np.array(["(none)" if (v is None or v == "") else str(v) for v in values], dtype=object)
    counts = pd.Series(vals).value_counts()
    keep = list(counts.index[:MAX_GROUPS])
    if len(counts) > MAX_GROUPS:
        vals = np.where(np.isin(vals, keep), vals, "other")
        keep.append("other")
    order = sorted(keep, key=lambda g: (g in ("other", "(none)", "no flag"), str(g)))
    return vals, order


def embedding_map(points: np.ndarray, colour: np.ndarray, *, sample_ids: np.ndarray, rows: np.ndarray | None = None,
                  hover: dict[str, np.ndarray] | None = None, colour_name: str = "label",
                  overlay: dict | None = None, title: str | None = None, height: int = 620,
                  marker_size: float | None = None) -> go.Figure:
    """Scatter of a 2-D / 3-D map, one WebGL trace per colour group.

    Parameters
    ----------
    points : ndarray of shape (N, 2) or (N, 3)
    colour : ndarray of shape (N,)
        Group of each point (str); colour by label, prediction, correct, split, cluster...
    sample_ids : ndarray of shape (N,)
    rows : ndarray of shape (N,), int, optional
        Index of each point in the full arrays (default ``arange(N)``), put in customdata.
    hover : dict of name -> ndarray (N,), optional
        Extra lines of the hover label (label, prediction...).
    overlay : dict, optional
        ``{"points": (M, dims), "names": (M,), "name": "unseen"}`` drawn on top as black crosses.
    """
    points = np.asarray(points, dtype=float)
    n, dims = points.shape
    rows = np.arange(n) if rows is None else np.asarray(rows)
    hover = hover or {}
    groups, order = _groups(np.asarray(colour, dtype=object))
    # categorical palettes whose neighbours stay apart: D3 up to 10 groups, Dark24 beyond
    palette = qualitative.D3 if len(order) <= 10 else qualitative.Dark24
    size = marker_size or (6 if n < 2000 else 4 if n < 20000 else 3)
    fig = go.Figure()
    hover_keys = list(hover)
    tmpl = "<b>%{customdata[0]}</b>" + "".join(f"<br>{k}: %{{customdata[{i + 2}]}}" for i, k in enumerate(hover_keys))
    for gi, g in enumerate(order):
        m = groups == g
        if not m.any():
            continue
        custom = np.column_stack([np.asarray(sample_ids, dtype=object)[m], rows[m].astype(object),
                                  *[np.asarray(hover[k], dtype=object)[m] for k in hover_keys]])
        color = FIXED_COLORS.get(g, palette[gi % len(palette)])
        name = f"{g} ({int(m.sum()):,})"
        if dims == 3:
            fig.add_trace(go.Scatter3d(x=points[m, 0], y=points[m, 1], z=points[m, 2], mode="markers", name=name,
                                       marker=dict(size=max(2, size - 2), color=color, opacity=0.8),
                                       customdata=custom, hovertemplate=tmpl + "<extra>%{fullData.name}</extra>"))
        else:
            fig.add_trace(go.Scattergl(x=points[m, 0], y=points[m, 1], mode="markers", name=name,
                                       marker=dict(size=size, color=color, opacity=0.75),
                                       customdata=custom, hovertemplate=tmpl + "<extra>%{fullData.name}</extra>"))
    if overlay is not None and len(overlay.get("points", ())):
        op = np.asarray(overlay["points"], dtype=float)
        names = np.asarray(overlay.get("names", [""] * len(op)), dtype=object)
        custom = np.column_stack([names, np.full(len(op), -1, dtype=object),
                                  *[np.full(len(op), "", dtype=object) for _ in hover_keys]])
        label = overlay.get("name", "unseen")
        common = dict(mode="markers", name=f"{label} ({len(op)})", customdata=custom,
                      hovertemplate="<b>%{customdata[0]}</b><extra>" + label + "</extra>")
        if dims == 3:
            fig.add_trace(go.Scatter3d(x=op[:, 0], y=op[:, 1], z=op[:, 2],
                                       marker=dict(size=4, color=UNSEEN_COLOR, symbol="x"), **common))
        else:
            fig.add_trace(go.Scattergl(x=op[:, 0], y=op[:, 1],
                                       marker=dict(size=9, color=UNSEEN_COLOR, symbol="x-thin",
                                                   line=dict(width=2, color=UNSEEN_COLOR)), **common))
    fig = _layout(fig, title=title, height=height)
    fig.update_layout(legend=dict(title=colour_name, itemsizing="constant"), dragmode="select" if dims == 2 else None,
                      uirevision="map")
    if dims == 2:
        fig.update_xaxes(showticklabels=False, title=None, zeroline=False)
        fig.update_yaxes(showticklabels=False, title=None, zeroline=False, scaleanchor="x", scaleratio=1)
    else:
        fig.update_layout(scene=dict(xaxis=dict(showticklabels=False, title=""),
                                     yaxis=dict(showticklabels=False, title=""),
                                     zaxis=dict(showticklabels=False, title="")))
    return fig


def _selection_dict(selection: object) -> dict:
    """The ``selection`` part of a ``st.plotly_chart`` event (or the selection itself) as a dict."""
    if selection is None:
        return {}
    sel = selection.get("selection", selection) if isinstance(selection, dict) else getattr(selection, "selection",
                                                                                            selection)
    if isinstance(sel, dict):
        return sel
    return {k: getattr(sel, k, None) for k in ("points", "box", "lasso")}


def selected_rows(selection: object) -> list[int]:
    """Rows (customdata[1]) of the points in a ``st.plotly_chart`` selection; unseen overlay points dropped.

    Streamlit 1.67 returns ``customdata`` as a list or as a dict ``{"0": ..., "1": ...}``;
    both are accepted.
    """
    points = []
    for p in _selection_dict(selection).get("points") or []:
        cd = p.get("customdata") if isinstance(p, dict) else None
        if cd is None:
            continue
        if isinstance(cd, dict):
            cd = [cd.get(str(i), cd.get(i)) for i in range(len(cd))]
        if len(cd) < 2:
            continue
        try:
            row = int(cd[1])
        except (TypeError, ValueError):
            continue
        if row >= 0:
            points.append(row)
    return list(dict.fromkeys(points))


def rows_in_region(selection: object, points: np.ndarray) -> np.ndarray | None:
    """Rows of ``points`` (N, 2: every sample's map position, drawn or not) inside the box or lasso region of
    a ``st.plotly_chart`` selection, ascending; None when the selection has no region (a click, or nothing).

    The map draws a sample of a large dataset: plotly reports only the drawn points it selected, while
    the region selects every sample placed in it.
    """
    sel = _selection_dict(selection)
    pts = np.asarray(points, dtype=float)
    if pts.ndim != 2 or pts.shape[1] != 2:
        return None
    inside = np.zeros(len(pts), dtype=bool)
    found = False
    for box in sel.get("box") or []:
        xs, ys = np.asarray(box.get("x") or [], float), np.asarray(box.get("y") or [], float)
        if len(xs) >= 2 and len(ys) >= 2:
            found = True
            inside |= ((pts[:, 0] >= xs.min()) & (pts[:, 0] <= xs.max())
                       & (pts[:, 1] >= ys.min()) & (pts[:, 1] <= ys.max()))
    for lasso in sel.get("lasso") or []:
        xs, ys = np.asarray(lasso.get("x") or [], float), np.asarray(lasso.get("y") or [], float)
        if len(xs) >= 3 and len(xs) == len(ys):
            from matplotlib.path import Path as PolygonPath

            found = True
            inside |= PolygonPath(np.column_stack([xs, ys])).contains_points(pts)
    return np.flatnonzero(inside) if found else None


def ood_histogram(test_scores: np.ndarray, unseen_scores: np.ndarray, *, threshold: float | None = None,
                  method: str = "", nbins: int = 30, title: str | None = None) -> go.Figure:
    """Overlaid histograms (probability density) of test vs unseen scores, with the threshold line."""
    a, b = np.asarray(test_scores, float), np.asarray(unseen_scores, float)
    both = np.r_[a, b]
    fig = go.Figure()
    if len(both):
        lo, hi = float(np.min(both)), float(np.max(both))
        bins = dict(start=lo, end=hi + (hi - lo) / nbins + 1e-12, size=max((hi - lo) / nbins, 1e-12))
        if len(a):
            fig.add_trace(go.Histogram(x=a, name=f"test ({len(a)})", xbins=bins, histnorm="probability density",
                                       marker_color="#4338CA", opacity=0.6))
        if len(b):
            fig.add_trace(go.Histogram(x=b, name=f"unseen ({len(b)})", xbins=bins, histnorm="probability density",
                                       marker_color="#F97316", opacity=0.6))
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=float(threshold), line=dict(color=BAD_COLOR, dash="dash"),
                      annotation_text=f"threshold {threshold:.3g}", annotation_position="top right")
    fig.update_layout(barmode="overlay", xaxis_title=f"{method} score (higher = more unusual)",
                      yaxis_title="density", legend=dict(orientation="h", y=1.1))
    return _layout(fig, title=title, height=320)


def bic_curve(bic: pd.DataFrame, *, chosen: int | None = None, title: str | None = None) -> go.Figure:
    """BIC of a Gaussian mixture per number of clusters k (lower is better), the chosen k marked."""
    fig = go.Figure()
    if len(bic):
        fig.add_trace(go.Scatter(x=bic["k"], y=bic["bic"], mode="lines+markers", marker_color="#4338CA", name="BIC"))
        if chosen is not None and chosen in set(bic["k"]):
            y = float(bic.loc[bic["k"] == chosen, "bic"].iloc[0])
            fig.add_trace(go.Scatter(x=[chosen], y=[y], mode="markers", marker=dict(size=12, color=BAD_COLOR),
                                     name=f"k = {chosen}"))
    fig.update_layout(xaxis_title="clusters k", yaxis_title="BIC (lower is better)", showlegend=False)
    return _layout(fig, title=title, height=260)


def cluster_label_heatmap(clusters: np.ndarray, labels: np.ndarray, *, max_labels: int = 30,
                          title: str | None = None) -> go.Figure:
    """Rows = clusters, columns = labels: share of each cluster's samples per label."""
    lab = np.asarray(labels, dtype=object)
    known = lab != ""
    ct = pd.crosstab(pd.Series(clusters[known], name="cluster"), pd.Series(lab[known], name="label"))
    if ct.shape[1] > max_labels:
        ct = ct[ct.sum().sort_values(ascending=False).index[:max_labels]]
    share = ct.div(ct.sum(axis=1).replace(0, 1), axis=0)
    fig = go.Figure(go.Heatmap(z=share.values, x=[str(c) for c in share.columns],
                               y=[f"cluster {c}" for c in share.index], colorscale="Blues", zmin=0, zmax=1,
                               text=ct.values, hovertemplate="%{y} · %{x}: %{text} (%{z:.0%})<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title=title, height=max(220, 26 * len(share) + 80))
