"""Predict: drop images (or a zip) or point at a server folder; get decisions under the run's thresholds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import charts, embeddings, predict, runs
from core import workspace as wsmod
from ui import state
from ui.state import esc

CARDS = 12            # images shown one by one (the rest are in the table)
THUMB = 160           # thumbnail width, px
UPLOAD_TYPES = sorted({e.lstrip(".") for e in predict.IMAGE_EXTENSIONS} | {"zip"})

ws = state.workspace()
st.title("Predict")
st.caption("Drop new images (or a zip of them) to see what the model decides under the run's saved thresholds, "
           "and whether an image looks unlike anything it was trained on. Batch a server folder for a CSV.")



@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def _predictor(run_dir: str, model_mtime: float, thresholds_mtime: float, embeddings_mtime: float
               ) -> predict.Predictor:
    """One loaded model per run checkpoint (re-loaded when the model, thresholds or embeddings change).

    Shared by every session; :class:`core.predict.Predictor` serialises its forward passes with a lock.
    """
    return predict.Predictor.load(run_dir)


run_dir = state.pick_run(ws)
if run_dir is None:
    st.info("No finished run yet. Train a model on the **Train** page (or `python -m core train ...`), "
            "then come back here to predict new images.")
    st.stop()

rd = runs.RunDir(run_dir)
emb_mtime = state.mtime(embeddings.embeddings_path(rd.path))  # computing embeddings enables OOD scores: reload
try:
    predictor = _predictor(str(rd.path), state.mtime(rd.model), state.mtime(rd.thresholds), emb_mtime)
except predict.PredictError as exc:
    st.error(f"This run cannot predict: {esc(exc)}")
    st.stop()

n_th = len(predictor.class_thresholds)
c1, c2, c3, c4 = st.columns([3, 2, 3, 3])
c1.metric("Task", predictor.task)
c2.metric("Outputs", len(predictor.outputs))
c3.metric("Saved thresholds", f"{n_th} / {len(predictor.outputs)}")
c4.metric("OOD threshold", "—" if predictor.ood_threshold is None else f"{predictor.ood_threshold:.3g}")
if predictor.task == "hierarchical":
    st.caption("Levels: " + " > ".join(esc(lv) for lv in predictor.labels["levels"]))
if not n_th:
    st.caption("No per-class thresholds saved for this run: decisions are the most probable class "
               "(0.5 for binary / multi-label). Save thresholds on the **Evaluate** page.")
if predictor.ood_note:
    st.caption(esc(predictor.ood_note[:1].upper() + predictor.ood_note[1:]))

k_max = min(10, len(predictor.outputs))
top_k = st.slider("Classes shown per image (top-k)", 1, k_max, min(5, k_max), key="predict_top_k") if k_max > 1 \
    else 1


# ---------------------------------------------------------------------------
# rendering (one function for uploads and batches)
# ---------------------------------------------------------------------------

def _yes(v: object) -> bool:
    """True for a True cell; False for False or missing (pd.NA)."""
    return v is not pd.NA and v is not None and not (isinstance(v, float) and pd.isna(v)) and bool(v)


def _decision_lines(row: pd.Series) -> list[str]:
    lines = []
    task = predictor.task
    if task == "multilabel":
        tags = [t for t in str(row["prediction"]).split(predict.TAG_SEPARATOR) if t]
        lines.append("**Tags:** " + (", ".join(f"`{esc(t)}`" for t in tags) if tags else "none above threshold"))
    elif task == "hierarchical":
        lines.append(f"**Path:** {esc(row['prediction'])}")
    else:
        lines.append(f"**Decision:** {esc(row['prediction'])}")
    conf = f"{row['confidence']:.1%}"
    if not pd.isna(row.get("threshold")):
        conf += f" (threshold {row['threshold']:.3f})"
    lines.append(f"Confidence: {conf}")
    if _yes(row.get("uncertain")):
        lines.append(":orange[below the saved threshold for this class: treat as uncertain]")
    if pd.isna(row["ood_score"]):
        lines.append("Out-of-distribution: n/a")
    elif _yes(row["ood_flag"]):
        lines.append(f":red[**Unusual image** — OOD score {row['ood_score']:.3g} is above the threshold "
                     f"{predictor.ood_threshold:.3g}: unlike the training images]")
    elif predictor.ood_threshold is not None:
        lines.append(f"OOD score {row['ood_score']:.3g} (threshold {predictor.ood_threshold:.3g}): looks familiar")
    else:
        lines.append(f"OOD score {row['ood_score']:.3g} (no threshold saved)")
    return lines


def _chosen(row: pd.Series) -> set[str]:
    if predictor.task == "multilabel":
        return {t for t in str(row["prediction"]).split(predict.TAG_SEPARATOR) if t}
    if predictor.task == "hierarchical":
        return {str(row["prediction"]).split(predict.PATH_SEPARATOR)[-1]}
    return {str(row["prediction"])}


def _cards(df: pd.DataFrame, images: dict[int, object], key: str) -> None:
    """One card per image: thumbnail, top-k bar chart with thresholds, decision, OOD."""
    ok = df.index[df["error"] == ""]
    for i in list(ok)[:CARDS]:
        row = df.loc[i]
        with st.container(border=True):
            left, mid, right = st.columns([1, 2, 2])
            img = images.get(i)
            if img is not None:
                try:
                    left.image(img, width=THUMB)
                except Exception:  # noqa: BLE001 - a thumbnail must never break the page
                    left.caption("(no preview)")
            left.caption(esc(row["path"]))
            probs = predict.top_probabilities(row, predictor.outputs, top_k=top_k)
            fig = charts.prediction_bars(probs, thresholds=predictor.class_thresholds, chosen=_chosen(row))
            mid.plotly_chart(fig, width="stretch", key=f"{key}_chart_{i}")
            right.markdown("  \n".join(_decision_lines(row)))
    if len(ok) > CARDS:
        st.caption(f"Showing the first {CARDS} of {len(ok):,} images; all are in the table below.")


def _summary(df: pd.DataFrame, key: str) -> None:
    n_err = int((df["error"] != "").sum())
    ok = df[df["error"] == ""]
    a, b, c, d = st.columns(4)
    a.metric("Images predicted", f"{len(ok):,}")
    b.metric("Unreadable", f"{n_err:,}")
    c.metric("Uncertain (below threshold)", f"{int(ok['uncertain'].fillna(False).astype(bool).sum()):,}")
    d.metric("Flagged unusual (OOD)", f"{int(ok['ood_flag'].fillna(False).astype(bool).sum()):,}")
    for msg in df.loc[df["error"] != "", "error"].head(10):
        st.warning(esc(msg))
    if n_err > 10:
        st.caption(f"… and {n_err - 10:,} more unreadable files (see the `error` column).")


def _table(df: pd.DataFrame, key: str) -> None:
    shown = ["path", "prediction", "confidence", "uncertain", "ood_score", "ood_flag", "error"]
    shown += [c for c in df.columns if c.startswith("p_")]
    st.dataframe(df[shown], hide_index=True, width="stretch", key=f"{key}_table",
                 column_config={"confidence": st.column_config.ProgressColumn("confidence", min_value=0.0,
                                                                              max_value=1.0, format="%.3f")})
    st.download_button("Download CSV", df.to_csv(index=False).encode("utf-8"), file_name=f"predictions-"
                       f"{predictor.run_id}.csv", mime="text/csv", key=f"{key}_csv", icon=":material/download:")


def _results(df: pd.DataFrame, images: dict[int, object], key: str) -> None:
    _summary(df, key)
    _cards(df, images, key)
    if len(df) > 1:
        _table(df, key)
    else:
        st.download_button("Download CSV", df.to_csv(index=False).encode("utf-8"),
                           file_name=f"prediction-{predictor.run_id}.csv", mime="text/csv", key=f"{key}_csv")


run_key = (str(rd.path), state.mtime(rd.model), state.mtime(rd.thresholds), emb_mtime)
tab_up, tab_batch = st.tabs(["Upload images", "Batch: server folder"])

with tab_up:
    files = st.file_uploader("Images, or a zip of images", type=UPLOAD_TYPES, accept_multiple_files=True,
                             key="predict_upload",
                             help="Each image is decoded safely; a zip is checked before anything is extracted.")
    if files:
        sig = (run_key, top_k, tuple((f.name, f.size, getattr(f, "file_id", "")) for f in files))
        cached = st.session_state.get("predict_upload_result")
        if cached is None or cached[0] != sig:
            bar = st.progress(0.0, text="Predicting…")

            def _progress(done: int, total: int) -> None:
                bar.progress(min(1.0, done / max(total, 1)), text=f"Predicting… {done:,}/{total:,}")

            df = predictor.predict_bytes([(f.name, f.getvalue()) for f in files], top_k=top_k, progress=_progress)
            bar.empty()
            st.session_state["predict_upload_result"] = (sig, df)
        df = st.session_state["predict_upload_result"][1]
        by_name = {f.name: f for f in files}
        images = {i: by_name[p].getvalue() for i, p in df["path"].items() if p in by_name}
        _results(df, images, "predict_up")
    else:
        st.info("Drop one or more images (JPEG, PNG, …) or a zip of images above.")

with tab_batch:
    folder = st.text_input("Server folder (searched recursively for images)", key="predict_folder",
                           placeholder="/data/new_photos")
    go = st.button("Predict folder", key="predict_folder_go", type="primary")
    if go:
        try:
            root = wsmod.confine(folder, workspace=ws)
        except wsmod.WorkspaceError as exc:
            st.error(esc(exc))
            root = None
        if root is not None and not root.is_dir():
            st.error(f"{esc(folder)} is not a folder on the server.")
            root = None
        if root is not None:
            paths = predict.collect_images([root])
            if not paths:
                st.warning(f"No images found under {esc(root)} (looked for "
                           f"{', '.join(sorted(predict.IMAGE_EXTENSIONS))}).")
            else:
                bar = st.progress(0.0, text=f"Predicting {len(paths):,} images…")

                def _progress(done: int, total: int) -> None:
                    bar.progress(min(1.0, done / max(total, 1)), text=f"Predicting… {done:,}/{total:,}")

                df = predictor.predict_paths(paths, top_k=top_k, progress=_progress,
                                             names=[str(p.relative_to(root)) for p in paths])
                bar.empty()
                st.session_state["predict_batch_result"] = (run_key, str(root), df)
    batch = st.session_state.get("predict_batch_result")
    if batch is not None and batch[0] == run_key:
        _, root_s, df = batch
        st.caption(f"Results for `{esc(root_s)}`")
        images = {i: str(Path(root_s) / p) for i, p in df["path"].items()}
        _results(df, images, "predict_batch")
    elif not go:
        st.info("Type the path of a folder on the server and press **Predict folder** to get a table and a CSV.")
