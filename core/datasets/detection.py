"""Layout guessing: :func:`detect` says what a dataset folder or table looks like, as a :class:`Detection`.

Class folders (nested ones are hierarchy levels; ``train/ val/ test/`` a given split) or a
labels table, whose columns are classified (image paths, boxes, split, text labels,
multi-hot, tags, ids ...) to guess the task and the label mapping. Every guess comes with
a note saying why, for the user to confirm or correct (the Data page's mapping form).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.datasets.tables import (_delim_name, _is_hidden, _is_image_name, _is_multihot, _is_number,
                                  _resolve_user_path, _split_tags, _suggest_delimiter, _tag_delimiter, _walk_files,
                                  read_table)
from core.datasets.types import SPLIT_ALIASES, TABLE_EXTENSIONS, DatasetError, DatasetSpec

_POSITIVE_NAMES = ("1", "true", "yes", "y", "positive", "pos", "valid", "t")
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


#: The :class:`DatasetSpec` fields only the user gives; :func:`detect` guesses all the others.
_NOT_GUESSED = ("path", "unseen", "seed", "name")

# A detection's guesses are DatasetSpec's own fields (same names, types and defaults: declared once, there).
_Guesses = make_dataclass(
    "_Guesses", [(f.name, f.type, field(default=f.default)) for f in fields(DatasetSpec) if f.name not in _NOT_GUESSED],
    frozen=True, eq=False, namespace={"__module__": __name__})


@dataclass(frozen=True, eq=False, kw_only=True)
class Detection(_Guesses):
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
    columns: tuple[str, ...] = ()
    split_folders: tuple[str, ...] = ()
    levels: int = 0
    n_rows: int = 0
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)
    notes: tuple[str, ...] = ()

    def to_spec(self, **overrides: Any) -> DatasetSpec:
        """A fully explicit :class:`DatasetSpec` from this detection (``overrides`` win)."""
        d: dict[str, Any] = {"path": self.root, **{f.name: getattr(self, f.name) for f in fields(_Guesses)}}
        d.update(overrides)
        return DatasetSpec.from_dict(d)

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
