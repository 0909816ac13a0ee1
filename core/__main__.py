"""The CLI: ``python -m core <command> ...`` — the same operations as the app, for scripts and CI.

Conventions every command follows:

* ``--json`` prints exactly one JSON object as the **last line** of stdout.
* Exit code 0 on success, 2 with a one-paragraph message on stderr when the input is unusable.
* Human-readable progress goes to stderr, so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable


class CLIError(Exception):
    """A user error: printed as ``error: <message>`` and exit code 2 (no traceback)."""


def emit_json(obj: Any) -> None:
    """Print ``obj`` as one JSON line on stdout (the contract: last line of stdout)."""
    sys.stdout.write(json.dumps(obj, default=_json_default, sort_keys=True) + "\n")
    sys.stdout.flush()


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return None if np.isnan(o) else float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def info(msg: str) -> None:
    """Progress for humans, on stderr."""
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Dataset options shared by inspect / audit / train
# ---------------------------------------------------------------------------

def add_dataset_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="dataset root: a folder of class folders, or the images folder for a labels table")
    p.add_argument("--labels", help="labels table (CSV, TSV or Parquet); paths in it are relative to PATH")
    p.add_argument("--task", choices=["multiclass", "binary", "multilabel", "hierarchical"],
                   help="label shape (auto-detected when omitted)")
    p.add_argument("--label-columns", help="comma-separated label columns (hierarchical: levels coarse->fine)")
    p.add_argument("--image-column", help="column holding image paths (auto-detected when omitted)")
    p.add_argument("--positive-class", help="binary task: the positive class")
    p.add_argument("--tags-column", help="multi-label: one column of delimited tags")
    p.add_argument("--tags-delimiter", default=None, help="delimiter for --tags-column (default: auto)")
    p.add_argument("--box-columns", help="region crops: x,y,w,h or x1,y1,x2,y2 column names")
    p.add_argument("--box-format", choices=["xywh", "xyxy"], help="how to read --box-columns (default: from names)")
    p.add_argument("--attribute-columns", help="extra multi-hot attribute columns")
    p.add_argument("--unseen", help="folder of unlabelled images kept beside the dataset (out-of-distribution)")
    p.add_argument("--seed", type=int, default=0, help="seed of the stored train/val/test split")
    p.add_argument("--workspace", help="workspace folder (default: $LOUPE_HOME or ./workspace)")


def spec_from_args(args: argparse.Namespace) -> "Any":
    """The :class:`core.datasets.DatasetSpec` described by the options of :func:`add_dataset_options`.

    Raises :class:`CLIError` when an option has an invalid value.
    """
    from core.datasets import DatasetSpec

    def cols(v: str | None) -> tuple[str, ...]:
        return tuple(c.strip() for c in v.split(",") if c.strip()) if v else ()

    try:
        return DatasetSpec(
            path=args.path, labels=args.labels, task=args.task, label_columns=cols(args.label_columns),
            image_column=args.image_column, positive_class=args.positive_class, tags_column=args.tags_column,
            tags_delimiter=args.tags_delimiter, box_columns=cols(args.box_columns), box_format=args.box_format,
            attribute_columns=cols(args.attribute_columns), unseen=args.unseen, seed=args.seed,
            name=getattr(args, "name", None), delimiter=getattr(args, "delimiter", None),
            split_column=getattr(args, "split_column", None), image_root=getattr(args, "image_root", None),
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Loupe: image-classification workbench CLI")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, _handler) in COMMANDS.items():
        p = sub.add_parser(name, help=(_handler.__doc__ or "").strip().splitlines()[0] if _handler.__doc__ else None)
        add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _add, handler = COMMANDS[args.command]
    try:
        return int(handler(args) or 0)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------
# Commands (each: an ``_args_<name>`` adding its options, a ``cmd_<name>`` running it,
# registered in COMMANDS below). Keep each command's code in its own block.
# ---------------------------------------------------------------------------

# >>> commands

# -- evaluate ----------------------------------------------------------------

def _args_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory holding labels.json and predictions.csv")
    p.add_argument("--split", default="test", choices=["test", "val", "train"],
                   help="which rows of predictions.csv to evaluate (default: test)")
    p.add_argument("--target-precision", type=float, default=0.9,
                   help="threshold picker: highest recall at precision >= this (default: 0.9)")
    p.add_argument("--n-bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the threshold's confidence intervals (default: 1000; 0 skips)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--save-thresholds", action="store_true",
                   help="write the chosen thresholds to the run's thresholds.json (other sections are kept)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a run's predictions: per-class metrics, curves' AP/AUC, thresholds at a target precision."""
    from pathlib import Path

    from core import metrics, runs

    rd = runs.RunDir(Path(args.run_dir).expanduser())
    if not rd.path.is_dir():
        raise CLIError(f"{rd.path} is not a folder; pass a run directory (runs/<run_id>/)")
    lacking = [p.name for p in (rd.labels, rd.predictions) if not p.exists()]
    if lacking:
        raise CLIError(f"{rd.path} is not a run directory with predictions: it lacks {' and '.join(lacking)} "
                       "(a finished training run writes both)")
    if not 0 < args.target_precision <= 1:
        raise CLIError(f"--target-precision must be in (0, 1]; received {args.target_precision}")
    if args.n_bootstrap < 0:
        raise CLIError(f"--n-bootstrap must be >= 0; received {args.n_bootstrap}")
    try:
        pred = runs.read_predictions(rd, split=args.split)
        result = metrics.evaluate_predictions(pred, target_precision=args.target_precision,
                                              n_bootstrap=args.n_bootstrap, seed=args.seed)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    result = {"run_dir": str(rd.path.resolve()), "run_id": rd.run_id, "split": args.split, **result}
    if args.save_thresholds:
        runs.write_thresholds(rd, classes=result["thresholds"],
                              meta={"target_precision": args.target_precision, "split": args.split})
        info(f"thresholds saved to {rd.thresholds}")
    if args.json:
        emit_json(result)
    else:
        print(metrics.format_evaluation(result))
    return 0


COMMANDS["evaluate"] = (_args_evaluate, cmd_evaluate)


# -- demo --------------------------------------------------------------------

def _args_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True,
                   help="folder to write (must be new, empty, or a previous demo, which is replaced)")
    p.add_argument("--seed", type=int, default=0, help="generation seed: same seed, same bytes (default: 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def cmd_demo(args: argparse.Namespace) -> int:
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


COMMANDS["demo"] = (_args_demo, cmd_demo)


# -- dataset -----------------------------------------------------------------

def _args_dataset(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="dataset_verb", required=True)
    q = verbs.add_parser("inspect", help="load, validate and register a dataset; print its report")
    add_dataset_options(q)
    q.add_argument("--delimiter", help="delimiter of a text labels table (default: sniffed among , TAB ; |)")
    q.add_argument("--split-column", help="column holding train/val/test (default: auto, a column named split)")
    q.add_argument("--image-root", help="folder the table's image paths are relative to (default: auto)")
    q.add_argument("--name", help="display name of the dataset (default: the folder name)")
    q.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def cmd_dataset(args: argparse.Namespace) -> int:
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


COMMANDS["dataset"] = (_args_dataset, cmd_dataset)


# -- train -------------------------------------------------------------------

def _args_train(p: argparse.ArgumentParser) -> None:
    add_dataset_options(p)
    for action in p._actions:  # PATH is optional here: --dataset-id or --config may name the data instead
        if action.dest == "path":
            action.nargs, action.default = "?", None
    p.add_argument("--dataset-id", help="train a dataset registered in the workspace instead of PATH")
    p.add_argument("--config", help="a TrainConfig JSON (e.g. a run's config.json); the other training and "
                                    "dataset options are then ignored")
    p.add_argument("--out", required=True, help="the run directory to write")
    p.add_argument("--queue", action="store_true",
                   help="wait for the workspace's training queue (one training at a time), as launched runs do")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="cnn", choices=["cnn", "mobilenet_v2", "resnet50v2", "efficientnet_b0"])
    m.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    m.add_argument("--weights", default="imagenet", choices=["imagenet", "none"],
                   help="transfer backbones: ImageNet weights from $KERAS_HOME/models (random init, with a warning, "
                        "when unavailable), or none")
    m.add_argument("--image-size", type=int, help="square input side in pixels (recipe: 64 CNN, 128 transfer)")
    m.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="flip/rotate/zoom/contrast augmentation (default: on for transfer, off for the CNN)")
    m.add_argument("--embedding-dim", type=int, help="width of the embedding layer (recipe: 64 CNN, 128 transfer)")
    m.add_argument("--dropout", type=float, help="dropout before and after the embedding (recipe: 0.2 CNN, 0.5 "
                                                  "transfer)")
    m.add_argument("--feature-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm on the pooled features (default: on for transfer, off for the CNN)")
    m.add_argument("--conv-blocks", type=int, default=2, help="CNN: conv + max-pool blocks (default 2)")
    m.add_argument("--filters", type=int, default=32, help="CNN: filters of the first block, doubled per block")
    m.add_argument("--kernel-size", type=int, default=3)
    m.add_argument("--batch-norm", action="store_true")
    m.add_argument("--pooling", default="flatten", choices=["flatten", "avg", "max"])
    f = p.add_argument_group("fit")
    f.add_argument("--epochs", type=int, help="epochs in all (recipe: 10 CNN, 30 transfer)")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    f.add_argument("--monitor", default="val_macro_f1", choices=["val_macro_f1", "val_loss", "val_accuracy"])
    f.add_argument("--patience", type=int, help="early stopping patience in epochs, 0: off (recipe: 5 CNN, "
                                                 "8 transfer)")
    f.add_argument("--reduce-lr-patience", type=int, default=2, help="halve the LR after N flat epochs (0: off)")
    f.add_argument("--class-weights", action="store_true", help="balanced class weights (single-label tasks)")
    f.add_argument("--exclude-classes", help="comma-separated classes whose samples are left out")
    f.add_argument("--train-labels", help="multi-label: the labels to train on; hierarchical: the levels "
                                          "(comma-separated; default all)")
    f.add_argument("--imputation", default="mask", choices=["mask", "mean", "matrix_factorization"],
                   help="multi-label missing entries: masked loss (default), mean or low-rank imputation")
    f.add_argument("--hierarchy-mode", default="flat", choices=["flat", "separate"])
    f.add_argument("--fine-tune-layers", type=int,
                   help="after --warmup-epochs, unfreeze the backbone's top N layers at lr/10, BatchNorm frozen "
                        "(recipe: 40 for transfer; 0: frozen backbone throughout)")
    f.add_argument("--warmup-epochs", type=int, help="epochs with a frozen backbone first (recipe: 10 transfer)")
    f.add_argument("--train-seed", type=int, default=0, help="seed of initialisation, shuffling, augmentation")
    f.add_argument("--log-every", type=int, default=10, help="a live loss line every N batches")


def cmd_train(args: argparse.Namespace) -> int:
    """Train a model (in this process) and write a run directory; the Train page launches the same."""
    from pathlib import Path

    from core import jobs
    from core.datasets import DatasetError
    from core.training import TrainConfig, recommended_config
    from core.workspace import home

    try:
        if args.config:
            try:
                raw = json.loads(Path(args.config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CLIError(f"cannot read --config {args.config}: {exc}") from exc
            config = TrainConfig.from_dict(raw)
        else:
            if not args.path and not args.dataset_id:
                raise CLIError("give the dataset: PATH (with dataset options) or --dataset-id ID --workspace W")
            spec = spec_from_args(args) if args.path else None
            if spec is not None and args.task == "binary":
                # load the column as it is (2 or more classes); training makes positive-vs-rest targets
                spec = spec.replace(task="multiclass", positive_class=None)
            options = dict(
                dataset=spec.to_dict() if spec is not None else None, dataset_id=args.dataset_id,
                task=args.task, positive_class=args.positive_class, label_columns=args.train_labels,
                hierarchy_mode=args.hierarchy_mode, exclude_classes=args.exclude_classes or (),
                imputation=args.imputation, alpha=args.alpha, weights=args.weights, image_size=args.image_size,
                augmentation=args.augment, embedding_dim=args.embedding_dim, dropout=args.dropout,
                feature_norm=args.feature_norm, conv_blocks=args.conv_blocks, filters=args.filters,
                kernel_size=args.kernel_size, batch_norm=args.batch_norm, pooling=args.pooling, epochs=args.epochs,
                batch_size=args.batch_size, lr=args.lr, monitor=args.monitor, patience=args.patience,
                reduce_lr_patience=args.reduce_lr_patience, class_weights=args.class_weights, seed=args.train_seed,
                fine_tune_layers=args.fine_tune_layers, warmup_epochs=args.warmup_epochs, log_every=args.log_every)
            recipe_keys = ("image_size", "epochs", "dropout", "embedding_dim", "patience", "fine_tune_layers",
                           "warmup_epochs", "augmentation", "feature_norm")
            config = recommended_config(args.model, **{k: v for k, v in options.items()
                                                       if v is not None or k not in recipe_keys})
        result = jobs.run_worker(config, out=Path(args.out).expanduser().resolve(), workspace=home(args.workspace),
                                 queue=args.queue, log=info)
    except (ValueError, DatasetError) as exc:
        raise CLIError(str(exc)) from exc
    for alert in result.alerts:
        info(f"alert [{alert.get('kind')}]: {alert.get('message')} {alert.get('suggestion', '')}".rstrip())
    if args.json:
        emit_json(result.to_json())
    else:
        print(f"{result.state}: {result.run_dir}; best epoch {result.best_epoch}; test {result.test}")
    return 0


COMMANDS["train"] = (_args_train, cmd_train)


# <<< commands

if __name__ == "__main__":
    sys.exit(main())
