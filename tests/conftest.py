"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
WEIGHTS = SHARED / "weights" / "keras"

# Debian's chromium, driven by Playwright (browsers cannot be downloaded here): see ../shared/notes/streamlit.md.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

# Quiet TensorFlow's C++ start-up chatter in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# No background UMAP warm-up (ui/warmup.py) in test processes and test servers: it would compete for the CPUs.
os.environ.setdefault("LOUPE_UMAP_WARMUP", "0")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the real datasets and weights live in ../shared beside the repo "
                    "(present in CI; a fresh user's clone does not have them)")
    return path


@pytest.fixture(scope="session")
def flowers12() -> Path:
    """Root of ../shared/datasets/flowers12 (class folders with train/ and test/)."""
    return _require(DATASETS / "flowers12")


@pytest.fixture(scope="session")
def miml_scene() -> Path:
    """Root of ../shared/datasets/miml_scene (images/ + multi-hot labels.csv)."""
    return _require(DATASETS / "miml_scene")


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory) -> Path:
    """A temporary copy of ../shared/weights/keras, for ``KERAS_HOME`` (real ImageNet MobileNetV2-0.35)."""
    src = _require(WEIGHTS)
    dst = tmp_path_factory.mktemp("keras_home")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


@pytest.fixture
def loupe_home(tmp_path, monkeypatch) -> Path:
    """An empty workspace, exported as ``LOUPE_HOME`` for the code under test."""
    home = tmp_path / "loupe_home"
    home.mkdir()
    monkeypatch.setenv("LOUPE_HOME", str(home))
    return home


# ---------------------------------------------------------------------------
# A real browser (tests/e2e, and the server-kill fault in tests/reliability)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies, no storage) and one page in it."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    yield pg
    ctx.close()


# ---------------------------------------------------------------------------
# A workspace with the demo dataset and small trained runs, built once per test session.
# Pages and CLI tests of evaluation, embeddings, prediction and reports read them (never write
# into them: copy a run with ``shutil.copytree`` first when a test must change it).
# ---------------------------------------------------------------------------

TINY_CNN = dict(model="cnn", image_size=32, epochs=15, batch_size=32, filters=16, embedding_dim=16,
                patience=0, log_every=5, augmentation=False)


@pytest.fixture(scope="session")
def demo_workspace(tmp_path_factory):
    """A workspace (``core.workspace.Workspace``) holding the registered demo dataset."""
    from core import demo
    from core.workspace import home

    ws = home(tmp_path_factory.mktemp("demo_ws")).ensure()
    demo.ensure_demo_dataset(ws)
    return ws


def demo_dataset_id(ws) -> str:
    """The id of the registered demo ("Demo: UI elements"), whatever else the workspace holds."""
    return next(r["dataset_id"] for r in ws.list_datasets() if r["name"] == "Demo: UI elements")


def train_demo_run(ws, name: str, **overrides) -> Path:
    """Train a tiny CNN on the workspace's demo dataset, in this process; return the run directory."""
    from core import jobs
    from core.training import recommended_config

    cfg = recommended_config(**{**TINY_CNN, "dataset_id": demo_dataset_id(ws), **overrides})
    out = ws.runs_dir / name
    result = jobs.run_worker(cfg, out=out, workspace=ws)
    assert result.state == "done", (result.state, result.alerts)
    return out


@pytest.fixture(scope="session")
def demo_run(demo_workspace) -> Path:
    """A finished run on the demo: hierarchical (group > element), flat mode, tiny CNN, 15 epochs at 32 px."""
    return train_demo_run(demo_workspace, "demo-hier-flat")


@pytest.fixture(scope="session")
def demo_multiclass_run(demo_workspace) -> Path:
    """A finished multi-class run on the demo's leaf label (``element``), tiny CNN."""
    return train_demo_run(demo_workspace, "demo-multiclass", task="multiclass", label_columns=("element",))


# ---------------------------------------------------------------------------
# Helpers for tests that launch training workers (core jobs, faults, the Train page in a browser).
# ---------------------------------------------------------------------------

SQUARE_COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 190, 30)}


def colour_squares(root: Path, n_per: int = 12) -> Path:
    """``n_per`` tiny 16 px images per class folder under ``root`` (learnable: a coloured square on noise)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for c, rgb in SQUARE_COLOURS.items():
        (root / c).mkdir(parents=True)
        for i in range(n_per):
            im = Image.fromarray(rng.integers(0, 50, size=(16, 16, 3)).astype(np.uint8), "RGB")
            x, y = (int(v) for v in rng.integers(0, 8, 2))
            ImageDraw.Draw(im).rectangle([x, y, x + 7, y + 7], fill=rgb)
            im.save(root / c / f"{i}.png")
    return root


def wait_for(pred, timeout: float = 120.0, what="condition", *, interval: float = 0.2):
    """Poll ``pred`` until it returns something truthy (returned); fail after ``timeout`` s naming ``what``."""
    import time

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")


def worker_log(rd) -> str:
    """The tail of a run's worker.log, for failure messages."""
    from core import runs

    p = (rd if isinstance(rd, runs.RunDir) else runs.RunDir(rd)).worker_log
    return p.read_text(errors="replace")[-3000:] if p.exists() else "(no worker.log)"


def kill_workers(ws) -> None:
    """SIGKILL every live worker recorded in ``ws``'s runs (never this test process): no worker outlives a test."""
    import signal

    from core import runs

    for rd in ws.runs_dir.iterdir():
        st = runs.read_status(rd) if rd.is_dir() else {}
        pid = st.get("pid")
        if pid and pid != os.getpid() and runs.pid_alive(pid, start_ticks=st.get("pid_start")):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def ws(tmp_path):
    """A fresh workspace; every worker a test launches in it is killed at the end.

    Modules that need another kind of workspace (the demo's, one under ``LOUPE_HOME``) define their own ``ws``.
    """
    from core.workspace import home

    workspace = home(tmp_path / "ws").ensure()
    yield workspace
    kill_workers(workspace)  # never leave a worker of this test behind


def tiny_train_config(folder: Path, **kw):
    """A TrainConfig for a seconds-long CNN run on ``folder`` (16 px, 2 epochs, no early stopping); ``kw`` wins."""
    from core.training import TrainConfig

    base = dict(dataset={"path": str(folder)}, image_size=16, epochs=2, batch_size=8, filters=4, embedding_dim=8,
                patience=0, reduce_lr_patience=0)
    return TrainConfig(**{**base, **kw})


def zip_bytes(entries: dict) -> bytes:
    """A zip archive in memory: ``{name inside the zip: bytes}``, deflated."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def rename_class_in_run(run: Path, old: str, new: str):
    """Rename the hierarchical run's ``element`` class ``old`` to ``new`` in labels.json and predictions.csv.

    Returns the predictions (all columns as strings) after the rename; the file is written too.
    """
    import json

    import pandas as pd

    ren = lambda c: new if c == old else c  # noqa: E731
    labels = json.loads((run / "labels.json").read_text())
    labels["classes"] = [ren(c) for c in labels["classes"]]
    labels["level_classes"]["element"] = [ren(c) for c in labels["level_classes"]["element"]]
    labels["parents"]["element"] = {ren(k): v for k, v in labels["parents"]["element"].items()}
    (run / "labels.json").write_text(json.dumps(labels))
    pred = pd.read_csv(run / "predictions.csv", dtype=str, keep_default_na=False)
    pred = pred.rename(columns={f"element_p_{old}": f"element_p_{new}"})
    for col in ("element_true", "element_pred"):
        pred[col] = pred[col].map(ren)
    pred.to_csv(run / "predictions.csv", index=False)
    return pred
