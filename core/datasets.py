"""Datasets of every label shape -> one :class:`Dataset` (samples table + label schema + split).

Vocabulary: a dataset has N samples; a *sample* is one image file, or one region (box)
cut out of a larger image. The *samples table* is a :class:`pandas.DataFrame` with one
row per valid sample and these columns, in this order:

``sample_id``  str, stable and unique: the image path relative to the dataset root
               (POSIX separators), plus ``#<row>`` for region crops.
``path``       str, absolute path of the image file.
``rel_path``   str, the path exactly as the dataset gives it (CSV cell or folder path).
``x1 y1 x2 y2`` float pixel box of a region crop, NaN for whole images.
``split``      str, one of ``train``, ``val``, ``test`` (stored, seeded, made once).
``width height`` int, size of the original image (before cropping); ``mode`` str (PIL mode).
then the label columns named in :class:`LabelSchema`:

* ``multiclass`` / ``binary``: one column of str class names.
* ``multilabel``: K columns, one per label, float 1.0 / 0.0 / NaN (NaN = missing, never 0).
* ``hierarchical``: one str column per level, ordered coarse -> fine.
* ``attribute_columns`` (any task): extra multi-hot columns, float 1.0 / 0.0 / NaN.

Shapes that load (auto-detected by :func:`detect`, every choice overridable in
:class:`DatasetSpec`):

1. **Class folders** ``root/<class>/*.jpg``. Nested folders are hierarchy levels
   (``root/Apparel/Topwear/Tshirts/x.jpg`` -> levels ``level_1..level_3``, or the names in
   ``label_columns``). Top folders named ``train/ val/ test/`` (also ``valid``,
   ``validation``, ``dev``, ``training``, ``testing``) are a given split.
2. **A table** (CSV / TSV / Parquet; delimiter sniffed, BOM and quoted cells handled)
   with an image-path column (relative to the images folder, or absolute) and one label
   column -> ``multiclass``; two classes -> ``binary`` with a positive class (the given
   one, else one named like ``1/true/yes/positive/valid``, else the minority class).
3. **Multi-label**: K multi-hot columns (``1``/``0``; an empty cell, ``NaN`` or ``-1`` is
   *missing*, stored as NaN, never 0), or one column of delimited tags (``|`` ``;`` ``,``
   or space; an empty tag cell is missing).
4. **Hierarchical**: ``label_columns`` are ordered levels (coarse -> fine), plus optional
   multi-hot ``attribute_columns``.
5. **Region crops**: box columns ``x,y,w,h`` or ``x1,y1,x2,y2`` (also ``xmin..ymax``,
   ``left,top,right,bottom``, ``left,top,width,height``); each row is one sample with
   ``sample_id = <image path>#<row>``.
6. **Unseen**: a folder of unlabelled images (searched recursively) kept beside the
   dataset for out-of-distribution checks (:attr:`Dataset.unseen_paths`).

Rows are numbered from 0 (the first row after the header), as pandas does; messages
also give the line of a CSV file (``row + 2``).

The split is made once: a split column or split folders win; otherwise each sample
gets ``train/val/test`` (default 70/15/15) by a seeded, stratified assignment (on the
class; the finest level for hierarchies; the rarest positive label for multi-label).
Re-loading keeps the stored split of every sample already present and assigns only
new samples. Classes too rare to stratify are kept and reported, never dropped.

Nothing here modifies the user's files: everything is written under the workspace
(``datasets/<dataset_id>/``: ``samples.parquet``, ``schema.json``, ``report.json``,
``spec.json``, ``dataset.json``) through atomic writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from core.images import IMAGE_EXTENSIONS, REASONS, ImageCache
from core.workspace import Workspace, atomic_write_bytes, atomic_write_json, read_json

TASKS = ("multiclass", "binary", "multilabel", "hierarchical")
SPLITS = ("train", "val", "test")
BASE_COLUMNS = ("sample_id", "path", "rel_path", "x1", "y1", "x2", "y2", "split", "width", "height", "mode")

#: Side of the images decoded (and cached) while loading: validating a dataset = decoding it once.
PREVIEW_SIZE = 96
#: Default split fractions (train, val, test).
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
#: Classes with fewer samples than this are reported as rare (and kept).
RARE_CLASS_MIN = 10
#: Examples kept per problem kind in a :class:`LoadReport`.
MAX_EXAMPLES = 5
#: Table files recognised by extension.
TABLE_EXTENSIONS = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq")
#: Split folder / column values -> canonical split.
SPLIT_ALIASES = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}
BOX_FORMATS = ("xywh", "xyxy")

_POSITIVE_NAMES = ("1", "true", "yes", "y", "positive", "pos", "valid", "t")
_MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none", "-1", "-1.0", "?"})
_ONE_TOKENS = frozenset({"1", "1.0", "true", "yes", "y", "t"})
_ZERO_TOKENS = frozenset({"0", "0.0", "false", "no", "n", "f"})
_IMAGE_NAME_HINTS = ("image", "image_path", "imagepath", "img", "img_path", "path", "file", "filename", "file_name",
                     "filepath", "file_path", "image_name", "image_file", "picture", "photo", "fname", "name")
_LABEL_NAME_HINTS = ("label", "labels", "class", "class_name", "classname", "category", "target", "y", "species",
                     "tag", "type", "element")
_TAG_NAME_HINTS = ("tags", "labels", "tag_list", "label_list", "categories")
_SPLIT_NAME_HINTS = ("split", "subset", "set", "fold", "partition")
_BOX_NAMES: tuple[tuple[str, tuple[str, str, str, str]], ...] = (
    ("xyxy", ("x1", "y1", "x2", "y2")),
    ("xyxy", ("xmin", "ymin", "xmax", "ymax")),
    ("xyxy", ("x_min", "y_min", "x_max", "y_max")),
    ("xyxy", ("left", "top", "right", "bottom")),
    ("xywh", ("x", "y", "w", "h")),
    ("xywh", ("x", "y", "width", "height")),
    ("xywh", ("left", "top", "width", "height")),
    ("xywh", ("bbox_x", "bbox_y", "bbox_w", "bbox_h")),
    ("xywh", ("box_x", "box_y", "box_w", "box_h")),
)
_SKIP_DIRS = frozenset({"__MACOSX", "__pycache__"})
_SKIP_FILES = frozenset({"Thumbs.db", "desktop.ini"})

#: problem kind -> one line on what to do (image reasons come from :data:`core.images.REASONS`).
WHAT_TO_DO: dict[str, str] = {
    **{k: v[0].upper() + v[1:] for k, v in REASONS.items()},
    "missing": "The file does not exist: check that the image column is relative to the images folder "
               "(or pass image_root / --image-column), or remove these rows.",
    "bad_path": "The image path cell is empty: fill it in or remove the row.",
    "empty_label": "The label cell is empty: fill it in or remove the row (these images are not used).",
    "duplicate_row": "The same image (and box) is listed twice: the first row is used; remove the repeats.",
    "conflicting_labels": "The same image is listed again with a different label: the first row is used; "
                          "decide which label is right and keep one row.",
    "no_label": "The image sits directly in the dataset folder, outside any class folder: move it into a "
                "class folder.",
    "wrong_depth": "The image is not at the same folder depth as the others, so its hierarchy levels are "
                   "unclear: move it to the level of its siblings.",
    "not_image_file": "This file is not an image (by its extension): remove it from the dataset folder, "
                      "or convert it to JPEG/PNG.",
    "bad_row": "The table row has a different number of cells than the header (an unquoted delimiter?): "
               "quote the cell or fix the row.",
}


class DatasetError(ValueError):
    """The dataset cannot be loaded at all; the message says what is wrong and what to do.

    ``report`` is the :class:`LoadReport` when the files were examined (e.g. nothing valid
    was found), else ``None``.
    """

    def __init__(self, message: str, *, report: "LoadReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class LabelSchema:
    """What the label columns mean.

    ``label_columns``: multiclass/binary: ``(column,)``; multilabel: the K label columns;
    hierarchical: the level columns, coarse -> fine.
    ``classes``: for multiclass/binary/hierarchical, column -> sorted class names; empty
    for multilabel (the labels *are* ``label_columns``).
    ``positive_class``: binary only.
    """

    task: str
    label_columns: tuple[str, ...]
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    positive_class: str | None = None
    attribute_columns: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "label_columns": list(self.label_columns),
            "classes": {k: list(v) for k, v in self.classes.items()},
            "positive_class": self.positive_class,
            "attribute_columns": list(self.attribute_columns),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LabelSchema":
        return cls(
            task=d["task"],
            label_columns=tuple(d["label_columns"]),
            classes={k: tuple(v) for k, v in d.get("classes", {}).items()},
            positive_class=d.get("positive_class"),
            attribute_columns=tuple(d.get("attribute_columns", ())),
        )


# ---------------------------------------------------------------------------
# Spec
# ---------------------------------------------------------------------------

def _as_tuple(value: Any, name: str) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ValueError(f"{name} must be a list of column names or a comma-separated str; received {name}={value!r}")


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to load a dataset; ``None`` / ``()`` means auto-detect.

    ``path``: the dataset folder (class folders, or the folder the table's image paths are
    relative to), or a table file (then its folder is the dataset folder).
    ``labels``: the labels table (relative paths: to ``path`` first, then the current folder).
    ``task``: one of :data:`TASKS`. ``label_columns``: the label column(s); hierarchical:
    levels coarse -> fine (for nested folders: the level names). ``image_column``: the
    image-path column. ``positive_class``: binary. ``tags_column`` / ``tags_delimiter``:
    one column of delimited tags (multi-label). ``box_columns`` / ``box_format``: region
    crops (``xywh`` or ``xyxy``). ``attribute_columns``: extra multi-hot columns.
    ``unseen``: folder of unlabelled images. ``seed``: of the stored split. ``name``:
    display name (default: the folder name). ``split_column``: a train/val/test column.
    ``image_root``: folder the image paths are relative to (default: auto, usually ``path``).
    ``delimiter``: of a text table (default: sniffed).
    """

    path: str
    labels: str | None = None
    task: str | None = None
    label_columns: tuple[str, ...] = ()
    image_column: str | None = None
    positive_class: str | None = None
    tags_column: str | None = None
    tags_delimiter: str | None = None
    box_columns: tuple[str, ...] = ()
    box_format: str | None = None
    attribute_columns: tuple[str, ...] = ()
    unseen: str | None = None
    seed: int = 0
    name: str | None = None
    split_column: str | None = None
    image_root: str | None = None
    delimiter: str | None = None

    def __post_init__(self) -> None:
        if self.path is None or str(self.path).strip() == "":
            raise ValueError(f"path must name a dataset folder or table; received path={self.path!r}")
        object.__setattr__(self, "path", str(self.path))
        for name in ("labels", "unseen", "image_root"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v in (None, "") else str(v))
        for name in ("label_columns", "box_columns", "attribute_columns"):
            object.__setattr__(self, name, _as_tuple(getattr(self, name), name))
        for name in ("positive_class", "image_column", "tags_column", "split_column", "name"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None or str(v) == "" else str(v))
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS} or None; received task={self.task!r}")
        if self.box_format is not None and self.box_format not in BOX_FORMATS:
            raise ValueError(f"box_format must be one of {BOX_FORMATS} or None; received box_format={self.box_format!r}")
        if self.box_columns and len(self.box_columns) != 4:
            raise ValueError(f"box_columns must name 4 columns (x,y,w,h or x1,y1,x2,y2); "
                             f"received box_columns={list(self.box_columns)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an int; received seed={self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if self.delimiter is not None and len(self.delimiter) != 1 and self.delimiter != "\\t":
            raise ValueError(f"delimiter must be one character; received delimiter={self.delimiter!r}")
        if self.delimiter == "\\t":
            object.__setattr__(self, "delimiter", "\t")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("label_columns", "box_columns", "attribute_columns"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetSpec":
        """Build from a dict (unknown keys are ignored, lists become tuples)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self, **changes: Any) -> "DatasetSpec":
        d = self.to_dict()
        d.update(changes)
        return DatasetSpec.from_dict(d)


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One invalid candidate: ``path`` as the dataset gives it, table ``row`` (or None), ``message``."""

    kind: str
    path: str
    row: int | None
    message: str


@dataclass(frozen=True)
class ProblemGroup:
    """All problems of one ``kind``: ``count``, the first few ``examples`` and ``what_to_do``."""

    kind: str
    count: int
    examples: tuple[Problem, ...]
    what_to_do: str


@dataclass(frozen=True)
class LoadReport:
    """What loading found.

    ``n_candidates`` = rows of the table / files found; ``n_valid`` of them loaded,
    ``n_invalid`` did not (each for exactly one reason, grouped in ``problems``:
    kind -> :class:`ProblemGroup`, most frequent first). ``warnings``: things that
    loaded but deserve attention (rare classes, classes absent from a split, missing
    labels, unknown values). ``notes``: what was auto-detected. ``n_decoded``: images
    decoded by this load (0 when all came from the cache). ``unseen_*``: the unseen
    folder (its problems are the kinds prefixed ``unseen_``, not counted in ``n_invalid``).
    """

    n_candidates: int
    n_valid: int
    n_invalid: int
    problems: dict[str, ProblemGroup] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    n_decoded: int = 0
    n_unseen: int = 0
    n_unseen_invalid: int = 0
    seconds: float = 0.0

    def invalid_examples(self, *, include_unseen: bool = True) -> list[dict[str, Any]]:
        """Examples of every problem as ``{path, row, problem, message}`` dicts."""
        out = []
        for g in self.problems.values():
            if not include_unseen and g.kind.startswith("unseen_"):
                continue
            out.extend({"path": p.path, "row": p.row, "problem": p.kind, "message": p.message} for p in g.examples)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_candidates": self.n_candidates, "n_valid": self.n_valid, "n_invalid": self.n_invalid,
            "problems": {k: {"kind": g.kind, "count": g.count, "what_to_do": g.what_to_do,
                             "examples": [asdict(p) for p in g.examples]} for k, g in self.problems.items()},
            "warnings": list(self.warnings), "notes": list(self.notes), "n_decoded": self.n_decoded,
            "n_unseen": self.n_unseen, "n_unseen_invalid": self.n_unseen_invalid, "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadReport":
        problems = {
            k: ProblemGroup(g["kind"], int(g["count"]), tuple(Problem(**p) for p in g["examples"]), g["what_to_do"])
            for k, g in d.get("problems", {}).items()
        }
        return cls(int(d["n_candidates"]), int(d["n_valid"]), int(d["n_invalid"]), problems,
                   tuple(d.get("warnings", ())), tuple(d.get("notes", ())), int(d.get("n_decoded", 0)),
                   int(d.get("n_unseen", 0)), int(d.get("n_unseen_invalid", 0)), float(d.get("seconds", 0.0)))

    def summary_lines(self) -> list[str]:
        """A readable summary: counts, then each problem kind with examples and what to do."""
        lines = [f"{self.n_valid} of {self.n_candidates} samples loaded, {self.n_invalid} invalid"
                 + (f"; unseen: {self.n_unseen} images ({self.n_unseen_invalid} invalid)"
                    if self.n_unseen or self.n_unseen_invalid else "")]
        for g in self.problems.values():
            lines.append(f"- {g.kind}: {g.count}. {g.what_to_do}")
            for p in g.examples:
                lines.append(f"    {p.message}")
            if g.count > len(g.examples):
                lines.append(f"    ... and {g.count - len(g.examples)} more")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return lines


class _Problems:
    """Collects problems while loading, keeping counts and the first examples per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[Problem]] = {}

    def add(self, kind: str, path: str, row: int | None, message: str) -> None:
        self.counts[kind] += 1
        ex = self.examples.setdefault(kind, [])
        if len(ex) < MAX_EXAMPLES:
            ex.append(Problem(kind, str(path), None if row is None else int(row), message))

    def groups(self) -> dict[str, ProblemGroup]:
        out = {}
        for kind, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            base = kind.removeprefix("unseen_")
            todo = WHAT_TO_DO.get(base, "Fix or remove these entries.")
            out[kind] = ProblemGroup(kind, n, tuple(self.examples[kind]), todo)
        return out


# ---------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded dataset: ``samples`` (see the module docstring), ``schema``, ``report``.

    ``root`` is the dataset folder; ``unseen_paths`` the absolute paths of the valid
    unlabelled images of ``spec.unseen`` (empty without one).
    """

    dataset_id: str
    name: str
    spec: DatasetSpec
    root: Path
    samples: pd.DataFrame
    schema: LabelSchema
    report: LoadReport
    unseen_paths: tuple[str, ...] = ()

    @property
    def task(self) -> str:
        return self.schema.task

    @property
    def label_columns(self) -> tuple[str, ...]:
        return self.schema.label_columns


@dataclass(frozen=True, eq=False)
class Detection:
    """What :func:`detect` found, for the user to confirm or correct.

    ``kind``: ``"folders"`` or ``"table"``. ``root``: dataset folder; ``labels``: the table
    (None for folders). ``task`` and the column fields are guesses (same meaning as in
    :class:`DatasetSpec`). ``columns``: all table columns. ``split_folders``: the given
    split folders found. ``levels``: folder depth of the labels (folders). ``preview``: the
    first rows (table rows, or ``rel_path`` + labels for folders). ``notes``: why each guess
    was made, and what was ignored.
    """

    kind: str
    root: str
    labels: str | None
    task: str | None
    label_columns: tuple[str, ...] = ()
    image_column: str | None = None
    tags_column: str | None = None
    tags_delimiter: str | None = None
    box_columns: tuple[str, ...] = ()
    box_format: str | None = None
    attribute_columns: tuple[str, ...] = ()
    split_column: str | None = None
    positive_class: str | None = None
    delimiter: str | None = None
    image_root: str | None = None
    columns: tuple[str, ...] = ()
    split_folders: tuple[str, ...] = ()
    levels: int = 0
    n_rows: int = 0
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: tuple[str, ...] = ()

    def to_spec(self, **overrides: Any) -> DatasetSpec:
        """A fully explicit :class:`DatasetSpec` from this detection (``overrides`` win)."""
        d: dict[str, Any] = {
            "path": self.root, "labels": self.labels, "task": self.task, "label_columns": self.label_columns,
            "image_column": self.image_column, "tags_column": self.tags_column,
            "tags_delimiter": self.tags_delimiter, "box_columns": self.box_columns, "box_format": self.box_format,
            "attribute_columns": self.attribute_columns, "split_column": self.split_column,
            "positive_class": self.positive_class, "delimiter": self.delimiter, "image_root": self.image_root,
        }
        d.update(overrides)
        return DatasetSpec.from_dict(d)


# ---------------------------------------------------------------------------
# Paths and tables
# ---------------------------------------------------------------------------

def _resolve_user_path(value: str, root: Path | None) -> Path:
    """A path the user typed: absolute as is; relative: under ``root`` first, then the current folder."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    if root is not None and (root / p).exists():
        return (root / p).absolute()
    return p.absolute()


def _is_hidden(name: str) -> bool:
    return name.startswith(".") or name in _SKIP_DIRS or name in _SKIP_FILES


def _walk_files(root: Path, *, exclude: Iterable[Path] = (), dirs: list[str] | None = None) -> list[tuple[str, ...]]:
    """Relative path parts of every non-hidden file under ``root``, sorted (symlinked folders followed once).

    ``dirs``, when given, receives every folder walked (to notice later additions / removals).
    """
    excluded = {os.path.realpath(p) for p in exclude}
    out: list[tuple[str, ...]] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen or real in excluded:
            dirnames[:] = []
            continue
        seen.add(real)
        if dirs is not None:
            dirs.append(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not _is_hidden(d))
        rel = Path(dirpath).relative_to(root).parts
        for f in filenames:
            if not _is_hidden(f):
                out.append(rel + (f,))
    out.sort()
    return out


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _sniff_delimiter(text: str) -> str | None:
    """The delimiter among , TAB ; | that splits the header into >1 columns and the most rows alike.

    Quoted cells are honoured (``"a, b"`` is one cell). Ties go to the earlier delimiter in
    that order. None when no candidate gives more than one column.
    """
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    best, best_key = None, None
    for rank, delim in enumerate((",", "\t", ";", "|")):
        try:
            counts = [len(r) for r in csv.reader(lines, delimiter=delim)]
        except csv.Error:
            continue
        if not counts or counts[0] < 2:
            continue
        consistency = sum(c == counts[0] for c in counts) / len(counts)
        key = (consistency, -rank)
        if best_key is None or key > best_key:
            best, best_key = delim, key
    return best


def _suggest_delimiter(header: str) -> str | None:
    counts = {d: header.count(d) for d in (";", "\t", "|", ",", ":", " ")}
    d, n = max(counts.items(), key=lambda kv: kv[1])
    return d if n > 0 else None


def _delim_name(d: str | None) -> str:
    return {"\t": "TAB", " ": "space", None: "none"}.get(d, repr(d))


def read_table(path: str | os.PathLike, *, delimiter: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a CSV / TSV / Parquet labels table as strings, exactly as written.

    Parameters
    ----------
    path : str or PathLike
        The table. ``.parquet`` / ``.pq`` are Parquet, anything else text.
    delimiter : str, optional
        Text tables: the delimiter; sniffed among ``, TAB ; |`` when omitted.

    Returns
    -------
    table : DataFrame
        Every cell as ``str`` (missing cells are ``""``); column names stripped (and any BOM).
    info : dict
        ``delimiter``, ``encoding``, ``bad_rows`` (list of ``(row, message)``).

    Raises
    ------
    DatasetError
        Missing or unreadable file, or a table with no rows.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{p}: the labels table does not exist (or is not a file).")
    info: dict[str, Any] = {"delimiter": None, "encoding": None, "bad_rows": []}
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types
            raise DatasetError(f"{p}: cannot read this Parquet file ({exc}).") from None
        df = df.astype(object).where(pd.notna(df), "")
        df = df.map(lambda v: v if isinstance(v, str) else _cell_str(v))
    else:
        raw = p.read_bytes()
        for enc in ("utf-8-sig", "cp1252", "latin-1"):
            try:
                text = raw.decode(enc)
                info["encoding"] = enc
                break
            except UnicodeDecodeError:
                continue
        text = text.lstrip("\ufeff")
        if not text.strip():
            raise DatasetError(f"{p}: the labels table is empty.")
        delim = delimiter or _sniff_delimiter(text) or ","
        info["delimiter"] = delim
        bad: list[tuple[int, str]] = []

        def on_bad(fields_: list[str]) -> None:
            bad.append((len(bad), f"{len(fields_)} cells: {delim.join(fields_)[:80]}"))
            return None

        kw = dict(sep=delim, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True,
                  quotechar='"', skip_blank_lines=True)
        try:
            df = pd.read_csv(io.StringIO(text), engine="c", on_bad_lines="error", **kw)
        except pd.errors.ParserError:
            df = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=on_bad, **kw)
            info["bad_rows"] = bad
        except pd.errors.EmptyDataError:
            raise DatasetError(f"{p}: the labels table is empty.") from None
    df.columns = [str(c).replace("\ufeff", "").strip() for c in df.columns]
    df = df.reset_index(drop=True)
    return df, info


def _cell_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        return str(int(v)) if v.is_integer() and abs(v) < 1e15 else repr(v)
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "replace")
    return str(v)


def _find_column(df_cols: Sequence[str], name: str, what: str, table: Path) -> str:
    """The column called ``name`` (exact, else case/space-insensitive), or a DatasetError listing them."""
    if name in df_cols:
        return name
    folded = {c.strip().lower(): c for c in df_cols}
    if name.strip().lower() in folded:
        return folded[name.strip().lower()]
    hint = ""
    if len(df_cols) == 1:
        d = _suggest_delimiter(df_cols[0])
        if d:
            hint = (f" The table has a single column {df_cols[0]!r}: the delimiter looks wrong; its header "
                    f"contains {_delim_name(d)} — pass delimiter={d!r} (CLI: --delimiter).")
    raise DatasetError(
        f"{table}: no {what} column named {name!r}. Available columns: {', '.join(map(repr, df_cols))}.{hint}"
    )


def _multihot_value(token: str) -> float | None:
    """'1'/'0'/missing -> 1.0 / 0.0 / NaN; None when the token is not a multi-hot value."""
    t = token.strip().lower()
    if t in _ONE_TOKENS:
        return 1.0
    if t in _ZERO_TOKENS:
        return 0.0
    if t in _MISSING_TOKENS:
        return math.nan
    return None


def _is_multihot(values: pd.Series) -> bool:
    vals = set(values.str.strip().str.lower().unique())
    if not vals or not vals <= (_ONE_TOKENS | _ZERO_TOKENS | _MISSING_TOKENS):
        return False
    return bool(vals & (_ONE_TOKENS | _ZERO_TOKENS - {"n", "f"}))


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _tag_delimiter(values: pd.Series, *, allow_space: bool) -> str | None:
    """The tag delimiter used in a column of delimited tags, or None."""
    vals = values[values.str.strip() != ""]
    if vals.empty:
        return None
    best, best_frac = None, 0.0
    for d in ("|", ";", ",") + ((" ",) if allow_space else ()):
        frac = float(vals.str.strip().str.contains(re.escape(d), regex=True).mean())
        if frac > best_frac:
            best, best_frac = d, frac
    return best if best_frac >= 0.1 else None


def _split_tags(cell: str, delim: str) -> list[str]:
    return [t.strip() for t in cell.split(delim) if t.strip()]


# ---------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------

def _find_tables(root: Path) -> list[Path]:
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    tables = [p for p in entries if p.is_file() and not _is_hidden(p.name)
              and p.suffix.lower() in (".csv", ".tsv", ".tab", ".parquet", ".pq")]
    rank = {"labels": 0, "label": 0, "annotations": 1, "metadata": 2, "train": 3, "data": 4}
    return sorted(tables, key=lambda p: (rank.get(p.stem.lower(), 9), p.name))


def _resolve_cell(cell: str, base: str | os.PathLike) -> str:
    """Absolute, normalised path of a table cell (relative cells are under ``base``; Windows ``\\`` tolerated)."""
    p = os.path.normpath(cell if os.path.isabs(cell) else os.path.join(base, cell))
    if "\\" in cell and not os.path.exists(p):
        alt = os.path.normpath(os.path.join(base, cell.replace("\\", "/")))
        if os.path.exists(alt):
            return alt
    return p


def _guess_image_column(df: pd.DataFrame) -> tuple[str | None, float]:
    best, best_score = None, 0.0
    sample = df.head(200)
    for c in df.columns:
        vals = sample[c].astype(str).str.strip()
        vals = vals[vals != ""]
        if vals.empty:
            continue
        ext_frac = float(vals.map(_is_image_name).mean())
        name_bonus = 0.3 if c.strip().lower() in _IMAGE_NAME_HINTS else 0.0
        score = ext_frac + name_bonus
        if score > best_score:
            best, best_score = c, score
    return (best, best_score) if best_score >= 0.5 else (None, best_score)


def _guess_image_root(values: Sequence[str], root: Path, table: Path) -> tuple[Path, float]:
    """The folder most of the image paths resolve in: root, the table's folder, or one of their subfolders."""
    sample = [v.strip() for v in values if v.strip()][:50]
    cands: list[Path] = [root, table.parent]
    for base in (root, table.parent):
        try:
            cands += sorted(d for d in base.iterdir() if d.is_dir() and not _is_hidden(d.name))[:50]
        except OSError:
            pass
    best, best_frac = root, -1.0
    seen = set()
    for c in cands:
        if c in seen:
            continue
        seen.add(c)
        frac = sum(os.path.isfile(_resolve_cell(v, c)) for v in sample) / max(1, len(sample))
        if frac > best_frac + 1e-9:
            best, best_frac = c, frac
        if frac == 1.0:
            break
    return best, best_frac


def _guess_boxes(columns: Sequence[str]) -> tuple[tuple[str, ...], str | None]:
    lower = {c.strip().lower(): c for c in columns}
    for fmt, names in _BOX_NAMES:
        if all(n in lower for n in names):
            return tuple(lower[n] for n in names), fmt
    return (), None


def _is_id_name(col: str) -> bool:
    c = col.strip().lower()
    return c in ("id", "idx", "index", "uuid", "key", "row", "sample_id") or c.endswith("_id")


def _looks_like_tags(vals: pd.Series, col: str) -> bool:
    """Delimited tags: a delimiter in >= 10 % of the cells, and the tags recombine (fewer tags than cell values)."""
    d = _tag_delimiter(vals, allow_space=False)
    if d is None:
        return False
    distinct = set(vals.str.strip())
    tokens = {t for v in distinct for t in _split_tags(v, d)}
    return len(tokens) <= len(distinct) and (col.strip().lower() in _TAG_NAME_HINTS or len(distinct) > 2)


def _column_kinds(df: pd.DataFrame, skip: set[str]) -> dict[str, str]:
    """Classify columns: multihot, text (label candidate), tags, numeric, id, constant, empty."""
    kinds = {}
    n = len(df)
    for c in df.columns:
        if c in skip:
            continue
        s = df[c].astype(str)
        vals = s[s.str.strip() != ""]
        if vals.empty:
            kinds[c] = "empty"
        elif _is_multihot(vals):
            kinds[c] = "multihot"
        else:
            nun = vals.nunique()
            numeric = bool(vals.head(500).map(_is_number).all())
            if numeric and (nun > 50 or not vals.head(500).map(lambda v: float(v).is_integer()).all()):
                kinds[c] = "numeric"
            elif not numeric and _looks_like_tags(vals, c):
                kinds[c] = "tags"
            elif (nun == len(vals) and n > 20) or _is_id_name(c):
                kinds[c] = "id"
            elif nun == 1 and n > 1:
                kinds[c] = "constant"
            else:
                kinds[c] = "text"
    return kinds


def _is_hierarchy(df: pd.DataFrame, cols: Sequence[str]) -> bool:
    """True when each finer column determines the coarser one (every child has one parent)."""
    if len(cols) < 2:
        return False
    sub = df[list(cols)].astype(str)
    sub = sub[(sub != "").all(axis=1)]
    if sub.empty:
        return False
    nun = [sub[c].nunique() for c in cols]
    if any(a >= b for a, b in zip(nun, nun[1:])) or nun[-1] >= len(sub):
        return False
    for coarse, fine in zip(cols, cols[1:]):
        # Rows disagreeing with their child's majority parent: a few are label noise (reported
        # later as hierarchy conflicts); many mean the columns are not nested.
        pair_counts = sub.groupby([fine, coarse]).size()
        agree = pair_counts.groupby(level=0).max().sum()
        if (len(sub) - agree) > 0.02 * len(sub):
            return False
    return True


def _choose_positive(classes: Sequence[str], counts: dict[str, int], given: str | None) -> tuple[str, str]:
    """(positive class, why)."""
    if given is not None:
        if given not in classes:
            raise DatasetError(f"positive_class {given!r} is not one of the two classes {list(classes)}.")
        return given, "given"
    for c in classes:
        if c.strip().lower() in _POSITIVE_NAMES:
            return c, f"named like a positive class ({c!r})"
    a, b = sorted(classes)
    if counts.get(a, 0) != counts.get(b, 0):
        pos = a if counts.get(a, 0) < counts.get(b, 0) else b
        return pos, "the minority class"
    return b, "tie: the second in sorted order"


def detect(path: str | os.PathLike, labels: str | os.PathLike | None = None, *,
           delimiter: str | None = None) -> Detection:
    """Auto-detect a dataset's layout and label mapping, with a preview to show the user.

    Parameters
    ----------
    path : str or PathLike
        Dataset folder, or a table file.
    labels : str or PathLike, optional
        The labels table. When omitted and ``path`` is a folder holding a table at its top
        level (``labels.csv`` preferred) whose paths point at images, that table is used;
        otherwise ``path`` is read as class folders.
    delimiter : str, optional
        Text tables only; sniffed when omitted.

    Returns
    -------
    Detection
        Guesses plus ``preview`` (first 20 rows) and ``notes`` explaining them.

    Raises
    ------
    DatasetError
        ``path`` / ``labels`` missing or unreadable.
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise DatasetError(f"{p}: no such folder or file. Give the dataset folder (class folders, or the folder "
                           "the labels table's image paths are relative to) or the labels table.")
    if p.is_file():
        if p.suffix.lower() not in TABLE_EXTENSIONS:
            raise DatasetError(f"{p}: a file that is not a table (CSV, TSV, Parquet). Give the dataset folder.")
        return _detect_table(p.parent, p, delimiter=delimiter, auto=False)
    if labels is not None:
        return _detect_table(p, _resolve_user_path(str(labels), p), delimiter=delimiter, auto=False)
    for t in _find_tables(p):
        try:
            det = _detect_table(p, t, delimiter=delimiter, auto=True)
        except DatasetError:
            continue
        if det.image_column is not None:
            return det
    return _detect_folders(p)


def _detect_table(root: Path, table: Path, *, delimiter: str | None, auto: bool,
                  read: tuple[pd.DataFrame, dict[str, Any]] | None = None) -> Detection:
    df, info = read if read is not None else read_table(table, delimiter=delimiter)
    notes = []
    if auto:
        notes.append(f"Using the table {table.name} found in the dataset folder.")
    if info["delimiter"] and delimiter is None:
        notes.append(f"Delimiter: {_delim_name(info['delimiter'])} (sniffed).")
    cols = list(df.columns)
    image_col, _score = _guess_image_column(df)
    image_root: Path | None = None
    if image_col is None:
        notes.append("No column looks like image paths: choose the image column.")
    else:
        image_root, frac = _guess_image_root(df[image_col].tolist(), root, table)
        if auto and frac < 0.5:
            raise DatasetError("table paths do not resolve")
        notes.append(f"Image column: {image_col!r} (paths resolve in {image_root}: {frac:.0%} of the first rows).")
    box_cols, box_fmt = _guess_boxes(cols)
    if box_cols:
        notes.append(f"Region crops: box columns {', '.join(box_cols)} ({box_fmt}).")
    split_col = None
    for c in cols:
        if c.strip().lower() in _SPLIT_NAME_HINTS and c != image_col:
            vals_all = df[c].astype(str).str.strip().str.lower()
            vals_all = vals_all[vals_all != ""]
            vals = set(vals_all)
            if vals and vals_all.isin(list(SPLIT_ALIASES)).mean() >= 0.5:
                split_col = c
                notes.append(f"Split column: {c!r} (values {sorted(vals)}).")
                break
    skip = {image_col, split_col, *box_cols} - {None}
    kinds = _column_kinds(df, skip)  # type: ignore[arg-type]
    text = [c for c, k in kinds.items() if k == "text"]
    multihot = [c for c, k in kinds.items() if k == "multihot"]
    tags = [c for c, k in kinds.items() if k == "tags"]
    ignored = [f"{c} ({k})" for c, k in kinds.items() if k in ("numeric", "id", "constant", "empty")]
    task, label_cols, attrs, tags_col, tags_delim = None, (), (), None, None
    text_by_name = sorted(text, key=lambda c: (c.strip().lower() not in _LABEL_NAME_HINTS, cols.index(c)))
    levels = sorted(text, key=lambda c: (df[c].astype(str).nunique(), cols.index(c)))
    if len(text) >= 2 and _is_hierarchy(df, levels):
        task, label_cols, attrs = "hierarchical", tuple(levels), tuple(multihot)
        notes.append(f"Hierarchical: each {' > '.join(levels)} value has one parent.")
    elif text:
        label_cols, attrs = (text_by_name[0],), tuple(multihot)
        n_classes = df[text_by_name[0]].astype(str).str.strip().replace("", np.nan).dropna().nunique()
        task = "binary" if n_classes == 2 else "multiclass"
        notes.append(f"Label column: {text_by_name[0]!r} ({n_classes} classes -> {task}).")
        if len(text) > 1:
            ignored += [f"{c} (text, not a level of a hierarchy with {text_by_name[0]!r})" for c in text_by_name[1:]]
    elif tags:
        tags_col = tags[0]
        tags_delim = _tag_delimiter(df[tags_col].astype(str), allow_space=False)
        task, attrs = "multilabel", tuple(multihot)
        notes.append(f"Multi-label: tags in {tags_col!r} separated by {_delim_name(tags_delim)}.")
    elif len(multihot) >= 2:
        task, label_cols = "multilabel", tuple(multihot)
        notes.append(f"Multi-label: {len(multihot)} multi-hot columns ({', '.join(multihot)}).")
    elif len(multihot) == 1:
        task, label_cols = "binary", (multihot[0],)
        notes.append(f"Binary: the 0/1 column {multihot[0]!r}.")
    else:
        notes.append("No label column found: choose the label column(s) and the task.")
    if ignored:
        notes.append(f"Ignored columns: {', '.join(ignored)}.")
    if len(cols) == 1:
        d = _suggest_delimiter(cols[0])
        notes.append(f"The table has one column {cols[0]!r}"
                     + (f": the delimiter may be {_delim_name(d)}." if d else "."))
    positive = None
    if task == "binary" and label_cols:
        vals = df[label_cols[0]].astype(str).str.strip()
        counts = vals[vals != ""].value_counts().to_dict()
        if len(counts) == 2:
            positive, why = _choose_positive(sorted(counts), counts, None)
            notes.append(f"Positive class: {positive!r} ({why}).")
    return Detection(
        kind="table", root=str(root), labels=str(table), task=task, label_columns=tuple(label_cols),
        image_column=image_col, tags_column=tags_col, tags_delimiter=tags_delim, box_columns=box_cols,
        box_format=box_fmt, attribute_columns=tuple(attrs), split_column=split_col, positive_class=positive,
        delimiter=info["delimiter"], image_root=str(image_root) if image_root is not None else None,
        columns=tuple(cols), n_rows=len(df), preview=df.head(20).copy(), notes=tuple(notes),
    )


def _folder_layout(root: Path, files: list[tuple[str, ...]]) -> tuple[tuple[str, ...], dict[str, str]]:
    """(split folder names found, {folder name: canonical split}) when ALL top folders are split names."""
    tops = sorted({f[0] for f in files if len(f) > 1})
    if tops and all(t.lower() in SPLIT_ALIASES for t in tops):
        return tuple(tops), {t: SPLIT_ALIASES[t.lower()] for t in tops}
    return (), {}


def _nested_depth(depths: Counter) -> int:
    """The folder depth of the labels when >= 90 % of the images share it (else 1: top folder = class)."""
    if not depths:
        return 0
    d, n = depths.most_common(1)[0]
    return d if n >= 0.9 * sum(depths.values()) else 1


def _detect_folders(root: Path) -> Detection:
    files = _walk_files(root)
    split_dirs, split_map = _folder_layout(root, files)
    notes = []
    images = [f for f in files if _is_image_name(f[-1])]
    depths = Counter((len(f) - 1 - (1 if split_map else 0)) for f in images if len(f) - (1 if split_map else 0) > 1)
    if split_map:
        notes.append(f"Given split: folders {', '.join(split_dirs)}.")
    if not depths:
        notes.append("No images inside class folders.")
        task, levels = None, 0
    else:
        levels = depths.most_common(1)[0][0]
        if _nested_depth(depths) > 1:
            task = "hierarchical"
            notes.append(f"Nested class folders: {levels} hierarchy levels (level_1..level_{levels}).")
        else:
            levels = 1
            off = 1 if split_map else 0
            n_classes = len({f[off] for f in images if len(f) - off > 1})
            task = "binary" if n_classes == 2 else "multiclass"
            notes.append(f"Class folders: {n_classes} classes -> {task}.")
            if len(depths) > 1:
                notes.append("Images sit at different folder depths: the top folder is the class.")
    label_cols = (("label",) if levels <= 1 else tuple(f"level_{i + 1}" for i in range(levels))) if task else ()
    off = 1 if split_map else 0
    rows = []
    for f in images[:20]:
        r = {"rel_path": "/".join(f)}
        if split_map:
            r["split"] = split_map[f[0]]
        parts = f[off:-1]
        for i, c in enumerate(label_cols):
            r[c] = parts[i] if i < len(parts) else ""
        rows.append(r)
    positive = None
    if task == "binary":
        counts = Counter(f[off] for f in images if len(f) - off > 1)
        positive, why = _choose_positive(sorted(counts), dict(counts), None)
        notes.append(f"Positive class: {positive!r} ({why}).")
    return Detection(kind="folders", root=str(root), labels=None, task=task, label_columns=label_cols,
                     positive_class=positive, split_folders=split_dirs, levels=levels, n_rows=len(images),
                     preview=pd.DataFrame(rows), notes=tuple(notes))


# ---------------------------------------------------------------------------
# Collecting candidates
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Split
# ---------------------------------------------------------------------------

def _unit_hash(seed: int, sample_id: str) -> float:
    h = hashlib.sha1(f"{seed}\0{sample_id}".encode("utf-8", "surrogateescape")).hexdigest()
    return int(h[:13], 16) / float(16 ** 13)


def assign_splits(strata: Sequence[str], sample_ids: Sequence[str], *, existing: Sequence[str | None] | None = None,
                  seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """Seeded, stratified train/val/test assignment that never moves an existing assignment.

    Within each stratum the unassigned samples are taken in a seeded pseudo-random order
    (a hash of ``seed`` and the sample id, so the result does not depend on row order) and
    each goes to the split furthest below its target share of the stratum so far (ties:
    test, then val, then train). With 70/15/15 a stratum of 1 or 2 goes to train, of 3
    gives 2 train + 1 test, of 5 gives 3 / 1 / 1, of 20 gives 14 / 3 / 3.

    Parameters
    ----------
    strata : sequence of str, length N
        Stratum (class) of each sample.
    sample_ids : sequence of str, length N
        Stable unique ids.
    existing : sequence of (str or None), length N, optional
        Splits already fixed (kept as they are); None = to assign.
    seed : int
    fractions : (train, val, test) floats summing to 1

    Returns
    -------
    list of str, length N
        ``"train"``, ``"val"`` or ``"test"`` per sample.
    """
    n = len(strata)
    if len(sample_ids) != n or (existing is not None and len(existing) != n):
        raise ValueError(f"strata, sample_ids and existing must have the same length; received {n}, "
                         f"{len(sample_ids)}, {None if existing is None else len(existing)}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1; received fractions={fractions!r}")
    out: list[str | None] = list(existing) if existing is not None else [None] * n
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(str(s), []).append(i)
    target = dict(zip(SPLITS, fr))
    prefer = ("test", "val", "train")
    for idx in groups.values():
        counts = Counter(out[i] for i in idx if out[i] is not None)
        total = sum(counts.values())
        todo = sorted((i for i in idx if out[i] is None), key=lambda i: (_unit_hash(seed, sample_ids[i]), sample_ids[i]))
        for i in todo:
            total += 1
            best = max(prefer, key=lambda s: (target[s] * total - counts[s], -prefer.index(s)))
            out[i] = best
            counts[best] += 1
    return [str(s) for s in out]


def _strata(samples: pd.DataFrame, task: str, label_cols: tuple[str, ...]) -> list[str]:
    if task in ("multiclass", "binary"):
        return samples[label_cols[0]].astype(str).tolist()
    if task == "hierarchical":
        path = samples[label_cols[0]].astype(str)
        for c in label_cols[1:]:  # column-wise concatenation: a row-wise agg costs ~0.1 ms per row
            path = path + " > " + samples[c].astype(str)
        return path.tolist()
    Y = samples[list(label_cols)].to_numpy(dtype=float) if label_cols else np.zeros((len(samples), 0))
    pos = np.nansum(Y == 1.0, axis=0)
    out = []
    for row in Y:
        idx = np.flatnonzero(row == 1.0)
        if idx.size:
            out.append(label_cols[int(idx[np.argmin(pos[idx])])])
        elif np.isnan(row).all() and row.size:
            out.append("(all missing)")
        else:
            out.append("(none)")
    return out


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------

def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return (s or "dataset")[:40]


def _normalized(spec: DatasetSpec) -> DatasetSpec:
    """Absolute paths, so the same dataset has the same id from any working folder."""
    p = Path(spec.path).expanduser()
    p = p.absolute() if not p.is_absolute() else p
    root = p.parent if p.is_file() else p
    labels = spec.labels
    if p.is_file():
        if labels is None:
            labels = str(p)
        p = root
    changes: dict[str, Any] = {"path": os.path.normpath(str(p))}
    if labels is not None:
        changes["labels"] = os.path.normpath(str(_resolve_user_path(labels, root)))
    if spec.unseen is not None:
        changes["unseen"] = os.path.normpath(str(_resolve_user_path(spec.unseen, root)))
    if spec.image_root is not None:
        changes["image_root"] = os.path.normpath(str(_resolve_user_path(spec.image_root, root)))
    return spec.replace(**changes)


def dataset_id_for(spec: DatasetSpec) -> str:
    """Stable id: slug of the name + a short hash of the (normalized) spec without the name."""
    spec = _normalized(spec)
    d = spec.to_dict()
    name = d.pop("name") or Path(spec.path).name
    digest = hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]
    return f"{_slug(name)}-{digest}"


def _write_if_changed(path: Path, data: bytes) -> None:
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    atomic_write_bytes(path, data)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def load_dataset(spec: DatasetSpec | dict, *, workspace: Workspace,
                 progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Load, validate and register a dataset; every image is decoded once (cached).

    Parameters
    ----------
    spec : DatasetSpec or dict
        What to load; omitted options are auto-detected (see :func:`detect`).
    workspace : Workspace
        Where the dataset is registered and its files and image cache are written.
    progress : callable(done, total), optional
        Called while images are validated.

    Returns
    -------
    Dataset
        ``samples`` holds the N valid samples; ``report`` says what was invalid and why.

    Raises
    ------
    DatasetError
        Nothing valid loaded (the report is attached), a named column / file / folder is
        missing, or the options contradict the data. The message says what to do.
    ValueError
        An option has an invalid value.
    """
    t0 = time.perf_counter()
    if isinstance(spec, dict):
        spec = DatasetSpec.from_dict(spec)
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"spec must be a DatasetSpec or dict; received {type(spec).__name__}")
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    spec = _normalized(spec)
    root = Path(spec.path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such folder. Give the dataset folder (class folders, or the folder the "
                           "labels table's image paths are relative to).")
    workspace.ensure()
    dataset_id = dataset_id_for(spec)
    name = spec.name or root.name
    ddir = workspace.dataset_dir(dataset_id)
    fresh = _unchanged_since_last_load(workspace, dataset_id, spec)
    if fresh is not None:
        if progress:
            progress(len(fresh.samples), len(fresh.samples))
        workspace.upsert_dataset(dataset_id, name=fresh.name, spec=spec.to_dict(), task=fresh.schema.task,
                                 n_samples=len(fresh.samples))
        rep = replace(fresh.report, n_decoded=0, seconds=round(time.perf_counter() - t0, 4))
        return replace(fresh, report=rep)
    problems = _Problems()

    unseen_dir = Path(spec.unseen) if spec.unseen else None
    if unseen_dir is not None and not unseen_dir.is_dir():
        raise DatasetError(f"{unseen_dir}: the unseen folder does not exist (or is not a folder).")

    # 1. candidates
    if spec.labels is None:
        pre = None
        for t in _find_tables(root):
            try:
                read = read_table(t, delimiter=spec.delimiter)
                d = _detect_table(root, t, delimiter=spec.delimiter, auto=True, read=read)
            except DatasetError:
                continue
            if d.image_column is not None:
                pre = (read, d)
                break
        if pre is not None:
            cand = _collect_table(root, spec.replace(labels=pre[1].labels), problems, pre=pre)
        else:
            exclude = [workspace.root] + ([unseen_dir] if unseen_dir else [])
            cand = _collect_folders(root, spec, problems, exclude)
    else:
        cand = _collect_table(root, spec, problems)

    # 2. decode everything once (through the cache)
    cache = ImageCache(workspace.cache_dir / "images")
    frame = pd.DataFrame(cand.rows)
    if frame.empty:
        frame = pd.DataFrame(columns=["sample_id", "path", "rel_path", "_row", "_split"])
    for c in ("x1", "y1", "x2", "y2"):
        if c not in frame.columns:
            frame[c] = math.nan
        frame[c] = frame[c].astype(float)
    unseen_files: list[tuple[str, ...]] = []
    unseen_other: list[tuple[str, ...]] = []
    if unseen_dir is not None:
        for f in _walk_files(unseen_dir, dirs=cand.watch):
            (unseen_files if _is_image_name(f[-1]) else unseen_other).append(f)
    n_main = len(frame)
    decode = frame[["path", "x1", "y1", "x2", "y2"]]
    if unseen_files:
        extra = pd.DataFrame({"path": [str(unseen_dir.joinpath(*f)) for f in unseen_files]})
        for c in ("x1", "y1", "x2", "y2"):
            extra[c] = math.nan
        decode = pd.concat([decode, extra], ignore_index=True)
    arrays = cache.arrays(decode, PREVIEW_SIZE, progress=progress)

    keep = np.zeros(n_main, dtype=bool)
    for i in range(n_main):
        if arrays.ok[i]:
            keep[i] = True
            continue
        r = cand.rows[i]
        reason = arrays.reasons.get(i, "truncated")
        row = r.get("_row")
        where = f"row {row}: " if row is not None and not pd.isna(row) else ""
        row = None if row is None or pd.isna(row) else int(row)
        problems.add(reason, r["rel_path"], row, f"{where}{arrays.errors.get(i, reason)}")
    unseen_paths = []
    for k, f in enumerate(unseen_files):
        j = n_main + k
        if arrays.ok[j]:
            unseen_paths.append(str(unseen_dir.joinpath(*f)))
        else:
            problems.add("unseen_" + arrays.reasons.get(j, "truncated"), "/".join(f), None, arrays.errors.get(j, ""))
    for f in unseen_other:
        problems.add("unseen_not_image_file", "/".join(f), None,
                     f"{'/'.join(f)}: not an image file (extension {os.path.splitext(f[-1])[1] or 'none'!r}).")

    good = frame.loc[keep].reset_index(drop=True)
    widths = arrays.widths[:n_main][keep]
    heights = arrays.heights[:n_main][keep]
    modes = [m for m, k in zip(arrays.modes[:n_main], keep) if k]
    n_valid = len(good)
    n_invalid = cand.n_candidates - n_valid
    warnings = list(cand.warnings)
    notes = list(cand.notes)

    def report(seconds: float) -> LoadReport:
        return LoadReport(
            n_candidates=cand.n_candidates, n_valid=n_valid, n_invalid=n_invalid, problems=problems.groups(),
            warnings=tuple(warnings), notes=tuple(notes), n_decoded=arrays.n_decoded,
            n_unseen=len(unseen_paths), n_unseen_invalid=len(unseen_files) + len(unseen_other) - len(unseen_paths),
            seconds=round(seconds, 4),
        )

    if n_valid == 0:
        rep = report(time.perf_counter() - t0)
        detail = "; ".join(f"{g.kind}: {g.count}" for g in rep.problems.values() if not g.kind.startswith("unseen_"))
        first = next((g.examples[0].message for g in rep.problems.values() if g.examples), None)
        raise DatasetError(
            f"{root}: no valid samples loaded out of {cand.n_candidates} candidate(s)"
            + (f" ({detail})" if detail else " (no images found)") + "."
            + (f" First problem: {first}" if first else "")
            + ("" if cand.n_candidates else " Expected class folders (root/<class>/*.jpg) or a labels table "
               "(pass labels / --labels)."),
            report=rep,
        )

    # 3. labels -> schema
    task = cand.task
    label_cols = cand.label_columns
    classes: dict[str, tuple[str, ...]] = {}
    positive = None
    if task in ("multiclass", "binary", "hierarchical"):
        for c in label_cols:
            classes[c] = tuple(sorted(good[c].astype(str).unique()))
    if task == "binary":
        cls = classes[label_cols[0]]
        if len(cls) != 2:
            raise DatasetError(f"task 'binary' needs exactly 2 classes in {label_cols[0]!r}; found {len(cls)}: "
                               f"{list(cls)[:20]}. Use task 'multiclass'.")
        counts = good[label_cols[0]].value_counts().to_dict()
        positive, why = _choose_positive(cls, counts, cand.positive_class)
        notes.append(f"Binary: positive class {positive!r} ({why}).")
    elif cand.positive_class is not None:
        warnings.append(f"positive_class {cand.positive_class!r} is ignored: the task is {task!r}, not binary.")
    schema = LabelSchema(task=task, label_columns=label_cols, classes=classes, positive_class=positive,
                         attribute_columns=cand.attribute_columns)

    # 4. split: given > stored > seeded stratified
    previous: dict[str, str] = {}
    old_samples = ddir / "samples.parquet"
    if old_samples.exists():
        try:
            prev = pd.read_parquet(old_samples, columns=["sample_id", "split"])
            previous = dict(zip(prev["sample_id"].astype(str), prev["split"].astype(str)))
        except Exception:  # noqa: BLE001 - a damaged file only costs the stored split
            warnings.append("The stored split could not be read; a new one was made.")
    sids = good["sample_id"].astype(str).tolist()
    given = good["_split"].tolist() if "_split" in good.columns else [None] * n_valid
    existing = [g if isinstance(g, str) and g in SPLITS else previous.get(s) for g, s in zip(given, sids)]
    n_new = sum(1 for e in existing if e is None)
    strata = _strata(good, task, label_cols)
    split = assign_splits(strata, sids, existing=existing, seed=spec.seed)
    if previous and n_new:
        notes.append(f"Kept the stored split; {n_new} new sample(s) assigned.")

    # 5. the samples table
    samples = pd.DataFrame({
        "sample_id": sids,
        "path": good["path"].astype(str).tolist(),
        "rel_path": good["rel_path"].astype(str).tolist(),
        "x1": good["x1"].astype(float), "y1": good["y1"].astype(float),
        "x2": good["x2"].astype(float), "y2": good["y2"].astype(float),
        "split": split,
        "width": widths.astype(np.int64), "height": heights.astype(np.int64), "mode": modes,
    })
    for c in label_cols:
        samples[c] = good[c].astype(str) if task != "multilabel" else good[c].astype(float)
    for c in cand.attribute_columns:
        samples[c] = good[c].astype(float)

    # 6. warnings: rare classes, splits, missing labels, hierarchy
    warnings.extend(_label_warnings(samples, schema, strata, cand))
    rep = report(time.perf_counter() - t0)
    dataset = Dataset(dataset_id=dataset_id, name=name, spec=spec, root=root, samples=samples, schema=schema,
                      report=rep, unseen_paths=tuple(unseen_paths))
    _store(workspace, dataset)
    watched = sorted(set(cand.watch)) + list(dict.fromkeys(decode["path"].astype(str).tolist()))
    atomic_write_json(ddir / "inputs.json", {"version": _LOADER_VERSION, "spec": spec.to_dict(),
                                             "paths": watched, "digest": _stat_digest(watched)})
    return dataset


_LOADER_VERSION = f"2/{PREVIEW_SIZE}/{RARE_CLASS_MIN}/{DEFAULT_FRACTIONS}"


def _stat_digest(paths: Sequence[str]) -> str:
    """Hash of (size, mtime_ns) of every path (or its absence): changes when any of them changes."""
    h = hashlib.sha1()
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        except OSError:
            h.update(f"{p}\0-\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def _unchanged_since_last_load(workspace: Workspace, dataset_id: str, spec: DatasetSpec) -> Dataset | None:
    """The stored dataset when nothing it was made from changed (same spec, same file stats), else None."""
    ddir = workspace.dataset_dir(dataset_id)
    inputs = read_json(ddir / "inputs.json")
    if not isinstance(inputs, dict) or inputs.get("version") != _LOADER_VERSION \
            or inputs.get("spec") != spec.to_dict():
        return None
    if _stat_digest(inputs.get("paths", [])) != inputs.get("digest"):
        return None
    try:
        return open_dataset(workspace, dataset_id)
    except DatasetError:
        return None


def _label_warnings(samples: pd.DataFrame, schema: LabelSchema, strata: list[str], cand: _Candidates) -> list[str]:
    out = []
    task, cols = schema.task, schema.label_columns
    if task in ("multiclass", "binary", "hierarchical"):
        col = cols[-1]
        counts = samples[col].value_counts()
        rare = counts[counts < RARE_CLASS_MIN].sort_values()
        for lc in cols:  # a class spelled like a missing value is kept (binary -1/1 is real) but flagged
            vc = samples[lc].value_counts()
            odd = [(k, int(v)) for k, v in vc.items() if str(k).strip().lower() in _MISSING_TOKENS]
            if odd:
                out.append(f"{lc!r} has class name(s) that usually mean a missing label: "
                           + ", ".join(f"{k!r} ({v} samples)" for k, v in odd)
                           + ". They are kept as classes; if they mean 'unknown', empty those cells "
                           "(empty labels are reported, not trained on).")
        if len(rare):
            out.append(f"{len(rare)} class(es) of {col!r} have fewer than {RARE_CLASS_MIN} samples (kept, but too "
                       "rare to stratify or evaluate well; collect more or merge them): "
                       + ", ".join(f"{k} ({v})" for k, v in rare.head(10).items()))
        by_split = samples.groupby("split")[col].agg(lambda s: set(s))
        all_classes = set(counts.index)
        for s in SPLITS:
            present = by_split.get(s, set())
            if not present:
                out.append(f"The {s} split is empty.")
                continue
            absent = sorted(all_classes - present)
            if absent:
                out.append(f"{len(absent)} class(es) have no sample in {s}: {', '.join(absent[:10])}"
                           + (" ..." if len(absent) > 10 else ""))
    if task == "hierarchical":
        for coarse, fine in zip(cols, cols[1:]):
            parents = samples.groupby(fine)[coarse].nunique()
            bad = parents[parents > 1]
            if len(bad):
                ex = []
                for child in bad.index[:5]:
                    ps = samples.loc[samples[fine] == child, coarse].value_counts()
                    ex.append(f"{child} under " + ", ".join(f"{k} ({v})" for k, v in ps.items()))
                out.append(f"Hierarchy conflict: {len(bad)} {fine!r} value(s) appear under several {coarse!r} "
                           "parents (probably label errors): " + "; ".join(ex))
    if task == "multilabel":
        Y = samples[list(cols)].to_numpy(dtype=float)
        pos = (Y == 1.0).sum(axis=0)
        rare = [(c, int(p)) for c, p in zip(cols, pos) if p < RARE_CLASS_MIN]
        if rare:
            out.append(f"{len(rare)} label(s) have fewer than {RARE_CLASS_MIN} positive samples (kept): "
                       + ", ".join(f"{c} ({p})" for c, p in rare[:10]))
        nmiss = np.isnan(Y).any(axis=1).sum()
        if nmiss:
            out.append(f"{int(nmiss)} sample(s) have at least one missing label (NaN: unknown, not 0); see "
                       "missing_labels for the count per label.")
        for s in SPLITS:
            if not (samples["split"] == s).any():
                out.append(f"The {s} split is empty.")
    if cand.attribute_columns:
        A = samples[list(cand.attribute_columns)].to_numpy(dtype=float)
        nmiss = int(np.isnan(A).sum())
        if nmiss:
            out.append(f"{nmiss} attribute cell(s) are missing (NaN: unknown, not 0).")
    return out


def _store(workspace: Workspace, ds: Dataset) -> None:
    ddir = workspace.dataset_dir(ds.dataset_id)
    ddir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    ds.samples.to_parquet(buf, index=False)
    _write_if_changed(ddir / "samples.parquet", buf.getvalue())
    _write_if_changed(ddir / "schema.json", _json_bytes(ds.schema.to_dict()))
    _write_if_changed(ddir / "spec.json", _json_bytes(ds.spec.to_dict()))
    _write_if_changed(ddir / "dataset.json", _json_bytes({
        "dataset_id": ds.dataset_id, "name": ds.name, "root": str(ds.root),
        "unseen_paths": list(ds.unseen_paths), "format": 1,
    }))
    atomic_write_json(ddir / "report.json", ds.report.to_dict())
    workspace.upsert_dataset(ds.dataset_id, name=ds.name, spec=ds.spec.to_dict(), task=ds.schema.task,
                             n_samples=len(ds.samples))


def open_dataset(workspace: Workspace, dataset_id: str) -> Dataset:
    """A stored dataset, from its files (fast: no decoding, no file-system scan).

    Raises
    ------
    DatasetError
        No such dataset in ``workspace`` (the message lists the ones there), or its files are damaged.
    """
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    ddir = workspace.dataset_dir(str(dataset_id))
    meta = read_json(ddir / "dataset.json")
    if meta is None or not (ddir / "samples.parquet").exists():
        known = [d["dataset_id"] for d in list_datasets(workspace)]
        raise DatasetError(f"dataset_id={dataset_id!r} is not in the workspace {workspace.root}"
                           + (f"; known: {', '.join(known)}" if known else " (it has no datasets yet)") + ".")
    try:
        samples = pd.read_parquet(ddir / "samples.parquet")
        schema = LabelSchema.from_dict(read_json(ddir / "schema.json"))
        spec = DatasetSpec.from_dict(read_json(ddir / "spec.json"))
        report = LoadReport.from_dict(read_json(ddir / "report.json"))
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(f"{ddir}: the stored dataset is damaged ({exc}); load it again from its spec.") from None
    return Dataset(dataset_id=meta["dataset_id"], name=meta["name"], spec=spec, root=Path(meta["root"]),
                   samples=samples, schema=schema, report=report, unseen_paths=tuple(meta.get("unseen_paths", ())))


def list_datasets(workspace: Workspace) -> list[dict[str, Any]]:
    """Registered datasets, newest first: dicts with ``dataset_id, name, task, n_samples, spec, created_at, updated_at``."""
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    return [d for d in workspace.list_datasets() if (workspace.dataset_dir(d["dataset_id"]) / "dataset.json").exists()]


def dataset_summary(dataset: Dataset) -> dict[str, Any]:
    """Counts for people and the CLI's JSON: task, classes / labels / levels, class_counts,
    missing_labels, split_counts, invalid_examples, warnings.

    ``n_samples`` is the number of candidates found (rows / files), ``n_valid`` of them loaded.
    """
    s, sc, rep = dataset.samples, dataset.schema, dataset.report
    out: dict[str, Any] = {
        "dataset_id": dataset.dataset_id, "name": dataset.name, "root": str(dataset.root),
        "labels_file": dataset.spec.labels, "task": sc.task,
        "n_samples": rep.n_candidates, "n_valid": rep.n_valid, "n_invalid": rep.n_invalid,
        "label_columns": list(sc.label_columns), "attribute_columns": list(sc.attribute_columns),
        "split_counts": {k: int((s["split"] == k).sum()) for k in SPLITS},
        "problems": {k: g.count for k, g in rep.problems.items()},
        "invalid_examples": rep.invalid_examples(),
        "warnings": list(rep.warnings), "notes": list(rep.notes),
        "n_unseen": rep.n_unseen, "n_unseen_invalid": rep.n_unseen_invalid, "n_decoded": rep.n_decoded,
    }
    missing: dict[str, int] = {}
    if sc.task in ("multiclass", "binary"):
        col = sc.label_columns[0]
        out["classes"] = list(sc.classes[col])
        out["class_counts"] = {k: int(v) for k, v in s[col].value_counts().sort_index().items()}
        out["positive_class"] = sc.positive_class
        missing[col] = int(rep.problems["empty_label"].count) if "empty_label" in rep.problems else 0
    elif sc.task == "multilabel":
        cols = list(sc.label_columns)
        Y = s[cols].to_numpy(dtype=float)
        out["labels"] = cols
        out["class_counts"] = {c: int((Y[:, j] == 1.0).sum()) for j, c in enumerate(cols)}
        missing.update({c: int(np.isnan(Y[:, j]).sum()) for j, c in enumerate(cols)})
    else:
        cols = list(sc.label_columns)
        out["levels"] = cols
        out["classes"] = {c: list(sc.classes[c]) for c in cols}
        out["class_counts"] = {c: {k: int(v) for k, v in s[c].value_counts().sort_index().items()} for c in cols}
        n_empty = rep.problems["empty_label"].count if "empty_label" in rep.problems else 0
        missing.update({c: 0 for c in cols})
        if n_empty:
            missing["(rows with an empty level)"] = int(n_empty)
    for c in sc.attribute_columns:
        missing[c] = int(s[c].isna().sum())
    if sc.attribute_columns:
        out["attribute_counts"] = {c: int((s[c] == 1.0).sum()) for c in sc.attribute_columns}
    out["missing_labels"] = missing
    return out


# ---------------------------------------------------------------------------
# Zip import (the Data page's upload)
# ---------------------------------------------------------------------------

def import_zip(zip_path_or_bytes: str | os.PathLike | bytes, dest_dir: str | os.PathLike, *,
               max_total_bytes: int = 2 * 1024 ** 3, max_files: int = 100_000,
               max_ratio: float = 200.0) -> Path:
    """Extract an uploaded zip of images safely into a new folder; return the dataset folder.

    Refused, with a message, before anything is written: entries with absolute paths or
    ``..`` components (zip-slip), symbolic links, more than ``max_files`` files, a declared
    total size over ``max_total_bytes``, an entry whose compression ratio exceeds
    ``max_ratio`` (zip bomb), and zips without any image. While extracting, the bytes
    actually written are counted too (a lying header cannot exceed the limits).

    Parameters
    ----------
    zip_path_or_bytes : path or bytes
        The zip file, or its content (an upload).
    dest_dir : path
        Folder to create; it must not exist yet, or be empty. Files are extracted into a
        temporary sibling folder renamed into place at the end, so a failure leaves nothing.
    max_total_bytes, max_files, max_ratio
        Limits.

    Returns
    -------
    Path
        ``dest_dir``, or its single top folder when the zip wraps everything in one folder.

    Raises
    ------
    DatasetError
        Not a zip, unsafe, too large, or without images.
    """
    for name, v in (("max_total_bytes", max_total_bytes), ("max_files", max_files), ("max_ratio", max_ratio)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{name} must be a positive number; received {name}={v!r}")
    dest = Path(dest_dir).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest}: the destination exists and is not an empty folder; choose a new folder.")
    from core import archives

    label = "the uploaded zip" if isinstance(zip_path_or_bytes, (bytes, bytearray)) else str(zip_path_or_bytes)
    try:
        zf = archives.open_zip(zip_path_or_bytes, label)
    except archives.UnsafeArchive as exc:
        raise DatasetError(str(exc)) from None
    with zf:
        try:
            members = archives.checked_members(zf, label, max_total_bytes=max_total_bytes, max_files=max_files,
                                               max_ratio=max_ratio, skip=_is_hidden)
        except archives.UnsafeArchive as exc:
            raise DatasetError(str(exc)) from None
        if not any(_is_image_name(rel.name) for _, rel in members):
            raise DatasetError(f"{label}: no images inside (expected .jpg, .png, ... files, in class folders or "
                               "beside a labels table).")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        try:
            archives.extract_members(zf, members, tmp, label, max_total_bytes=max_total_bytes)
            if dest.exists():
                dest.rmdir()
            os.replace(tmp, dest)
        except archives.UnsafeArchive as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(str(exc)) from None
        except zipfile.BadZipFile as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(f"{label}: the zip is damaged ({exc}).") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    tops = [p for p in dest.iterdir() if not _is_hidden(p.name)]
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return dest
