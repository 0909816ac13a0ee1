"""Streamlit-side helpers shared by app.py and the pages (caching, session state, widgets).

Only this package, app.py and views/ import streamlit; all logic lives in core/.
"""
