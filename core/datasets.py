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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

TASKS = ("multiclass", "binary", "multilabel", "hierarchical")
SPLITS = ("train", "val", "test")
BASE_COLUMNS = ("sample_id", "path", "rel_path", "x1", "y1", "x2", "y2", "split", "width", "height", "mode")


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
