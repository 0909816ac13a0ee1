"""Session-level state: the open workspace, the selected dataset and run, cached loaders.

Caches are keyed by content ids (workspace root, dataset id + its update time), never by
hashing big objects (see ../shared/notes/streamlit.md, "Caching").
"""

from __future__ import annotations

import html
import os

import streamlit as st

from core import datasets, demo
from core import workspace as wsmod
from core.workspace import Workspace, WorkspaceError

DATASET_KEY = "dataset_id"


def mtime(path) -> int:
    """A file's modification time in ns (0 when it does not exist): the cache key of what is read from it."""
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def esc(text: object) -> str:
    """HTML-escape user data (labels, file names) before it goes into any markdown/HTML."""
    return html.escape(str(text), quote=True)


@st.cache_resource(show_spinner=False)
def _open_workspace(root: str) -> Workspace:
    return wsmod.home(root).ensure()


def keep_widget_state(keys) -> None:
    """Keep the values of widgets this run does not draw (those of a hidden tab): Streamlit drops a
    widget's state when a run skips it, and the user would find their choices reset on coming back.
    Call it only for widgets not drawn in this run (re-saving a drawn widget's key makes Streamlit warn)."""
    for key in keys:
        if key in st.session_state:
            st.session_state[key] = st.session_state[key]


def workspace() -> Workspace:
    """The workspace named by ``LOUPE_HOME`` (default ./workspace); stops the page with a clear error if unusable."""
    root = os.environ.get("LOUPE_HOME") or wsmod.DEFAULT_HOME
    try:
        return _open_workspace(str(wsmod.home(root).root))
    except WorkspaceError as exc:
        st.error(str(exc))
        st.stop()


def ensure_demo(ws: Workspace) -> None:
    """On a first start (no dataset registered yet) generate and register the built-in demo."""
    if st.session_state.get("_demo_checked"):
        return
    if not ws.list_datasets():
        with st.spinner("First start: generating the demo dataset (a few seconds)…"):
            demo.ensure_demo_dataset(ws)
    st.session_state["_demo_checked"] = True


@st.cache_resource(show_spinner=False, max_entries=8)
def _open_dataset(root: str, dataset_id: str, updated_at: float) -> datasets.Dataset:
    return datasets.open_dataset(wsmod.home(root), dataset_id)


def updated_at(ws: Workspace, dataset_id: str) -> float:
    """When the dataset was last stored (the cache key of everything read from it); 0.0 if unknown."""
    return next((r["updated_at"] for r in ws.list_datasets() if r["dataset_id"] == dataset_id), 0.0)


@st.cache_resource(show_spinner="Reading image previews…", max_entries=4)
def _previews(root: str, dataset_id: str, updated_at: float):
    from core.images import ImageCache

    w = wsmod.home(root)
    ds = datasets.open_dataset(w, dataset_id)
    return ImageCache(w.cache_dir / "images").arrays(ds.samples, datasets.PREVIEW_SIZE).images


def previews(ws: Workspace, dataset_id: str):
    """The dataset's preview-size images (a memmap, shared: read only), aligned with its samples table."""
    return _previews(str(ws.root), dataset_id, updated_at(ws, dataset_id))


def registered(ws: Workspace) -> list[dict]:
    return ws.list_datasets()


def current_dataset(ws: Workspace) -> datasets.Dataset | None:
    """The dataset picked in the sidebar (shared object: do not mutate its samples table)."""
    rows = {r["dataset_id"]: r for r in ws.list_datasets()}
    ds_id = st.session_state.get(DATASET_KEY)
    if ds_id not in rows:
        return None
    try:
        return _open_dataset(str(ws.root), ds_id, rows[ds_id]["updated_at"])
    except (OSError, ValueError) as exc:
        st.error(f"Dataset {esc(ds_id)} cannot be opened: {exc}")
        return None


_PENDING_DATASET = "_pending_dataset_id"


def select_dataset(dataset_id: str) -> None:
    """Make ``dataset_id`` the sidebar's choice from the next rerun on (call ``st.rerun()`` after it).

    The sidebar's selectbox owns ``st.session_state[DATASET_KEY]`` once it is drawn, so the choice
    is parked under another key and applied before the widget is created.
    """
    st.session_state[_PENDING_DATASET] = dataset_id


ENGINE_KEY = "batch_engine"


def engine(ws: Workspace) -> str:
    """The batch engine chosen in the sidebar's settings (saved in the workspace), ``local`` by default."""
    from core.engines import ENGINES

    chosen = ws.settings().get("engine", "local")
    return chosen if chosen in ENGINES else "local"


def _engine_setting(ws: Workspace) -> None:
    from core.engines import ENGINES

    def save() -> None:
        try:
            ws.save_setting("engine", st.session_state[ENGINE_KEY])
        except OSError as exc:
            st.session_state["_engine_error"] = f"The setting could not be saved: {exc}"

    st.session_state[ENGINE_KEY] = engine(ws)
    with st.expander("Settings"):
        st.selectbox("Batch engine", list(ENGINES), key=ENGINE_KEY, on_change=save,
                     help="Where the Clean page's ImageNet features and the Embeddings page's embeddings are "
                          "computed: " + "; ".join(f"{k}: {v}" for k, v in ENGINES.items()) + ". Predictions of "
                          "uploads stay in the app's process.")
        if st.session_state.get(ENGINE_KEY) == "ray":
            where = os.environ.get("RAY_ADDRESS")
            st.caption(f"Ray cluster at `{esc(where)}`" if where else
                       "No `RAY_ADDRESS` set: each job starts a local Ray (about 15 s before the first image).")
        if st.session_state.get("_engine_error"):
            st.error(st.session_state.pop("_engine_error"))


def sidebar(ws: Workspace) -> None:
    """Workspace path, the dataset picker and the settings, on every page."""
    rows = ws.list_datasets()
    with st.sidebar:
        st.caption(f"Workspace: `{ws.root}`")
        if not rows:
            st.info("No dataset yet: add one on the Data page.")
            _engine_setting(ws)
            return
        ids = [r["dataset_id"] for r in rows]
        if st.session_state.get(_PENDING_DATASET) in ids:
            st.session_state[DATASET_KEY] = st.session_state.pop(_PENDING_DATASET)
        names = {r["dataset_id"]: f"{r['name']} · {r['task']} · {r['n_samples']:,}" for r in rows}
        if st.session_state.get(DATASET_KEY) not in ids:
            st.session_state[DATASET_KEY] = ids[0]
        st.selectbox("Dataset", ids, format_func=names.get, key=DATASET_KEY)
        _engine_setting(ws)


RUN_KEY = "run_id"


def runs_table(ws: Workspace):
    """All runs of the workspace (``core.runs.list_runs``), newest first; dead workers show as interrupted."""
    from core import jobs

    return jobs.list_runs(ws)


def pick_run(ws: Workspace, *, label: str = "Run", finished: bool = True, key: str = RUN_KEY,
             container=None) -> str | None:
    """A run picker shared by Evaluate / Embeddings / Predict / Report; returns the run directory or None.

    ``finished``: only runs that have predictions (done, stopped or interrupted with a model).
    The choice is kept in ``st.session_state[key]`` so every page opens on the same run.
    """
    df = runs_table(ws)
    if finished and not df.empty:
        df = df[df["has_model"].astype(bool) & df["has_predictions"].astype(bool)]
    if df.empty:
        return None
    paths = dict(zip(df["run_id"], df["path"]))
    ids = list(paths)
    labels = {r.run_id: f"{r.run_id} · {r.task} · {r.model} · {r.state}" for r in df.itertuples()}
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]
    target = container if container is not None else st
    run_id = target.selectbox(label, ids, format_func=lambda i: labels.get(i, i), key=key)
    return str(paths[run_id]) if run_id else None
