"""core.runs: the run-directory contract (status, metrics, labels, predictions, thresholds, listing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from core import runs
from core.runs import status as runs_status

MULTICLASS = {"task": "multiclass", "classes": ["daisy", "tulip", "rose"]}
BINARY = {"task": "binary", "classes": ["other", "sunflower"], "positive_class": "sunflower"}
MULTILABEL = {"task": "multilabel", "labels": ["sea", "sunset", "trees"]}
HIER = {"task": "hierarchical", "levels": ["master", "article"],
        "level_classes": {"master": ["Apparel", "Footwear"], "article": ["Tshirts", "Jeans", "Shoes"]},
        "parents": {"article": {"Tshirts": "Apparel", "Jeans": "Apparel", "Shoes": "Footwear"}}}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# -- paths --------------------------------------------------------------------

def test_rundir_names_every_contract_file(tmp_path):
    rd = runs.RunDir(tmp_path / "r1")
    assert rd.run_id == "r1"
    names = [p.name for p in (rd.config, rd.status, rd.metrics, rd.model, rd.labels, rd.preprocessing,
                              rd.predictions, rd.thresholds, rd.worker_log)]
    assert names == ["config.json", "status.json", "metrics.jsonl", "model.keras", "labels.json",
                     "preprocessing.json", "predictions.csv", "thresholds.json", "worker.log"]
    assert not rd.looks_like_run()
    runs.write_config(rd, {"task": "multiclass"})
    assert rd.looks_like_run()
    assert runs.read_config(rd)["task"] == "multiclass"


# -- status -------------------------------------------------------------------

def test_write_status_merges_fields_and_records_pid_start(tmp_path):
    rd = tmp_path / "run"
    s = runs.write_status(rd, "running", pid=os.getpid(), epoch=0)
    assert s["pid_start"] == runs.process_start_ticks(os.getpid())
    runs.write_status(rd, "running", epoch=3, message="epoch 3")
    st = runs.read_status(rd)
    assert (st["state"], st["pid"], st["epoch"], st["message"]) == ("running", os.getpid(), 3, "epoch 3")
    assert st["updated_at"] >= st["created_at"]
    assert not list(rd.glob("*.tmp")), "atomic writes leave no temp files"


def test_write_status_rejects_unknown_state(tmp_path):
    with pytest.raises(ValueError, match="'finished'"):
        runs.write_status(tmp_path, "finished")


@pytest.mark.parametrize("content", [None, "", "{not json", "[1, 2]", '{"state": "exploded"}'])
def test_read_status_never_raises(tmp_path, content):
    if content is not None:
        (tmp_path / "status.json").write_text(content)
    st = runs.read_status(tmp_path)
    assert st["state"] == "unknown"
    assert "status.json" in st["error"]
    assert runs.effective_state(st) == "unknown"


def test_effective_state_live_dead_reused_and_terminal(tmp_path):
    me = os.getpid()
    assert runs.effective_state(runs.write_status(tmp_path, "running", pid=me)) == "running"
    assert runs.effective_state({"state": "running", "pid": _dead_pid()}) == "interrupted"
    assert runs.effective_state({"state": "queued", "pid": _dead_pid()}) == "interrupted"
    # same pid, different start time: the pid was reused by another process
    reused = {"state": "running", "pid": me, "pid_start": runs.process_start_ticks(me) + 1}
    assert runs.effective_state(reused) == "interrupted"
    assert runs.effective_state({"state": "running", "pid": me, "pid_start": "garbage"}) == "running"
    assert runs.effective_state({"state": "running", "pid": "garbage"}) == "interrupted"
    assert runs.effective_state({"state": "queued"}) == "queued"
    assert runs.effective_state({"state": "running"}) == "interrupted"
    assert runs.effective_state({"state": "done", "pid": _dead_pid()}) == "done"
    assert runs.effective_state({"state": "running", "pid": me, "host": "another-machine"}) == "running"


def test_unreaped_worker_counts_as_dead(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 10
        while runs_status._proc_state(proc.pid) not in ("Z", None) and time.time() < deadline:
            time.sleep(0.05)
        assert runs_status._proc_state(proc.pid) in ("Z", None)  # exited, not reaped (None: no /proc)
        assert not runs.pid_alive(proc.pid)
        status = runs.write_status(tmp_path, "running", pid=proc.pid)
        assert runs.effective_state(status) == "interrupted"
    finally:
        proc.wait()


# -- metrics.jsonl ------------------------------------------------------------

def test_metrics_append_and_read_skip_partial_lines(tmp_path):
    runs.append_metrics(tmp_path, {"epoch": 0, "loss": 1.5, "val_macro_f1": np.float32(0.25)})
    runs.append_metrics(tmp_path, {"epoch": 1, "loss": float("nan"), "val_macro_f1": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "loss": 0.')  # a writer died mid-line
    df = runs.read_metrics(tmp_path)
    assert df["epoch"].tolist() == [0, 1]
    assert np.isnan(df["loss"][1]) and df["val_macro_f1"][0] == pytest.approx(0.25)
    runs.append_metrics(tmp_path, {"epoch": 3, "loss": 0.5})  # starts on a fresh line
    (tmp_path / "metrics.jsonl").open("a").write("garbage\n[1,2]\n\n")
    assert runs.read_metrics(tmp_path)["epoch"].tolist() == [0, 1, 3]


def test_read_metrics_missing_file_is_empty(tmp_path):
    assert runs.read_metrics(tmp_path / "nope").empty


def test_metrics_concurrent_reader_sees_whole_records(tmp_path):
    def writer():
        for i in range(200):
            runs.append_metrics(tmp_path, {"epoch": i, "batch": i, "loss": 1.0 / (i + 1)})

    t = threading.Thread(target=writer)
    t.start()
    seen = []
    while t.is_alive():
        df = runs.read_metrics(tmp_path)
        seen.append(len(df))
        if len(df):
            assert df["epoch"].tolist() == list(range(len(df)))
    t.join()
    assert len(runs.read_metrics(tmp_path)) == 200
    assert seen == sorted(seen)


# -- labels.json ----------------------------------------------------------------

@pytest.mark.parametrize("labels", [MULTICLASS, BINARY, MULTILABEL, HIER])
def test_labels_round_trip(tmp_path, labels):
    runs.write_labels(tmp_path, labels)
    back = runs.read_labels(tmp_path)
    for k, v in labels.items():
        assert back[k] == v


@pytest.mark.parametrize("bad, words", [
    ({"task": "regression"}, "task"),
    ({"task": "multiclass", "classes": []}, "classes"),
    ({"task": "multiclass", "classes": ["a", "a"]}, "duplicate"),
    ({"task": "binary", "classes": ["a", "b"], "positive_class": "c"}, "positive_class"),
    ({"task": "binary", "classes": ["a", "b", "c"], "positive_class": "a"}, "exactly 2"),
    ({"task": "multilabel"}, "labels"),
    ({**HIER, "parents": {}}, "parents has no entry for level 'article'"),
    ({**HIER, "parents": {"article": {"Shoes": "Bags"}}}, "'Bags'"),
    ({**HIER, "level_classes": {"master": ["Apparel"]}}, "level 'article'"),
])
def test_labels_invalid_named(tmp_path, bad, words):
    with pytest.raises(ValueError, match="labels.json") as exc:
        runs.write_labels(tmp_path, bad)
    assert words in str(exc.value)
    assert not (tmp_path / "labels.json").exists()


def test_read_labels_missing_or_corrupt_names_file(tmp_path):
    with pytest.raises(ValueError, match="labels.json is missing"):
        runs.read_labels(tmp_path)
    (tmp_path / "labels.json").write_text("{oops")
    with pytest.raises(ValueError, match="labels.json is unreadable"):
        runs.read_labels(tmp_path)


# -- predictions.csv ------------------------------------------------------------

def _ids(n):
    return dict(sample_ids=[f"img_{i}.jpg" for i in range(n)], paths=[f"/data/img_{i}.jpg" for i in range(n)])


def test_predictions_multiclass_round_trip_and_split(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=6)
    y = np.array([0, 1, 2, 2, -1, 0])
    runs.write_labels(tmp_path, MULTICLASS)
    frame = runs.predictions_frame(MULTICLASS, **_ids(6), splits=["test"] * 4 + ["val"] * 2, y_true=y, probs=probs)
    assert list(frame.columns) == runs.prediction_columns(MULTICLASS)
    assert list(frame.columns) == ["sample_id", "path", "split", "true", "pred", "p_daisy", "p_tulip", "p_rose"]
    runs.write_predictions(tmp_path, frame)
    pr = runs.read_predictions(tmp_path)
    assert pr.task == "multiclass" and pr.classes == ("daisy", "tulip", "rose")
    np.testing.assert_array_equal(pr.y_true, y)  # empty true -> -1
    np.testing.assert_array_equal(pr.y_pred, probs.argmax(1))
    np.testing.assert_allclose(pr.probs, probs, rtol=1e-7)
    assert pr.sample_ids.tolist() == [f"img_{i}.jpg" for i in range(6)]
    val = runs.read_predictions(tmp_path, split="val")
    assert val.n_samples == 2 and val.paths.tolist() == ["/data/img_4.jpg", "/data/img_5.jpg"]
    with pytest.raises(ValueError, match=r"no rows with split 'train' \(splits present: \['test', 'val'\]\)"):
        runs.read_predictions(tmp_path, split="train")


def test_predictions_class_names_that_look_like_na_or_numbers(tmp_path):
    labels = {"task": "multiclass", "classes": ["NA", "1", "None"]}
    runs.write_labels(tmp_path, labels)
    probs = np.eye(3)
    runs.write_predictions(tmp_path, runs.predictions_frame(labels, **_ids(3), splits="test",
                                                           y_true=["NA", "1", "None"], probs=probs))
    pr = runs.read_predictions(tmp_path)
    assert pr.classes == ("NA", "1", "None")
    np.testing.assert_array_equal(pr.y_true, [0, 1, 2])


def test_predictions_binary_tolerates_positive_column_only(tmp_path):
    runs.write_labels(tmp_path, BINARY)
    pd.DataFrame({"sample_id": ["a", "b"], "path": ["/a", "/b"], "split": ["test", "test"],
                  "true": ["sunflower", "other"], "pred": ["sunflower", "other"], "p_sunflower": [0.8, 0.3]}
                 ).to_csv(tmp_path / "predictions.csv", index=False)
    pr = runs.read_predictions(tmp_path)
    np.testing.assert_allclose(pr.probs, [[0.2, 0.8], [0.7, 0.3]])
    assert pr.positive_class == "sunflower"


def test_predictions_multilabel_missing_entries_are_nan(tmp_path):
    y = np.array([[1, 0, np.nan], [np.nan, np.nan, 1], [0, 1, 0]])
    probs = np.array([[0.9, 0.2, 0.6], [0.1, 0.4, 0.7], [0.3, 0.8, 0.2]])
    runs.write_labels(tmp_path, MULTILABEL)
    runs.write_predictions(tmp_path, runs.predictions_frame(MULTILABEL, **_ids(3), splits="test", y_true=y,
                                                           probs=probs))
    text = (tmp_path / "predictions.csv").read_text().splitlines()
    assert text[0] == ("sample_id,path,split,true_sea,true_sunset,true_trees,pred_sea,pred_sunset,pred_trees,"
                       "p_sea,p_sunset,p_trees")
    assert text[2].startswith("img_1.jpg,/data/img_1.jpg,test,,,1,0,0,1,")
    pr = runs.read_predictions(tmp_path)
    np.testing.assert_array_equal(np.isnan(pr.y_true), np.isnan(y))
    np.testing.assert_array_equal(np.nan_to_num(pr.y_true, nan=7), np.nan_to_num(y, nan=7))
    np.testing.assert_array_equal(pr.y_pred, (probs >= 0.5).astype(int))


def test_predictions_hierarchical_per_level(tmp_path):
    runs.write_labels(tmp_path, HIER)
    y = {"master": [0, 1, 0], "article": ["Jeans", "Shoes", "Tshirts"]}
    probs = {"master": [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6]],
             "article": [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]]}
    frame = runs.predictions_frame(HIER, **_ids(3), splits="test", y_true=y, probs=probs)
    assert list(frame.columns)[3:8] == ["master_true", "master_pred", "master_p_Apparel", "master_p_Footwear",
                                        "article_true"]
    runs.write_predictions(tmp_path, frame)
    pr = runs.read_predictions(tmp_path)
    assert pr.levels == ("master", "article") and pr.classes == ("Tshirts", "Jeans", "Shoes")
    np.testing.assert_array_equal(pr.level_true["article"], [1, 2, 0])
    np.testing.assert_array_equal(pr.y_true, [1, 2, 0])
    np.testing.assert_array_equal(pr.level_pred["master"], [0, 1, 1])
    np.testing.assert_allclose(pr.level_probs["master"], probs["master"])
    assert pr.parents["article"]["Shoes"] == "Footwear"


def test_predictions_errors_name_file_column_and_row(tmp_path):
    runs.write_labels(tmp_path, MULTICLASS)
    base = runs.predictions_frame(MULTICLASS, **_ids(3), splits="test", y_true=[0, 1, 2], probs=np.eye(3))
    base.drop(columns=["p_rose"]).to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"predictions.csv: missing column 'p_rose'"):
        runs.read_predictions(tmp_path)
    bad = base.copy()
    bad.loc[1, "true"] = "orchid"
    bad.to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'true', data row 2 \(sample 'img_1.jpg'\): 'orchid' is not"):
        runs.read_predictions(tmp_path)
    bad = base.copy()
    bad["p_tulip"] = bad["p_tulip"].astype(object)
    bad.loc[2, "p_tulip"] = "high"
    bad.to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"'p_tulip', data row 3 .*expected a probability in \[0, 1\]; found 'high'"):
        runs.read_predictions(tmp_path)
    bad = base.copy()
    bad.loc[0, "p_rose"] = 3.2  # logits saved by mistake
    bad.to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'p_rose', data row 1 .*expected a probability in \[0, 1\]"):
        runs.read_predictions(tmp_path)
    bad = base.copy()
    bad.loc[1, "p_daisy"] = np.nan
    bad.to_csv(tmp_path / "predictions.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'p_daisy', data row 2 .*found an empty cell"):
        runs.read_predictions(tmp_path)
    with pytest.raises(ValueError, match="lacks columns"):
        runs.write_predictions(tmp_path, base.drop(columns=["split"]))
    with pytest.raises(ValueError, match="lacks columns.*p_daisy"):
        runs.write_predictions(tmp_path, base.drop(columns=["p_daisy"]))
    (tmp_path / "labels.json").unlink()
    with pytest.raises(ValueError, match="labels.json is missing"):
        runs.read_predictions(tmp_path)


def test_predictions_frame_validates_shapes():
    with pytest.raises(ValueError, match=r"probs must have shape \(2, 3\)"):
        runs.predictions_frame(MULTICLASS, **_ids(2), splits="test", y_true=[0, 1], probs=np.eye(2))
    with pytest.raises(ValueError, match="not classes"):
        runs.predictions_frame(MULTICLASS, **_ids(1), splits="test", y_true=["orchid"], probs=np.eye(3)[:1])
    with pytest.raises(ValueError, match=r"no entry for levels \['article'\]"):
        runs.predictions_frame(HIER, **_ids(1), splits="test", y_true={"master": [0]},
                               probs={"master": [[1, 0]], "article": [[1, 0, 0]]})
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        runs.predictions_frame(MULTILABEL, **_ids(1), splits="test", y_true=[[2, 0, 1]], probs=[[0.1, 0.2, 0.3]])


# -- thresholds.json ------------------------------------------------------------

def test_thresholds_sections_do_not_overwrite_each_other(tmp_path):
    assert runs.read_thresholds(tmp_path) == {}
    runs.write_thresholds(tmp_path, classes={"daisy": {"threshold": 0.7, "precision": 0.9, "recall": 0.5},
                                             "rose": None})
    runs.write_thresholds(tmp_path, ood={"threshold": 1.3, "method": "knn"})
    th = runs.read_thresholds(tmp_path)
    assert th["classes"]["daisy"]["threshold"] == 0.7 and th["classes"]["rose"] is None
    assert th["ood"] == {"threshold": 1.3, "method": "knn"}
    runs.write_thresholds(tmp_path, classes={"daisy": {"threshold": 0.6}}, meta={"target_precision": 0.95})
    th = runs.read_thresholds(tmp_path)
    assert th["ood"]["threshold"] == 1.3 and th["classes"] == {"daisy": {"threshold": 0.6}}
    assert th["meta"] == {"target_precision": 0.95}
    assert runs.class_thresholds(tmp_path) == {"daisy": 0.6}


def test_thresholds_concurrent_writers_keep_both_sections(tmp_path):
    def classes():
        for i in range(30):
            runs.write_thresholds(tmp_path, classes={"a": {"threshold": i / 100}})

    def ood():
        for i in range(30):
            runs.write_thresholds(tmp_path, ood={"threshold": float(i)})

    ts = [threading.Thread(target=classes), threading.Thread(target=ood)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    th = runs.read_thresholds(tmp_path)
    assert th["classes"]["a"]["threshold"] == 0.29 and th["ood"]["threshold"] == 29.0


def test_thresholds_bad_input_and_corrupt_file(tmp_path):
    with pytest.raises(ValueError, match="at least one"):
        runs.write_thresholds(tmp_path)
    with pytest.raises(ValueError, match=r"classes\['a'\]"):
        runs.write_thresholds(tmp_path, classes={"a": 0.5})
    (tmp_path / "thresholds.json").write_text("{corrupt")
    assert runs.read_thresholds(tmp_path) == {} and runs.class_thresholds(tmp_path) == {}


# -- list_runs ------------------------------------------------------------------

def test_list_runs_states_best_metric_and_half_written_runs(tmp_path):
    root = tmp_path / "runs"
    done = root / "r_done"
    runs.write_config(done, {"task": "multiclass", "model": {"name": "cnn"}, "monitor": "val_macro_f1",
                             "created_at": 100.0, "dataset_id": "ds1"})
    runs.write_status(done, "done", epoch=2)
    for e, f1 in enumerate([0.2, 0.6, 0.5]):
        runs.append_metrics(done, {"epoch": e, "val_macro_f1": f1, "val_loss": 1 - f1})
    runs.append_metrics(done, {"batch": 5, "loss": 0.3})  # a per-batch record has no val metric
    (done / "model.keras").write_bytes(b"x")

    dead = root / "r_dead"
    runs.write_config(dead, {"task": "binary", "model": "mobilenet_v2", "monitor": "val_loss", "created_at": 200.0})
    runs.write_status(dead, "running", pid=_dead_pid(), epoch=1)
    for e, loss in enumerate([0.9, 0.4]):
        runs.append_metrics(dead, {"epoch": e, "val_loss": loss})
    (dead / "metrics.jsonl").open("a").write('{"epoch": 2, "val_lo')

    half = root / "r_half"
    runs.write_config(half, {"task": "multilabel", "created_at": 300.0})
    corrupt = root / "r_corrupt"
    corrupt.mkdir()
    (corrupt / "status.json").write_text("{")
    (root / "not_a_run").mkdir()
    (root / "stray.txt").write_text("x")

    df = runs.list_runs(root)
    assert list(df.columns) == list(runs.RUN_COLUMNS)
    # newest first; r_corrupt has no config, so its folder's mtime (now) dates it
    assert df["run_id"].tolist() == ["r_corrupt", "r_half", "r_dead", "r_done"]
    rows = df.set_index("run_id")
    assert rows.at["r_done", "state"] == "done" and rows.at["r_done", "model"] == "cnn"
    assert rows.at["r_done", "best_value"] == pytest.approx(0.6) and rows.at["r_done", "best_epoch"] == 1
    assert bool(rows.at["r_done", "has_model"]) and rows.at["r_done", "dataset_id"] == "ds1"
    assert rows.at["r_dead", "state"] == "interrupted" and rows.at["r_dead", "stored_state"] == "running"
    assert rows.at["r_dead", "best_value"] == pytest.approx(0.4)  # val_loss: lower is better
    assert rows.at["r_half", "state"] == "unknown" and "missing" in rows.at["r_half", "message"]
    assert rows.at["r_corrupt", "state"] == "unknown" and "unreadable" in rows.at["r_corrupt", "message"]
    assert rows.at["r_done", "created"] == pd.Timestamp(100.0, unit="s")


def test_list_runs_missing_folder_is_empty(tmp_path):
    df = runs.list_runs(tmp_path / "nothing")
    assert df.empty and list(df.columns) == list(runs.RUN_COLUMNS)


def test_status_json_is_plain_json(tmp_path):
    runs.write_status(tmp_path, "failed", message="NaN loss", pid=np.int64(os.getpid()))
    assert json.loads((tmp_path / "status.json").read_text())["pid"] == os.getpid()


def test_config_json_is_written_once_and_the_workers_resolved_json_lies_over_it(tmp_path):
    rd = runs.RunDir(tmp_path / "r")
    rd.path.mkdir()
    runs.write_config(rd, {"task": "multiclass", "dataset": {"path": "/data"}, "dataset_id": None})
    with pytest.raises(ValueError, match="written once"):
        runs.write_config(rd, {"task": "binary"})
    assert runs.read_config(rd)["task"] == "multiclass"
    runs.record_resolved(rd, {"dataset_id": "d1"})
    runs.record_resolved(rd, {"weights_used": "imagenet", "counts": np.array([3, 4])})
    assert json.loads(rd.config.read_text())["dataset_id"] is None  # config.json itself is never rewritten
    assert json.loads(rd.resolved.read_text()) == {"dataset_id": "d1", "weights_used": "imagenet", "counts": [3, 4]}
    cfg = runs.read_config(rd)
    assert (cfg["task"], cfg["dataset_id"], cfg["weights_used"]) == ("multiclass", "d1", "imagenet")
    rd.resolved.write_text("{torn")  # an unreadable resolved.json: config.json alone
    assert runs.read_config(rd)["dataset_id"] is None


def test_open_run_reads_a_run_once_labels_missing_until_written(tmp_path):
    from core.workspace import Workspace, atomic_write_json

    ws = Workspace(tmp_path / "ws").ensure()
    rd = runs.RunDir(ws.runs_dir / "r1")
    rd.path.mkdir(parents=True)
    runs.write_config(rd, {"task": "multiclass", "image_size": 32})
    run = runs.open_run(rd)
    assert run.labels is None and run.preprocessing == {} and run.config["image_size"] == 32
    assert run.workspace.root == ws.root and run.path == rd.path  # <ws>/runs/<id> belongs to <ws>
    runs.write_labels(rd, {"task": "multiclass", "classes": ["a", "b"]})
    atomic_write_json(rd.preprocessing, {"image_size": 64})
    run = runs.open_run(rd.path)
    assert run.labels["classes"] == ["a", "b"] and run.preprocessing["image_size"] == 64
    with pytest.raises(ValueError, match="names no dataset"):
        run.dataset()
