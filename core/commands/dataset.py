"""``python -m core dataset``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, add_dataset_options, emit_json, info, spec_from_args  # noqa: F401

def add_arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="dataset_verb", required=True)
    q = verbs.add_parser("inspect", help="load, validate and register a dataset; print its report")
    add_dataset_options(q)
    q.add_argument("--delimiter", help="delimiter of a text labels table (default: sniffed among , TAB ; |)")
    q.add_argument("--split-column", help="column holding train/val/test (default: auto, a column named split)")
    q.add_argument("--image-root", help="folder the table's image paths are relative to (default: auto)")
    q.add_argument("--name", help="display name of the dataset (default: the folder name)")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Datasets: ``inspect PATH`` loads, validates and registers one, and reports what it found."""
    from core import datasets
    from core.workspace import WorkspaceError, home

    spec = spec_from_args(args)
    ws = home(args.workspace)
    last = [-1.0]

    def progress(done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if done == total or now - last[0] > 2.0:
            last[0] = now
            info(f"validated {done}/{total} images")

    info(f"loading {spec.path}" + (f" with labels {spec.labels}" if spec.labels else ""))
    try:
        ds = datasets.load_dataset(spec, workspace=ws, progress=progress)
    except datasets.DatasetError as exc:
        if args.json:
            out: dict = {"error": str(exc), "n_samples": 0, "n_valid": 0, "n_invalid": 0,
                         "invalid_examples": [], "path": spec.path}
            if exc.report is not None:
                out.update(n_samples=exc.report.n_candidates, n_invalid=exc.report.n_invalid,
                           problems={k: g.count for k, g in exc.report.problems.items()},
                           invalid_examples=exc.report.invalid_examples())
            emit_json(out)
        raise CLIError(str(exc)) from exc
    except WorkspaceError as exc:
        raise CLIError(str(exc)) from exc
    summary = datasets.dataset_summary(ds)
    summary["seconds"] = ds.report.seconds
    if args.json:
        emit_json(summary)
        return 0
    print(f"{ds.name} ({ds.dataset_id}): {ds.schema.task}, registered in {ws.root}")
    for line in ds.report.summary_lines():
        print(line)
    if "classes" in summary and isinstance(summary["classes"], list):
        print(f"classes ({len(summary['classes'])}): "
              + ", ".join(f"{k} {v}" for k, v in summary["class_counts"].items()))
        if summary.get("positive_class") is not None:
            print(f"positive class: {summary['positive_class']}")
    elif "labels" in summary:
        print(f"labels ({len(summary['labels'])}): "
              + ", ".join(f"{k} {v} (missing {summary['missing_labels'].get(k, 0)})"
                          for k, v in summary["class_counts"].items()))
    else:
        for lvl in summary["levels"]:
            counts = summary["class_counts"][lvl]
            print(f"level {lvl} ({len(counts)} classes): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    for c, n in summary.get("attribute_counts", {}).items():
        print(f"attribute {c}: {n} positive, {summary['missing_labels'].get(c, 0)} missing")
    print("split: " + ", ".join(f"{k} {v}" for k, v in summary["split_counts"].items()))
    for note in ds.report.notes:
        print(f"note: {note}")
    return 0
