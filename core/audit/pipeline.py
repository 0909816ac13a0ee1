"""The audit itself: run the enabled detectors over a dataset, in order, into one saved result.

:func:`audit_dataset` checks its arguments, runs corrupt files, image statistics, size checks,
duplicates and the label detectors, sorts their rows into an :class:`AuditResult` and saves it
(:func:`core.audit.store.save_audit`); :func:`issues_by_class` summarises a result per label.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.audit.config import (AUDIT_SIZE, DETECTORS, ISSUE_COLUMNS, AuditConfig, AuditResult, _current_labels,
                               _empty_issues, _row)
from core.audit.duplicates import (_cluster_rows, _exact_duplicates, _feature_duplicates, _near_duplicates,
                                   _pair_clusters)
from core.audit.image_stats import _corrupt, _image_stats
from core.audit.labels import _hierarchy_conflicts, _imagenet_features, _label_issues, _missing_labels, _rare_classes
from core.audit.store import save_audit
from core.workspace import Workspace

# ---------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------

def audit_dataset(ds: Any, *, workspace: Workspace, config: AuditConfig | dict | None = None,
                  run_dir: str | os.PathLike | None = None,
                  progress: Callable[[str, float], None] | None = None, engine: str = "local") -> AuditResult:
    """Run the enabled detectors over a dataset and save the result as its latest audit.

    Parameters
    ----------
    ds : core.datasets.Dataset
        The loaded dataset (its N valid samples, schema and load report).
    workspace : Workspace
        Holds the image cache the detectors read, and where the audit is saved.
    config : AuditConfig or dict, optional
        Thresholds and enabled detectors (default: :class:`AuditConfig()`).
    run_dir : path, optional
        A finished run of this dataset: ``label_issue`` then uses its validation / test
        predicted probabilities (out-of-sample) instead of the quick classifier.
    progress : callable(stage: str, fraction: float), optional
        Called as stages advance (``fraction`` in 0..1 over the whole audit).
    engine : {"local", "ray"}
        Where the ImageNet features are computed when they are needed and not cached yet
        (see :mod:`core.engines`); the pixel detectors always run here.

    Returns
    -------
    AuditResult
        ``issues`` with :data:`ISSUE_COLUMNS`, one row per flag, most suspect first per issue.

    Raises
    ------
    ValueError
        ``config`` or ``run_dir`` is invalid (the message names it).
    """
    from threadpoolctl import threadpool_limits

    # Small matrices: one BLAS thread is fastest, and never oversubscribes a shared machine.
    with threadpool_limits(limits=1):
        return _audit(ds, workspace=workspace, config=config, run_dir=run_dir, progress=progress, engine=engine)


def _audit(ds: Any, *, workspace: Workspace, config: Any, run_dir: Any, progress: Any, engine: str) -> AuditResult:
    from core.datasets import Dataset
    from core.images import ImageCache

    t0 = time.perf_counter()
    if not isinstance(ds, Dataset):
        raise ValueError(f"ds must be a core.datasets.Dataset; received {type(ds).__name__}")
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    cfg = config if isinstance(config, AuditConfig) else AuditConfig.from_dict(config) \
        if isinstance(config, dict) or config is None else None
    if cfg is None:
        raise ValueError(f"config must be an AuditConfig, a dict or None; received {type(config).__name__}")
    if run_dir is not None and not Path(run_dir).expanduser().is_dir():
        raise ValueError(f"run_dir={str(run_dir)!r} is not a folder; pass a run directory (runs/<run_id>/)")
    on = set(cfg.enabled)
    timings: dict[str, float] = {}
    notes: list[str] = []
    rows: list[dict[str, Any]] = []

    def tick(stage: str, frac: float) -> None:
        if progress:
            progress(stage, float(min(1.0, max(0.0, frac))))

    def timed(name: str, t: float) -> None:
        timings[name] = round(timings.get(name, 0.0) + time.perf_counter() - t, 4)

    samples = ds.samples.reset_index(drop=True)
    schema = ds.schema
    n = len(samples)
    sids = samples["sample_id"].astype(str).tolist()
    rels = samples["rel_path"].astype(str).tolist()
    labels_shown, label_col = _current_labels(samples, schema)
    widths = samples["width"].to_numpy(dtype=np.int64)
    heights = samples["height"].to_numpy(dtype=np.int64)

    t = time.perf_counter()
    tick("corrupt", 0.0)
    if "corrupt" in on:
        rows += _corrupt(ds, workspace)
    timed("corrupt", t)

    pixel_detectors = {"uniform", "duplicate", "near_duplicate", "dark", "bright", "blurry"}
    need_pixels = bool(on & pixel_detectors) or ("label_issue" in on and run_dir is None)
    stats = None
    ok = np.ones(n, dtype=bool)
    images = np.zeros((0, AUDIT_SIZE, AUDIT_SIZE, 3), np.uint8)
    if need_pixels and n:
        t = time.perf_counter()
        tick("reading images", 0.05)
        arrays = ImageCache(workspace.cache_dir / "images").arrays(samples, AUDIT_SIZE, lazy=True)
        images, ok = arrays.images, np.asarray(arrays.ok, dtype=bool)
        boxed = samples[["x1", "y1", "x2", "y2"]].notna().any(axis=1).any()
        stats = _image_stats(images, ok, widths, heights, want_hash=bool(boxed) and "duplicate" in on,
                             want_features="label_issue" in on and run_dir is None,
                             progress=lambda d, tot: tick("image statistics", 0.05 + 0.35 * d / max(tot, 1)))
        timed("image statistics", t)

    uniform = np.zeros(n, dtype=bool)
    if stats is not None:
        std = np.nan_to_num(stats.std, nan=np.inf)
        uniform = std < cfg.uniform_std
        if "uniform" in on:
            for i in np.flatnonzero(uniform):
                rows.append(_row(sids[i], rels[i], "uniform", 1.0 - std[i] / max(cfg.uniform_std, 1e-9), "exclude",
                                 f"pixel std {std[i]:.2f} < {cfg.uniform_std:g}: a blank, (near-)uniform image",
                                 label=labels_shown[i]))
        live = ok & ~uniform
        if "dark" in on:
            for i in np.flatnonzero(live & (stats.p95 < cfg.dark)):
                rows.append(_row(sids[i], rels[i], "dark", 1.0 - stats.p95[i] / max(cfg.dark, 1e-9), "review",
                                 f"95th percentile luminance {stats.p95[i]:.0f} < {cfg.dark:g}: underexposed",
                                 label=labels_shown[i]))
        if "bright" in on:
            for i in np.flatnonzero(live & (stats.p05 > cfg.bright)):
                rows.append(_row(sids[i], rels[i], "bright", (stats.p05[i] - cfg.bright) / max(255 - cfg.bright, 1e-9),
                                 "review", f"5th percentile luminance {stats.p05[i]:.0f} > {cfg.bright:g}: "
                                 "overexposed / washed out", label=labels_shown[i]))
        if "blurry" in on:
            for i in np.flatnonzero(live & (stats.sharp < cfg.blurry)):
                rows.append(_row(sids[i], rels[i], "blurry", 1.0 - stats.sharp[i] / max(cfg.blurry, 1e-12), "review",
                                 f"sharpness {stats.sharp[i]:.4f} < {cfg.blurry:g}: little fine detail",
                                 label=labels_shown[i]))

    if "odd_size" in on:
        short = np.minimum(widths, heights)
        aspect = np.maximum(widths, heights) / np.maximum(short, 1)
        for i in np.flatnonzero((short < cfg.odd_min_side) | (aspect > cfg.odd_max_aspect)):
            if short[i] < cfg.odd_min_side:
                score = 1.0 + (1.0 - short[i] / max(cfg.odd_min_side, 1))
                why = f"shortest side {short[i]} px < {cfg.odd_min_side}: tiny"
            else:
                score = aspect[i] / max(cfg.odd_max_aspect, 1e-9) - 1.0
                why = f"aspect ratio {aspect[i]:.1f} > {cfg.odd_max_aspect:g}"
            rows.append(_row(sids[i], rels[i], "odd_size", score, "review", f"{widths[i]}x{heights[i]} px: {why}",
                             label=labels_shown[i]))

    exact_of = np.arange(n)
    if stats is not None and ("duplicate" in on or "near_duplicate" in on):
        t = time.perf_counter()
        tick("duplicates", 0.45)
        clusters = _exact_duplicates(samples, stats, ok)
        for members in clusters:
            exact_of[members] = min(members)
        if "duplicate" in on:
            rows += _cluster_rows(clusters, "duplicate", "dup", sids=sids, rels=rels, labels=labels_shown,
                                  label_col=label_col, score_of=lambda i, m: 1.0,
                                  how=lambda i, j: "identical file bytes as")
        timed("duplicate", t)
        if "near_duplicate" in on:
            t = time.perf_counter()
            tick("near duplicates", 0.5)
            dist = _near_duplicates(images, stats, ok, widths, heights, uniform, cfg, exact_of)
            sims: dict[tuple[int, int], tuple[float, int]] = {}
            if cfg.near_duplicate_features != "pixels":
                vectors = _imagenet_features(ds, workspace, samples, cfg.near_duplicate_features, notes,
                                             who="near_duplicate", choice="near_duplicate_features=pixels+imagenet",
                                             engine=engine,
                                             progress=lambda d, tot: tick("near duplicates: ImageNet features",
                                                                          0.5 + 0.15 * d / max(tot, 1)))
                if vectors is not None:
                    reps = np.flatnonzero(ok & ~uniform)
                    sims = _feature_duplicates(vectors, reps[exact_of[reps] == reps], images, cfg)
            near = _pair_clusters({**dist, **sims}, n)
            lim = max(cfg.near_duplicate_distance, 1e-9)
            need = cfg.near_duplicate_matches
            score: dict[int, float] = {}
            how: dict[int, str] = {}
            for (i, j), dv in dist.items():  # pixel matches score 0.5..1 (distance lim..0)
                for a in (i, j):
                    if 1.0 - dv / (2 * lim) > score.get(a, -1.0):
                        score[a], how[a] = 1.0 - dv / (2 * lim), f"pixel distance {dv:.1f} to"
            for (i, j), (sv, mv) in sims.items():  # keypoint-verified: 0.5..1 as matches grow to 4x the minimum
                v = 0.5 + 0.5 * min(1.0, (mv - need) / max(3.0 * need, 1.0))
                for a in (i, j):
                    if v > score.get(a, -1.0):
                        score[a], how[a] = v, f"{mv} matching keypoints (ImageNet-feature similarity {sv:.2f}) with"
            rows += _cluster_rows(near, "near_duplicate", "near", sids=sids, rels=rels, labels=labels_shown,
                                  label_col=label_col, score_of=lambda i, m: score.get(i, 0.5),
                                  how=lambda i, j: how.get(i, "near duplicate of"))
            timed("near_duplicate", t)

    source = "features"
    if "label_issue" in on and n:
        t = time.perf_counter()
        tick("label issues", 0.7)
        imagenet = None
        if run_dir is None:
            imagenet = _imagenet_features(ds, workspace, samples, cfg.label_issue_features, notes, engine=engine,
                                          progress=lambda d, tot: tick("label issues: ImageNet features",
                                                                       0.7 + 0.2 * d / max(tot, 1)))
        li, source, _probs, _classes = _label_issues(samples, schema, stats, ok, uniform, cfg, run_dir,
                                                     labels_shown, rels, notes, imagenet)
        rows += li
        timed("label_issue", t)
    if "hierarchy_conflict" in on:
        rows += _hierarchy_conflicts(samples, schema, rels, labels_shown)
    if "missing_label" in on:
        rows += _missing_labels(samples, schema, rels, labels_shown)
    if "rare_class" in on:
        rows += _rare_classes(samples, schema, cfg, rels, labels_shown)

    issues = pd.DataFrame(rows, columns=list(ISSUE_COLUMNS)) if rows else _empty_issues()
    if len(issues):
        order = {k: r for r, k in enumerate(DETECTORS)}
        issues["_o"] = issues["issue"].map(order)
        issues = issues.sort_values(["_o", "score", "sample_id"], ascending=[True, False, True], kind="stable")
        issues = issues.drop(columns="_o").reset_index(drop=True)
    issues["score"] = issues["score"].astype(float).round(6)
    counts = {k: int((issues["issue"] == k).sum()) for k in DETECTORS}
    result = AuditResult(issues=issues, dataset_id=ds.dataset_id, config=cfg, counts=counts,
                         seconds=round(time.perf_counter() - t0, 3), n_samples=n, source=source,
                         timings=timings, notes=tuple(notes), created_at=time.time())
    save_audit(workspace, result)
    tick("done", 1.0)
    return result


def issues_by_class(result: AuditResult) -> pd.DataFrame:
    """Counts of flags per current label (rows) and issue (columns), for the summary table."""
    df = result.issues
    if df.empty:
        return pd.DataFrame(columns=list(DETECTORS))
    t = pd.crosstab(df["label"].replace("", "(none)"), df["issue"])
    return t.reindex(columns=[d for d in DETECTORS if d in t.columns]).fillna(0).astype(int)
