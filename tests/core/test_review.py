"""core.review: decisions in SQLite -> effective labels, exports, flagger precision; and training on them."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import datasets, jobs, review, runs, targets, training
from core.workspace import Workspace

HIERARCHY = {"action": ("button", "link"), "choice": ("checkbox", "radio")}


def _hier_dataset(ws: Workspace, tmp_path, *, per_class: int = 4) -> datasets.Dataset:
    """A tiny hierarchical table dataset (group > element), 16 images, one with a conflicting group."""
    root = tmp_path / "tiny"
    (root / "img").mkdir(parents=True)
    rows = []
    k = 0
    for group, elements in HIERARCHY.items():
        for element in elements:
            for i in range(per_class):
                name = f"img/{element}_{i}.png"
                Image.new("RGB", (12 + i, 12), (20 * k % 255, 40 + 10 * i, 90)).save(root / name)
                rows.append({"image": name, "group": group, "element": element})
                k += 1
    rows[0]["group"] = "choice"  # a hierarchy conflict: button under choice (the majority says action)
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    spec = datasets.DatasetSpec(path=str(root), labels=str(root / "labels.csv"), image_column="image",
                                task="hierarchical", label_columns=("group", "element"), name="tiny")
    return datasets.load_dataset(spec, workspace=ws)


def _multilabel_dataset(ws: Workspace, tmp_path) -> datasets.Dataset:
    root = tmp_path / "ml"
    root.mkdir()
    rows = []
    for i in range(8):
        Image.new("RGB", (10, 10), (30 * i, 10, 200)).save(root / f"{i}.png")
        rows.append({"image": f"{i}.png", "sea": i % 2, "sky": 1 if i < 4 else 0, "sand": "" if i == 0 else i % 3 == 0})
    df = pd.DataFrame(rows)
    df["sand"] = df["sand"].map(lambda v: "" if v == "" else int(bool(v)))
    df.to_csv(root / "labels.csv", index=False)
    spec = datasets.DatasetSpec(path=str(root), labels=str(root / "labels.csv"), image_column="image",
                                task="multilabel", label_columns=("sea", "sky", "sand"), name="ml")
    return datasets.load_dataset(spec, workspace=ws)


@pytest.fixture
def ws(loupe_home) -> Workspace:
    return Workspace(loupe_home).ensure()


@pytest.fixture
def hier(ws, tmp_path) -> datasets.Dataset:
    return _hier_dataset(ws, tmp_path)


def _sid(ds, element, i=0):
    return f"img/{element}_{i}.png"


def test_decisions_are_committed_and_survive_reopening(ws, hier):
    ids = review.record_decisions(ws, hier, [
        dict(sample_id=_sid(hier, "link"), action="exclude", detector="uniform"),
        dict(sample_id=_sid(hier, "radio"), action="relabel", new_label="checkbox", detector="label_issue",
             note="looks square"),
    ])
    assert len(ids) == 2
    # a fresh Workspace object = a new connection, as after a server restart
    again = Workspace(ws.root)
    log = review.decisions(again, hier.dataset_id)
    assert list(log["decision_id"]) == sorted(ids, reverse=True)  # newest first
    relabel = log[log["action"] == "relabel"].iloc[0]
    assert (relabel["old_label"], relabel["new_label"], relabel["label_column"]) == ("radio", "checkbox", "element")
    assert relabel["detector"] == "label_issue" and relabel["note"] == "looks square"
    assert relabel["created_at"] > 0 and pd.isna(relabel["undone_at"])
    assert log["active"].all()
    # and it is in the SQLite file itself (no cache in between)
    import sqlite3

    con = sqlite3.connect(ws.db_path)
    assert con.execute("SELECT COUNT(*) FROM decisions WHERE dataset_id=?", (hier.dataset_id,)).fetchone()[0] == 2
    con.close()


def test_latest_decision_wins_and_undo_brings_back_the_previous(ws, hier):
    sid = _sid(hier, "link", 1)
    versions = [review.decision_version(ws, hier.dataset_id)]
    review.record_decision(ws, hier, sid, "exclude", detector="blurry")
    versions.append(review.decision_version(ws, hier.dataset_id))
    keep_id = review.record_decision(ws, hier, sid, "keep", detector="blurry")
    versions.append(review.decision_version(ws, hier.dataset_id))
    eff = review.effective_labels(ws, hier).set_index("sample_id")
    assert not eff.loc[sid, "excluded"] and eff.loc[sid, "decision"] == "keep"
    assert review.undo(ws, keep_id) == 1
    assert review.undo(ws, keep_id) == 0  # already undone: nothing to do
    versions.append(review.decision_version(ws, hier.dataset_id))
    eff = review.effective_labels(ws, hier).set_index("sample_id")
    assert eff.loc[sid, "excluded"] and eff.loc[sid, "decision"] == "exclude"
    active = review.decisions(ws, hier.dataset_id, active_only=True)
    assert list(active["action"]) == ["exclude"]
    assert versions == [0, 1, 2, 3]  # every record and every undo raises the version


def test_undo_last_undoes_the_whole_last_batch(ws, hier):
    review.record_decision(ws, hier, _sid(hier, "button", 1), "exclude")
    batch = review.record_decisions(ws, hier, [dict(sample_id=_sid(hier, "radio", i), action="exclude",
                                                    detector="dark") for i in range(3)])
    assert sorted(review.undo_last(ws, hier.dataset_id)) == sorted(batch)
    active = review.decisions(ws, hier.dataset_id, active_only=True)
    assert list(active["sample_id"]) == [_sid(hier, "button", 1)]
    assert len(review.undo_last(ws, hier.dataset_id)) == 1
    assert review.undo_last(ws, hier.dataset_id) == []
    assert review.decision_version(ws, hier.dataset_id) == 8  # 4 recorded + 4 undone


def test_invalid_decisions_raise_and_write_nothing(ws, hier):
    good = dict(sample_id=_sid(hier, "link"), action="exclude")
    with pytest.raises(ValueError, match="not a sample"):
        review.record_decisions(ws, hier, [good, dict(sample_id="nope.png", action="exclude")])
    with pytest.raises(ValueError, match="action must be one of"):
        review.record_decision(ws, hier, _sid(hier, "link"), "delete")
    with pytest.raises(ValueError, match="needs a non-empty new_label"):
        review.record_decision(ws, hier, _sid(hier, "link"), "relabel")
    with pytest.raises(ValueError, match="not a class of 'element'"):
        review.record_decision(ws, hier, _sid(hier, "link"), "relabel", new_label="slider")
    with pytest.raises(ValueError, match="label_column must be one of"):
        review.record_decision(ws, hier, _sid(hier, "link"), "relabel", new_label="x", label_column="colour")
    assert review.decision_version(ws, hier.dataset_id) == 0


def test_hierarchical_leaf_relabel_keeps_the_parent_consistent(ws, hier):
    # radio (choice) -> link: the group follows the leaf (action), derived from the data
    review.record_decision(ws, hier, _sid(hier, "radio", 2), "relabel", new_label="link")
    # the conflicting row (button under choice): fix the group only
    review.record_decision(ws, hier, _sid(hier, "button", 0), "relabel", new_label="action", label_column="group",
                           detector="hierarchy_conflict")
    eff = review.effective_labels(ws, hier).set_index("sample_id")
    assert tuple(eff.loc[_sid(hier, "radio", 2), ["group", "element"]]) == ("action", "link")
    assert tuple(eff.loc[_sid(hier, "button", 0), ["group", "element"]]) == ("action", "button")
    # every element now has exactly one group
    assert (eff.groupby("element")["group"].nunique() == 1).all()
    # the raw dataset is untouched
    raw = hier.samples.set_index("sample_id")
    assert raw.loc[_sid(hier, "radio", 2), "group"] == "choice"
    frame, version = review.labels_override(ws, hier)
    assert version == 2 and set(frame.columns) == {"sample_id", "group", "element", "excluded"}
    # the patch in the worker's format gives the same labels as effective_labels
    applied = targets.apply_label_overrides(hier.samples, frame).set_index("sample_id")
    pd.testing.assert_frame_equal(applied[["group", "element"]].astype(str),
                                  eff[["group", "element"]].astype(str), check_dtype=False)


def test_labels_override_format_and_exclusion(ws, hier):
    assert review.labels_override(ws, hier) == (None, 0)
    review.record_decision(ws, hier, _sid(hier, "link", 3), "exclude", detector="uniform")
    review.record_decision(ws, hier, _sid(hier, "checkbox", 3), "keep", detector="uniform")
    frame, version = review.labels_override(ws, hier)
    assert version == 2
    assert list(frame["sample_id"]) == [_sid(hier, "link", 3)]  # keep changes nothing: not in the patch
    assert bool(frame["excluded"].iloc[0]) and frame["element"].isna().all()
    applied = targets.apply_label_overrides(hier.samples, frame)
    assert len(applied) == len(hier.samples) - 1 and _sid(hier, "link", 3) not in set(applied["sample_id"])
    eff = review.effective_labels(ws, hier)
    assert len(eff) == len(hier.samples) and int(eff["excluded"].sum()) == 1


def test_exports_patch_and_cleaned_csv(ws, hier, tmp_path):
    review.record_decision(ws, hier, _sid(hier, "link", 0), "exclude", detector="duplicate")
    review.record_decision(ws, hier, _sid(hier, "radio", 1), "relabel", new_label="button", detector="label_issue")
    review.record_decision(ws, hier, _sid(hier, "checkbox", 1), "keep", detector="dark")
    patch = review.read_patch_csv(review.export_patch_csv(ws, hier))
    assert list(patch.columns[:4]) == ["sample_id", "path", "action", "excluded"]
    assert {"old_group", "group", "old_element", "element", "detector", "decided_at"} <= set(patch.columns)
    by = patch.set_index("sample_id")
    assert by.loc[_sid(hier, "radio", 1), ["old_group", "old_element", "group", "element"]].tolist() == \
        ["choice", "radio", "action", "button"]
    assert by.loc[_sid(hier, "link", 0), "excluded"] == "True"
    assert by.loc[_sid(hier, "checkbox", 1), "action"] == "keep"
    assert by.loc[_sid(hier, "radio", 1), "path"] == _sid(hier, "radio", 1)  # as given in the dataset
    # cleaned CSV to a file; it loads back as a dataset without the excluded sample
    out = review.export_cleaned_csv(ws, hier, tmp_path / "cleaned.csv")
    cleaned = pd.read_csv(out, dtype=str)
    assert len(cleaned) == len(hier.samples) - 1
    assert list(cleaned.columns) == ["path", "sample_id", "split", "group", "element"]
    again = datasets.load_dataset(datasets.DatasetSpec(path=str(hier.root), labels=str(out), image_column="path",
                                                       task="hierarchical", label_columns=("group", "element"),
                                                       split_column="split", name="cleaned"), workspace=ws)
    assert len(again.samples) == len(hier.samples) - 1
    row = again.samples.set_index("rel_path").loc[_sid(hier, "radio", 1)]
    assert (row["group"], row["element"]) == ("action", "button")
    full = pd.read_csv(io.BytesIO(review.export_cleaned_csv(ws, hier, include_excluded=True)), dtype=str)
    assert len(full) == len(hier.samples) and (full["excluded"] == "True").sum() == 1


def test_detector_precision_counts_confirmed_and_rejected(ws, hier):
    decided = [("link", 0, "exclude", "uniform"), ("link", 1, "keep", "uniform"), ("link", 2, "keep", "uniform"),
               ("radio", 0, "relabel", "label_issue"), ("radio", 1, "exclude", "duplicate,near_duplicate")]
    for element, i, action, det in decided:
        review.record_decision(ws, hier, _sid(hier, element, i), action, detector=det,
                               new_label="checkbox" if action == "relabel" else None)
    # undone decisions do not count; a later decision replaces an earlier one
    undone = review.record_decision(ws, hier, _sid(hier, "button", 3), "exclude", detector="uniform")
    review.undo(ws, undone)
    issues = pd.DataFrame({"sample_id": [_sid(hier, "link", i) for i in range(4)] + [_sid(hier, "button", 2)],
                           "issue": ["uniform"] * 4 + ["dark"]})
    prec = review.detector_precision(ws, hier.dataset_id, issues=issues).set_index("detector")
    # naive reference
    assert prec.loc["uniform", ["confirmed", "rejected", "reviewed"]].tolist() == [1, 2, 3]
    assert prec.loc["uniform", "precision"] == pytest.approx(1 / 3)
    assert prec.loc["label_issue", "precision"] == 1.0
    assert prec.loc["duplicate", "confirmed"] == 1 and prec.loc["near_duplicate", "confirmed"] == 1
    assert prec.loc["uniform", "flagged"] == 4 and prec.loc["uniform", "pending"] == 1
    assert prec.loc["dark", "reviewed"] == 0 and np.isnan(prec.loc["dark", "precision"])


def test_multilabel_relabel_sets_the_whole_label_set(ws, tmp_path):
    ds = _multilabel_dataset(ws, tmp_path)
    sid = ds.samples["sample_id"].iloc[0]
    review.record_decision(ws, ds, sid, "relabel", new_label=["sky", "sea"])
    log = review.decisions(ws, ds.dataset_id)
    assert log["new_label"].iloc[0] == "sea|sky" and log["label_column"].isna().all()
    eff = review.effective_labels(ws, ds).set_index("sample_id")
    assert eff.loc[sid, ["sea", "sky", "sand"]].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="unknown label"):
        review.record_decision(ws, ds, sid, "relabel", new_label="sea|moon")
    cleaned = pd.read_csv(io.BytesIO(review.export_cleaned_csv(ws, ds)), dtype=str, keep_default_na=False)
    other = cleaned.set_index("sample_id")
    assert other.loc[sid, "sand"] == "0"
    # a missing entry that nobody reviewed stays missing (empty), never 0
    assert (cleaned["sand"] == "").sum() == int(ds.samples["sand"].isna().sum()) - 1


def test_resolve_review_labels_raw_and_reproducible(ws, hier):
    review.record_decision(ws, hier, _sid(hier, "link", 0), "exclude")
    cfg = training.recommended_config("cnn", dataset_id=hier.dataset_id)
    resolved, extra = jobs.resolve_review_labels(ws, cfg)
    assert extra == {"decision_version": 1} and resolved.label_patch_version == "1"
    assert _sid(hier, "link", 0) in set(pd.read_parquet(resolved.labels_override_path)["sample_id"])
    # a config already resolved (a run's config.json) keeps its patch, whatever was decided since
    review.record_decision(ws, hier, _sid(hier, "link", 1), "exclude")
    assert jobs.resolve_review_labels(ws, resolved) == (resolved, {})
    raw, extra = jobs.resolve_review_labels(ws, cfg, raw_labels=True)
    assert raw.label_patch_version == jobs.RAW_LABELS and raw.labels_override_path is None
    assert extra == {"decision_version": None}


def test_run_after_decisions_records_version_and_trains_without_excluded(ws):
    from core import demo
    from tests.conftest import TINY_CNN

    ds = demo.ensure_demo_dataset(ws)
    test_ids = ds.samples.loc[ds.samples["split"] == "test", "sample_id"].tolist()
    excluded = test_ids[:5]
    relabelled = test_ids[5]
    review.record_decisions(ws, ds, [dict(sample_id=s, action="exclude", detector="uniform") for s in excluded])
    review.record_decision(ws, ds, relabelled, "relabel", new_label="textarea", detector="label_issue")
    version = review.decision_version(ws, ds.dataset_id)
    cfg = training.recommended_config(**{**TINY_CNN, "epochs": 1, "image_size": 16, "dataset_id": ds.dataset_id})
    out = ws.runs_dir / "after-review"
    result = jobs.run_worker(cfg, out=out, workspace=ws)
    assert result.state == "done"
    config = json.loads((out / "config.json").read_text())
    assert config["decision_version"] == version == 6  # 5 excludes + 1 relabel
    assert config["label_patch_version"] == str(version) and config["labels_override_path"]
    preds = pd.read_csv(runs.RunDir(out).predictions, dtype={"sample_id": str})
    preds = preds[preds["split"] == "test"]
    ids = set(preds["sample_id"])
    assert not ids & set(excluded)
    assert len(ids) == len(test_ids) - len(excluded)
    row = preds[preds["sample_id"] == relabelled].iloc[0]
    assert row["element_true"] == "textarea" and row["group_true"] == "text_entry"


def test_the_review_patch_a_run_trains_on_is_stored_in_the_run(ws, hier):
    review.record_decision(ws, hier, _sid(hier, "link", 0), "exclude")
    rd = runs.RunDir(ws.runs_dir / "with-patch")
    rd.path.mkdir(parents=True)
    cfg = training.recommended_config("cnn", dataset_id=hier.dataset_id)
    resolved, extra = jobs.resolve_review_labels(ws, cfg, run_dir=rd)
    assert extra == {"decision_version": 1} and resolved.labels_override_path == str(rd.label_patch)
    assert _sid(hier, "link", 0) in set(pd.read_parquet(rd.label_patch)["sample_id"])
    # a run directory that already holds a run is never trained over (it would keep the old config.json)
    runs.write_config(rd, resolved.to_dict())
    runs.write_status(rd, "done")
    with pytest.raises(ValueError, match=r"already holds a run \(done\)"):
        jobs.run_worker(resolved, out=rd.path, workspace=ws)
