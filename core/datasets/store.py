"""The workspace's copy of a dataset: its id, the files written for it, and reading it back.

:func:`dataset_id_for` (stable id of a spec, from its normalized absolute paths),
``_store`` (``samples.parquet``, ``schema.json``, ``spec.json``, ``dataset.json``,
``report.json``; unchanged files are not rewritten), :func:`open_dataset`,
:func:`list_datasets` and :func:`dataset_summary` (the counts people and the CLI read).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.datasets.tables import _resolve_user_path
from core.datasets.types import SPLITS, Dataset, DatasetError, DatasetSpec, LabelSchema, LoadReport
from core.workspace import Workspace, atomic_write_bytes, atomic_write_json, read_json

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
