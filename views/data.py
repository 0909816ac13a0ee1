"""Data: choose or add a dataset, read its load report, explore labels, images and samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from core import charts, datasets
from core.datasets import DatasetError
from core.workspace import WorkspaceError, confine
from ui import state
from ui.state import esc

GRID_COLUMNS = 8
GRID_PAGE = 32

ws = state.workspace()
st.title("Data")


# ---------------------------------------------------------------------------
# Add a dataset: server folder or uploaded zip -> detect -> confirm mapping -> load
# ---------------------------------------------------------------------------

def _detect(path: str, labels: str | None) -> None:
    try:
        folder = confine(path, workspace=ws)  # a shared app must not read /etc: allowed roots only
        if labels:
            table = Path(labels).expanduser()
            labels = str(confine(table if table.is_absolute() else folder / table, workspace=ws))
        det = datasets.detect(folder, labels or None)
    except (DatasetError, WorkspaceError, ValueError, OSError) as exc:
        st.session_state["data_detection"] = None
        st.session_state["data_detect_error"] = str(exc)
        return
    st.session_state["data_detection"] = det
    st.session_state["data_detect_error"] = None


def _mapping_form(det: datasets.Detection) -> None:
    """Show what was detected and let the user correct it before loading."""
    st.markdown(f"**Detected:** {esc(det.kind)} · task **{esc(det.task or 'unknown')}** · {det.n_rows:,} rows")
    for note in det.notes:
        st.caption(esc(note))
    if not det.preview.empty:
        st.dataframe(det.preview, hide_index=True, width="stretch", height=200)
    columns = list(det.columns)
    with st.form("data_mapping"):
        c1, c2 = st.columns(2)
        task = c1.selectbox("Task", datasets.TASKS,
                            index=datasets.TASKS.index(det.task) if det.task in datasets.TASKS else 0,
                            key="map_task")
        name = c2.text_input("Name", value=Path(det.root).name, key="map_name")
        label_columns: list[str] = list(det.label_columns)
        image_column = det.image_column
        attribute_columns: list[str] = list(det.attribute_columns)
        box_columns: list[str] = list(det.box_columns)
        if det.kind == "table":
            image_column = c1.selectbox("Image path column", columns,
                                        index=columns.index(det.image_column) if det.image_column in columns else 0,
                                        key="map_image_column")
            label_columns = c2.multiselect("Label columns (hierarchical: coarse → fine)", columns,
                                           default=[c for c in det.label_columns if c in columns],
                                           key="map_label_columns")
            attribute_columns = c1.multiselect("Extra multi-hot attribute columns", columns,
                                               default=[c for c in det.attribute_columns if c in columns],
                                               key="map_attribute_columns")
            box_columns = c2.multiselect("Box columns (x,y,w,h or x1,y1,x2,y2)", columns,
                                         default=[c for c in det.box_columns if c in columns],
                                         key="map_box_columns")
        positive = c1.text_input("Positive class (binary)", value=det.positive_class or "", key="map_positive")
        unseen = c2.text_input("Unseen folder (optional, out-of-distribution images)", key="map_unseen")
        submitted = st.form_submit_button("Load dataset", type="primary")
    if submitted:
        if unseen.strip():
            try:
                unseen = str(confine(unseen, workspace=ws))
            except WorkspaceError as exc:
                st.error(esc(exc))
                return
        overrides = dict(task=task, name=name or None, positive_class=positive or None, unseen=unseen or None)
        if det.kind == "table":
            overrides.update(image_column=image_column, label_columns=tuple(label_columns),
                             attribute_columns=tuple(attribute_columns), box_columns=tuple(box_columns),
                             tags_column=det.tags_column if det.tags_column not in label_columns else None)
        _load(det.to_spec(**overrides))


def _load(spec: datasets.DatasetSpec) -> None:
    bar = st.progress(0.0, text="Decoding images…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / max(total, 1), text=f"Decoding images… {done:,} / {total:,}")

    try:
        ds = datasets.load_dataset(spec, workspace=ws, progress=progress)
    except (DatasetError, ValueError, OSError) as exc:
        bar.empty()
        st.error(f"Nothing was loaded: {esc(exc)}")
        return
    bar.empty()
    state.select_dataset(ds.dataset_id)
    st.session_state["data_detection"] = None
    st.session_state["data_loaded_msg"] = f"Loaded {ds.name}: {ds.report.n_valid:,} samples."
    st.rerun()


def add_dataset_panel() -> None:
    with st.expander("Add a dataset", expanded=not ws.list_datasets()):
        tab_folder, tab_zip = st.tabs(["Folder on the server", "Upload a zip"])
        with tab_folder:
            c1, c2 = st.columns(2)
            path = c1.text_input("Dataset folder", placeholder="/data/my_images", key="add_path")
            labels = c2.text_input("Labels table (optional: CSV, TSV or Parquet)", key="add_labels",
                                   placeholder="/data/labels.csv")
            if st.button("Detect layout", key="add_detect", disabled=not path):
                _detect(path.strip(), labels.strip() or None)
        with tab_zip:
            up = st.file_uploader("A zip of class folders, or of images + a labels table", type=["zip"],
                                  key="add_zip")
            if up is not None and st.button("Unpack and detect", key="add_unzip"):
                dest = ws.root / "uploads" / Path(up.name).stem
                try:
                    folder = datasets.import_zip(up.getvalue(), dest)
                except (DatasetError, ValueError, OSError) as exc:
                    st.error(f"{esc(up.name)} was not imported: {esc(exc)}")
                else:
                    _detect(str(folder), None)
        if st.session_state.get("data_detect_error"):
            st.error(esc(st.session_state["data_detect_error"]))
        det = st.session_state.get("data_detection")
        if det is not None:
            _mapping_form(det)


# ---------------------------------------------------------------------------
# The selected dataset
# ---------------------------------------------------------------------------

def header(ds: datasets.Dataset, summary: dict) -> None:
    st.subheader(esc(ds.name))
    st.caption(f"`{ds.root}` · id `{ds.dataset_id}`")
    rep = ds.report
    c = st.columns([1.35, 1.1, 0.75, 1.6, 0.9])
    c[0].metric("Task", ds.task)
    c[1].metric("Samples loaded", f"{rep.n_valid:,}")
    c[2].metric("Invalid", f"{rep.n_invalid:,}")
    split = summary["split_counts"]
    c[3].metric("Train · val · test", f"{split['train']:,}·{split['val']:,}·{split['test']:,}",
                help=f"train {split['train']:,}, validation {split['val']:,}, test {split['test']:,} samples")
    c[4].metric("Unseen images", f"{summary.get('n_unseen', 0):,}")


def report_panel(ds: datasets.Dataset) -> None:
    rep = ds.report
    label = f"Load report: {rep.n_invalid:,} invalid, {len(rep.warnings)} warning(s)"
    with st.expander(label, expanded=rep.n_invalid > 0 and rep.n_valid < 50):
        for line in rep.summary_lines():
            st.text(line)


def _class_counts(ds: datasets.Dataset, column: str) -> pd.Series:
    return ds.samples[column].value_counts()


def labels_tab(ds: datasets.Dataset, summary: dict) -> None:
    s, sc = ds.samples, ds.schema
    if sc.task in ("multiclass", "binary", "hierarchical"):
        column = sc.label_columns[-1]
        counts = _class_counts(ds, column)
        c1, c2, c3 = st.columns(3)
        c1.metric("Classes" if sc.task != "hierarchical" else f"Classes ({column})", len(counts))
        c2.metric("Imbalance ratio (largest / smallest)", f"{counts.max() / max(counts.min(), 1):.1f}")
        c3.metric("Smallest class", f"{counts.idxmin()} ({counts.min()})")
        st.plotly_chart(charts.label_distribution(counts, rare_below=datasets.RARE_CLASS_MIN,
                                                  title=f"Samples per class · {column}"),
                        key="chart_label_distribution")
        if sc.task == "hierarchical":
            st.plotly_chart(charts.hierarchy_sunburst(s, list(sc.label_columns), title="Hierarchy"),
                            key="chart_sunburst")
        st.plotly_chart(charts.split_distribution(s, label_column=column, title="Per split"),
                        key="chart_split")
    else:
        Y = s[list(sc.label_columns)]
        counts = pd.Series(summary["class_counts"])
        c1, c2, c3 = st.columns(3)
        c1.metric("Labels", len(counts))
        c2.metric("Samples with more than one label", f"{int((Y.fillna(0).sum(axis=1) > 1).sum()):,}")
        c3.metric("Missing entries", f"{int(Y.isna().sum().sum()):,}")
        st.plotly_chart(charts.label_distribution(counts, title="Samples carrying each label"),
                        key="chart_label_distribution")
        a, b = st.columns(2)
        a.plotly_chart(charts.cooccurrence_heatmap(Y, title="Co-occurrence"), key="chart_cooc")
        b.plotly_chart(charts.missing_matrix(Y, title="Missing entries"), key="chart_missing")
    if sc.attribute_columns:
        A = s[list(sc.attribute_columns)]
        st.markdown("**Attributes** (multi-hot; missing is not 0)")
        st.dataframe(pd.DataFrame({"positive": (A == 1.0).sum(), "negative": (A == 0.0).sum(),
                                   "missing": A.isna().sum()}), width="content")
        if A.isna().any().any():
            st.plotly_chart(charts.missing_matrix(A, title="Missing attribute entries"), key="chart_attr_missing")
    missing = {k: v for k, v in summary.get("missing_labels", {}).items() if v}
    if missing:
        st.caption("Missing labels: " + ", ".join(f"{esc(k)}: {v:,}" for k, v in missing.items()))


def images_tab(ds: datasets.Dataset) -> None:
    s = ds.samples
    w, h = s["width"].to_numpy(), s["height"].to_numpy()
    aspect = w / np.maximum(h, 1)
    c = st.columns(4)
    c[0].metric("Median size", f"{int(np.median(w))} × {int(np.median(h))} px")
    c[1].metric("Smallest", f"{int(w.min())} × {int(h.min())} px")
    c[2].metric("Largest", f"{int(w.max())} × {int(h.max())} px")
    c[3].metric("Aspect ratio range", f"{aspect.min():.2f} – {aspect.max():.2f}")
    a, b = st.columns(2)
    a.plotly_chart(charts.image_size_scatter(w, h, title="Image sizes"), key="chart_sizes")
    b.plotly_chart(charts.histogram(aspect, name="aspect ratio (width / height)", title="Aspect ratios"),
                   key="chart_aspect")
    st.markdown("**Colour modes of the original files**")
    st.dataframe(s["mode"].value_counts().rename("samples"), width="content")


def samples_tab(ds: datasets.Dataset) -> None:
    s, sc = ds.samples, ds.schema
    if sc.task == "multilabel":
        options = ["(all)"] + list(sc.label_columns)
        pick = st.selectbox("Label", options, key="grid_class")
        rows = s if pick == "(all)" else s[s[pick] == 1.0]
    else:
        column = sc.label_columns[-1]
        options = ["(all)"] + list(sc.classes[column])
        pick = st.selectbox("Class", options, key="grid_class")
        rows = s if pick == "(all)" else s[s[column] == pick]
    split = st.segmented_control("Split", ["all", "train", "val", "test"], default="all", key="grid_split")
    if split and split != "all":
        rows = rows[rows["split"] == split]
    n_pages = max(1, -(-len(rows) // GRID_PAGE))
    page = st.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1, key="grid_page")
    chunk = rows.iloc[(page - 1) * GRID_PAGE: page * GRID_PAGE]
    if chunk.empty:
        st.info("No samples match.")
        return
    images = state.previews(ws, ds.dataset_id)
    positions = s.index.get_indexer(chunk.index)
    cols = st.columns(GRID_COLUMNS)
    for i, (pos, (_, row)) in enumerate(zip(positions, chunk.iterrows())):
        with cols[i % GRID_COLUMNS]:
            st.image(np.asarray(images[pos]), width="stretch")
            st.caption(_caption(row, sc))


def _caption(row: pd.Series, sc: datasets.LabelSchema) -> str:
    if sc.task == "multilabel":
        tags = [c for c in sc.label_columns if row[c] == 1.0]
        label = ", ".join(tags) or "(none)"
    else:
        label = " › ".join(str(row[c]) for c in sc.label_columns)
    return esc(f"{label} · {Path(row['rel_path']).name}")


# ---------------------------------------------------------------------------

if msg := st.session_state.pop("data_loaded_msg", None):
    st.success(msg)
add_dataset_panel()
ds = state.current_dataset(ws)
if ds is None:
    st.info("Add a dataset above, or pick one in the sidebar.")
    st.stop()
summary = datasets.dataset_summary(ds)
header(ds, summary)
report_panel(ds)
tab_labels, tab_images, tab_samples = st.tabs(["Labels", "Images", "Samples"])
with tab_labels:
    labels_tab(ds, summary)
with tab_images:
    images_tab(ds)
with tab_samples:
    samples_tab(ds)
