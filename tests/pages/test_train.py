"""AppTest of the Train page on the real core: launch tiny runs through the form and the grid form.

Launched runs are real worker processes (``python -m core train``): the tests wait for
them by polling their status, and the workspace fixture kills any still alive at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import demo, runs
from core.workspace import Workspace
from tests.pages.apptest import page_alone

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120
WORKER_TIMEOUT = 240


@pytest.fixture(scope="module")
def train_ws(tmp_path_factory):
    """One workspace with the demo for this module's tests; its workers are killed at the end."""
    ws = Workspace(tmp_path_factory.mktemp("train_page_ws")).ensure()
    demo.ensure_demo_dataset(ws)
    yield ws
    for rd in ws.runs_dir.iterdir():
        st = runs.read_status(rd) if rd.is_dir() else {}
        if st.get("pid") and runs.pid_alive(st["pid"], start_ticks=st.get("pid_start")):
            os.kill(st["pid"], signal.SIGKILL)


@pytest.fixture
def home(train_ws, monkeypatch) -> Workspace:
    monkeypatch.setenv("LOUPE_HOME", str(train_ws.root))
    return train_ws


def _train_page(ws: Workspace, **session) -> AppTest:
    return page_alone("train", ws, timeout=TIMEOUT, **session)


def test_the_app_lists_and_opens_the_train_page(home):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.switch_page("views/train.py").run()
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["Train"]
    assert at.radio(key="train_task").value == "hierarchical"


def _tiny(at: AppTest, *, epochs: int = 2) -> None:
    """A tiny CNN: 16 px, 4 filters, a live loss line every 5 batches."""
    at.number_input(key="train_image_size").set_value(16)
    at.number_input(key="train_epochs").set_value(epochs)
    at.number_input(key="train_filters").set_value(4)
    at.number_input(key="train_embedding").set_value(8)
    at.number_input(key="train_log_every").set_value(5)
    at.run()


def _wait_finished(rd: Path, timeout: float = WORKER_TIMEOUT) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = runs.read_status(rd)
        if runs.effective_state(st) not in runs.ACTIVE_STATES:
            return st
        time.sleep(0.3)
    log = runs.RunDir(rd).worker_log
    raise AssertionError(f"{rd.name} still active after {timeout}s; log: "
                         f"{log.read_text(errors='replace')[-2000:] if log.exists() else '(none)'}")


def _table(at: AppTest, column: str):
    """The first table of the page with ``column`` (runs table: ``message``; grid table: ``best``)."""
    tables = [d.value for d in at.dataframe if column in d.value.columns]
    assert tables, [list(d.value.columns) for d in at.dataframe]
    return tables[0]


def _figures(at: AppTest) -> dict[str, dict]:
    """Plotly charts of the page by key: their figure JSON."""
    out = {}
    for el in at.get("plotly_chart"):
        proto = el.proto
        out[proto.id] = json.loads(proto.spec)
    return out


def _chart(at: AppTest, key_part: str) -> dict:
    figs = {k: v for k, v in _figures(at).items() if key_part in k}
    assert len(figs) == 1, list(_figures(at))
    return next(iter(figs.values()))


def test_launch_a_tiny_run_from_the_form_and_watch_it_finish(home):
    at = _train_page(home)
    assert [r.value for r in at.radio][:1] == ["hierarchical"]  # the demo's schema decides the task
    assert "No run yet" in " ".join(i.value for i in at.info)
    _tiny(at)
    at.button(key="train_launch").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    run_id = at.session_state["train_watch"]
    assert any(run_id in s.value for s in at.success)
    rd = home.runs_dir / run_id
    cfg = runs.read_config(rd)
    assert (cfg["model"], cfg["image_size"], cfg["epochs"], cfg["filters"]) == ("cnn", 16, 2, 4)
    assert cfg["flip_average"] is False and cfg["augmentation"] is False  # the CNN's recipe: neither
    assert cfg["dataset_id"] == home.list_datasets()[0]["dataset_id"] and cfg["task"] == "hierarchical"
    assert cfg["label_patch_version"] == "0" and cfg["decision_version"] == 0  # review decisions (none yet)
    # while it is queued or running the page shows it, with a Stop button, without blocking
    assert at.selectbox(key="train_watch").value == run_id
    status = _wait_finished(rd)
    assert status["state"] == "done", runs.RunDir(rd).worker_log.read_text(errors="replace")[-2000:]

    at.run()
    assert not at.exception, at.exception
    table = _table(at, "message")
    row = table.set_index("run_id").loc[run_id]
    assert "done" in row["state"] and row["best_value"] == pytest.approx(status["best_value"], abs=1e-4)
    assert [p.value for p in at.get("progress")] == [100]
    assert not [b for b in at.button if b.key == "train_stop"]  # finished: no Stop
    loss = _chart(at, "train_loss_chart")
    names = {t["name"]: len(t["x"]) for t in loss["data"]}
    assert names["train loss"] == 2 and names["val loss"] == 2
    assert names["train loss (live, per batch)"] >= 2  # the per-N-batch live line
    metric = _chart(at, "train_metric_chart")
    assert {"train accuracy", "val accuracy", "val macro F1"} <= {t["name"] for t in metric["data"]}
    assert any(f"best epoch {status['best_epoch']}" in m.value for m in at.markdown)


def test_a_dead_worker_shows_as_interrupted_with_its_checkpoint(home):
    done = [p for p in home.runs_dir.iterdir() if runs.read_status(p).get("state") == "done"]
    if not done:
        pytest.skip("needs the run of the previous test")
    copy = home.runs_dir / "zz-interrupted-copy"
    shutil.copytree(done[0], copy)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs
    runs.write_status(copy, "running", pid=gone.pid, epoch=1, epochs=2, message="epoch 1/2")
    at = _train_page(home, train_watch=copy.name)
    assert at.selectbox(key="train_watch").value == copy.name
    table = _table(at, "message").set_index("run_id")
    assert "interrupted" in table.loc[copy.name, "state"]
    warning = " ".join(w.value for w in at.warning)
    assert "interrupted" in warning and "checkpoint" in warning and "usable" in warning
    shutil.rmtree(copy)


def test_task_options_follow_the_dataset_schema(home):
    at = _train_page(home)
    assert at.radio(key="train_task").options == ["hierarchical", "multiclass", "binary"]
    assert at.radio(key="train_hmode").options == ["flat", "separate"]
    at.radio(key="train_task").set_value("binary").run()
    assert not at.exception
    assert at.selectbox(key="train_level").value == "element"  # the leaf level by default
    assert "button" in at.selectbox(key="train_positive").options
    excl = at.multiselect(key="train_exclude")
    assert len(excl.options) == 10  # the leaf classes, rarest first


def test_transfer_model_without_cached_weights_warns_and_offers_random_init(home, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty_keras_home"))
    at = _train_page(home)
    at.selectbox(key="train_model").set_value("efficientnet_b0").run()
    assert not at.exception
    assert at.number_input(key="train_image_size").value == 128  # the transfer recipe
    assert at.number_input(key="train_fine_tune").value > 0
    assert at.checkbox(key="train_feature_warmup").value is True  # frozen epochs on features computed once
    assert at.checkbox(key="train_probe_head").value is True  # the recipe: a linear-probe warm-up...
    assert at.checkbox(key="train_average_weights").value is True  # ...and averaged fine-tuning weights
    assert at.checkbox(key="train_flip_average").value is True  # trains on mirrored images: predicts averaging them
    assert at.number_input(key="train_dropout").value == 0.0 and at.number_input(key="train_reduce_lr").value == 0
    warning = " ".join(w.value for w in at.warning)
    assert "not in Keras' cache" in warning and "random" in warning
    at.button(key="train_random_init").click().run()
    assert not at.exception
    assert at.radio(key="train_weights").value == "none"
    assert not any("not in Keras' cache" in w.value for w in at.warning)
    assert not [c for c in at.checkbox if c.key == "train_feature_warmup"]  # random init: nothing is frozen
    assert not [c for c in at.checkbox if c.key == "train_probe_head"]
    at.selectbox(key="train_model").set_value("cnn").run()
    assert at.number_input(key="train_reduce_lr").value == 2  # the CNN recipe halves the LR on plateaus
    assert at.checkbox(key="train_flip_average").value is False  # no augmentation: no mirror to average


def test_grid_form_queues_runs_and_shows_results_and_parallel_coordinates(home):
    at = _train_page(home)
    _tiny(at, epochs=1)
    at.checkbox(key="train_use_review").uncheck()  # the raw labels
    at.multiselect(key="train_grid_kernels").set_value([3, 5])
    [submit] = [b for b in at.button if b.label == "Launch grid"]  # the grid form's submit button
    submit.click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("2 runs queued" in s.value for s in at.success)
    grid_id = at.session_state["train_grid_id"]
    grid_runs = [p for p in home.runs_dir.iterdir()
                 if (runs.read_config(p).get("grid") or {}).get("id") == grid_id]
    assert len(grid_runs) == 2
    assert {runs.read_config(p)["label_patch_version"] for p in grid_runs} == {"raw"}
    for rd in grid_runs:
        assert _wait_finished(rd)["state"] == "done"
    at.run()
    assert not at.exception, at.exception
    table = _table(at, "best")
    assert sorted(table["kernel_size"]) == [3, 5]
    assert (table["best"] == "★").sum() == 1
    best = table.loc[table["best"] == "★", "run_id"].iloc[0]
    parcoords = _chart(at, "train_grid_parcoords")
    [trace] = parcoords["data"]
    assert trace["type"] == "parcoords"
    assert [d["label"] for d in trace["dimensions"]][:2] == ["kernel_size", "val_macro_f1"]
    assert best in parcoords["layout"]["title"]["text"]


def test_the_checkpoint_monitor_follows_the_task(tmp_path, monkeypatch, miml_scene):
    """Multi-label runs default to val mAP (what they are judged by); single-label tasks are not offered it."""
    import pandas as pd

    from core import datasets

    ws = Workspace(tmp_path / "ws").ensure()
    monkeypatch.setenv("LOUPE_HOME", str(ws.root))
    labels = tmp_path / "labels.csv"
    pd.read_csv(miml_scene / "labels.csv").iloc[:60].to_csv(labels, index=False)
    ml = datasets.load_dataset(datasets.DatasetSpec(path=str(miml_scene / "images"), labels=str(labels),
                                                    name="scenes"), workspace=ws)
    demo.ensure_demo_dataset(ws)
    demo_id = next(r["dataset_id"] for r in ws.list_datasets() if r["dataset_id"] != ml.dataset_id)
    at = _train_page(ws, dataset_id=ml.dataset_id)
    monitor = at.selectbox(key="train_monitor")
    assert monitor.value == "val_map" and list(monitor.options) == ["val_map", "val_macro_f1", "val_loss",
                                                                    "val_accuracy"]
    at.session_state["dataset_id"] = demo_id
    at.run()
    assert not at.exception, at.exception
    monitor = at.selectbox(key="train_monitor")
    assert monitor.value == "val_macro_f1" and "val_map" not in monitor.options
