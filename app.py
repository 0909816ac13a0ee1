"""Loupe — the Streamlit entry point: navigation, workspace, dataset and run pickers."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import state

ROOT = Path(__file__).resolve().parent

st.set_page_config(page_title="Loupe", page_icon=":material/center_focus_strong:", layout="wide")

ws = state.workspace()
state.ensure_demo(ws)

# The workflow, in order. A page is listed once its file exists (only working pages ship).
PAGES = [
    ("pages/data.py", "Data", ":material/dataset:"),
    ("pages/clean.py", "Clean", ":material/cleaning_services:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/evaluate.py", "Evaluate", ":material/analytics:"),
    ("pages/embeddings.py", "Embeddings", ":material/scatter_plot:"),
    ("pages/predict.py", "Predict", ":material/image_search:"),
    ("pages/report.py", "Report", ":material/share:"),
]
nav = st.navigation([st.Page(path, title=title, icon=icon, default=(i == 0))
                     for i, (path, title, icon) in enumerate(PAGES) if (ROOT / path).exists()])
state.sidebar(ws)
nav.run()
