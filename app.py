"""Loupe — the Streamlit entry point: navigation, workspace, dataset and run pickers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import state, warmup

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="Loupe", page_icon=":material/center_focus_strong:", layout="wide")

ws = state.workspace()
state.ensure_demo(ws)
warmup.start_umap_warmup()  # compile UMAP in the background so a user's first map is nearly warm

# The workflow, in order. A page is listed once its file exists (only working pages ship).
# The page files live in views/, not pages/: a folder named pages/ beside app.py switches Streamlit to
# its legacy multipage mode for a fresh server's first request to a page URL (a bookmarked /evaluate
# would then run without app.py: no sidebar, no workspace, no demo).
PAGES = [
    ("views/data.py", "Data", ":material/dataset:"),
    ("views/clean.py", "Clean", ":material/cleaning_services:"),
    ("views/train.py", "Train", ":material/model_training:"),
    ("views/evaluate.py", "Evaluate", ":material/analytics:"),
    ("views/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("views/predict.py", "Predict", ":material/image_search:"),
    ("views/report.py", "Report", ":material/share:"),
]
nav = st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0))
                     for i, (path, title, icon) in enumerate(PAGES) if (ROOT / path).exists()])
state.sidebar(ws)
nav.run()
