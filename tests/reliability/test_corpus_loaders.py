"""The bad-input corpus through the loaders: core.images, core.datasets (folders, tables, zips).

For every case: no traceback (a typed error or a problem in the load report), the message
names the file and the problem, the valid samples still load, and nothing is written
outside the workspace (the corpus tree is byte-for-byte and mtime-for-mtime unchanged).
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest

from core import datasets
from core.datasets import DatasetError, DatasetSpec
from core.images import ImageError, load_image, probe_image
from core.workspace import home

from tests.reliability.conftest import BAD, CASES, tree_snapshot

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ws(tmp_path):
    return home(tmp_path / "ws").ensure()


def _only_workspace_written(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"], "something was written beside the workspace"


# ---------------------------------------------------------------------------
# core.images: one file per case
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", sorted(CASES))
def test_every_corpus_file_through_probe_and_load_image(corpus, case):
    path = corpus.files[case]
    fname, reason, shape = CASES[case]
    if reason is None:
        arr = load_image(path)
        assert arr.dtype == np.uint8 and arr.shape == (*shape, 3)
        info = probe_image(path)
        assert (info.height, info.width) == shape
        return
    with pytest.raises(ImageError) as err:
        load_image(path)
    assert err.value.reason == reason
    assert fname in str(err.value) and str(err.value).startswith(str(path))
    if reason != "truncated":  # a header-only probe cannot see truncation (documented)
        with pytest.raises(ImageError) as err2:
            probe_image(path)
        assert err2.value.reason == reason and fname in str(err2.value)


def test_unusual_formats_decode_to_the_pixels_a_viewer_shows(corpus):
    f = corpus.files
    cmyk = load_image(f["cmyk_jpeg"]).astype(int)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60  # CMYK (0,255,255,0) is red
    deep = load_image(f["png_16bit"]).astype(int)
    assert deep[:, 0].mean() < 10 and deep[:, -1].mean() > 245      # 16-bit ramp scaled to 0..255
    pal = load_image(f["palette_transparency"]).astype(int)
    assert (pal[:, :16] == 255).all()                                 # transparent index -> white
    assert pal[:, 16:, 0].min() == 255 and pal[:, 16:, 1].max() == 0  # opaque red stays red
    rgba = load_image(f["rgba"]).astype(int)
    assert (rgba[:, :16] == 255).all()                                # alpha 0 composited on white
    rot = load_image(f["exif_rotated_jpeg"]).astype(int)             # orientation 6 applied
    assert rot.shape == (40, 20, 3)
    assert rot[:18, :, 0].mean() > 180 and rot[:18, :, 2].mean() < 70  # the red left half is now on top
    assert rot[22:, :, 2].mean() > 180 and rot[22:, :, 0].mean() < 70
    gif = load_image(f["animated_gif"]).astype(int)
    assert gif[..., 0].mean() > 200 and gif[..., 2].mean() < 40      # first frame only
    gray = load_image(f["grayscale"])
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()


# ---------------------------------------------------------------------------
# core.datasets: class folders holding every case
# ---------------------------------------------------------------------------

FOLDER_KIND = {case: ("not_image_file" if case == "svg" else reason)
               for case, (_f, reason, _s) in CASES.items() if reason is not None}


def test_class_folders_with_every_bad_file_load_the_valid_ones(corpus, corpus_snapshot, tmp_path, ws):
    det = datasets.detect(corpus.folders)
    assert det.kind == "folders" and det.task == "multiclass"
    ds = datasets.load_dataset(DatasetSpec(path=str(corpus.folders)), workspace=ws)
    rep = ds.report
    assert rep.n_valid == len(ds.samples) == corpus.n_folder_valid
    assert rep.n_invalid == len(corpus.folder_cases) - (len(CASES) - len(BAD))
    for case, path in corpus.folder_cases.items():
        if case in FOLDER_KIND:
            group = rep.problems[FOLDER_KIND[case]]
            assert any(path.name in ex.message for ex in group.examples), (case, group)
            assert group.what_to_do
    names = set(ds.samples["rel_path"].map(lambda p: Path(p).name))
    for case in CASES:
        if case not in BAD:
            assert CASES[case][0] in names, case
    exif = ds.samples[ds.samples["rel_path"].str.endswith("exif6.jpg")].iloc[0]
    assert (exif["width"], exif["height"]) == (20, 40)  # EXIF-corrected size
    wide = ds.samples[ds.samples["rel_path"].str.endswith("wide.png")].iloc[0]
    assert (wide["width"], wide["height"]) == (8000, 100)
    # the user's folder is untouched and nothing was written beside the workspace
    assert tree_snapshot(corpus.root) == corpus_snapshot
    _only_workspace_written(tmp_path)
    # a readable summary exists for every problem kind
    text = "\n".join(rep.summary_lines())
    for case in corpus.folder_cases:
        if case in FOLDER_KIND:
            assert f"- {FOLDER_KIND[case]}:" in text


# ---------------------------------------------------------------------------
# core.datasets: labels tables
# ---------------------------------------------------------------------------

def _load_csv(corpus, name, ws):
    return datasets.load_dataset(DatasetSpec(path=str(corpus.table), labels=str(corpus.csv[name])), workspace=ws)


@pytest.mark.parametrize("name", ["bom", "semicolon"])
def test_csv_with_bom_or_semicolon_loads(corpus, ws, name):
    ds = _load_csv(corpus, name, ws)
    assert ds.schema.label_columns == ("label",)            # the BOM is not part of the column name
    assert ds.schema.classes["label"] == ("cat", "dog") and ds.report.n_valid == 8


def test_csv_with_quoted_commas_in_labels(corpus, ws):
    ds = _load_csv(corpus, "quoted", ws)
    assert ds.schema.classes["label"] == ("retriever, golden", "tabby, striped")


def test_csv_without_an_image_column_names_the_file_and_the_columns(corpus, ws):
    det = datasets.detect(corpus.table, corpus.csv["no_image_column"])
    assert det.image_column is None and any("image column" in n for n in det.notes)
    with pytest.raises(DatasetError) as err:
        _load_csv(corpus, "no_image_column", ws)
    msg = str(err.value)
    assert "no_image_column.csv" in msg and "image paths" in msg and "'label', 'comment'" in msg


def test_csv_duplicate_and_conflicting_rows_are_reported_first_row_kept(corpus, ws):
    ds = _load_csv(corpus, "duplicates", ws)
    p = ds.report.problems
    assert p["duplicate_row"].count == 1 and "cat_0.png" in p["duplicate_row"].examples[0].message
    assert p["conflicting_labels"].count == 1 and "cat_1.png" in p["conflicting_labels"].examples[0].message
    row = ds.samples.set_index("rel_path").loc["images/cat_1.png"]
    assert row["label"] == "cat" and ds.report.n_valid == 8


def test_csv_labels_with_script_tags_and_emoji_are_kept_verbatim(corpus, ws):
    ds = _load_csv(corpus, "odd_labels", ws)
    assert set(ds.samples["label"]) == {"<script>alert(1)</script>", "🐶 dog & co"}
    again = datasets.open_dataset(ws, ds.dataset_id)  # round-trips through parquet / json
    assert set(again.schema.classes["label"]) == {"<script>alert(1)</script>", "🐶 dog & co"}


def test_csv_empty_labels_are_reported_and_missing_looking_classes_flagged(corpus, ws):
    ds = _load_csv(corpus, "missing_labels", ws)
    g = ds.report.problems["empty_label"]
    assert g.count == 2 and {"cat_2.png", "cat_3.png"} <= {Path(e.path).name for e in g.examples}
    assert "images/cat_2.png" not in set(ds.samples["rel_path"])
    assert any("'NaN'" in w and "'-1'" in w and "missing" in w for w in ds.report.warnings)


def test_multilabel_nan_empty_and_minus_one_are_missing_never_zero(corpus, ws):
    ds = _load_csv(corpus, "multilabel_missing", ws)
    assert ds.task == "multilabel"
    s = ds.samples.set_index("rel_path")
    for rel, col in (("cat_1", "indoor"), ("cat_2", "indoor"), ("cat_3", "indoor"),
                     ("dog_1", "outdoor"), ("dog_2", "outdoor")):
        assert math.isnan(s.loc[f"images/{rel}.png", col]), (rel, col)
    assert s.loc["images/cat_0.png", "outdoor"] == 0.0 and s.loc["images/cat_0.png", "indoor"] == 1.0
    assert datasets.dataset_summary(ds)["missing_labels"] == {"indoor": 3, "outdoor": 2}


def test_csv_absolute_and_dotdot_paths_load_with_a_warning(corpus, corpus_snapshot, ws):
    ds = _load_csv(corpus, "paths", ws)
    assert ds.report.n_valid == 10 and ds.report.n_invalid == 0
    paths = set(ds.samples["path"])
    assert str(corpus.outside_image) in paths
    assert all(os.path.isabs(p) for p in paths)
    assert any("outside the dataset folder" in w for w in ds.report.warnings)
    assert tree_snapshot(corpus.root) == corpus_snapshot


def test_csv_rows_pointing_at_bad_files_each_name_the_file_and_problem(corpus, corpus_snapshot, tmp_path, ws):
    ds = _load_csv(corpus, "bad_files", ws)
    assert ds.report.n_valid == 8 and set(ds.samples["label"]) == {"cat", "dog"}
    expect = {"zero.jpg": "empty", "truncated.jpg": "truncated", "notes.jpg": "not_image", "page.png": "not_image",
              "bomb.png": "too_large", "dangling.png": "broken_symlink", "folder.jpg": "directory",
              "vector.svg": "not_image", "never-existed.png": "missing"}
    found = {Path(ex["path"]).name: (ex["problem"], ex["message"]) for ex in ds.report.invalid_examples()}
    for fname, kind in expect.items():
        assert found[fname][0] == kind, (fname, found.get(fname))
        assert fname in found[fname][1] and found[fname][1].startswith("row ")
    assert ds.report.n_invalid == len(expect)
    assert tree_snapshot(corpus.root) == corpus_snapshot
    _only_workspace_written(tmp_path)


def test_empty_folder_is_a_clear_error(corpus, ws):
    det = datasets.detect(corpus.empty)
    assert det.task is None and any("No images" in n for n in det.notes)
    with pytest.raises(DatasetError) as err:
        datasets.load_dataset(DatasetSpec(path=str(corpus.empty)), workspace=ws)
    assert str(corpus.empty) in str(err.value) and "no images found" in str(err.value)
    assert err.value.report is not None and err.value.report.n_candidates == 0


# ---------------------------------------------------------------------------
# Zips (the Data page's upload) and the upload size limit
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("slip", ["'../../evil.png'", "outside the extraction folder"]),
    ("bomb", ["'cat/huge.png'", "zip bomb"]),
    ("noimages", ["no images inside"]),
    ("symlink", ["'cat/link.png'", "symbolic link"]),
])
def test_unsafe_or_useless_zips_are_refused_before_anything_is_written(corpus, tmp_path, name, words):
    dest_parent = tmp_path / "uploads"
    dest_parent.mkdir()
    for src in (corpus.zips[name], corpus.zips[name].read_bytes()):
        with pytest.raises(DatasetError) as err:
            datasets.import_zip(src, dest_parent / "ds")
        msg = str(err.value)
        assert all(w in msg for w in words), msg
        assert (f"{name}.zip" in msg) if isinstance(src, Path) else ("the uploaded zip" in msg)
    assert list(dest_parent.iterdir()) == []                      # no folder, no partial extraction
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil.png").exists()


def test_good_zip_extracts_into_the_workspace_and_loads(corpus, ws):
    folder = datasets.import_zip(corpus.zips["ok"].read_bytes(), ws.root / "uploads" / "ok")
    assert folder.is_relative_to(ws.root)
    ds = datasets.load_dataset(DatasetSpec(path=str(folder)), workspace=ws)
    assert ds.schema.classes["label"] == ("cat", "dog") and ds.report.n_valid == 10


def test_upload_size_is_limited_by_the_server_and_by_import_zip(corpus, tmp_path):
    cfg = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    limit_mb = cfg["server"]["maxUploadSize"]
    assert isinstance(limit_mb, int) and 1 <= limit_mb <= 1024   # Streamlit refuses bigger uploads itself
    data = corpus.zips["ok"].read_bytes()
    with pytest.raises(DatasetError, match="more than 300 bytes once extracted"):
        datasets.import_zip(data, tmp_path / "ds", max_total_bytes=300)
    with pytest.raises(DatasetError, match="more than 3 files"):
        datasets.import_zip(data, tmp_path / "ds", max_files=3)
    assert not (tmp_path / "ds").exists()


# ---------------------------------------------------------------------------
# The audit (Clean page) and the Predict upload
# ---------------------------------------------------------------------------

def test_audit_flags_every_unreadable_file_by_name_and_audits_the_rest(corpus, corpus_snapshot, ws):
    from core import audit

    ds = datasets.load_dataset(DatasetSpec(path=str(corpus.folders)), workspace=ws)
    result = audit.audit_dataset(ds, workspace=ws)
    corrupt = result.issues[result.issues["issue"] == "corrupt"]
    flagged = {Path(s).name: d for s, d in zip(corrupt["sample_id"], corrupt["detail"])}
    for case, (fname, reason, _s) in CASES.items():
        if reason is not None and case in corpus.folder_cases and case != "svg":  # svg: not an image file
            assert fname in flagged and flagged[fname].startswith(reason), (fname, flagged.get(fname))
    assert result.n_samples == corpus.n_folder_valid
    one = result.issues[(result.issues["issue"] == "odd_size")]["sample_id"].map(lambda s: Path(s).name)
    assert {"one.png", "wide.png"} <= set(one)                       # 1x1 and 8000x100 flagged as odd sizes
    assert tree_snapshot(corpus.root) == corpus_snapshot


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    """An untrained tiny CNN saved as a run folder: enough to exercise every Predict input path."""
    import json

    from core import models, predict, runs

    rd = runs.RunDir(tmp_path_factory.mktemp("run"))
    models.save_model(models.build_model(3, backbone="cnn", image_size=16, embedding_dim=8, filters=4), rd.model)
    runs.write_labels(rd, {"task": "multiclass", "classes": ["a", "b", "c"]})
    rd.preprocessing.write_text(json.dumps({"image_size": 16, "input_range": [0, 255]}))
    return predict.Predictor.load(rd.path)


def test_predict_folder_and_uploads_answer_every_file_with_a_row(corpus, corpus_snapshot, predictor):
    table = predictor.predict_paths([corpus.root / "files"])
    by_name = {Path(p).name: (pred, err) for p, pred, err in zip(table["path"], table["prediction"], table["error"])}
    for case, (fname, reason, _s) in CASES.items():
        if case in ("svg", "directory_named_jpg"):
            continue  # not collected from a folder: not an image name / a folder
        pred, err = by_name[fname]
        if reason is None:
            assert pred in ("a", "b", "c") and not err, (fname, err)
        else:
            assert not pred and fname in err, (fname, err)
    # uploads: every file as bytes, the corpus zips, and one file over the size limit
    wide = corpus.files["very_wide"]
    uploads = [(p.name, p.read_bytes()) for p in corpus.files.values() if p.is_file() and not p.is_symlink()]
    uploads += [(f"{k}.zip", corpus.zips[k].read_bytes()) for k in ("slip", "bomb", "noimages", "symlink", "ok")]
    table = predictor.predict_bytes(uploads)
    rows = dict(zip(table["path"], table["error"].fillna("")))
    too_big = predictor.predict_bytes([("wide.png", wide.read_bytes()), ("one.png", corpus.files["one_pixel"]
                                                                          .read_bytes())],
                                      max_bytes=wide.stat().st_size - 1)
    assert too_big["error"].iloc[0].startswith("wide.png: refused") and "over the upload limit" in \
        too_big["error"].iloc[0] and not too_big["error"].iloc[1]   # the rest of the batch is predicted
    for name, words in (("slip.zip", "outside"), ("bomb.zip", "zip bomb"), ("noimages.zip", "no images"),
                        ("symlink.zip", "symbolic link"), ("zero.jpg", "empty"), ("bomb.png", "decompression bomb"),
                        ("page.png", "not an image"), ("vector.svg", "not an image")):
        assert rows[name].startswith(name) and words in rows[name], (name, rows[name])
    assert sum(1 for k in rows if k.startswith("ok.zip/")) == 10
    assert all(not rows[k] for k in rows if k.startswith("ok.zip/") or k in ("cmyk.jpg", "exif6.jpg", "anim.gif"))
    assert tree_snapshot(corpus.root) == corpus_snapshot
