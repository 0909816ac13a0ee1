"""Collecting candidates: the rows that may become samples, with their labels parsed, per layout.

``_collect_folders`` reads class folders (one label, or nested hierarchy levels);
``_collect_table`` reads a labels table: it settles which column plays which role (the
user's choices, else the detection's), then parses each row's labels by label shape
(class names, hierarchy levels, multi-hot cells, delimited tags), region boxes and given
split, recording every invalid row in the load report's problems. Nothing is decoded here.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.datasets.detection import Detection, _detect_table, _folder_layout, _guess_boxes, _guess_image_root, \
    _nested_depth, _resolve_cell
from core.datasets.tables import (_delim_name, _find_column, _is_image_name, _is_multihot, _multihot_value,
                                  _resolve_user_path, _split_tags, _suggest_delimiter, _tag_delimiter, _walk_files,
                                  read_table)
from core.datasets.types import BASE_COLUMNS, MAX_EXAMPLES, SPLIT_ALIASES, DatasetError, DatasetSpec, _Problems

@dataclass
class _Candidates:
    """Rows that may become samples, before decoding; invalid ones already in ``problems``."""

    rows: list[dict[str, Any]]
    task: str
    label_columns: tuple[str, ...]
    attribute_columns: tuple[str, ...]
    n_candidates: int
    given_split: bool
    positive_class: str | None
    notes: list[str]
    warnings: list[str]
    missing_counts: dict[str, int] = field(default_factory=dict)
    watch: list[str] = field(default_factory=list)  # folders and files whose change means "load again"


def _sample_id(path: str, root: str) -> tuple[str, bool]:
    """(sample id, inside root?): ``path`` relative to ``root`` in POSIX form, or absolute when outside it."""
    prefix = root.rstrip(os.sep) + os.sep
    if path.startswith(prefix):
        rel = path[len(prefix):]
        return (rel.replace(os.sep, "/") if os.sep != "/" else rel), True
    return Path(path).as_posix(), False


def _safe_label_name(name: str, notes: list[str]) -> str:
    if name in BASE_COLUMNS or name == "":
        new = f"label_{name or 'empty'}"
        notes.append(f"Label {name!r} is renamed {new!r} (the name is taken by a samples-table column).")
        return new
    return name


def _collect_folders(root: Path, spec: DatasetSpec, problems: _Problems, exclude: list[Path]) -> _Candidates:
    if spec.task == "multilabel":
        raise DatasetError(f"{root}: class folders give one label per image; a multilabel dataset needs a "
                           "labels table (multi-hot columns or a tags column).")
    walked: list[str] = []
    files = _walk_files(root, exclude=exclude, dirs=walked)
    split_dirs, split_map = _folder_layout(root, files)
    off = 1 if split_map else 0
    notes: list[str] = []
    warnings: list[str] = []
    if split_map:
        notes.append(f"Given split from folders: {', '.join(split_dirs)}.")
    else:
        tops = sorted({f[0] for f in files if len(f) > 1})
        named = [t for t in tops if t.lower() in SPLIT_ALIASES]
        if named:
            warnings.append(f"Folders {named} look like split folders but sit beside class folders "
                            f"({[t for t in tops if t not in named][:5]}); they are read as classes.")
    images, others = [], []
    for f in files:
        depth = len(f) - 1 - off
        if depth <= 0:
            if _is_image_name(f[-1]):
                problems.add("no_label", "/".join(f), None,
                             f"{'/'.join(f)}: an image outside any class folder.")
            continue  # README.txt, labels.csv, ... at the top are not part of the dataset
        (images if _is_image_name(f[-1]) else others).append(f)
    for f in others:
        problems.add("not_image_file", "/".join(f), None,
                     f"{'/'.join(f)}: not an image file (extension {os.path.splitext(f[-1])[1] or 'none'!r}).")
    depths = Counter(len(f) - 1 - off for f in images)
    task = spec.task
    if task is None:
        if _nested_depth(depths) > 1 and len(spec.label_columns) != 1:
            task = "hierarchical"
        else:
            task = None  # single-label: decided below from the number of classes
    if task == "hierarchical":
        n_levels = len(spec.label_columns) if spec.label_columns else (depths.most_common(1)[0][0] if depths else 1)
        label_cols = spec.label_columns or tuple(f"level_{i + 1}" for i in range(n_levels))
        if n_levels < 2:
            raise DatasetError(f"{root}: a hierarchical dataset needs at least 2 levels of nested class folders "
                               f"(or 2 label_columns); found {n_levels}.")
    else:
        if len(depths) > 1:
            warnings.append("Images sit at different folder depths; each image's class is its top folder "
                            "(pass task='hierarchical' to read nested folders as levels).")
        label_cols = spec.label_columns[:1] or ("label",)
        if len(spec.label_columns) > 1:
            raise DatasetError(f"{root}: class folders give one label column for task {task or 'multiclass'!r}; "
                               f"received label_columns={list(spec.label_columns)}.")
    label_cols = tuple(_safe_label_name(c, notes) for c in label_cols)
    rows = []
    for f in images:
        rel = "/".join(f)
        parts = f[off:-1]
        if task == "hierarchical":
            if len(parts) != len(label_cols):
                problems.add("wrong_depth", rel, None,
                             f"{rel}: {len(parts)} folder level(s) above the image; the dataset has "
                             f"{len(label_cols)} ({' > '.join(label_cols)}).")
                continue
            labels = dict(zip(label_cols, parts))
        else:
            labels = {label_cols[0]: parts[0]}
        path = root.joinpath(*f)
        rows.append({"sample_id": rel, "path": str(path), "rel_path": rel, "_row": None,
                     "_split": split_map.get(f[0]) if split_map else None, **labels})
    n_cand = len(images) + len(others) + problems.counts["no_label"]
    if task is None:
        n_classes = len({r[label_cols[0]] for r in rows})
        task = "binary" if n_classes == 2 else "multiclass"
    return _Candidates(rows, task, label_cols, (), n_cand, bool(split_map), spec.positive_class, notes, warnings,
                       watch=walked)


def _collect_table(root: Path, spec: DatasetSpec, problems: _Problems, *,
                   pre: tuple[tuple[pd.DataFrame, dict[str, Any]], Detection] | None = None) -> _Candidates:
    table = _resolve_user_path(spec.labels, root) if spec.labels else None
    if table is None:
        raise DatasetError("internal: no table")  # pragma: no cover
    if pre is not None:
        (df, info), det = pre
    else:
        df, info = read_table(table, delimiter=spec.delimiter)
        det = _detect_table(root, table, delimiter=spec.delimiter, auto=False, read=(df, info))
    notes: list[str] = []
    if pre is not None:
        notes.append(f"Using the labels table {table.name} found in the dataset folder.")
    if spec.delimiter is None and info.get("delimiter"):
        notes.append(f"Delimiter: {_delim_name(info['delimiter'])} (sniffed).")
    warnings: list[str] = []
    cols = list(df.columns)
    is_csv = table.suffix.lower() not in (".parquet", ".pq")

    def where(row: int) -> str:
        return f"row {row} (line {row + 2})" if is_csv else f"row {row}"

    if len(cols) == 1:
        d = _suggest_delimiter(cols[0])
        raise DatasetError(
            f"{table}: the table has a single column {cols[0]!r}, so the image path and the labels cannot be "
            f"told apart." + (f" The header contains {_delim_name(d)}: the delimiter is probably {d!r} "
                              f"(pass delimiter={d!r}, CLI --delimiter)." if d else
                              " Add a label column, or use class folders.")
        )

    # -- which columns --------------------------------------------------------
    image_col = _find_column(cols, spec.image_column, "image", table) if spec.image_column else det.image_column
    if image_col is None:
        raise DatasetError(f"{table}: no column looks like image paths (file names ending in .jpg, .png, ...). "
                           f"Available columns: {', '.join(map(repr, cols))}. Pass image_column (CLI --image-column).")
    box_cols: tuple[str, ...] = tuple(_find_column(cols, c, "box", table) for c in spec.box_columns) \
        if spec.box_columns else det.box_columns
    box_fmt = spec.box_format or (det.box_format if not spec.box_columns else _guess_boxes(spec.box_columns)[1])
    if box_cols and box_fmt is None:
        raise DatasetError(f"{table}: cannot tell whether box columns {list(box_cols)} are x,y,w,h or x1,y1,x2,y2; "
                           "pass box_format='xywh' or 'xyxy' (CLI --box-format).")
    split_col = _find_column(cols, spec.split_column, "split", table) if spec.split_column else det.split_column
    attrs = tuple(_find_column(cols, c, "attribute", table) for c in spec.attribute_columns)
    tags_col = _find_column(cols, spec.tags_column, "tags", table) if spec.tags_column else None
    label_cols = tuple(_find_column(cols, c, "label", table) for c in spec.label_columns)
    task = spec.task
    if tags_col is None and not label_cols:
        # Nothing named: take the detection, restricted to the requested task.
        if task is None or task == det.task:
            task = task or det.task
            label_cols, tags_col = det.label_columns, det.tags_column
            attrs = attrs or det.attribute_columns
        elif task == "multilabel":
            mh = [c for c in det.attribute_columns + det.label_columns
                  if _is_multihot(df[c][df[c].str.strip() != ""])]
            if det.tags_column:
                tags_col = det.tags_column
            elif mh:
                label_cols = tuple(mh)
        elif task in ("multiclass", "binary") and det.label_columns:
            label_cols = det.label_columns[-1:] if det.task == "hierarchical" else det.label_columns[:1]
            attrs = attrs or det.attribute_columns
        elif task == "hierarchical" and det.label_columns:
            label_cols = det.label_columns
            attrs = attrs or det.attribute_columns
        if tags_col is None and not label_cols:
            raise DatasetError(
                f"{table}: could not find the label column(s) for task {task or 'auto'!r}. Available columns: "
                f"{', '.join(map(repr, cols))}. Pass label_columns (CLI --label-columns a,b,c)"
                + (" or tags_column." if task in (None, "multilabel") else "."))
    if task is None:
        if tags_col is not None:
            task = "multilabel"
        elif len(label_cols) == 1:
            s = df[label_cols[0]].astype(str).str.strip()
            task = "binary" if s[s != ""].nunique() == 2 else "multiclass"
        elif all(_is_multihot(df[c][df[c].str.strip() != ""]) for c in label_cols):
            task = "multilabel"
        else:
            task = "hierarchical"
    if task in ("multiclass", "binary") and (len(label_cols) != 1 or tags_col):
        raise DatasetError(f"task {task!r} needs exactly one label column; received "
                           f"label_columns={list(label_cols)}" + (f", tags_column={tags_col!r}" if tags_col else "")
                           + ". For several label columns use task 'multilabel' or 'hierarchical'.")
    if task == "hierarchical" and len(label_cols) < 2:
        raise DatasetError(f"task 'hierarchical' needs at least 2 label columns (levels, coarse -> fine); "
                           f"received label_columns={list(label_cols)}.")
    if task == "multilabel" and tags_col and label_cols:
        raise DatasetError("give either tags_column or multi-hot label_columns for a multilabel task, not both.")
    for c in (label_cols if task == "multilabel" else ()) + attrs:
        vals = df[c].astype(str)
        parsed = vals.map(lambda v: _multihot_value(v) is not None)
        if len(vals) and parsed.mean() < 0.5:
            examples = ", ".join(repr(v) for v in vals[~parsed].unique()[:5])
            raise DatasetError(
                f"{table}: column {c!r} is not multi-hot (1 / 0 / empty): it holds values like {examples}. "
                + ("For one column of delimited tags pass tags_column (CLI --tags-column); for one class per "
                   "image use task 'multiclass'." if c in label_cols else
                   "Attribute columns must be 1 / 0 / empty."))
    used = [image_col, *box_cols, *label_cols, *attrs] + ([split_col] if split_col else []) + \
        ([tags_col] if tags_col else [])
    dup = [c for c, n in Counter(used).items() if n > 1]
    if dup:
        raise DatasetError(f"{table}: column(s) {dup} are used for two roles (image / label / box / attribute / "
                           "split). Give each column one role.")

    # -- image root -------------------------------------------------------------
    if spec.image_root:
        base = _resolve_user_path(spec.image_root, root)
        if not base.is_dir():
            raise DatasetError(f"{base}: image_root is not a folder.")
    elif det.image_column == image_col and det.image_root:
        base = Path(det.image_root)
    else:
        base, _ = _guess_image_root(df[image_col].tolist(), root, table)
    if spec.image_column is None:
        notes.append(f"Image column: {image_col!r} (auto-detected).")
    if spec.image_root is None and base != root:
        notes.append(f"Image paths are relative to {base} (auto-detected).")
    if not spec.box_columns and box_cols:
        notes.append(f"Region crops: box columns {', '.join(box_cols)} ({box_fmt}, auto-detected).")
    if not spec.split_column and split_col:
        notes.append(f"Given split: column {split_col!r} (auto-detected).")
    if not spec.label_columns and not spec.tags_column:
        what = f"tags column {tags_col!r}" if tags_col else f"label column(s) {', '.join(map(repr, label_cols))}"
        notes.append(f"Task {task!r} from {what} (auto-detected"
                     + (f"; attributes {', '.join(map(repr, attrs))}" if attrs and not spec.attribute_columns else "")
                     + ").")
        ignored = [n for n in det.notes if n.startswith("Ignored columns")]
        notes.extend(ignored)

    # -- labels -------------------------------------------------------------------
    tag_names: tuple[str, ...] = ()
    tags_delim = None
    if tags_col is not None:
        tags_delim = spec.tags_delimiter or _tag_delimiter(df[tags_col].astype(str), allow_space=True) or "|"
        if spec.tags_delimiter == "\\t":
            tags_delim = "\t"
        names = sorted({t for cell in df[tags_col].astype(str) for t in _split_tags(cell, tags_delim)})
        tag_names = tuple(names)
        notes.append(f"Tags column {tags_col!r} split on {_delim_name(tags_delim)}: {len(names)} labels.")
    out_label_cols = tuple(_safe_label_name(c, notes) for c in (tag_names if tags_col else label_cols))
    out_attrs = tuple(_safe_label_name(c, notes) for c in attrs)
    bad_values: list[str] = []
    n_bad_values = 0
    missing_counts: Counter[str] = Counter()

    def multihot(cell: str, col: str, row: int) -> float:
        nonlocal n_bad_values
        v = _multihot_value(cell)
        if v is None:
            n_bad_values += 1
            if len(bad_values) < MAX_EXAMPLES:
                bad_values.append(f"{where(row)} column {col!r}: {cell!r}")
            return math.nan
        return v

    # -- split column -------------------------------------------------------------
    unknown_split: list[str] = []
    n_unknown_split = 0

    # -- rows ---------------------------------------------------------------------
    rows: list[dict[str, Any]] = []
    seen: dict[tuple, tuple[int, Any]] = {}
    n_outside = 0
    base_s, root_s = str(base), str(root)
    image_vals = df[image_col].astype(str).tolist()
    label_frame = {c: df[c].astype(str).tolist() for c in label_cols}
    attr_frame = {c: df[c].astype(str).tolist() for c in attrs}
    tag_vals = df[tags_col].astype(str).tolist() if tags_col else None
    split_vals = df[split_col].astype(str).tolist() if split_col else None
    box_frame = [df[c].astype(str).tolist() for c in box_cols] if box_cols else None
    for i in range(len(df)):
        cell = image_vals[i].strip()
        if not cell:
            problems.add("bad_path", "", i, f"{where(i)}: the image path cell ({image_col!r}) is empty.")
            continue
        path = _resolve_cell(cell, base_s)
        sid, inside = _sample_id(path, root_s)
        # labels
        rec: dict[str, Any] = {}
        if task in ("multiclass", "binary", "hierarchical"):
            empty = [c for c in label_cols if not label_frame[c][i].strip()]
            if empty:
                problems.add("empty_label", cell, i, f"{where(i)} ({cell}): empty label in column "
                                                     f"{', '.join(map(repr, empty))}.")
                for c in empty:
                    missing_counts[c] += 1
                continue
            for c, out in zip(label_cols, out_label_cols):
                rec[out] = label_frame[c][i].strip()
        elif tags_col is not None:
            toks = _split_tags(tag_vals[i], tags_delim)
            if not toks:
                for out in out_label_cols:
                    rec[out] = math.nan
            else:
                tset = set(toks)
                for name, out in zip(tag_names, out_label_cols):
                    rec[out] = 1.0 if name in tset else 0.0
        else:
            for c, out in zip(label_cols, out_label_cols):
                rec[out] = multihot(label_frame[c][i], c, i)
        for c, out in zip(attrs, out_attrs):
            rec[out] = multihot(attr_frame[c][i], c, i)
        # box
        box = (math.nan,) * 4
        if box_frame is not None:
            try:
                a, b, c_, d = (float(v[i]) for v in box_frame)
                box = (a, b, a + c_, b + d) if box_fmt == "xywh" else (a, b, c_, d)
                if box_fmt == "xywh" and (c_ <= 0 or d <= 0):
                    box = (a, b, math.nan, math.nan)
            except ValueError:
                box = (math.nan,) * 4
            if any(math.isnan(v) for v in box):
                vals = ", ".join(f"{col}={box_frame[k][i]!r}" for k, col in enumerate(box_cols))
                problems.add("bad_box", cell, i, f"{where(i)} ({cell}): the box is not usable ({vals}).")
                continue
            sid = f"{sid}#{i}"
        # duplicates
        labels_key = tuple(("nan" if isinstance(v, float) and math.isnan(v) else v) for v in rec.values())
        dkey = (str(path), box if box_frame is not None else None)
        if dkey in seen:
            first_row, first_labels = seen[dkey]
            if first_labels == labels_key:
                problems.add("duplicate_row", cell, i, f"{where(i)} ({cell}): repeats row {first_row}.")
                continue
            else:
                problems.add("conflicting_labels", cell, i,
                             f"{where(i)} ({cell}): listed again with labels {list(labels_key)}; "
                             f"row {first_row} says {list(first_labels)} (kept).")
                continue
        seen[dkey] = (i, labels_key)
        if not inside:
            n_outside += 1
        split = None
        if split_vals is not None:
            sv = split_vals[i].strip().lower()
            split = SPLIT_ALIASES.get(sv)
            if split is None:
                n_unknown_split += 1
                if len(unknown_split) < MAX_EXAMPLES:
                    unknown_split.append(f"{where(i)}: {split_vals[i]!r}")
        rows.append({"sample_id": sid, "path": str(path), "rel_path": cell, "_row": i, "_split": split,
                     "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3], **rec})
    for _k, msg in info["bad_rows"]:
        problems.add("bad_row", "", None, f"{table.name}: a row with {msg}")
    if n_bad_values:
        warnings.append(f"{n_bad_values} multi-hot cell(s) are not 1/0/empty and were read as missing (NaN): "
                        + "; ".join(bad_values))
    if n_outside:
        warnings.append(f"{n_outside} image path(s) point outside the dataset folder (absolute or ../): they "
                        "load, but the dataset is not self-contained if the folder moves.")
    if unknown_split:
        warnings.append(f"{n_unknown_split} row(s) have an empty or unknown split value (expected "
                        f"train/val/test); they get a seeded stratified split: " + "; ".join(unknown_split))
    if tags_col is not None:
        n_empty = sum(1 for r in rows if isinstance(r[out_label_cols[0]], float)
                      and math.isnan(r[out_label_cols[0]])) if out_label_cols else 0
        if n_empty:
            warnings.append(f"{n_empty} row(s) have an empty tags cell: all their labels are missing (NaN), "
                            "not 0.")
    return _Candidates(rows, task, out_label_cols, out_attrs, len(df) + len(info["bad_rows"]), split_col is not None,
                       spec.positive_class, notes, warnings, dict(missing_counts),
                       watch=[str(root), str(table.parent), str(base), str(table)])
