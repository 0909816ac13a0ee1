"""core.report and `python -m core report`: one self-contained, escaped HTML file per run."""

from __future__ import annotations

import html
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from core import compare, report, review, runs
from core.cli import main as cli_main
from core.workspace import Workspace
from tests.conftest import rename_class_in_run

EVIL_CLASS = "</script><script>alert(1)</script>"
EVIL_FILE = "<img src=x onerror=alert(2)>.png"
EVIL_NOTE = "<b onmouseover=alert(3)>bad crop</b> https://example.com"
EVIL_LABEL = '<script>alert(1)</script> & "quoted" https://evil'


class _Scan(HTMLParser):
    """Every tag the browser would build, with its attributes, and the text of each <script>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def _scan(text: str) -> _Scan:
    s = _Scan()
    s.feed(text)
    return s


def _copy_run(run: Path, dest: Path) -> Path:
    out = dest / run.name
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("embeddings.npz"))
    return out


@pytest.fixture(scope="module")
def full_report(demo_run, demo_workspace, tmp_path_factory):
    """The report of a copy of the session demo run, with embeddings (the slow part, built once)."""
    run = _copy_run(demo_run, tmp_path_factory.mktemp("report_run"))
    steps = []
    meta, sections = report.collect_sections(run, workspace=demo_workspace, progress=lambda f, m: steps.append(f))
    text = report.render_html(meta, sections, headline=meta["headline"])
    return text, {s.key: s for s in sections}, steps, run, meta


def test_report_has_every_section_built_from_the_run(full_report):
    text, sections, steps, run, meta = full_report
    assert list(sections) == list(report.SECTIONS)
    assert {k: s.status for k, s in sections.items() if s.status != "ok"} == {}
    assert "No review decisions recorded" in sections["cleaning"].body  # the demo workspace has none
    for key in ("model_card", "dataset", "training", "confusion", "per_class", "pr_curves", "calibration",
                "embeddings", "ood", "mistakes"):
        assert f'<section id="{key}" class="status-ok">' in text
    # the model card states facts of this run, not boilerplate
    card = sections["model_card"].body
    for fact in ("hierarchical classification over 2 levels", "Demo: UI elements", "32×32", "Limitations",
                 "Intended use", "Hyper-parameters", "No out-of-distribution threshold is set"):
        assert fact in card
    # the numbers are the evaluation of the run's test predictions
    from core import metrics
    ev = metrics.evaluate_predictions(runs.read_predictions(run, split="test"), n_bootstrap=0)
    assert dict(meta["headline"])["test accuracy"] == f"{100 * ev['accuracy']:.1f}%"
    assert f"<td>{ev['macro_f1']:.3f}</td>" in card
    assert "Weak classes" in card  # the tiny CNN has classes under F1 0.5: the card says which
    assert "mahalanobis" in sections["ood"].body and sections["ood"].body.count("data:image/jpeg;base64,") == 24
    assert sections["mistakes"].body.count("data:image/jpeg;base64,") == 24
    assert steps == sorted(steps) and steps[-1] < 1.0


def test_report_is_self_contained_offline(full_report):
    text, sections, *_ = full_report
    # no URL text at all: nothing the browser could fetch, nothing a reader could follow out
    assert not re.search(r"(?i)https?://", text)
    scan = _scan(text)
    lib = max(scan.scripts, key=len)
    own = text.replace(lib, "")  # the report's own markup, figure JSON and CSS (plotly.js checked in the browser)
    assert not re.search(r"(?i)(src|href)\s*=\s*[\"']?(//|https?:|ftp:|javascript:)", own)
    assert "@import" not in own and "url(" not in own
    # plotly.js inlined exactly once, then one small script per figure
    libs = [s for s in scan.scripts if len(s) > 1_000_000]
    assert len(libs) == 1 and "newPlot" in libs[0]
    figures = [t for t, a in scan.tags if t == "div" and "plotly-graph-div" in a.get("class", "")]
    plots = [s for s in scan.scripts if "Plotly.newPlot(" in s and len(s) < 1_000_000]
    assert len(figures) == len(plots) >= 10
    assert all(not a.get("src") for t, a in scan.tags if t == "script")
    assert {a["src"][:23] for t, a in scan.tags if t == "img"} == {"data:image/jpeg;base64,"}
    assert not [t for t, _ in scan.tags if t in ("link", "iframe", "object", "embed", "base")]
    # a few thousand images would stay far under 20 MB: plotly.js ~4.8 MB + bounded galleries
    assert 4_000_000 < len(text.encode()) < 8_000_000


def test_hostile_labels_file_names_and_notes_are_escaped(demo_run, demo_workspace, tmp_path):
    """A class named ``</script><script>alert(1)</script>``, an evil file name and review note stay text."""
    ws = Workspace(tmp_path / "ws").ensure()
    ds_id = json.loads((demo_run / "config.json").read_text())["dataset_id"]
    shutil.copytree(demo_workspace.dataset_dir(ds_id), ws.dataset_dir(ds_id))
    run = _copy_run(demo_run, ws.runs_dir)
    # rename the class "button" everywhere in the run's outputs
    pred = rename_class_in_run(run, "button", EVIL_CLASS)
    # the most confident mistake gets an evil sample id (shown as caption / alt text)
    mistakes = pred[(pred["split"] == "test") & (pred["element_true"] != pred["element_pred"])]
    pred.loc[mistakes.index, "sample_id"] = [f"{i}-{EVIL_FILE}" for i in range(len(mistakes))]
    pred.to_csv(run / "predictions.csv", index=False)
    runs.write_thresholds(run, classes={EVIL_CLASS: {"threshold": 0.5}}, meta={"target_precision": 0.9})
    sample = pd.read_parquet(ws.dataset_dir(ds_id) / "samples.parquet")["sample_id"].iloc[0]
    review.record_decision(ws, ds_id, sample, "exclude", detector="near_duplicate", note=EVIL_NOTE)

    text = report.build_report(run, workspace=ws, embeddings=False, out=tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text(encoding="utf-8") == text
    for raw in (EVIL_CLASS, "<script>alert", "<img src=x", "<b onmouseover", "https://example.com"):
        assert raw not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in text       # per-class table, captions
    assert "&lt;img src=x onerror=alert(2)&gt;" in text                         # mistake captions / alt text
    assert "&lt;b onmouseover=alert(3)&gt;bad crop&lt;/b&gt;" in text          # cleaning log note
    scan = _scan(text)
    # the only elements are the ones the report makes: no injected script, img or handler
    assert not [a for _, a in scan.tags if any(k.startswith("on") for k in a)]
    n_figs = sum(1 for t, a in scan.tags if t == "div" and "plotly-graph-div" in a.get("class", ""))
    assert sum(1 for t, _ in scan.tags if t == "script") == 2 + n_figs  # plotly.js, config, one per figure
    assert all(s.count("Plotly.newPlot(") == 1 for s in scan.scripts[2:])
    # inside figure JSON the label is unicode-escaped: it cannot close the <script> element
    assert "\\u0026lt;\\u002fscript\\u0026gt;\\u0026lt;script\\u0026gt;alert(1)" in text
    # the cleaning log shows the exclusion and its detector
    assert "near_duplicate" in text and "1</b> sample(s) excluded" in text
    assert "1 review decision(s) (exclusions / relabels, see Cleaning log) are not in it yet" in text  # model card
    # the saved threshold is used and shown
    assert "the thresholds saved with the run (1 class(es)" in text


def test_missing_pieces_are_reported_in_their_section(demo_run, tmp_path):
    run = _copy_run(demo_run, tmp_path)
    (run / "metrics.jsonl").unlink()
    empty = Workspace(tmp_path / "empty_ws").ensure()
    meta, sections = report.collect_sections(run, workspace=empty)
    status = {s.key: s.status for s in sections}
    assert status["dataset"] == status["training"] == status["cleaning"] == "missing"  # no dataset: no review log
    assert status["embeddings"] == status["ood"] == "missing"
    assert status["confusion"] == status["per_class"] == status["mistakes"] == "ok"
    by = {s.key: s for s in sections}
    assert "is not in the workspace" in by["dataset"].note
    assert "No per-epoch metrics" in by["training"].body
    html_text = report.render_html(meta, sections)
    assert html_text.count('class="status-missing"') == 5
    assert by["embeddings"].note.startswith("The embeddings could not be computed")
    # thumbnails still come from the predictions' absolute paths
    assert "data:image/jpeg;base64," in by["mistakes"].body


def test_not_a_finished_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="is not a folder"):
        report.build_report(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="lacks labels.json and predictions.csv"):
        report.build_report(tmp_path / "half")
    with pytest.raises(ValueError, match="max_thumbnails"):
        report.build_report(tmp_path / "half", max_thumbnails=-1)


def test_thumbnail_is_a_small_jpeg_or_none(demo_run, tmp_path):
    p = runs.read_predictions(demo_run, split="test")
    uri = report.thumbnail_data_uri(p.paths[0], size=64)
    assert uri.startswith("data:image/jpeg;base64,") and len(uri) < 8_000
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert report.thumbnail_data_uri(bad) is None
    assert report.thumbnail_data_uri(tmp_path / "missing.png") is None


def test_cli_report_writes_the_file_and_json(demo_run, demo_workspace, tmp_path, capsys):
    run = _copy_run(demo_run, tmp_path)
    out = tmp_path / "report.html"
    rc = cli_main(["report", str(run), "--out", str(out), "--workspace", str(demo_workspace.root),
                   "--no-embeddings", "--max-thumbnails", "6", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["out"] == str(out.resolve()) and result["bytes"] == out.stat().st_size
    assert result["sections"]["embeddings"] == "missing" and result["sections"]["confusion"] == "ok"
    assert "wrote" in captured.err
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.count("data:image/jpeg;base64,") == 6


def test_cli_report_user_errors_exit_2(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    assert cli_main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")]) == 2
    assert "lacks labels.json and predictions.csv" in capsys.readouterr().err


def _synthetic_run(root: Path, task: str, n: int = 60, seed: int = 0, names: list[str] | None = None) -> Path:
    """A run directory with labels.json + predictions.csv only (no model, no dataset): the report's floor."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    run = root / f"synthetic-{task}"
    run.mkdir()
    names = names or {"binary": ["cat", "dog"], "multiclass": ["a & b", "c", "d"],
                      "multilabel": ["sky", "sea", "sand"]}[task]
    k = len(names)
    img_dir = root / "img"
    img_dir.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        p = img_dir / f"{task}-{i}.png"
        Image.new("RGB", (24, 16), tuple(int(v) for v in rng.integers(0, 255, 3))).save(p)
        paths.append(str(p))
    if task == "multilabel":
        labels = {"task": task, "labels": names}
        y = rng.integers(0, 2, (n, k)).astype(float)
        y[0, 1] = np.nan
        probs = np.clip(np.nan_to_num(y) * 0.4 + rng.random((n, k)) * 0.6, 0, 1)
        probs[0, 1] = 0.5
    else:
        labels = {"task": task, "classes": names, **({"positive_class": "dog"} if task == "binary" else {})}
        y = rng.integers(0, k, n)
        logits = rng.normal(size=(n, k)) + 0.8 * np.eye(k)[y]
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    runs.write_labels(run, labels)
    runs.write_config(run, {"model": "cnn", "task": task, "image_size": 32, "epochs": 3})
    runs.write_status(run, "done")
    frame = runs.predictions_frame(labels, sample_ids=[f"s{i}" for i in range(n)], paths=paths, splits="test",
                                   y_true=y, probs=probs)
    runs.write_predictions(run, frame)
    return run


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_every_task_reports_without_a_model_or_dataset(task, tmp_path):
    run = _synthetic_run(tmp_path, task)
    meta, sections = report.collect_sections(run, workspace=Workspace(tmp_path / "ws").ensure(), embeddings=False,
                                             max_thumbnails=5)
    status = {s.key: s.status for s in sections}
    assert "error" not in status.values(), {s.key: s.note for s in sections if s.status == "error"}
    assert status["per_class"] == status["pr_curves"] == status["calibration"] == status["mistakes"] == "ok"
    assert status["confusion"] == ("missing" if task == "multilabel" else "ok")
    by = {s.key: s for s in sections}
    assert by["mistakes"].body.count("data:image/jpeg;base64,") == 5
    assert "a &amp; b" in by["per_class"].body if task == "multiclass" else True
    assert ("multi-label tagging with 3 labels" in by["model_card"].body) == (task == "multilabel")
    text = report.render_html(meta, sections)
    assert not re.search(r"(?i)https?://", text)
    mirror = "averages the image with its left-right mirror"
    assert mirror not in by["model_card"].body
    (run / runs.PREPROCESSING).write_text(json.dumps({"image_size": 32, runs.FLIP_AVERAGE: True}))
    _, sections = report.collect_sections(run, workspace=Workspace(tmp_path / "ws").ensure(), embeddings=False,
                                          max_thumbnails=0)
    assert mirror in {s.key: s for s in sections}["model_card"].body


def test_size_stays_bounded_for_thousands_of_images_and_many_classes(tmp_path):
    """3,000 test images, 60 classes: galleries, curves and matrices are capped, so the file stays small."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(1)
    imgs = []
    for i in range(10):
        p = tmp_path / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(p)
        imgs.append(str(p))
    n, k = 3000, 60
    labels = {"task": "multiclass", "classes": [f"class {j}" for j in range(k)]}
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 3 * np.eye(k)[y]
    run = tmp_path / "big"
    runs.write_labels(run, labels)
    runs.write_predictions(run, runs.predictions_frame(
        labels, sample_ids=[f"s{i}" for i in range(n)], paths=[imgs[i % 10] for i in range(n)], splits="test",
        y_true=y, probs=np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)))
    meta, sections = report.collect_sections(run, workspace=Workspace(tmp_path / "ws").ensure(), embeddings=False)
    by = {s.key: s for s in sections}
    assert "the 40 involved in the most mistakes are drawn" in by["confusion"].body
    assert "the 40 with the lowest average precision are drawn" in by["pr_curves"].body
    assert by["per_class"].body.count("<tr>") >= k  # the table lists every class
    size = len(report.render_html(meta, sections).encode())
    assert size < 8_000_000, size  # far under the 20 MB budget (plotly.js alone is ~4.8 MB)


@pytest.mark.parametrize("patch, expected", [("raw", "raw labels as loaded"), ("3", "after review (decision version")])
def test_cleaning_log_says_which_labels_the_run_trained_on(patch, expected, demo_run, demo_workspace, tmp_path):
    import json

    run = _copy_run(demo_run, tmp_path)
    cfg = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**cfg, "label_patch_version": patch}))
    _meta, sections = report.collect_sections(run, workspace=demo_workspace, embeddings=False)
    body = {s.key: s for s in sections}["cleaning"].body
    assert expected in body


def test_a_hostile_label_is_escaped_in_every_place_of_the_document(tmp_path):
    """``<script>``, ``&``, ``"`` and ``https://`` in a class name: escaped text in the HTML and the figure JSON."""
    run = _synthetic_run(tmp_path, "multiclass", names=[EVIL_LABEL, "c", "d"])
    meta, sections = report.collect_sections(run, workspace=Workspace(tmp_path / "ws").ensure(), embeddings=False,
                                             max_thumbnails=60)
    text = report.render_html(meta, sections)
    for raw in ("<script>alert", "https://evil", '"quoted"', EVIL_LABEL):
        assert raw not in text, raw
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;quoted&#34; https&#58;//evil"
    by = {s.key: s for s in sections}
    for key in ("per_class", "mistakes", "model_card"):  # table cell, thumbnail caption, outputs list
        assert escaped in by[key].body, key
    assert "\\u0026lt;script\\u0026gt;alert(1)" in text  # figure JSON: cannot close the <script> element
    scan = _scan(text)
    n_figs = sum(1 for t, a in scan.tags if t == "div" and "plotly-graph-div" in a.get("class", ""))
    assert sum(1 for t, _ in scan.tags if t == "script") == 2 + n_figs
    assert not re.search(r"(?i)https?://", text)


def _training_body(run: Path, ws: Workspace) -> str:
    return next(s.body for s in report.collect_sections(run, workspace=ws, embeddings=False)[1] if s.key == "training")


@pytest.mark.parametrize("record, final", [
    ({"chosen": "linear probe", "epoch": 2}, "the linear probe (epoch 2)"),
    ({"chosen": "best fine-tuning epoch", "epoch": 7}, "the best fine-tuning epoch (7)"),
    ({"chosen": "weight average", "epoch": 9, "epochs_averaged": [6, 9]}, "the weight average of epochs 6–9")])
def test_training_section_names_the_final_model_chosen_on_val_and_why(record, final, demo_run, demo_workspace,
                                                                      tmp_path):
    run = _copy_run(demo_run, tmp_path)
    body = _training_body(run, demo_workspace)
    assert "(the checkpoint kept)" in body and "Final model" not in body  # no selection line: the old wording
    reason = f"{record['chosen']} has the best val_macro_f1 (0.9000); other 0.5000 <b>"
    runs.append_metrics(run, {"kind": "selection", "stage": "main", "monitor": "val_macro_f1", "epoch": None,
                              "epochs_averaged": None, "candidates": [], "reason": reason, **record})
    body = _training_body(run, demo_workspace)
    assert f"Final model: <b>{final}</b>, chosen on val: {reason.replace('<b>', '&lt;b&gt;')}." in body
    assert "(the checkpoint kept)" not in body


def _cells(fragment: str) -> list[list[str]]:
    """The body rows of the tables in an HTML fragment, as lists of cell texts."""
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", fragment, re.S)
            if "<td" in row]


def test_comparison_section_shows_what_compare_runs_computes(demo_run, demo_multiclass_run, demo_workspace,
                                                             tmp_path):
    run = _copy_run(demo_run, tmp_path)
    other = _copy_run(demo_multiclass_run, tmp_path)  # the same predictions as the demo run's finest level...
    pred = pd.read_csv(other / "predictions.csv")
    fixed = pred.index[(pred["split"] == "test") & (pred["pred"] != pred["true"])][:20]
    pred.loc[fixed, "pred"] = pred.loc[fixed, "true"]  # ...until 20 of its test mistakes are put right
    pred.to_csv(other / "predictions.csv", index=False)
    meta, sections = report.collect_sections(run, workspace=demo_workspace, embeddings=False, compare_with=other)
    assert [s.key for s in sections] == [*report.SECTIONS, "comparison"]
    sec = sections[-1]
    assert (sec.status, sec.title) == ("ok", "Comparison with demo-multiclass")
    c = compare.compare_runs(run, other, split="test")
    assert c.metrics["accuracy"].delta > 0 and c.mcnemar.b_only_correct == 20
    rows = {r[0]: r for r in _cells(sec.body)}
    assert set(rows) == {compare.METRIC_LABELS[k] for k in c.metrics}
    for key, m in c.metrics.items():
        _, a, b, delta, ci, significant = rows[compare.METRIC_LABELS[key]]
        assert (float(a), float(b), float(delta)) == pytest.approx((m.a, m.b, m.delta), abs=5e-5)
        low, high = ci.split(" to ")
        assert (float(low), float(high)) == pytest.approx((m.ci_low, m.ci_high), abs=5e-5)
        assert significant == ("yes" if m.significant else "no")
    assert f"p = <b>{c.mcnemar.p_value:.3g}</b>" in sec.body
    assert f"<p><b>{c.verdict()}</b></p>" in html.unescape(sec.body)
    assert "level &#39;element&#39;" in sec.body  # the hierarchical run is compared at its finest level
    text = report.render_html(meta, sections)
    assert '<section id="comparison" class="status-ok">' in text and '<a href="#comparison">' in text


def test_runs_that_cannot_be_compared_give_an_error_section_and_the_rest_of_the_report(
        demo_run, demo_multiclass_run, demo_workspace, tmp_path):
    other = _copy_run(demo_multiclass_run, tmp_path / "b")
    pred = pd.read_csv(other / "predictions.csv")
    pred.drop(pred.index[pred["split"] == "test"][:3]).to_csv(other / "predictions.csv", index=False)
    meta, sections = report.collect_sections(demo_run, workspace=demo_workspace, embeddings=False,
                                             compare_with=other)
    sec = sections[-1]
    assert sec.key == "comparison" and sec.status == "error"
    assert "not evaluated on the same test rows" in sec.note and "not evaluated on the same test rows" in sec.body
    assert {s.status for s in sections[:-1]} == {"ok", "missing"}  # only the embedding sections (not requested)
    text = report.render_html(meta, sections)
    assert '<section id="comparison" class="status-error">' in text
    assert '<section id="confusion" class="status-ok">' in text


def test_cli_report_compare_takes_a_run_id_of_the_workspace(demo_run, demo_multiclass_run, demo_workspace, tmp_path,
                                                             capsys):
    run = _copy_run(demo_run, tmp_path)
    out = tmp_path / "report.html"
    rc = cli_main(["report", str(run), "--out", str(out), "--workspace", str(demo_workspace.root), "--no-embeddings",
                   "--compare", demo_multiclass_run.name, "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert result["sections"]["comparison"] == "ok"
    assert "<h2>Comparison with demo-multiclass</h2>" in out.read_text(encoding="utf-8")
    assert cli_main(["report", str(run), "--out", str(out), "--workspace", str(demo_workspace.root),
                     "--no-embeddings", "--compare", "nope"]) == 2
    assert "nope is neither a run directory nor a run id" in capsys.readouterr().err
