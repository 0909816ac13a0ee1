"""Loupe's library: every operation the app and the CLI perform. Never imports streamlit."""

__version__ = "0.1.0"
