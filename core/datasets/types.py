"""The vocabulary of :mod:`core.datasets`: its constants and the value types every stage passes on.

:class:`DatasetSpec` (what to load), :class:`LabelSchema` (what the label columns mean),
the load report (:class:`Problem`, :class:`ProblemGroup`, :class:`LoadReport`, and the
collector ``_Problems``), :class:`Dataset` (what loading returns) and
:class:`DatasetError`. Nothing here reads a file: the other submodules build these.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.images import REASONS

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
