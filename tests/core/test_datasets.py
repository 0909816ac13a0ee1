"""core.datasets: every label shape, every bad input, split stability, the cache, the CLI, zip import."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.datasets import (
    BASE_COLUMNS,
    DatasetError,
    DatasetSpec,
    assign_splits,
    dataset_id_for,
    dataset_summary,
    detect,
    import_zip,
    list_datasets,
    load_dataset,
    open_dataset,
    read_table,
)
from core.workspace import Workspace
from tests.conftest import zip_bytes

REPO = Path(__file__).resolve().parents[2]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"


# ---------------------------------------------------------------------------
# helpers: small real images
# ---------------------------------------------------------------------------

def img(path: Path, seed: int = 0, size: tuple[int, int] = (20, 14), fmt: str | None = None) -> Path:
    """Write a small real image (random colours from ``seed``) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def make_folders(root: Path, counts: dict[str, int], *, prefix: str = "") -> Path:
    k = 0
    for cls, n in counts.items():
        for i in range(n):
            img(root / prefix / cls / f"{cls}_{i}.png", seed=k)
            k += 1
    return root


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="module")
def shared_ws(tmp_path_factory) -> Workspace:
    """One workspace for the real-data tests, so the image cache is shared between them."""
    return Workspace(tmp_path_factory.mktemp("shared_ws"))


def write_csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------------------
# 1. class folders
# ---------------------------------------------------------------------------

def test_class_folders_multiclass(tmp_path, ws):
    root = make_folders(tmp_path / "data", {"cat": 20, "dog": 20, "bird": 20})
    (root / "README.txt").write_text("ignored: top-level files are not samples")
    (root / "cat" / ".DS_Store").write_bytes(b"\0\0")
    before = snapshot(root)
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    assert ds.schema.task == "multiclass"
    assert ds.schema.label_columns == ("label",)
    assert ds.schema.classes == {"label": ("bird", "cat", "dog")}
    s = ds.samples
    assert tuple(s.columns[: len(BASE_COLUMNS)]) == BASE_COLUMNS and list(s.columns[len(BASE_COLUMNS):]) == ["label"]
    assert len(s) == 60 and s["sample_id"].is_unique
    assert set(s["sample_id"]) == {f"{c}/{c}_{i}.png" for c in ("cat", "dog", "bird") for i in range(20)}
    row = s.set_index("sample_id").loc["cat/cat_3.png"]
    assert row["label"] == "cat" and row["path"] == str(root / "cat" / "cat_3.png")
    assert (row["width"], row["height"], row["mode"]) == (20, 14, "RGB")
    assert s[["x1", "y1", "x2", "y2"]].isna().all().all()
    # stratified 70/15/15 per class
    for cls in ("cat", "dog", "bird"):
        c = Counter(s.loc[s["label"] == cls, "split"])
        assert c == {"train": 14, "val": 3, "test": 3}
    assert ds.report.n_candidates == 60 and ds.report.n_invalid == 0 and ds.report.problems == {}
    assert snapshot(root) == before


def test_binary_folders_choose_positive(tmp_path, ws):
    root = make_folders(tmp_path / "qc", {"ok": 12, "scratch": 4})
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    assert ds.schema.task == "binary" and ds.schema.positive_class == "scratch"   # the minority
    ds2 = load_dataset(DatasetSpec(str(root), positive_class="ok"), workspace=ws)
    assert ds2.schema.positive_class == "ok"
    root3 = make_folders(tmp_path / "yn", {"no": 3, "yes": 9})
    assert load_dataset(DatasetSpec(str(root3)), workspace=ws).schema.positive_class == "yes"  # named
    # two classes but multiclass asked: stays multiclass
    assert load_dataset(DatasetSpec(str(root), task="multiclass"), workspace=ws).schema.task == "multiclass"
    with pytest.raises(DatasetError, match="not one of the two classes"):
        load_dataset(DatasetSpec(str(root), positive_class="dent"), workspace=ws)


def test_nested_folders_are_hierarchy_levels(tmp_path, ws):
    root = tmp_path / "fashion"
    for i, p in enumerate(["Apparel/Topwear/Tshirts", "Apparel/Topwear/Shirts", "Apparel/Bottomwear/Jeans",
                           "Footwear/Shoes/Sneakers"]):
        for j in range(4):
            img(root / p / f"{j}.png", seed=10 * i + j)
    img(root / "Apparel" / "Topwear" / "stray.png", seed=99)         # one level short
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    assert ds.schema.task == "hierarchical"
    assert ds.schema.label_columns == ("level_1", "level_2", "level_3")
    assert ds.schema.classes["level_1"] == ("Apparel", "Footwear")
    row = ds.samples.set_index("sample_id").loc["Apparel/Topwear/Tshirts/0.png"]
    assert (row["level_1"], row["level_2"], row["level_3"]) == ("Apparel", "Topwear", "Tshirts")
    assert ds.report.problems["wrong_depth"].count == 1
    assert ds.report.problems["wrong_depth"].examples[0].path == "Apparel/Topwear/stray.png"
    named = load_dataset(DatasetSpec(str(root), label_columns=("master", "sub", "article")), workspace=ws)
    assert named.schema.label_columns == ("master", "sub", "article")
    assert dataset_summary(named)["levels"] == ["master", "sub", "article"]


def test_split_folders_are_a_given_split(tmp_path, ws):
    root = tmp_path / "sp"
    make_folders(root, {"a": 5, "b": 5}, prefix="train")
    make_folders(root, {"a": 2, "b": 2}, prefix="valid")
    make_folders(root, {"a": 2, "b": 3}, prefix="test")
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    s = ds.samples
    assert set(s["label"]) == {"a", "b"} and ds.schema.task == "binary"
    assert Counter(s["split"]) == {"train": 10, "val": 4, "test": 5}
    assert (s.loc[s["sample_id"].str.startswith("valid/"), "split"] == "val").all()
    det = detect(root)
    assert det.kind == "folders" and det.split_folders == ("test", "train", "valid")


def test_image_at_root_and_non_image_files_are_reported(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"x": 4, "y": 4})
    img(root / "loose.png", seed=5)
    (root / "x" / "notes.txt").write_text("not an image")
    (root / "y" / "fake.jpg").write_text("not an image either")
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    p = ds.report.problems
    assert p["no_label"].count == 1 and p["not_image_file"].count == 1 and p["not_image"].count == 1
    assert ds.report.n_candidates == 11 and ds.report.n_valid == 8 and ds.report.n_invalid == 3
    assert "y/fake.jpg" in p["not_image"].examples[0].path


# ---------------------------------------------------------------------------
# 2-5. tables
# ---------------------------------------------------------------------------

def test_csv_multiclass_relative_absolute_and_dotdot_paths(tmp_path, ws):
    root = tmp_path / "proj"
    for i in range(6):
        img(root / "imgs" / f"{i}.png", seed=i)
    outside = img(tmp_path / "elsewhere" / "o.png", seed=7)
    img(tmp_path / "sibling" / "s.png", seed=8)
    write_csv(root / "labels.csv", "file,species,score\n"
              + "".join(f"imgs/{i}.png,{'cat' if i % 3 else 'dog'},0.{i}5\n" for i in range(6))
              + f"{outside},cat,0.1\n../sibling/s.png,bird,0.2\n")
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws)
    s = ds.samples
    assert ds.schema.task == "multiclass" and ds.schema.label_columns == ("species",)
    assert len(s) == 8
    assert s["rel_path"].tolist()[-2:] == [str(outside), "../sibling/s.png"]
    assert s["sample_id"].tolist()[0] == "imgs/0.png"
    assert s["sample_id"].tolist()[-1] == (tmp_path / "sibling" / "s.png").as_posix()
    assert any("outside the dataset folder" in w for w in ds.report.warnings)
    assert "score" not in s.columns


def test_table_given_as_path_and_autofound(tmp_path, ws):
    root = tmp_path / "p"
    for i in range(4):
        img(root / f"{i}.png", seed=i)
    write_csv(root / "labels.csv", "image,label\n" + "".join(f"{i}.png,{'ab'[i % 2]}\n" for i in range(4)))
    a = load_dataset(DatasetSpec(str(root / "labels.csv")), workspace=ws)
    b = load_dataset(DatasetSpec(str(root)), workspace=ws)       # labels.csv found in the folder
    assert len(a.samples) == len(b.samples) == 4 and a.spec.labels == str(root / "labels.csv")
    pd.testing.assert_frame_equal(a.samples.drop(columns="split"), b.samples.drop(columns="split"))
    assert any("labels.csv" in n for n in b.report.notes)


def test_multilabel_multihot_missing_is_nan_never_zero(tmp_path, ws):
    root = tmp_path / "ml"
    for i in range(8):
        img(root / "images" / f"{i}.jpg", seed=i, fmt="JPEG")
    write_csv(root / "labels.csv",
              "image,sky,sea,tree\n"
              "0.jpg,1,0,1\n1.jpg,0,1,\n2.jpg,1,NaN,0\n3.jpg,-1,1,1\n"
              "4.jpg,1,1,0\n5.jpg,0,0,1\n6.jpg,1.0,0.0,1\n7.jpg,,,\n")
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws)
    s = ds.samples.set_index("sample_id")
    assert ds.schema.task == "multilabel" and ds.schema.label_columns == ("sky", "sea", "tree")
    assert ds.schema.classes == {}
    assert np.isnan(s.loc["images/1.jpg", "tree"]) and np.isnan(s.loc["images/2.jpg", "sea"])
    assert np.isnan(s.loc["images/3.jpg", "sky"]) and s.loc["images/7.jpg", ["sky", "sea", "tree"]].isna().all()
    assert s.loc["images/6.jpg", "sky"] == 1.0 and s.loc["images/6.jpg", "sea"] == 0.0
    summ = dataset_summary(ds)
    assert summ["labels"] == ["sky", "sea", "tree"]
    assert summ["class_counts"] == {"sky": 4, "sea": 3, "tree": 4}
    assert summ["missing_labels"] == {"sky": 2, "sea": 2, "tree": 2}
    assert s["sky"].dtype == np.float64


def test_multilabel_tags_column(tmp_path, ws):
    root = tmp_path / "tags"
    for i in range(5):
        img(root / f"{i}.png", seed=i)
    write_csv(root / "meta.csv", 'path,tags\n0.png,cat|indoor\n1.png,dog\n2.png,"cat|dog|outdoor"\n3.png,\n4.png,dog|outdoor\n')
    ds = load_dataset(DatasetSpec(str(root), labels="meta.csv"), workspace=ws)
    s = ds.samples.set_index("sample_id")
    assert ds.schema.task == "multilabel"
    assert ds.schema.label_columns == ("cat", "dog", "indoor", "outdoor")
    assert s.loc["2.png", ["cat", "dog", "indoor", "outdoor"]].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert s.loc["3.png", ["cat", "dog"]].isna().all()          # empty tags = missing
    # space-delimited tags need the column named (a label with a space is not a tag list)
    write_csv(root / "sp.csv", "path,kw\n0.png,red round\n1.png,blue\n2.png,red square\n3.png,blue round\n4.png,red\n")
    ds2 = load_dataset(DatasetSpec(str(root), labels="sp.csv", tags_column="kw", tags_delimiter=" "), workspace=ws)
    assert ds2.schema.label_columns == ("blue", "red", "round", "square")


def test_hierarchical_table_with_attributes(tmp_path, ws):
    root = tmp_path / "h"
    rows = []
    spec = [("input", "checkbox"), ("input", "radio"), ("action", "button"), ("action", "link")]
    for i in range(24):
        g, e = spec[i % 4]
        img(root / "images" / f"{i}.png", seed=i)
        rows.append(f"images/{i}.png,{g},{e},{'' if i % 7 == 0 else i % 2},{i % 3 == 0:d}")
    write_csv(root / "labels.csv", "image,group,element,disabled,dark_theme\n" + "\n".join(rows) + "\n")
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv", task="hierarchical",
                                  label_columns=("group", "element"),
                                  attribute_columns=("disabled", "dark_theme")), workspace=ws)
    assert ds.schema.task == "hierarchical" and ds.schema.label_columns == ("group", "element")
    assert ds.schema.attribute_columns == ("disabled", "dark_theme")
    assert ds.schema.classes["group"] == ("action", "input")
    assert ds.samples["disabled"].isna().sum() == 4            # rows 0, 7, 14, 21
    summ = dataset_summary(ds)
    assert summ["missing_labels"]["disabled"] == 4 and summ["class_counts"]["element"]["radio"] == 6
    # the same layout is auto-detected (levels ordered coarse -> fine, attributes found)
    auto = load_dataset(DatasetSpec(str(root)), workspace=ws)
    assert auto.schema.task == "hierarchical" and auto.schema.label_columns == ("group", "element")
    assert auto.schema.attribute_columns == ("disabled", "dark_theme")


@pytest.mark.parametrize("fmt", ["xywh", "xyxy"])
def test_region_crops(tmp_path, ws, fmt):
    root = tmp_path / "shots"
    img(root / "s1.png", seed=1, size=(120, 80))
    img(root / "s2.png", seed=2, size=(120, 80))
    header = "image,x,y,w,h,label" if fmt == "xywh" else "image,x1,y1,x2,y2,label"
    boxes = [(10, 10, 30, 20), (50, 5, 40, 40), (0, 0, 120, 80), (200, 200, 10, 10), (5, 5, 0, 4)]
    if fmt == "xyxy":
        boxes = [(x, y, x + w, y + h) for x, y, w, h in boxes]
    lines = [f"s{1 + i % 2}.png,{a},{b},{c},{d},{'button' if i % 2 else 'link'}" for i, (a, b, c, d) in enumerate(boxes)]
    write_csv(root / "boxes.csv", header + "\n" + "\n".join(lines) + "\n")
    ds = load_dataset(DatasetSpec(str(root), labels="boxes.csv"), workspace=ws)
    s = ds.samples
    assert s["sample_id"].tolist() == ["s1.png#0", "s2.png#1", "s1.png#2"]
    first = s.iloc[0]
    assert (first["x1"], first["y1"], first["x2"], first["y2"]) == (10.0, 10.0, 40.0, 30.0)
    assert (first["width"], first["height"]) == (120, 80)            # the whole image's size
    assert ds.report.problems["bad_box"].count == 2                   # outside the image; zero width
    assert {e.row for e in ds.report.problems["bad_box"].examples} == {3, 4}


def test_unseen_folder(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"a": 4, "b": 4})
    unseen = tmp_path / "unseen"
    img(unseen / "u1.png", seed=1)
    img(unseen / "deep" / "er" / "u2.jpg", seed=2, fmt="JPEG")
    (unseen / "bad.png").write_bytes(b"\x89PNG broken")
    (unseen / "notes.md").write_text("x")
    ds = load_dataset(DatasetSpec(str(root), unseen=str(unseen)), workspace=ws)
    assert sorted(Path(p).name for p in ds.unseen_paths) == ["u1.png", "u2.jpg"]
    assert ds.report.n_unseen == 2 and ds.report.n_unseen_invalid == 2
    assert "unseen_not_image" in ds.report.problems and ds.report.n_invalid == 0
    # an unseen folder inside the dataset folder is not read as a class
    inner = root / "unseen"
    img(inner / "z.png", seed=3)
    ds2 = load_dataset(DatasetSpec(str(root), unseen=str(inner)), workspace=ws)
    assert set(ds2.samples["label"]) == {"a", "b"} and len(ds2.unseen_paths) == 1
    with pytest.raises(DatasetError, match="unseen folder does not exist"):
        load_dataset(DatasetSpec(str(root), unseen=str(tmp_path / "nope")), workspace=ws)


def test_parquet_tsv_semicolon_bom_quotes_and_odd_labels(tmp_path, ws):
    root = tmp_path / "t"
    for i in range(6):
        img(root / f"{i}.png", seed=i)
    labels = ["<script>alert(1)</script>", "🐱 cat", "a, b", "a, b", "<script>alert(1)</script>", "🐱 cat"]
    pd.DataFrame({"image": [f"{i}.png" for i in range(6)], "label": labels}).to_parquet(root / "l.parquet")
    ds = load_dataset(DatasetSpec(str(root), labels="l.parquet"), workspace=ws)
    assert set(ds.samples["label"]) == set(labels)
    # semicolons, a BOM and quoted delimiters
    text = "\ufeffimage;label\n" + "".join(f'{i}.png;"{lab}"\n' for i, lab in enumerate(labels))
    write_csv(root / "semi.csv", text)
    df, info = read_table(root / "semi.csv")
    assert info["delimiter"] == ";" and list(df.columns) == ["image", "label"]
    ds2 = load_dataset(DatasetSpec(str(root), labels="semi.csv"), workspace=ws)
    assert ds2.samples["label"].tolist() == labels
    write_csv(root / "q.csv", "image,label\n" + "".join(f'{i}.png,"{lab}"\n' for i, lab in enumerate(labels)))
    assert load_dataset(DatasetSpec(str(root), labels="q.csv"), workspace=ws).samples["label"].tolist() == labels
    write_csv(root / "t.tsv", "image\tlabel\n" + "".join(f"{i}.png\t{lab}\n" for i, lab in enumerate(labels)))
    assert load_dataset(DatasetSpec(str(root), labels="t.tsv"), workspace=ws).samples["label"].tolist() == labels
    write_csv(root / "w.csv", "image,label\n" + "".join(f"{i}.png,café{i % 2}\n" for i in range(6)), "cp1252")
    assert set(load_dataset(DatasetSpec(str(root), labels="w.csv"), workspace=ws).samples["label"]) == {"café0", "café1"}


def test_split_column_wins(tmp_path, ws):
    root = tmp_path / "s"
    for i in range(9):
        img(root / f"{i}.png", seed=i)
    splits = ["train", "train", "valid", "validation", "test", "TEST", "", "bogus", "train"]
    write_csv(root / "labels.csv", "image,label,split\n" + "".join(
        f"{i}.png,{'ab'[i % 2]},{sp}\n" for i, sp in enumerate(splits)))
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws)
    got = ds.samples.set_index("sample_id")["split"]
    assert [got[f"{i}.png"] for i in (0, 1, 2, 3, 4, 5, 8)] == ["train", "train", "val", "val", "test", "test", "train"]
    assert got["6.png"] in ("train", "val", "test") and got["7.png"] in ("train", "val", "test")
    assert any("unknown split value" in w for w in ds.report.warnings)
    assert "split" not in ds.schema.label_columns


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.fixture
def messy(tmp_path) -> Path:
    """A CSV dataset with one of each row problem, beside 6 good rows."""
    root = tmp_path / "messy"
    for i in range(6):
        img(root / f"{i}.png", seed=i)
    (root / "text.png").write_text("I am not an image")
    data = (root / "0.png").read_bytes()
    (root / "trunc.png").write_bytes(data[: len(data) // 2])
    write_csv(root / "labels.csv", "image,label\n"
              "0.png,cat\n1.png,dog\n2.png,cat\n3.png,dog\n4.png,cat\n5.png,dog\n"
              "gone.png,cat\n"          # row 6: missing file
              "text.png,dog\n"          # row 7: not an image
              "trunc.png,cat\n"         # row 8: truncated
              "2.png,\n"                # row 9: empty label
              "1.png,dog\n"             # row 10: duplicate row
              "3.png,cat\n"             # row 11: conflicting label
              ",dog\n")                 # row 12: empty path
    return root


def test_bad_rows_are_reported_and_valid_rows_load(messy, ws):
    before = snapshot(messy)
    ds = load_dataset(DatasetSpec(str(messy), labels="labels.csv"), workspace=ws)
    r = ds.report
    assert (r.n_candidates, r.n_valid, r.n_invalid) == (13, 6, 7)
    kinds = {k: (g.count, [e.row for e in g.examples]) for k, g in r.problems.items()}
    assert kinds == {"missing": (1, [6]), "not_image": (1, [7]), "truncated": (1, [8]), "empty_label": (1, [9]),
                     "duplicate_row": (1, [10]), "conflicting_labels": (1, [11]), "bad_path": (1, [12])}
    assert all(g.what_to_do for g in r.problems.values())
    assert "gone.png" in r.problems["missing"].examples[0].message
    assert "row 11" in r.problems["conflicting_labels"].examples[0].message
    ex = r.invalid_examples()
    assert {"path", "row", "problem", "message"} <= set(ex[0])
    text = "\n".join(r.summary_lines())
    assert "6 of 13 samples loaded, 7 invalid" in text and "truncated" in text
    assert dataset_summary(ds)["missing_labels"] == {"label": 1}
    assert snapshot(messy) == before                                  # never modifies the user's files


def test_missing_named_column_lists_available(messy, ws):
    with pytest.raises(DatasetError) as info:
        load_dataset(DatasetSpec(str(messy), labels="labels.csv", label_columns=("species",)), workspace=ws)
    msg = str(info.value)
    assert "'species'" in msg and "'image'" in msg and "'label'" in msg
    with pytest.raises(DatasetError, match="no image column named 'file'"):
        load_dataset(DatasetSpec(str(messy), labels="labels.csv", image_column="file"), workspace=ws)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSpec(str(messy), labels="nope.csv"), workspace=ws)


def test_wrong_delimiter_is_explained(tmp_path, ws):
    root = tmp_path / "d"
    for i in range(3):
        img(root / f"{i}.png", seed=i)
    write_csv(root / "labels.csv", "image;label\n0.png;a\n1.png;b\n2.png;a\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(DatasetSpec(str(root), labels="labels.csv", delimiter=","), workspace=ws)
    assert "single column" in str(info.value) and "';'" in str(info.value)
    # sniffing gets it right without the wrong hint
    assert len(load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws).samples) == 3


def test_nothing_valid_raises_with_report(tmp_path, ws):
    root = tmp_path / "bad"
    write_csv(root / "labels.csv", "image,label\nx.png,a\ny.png,b\n")
    with pytest.raises(DatasetError) as info:
        load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws)
    assert "no valid samples" in str(info.value) and "missing: 2" in str(info.value)
    assert info.value.report.n_invalid == 2
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        load_dataset(DatasetSpec(str(tmp_path / "empty")), workspace=ws)
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(DatasetSpec(str(tmp_path / "nowhere")), workspace=ws)


def test_contradicting_options(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"a": 3, "b": 3, "c": 3})
    with pytest.raises(DatasetError, match="exactly 2 classes"):
        load_dataset(DatasetSpec(str(root), task="binary"), workspace=ws)
    with pytest.raises(DatasetError, match="labels table"):
        load_dataset(DatasetSpec(str(root), task="multilabel"), workspace=ws)
    write_csv(root / "t.csv", "image,label\na/a_0.png,x\n")
    with pytest.raises(DatasetError, match="at least 2 label columns"):
        load_dataset(DatasetSpec(str(root), labels="t.csv", task="hierarchical", label_columns=("label",)),
                     workspace=ws)
    with pytest.raises(ValueError, match="task"):
        DatasetSpec(str(root), task="regression")
    with pytest.raises(ValueError, match="box_columns"):
        DatasetSpec(str(root), box_columns=("x", "y"))


def test_ragged_rows_backslashes_and_reserved_names(tmp_path, ws):
    root = tmp_path / "r"
    for i in range(4):
        img(root / "sub" / f"{i}.png", seed=i)
    write_csv(root / "labels.csv", "image,label\nsub\\0.png,a\nsub/1.png,b,EXTRA\nsub/2.png,a\nsub/3.png,b\n")
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=ws)
    assert ds.report.problems["bad_row"].count == 1                  # the row with a cell too many
    assert "sub/0.png" in set(ds.samples["sample_id"])               # a Windows path still resolves
    assert ds.report.n_candidates == 4 and ds.report.n_valid == 3
    # label columns named like samples-table columns are renamed, not clobbered
    write_csv(root / "ml.csv", "image,width,sea\nsub/0.png,1,0\nsub/1.png,0,1\nsub/2.png,1,1\nsub/3.png,0,\n")
    ml = load_dataset(DatasetSpec(str(root), labels="ml.csv", task="multilabel"), workspace=ws)
    assert ml.schema.label_columns == ("label_width", "sea")
    assert ml.samples["width"].tolist() == [20, 20, 20, 20] and ml.samples["label_width"].tolist() == [1, 0, 1, 0]


# ---------------------------------------------------------------------------
# split stability, rare classes, cache
# ---------------------------------------------------------------------------

def test_assign_splits_reference_properties():
    strata = ["a"] * 100 + ["b"] * 20 + ["c"] * 5 + ["d"]
    ids = [f"s{i}" for i in range(len(strata))]
    out = assign_splits(strata, ids, seed=1)
    c = {k: Counter(s for s, t in zip(out, strata) if t == k) for k in "abcd"}
    assert c["a"] == {"train": 70, "val": 15, "test": 15}
    assert c["b"] == {"train": 14, "val": 3, "test": 3}
    assert c["c"] == {"train": 3, "val": 1, "test": 1} and c["d"] == {"train": 1}
    # independent of row order; depends on the seed
    perm = np.random.default_rng(0).permutation(len(ids))
    out_p = assign_splits([strata[i] for i in perm], [ids[i] for i in perm], seed=1)
    assert dict(zip([ids[i] for i in perm], out_p)) == dict(zip(ids, out))
    assert assign_splits(strata, ids, seed=2) != out
    # existing assignments never move
    existing = ["test"] * 10 + [None] * (len(ids) - 10)
    out_e = assign_splits(strata, ids, existing=existing, seed=1)
    assert out_e[:10] == ["test"] * 10
    with pytest.raises(ValueError, match="fractions"):
        assign_splits(strata, ids, fractions=(0.5, 0.5, 0.5))


def test_split_is_stable_and_kept_on_reload(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 20, "b": 20})
    ws1, ws2 = Workspace(tmp_path / "w1"), Workspace(tmp_path / "w2")
    spec = DatasetSpec(str(root))
    first = load_dataset(spec, workspace=ws1)
    again = load_dataset(spec, workspace=ws2)                      # same spec, fresh workspace: same split
    assert first.dataset_id == again.dataset_id
    pd.testing.assert_series_equal(first.samples["split"], again.samples["split"])
    old = dict(zip(first.samples["sample_id"], first.samples["split"]))
    for i in range(20, 30):                                          # new files arrive
        img(root / "a" / f"a_{i}.png", seed=100 + i)
    grown = load_dataset(spec, workspace=ws1)
    new = dict(zip(grown.samples["sample_id"], grown.samples["split"]))
    assert len(new) == 50 and all(new[k] == v for k, v in old.items())
    assert {new[f"a/a_{i}.png"] for i in range(20, 30)} <= {"train", "val", "test"}
    assert any("Kept the stored split" in n for n in grown.report.notes)
    # a different seed is a different dataset (and a different split)
    other = load_dataset(DatasetSpec(str(root), seed=7), workspace=ws1)
    assert other.dataset_id != first.dataset_id
    assert dataset_id_for(DatasetSpec(str(root))) == first.dataset_id


def test_rare_classes_kept_and_reported(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"common": 30, "rare": 2, "single": 1})
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    assert dataset_summary(ds)["class_counts"] == {"common": 30, "rare": 2, "single": 1}
    text = " ".join(ds.report.warnings)
    assert "fewer than 10" in text and "single (1)" in text and "rare (2)" in text
    assert "no sample in val" in text or "no sample in test" in text


def test_second_load_decodes_nothing_and_changes_are_seen(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"a": 6, "b": 6})
    spec = DatasetSpec(str(root))
    first = load_dataset(spec, workspace=ws)
    assert first.report.n_decoded == 12
    seen = []
    second = load_dataset(spec, workspace=ws, progress=lambda d, t: seen.append((d, t)))
    assert second.report.n_decoded == 0 and seen[-1] == (12, 12)
    pd.testing.assert_frame_equal(first.samples, second.samples)
    img(root / "a" / "a_0.png", seed=1234, size=(30, 30))             # one image changes
    st = os.stat(root / "a" / "a_0.png")
    os.utime(root / "a" / "a_0.png", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000))
    third = load_dataset(spec, workspace=ws)
    assert third.report.n_decoded == 1
    assert third.samples.set_index("sample_id").loc["a/a_0.png", "width"] == 30
    (root / "b" / "b_5.png").unlink()                                # one disappears
    fourth = load_dataset(spec, workspace=ws)
    assert fourth.report.n_decoded == 0 and len(fourth.samples) == 11


def test_open_and_list_datasets(tmp_path, ws):
    root = make_folders(tmp_path / "d", {"a": 4, "b": 5})
    ds = load_dataset(DatasetSpec(str(root), name="My set"), workspace=ws)
    assert ds.dataset_id.startswith("my-set-")
    opened = open_dataset(ws, ds.dataset_id)
    pd.testing.assert_frame_equal(opened.samples, ds.samples)
    assert opened.schema == ds.schema and opened.spec == ds.spec and opened.name == "My set"
    assert opened.report.to_dict() == ds.report.to_dict()
    for f in ("samples.parquet", "schema.json", "report.json", "spec.json"):
        assert (ws.dataset_dir(ds.dataset_id) / f).is_file()
    assert [d["dataset_id"] for d in list_datasets(ws)] == [ds.dataset_id]
    assert list_datasets(ws)[0]["n_samples"] == 9
    with pytest.raises(DatasetError, match="not in the workspace"):
        open_dataset(ws, "nope-123")


def test_detect_preview_and_to_spec(tmp_path):
    root = tmp_path / "p"
    for i in range(4):
        img(root / "images" / f"{i}.png", seed=i)
    write_csv(root / "labels.csv", "id,image,kind\n" + "".join(f"{i},{i}.png,{'xyz'[i % 3]}\n" for i in range(4)))
    det = detect(root)
    assert det.kind == "table" and det.image_column == "image" and det.label_columns == ("kind",)
    assert det.task == "multiclass" and det.image_root == str(root / "images") and det.delimiter == ","
    assert len(det.preview) == 4 and list(det.preview.columns) == ["id", "image", "kind"]
    spec = det.to_spec(seed=3)
    assert spec.labels == str(root / "labels.csv") and spec.seed == 3 and spec.label_columns == ("kind",)
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    fdet = detect(make_folders(tmp_path / "f", {"u": 2, "v": 2, "w": 1}))
    assert fdet.kind == "folders" and fdet.task == "multiclass" and "label" in fdet.preview.columns


def test_spec_accepts_lists_and_strings():
    s = DatasetSpec("/x", label_columns=["a", "b"], attribute_columns="c, d")
    assert s.label_columns == ("a", "b") and s.attribute_columns == ("c", "d")
    with pytest.raises(ValueError, match="path"):
        DatasetSpec("")


# ---------------------------------------------------------------------------
# real datasets (../shared)
# ---------------------------------------------------------------------------

def _shared(name: str) -> Path:
    p = SHARED_DATASETS / name
    if not p.exists():
        pytest.skip(f"{p} is absent: the real datasets live in ../shared beside the repo")
    return p


def test_flowers12(shared_ws):
    root = _shared("flowers12")
    ds = load_dataset(DatasetSpec(str(root)), workspace=shared_ws)
    assert len(ds.samples) == 960 and ds.schema.task == "multiclass"
    assert len(ds.schema.classes["label"]) == 12
    summ = dataset_summary(ds)
    assert set(summ["class_counts"].values()) == {80}
    assert summ["split_counts"] == {"train": 720, "val": 0, "test": 240}
    assert ds.report.n_invalid == 0
    assert load_dataset(DatasetSpec(str(root)), workspace=shared_ws).report.n_decoded == 0


def test_miml_scene(shared_ws):
    root = _shared("miml_scene")
    ds = load_dataset(DatasetSpec(str(root), labels="labels.csv"), workspace=shared_ws)
    summ = dataset_summary(ds)
    assert summ["n_valid"] == 2000 and summ["task"] == "multilabel"
    assert summ["class_counts"] == {"desert": 409, "mountains": 458, "sea": 580, "sunset": 465, "trees": 560}
    assert summ["missing_labels"] == dict.fromkeys(summ["labels"], 0)
    assert sum(summ["split_counts"].values()) == 2000 and min(summ["split_counts"].values()) > 250


def test_miml_scene_blanked_copy_counts_missing(shared_ws, tmp_path):
    root = _shared("miml_scene")
    df = pd.read_csv(root / "labels.csv", dtype=str, keep_default_na=False)
    rng = np.random.default_rng(0)
    blank = {c: rng.choice(len(df), size=n, replace=False) for c, n in (("sea", 37), ("trees", 11))}
    for c, idx in blank.items():
        df.loc[idx, c] = ""
    df.loc[5, "desert"] = "-1"
    df.to_csv(tmp_path / "labels.csv", index=False)
    ds = load_dataset(DatasetSpec(str(tmp_path), labels="labels.csv", image_root=str(root / "images")),
                      workspace=shared_ws)
    summ = dataset_summary(ds)
    assert summ["n_valid"] == 2000
    assert summ["missing_labels"] == {"desert": 1, "mountains": 0, "sea": 37, "sunset": 0, "trees": 11}
    assert summ["class_counts"]["sea"] == 580 - int((pd.read_csv(root / "labels.csv")["sea"].to_numpy()[blank["sea"]]).sum())


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------

def run_cli(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LOUPE_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "core", "dataset", "inspect", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_json_on_tmp_data(messy, tmp_path):
    out = run_cli(str(messy), "--labels", "labels.csv", "--json", home=tmp_path / "h")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert (res["n_samples"], res["n_valid"], res["n_invalid"]) == (13, 6, 7)
    assert res["task"] == "binary" and res["classes"] == ["cat", "dog"]
    assert res["class_counts"] == {"cat": 3, "dog": 3}
    assert res["missing_labels"] == {"label": 1}
    assert {e["problem"] for e in res["invalid_examples"]} >= {"missing", "truncated", "empty_label"}
    assert all({"path", "row", "problem", "message"} <= set(e) for e in res["invalid_examples"])
    assert sum(res["split_counts"].values()) == 6


def test_cli_errors_exit_2(messy, tmp_path):
    out = run_cli(str(messy), "--labels", "labels.csv", "--label-columns", "species", "--json", home=tmp_path / "h")
    assert out.returncode == 2 and "species" in out.stderr and "Available columns" in out.stderr
    assert "error" in json.loads(out.stdout.strip().splitlines()[-1])
    bad = tmp_path / "bad"
    write_csv(bad / "labels.csv", "image,label\nx.png,a\n")
    out = run_cli(str(bad), "--labels", "labels.csv", home=tmp_path / "h")
    assert out.returncode == 2 and "no valid samples" in out.stderr and "Traceback" not in out.stderr


def test_cli_readable_summary(tmp_path):
    root = make_folders(tmp_path / "d", {"a": 3, "b": 4, "c": 3})
    out = run_cli(str(root), home=tmp_path / "h")
    assert out.returncode == 0, out.stderr
    assert "10 of 10 samples loaded" in out.stdout and "classes (3)" in out.stdout


def test_cli_real_datasets(tmp_path):
    flowers, miml = _shared("flowers12"), _shared("miml_scene")
    res = json.loads(run_cli(str(flowers), "--json", home=tmp_path / "h").stdout.strip().splitlines()[-1])
    assert res["n_valid"] == 960 and len(res["classes"]) == 12 and res["split_counts"]["test"] == 240
    out = run_cli(str(miml), "--labels", str(miml / "labels.csv"), "--task", "multilabel", "--json",
                  home=tmp_path / "h")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["labels"] == ["desert", "mountains", "sea", "sunset", "trees"]
    assert res["class_counts"]["sea"] == 580 and res["n_invalid"] == 0


# ---------------------------------------------------------------------------
# zip import
# ---------------------------------------------------------------------------

def _png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_import_zip_extracts_and_loads(tmp_path, ws):
    data = zip_bytes({"flowers/a/1.png": _png_bytes(1), "flowers/a/2.png": _png_bytes(2),
                 "flowers/b/3.png": _png_bytes(3), "__MACOSX/._junk": b"x"})
    zpath = tmp_path / "up.zip"
    zpath.write_bytes(data)
    root = import_zip(zpath, tmp_path / "imports" / "one")
    assert root == tmp_path / "imports" / "one" / "flowers"
    assert sorted(p.name for p in root.rglob("*.png")) == ["1.png", "2.png", "3.png"]
    assert not (tmp_path / "imports" / "one" / "__MACOSX").exists()
    assert len(load_dataset(DatasetSpec(str(root)), workspace=ws).samples) == 3
    flat = import_zip(zip_bytes({"a/1.png": _png_bytes(1), "b/2.png": _png_bytes(2)}), tmp_path / "imports" / "two")
    assert flat == tmp_path / "imports" / "two"
    with pytest.raises(DatasetError, match="not an empty folder"):
        import_zip(data, tmp_path / "imports" / "two")


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "C:/evil.png"])
def test_import_zip_refuses_zip_slip(tmp_path, name):
    data = zip_bytes({"ok/1.png": _png_bytes(1), name: _png_bytes(2)})
    with pytest.raises(DatasetError, match="outside the extraction folder"):
        import_zip(data, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() and not (tmp_path / "evil.png").exists()
    assert not list(tmp_path.glob(".dest.*"))


def test_import_zip_refuses_bombs_and_junk(tmp_path):
    bomb = zip_bytes({"a/1.png": _png_bytes(1), "a/zeros.png": b"\0" * (8 * 1024 * 1024)})
    with pytest.raises(DatasetError, match="zip bomb"):
        import_zip(bomb, tmp_path / "d1")
    with pytest.raises(DatasetError, match="declares more than"):
        import_zip(zip_bytes({"a/1.png": _png_bytes(1), "a/2.png": _png_bytes(2)}), tmp_path / "d2", max_total_bytes=100)
    with pytest.raises(DatasetError, match="more than 2 files"):
        import_zip(zip_bytes({f"a/{i}.png": _png_bytes(i) for i in range(3)}), tmp_path / "d3", max_files=2)
    with pytest.raises(DatasetError, match="no images"):
        import_zip(zip_bytes({"readme.txt": b"hello", "data.csv": b"a,b\n"}), tmp_path / "d4")
    with pytest.raises(DatasetError, match="not a readable zip"):
        import_zip(b"this is not a zip", tmp_path / "d5")
    assert not any((tmp_path / f"d{i}").exists() for i in range(1, 6))
    with pytest.raises(ValueError, match="max_files"):
        import_zip(b"", tmp_path / "d6", max_files=0)
