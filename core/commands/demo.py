"""``python -m core demo``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, emit_json, info

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True,
                   help="folder to write (must be new, empty, or a previous demo, which is replaced)")
    p.add_argument("--seed", type=int, default=0, help="generation seed: same seed, same bytes (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Write the built-in demo dataset (UI-element crops + ground truth of injected problems)."""
    from core import demo

    if args.seed < 0:
        raise CLIError(f"--seed must be >= 0; received {args.seed}")
    info(f"generating the demo dataset into {args.out} (seed {args.seed})")
    try:
        result = demo.generate_demo(args.out, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    except OSError as exc:
        raise CLIError(f"cannot write the demo to {args.out}: {exc}") from exc
    info(f"{result.n_images} images, {result.n_unseen} unseen; ground truth in {result.ground_truth}")
    if args.json:
        emit_json({"out_dir": str(result.out_dir), "n_images": result.n_images, "n_unseen": result.n_unseen,
                   "classes": list(result.classes), "class_counts": result.class_counts,
                   "problems": result.problems, "labels_csv": str(result.labels_csv),
                   "ground_truth": str(result.ground_truth), "seed": result.seed,
                   "dataset_options": result.dataset_options()})
    else:
        print(result.out_dir)
    return 0
