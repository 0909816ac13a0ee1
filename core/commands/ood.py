"""``python -m core ood``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, add_engine_option, emit_json, info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--unseen", required=True,
                   help="folder of images the model never saw (searched recursively): the out-of-distribution set")
    p.add_argument("--method", default="mahalanobis", choices=["mahalanobis", "gmm", "knn"],
                   help="score: Mahalanobis distance to the nearest class mean (default), Gaussian-mixture "
                        "negative log-likelihood, or mean cosine distance to the 10 nearest train images")
    p.add_argument("--fpr", type=float, default=0.05,
                   help="false-alarm rate on the test split that sets the threshold (default: 0.05)")
    p.add_argument("--save", action="store_true",
                   help="write the threshold to the run's thresholds.json (section 'ood'; other sections kept)")
    p.add_argument("--workspace", help="workspace folder (default: the run's, else $LOUPE_HOME or ./workspace)")
    add_engine_option(p, "the images are embedded (the run's dataset when its embeddings.npz is stale, and the "
                         "unseen folder)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Score the test split vs a folder of unseen images in embedding space: AUROC and a threshold."""
    from core import embeddings
    from core.datasets import DatasetError
    from core.engines import EngineError

    if not 0 <= args.fpr < 1:
        raise CLIError(f"--fpr must be in [0, 1); received {args.fpr}")
    try:
        paths = embeddings.find_images(args.unseen)
    except ValueError as exc:
        raise CLIError(f"--unseen: {exc}") from exc
    if not paths:
        raise CLIError(f"--unseen {args.unseen} holds no image files (searched recursively for "
                       ".jpg/.png/... files)")
    try:
        emb = embeddings.compute_embeddings(args.run_dir, workspace=args.workspace, engine=args.engine)
        info(f"{len(emb)} samples embedded; embedding {len(paths)} unseen images")
        vectors, ok = embeddings.embed_paths(args.run_dir, paths, workspace=args.workspace, engine=args.engine)
        if not ok.any():
            raise CLIError(f"none of the {len(paths)} images under {args.unseen} could be decoded")
        if not ok.all():
            info(f"warning: {int((~ok).sum())} unseen image(s) could not be decoded and are left out")
        ev = embeddings.evaluate_ood(emb, vectors, method=args.method, fpr=args.fpr)
    except (ValueError, DatasetError, EngineError) as exc:
        raise CLIError(str(exc)) from exc
    summary = {"run_dir": str(args.run_dir), **ev.summary(), "unseen": str(args.unseen),
               "n_unseen_undecodable": int((~ok).sum())}
    if args.save:
        embeddings.save_ood_threshold(args.run_dir, method=ev.method, threshold=ev.threshold, fpr=ev.fpr,
                                      auroc=ev.auroc, n_unseen=ev.n_unseen, unseen=str(args.unseen))
        info("threshold saved to thresholds.json (section 'ood')")
    if args.json:
        emit_json(summary)
    else:
        print(f"method {ev.method}: AUROC {ev.auroc:.3f} (test = in-distribution vs {ev.n_unseen} unseen)")
        print(f"threshold {ev.threshold:.4g} flags {ev.test_fpr:.1%} of test and {ev.n_flagged}/{ev.n_unseen} "
              "unseen images")
    return 0
