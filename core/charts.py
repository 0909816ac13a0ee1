"""Plotly figure builders shared by the pages and the HTML report.

Every function takes plain data (a pandas Series / DataFrame / numpy arrays) and returns a
``plotly.graph_objects.Figure``; none reads files or knows about Streamlit. Label names
are user data: plotly renders them as text (never as HTML) in hover labels and ticks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

PALETTE = ["#4338CA", "#0EA5E9", "#10B981", "#F59E0B", "#EF4444", "#8B5CF6", "#EC4899", "#14B8A6",
           "#84CC16", "#F97316", "#6366F1", "#06B6D4", "#22C55E", "#EAB308", "#A855F7", "#64748B"]
RARE_COLOR = "#EF4444"
BASE_COLOR = "#4338CA"


def _layout(fig: go.Figure, *, title: str | None = None, height: int | None = None) -> go.Figure:
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=40 if title else 10, b=10),
        template="plotly_white", font=dict(size=12),
    )
    return fig


def label_distribution(counts: pd.Series, *, rare_below: int | None = None, title: str | None = None) -> go.Figure:
    """Horizontal bar chart of per-class counts, largest first; classes under ``rare_below`` in red.

    Parameters
    ----------
    counts : Series of int, index = class name
    rare_below : classes with fewer samples are highlighted (e.g. the audit's rare-class minimum)
    """
    counts = counts.sort_values(ascending=True)
    colors = [RARE_COLOR if rare_below is not None and c < rare_below else BASE_COLOR for c in counts.values]
    fig = go.Figure(go.Bar(
        x=counts.values, y=[str(i) for i in counts.index], orientation="h", marker_color=colors,
        text=counts.values, textposition="outside", cliponaxis=False,
        hovertemplate="%{y}: %{x} samples<extra></extra>",
    ))
    fig.update_xaxes(title="samples")
    fig.update_yaxes(type="category")
    return _layout(fig, title=title, height=max(240, 26 * len(counts) + 60))


def split_distribution(frame: pd.DataFrame, *, label_column: str, title: str | None = None) -> go.Figure:
    """Stacked bars: samples per class, split into train / val / test."""
    table = frame.groupby([label_column, "split"]).size().unstack(fill_value=0)
    fig = go.Figure()
    for i, split in enumerate(s for s in ("train", "val", "test") if s in table.columns):
        fig.add_bar(x=[str(c) for c in table.index], y=table[split].values, name=split,
                    marker_color=PALETTE[i], hovertemplate="%{x} · " + split + ": %{y}<extra></extra>")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category")
    return _layout(fig, title=title, height=320)


def hierarchy_sunburst(frame: pd.DataFrame, levels: list[str], *, title: str | None = None) -> go.Figure:
    """Sunburst of sample counts over the ordered ``levels`` (coarse -> fine)."""
    if not levels:
        raise ValueError("levels must name at least one column, got an empty list")
    ids, labels, parents, values = [], [], [], []
    for depth in range(len(levels)):
        grouped = frame.groupby(levels[: depth + 1], dropna=False).size()
        for key, n in grouped.items():
            key = key if isinstance(key, tuple) else (key,)
            key = tuple("(missing)" if pd.isna(k) else str(k) for k in key)
            ids.append("/".join(key))
            labels.append(key[-1])
            parents.append("/".join(key[:-1]))
            values.append(int(n))
    fig = go.Figure(go.Sunburst(ids=ids, labels=labels, parents=parents, values=values,
                                branchvalues="total", hovertemplate="%{id}: %{value}<extra></extra>"))
    return _layout(fig, title=title, height=460)


def cooccurrence_heatmap(labels: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """K x K counts of samples carrying both labels (missing entries count as not carrying)."""
    known = labels.fillna(0).to_numpy(dtype=float)
    counts = known.T @ known
    names = [str(c) for c in labels.columns]
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, colorscale="Blues", text=counts.astype(int),
                               texttemplate="%{text}", hovertemplate="%{y} & %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return _layout(fig, title=title, height=120 + 40 * len(names))


def missing_matrix(labels: pd.DataFrame, *, max_rows: int = 400, seed: int = 0, title: str | None = None) -> go.Figure:
    """Which label entries are missing: a row per sample (sampled above ``max_rows``), dark = missing."""
    frame = labels
    if len(frame) > max_rows:
        frame = frame.sample(max_rows, random_state=seed).sort_index()
    z = frame.isna().to_numpy(dtype=int)
    fig = go.Figure(go.Heatmap(z=z, x=[str(c) for c in frame.columns], colorscale=[[0, "#E5E7EB"], [1, "#111827"]],
                               showscale=False, hovertemplate="%{x}: %{z} (1 = missing)<extra></extra>"))
    fig.update_yaxes(showticklabels=False, title=f"{len(frame)} of {len(labels)} samples")
    fig.update_xaxes(type="category")
    return _layout(fig, title=title, height=320)


#: Distinct image sizes drawn at most; above, sizes are grouped on a log grid of 1/32 octave (~2 %).
SIZE_POINTS_MAX = 5000


def image_size_scatter(widths: np.ndarray, heights: np.ndarray, *, title: str | None = None) -> go.Figure:
    """Width vs height of the original images (log axes): one point per distinct size, sized by
    how many images have it (hover: the count), WebGL above 1,000 points.

    The figure carries the distinct sizes, not one point per image (100k images of 113 sizes
    send 113 points to the browser); beyond :data:`SIZE_POINTS_MAX` distinct sizes they are
    grouped on a ~2 % log grid and the hover says "about".
    """
    wh = np.stack([np.asarray(widths, np.float64), np.asarray(heights, np.float64)], axis=1)
    sizes, counts = np.unique(wh, axis=0, return_counts=True)
    about = len(sizes) > SIZE_POINTS_MAX
    if about:
        cells, counts = np.unique(np.round(np.log2(np.maximum(wh, 1)) * 32), axis=0, return_counts=True)
        sizes = np.round(2.0 ** (cells / 32))
    trace = go.Scattergl if len(sizes) > 1000 else go.Scatter
    marker = dict(size=5 + 13 * np.sqrt(counts / max(counts.max(), 1)), opacity=0.6, color=BASE_COLOR)
    fig = go.Figure(trace(x=sizes[:, 0], y=sizes[:, 1], mode="markers", marker=marker, customdata=counts,
                          hovertemplate=("about " if about else "") + "%{x} x %{y} px: %{customdata:,} image(s)"
                                        "<extra></extra>"))
    fig.update_xaxes(title="width (px)", type="log")
    fig.update_yaxes(title="height (px)", type="log")
    return _layout(fig, title=title, height=320)


def histogram(values: np.ndarray, *, name: str, nbins: int = 40, title: str | None = None) -> go.Figure:
    """Histogram of ``values`` (non-finite ones left out), binned here (``numpy.histogram``): the
    figure carries ``nbins`` bars, not every value, whatever the dataset's size."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    counts, edges = np.histogram(v, bins=nbins) if len(v) else (np.zeros(0, int), np.zeros(1))
    fig = go.Figure(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=counts, width=np.diff(edges), marker_color=BASE_COLOR,
                           name=name, customdata=np.stack([edges[:-1], edges[1:]], axis=1) if len(counts) else None,
                           hovertemplate="%{customdata[0]:.3g} – %{customdata[1]:.3g}: %{y:,}<extra></extra>"))
    fig.update_xaxes(title=name)
    fig.update_yaxes(title="samples")
    fig.update_layout(bargap=0)
    return _layout(fig, title=title, height=280)


# ---------------------------------------------------------------------------
# Evaluation figures (confusion matrix, PR / ROC, thresholds, calibration, run deltas).
# Curves are duck-typed ``core.metrics.Curve`` objects: ``precision``, ``recall``, ``fpr``,
# ``tpr``, ``pr_thresholds``, ``average_precision``, ``roc_auc``.
# ---------------------------------------------------------------------------

GOOD_COLOR = "#10B981"
BAD_COLOR = "#EF4444"
NEUTRAL_COLOR = "#94A3B8"


def confusion_matrix(matrix: np.ndarray, classes, *, counts: np.ndarray | None = None, normalized: bool = False,
                     selected: tuple[int, int] | None = None, title: str | None = None) -> go.Figure:
    """Heatmap of a K x K confusion matrix: rows true class, columns predicted class.

    Parameters
    ----------
    matrix : ndarray of shape (K, K)
        What is coloured: counts, or row-normalised fractions with ``normalized=True``.
    classes : sequence of str, length K
    counts : ndarray of shape (K, K), optional
        Raw counts shown in the hover text (default: ``matrix``).
    selected : (true_index, pred_index), optional
        A cell outlined in the figure.

    Each cell is also a (transparent) scatter point whose ``customdata`` is
    ``[true_index, pred_index]``, so a click selects it (``st.plotly_chart(on_select=...)``).
    """
    z = np.asarray(matrix, dtype=float)
    names = [str(c) for c in classes]
    k = len(names)
    if z.shape != (k, k):
        raise ValueError(f"matrix must have shape ({k}, {k}) to match classes; received {z.shape}")
    n = np.asarray(counts if counts is not None else matrix)
    rows = n.sum(axis=1, keepdims=True).astype(float)
    share = np.divide(n, rows, out=np.zeros(n.shape, dtype=float), where=rows > 0)
    text = [[(f"{z[i, j]:.2f}" if normalized else f"{int(z[i, j])}") if z[i, j] else "" for j in range(k)]
            for i in range(k)]
    hover = [[f"true {names[i]} → predicted {names[j]}<br>{int(n[i, j])} samples ({share[i, j]:.1%} of the row)"
              for j in range(k)] for i in range(k)]
    fig = go.Figure(go.Heatmap(
        z=z, x=names, y=names, colorscale="Blues", zmin=0, zmax=1 if normalized else None, text=text,
        texttemplate="%{text}", hovertext=hover, hoverinfo="text", colorbar=dict(title="row share" if normalized
                                                                              else "samples", thickness=12)))
    ii, jj = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    fig.add_trace(go.Scatter(
        x=[names[j] for j in jj.ravel()], y=[names[i] for i in ii.ravel()], mode="markers",
        marker=dict(symbol="square", size=max(8, min(40, 420 // max(k, 1))), opacity=0.01, color="#000"),
        customdata=np.c_[ii.ravel(), jj.ravel()], hovertext=[hover[i][j] for i, j in zip(ii.ravel(), jj.ravel())],
        hoverinfo="text", showlegend=False, name="cells"))
    if selected is not None:
        i, j = selected
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, line=dict(color=BAD_COLOR,
                                                                                               width=3))
    fig.update_xaxes(title="predicted", type="category", tickangle=-40, side="bottom")
    fig.update_yaxes(title="true", type="category", autorange="reversed")
    side = 160 + 34 * k
    return _layout(fig, title=title, height=max(320, min(side, 900)))


def _legend_below(fig: go.Figure, n_entries: int) -> None:
    """Many legend entries squeeze a plot placed beside another: move them under it."""
    if n_entries > 3:
        fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.18, xanchor="left", x=0))


def _curve_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def pr_curves(curves, *, points=None, target_precision: float | None = None, title: str | None = None
              ) -> go.Figure:
    """Precision-recall curves, one line per name (legend shows AP).

    Parameters
    ----------
    curves : mapping {name: Curve}
        Names without positives (empty arrays) are listed in the legend as "n/a".
    points : mapping {name: (recall, precision)}, optional
        Operating points (e.g. the chosen thresholds) drawn as markers.
    target_precision : float, optional
        A dashed horizontal line at the target.
    """
    fig = go.Figure()
    for i, (name, c) in enumerate(curves.items()):
        ap = c.average_precision
        label = f"{name} (AP {ap:.3f})" if ap == ap else f"{name} (AP n/a)"
        fig.add_trace(go.Scatter(x=c.recall, y=c.precision, mode="lines", name=label,
                                 line=dict(color=_curve_color(i), width=2, shape="hv"),
                                 hovertemplate=f"{name}<br>recall %{{x:.3f}}<br>precision %{{y:.3f}}<extra></extra>"))
    for i, (name, (r, p)) in enumerate((points or {}).items()):
        color = _curve_color(list(curves).index(name)) if name in curves else BAD_COLOR
        fig.add_trace(go.Scatter(x=[r], y=[p], mode="markers", showlegend=False,
                                 marker=dict(size=11, color=color, line=dict(color="#111827", width=1.5)),
                                 hovertemplate=f"{name}: chosen threshold<br>recall %{{x:.3f}}<br>"
                                               f"precision %{{y:.3f}}<extra></extra>"))
    if target_precision is not None:
        fig.add_hline(y=float(target_precision), line=dict(color=NEUTRAL_COLOR, dash="dash"),
                      annotation_text=f"target precision {target_precision:.2f}", annotation_position="bottom left")
    fig.update_xaxes(title="recall", range=[0, 1.02])
    fig.update_yaxes(title="precision", range=[0, 1.04])
    _legend_below(fig, len(curves))
    return _layout(fig, title=title, height=420 + (22 * ((len(curves) + 2) // 3) if len(curves) > 3 else 0))


def roc_curves(curves, *, title: str | None = None) -> go.Figure:
    """ROC curves, one line per name (legend shows AUC), with the chance diagonal."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color=NEUTRAL_COLOR, dash="dot"),
                             name="chance", hoverinfo="skip"))
    for i, (name, c) in enumerate(curves.items()):
        auc = c.roc_auc
        label = f"{name} (AUC {auc:.3f})" if auc == auc else f"{name} (AUC n/a)"
        fig.add_trace(go.Scatter(x=c.fpr, y=c.tpr, mode="lines", name=label, line=dict(color=_curve_color(i), width=2),
                                 hovertemplate=f"{name}<br>false positive rate %{{x:.3f}}<br>"
                                               f"true positive rate %{{y:.3f}}<extra></extra>"))
    fig.update_xaxes(title="false positive rate", range=[0, 1])
    fig.update_yaxes(title="true positive rate", range=[0, 1.02])
    _legend_below(fig, len(curves) + 1)
    return _layout(fig, title=title, height=420 + (22 * ((len(curves) + 3) // 3) if len(curves) > 2 else 0))


def threshold_sweep(curve, *, target_precision: float, threshold: float | None = None,
                    title: str | None = None) -> go.Figure:
    """Precision and recall as the decision threshold moves, with the target and the chosen threshold.

    Parameters
    ----------
    curve : Curve
        Uses ``pr_thresholds`` (T,) and the first T values of ``precision`` / ``recall``.
    threshold : float, optional
        The chosen threshold (a vertical line); None when the target is unreachable.
    """
    t = np.asarray(curve.pr_thresholds, dtype=float)
    fig = go.Figure()
    if t.size:
        fig.add_trace(go.Scatter(x=t, y=np.asarray(curve.precision)[: t.size], mode="lines", name="precision",
                                 line=dict(color=BASE_COLOR, width=2, shape="hv"),
                                 hovertemplate="threshold %{x:.3f}<br>precision %{y:.3f}<extra></extra>"))
        fig.add_trace(go.Scatter(x=t, y=np.asarray(curve.recall)[: t.size], mode="lines", name="recall",
                                 line=dict(color=GOOD_COLOR, width=2, shape="hv"),
                                 hovertemplate="threshold %{x:.3f}<br>recall %{y:.3f}<extra></extra>"))
    fig.add_hline(y=float(target_precision), line=dict(color=NEUTRAL_COLOR, dash="dash"),
                  annotation_text=f"target precision {target_precision:.2f}", annotation_position="top left")
    if threshold is not None and threshold == threshold:
        fig.add_vline(x=float(threshold), line=dict(color=BAD_COLOR, width=2),
                      annotation_text=f"threshold {threshold:.3f}", annotation_position="bottom right")
    fig.update_xaxes(title="threshold (score >= threshold → positive)", range=[0, 1])
    fig.update_yaxes(title="precision / recall", range=[0, 1.04])
    return _layout(fig, title=title, height=360)


def reliability_diagram(calibration, *, after=None, after_name: str = "after temperature scaling",
                        title: str | None = None) -> go.Figure:
    """Reliability diagram: observed accuracy against mean confidence per bin, with the diagonal.

    Parameters
    ----------
    calibration : core.metrics.Calibration
        ``bin_edges``, ``confidence``, ``accuracy``, ``count``, ``ece``; its bin counts are
        drawn as faint bars on a second axis.
    after : Calibration, optional
        A second diagram (e.g. after temperature scaling) overlaid.
    """
    fig = go.Figure()
    edges = np.asarray(calibration.bin_edges, dtype=float)
    mids = (edges[:-1] + edges[1:]) / 2
    fig.add_trace(go.Bar(x=mids, y=np.asarray(calibration.count), width=np.diff(edges) * 0.9, name="samples per bin",
                         marker_color="#E5E7EB", yaxis="y2", hovertemplate="%{y} samples<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(color=NEUTRAL_COLOR, dash="dot"),
                             name="perfectly calibrated", hoverinfo="skip"))
    for cal, name, color in ((calibration, "model", BASE_COLOR), (after, after_name, GOOD_COLOR)):
        if cal is None:
            continue
        ok = np.asarray(cal.count) > 0
        fig.add_trace(go.Scatter(
            x=np.asarray(cal.confidence)[ok], y=np.asarray(cal.accuracy)[ok], mode="lines+markers",
            name=f"{name} (ECE {cal.ece:.3f})", line=dict(color=color, width=2), marker=dict(size=7),
            customdata=np.asarray(cal.count)[ok],
            hovertemplate="confidence %{x:.3f}<br>accuracy %{y:.3f}<br>%{customdata} samples<extra></extra>"))
    fig.update_layout(yaxis=dict(title="observed accuracy", range=[0, 1.02]),
                      yaxis2=dict(title="samples", overlaying="y", side="right", showgrid=False, rangemode="tozero"),
                      legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title="confidence (mean predicted probability)", range=[0, 1])
    return _layout(fig, title=title, height=420)


def metric_deltas(deltas: pd.Series, *, name: str = "Δ F1", title: str | None = None) -> go.Figure:
    """Horizontal bars of per-class changes (green up, red down), largest change on top.

    Parameters
    ----------
    deltas : Series indexed by class name (NaN: class absent from a run, drawn as 0 in grey)
    """
    d = pd.to_numeric(deltas, errors="coerce")
    d = d.reindex(d.abs().sort_values(ascending=True, na_position="first").index)
    vals = d.fillna(0.0).to_numpy()
    colors = [NEUTRAL_COLOR if np.isnan(v) else (GOOD_COLOR if v > 0 else BAD_COLOR if v < 0 else NEUTRAL_COLOR)
              for v in d.to_numpy()]
    fig = go.Figure(go.Bar(x=vals, y=[str(i) for i in d.index], orientation="h", marker_color=colors,
                           text=[("n/a" if np.isnan(v) else f"{v:+.3f}") for v in d.to_numpy()],
                           textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:+.3f}<extra></extra>"))
    fig.add_vline(x=0, line=dict(color="#111827", width=1))
    reach = float(np.nanmax(np.abs(vals))) if len(vals) else 0.0
    reach = reach * 1.45 if reach > 0 else 0.05  # room for the value labels on both sides
    fig.update_xaxes(title=name, zeroline=False, range=[-reach, reach])
    fig.update_yaxes(type="category")
    return _layout(fig, title=title, height=max(240, 26 * len(d) + 80))


def prediction_bars(probs: pd.Series, *, thresholds: dict | None = None, chosen: set | None = None,
                    title: str | None = None) -> go.Figure:
    """Horizontal bars of one image's top class probabilities, largest on top (core.predict).

    Parameters
    ----------
    probs : Series of float in [0, 1], index = class (or label) name, e.g. the top k
    thresholds : {name: float}, optional
        Saved decision thresholds, drawn as a black tick on the bar of that class.
    chosen : set of names, optional
        The decision (highlighted); the other bars are grey.
    """
    p = pd.to_numeric(probs, errors="coerce").fillna(0.0).iloc[::-1]
    names = [str(i) for i in p.index]
    chosen = {str(c) for c in (chosen or ())}
    colors = [BASE_COLOR if n in chosen else "#94A3B8" for n in names]
    fig = go.Figure(go.Bar(x=p.to_numpy(), y=names, orientation="h", marker_color=colors,
                           text=[f"{v:.1%}" for v in p.to_numpy()], textposition="outside", cliponaxis=False,
                           hovertemplate="%{y}: %{x:.4f}<extra></extra>", name="probability"))
    th = {str(k): float(v) for k, v in (thresholds or {}).items() if str(k) in names}
    if th:
        fig.add_trace(go.Scatter(x=list(th.values()), y=list(th.keys()), mode="markers", name="threshold",
                                 marker=dict(symbol="line-ns", size=22, line=dict(width=3, color="#111827")),
                                 hovertemplate="threshold for %{y}: %{x:.3f}<extra></extra>"))
    fig.update_xaxes(title="probability", range=[0, 1.15], tickformat=".0%")
    fig.update_yaxes(type="category")
    fig.update_layout(showlegend=bool(th), legend=dict(orientation="h", y=-0.3))
    return _layout(fig, title=title, height=max(180, 34 * len(p) + 80))


def stacked_counts(table: pd.DataFrame, *, x_title: str = "samples", title: str | None = None) -> go.Figure:
    """Horizontal stacked bars: one bar per row of ``table`` (index), one segment per column.

    E.g. the audit's issues per class (rows) and detector (columns), largest total on top.
    """
    table = table.loc[table.sum(axis=1).sort_values(ascending=True).index]
    fig = go.Figure()
    for i, col in enumerate(table.columns):
        fig.add_bar(x=table[col].to_numpy(), y=[str(r) for r in table.index], orientation="h", name=str(col),
                    marker_color=PALETTE[i % len(PALETTE)],
                    hovertemplate="%{y} · " + str(col).replace("%", "%%") + ": %{x}<extra></extra>")
    fig.update_layout(barmode="stack", legend=dict(orientation="h", yanchor="top", y=-0.25))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(type="category")
    return _layout(fig, title=title, height=max(260, 26 * len(table) + 100))
