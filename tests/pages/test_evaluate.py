"""AppTest of the Evaluate page on runs trained on the demo (session fixtures) and on hand-written runs.

The numbers the page shows are checked against scikit-learn on the same predictions.csv.
The session runs are only read; tests that write (thresholds) work on a copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from streamlit.testing.v1 import AppTest

from core import runs
from core.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120
PAGE = "views/evaluate.py"


def _page(run_id: str | None = None, *, via_app: bool = False) -> AppTest:
    """The Evaluate page on ``run_id``: through app.py's navigation, or alone (faster: no Data page first)."""
    if via_app:
        at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
        at.run()
    else:
        at = AppTest.from_file(str(REPO / PAGE), default_timeout=TIMEOUT)
    if run_id is not None:
        at.session_state["run_id"] = run_id
    if via_app:
        at.switch_page(PAGE)
    at.run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in at.metric:
        out.setdefault(m.label, m.value)
    return out


def _frames(at: AppTest) -> list[pd.DataFrame]:
    """Every st.dataframe's data (Styler-backed ones come back as their DataFrame)."""
    return [d.value for d in at.dataframe]


def _frame_with(at: AppTest, *cols: str) -> pd.DataFrame:
    for df in _frames(at):
        if all(c in df.columns for c in cols):
            return df
    raise AssertionError(f"no table with columns {cols}; tables: {[list(d.columns) for d in _frames(at)]}")


def _test_rows(run_dir: Path, prefix: str = "") -> pd.DataFrame:
    df = pd.read_csv(run_dir / "predictions.csv", dtype={f"{prefix}true": str, f"{prefix}pred": str},
                     keep_default_na=False)
    return df[df["split"] == "test"]


@pytest.fixture
def demo_home(demo_workspace, demo_run, demo_multiclass_run, monkeypatch) -> Workspace:
    """The session demo workspace (read only), with both session runs trained."""
    monkeypatch.setenv("LOUPE_HOME", str(demo_workspace.root))
    return demo_workspace


def test_multiclass_run_shows_sklearn_metrics_and_confusion(demo_home, demo_multiclass_run):
    at = _page(demo_multiclass_run.name, via_app=True)
    df = _test_rows(demo_multiclass_run)
    y, pred = df["true"].to_numpy(), df["pred"].to_numpy()
    shown = _metrics(at)
    assert shown["Accuracy"] == f"{skm.accuracy_score(y, pred):.3f}"
    assert shown["Macro F1"] == f"{skm.f1_score(y, pred, average='macro', zero_division=0):.3f}"
    assert shown["Weighted F1"] == f"{skm.f1_score(y, pred, average='weighted', zero_division=0):.3f}"
    classes = runs.read_labels(demo_multiclass_run)["classes"]
    probs = df[[f"p_{c}" for c in classes]].to_numpy()
    aps = [skm.average_precision_score(y == c, probs[:, k]) for k, c in enumerate(classes) if (y == c).any()]
    assert shown["Mean AP"] == f"{np.mean(aps):.3f}"
    # per-class table = sklearn's per-class precision / recall / F1 / support
    table = _frame_with(at, "precision", "recall", "f1", "support", "predicted")
    pr, rc, f1, sup = skm.precision_recall_fscore_support(y, pred, labels=classes, zero_division=0)
    ref = pd.DataFrame({"precision": pr, "recall": rc, "f1": f1, "support": sup}, index=classes)
    got = table.loc[classes]
    np.testing.assert_allclose(got[["precision", "recall", "f1"]].to_numpy(float),
                               ref[["precision", "recall", "f1"]].to_numpy(), atol=1e-9)
    np.testing.assert_array_equal(got["support"].to_numpy(int), sup)
    assert list(table["f1"].astype(float)) == sorted(table["f1"].astype(float))  # worst first by default
    averages = next(d for d in _frames(at) if list(d.index) == ["macro", "micro", "weighted"])
    assert averages.loc["micro", "f1"] == pytest.approx(skm.f1_score(y, pred, average="micro"))
    # the default cell is the most confused pair; its count is sklearn's confusion-matrix entry
    cm = skm.confusion_matrix(y, pred, labels=classes)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    assert at.selectbox(key="ev_cell_true").value == classes[i]
    assert at.selectbox(key="ev_cell_pred").value == classes[j]
    assert shown["Samples in this cell"] == str(cm[i, j])
    assert len(at.get("plotly_chart")) >= 6  # confusion, PR, ROC, sweep, threshold PR, reliability, ...
    assert not any("hierarch" in e.label.lower() for e in at.expander)


def test_sorting_and_row_normalised_toggle(demo_home, demo_multiclass_run):
    at = _page(demo_multiclass_run.name)
    at.selectbox(key="ev_sort").set_value("class name").run()
    table = _frame_with(at, "precision", "recall", "f1", "support", "predicted")
    assert list(table.index) == sorted(table.index)
    at.toggle(key="ev_cm_norm").set_value(True).run()
    assert not at.exception
    # choosing a diagonal cell shows its correct samples
    at.selectbox(key="ev_cell_pred").set_value(at.selectbox(key="ev_cell_true").value).run()
    assert not at.exception
    assert any(m.value.startswith("**Correct") for m in at.markdown)


def test_hierarchical_run_levels_consistency_and_level_switch(demo_home, demo_run):
    at = _page(demo_run.name)
    labels = runs.read_labels(demo_run)
    assert labels["levels"] == ["group", "element"]
    assert at.selectbox(key="ev_level").value == "element"
    df = pd.read_csv(demo_run / "predictions.csv", dtype=str, keep_default_na=False)
    df = df[df["split"] == "test"]
    levels = _frame_with(at, "accuracy", "macro_f1", "weighted_f1", "n_classes")
    for lv in ("group", "element"):
        y, p = df[f"{lv}_true"], df[f"{lv}_pred"]
        assert levels.loc[lv, "accuracy"] == pytest.approx(skm.accuracy_score(y, p))
        assert levels.loc[lv, "macro_f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    parents = labels["parents"]["element"]
    consistent = np.mean([parents[e] == g for e, g in zip(df["element_pred"], df["group_pred"])])
    assert _metrics(at)["Hierarchy-consistent predictions"] == f"{consistent:.1%}"
    assert _metrics(at)["Accuracy"] == f"{skm.accuracy_score(df['element_true'], df['element_pred']):.3f}"
    # switch to the coarse level: every view follows, and thresholds cannot be saved for it
    at.selectbox(key="ev_level").set_value("group").run()
    assert not at.exception
    assert _metrics(at)["Accuracy"] == f"{skm.accuracy_score(df['group_true'], df['group_pred']):.3f}"
    assert set(at.selectbox(key="ev_cell_true").options) == set(labels["level_classes"]["group"])
    assert at.button(key="ev_save_thresholds").disabled


def test_flat_vs_separate_says_per_level_whether_the_difference_is_real(demo_workspace, demo_run, tmp_path,
                                                                        monkeypatch):
    """A copy of the demo workspace holding the flat hierarchical run and a separate-mode run trained
    here: the Evaluate page tables both and says, per level, what core.compare finds (a warning
    when separate loses to flat)."""
    from core import compare
    from core.workspace import home
    from tests.conftest import train_demo_run

    shutil.copytree(demo_workspace.root, tmp_path / "ws", ignore=lambda d, names: ["runs"] if d ==
                    str(demo_workspace.root) else [])
    ws = home(tmp_path / "ws").ensure()
    shutil.copytree(demo_run, ws.runs_dir / demo_run.name)
    sep = train_demo_run(ws, "demo-hier-separate", hierarchy_mode="separate", epochs=8)
    monkeypatch.setenv("LOUPE_HOME", str(ws.root))
    at = _page(demo_run.name)
    modes = _frame_with(at, "mode", "model")
    assert set(modes["mode"]) == {"flat", "separate"} and set(modes.index) == {demo_run.name, sep.name}
    verdicts = compare.level_verdicts(compare.compare_runs(demo_run, sep, n_bootstrap=1000))
    said = [m.value for m in list(at.warning) + list(at.info) if "against flat run" in m.value]
    assert len(said) == 1, [m.value for m in list(at.warning) + list(at.info)]
    assert f"Separate run **{sep.name}** against flat run **{demo_run.name}**" in said[0]
    for lv, (winner, text) in verdicts.items():
        assert f"**{lv}**: {text}" in said[0]
    lost = [lv for lv, (winner, _) in verdicts.items() if winner == demo_run.name]
    assert ("separate loses to flat" in said[0]) == bool(lost)
    assert any(m.value == said[0] for m in at.warning) == bool(lost)


def test_threshold_table_matches_a_naive_search(demo_home, demo_multiclass_run):
    at = _page(demo_multiclass_run.name)
    assert at.slider(key="ev_target").value == pytest.approx(0.90)
    at.slider(key="ev_target").set_value(0.6).run()
    assert not at.exception
    df = _test_rows(demo_multiclass_run)
    classes = runs.read_labels(demo_multiclass_run)["classes"]
    table = _frame_with(at, "status", "threshold", "recall", "precision")
    for c in classes:
        yb = (df["true"] == c).to_numpy().astype(int)
        s = df[f"p_{c}"].to_numpy()
        prec, rec, thr = skm.precision_recall_curve(yb, s)
        ok = prec[:-1] >= 0.6
        row = table.loc[c]
        if not ok.any():
            assert row["status"] == "unreachable"
            continue
        best_recall = rec[:-1][ok].max()
        assert row["status"] == "ok"
        assert float(row["recall"]) == pytest.approx(best_recall, abs=5e-4)
        assert float(row["precision"]) >= 0.6 - 5e-4
    if (table["status"] == "unreachable").any():
        assert any("unreachable" in w.value for w in at.warning)


def test_unreachable_target_is_said_clearly(demo_home, demo_multiclass_run):
    at = _page(demo_multiclass_run.name)
    at.slider(key="ev_target").set_value(0.99).run()
    table = _frame_with(at, "status", "threshold")
    unreachable = list(table.index[table["status"] == "unreachable"])
    assert unreachable, "at 0.99 some class of a ~60% model must be unreachable"
    [warning] = [w for w in at.warning if "unreachable" in w.value]
    assert all(c in warning.value for c in unreachable)


def test_save_thresholds_on_a_copy_keeps_the_ood_section(loupe_home, demo_multiclass_run):
    ws = Workspace(loupe_home).ensure()
    run = ws.runs_dir / "copied-run"
    shutil.copytree(demo_multiclass_run, run)
    (run / "thresholds.json").unlink(missing_ok=True)
    runs.write_thresholds(run, ood={"threshold": 0.42, "method": "energy"})
    at = _page("copied-run")
    at.slider(key="ev_target").set_value(0.7).run()
    at.button(key="ev_save_thresholds").click().run()
    assert not at.exception
    assert any("Saved" in s.value for s in at.success)
    assert any("Now in this run" in c.value and "out-of-distribution threshold kept" in c.value for c in at.caption)
    saved = json.loads((run / "thresholds.json").read_text())
    assert saved["ood"] == {"threshold": 0.42, "method": "energy"}
    assert saved["meta"]["target_precision"] == pytest.approx(0.7) and saved["meta"]["split"] == "test"
    classes = runs.read_labels(run)["classes"]
    assert set(saved["classes"]) == set(classes)
    df = _test_rows(run)
    for c, th in saved["classes"].items():
        if th is None:
            continue
        pred = df[f"p_{c}"] >= th["threshold"]
        yb = df["true"] == c
        assert th["precision"] == pytest.approx(skm.precision_score(yb, pred))
        assert th["recall"] == pytest.approx(skm.recall_score(yb, pred))
        assert th["precision"] >= 0.7
    # the session run itself was not touched
    assert not (demo_multiclass_run / "thresholds.json").exists()


def test_val_split_and_temperature_scaling(demo_home, demo_multiclass_run):
    at = _page(demo_multiclass_run.name)
    at.toggle(key="ev_temperature").set_value(True).run()
    assert not at.exception
    shown = _metrics(at)
    assert "Temperature" in shown and "ECE after scaling" in shown
    assert float(shown["Temperature"]) > 0
    at.radio(key="ev_split").set_value("val").run()
    assert not at.exception
    df = pd.read_csv(demo_multiclass_run / "predictions.csv", dtype={"true": str, "pred": str},
                     keep_default_na=False)
    val = df[df["split"] == "val"]
    assert _metrics(at)["Accuracy"] == f"{skm.accuracy_score(val['true'], val['pred']):.3f}"


def test_compare_runs_side_by_side(demo_home, demo_run, demo_multiclass_run):
    at = _page(demo_multiclass_run.name)
    chosen = at.multiselect(key="ev_compare_runs").value
    assert chosen[0] == demo_multiclass_run.name and len(chosen) == 2
    overall = next(d for d in _frames(at) if "accuracy" in d.index and any(str(c).startswith("delta_")
                                                                            for c in d.columns))
    other = chosen[1]
    for name, path in ((demo_multiclass_run.name, demo_multiclass_run), (demo_run.name, demo_run)):
        if name not in chosen:
            continue
        prefix = "element_" if name == demo_run.name else ""
        df = _test_rows(path, prefix)
        assert overall.loc["accuracy", name] == pytest.approx(
            skm.accuracy_score(df[f"{prefix}true"], df[f"{prefix}pred"]))
    assert overall.loc["macro_f1", f"delta_{other}"] == pytest.approx(
        overall.loc["macro_f1", other] - overall.loc["macro_f1", chosen[0]])
    sig = _frame_with(at, "McNemar p")  # is the difference real? the same numbers as `core compare`
    from core import compare
    ref = compare.compare_runs(demo_home.runs_dir / chosen[0], demo_home.runs_dir / other,
                               n_bootstrap=1000).to_dict()
    row = sig[(sig["run"] == other) & (sig["metric"] == "macro F1")].iloc[0]
    assert row["Δ (run − baseline)"] == pytest.approx(ref["metrics"]["macro_f1"]["delta"])
    assert (row["CI low"], row["CI high"]) == pytest.approx((ref["metrics"]["macro_f1"]["ci_low"],
                                                             ref["metrics"]["macro_f1"]["ci_high"]))
    acc = sig[(sig["run"] == other) & (sig["metric"] == "accuracy")].iloc[0]
    assert acc["McNemar p"] == pytest.approx(ref["mcnemar_p"])
    per_class = _frame_with(at, f"delta_f1_{other}")
    deltas = per_class[f"delta_f1_{other}"].abs().to_numpy(float)
    assert list(deltas) == sorted(deltas, reverse=True)  # the biggest changes first


# ---------------------------------------------------------------------------
# hand-written runs: binary, multi-label with missing entries, no predictions
# ---------------------------------------------------------------------------

def _write_run(ws: Workspace, name: str, labels: dict, *, y_true, probs, paths, split) -> Path:
    rd = runs.RunDir(ws.runs_dir / name)
    rd.path.mkdir(parents=True)
    runs.write_config(rd, {"dataset_id": "synthetic", "model": "cnn"})
    runs.write_status(rd, "done")
    runs.write_labels(rd, labels)
    rd.model.write_bytes(b"")  # the run picker lists runs with a checkpoint and predictions
    frame = runs.predictions_frame(labels, sample_ids=[f"s{i}" for i in range(len(paths))], paths=paths,
                                   splits=split, y_true=y_true, probs=probs)
    runs.write_predictions(rd, frame)
    return rd.path


def _image_paths(tmp_path: Path, n: int) -> list[str]:
    from PIL import Image

    out = []
    for i in range(n):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 20), (i * 7 % 255, 90, 160)).save(p)
        out.append(str(p))
    return out


@pytest.fixture
def empty_ws(loupe_home) -> Workspace:
    """A workspace without datasets (the page runs alone, so app.py's first-start demo is not generated)."""
    return Workspace(loupe_home).ensure()


def test_no_run_says_what_to_do(empty_ws):
    at = _page()
    assert any("Train page" in i.value for i in at.info)


def test_run_without_test_or_val_rows_is_an_info_not_a_crash(empty_ws, tmp_path):
    labels = {"task": "multiclass", "classes": ["a", "b"]}
    _write_run(empty_ws, "train-only", labels, y_true=[0, 1], probs=[[0.8, 0.2], [0.3, 0.7]],
               paths=_image_paths(tmp_path, 2), split="train")
    at = _page("train-only")
    assert any("no test or val rows" in i.value for i in at.info)


def test_binary_run_shows_the_positive_class_prominently(empty_ws, tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 120)
    p_pos = np.clip(0.35 * y + rng.uniform(0, 0.65, y.size), 0, 1)
    labels = {"task": "binary", "classes": ["ok", "defect"], "positive_class": "defect"}
    _write_run(empty_ws, "binary", labels, y_true=y, probs=np.c_[1 - p_pos, p_pos],
               paths=_image_paths(tmp_path, y.size), split="test")
    at = _page("binary")
    shown = _metrics(at)
    assert shown["AP · defect"] == f"{skm.average_precision_score(y, p_pos):.3f}"
    assert shown["F1 · defect"] == f"{skm.f1_score(y, (p_pos >= 0.5).astype(int)):.3f}"
    assert shown["Average precision · defect"] == f"{skm.average_precision_score(y, p_pos):.3f}"
    assert shown["ROC AUC · defect"] == f"{skm.roc_auc_score(y, p_pos):.3f}"
    table = _frame_with(at, "status", "threshold")
    assert list(table.index) == ["defect"]  # the positive class only
    prec, rec, _ = skm.precision_recall_curve(y, p_pos)
    ok = prec[:-1] >= 0.9
    if ok.any():
        assert shown["Recall"] == f"{rec[:-1][ok].max():.3f}"
    assert at.toggle(key="ev_temperature").disabled  # no val rows to fit a temperature on


def test_multilabel_run_masks_missing_labels(empty_ws, tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, (60, 3)).astype(float)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, y.shape), 0, 1)
    y[rng.uniform(size=y.shape) < 0.2] = np.nan
    labels = {"task": "multilabel", "labels": ["sky", "sea", "tree"]}
    _write_run(empty_ws, "multilabel", labels, y_true=y, probs=p, paths=_image_paths(tmp_path, 60), split="test")
    at = _page("multilabel")
    shown = _metrics(at)
    pred = (p >= 0.5).astype(int)
    known = ~np.isnan(y)
    assert shown["Micro F1"] == f"{skm.f1_score(y[known].astype(int), pred[known]):.3f}"
    macro = np.mean([skm.f1_score(y[known[:, k], k], pred[known[:, k], k]) for k in range(3)])
    assert shown["Macro F1"] == f"{macro:.3f}"
    assert shown["Missing entries"] == str(int((~known).sum()))
    table = _frame_with(at, "n_known", "n_missing", "average_precision")
    for k, name in enumerate(labels["labels"]):
        m = known[:, k]
        assert table.loc[name, "n_missing"] == (~m).sum()
        assert table.loc[name, "average_precision"] == pytest.approx(skm.average_precision_score(y[m, k], p[m, k]))
    exact = [np.all(pred[i, known[i]] == y[i, known[i]]) for i in range(60) if known[i].any()]
    assert shown["Subset accuracy"] == f"{np.mean(exact):.3f}"


def test_multilabel_runs_compare_per_label(empty_ws, tmp_path):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (40, 2)).astype(float)
    y[::7, 1] = np.nan
    paths = _image_paths(tmp_path, 40)
    labels = {"task": "multilabel", "labels": ["sky", "sea"]}
    weak = np.clip(0.2 * np.nan_to_num(y) + rng.uniform(0, 0.8, y.shape), 0, 1)
    strong = np.clip(0.6 * np.nan_to_num(y) + rng.uniform(0, 0.4, y.shape), 0, 1)
    _write_run(empty_ws, "ml-weak", labels, y_true=y, probs=weak, paths=paths, split="test")
    _write_run(empty_ws, "ml-strong", labels, y_true=y, probs=strong, paths=paths, split="test")
    at = _page("ml-weak")
    chosen = at.multiselect(key="ev_compare_runs").value
    assert chosen == ["ml-weak", "ml-strong"]
    overall = next(d for d in _frames(at) if "micro_f1" in d.index)
    known = ~np.isnan(y)
    for name, p in (("ml-weak", weak), ("ml-strong", strong)):
        assert overall.loc["micro_f1", name] == pytest.approx(
            skm.f1_score(y[known].astype(int), (p[known] >= 0.5).astype(int)))
    assert overall.loc["micro_f1", "delta_ml-strong"] > 0
