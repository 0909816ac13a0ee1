"""Loading: :func:`load_dataset` turns a :class:`DatasetSpec` into a validated, registered :class:`Dataset`.

The pipeline: collect the candidates (table or folders), decode every image once through
the cache, build the label schema, keep or make the split, build the samples table, add
the label warnings (rare classes, empty splits, hierarchy conflicts, missing labels), and
store it. A load whose inputs (spec and file stats) are unchanged returns the stored
dataset without decoding anything.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core.datasets.collect import _Candidates, _collect_folders, _collect_table
from core.datasets.detection import _choose_positive, _detect_table, _find_tables
from core.datasets.splits import _strata, assign_splits
from core.datasets.store import _normalized, _store, dataset_id_for, open_dataset
from core.datasets.tables import _MISSING_TOKENS, _is_image_name, _walk_files, read_table
from core.datasets.types import (DEFAULT_FRACTIONS, PREVIEW_SIZE, RARE_CLASS_MIN, SPLITS, Dataset, DatasetError,
                                 DatasetSpec, LabelSchema, LoadReport, _Problems)
from core.images import ImageCache
from core.workspace import Workspace, atomic_write_json, read_json

def load_dataset(spec: DatasetSpec | dict, *, workspace: Workspace,
                 progress: Callable[[int, int], None] | None = None) -> Dataset:
    """Load, validate and register a dataset; every image is decoded once (cached).

    Parameters
    ----------
    spec : DatasetSpec or dict
        What to load; omitted options are auto-detected (see :func:`core.datasets.detect`).
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
