"""Persistence: the latest audit of each dataset, under ``<workspace>/cache/audit/<dataset_id>/``.

:func:`save_audit` writes the issues table as parquet and ``audit.json`` (config, counts, token)
last and atomically; :func:`load_audit` reads the pair back (None when absent or damaged).
"""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import pandas as pd

from core.audit.config import DETECTORS, ISSUE_COLUMNS, AuditConfig, AuditResult
from core.workspace import Workspace, atomic_write_bytes, atomic_write_json, read_json

# ---------------------------------------------------------------------------
# Persistence
# ---------------------------------------------------------------------------

def _audit_dir(workspace: Workspace, dataset_id: str) -> Path:
    return workspace.cache_dir / "audit" / str(dataset_id)


def save_audit(workspace: Workspace, result: AuditResult) -> Path:
    """Save ``result`` as the latest audit of its dataset; returns the folder.

    The table goes to a new ``issues-<token>.parquet``; ``audit.json`` (config, counts,
    token) is written last and atomically, so a reader always sees a complete pair.
    """
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    d = _audit_dir(workspace, result.dataset_id)
    token = uuid.uuid4().hex[:12]
    buf = io.BytesIO()
    result.issues.to_parquet(buf, index=False)
    atomic_write_bytes(d / f"issues-{token}.parquet", buf.getvalue())
    atomic_write_json(d / "audit.json", {**result.meta(), "token": token, "format": 1})
    for old in d.glob("issues-*.parquet"):
        if old.name != f"issues-{token}.parquet":
            try:
                old.unlink()
            except OSError:
                pass
    return d


def audit_stamp(workspace: Workspace, dataset_id: str) -> int:
    """When ``dataset_id``'s latest audit was saved (ns; 0 when there is none): a cache key for what is read from it."""
    try:
        return (_audit_dir(workspace, dataset_id) / "audit.json").stat().st_mtime_ns
    except OSError:
        return 0


def load_audit(workspace: Workspace, dataset_id: str) -> AuditResult | None:
    """The latest saved audit of ``dataset_id``, or None when there is none (or it is unreadable)."""
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    d = _audit_dir(workspace, dataset_id)
    meta = read_json(d / "audit.json")
    if not isinstance(meta, dict) or "token" not in meta:
        return None
    try:
        issues = pd.read_parquet(d / f"issues-{meta['token']}.parquet")
        cfg = AuditConfig.from_dict(meta.get("config"))
    except Exception:  # noqa: BLE001 - a damaged audit is simply absent: run it again
        return None
    for c in ISSUE_COLUMNS:
        if c not in issues.columns:
            issues[c] = 0.0 if c == "score" else ""
    counts = {k: int(meta.get("counts", {}).get(k, 0)) for k in DETECTORS}
    return AuditResult(issues=issues[list(ISSUE_COLUMNS)], dataset_id=str(meta["dataset_id"]), config=cfg,
                       counts=counts, seconds=float(meta.get("seconds", 0.0)), n_samples=int(meta.get("n_samples", 0)),
                       source=str(meta.get("source", "features")), timings=dict(meta.get("timings", {})),
                       notes=tuple(meta.get("notes", ())), created_at=float(meta.get("created_at", 0.0)))
