"""core.jobs: worker processes, the one-at-a-time queue, graceful stop, kill -9, grids."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from core import jobs, runs
from core.training import TrainConfig
from tests.conftest import colour_squares, tiny_train_config, wait_for, worker_log

@pytest.fixture
def folder(tmp_path) -> Path:
    return colour_squares(tmp_path / "data")


def _wait(pred, timeout=120.0, what="condition"):
    return wait_for(pred, timeout, what)


def _state(rd) -> str:
    return runs.effective_state(runs.read_status(rd))


def test_queue_runs_one_at_a_time_stop_cancels_a_queued_run_and_kill_9_leaves_a_usable_checkpoint(folder, ws):
    from core.models import load_model

    long_id = jobs.launch(tiny_train_config(folder, epochs=400), workspace=ws)
    queued_id = jobs.launch(tiny_train_config(folder, epochs=1), workspace=ws)
    long_rd, queued_rd = ws.runs_dir / long_id, ws.runs_dir / queued_id
    assert runs.RunDir(long_rd).worker_log.exists()
    _wait(lambda: runs.RunDir(long_rd).model.exists(), what=f"a checkpoint; log: {worker_log(long_rd)}")
    assert _state(long_rd) == "running"
    # the second run waits its turn (its worker is alive and says queued)
    st = _wait(lambda: (s := runs.read_status(queued_rd)).get("pid") and s, what="the queued worker's pid")
    assert _state(queued_rd) == "queued" and runs.pid_alive(st["pid"])
    table = jobs.list_runs(ws)
    assert set(table["run_id"]) == {long_id, queued_id}
    # stopping a queued run takes it out of the queue
    assert jobs.stop(queued_rd) is True
    _wait(lambda: runs.read_status(queued_rd)["state"] == "stopped", what=f"stopped; log: {worker_log(queued_rd)}")
    assert "queue" in runs.read_status(queued_rd)["message"]
    # kill -9 the running worker: shown as interrupted, its best checkpoint still loads
    pid = runs.read_status(long_rd)["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: _state(long_rd) == "interrupted", timeout=30, what="interrupted")
    assert runs.read_status(long_rd)["state"] == "running"  # the file is not rewritten; the reading says interrupted
    model = load_model(runs.RunDir(long_rd).model)  # core.models.load_model: safe_mode, Loupe's objects
    assert model.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0).shape == (1, 3)
    assert jobs.stop(long_rd) is False  # nothing left to signal
    assert jobs.list_runs(ws).set_index("run_id").loc[long_id, "state"] == "interrupted"


def test_sigterm_stops_gracefully_keeping_the_best_checkpoint_and_writing_predictions(folder, ws):
    run_id = jobs.launch(tiny_train_config(folder, epochs=400), workspace=ws)
    rd = runs.RunDir(ws.runs_dir / run_id)
    _wait(lambda: rd.model.exists(), what=f"a checkpoint; log: {worker_log(rd.path)}")
    assert jobs.stop(rd.path) is True
    _wait(lambda: runs.read_status(rd)["state"] in ("stopped", "failed", "done"), what="the worker to finish")
    st = runs.read_status(rd)
    assert st["state"] == "stopped", worker_log(rd.path)
    assert st["best_epoch"] >= 1 and "best checkpoint kept" in st["message"]
    assert rd.predictions.exists() and rd.labels.exists()
    pred = runs.read_predictions(rd, split="test")
    assert pred.n_samples > 0
    epochs = runs.read_metrics(rd).query("kind == 'epoch'")
    assert len(epochs) < 400
    _wait(lambda: not runs.pid_alive(st["pid"]), timeout=30, what="the worker to exit")


def test_launch_grid_queues_one_run_per_combination(folder, ws):
    ids = jobs.launch_grid(tiny_train_config(folder, epochs=1), {"kernel_size": [3, 5]}, workspace=ws)
    assert len(ids) == 2
    for run_id in ids:
        rd = ws.runs_dir / run_id
        _wait(lambda: runs.read_status(rd)["state"] in ("done", "failed", "stopped"), what=f"done; {worker_log(rd)}")
        assert runs.read_status(rd)["state"] == "done", worker_log(rd)
    table = jobs.grid_table(ws)
    assert sorted(table["kernel_size"]) == [3, 5] and table["grid_id"].nunique() == 1
    assert table["test_accuracy"].notna().all()
    # runs of a grid never overlapped: the second started after the first finished
    s0, s1 = (runs.read_status(ws.runs_dir / i) for i in ids)
    assert s1["started_at"] >= s0["finished_at"] - 0.5


def test_launch_and_grid_validate_their_input(folder, ws):
    with pytest.raises(ValueError, match="dataset"):
        jobs.launch(TrainConfig(), workspace=ws)
    with pytest.raises(ValueError, match="not a TrainConfig field"):
        jobs.launch_grid(tiny_train_config(folder), {"kernel": [3]}, workspace=ws)
    with pytest.raises(ValueError, match="non-empty list"):
        jobs.launch_grid(tiny_train_config(folder), {"kernel_size": []}, workspace=ws)
    with pytest.raises(ValueError, match="epochs"):
        jobs.launch_grid(tiny_train_config(folder), {"epochs": [1, 0]}, workspace=ws)  # validated before any launch
    assert jobs.list_runs(ws).empty
