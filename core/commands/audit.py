"""``python -m core audit``."""

from __future__ import annotations

import argparse

from core.commands.common import (CLIError, add_dataset_options, add_engine_option, emit_json, info,  # noqa: F401
                                  spec_from_args)

#: Columns of the ``--csv`` file, in order (one row per flag; ``path`` as the dataset gives it).
CSV_COLUMNS = ("path", "issue", "score", "suggested_action", "suggested_label", "label", "label_column", "detail",
               "group", "sample_id")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataset_options(p)
    p.add_argument("--run", dest="run_dir", help="a finished run of this dataset: label_issue uses its validation/"
                                                  "test predicted probabilities instead of the quick classifier")
    p.add_argument("--only", help="comma-separated detectors to run (default: all): corrupt, uniform, duplicate, "
                                  "near_duplicate, dark, bright, blurry, odd_size, rare_class, label_issue, "
                                  "hierarchy_conflict, missing_label")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="NAME=VALUE",
                   help="a detector threshold, e.g. --set uniform_std=2 --set rare_min=30 (repeatable)")
    p.add_argument("--csv", help="write one row per flag to this CSV file")
    add_engine_option(p, "the ImageNet features are computed (when a detector uses them and they are not cached)")
    p.add_argument("--top", type=int, default=5, help="flags listed per issue in the text output (default: 5)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def _config(args: argparse.Namespace):
    from dataclasses import fields

    from core.audit import AuditConfig

    d: dict = {}
    types = {f.name: f.type for f in fields(AuditConfig)}
    for item in args.settings:
        if "=" not in item:
            raise CLIError(f"--set expects NAME=VALUE; received {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in types or k == "enabled":
            raise CLIError(f"--set {k}: unknown threshold; known: {', '.join(n for n in types if n != 'enabled')}")
        try:
            d[k] = v if "str" in str(types[k]) else (int(v) if "int" in str(types[k]) else float(v))
        except ValueError:
            raise CLIError(f"--set {k}={v!r}: not a number") from None
    if args.only:
        d["enabled"] = tuple(x.strip() for x in args.only.split(",") if x.strip())
    try:
        return AuditConfig.from_dict(d)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    """Audit a dataset: corrupt, blank, duplicate, mislabelled, rare... samples, one row per flag."""
    import time
    from pathlib import Path

    from core import audit, datasets
    from core.engines import EngineError
    from core.workspace import WorkspaceError, home

    t0 = time.perf_counter()
    spec = spec_from_args(args)
    cfg = _config(args)
    if args.run_dir and not Path(args.run_dir).expanduser().is_dir():
        raise CLIError(f"--run {args.run_dir}: no such folder; pass a run directory (runs/<run_id>/)")
    if args.top < 0:
        raise CLIError(f"--top must be >= 0; received {args.top}")
    ws = home(args.workspace)
    info(f"loading {spec.path}" + (f" with labels {spec.labels}" if spec.labels else ""))
    try:
        ds = datasets.load_dataset(spec, workspace=ws)
    except datasets.DatasetError as exc:
        raise CLIError(str(exc)) from exc
    except WorkspaceError as exc:
        raise CLIError(str(exc)) from exc
    last = [0.0]

    def progress(stage: str, frac: float) -> None:
        now = time.monotonic()
        if now - last[0] > 2.0 or frac >= 1.0:
            last[0] = now
            info(f"audit: {stage} ({frac:.0%})")

    try:
        result = audit.audit_dataset(ds, workspace=ws, config=cfg, run_dir=args.run_dir, progress=progress,
                                     engine=args.engine)
    except (ValueError, EngineError) as exc:
        raise CLIError(str(exc)) from exc
    issues = result.issues
    if args.csv:
        from core.workspace import atomic_write_bytes

        out = Path(args.csv).expanduser()
        try:
            atomic_write_bytes(out, issues[list(CSV_COLUMNS)].to_csv(index=False).encode("utf-8"))
        except OSError as exc:
            raise CLIError(f"--csv {out}: cannot write ({exc})") from exc
        info(f"{len(issues)} flag(s) written to {out}")
    seconds = round(time.perf_counter() - t0, 3)
    if args.json:
        emit_json({"dataset_id": ds.dataset_id, "n_samples": result.n_samples, "n_issues": int(len(issues)),
                   "n_flagged_samples": int(issues["sample_id"].nunique()), "counts": result.counts,
                   "source": result.source, "seconds": seconds, "audit_seconds": result.seconds,
                   "csv": str(Path(args.csv).expanduser().resolve()) if args.csv else None,
                   "notes": list(result.notes)})
        return 0
    print(f"{ds.name} ({ds.dataset_id}): {result.n_samples} samples audited in {result.seconds:.1f} s; "
          f"{len(issues)} flag(s) on {issues['sample_id'].nunique()} sample(s)")
    for name, desc in audit.DETECTORS.items():
        n = result.counts.get(name, 0)
        if name not in result.config.enabled:
            continue
        print(f"{name:20s} {n:6d}  {desc}")
        if n and args.top:
            for r in issues[issues["issue"] == name].head(args.top).itertuples():
                sugg = f" -> {r.suggested_label}" if r.suggested_label else ""
                print(f"    {r.path}  [{r.suggested_action}{sugg}] {r.detail}")
    for note in result.notes:
        print(f"note: {note}")
    return 0
