"""Report: one HTML file that explains a run to people who never open Loupe, and the model bundle."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components

from core import report
from ui import state
from ui.state import esc

REPORT_KEY = "_report_built"
BUNDLE_KEY = "_report_bundle"
STATUS_ICON = {"ok": "✅", "missing": "➖", "error": "⚠️"}

ws = state.workspace()
st.title("Report")
st.caption("Share a run: one self-contained HTML file (no server, no internet — charts and thumbnails are inside "
           "it) with the dataset, the cleaning log, training curves, evaluation, embedding map, "
           "out-of-distribution examples, confident mistakes and a model card. And the model itself, as a bundle "
           "another machine can predict with.")

run_dir = state.pick_run(ws)
if run_dir is None:
    st.info("No finished run yet. Train a model on the **Train** page (or `python -m core train ...`); when it "
            "finishes, its report can be built here.")
    st.stop()
run_id = Path(run_dir).name

# ---------------------------------------------------------------------------
# HTML report
# ---------------------------------------------------------------------------
st.subheader("HTML report")
c1, c2, c3 = st.columns([2, 1, 2])
max_thumbnails = c1.slider("Thumbnails per gallery", min_value=0, max_value=60, value=24, step=6,
                           key="report_max_thumbnails",
                           help="Confident mistakes and unusual unseen images; each thumbnail adds ~3 KB.")
split = c2.selectbox("Metrics on", ["test", "val"], key="report_split",
                     help="Which split of the run's predictions the metrics use.")
with_embeddings = c3.checkbox("Embedding map and out-of-distribution examples", value=True,
                              key="report_embeddings",
                              help="Runs the model over the dataset once (cached with the run): seconds for "
                                   "thousands of small images.")
others = state.runs_table(ws)
others = others[others["has_predictions"].astype(bool) & (others["run_id"] != run_id)] if not others.empty else others
compare_ids = ["(none)", *others["run_id"]] if not others.empty else ["(none)"]
compare_id = st.selectbox("Compare with", compare_ids, key="report_compare",
                          help="Adds a section comparing this run with another on the same rows: each metric's "
                               "difference with a 95 % paired-bootstrap interval, and McNemar's p. Runs on other "
                               "rows or labels are refused (the section says why).")
compare_with = None if compare_id == "(none)" else str(dict(zip(others["run_id"], others["path"]))[compare_id])
options = {"run_dir": run_dir, "split": split, "max_thumbnails": int(max_thumbnails),
           "embeddings": bool(with_embeddings), "compare_with": compare_with}

if st.button("Build report", type="primary", key="report_build", icon=":material/description:"):
    bar = st.progress(0.0, text="Reading the run…")
    t0 = time.perf_counter()
    try:
        meta, sections = report.collect_sections(
            run_dir, workspace=ws, split=split, max_thumbnails=int(max_thumbnails), embeddings=bool(with_embeddings),
            compare_with=compare_with, progress=lambda f, m: bar.progress(min(max(float(f), 0.0), 1.0), text=m.capitalize() + "…"))
        html_text = report.render_html(meta, sections, headline=meta.get("headline", ()))
    except ValueError as exc:
        bar.empty()
        st.error(f"The report cannot be built: {esc(exc)}")
        st.stop()
    bar.empty()
    st.session_state[REPORT_KEY] = {
        "options": options, "run_id": run_id, "html": html_text, "seconds": time.perf_counter() - t0,
        "sections": [(s.title, s.status, s.note) for s in sections], "headline": list(meta.get("headline", ())),
    }

built = st.session_state.get(REPORT_KEY)
if built and built["options"]["run_dir"] == run_dir:
    data = built["html"].encode("utf-8")
    if built["options"] != options:
        st.warning("The options changed since this report was built: build it again to apply them.")
    d1, d2, d3 = st.columns([2, 1, 1])
    d1.download_button("Download report.html", data=data, file_name=f"loupe-report-{run_id}.html",
                       mime="text/html", key="report_download", type="primary", on_click="ignore",
                       icon=":material/download:")
    d2.metric("File size", f"{len(data) / 1e6:.1f} MB")
    d3.metric("Built in", f"{built['seconds']:.0f} s")
    missing = [(t, s, n) for t, s, n in built["sections"] if s != "ok"]
    st.caption("Sections: " + " · ".join(f"{STATUS_ICON.get(s, '')} {esc(t)}" for t, s, _ in built["sections"]))
    for title, status, note in missing:
        st.caption(f"{STATUS_ICON.get(status, '')} **{esc(title)}** — {esc(note)}")
    with st.expander("Preview", expanded=True):
        components.html(built["html"], height=900, scrolling=True)
else:
    st.info("Pick the options, then **Build report**: the file is built from the run directory and can be "
            "downloaded and sent as it is.")

# ---------------------------------------------------------------------------
# Model bundle
# ---------------------------------------------------------------------------
st.subheader("Model bundle")
try:
    from core.predict import export_bundle
except (ImportError, AttributeError):  # the predict module ships separately
    export_bundle = None
if export_bundle is None:
    st.info("Model bundles are not available in this installation (core.predict.export_bundle is missing).")
else:
    st.caption("A zip with the `.keras` model, its labels, thresholds and preprocessing: load it on another "
               "machine with `core.predict` (see below).")
    if st.button("Build model bundle", key="report_bundle_build", icon=":material/inventory_2:"):
        with st.spinner("Packing the model…"):
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    path = export_bundle(run_dir, Path(tmp) / f"loupe-model-{run_id}.zip")
                    st.session_state[BUNDLE_KEY] = {"run_dir": run_dir, "data": Path(path).read_bytes()}
            except (ValueError, OSError) as exc:
                st.error(f"The bundle cannot be built: {esc(exc)}")
    bundle = st.session_state.get(BUNDLE_KEY)
    if bundle and bundle["run_dir"] == run_dir:
        b1, b2 = st.columns([2, 2])
        b1.download_button("Download model bundle", data=bundle["data"], file_name=f"loupe-model-{run_id}.zip",
                           mime="application/zip", key="report_bundle_download", on_click="ignore",
                           icon=":material/download:")
        b2.metric("Bundle size", f"{len(bundle['data']) / 1e6:.1f} MB")
        st.code(f'from core.predict import Predictor\n'
                f'predictor = Predictor.load("loupe-model-{run_id}.zip")\n'
                f'table = predictor.predict_paths(["photos/"])  # path, prediction, confidence, ood_score, ...',
                language="python")
