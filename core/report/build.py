"""Assembling the report: every section in order (a failing one becomes an error section),
the page around them, and the self-contained HTML file.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from markupsafe import Markup

from core import runs
from core.report.card import _comparison_title, _section_comparison, _section_model_card
from core.report.context import PLOTLY_CONFIG, ProgressFn, SECTIONS, Section, _Context, _load_context, _load_dataset
from core.report.markup import _env, _fmt, _note, _pct, _plain, _script_json, _when, plotly_js
from core.report.sections import (
    _section_calibration, _section_cleaning, _section_confusion, _section_dataset, _section_embeddings,
    _section_mistakes, _section_ood, _section_per_class, _section_pr, _section_training,
)
from core.workspace import Workspace, atomic_write_text


# ---------------------------------------------------------------------------
# assembling
# ---------------------------------------------------------------------------

_BUILDERS: dict[str, tuple[str, Callable[[_Context], Section]]] = {
    "dataset": ("Dataset", _section_dataset),
    "cleaning": ("Cleaning log", _section_cleaning),
    "training": ("Training curves", _section_training),
    "confusion": ("Confusion matrix", _section_confusion),
    "per_class": ("Per-class metrics", _section_per_class),
    "pr_curves": ("Precision-recall curves", _section_pr),
    "calibration": ("Calibration", _section_calibration),
    "embeddings": ("Embedding map", _section_embeddings),
    "ood": ("Out-of-distribution examples", _section_ood),
    "mistakes": ("Most confident mistakes", _section_mistakes),
    "model_card": ("Model card", _section_model_card),
}
# built in this order (the model card last: it summarises facts the others gathered)
_BUILD_ORDER = ("dataset", "cleaning", "training", "per_class", "confusion", "pr_curves", "calibration",
                "embeddings", "ood", "mistakes", "model_card")


def collect_sections(run_dir, *, workspace: Workspace | None = None, split: str = "test", max_thumbnails: int = 24,
                     thumbnail_size: int = 80, embeddings: bool = True, compare_with=None,
                     progress: ProgressFn | None = None) -> tuple[dict[str, Any], list[Section]]:
    """Build every section of the report (see :func:`build_report` for the parameters).

    Returns
    -------
    (meta, sections) : dict with ``run_id, title, dataset_name, task, generated_at``, and the
        sections in report order (:data:`SECTIONS`, then ``comparison`` when ``compare_with``
        is given). A section that cannot be built has ``status`` ``missing`` or ``error`` and a
        body saying why.
    """
    if not isinstance(max_thumbnails, (int, np.integer)) or max_thumbnails < 0:
        raise ValueError(f"max_thumbnails must be an int >= 0; received {max_thumbnails!r}")
    if not isinstance(thumbnail_size, (int, np.integer)) or not 16 <= thumbnail_size <= 256:
        raise ValueError(f"thumbnail_size must be an int in [16, 256]; received {thumbnail_size!r}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace; received {type(workspace).__name__}")
    report = progress or (lambda f, m: None)
    rd = runs.RunDir(Path(run_dir).expanduser())
    ws = runs.run_workspace(rd, workspace)
    report(0.02, "reading the run")
    ctx = _load_context(rd.path, workspace=ws, split=split, max_thumbnails=int(max_thumbnails),
                        thumbnail_size=int(thumbnail_size))
    _load_dataset(ctx)
    if not embeddings:
        ctx.embeddings_error = "the embedding map was not requested for this report"
    steps = [(key, *_BUILDERS[key]) for key in _BUILD_ORDER]
    if compare_with is not None:
        ctx.compare_with = runs.RunDir(Path(compare_with).expanduser())
        steps.append(("comparison", _comparison_title(ctx), _section_comparison))
    built: dict[str, Section] = {}
    for i, (key, title, fn) in enumerate(steps):
        report(0.05 + 0.9 * i / len(steps), f"building: {title[:1].lower() + title[1:]}")
        try:
            built[key] = fn(ctx)
        except Exception as exc:  # noqa: BLE001 - one broken section must not lose the whole report
            built[key] = Section(key, title, _note(f"This section could not be built: {type(exc).__name__}: {exc}"),
                                 "error", str(exc))
    for key, sec in built.items():
        if sec.status != "ok" and not sec.note:
            built[key] = dataclasses.replace(sec, note=_plain(sec.body))
    report(0.97, "writing the HTML")
    ds_name = ctx.dataset.name if ctx.dataset is not None else str(ctx.config.get("dataset_id") or "")
    meta = {"run_id": rd.run_id, "dataset_name": ds_name, "task": ctx.predictions.task, "split": split,
            "generated_at": time.time(), "title": f"Loupe report — {rd.run_id}", "headline": _headline(ctx)}
    return meta, [built[k] for k in (*SECTIONS, "comparison") if k in built]


def render_html(meta: Mapping[str, Any], sections: Sequence[Section], *, headline: Sequence[tuple[str, str]] = ()
                ) -> str:
    """The report document (``report.html.j2``): plotly.js inlined once, then the sections.

    A section's ``body`` goes in as it is when it is Markup (as :func:`collect_sections` builds
    it); a plain ``str`` body is escaped, i.e. shown as text.
    """
    return _env().get_template("report.html.j2").render(
        title=meta.get("title", "Loupe report"), dataset_name=meta.get("dataset_name"), task=meta.get("task"),
        split=meta.get("split"), generated=_when(meta.get("generated_at")), headline=headline, sections=sections,
        plotly_js=Markup(plotly_js()), plotly_config=Markup(_script_json(PLOTLY_CONFIG)))


def build_report(run_dir, *, workspace: Workspace | None = None, out: str | Path | None = None, split: str = "test",
                 max_thumbnails: int = 24, thumbnail_size: int = 80, embeddings: bool = True, compare_with=None,
                 progress: ProgressFn | None = None) -> str:
    """One self-contained HTML file describing a finished run.

    Parameters
    ----------
    run_dir : path
        A run directory with ``labels.json`` and ``predictions.csv`` (a finished run).
    workspace : Workspace, optional
        Where the run's dataset and review decisions live. Default: the workspace the run
        directory lies in (``<ws>/runs/<run_id>``), else ``$LOUPE_HOME``.
    out : path, optional
        Also write the HTML there (atomically).
    split : str
        Which rows of predictions.csv the metrics use (default ``"test"``).
    max_thumbnails : int >= 0
        At most this many thumbnails per gallery (mistakes, out-of-distribution examples).
        Thumbnails are ~3 KB each, so the file stays small for any dataset size.
    thumbnail_size : int in [16, 256]
        Longest side of a thumbnail, in pixels.
    embeddings : bool
        Compute the embedding map and out-of-distribution examples (runs the model over the
        dataset: seconds for thousands of small images).
    compare_with : path, optional
        Another run directory (B): a last section compares it with this run (A) on the same
        rows of ``split`` (:func:`core.compare.compare_runs`: metric differences B − A with
        95% paired-bootstrap intervals, McNemar's p, the verdict). Runs that cannot be
        compared (other rows or labels) make that section an ``error`` giving the reason.
    progress : callable(fraction, message), optional
        Called as sections are built.

    Returns
    -------
    str : the HTML document (UTF-8 text; no external references).

    Raises
    ------
    ValueError
        ``run_dir`` is not a finished run (no labels / predictions), or the split has no rows.
    """
    meta, sections = collect_sections(run_dir, workspace=workspace, split=split, max_thumbnails=max_thumbnails,
                                      thumbnail_size=thumbnail_size, embeddings=embeddings,
                                      compare_with=compare_with, progress=progress)
    text = render_html(meta, sections, headline=meta.get("headline", ()))
    if out is not None:
        atomic_write_text(Path(out).expanduser(), text)
    if progress:
        progress(1.0, "done")
    return text


def _headline(ctx: _Context) -> list[tuple[str, str]]:
    ev = ctx.evaluation or {}
    out = [("model", str(ctx.config.get("model") or "?")), ("state", runs.effective_state(ctx.status))]
    if ev.get("accuracy") is not None:
        out.append((f"{ctx.split} accuracy", _pct(ev["accuracy"])))
    if ev.get("macro_f1") is not None:
        out.append((f"{ctx.split} macro F1", _fmt(ev["macro_f1"])))
    if ev.get("n_samples") is not None:
        out.append((f"{ctx.split} images", _fmt(ev["n_samples"])))
    return out
