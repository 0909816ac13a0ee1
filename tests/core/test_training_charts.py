"""core.training_charts: live curves, progress, alerts and grid figures from run-directory data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core import training_charts as tc


def _metrics(epochs: int = 3, batches: int = 4, every: int = 2, stage: str = "main") -> pd.DataFrame:
    rows = []
    for e in range(1, epochs + 1):
        for b in range(every, batches + 1, every):
            rows.append({"kind": "batch", "stage": stage, "epoch": e, "batch": b, "loss": 2.0 - 0.1 * e})
        rows.append({"kind": "epoch", "stage": stage, "epoch": e, "epochs": epochs, "loss": 2.0 - 0.2 * e,
                     "accuracy": 0.2 * e, "val_loss": 2.1 - 0.1 * e, "val_accuracy": 0.1 + 0.2 * e,
                     "val_macro_f1": [0.1, 0.5, 0.3][e - 1] if e <= 3 else 0.2})
    return pd.DataFrame(rows)


def test_curve_frame_places_batches_inside_their_epoch():
    frame = tc.curve_frame(_metrics(), steps_per_epoch=4)
    batches = frame[frame["kind"] == "batch"]
    assert batches["x"].tolist() == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert frame.loc[frame["kind"] == "epoch", "x"].tolist() == [1.0, 2.0, 3.0]
    # without steps_per_epoch: the largest batch logged in a finished epoch (4 here)
    assert tc.curve_frame(_metrics())["x"].tolist() == frame["x"].tolist()
    assert tc.curve_frame(pd.DataFrame()).empty


def test_curve_frame_and_figures_follow_one_stage():
    m = pd.concat([_metrics(stage="primary"), _metrics(epochs=2, stage="sub:a")], ignore_index=True)
    assert tc.stages(m) == ["primary", "sub:a"]
    assert tc.curve_frame(m)["epoch"].max() == 2  # default: the last stage
    fig = tc.loss_figure(m, stage="primary")
    assert {t.name: len(t.x) for t in fig.data} == {"train loss (live, per batch)": 6, "train loss": 3,
                                                    "val loss": 3}


def test_metric_figure_stars_the_best_epoch_of_the_monitor():
    fig = tc.metric_figure(_metrics(), monitor="val_macro_f1")
    [star] = [t for t in fig.data if t.name == "best val_macro_f1"]
    assert (star.x[0], star.y[0]) == (2.0, 0.5)
    thick = {t.name: t.line.width for t in fig.data if t.mode != "markers"}
    assert thick["val macro F1"] > thick["val accuracy"]
    # val_loss is minimised: a vertical marker at the lowest epoch instead of a star
    fig = tc.metric_figure(_metrics(), monitor="val_loss")
    assert any("best val_loss (epoch 3)" in (a.text or "") for a in fig.layout.annotations)


def test_a_two_phase_runs_frozen_warm_up_is_shaded_and_fine_tuning_marked():
    m = _metrics(epochs=3)
    ep = m["kind"] == "epoch"
    m.loc[ep, "phase"] = ["frozen warm-up", "frozen warm-up", "fine-tuning"]
    m.loc[ep, "input"] = ["backbone features", "backbone features", None]
    for fig in (tc.loss_figure(m), tc.metric_figure(m)):
        [shade] = [sh for sh in fig.layout.shapes if sh.type == "rect"]
        assert (shade.x0, shade.x1) == (0, 2.0)
        texts = [a.text for a in fig.layout.annotations]
        assert "frozen warm-up (on features)" in texts and "fine-tuning" in texts
    # a short warm-up (one linear-probe epoch of 4): one label on the fine-tuning line, none overlapping
    m4 = _metrics(epochs=4)
    ep4 = m4["kind"] == "epoch"
    m4.loc[ep4, "phase"] = ["frozen warm-up"] + ["fine-tuning"] * 3
    m4.loc[ep4, "input"] = ["backbone features", None, None, None]
    texts = [a.text for a in tc.metric_figure(m4).layout.annotations]
    assert texts == ["fine-tuning after a frozen warm-up (on features)"]
    # a one-phase run (no "phase" column) has neither
    assert not [sh for sh in tc.loss_figure(_metrics()).layout.shapes if sh.type == "rect"]


def test_nan_losses_are_left_out_of_the_loss_figure():
    m = _metrics()
    m.loc[m["kind"] == "epoch", "loss"] = [1.0, np.nan, np.inf]
    fig = tc.loss_figure(m)
    [train] = [t for t in fig.data if t.name == "train loss"]
    assert list(train.y) == [1.0]


def test_progress_texts():
    running = tc.progress({"progress": 0.25, "epoch": 3, "epochs": 12, "eta_s": 75}, "running")
    assert running == tc.Progress("running", 0.25, "epoch 3/12 · ETA 1 min 15 s", True)
    queued = tc.progress({"message": "queued: waiting for 1 earlier run(s)"}, "queued")
    assert queued.active and queued.fraction == 0 and "waiting" in queued.text
    done = tc.progress({"progress": 0.5, "epoch": 6, "epochs": 12, "seconds": 9.4}, "done")
    assert done.fraction == 1.0 and done.text == "epoch 6/12 · done · took 9 s" and not done.active
    sep = tc.progress({"progress": 0.5, "epoch": 1, "epochs": 2, "stages": 3, "stage_index": 2,
                       "stage": "sub:a", "eta_s": 5}, "running")
    assert "model 2/3 (sub:a)" in sep.text
    assert tc.format_seconds(None) == "?" and tc.format_seconds(3725) == "1 h 02 min"


def test_alerts_put_broken_training_first():
    status = {"alerts": [{"kind": "overfitting", "message": "gap"}, {"kind": "collapse", "message": "stuck"},
                         "not an alert"]}
    kinds = [(a["kind"], a["level"]) for a in tc.alerts(status)]
    assert kinds == [("collapse", "error"), ("overfitting", "warning")]
    assert tc.alerts({}) == []


def _grid(monitor: str = "val_macro_f1") -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": ["a", "b", "c"], "grid_id": "g", "state": ["done", "done", "running"],
        "model": ["cnn", "mobilenet_v2", "cnn"], "lr": [1e-3, 1e-3, 1e-2], "monitor": monitor,
        "best_value": [0.4, 0.7, np.nan], "best_epoch": [3, 4, None], "test_accuracy": [0.5, 0.8, None],
        "test_macro_f1": [0.4, 0.75, None],
    })


def test_grid_parallel_coordinates_highlights_the_best_finished_run():
    t = _grid()
    assert tc.grid_params(t) == ["model", "lr"]
    assert tc.best_run(t) == "b"
    fig = tc.grid_parallel_coordinates(t)
    [trace] = fig.data
    labels = [d.label for d in trace.dimensions]
    assert labels == ["model", "lr", "val_macro_f1", "test_accuracy", "test_macro_f1"]
    model_dim = trace.dimensions[0]
    assert list(model_dim.ticktext) == ["cnn", "mobilenet_v2"] and list(model_dim.values) == [0, 1]
    assert list(trace.line.color) == [pytest.approx(0.1), 1.0]  # 2 finished runs; the best is red (1.0)
    assert "b" in fig.layout.title.text
    # val_loss: lowest is best
    low = _grid("val_loss")
    assert tc.best_run(low) == "a"
    assert list(tc.grid_parallel_coordinates(low).data[0].line.color)[0] == 1.0


def test_grid_figure_without_finished_runs_says_so():
    t = _grid().assign(best_value=np.nan)
    fig = tc.grid_parallel_coordinates(t)
    assert not fig.data and "No finished" in fig.layout.annotations[0].text
    assert tc.best_run(t) is None and tc.grid_params(pd.DataFrame()) == []


def test_runs_table_marks_states():
    runs = pd.DataFrame({"run_id": ["r1", "r2"], "state": ["interrupted", "done"], "task": "multiclass",
                         "model": "cnn", "epoch": [2, 5], "monitor": "val_loss", "best_value": [0.123456, 0.5],
                         "best_epoch": [1, 5], "message": "", "created": pd.Timestamp("2026-01-01"),
                         "path": "/x"})
    out = tc.runs_table(runs)
    assert "path" not in out.columns and out["state"].tolist() == ["⚠️ interrupted", "✅ done"]
    assert out["best_value"].iloc[0] == 0.1235
    assert list(tc.runs_table(pd.DataFrame()).columns) == list(tc.RUNS_TABLE_COLUMNS)


def test_an_averaged_final_model_is_starred_instead_of_one_epoch():
    m = _metrics(epochs=3)
    m = pd.concat([m, pd.DataFrame([{"kind": "average", "stage": "main", "epoch": 3, "epochs_averaged": [2, 3],
                                     "val_loss": 1.7, "val_accuracy": 0.6, "val_macro_f1": 0.45}])],
                  ignore_index=True)
    fig = tc.metric_figure(m, monitor="val_macro_f1")
    names = [t.name for t in fig.data]
    assert "best val_macro_f1" not in names  # the best epoch is not the model the run kept
    [star] = [t for t in fig.data if t.name == "final model: average of epochs 2-3"]
    assert (star.x[0], star.y[0]) == (3.0, 0.45)
    fig = tc.metric_figure(m, monitor="val_loss")
    assert any("final model: average of epochs 2-3" in (a.text or "") for a in fig.layout.annotations)
    assert tc.curve_frame(m)["kind"].isin(["batch", "epoch"]).all()  # the record is not an epoch point
    assert tc.averaged_epochs(m) == (2, 3) and tc.averaged_epochs(_metrics()) is None


def test_when_val_chose_the_probe_over_the_average_the_probe_epoch_is_starred():
    m = _metrics(epochs=3)
    best = int(pd.to_numeric(m.query("kind == 'epoch'")["val_macro_f1"]).idxmax())
    epoch = int(m.loc[best, "epoch"])
    m = pd.concat([m, pd.DataFrame([
        {"kind": "average", "stage": "main", "epoch": 3, "epochs_averaged": [2, 3], "val_loss": 1.7,
         "val_accuracy": 0.6, "val_macro_f1": 0.01},
        {"kind": "selection", "stage": "main", "monitor": "val_macro_f1", "chosen": "linear probe", "epoch": epoch,
         "epochs_averaged": None, "reason": "linear probe has the best val_macro_f1",
         "candidates": [{"name": "linear probe", "epoch": epoch, "value": 0.9}]}])], ignore_index=True)
    fig = tc.metric_figure(m, monitor="val_macro_f1")
    names = [t.name for t in fig.data]
    assert not any("average" in str(n) for n in names)  # the average was not kept: no star on it
    [star] = [t for t in fig.data if t.name == "final model: linear probe"]
    assert star.x[0] == float(epoch)
    assert tc.averaged_epochs(m) is None and tc.final_choice(m)["chosen"] == "linear probe"
    assert tc.curve_frame(m)["kind"].isin(["batch", "epoch"]).all()
