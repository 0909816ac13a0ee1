"""``python -m core report``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, emit_json, info, run_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (runs/<run_id>/ with labels.json and predictions.csv)")
    p.add_argument("--out", required=True, help="where to write the HTML file (e.g. report.html)")
    p.add_argument("--workspace", help="workspace holding the run's dataset and review decisions "
                                       "(default: the one the run directory lies in, else $LOUPE_HOME)")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which rows of predictions.csv the metrics use (default: test)")
    p.add_argument("--max-thumbnails", type=int, default=24,
                   help="thumbnails per gallery (confident mistakes, unusual unseen images); default 24")
    p.add_argument("--thumbnail-size", type=int, default=80, help="thumbnail size in pixels (default 80)")
    p.add_argument("--no-embeddings", action="store_true",
                   help="skip the embedding map and out-of-distribution examples (no model inference)")
    p.add_argument("--compare", metavar="RUN_B",
                   help="add a section comparing this run with RUN_B (a run directory, or a run id of the workspace) "
                        "on the same rows: metric differences with 95%% paired-bootstrap intervals and McNemar's p")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Write a self-contained HTML report of a run (opens offline; plotly.js and thumbnails inlined)."""
    from pathlib import Path

    from core import report, runs
    from core.workspace import WorkspaceError, home

    try:
        rd = runs.require_predictions(args.run_dir)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise CLIError(f"--out {out} is a folder; give a file name such as {out / 'report.html'}")
    if not out.parent.exists():
        raise CLIError(f"--out {out}: the folder {out.parent} does not exist")
    if args.max_thumbnails < 0:
        raise CLIError(f"--max-thumbnails must be >= 0; received {args.max_thumbnails}")
    if not 16 <= args.thumbnail_size <= 256:
        raise CLIError(f"--thumbnail-size must be in [16, 256]; received {args.thumbnail_size}")
    ws = None
    if args.workspace:
        wpath = Path(args.workspace).expanduser()
        if not wpath.is_dir():
            raise CLIError(f"--workspace {wpath} is not a folder")
        try:
            ws = home(wpath).ensure()
        except WorkspaceError as exc:
            raise CLIError(str(exc)) from exc

    run_b = run_path(args.compare, args.workspace) if args.compare else None

    last = [-1.0]

    def progress(fraction: float, message: str) -> None:
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            info(f"[{fraction:4.0%}] {message}")

    try:
        meta, sections = report.collect_sections(
            rd.path, workspace=ws, split=args.split, max_thumbnails=args.max_thumbnails,
            thumbnail_size=args.thumbnail_size, embeddings=not args.no_embeddings, compare_with=run_b,
            progress=progress)
        text = report.render_html(meta, sections, headline=meta.get("headline", ()))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    try:
        from core.workspace import atomic_write_text

        atomic_write_text(out, text)
    except OSError as exc:
        raise CLIError(f"cannot write {out}: {exc}") from exc
    size = out.stat().st_size
    for s in sections:
        if s.status != "ok":
            info(f"section {s.title!r}: {s.status}" + (f" ({s.note})" if s.note else ""))
    info(f"wrote {out} ({size / 1e6:.1f} MB)")
    if args.json:
        emit_json({"out": str(out.resolve()), "bytes": size, "run_id": rd.run_id, "split": args.split,
                   "sections": {s.key: s.status for s in sections}})
    else:
        print(str(out))
    return 0
