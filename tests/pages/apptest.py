"""How page tests open a page with AppTest (shared by the files of tests/pages)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]


def page_alone(page: str, ws, *, timeout: float, **session) -> AppTest:
    """``views/<page>.py`` run on its own, with the workspace's first dataset chosen as the sidebar would.

    (In Streamlit 1.67 ``AppTest.switch_page`` runs the page file without re-running app.py, so
    the sidebar's dataset selectbox is gone after the first run and its value with it; running
    the page directly with ``dataset_id`` in the session state is stable across reruns.)
    """
    at = AppTest.from_file(str(REPO / "views" / f"{page}.py"), default_timeout=timeout)
    at.session_state["dataset_id"] = ws.list_datasets()[0]["dataset_id"]
    for k, v in session.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def page_via_app(page: str, run_dir: Path | None = None, *, timeout: float) -> AppTest:
    """app.py run once (workspace, demo, sidebar), then ``views/<page>.py``, with ``run_dir`` picked."""
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=timeout)
    if run_dir is not None:
        at.session_state["run_id"] = run_dir.name
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception
    return at
