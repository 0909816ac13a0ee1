"""``python -m core embed``."""

from __future__ import annotations

import argparse

from core.commands.common import CLIError, add_engine_option, emit_json, info


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a finished run directory (model.keras, labels.json, config.json)")
    p.add_argument("--method", default="pca", choices=["pca", "umap"], help="projection (default: pca)")
    p.add_argument("--dims", type=int, default=2, choices=[2, 3], help="map dimensions (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="projection seed")
    p.add_argument("--out", required=True, help="CSV to write: sample_id, path, split, x, y[, z], label, prediction, "
                                                "correct, confidence")
    p.add_argument("--workspace", help="workspace folder (default: the run's, else $LOUPE_HOME or ./workspace)")
    add_engine_option(p, "the images are embedded when the run's embeddings.npz is stale")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last stdout line")


def run(args: argparse.Namespace) -> int:
    """Embed every sample of a run's dataset and write a 2-D/3-D PCA or UMAP map as CSV."""
    import time
    from pathlib import Path

    from core import embeddings
    from core.datasets import DatasetError
    from core.engines import EngineError
    from core.workspace import atomic_write_text

    out = Path(args.out).expanduser()
    if out.exists() and out.is_dir():
        raise CLIError(f"--out {out} is a folder; name a CSV file")
    t0 = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - last[0] > 2 or done == total:
            last[0] = time.monotonic()
            info(f"embedding: {done}/{total}")

    try:
        emb = embeddings.compute_embeddings(args.run_dir, workspace=args.workspace, progress=progress,
                                            engine=args.engine)
        info(f"{len(emb)} samples x {emb.dim} dims; projecting with {args.method.upper()} to {args.dims}-D")
        proj = embeddings.project(emb.vectors, method=args.method, dims=args.dims, seed=args.seed,
                                  fit_size=20000 if args.method == "umap" else None)
    except (ValueError, DatasetError, EngineError) as exc:
        raise CLIError(str(exc)) from exc
    df = emb.frame()
    cols = ["x", "y", "z"][: args.dims]
    for i, c in enumerate(cols):
        df.insert(3 + i, c, proj.points[:, i])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, df.to_csv(index=False))
    info(f"wrote {len(df)} rows to {out}")
    if args.json:
        emit_json({"out": str(out.resolve()), "n": len(df), "dim": emb.dim, "method": args.method, "dims": args.dims,
                   "n_failed": emb.n_failed, "seconds": round(time.perf_counter() - t0, 3),
                   "params": proj.params})
    return 0
