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


def image_size_scatter(widths: np.ndarray, heights: np.ndarray, *, color: np.ndarray | None = None,
                       title: str | None = None) -> go.Figure:
    """Width vs height of the original images (log axes), WebGL above 1,000 points."""
    widths = np.asarray(widths)
    heights = np.asarray(heights)
    trace = go.Scattergl if len(widths) > 1000 else go.Scatter
    fig = go.Figure(trace(x=widths, y=heights, mode="markers", marker=dict(size=5, opacity=0.5, color=BASE_COLOR),
                          hovertemplate="%{x} x %{y} px<extra></extra>"))
    fig.update_xaxes(title="width (px)", type="log")
    fig.update_yaxes(title="height (px)", type="log")
    return _layout(fig, title=title, height=320)


def histogram(values: np.ndarray, *, name: str, nbins: int = 40, title: str | None = None) -> go.Figure:
    fig = go.Figure(go.Histogram(x=np.asarray(values), nbinsx=nbins, marker_color=BASE_COLOR, name=name))
    fig.update_xaxes(title=name)
    fig.update_yaxes(title="samples")
    return _layout(fig, title=title, height=280)
