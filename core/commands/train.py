"""``python -m core train``."""

from __future__ import annotations

import argparse
import json

from core.commands.common import CLIError, add_dataset_options, emit_json, info, spec_from_args  # noqa: F401

def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--raw-labels", action="store_true",
                   help="train on the dataset's raw labels, ignoring the review decisions of the Clean page "
                        "(default: effective labels = raw labels + decisions; config.json records decision_version)")
    m = p.add_argument_group("model")
    m.add_argument("--model", default="cnn", choices=["cnn", "mobilenet_v2", "resnet50v2", "efficientnet_b0"])
    m.add_argument("--alpha", type=float, default=0.35, help="MobileNetV2 width multiplier (default 0.35)")
    m.add_argument("--weights", default="imagenet", choices=["imagenet", "none"],
                   help="transfer backbones: ImageNet weights from $KERAS_HOME/models (random init, with a warning, "
                        "when unavailable), or none")
    m.add_argument("--image-size", type=int, help="square input side in pixels (recipe: 64 CNN, 128 transfer)")
    m.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="flip/rotate/zoom/contrast augmentation (default: on for transfer, off for the CNN)")
    m.add_argument("--flip-average", action=argparse.BooleanOptionalAction, default=None,
                   help="every val score and prediction averages the image with its left-right mirror (default: "
                        "on when the model trains on mirrored images, i.e. with --augment)")
    m.add_argument("--embedding-dim", type=int, help="width of the embedding layer (recipe: 64 CNN, 128 transfer)")
    m.add_argument("--dropout", type=float, help="dropout before and after the embedding (recipe: 0.2 CNN, 0 "
                                                  "transfer)")
    m.add_argument("--feature-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm on the pooled features (default: on for transfer, off for the CNN)")
    m.add_argument("--conv-blocks", type=int, default=2, help="CNN: conv + max-pool blocks (default 2)")
    m.add_argument("--filters", type=int, default=32, help="CNN: filters of the first block, doubled per block")
    m.add_argument("--kernel-size", type=int, default=3)
    m.add_argument("--batch-norm", action="store_true")
    m.add_argument("--pooling", default="flatten", choices=["flatten", "avg", "max"])
    f = p.add_argument_group("fit")
    f.add_argument("--epochs", type=int, help="epochs in all (recipe: 10 CNN, 13 transfer: 1 probe + 12 fine-tuning)")
    f.add_argument("--batch-size", type=int, default=32)
    f.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    f.add_argument("--monitor", choices=["val_macro_f1", "val_loss", "val_accuracy", "val_map"],
                   help="checkpoint and final-model metric (default: val_map, mean average precision, with "
                        "--task multilabel; val_macro_f1 otherwise)")
    f.add_argument("--patience", type=int, help="early stopping patience in epochs, 0: off (recipe: 5 CNN, "
                                                 "0 transfer)")
    f.add_argument("--reduce-lr-patience", type=int, help="halve the LR after N flat epochs, 0: off (recipe: 2 CNN, "
                                                         "0 transfer)")
    f.add_argument("--class-weights", action="store_true", help="balanced class weights (single-label tasks)")
    f.add_argument("--exclude-classes", help="comma-separated classes whose samples are left out")
    f.add_argument("--train-labels", help="multi-label: the labels to train on; hierarchical: the levels "
                                          "(comma-separated; default all)")
    f.add_argument("--imputation", default="mask", choices=["mask", "mean", "matrix_factorization"],
                   help="multi-label missing entries: masked loss (default), mean or low-rank imputation")
    f.add_argument("--hierarchy-mode", default="flat", choices=["flat", "separate"])
    f.add_argument("--fine-tune-layers", type=int,
                   help="after --warmup-epochs, unfreeze the backbone's top N layers at lr x 0.03, BatchNorm frozen "
                        "(recipe: 40 for transfer; 0: frozen backbone throughout)")
    f.add_argument("--warmup-epochs", type=int, help="epochs with a frozen backbone first (recipe: 1 transfer: "
                                                      "the linear probe)")
    f.add_argument("--feature-warmup", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageNet backbones: train the head on the frozen backbone's features computed once "
                        "(default; seconds per epoch), or --no-feature-warmup: frozen epochs on augmented images")
    f.add_argument("--probe-head", action=argparse.BooleanOptionalAction, default=None,
                   help="one label per image: the warm-up fits the head as a linear probe (logistic regression on "
                        "the frozen features, C picked on val) in one epoch (recipe: on for transfer)")
    f.add_argument("--average-weights", action=argparse.BooleanOptionalAction, default=None,
                   help="the final model averages the fine-tuning epochs' weights after the first third "
                        "(recipe: on for transfer)")
    f.add_argument("--train-seed", type=int, default=0, help="seed of initialisation, shuffling, augmentation")
    f.add_argument("--log-every", type=int, default=10, help="a live loss line every N batches")


def run(args: argparse.Namespace) -> int:
    """Train a model (in this process) and write a run directory; the Train page launches the same."""
    from pathlib import Path

    from core import jobs, runs
    from core.datasets import DatasetError
    from core.training import TrainConfig, recommended_config
    from core.workspace import home

    try:
        if args.config:
            try:
                raw = json.loads(Path(args.config).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise CLIError(f"cannot read --config {args.config}: {exc}") from exc
            if Path(args.config).name == runs.CONFIG and isinstance(raw, dict):
                raw = {**raw, **runs.read_config(Path(args.config).parent)}  # a run's: what its worker resolved too
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
                fine_tune_layers=args.fine_tune_layers, warmup_epochs=args.warmup_epochs,
                feature_warmup=args.feature_warmup, probe_head=args.probe_head, average_weights=args.average_weights,
                flip_average=args.flip_average, log_every=args.log_every)
            recipe_keys = ("image_size", "epochs", "dropout", "embedding_dim", "patience", "fine_tune_layers",
                           "warmup_epochs", "augmentation", "feature_norm", "reduce_lr_patience", "probe_head",
                           "average_weights")
            config = recommended_config(args.model, **{k: v for k, v in options.items()
                                                       if v is not None or k not in recipe_keys})
        if args.raw_labels:
            config = config.replace(label_patch_version=jobs.RAW_LABELS, labels_override_path=None)
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
