"""Scale: the whole pipeline on 10k / 30k / 100k real-pixel images, on this machine.

Images: edited copies of the cub100, flowers12 and miml_scene photos (8,862 sources; random crop
of 60-100 % of the area, mirror, brightness and contrast +-15 %, resized to 112-224 px, JPEG
quality 75-95), generated once into a temporary folder (never committed), class folders = the
source photo's class (117 classes; a miml_scene photo's first label). Size N is the first N of
them (a labels CSV), so each larger set holds the smaller; at 100k each source photo appears
about 11 times, so the near-duplicate detectors have real work at every size.

Per size, in a fresh process (:func:`pipeline`), each stage is timed (wall), with images/s and
the peak resident memory of the process and its children while the stage ran (sampled every
0.2 s from /proc; ``peak_rss_mb`` all of it, ``peak_anon_mb`` its anonymous part: what the
stage allocated, without the image cache's memory-mapped file pages, which the kernel can drop):

1. ``load``: ``load_dataset`` (decoding every image into the workspace's cache);
2. ``audit``: every detector, on cheap features (the offline default: no TensorFlow);
3. ``imagenet_features``: MobileNetV2-0.35 ImageNet features of every image (96 px);
4. ``near_duplicates_imagenet``: the near-duplicate detector on those features (faiss + keypoints);
5. ``pca`` and ``umap``: 2-D maps of the features (UMAP fitted on 20,000 and ``transform`` for the rest);
6. ``ood``: a k-nearest-neighbour OOD scorer fitted on the train split, scoring every image;
7. ``predict``: a bundle-free ``Predictor`` of a probe run (trained once, on 2,000 of the images)
   over every image file.

At the largest size, ``bench_load.page_renders`` then times the Data, Clean and Embeddings pages
on that workspace in Chromium (first visit cold, later visits warm).

The growth exponent k of each stage (time ∝ N^k) is the least-squares slope of log time on
log N. Usage: ``python bench/bench_scale.py [--sizes 10000,30000,100000] [--no-pages] [--keep DIR]``
(``--pages-only``: only load, audit and ImageNet features at the largest size, then the page
render times); prints one JSON object per size, then the combined object as the last stdout line.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DATASETS = REPO.parent / "shared" / "datasets"
WEIGHTS = REPO.parent / "shared" / "weights" / "keras"
SOURCES = ("cub100", "flowers12", "miml_scene")
SIZES = (10_000, 30_000, 100_000)
PROBE_ROWS = 2_000


# ---------------------------------------------------------------------------
# The images
# ---------------------------------------------------------------------------

def _sources() -> list[tuple[str, str]]:
    """(photo path, class) of every source photo."""
    import pandas as pd

    out = []
    for name in SOURCES:
        if (DATASETS / name / "labels.csv").exists() and (DATASETS / name / "images").is_dir():  # multi-hot table
            table = pd.read_csv(DATASETS / name / "labels.csv")
            names = list(table.columns[1:])
            for row in table.itertuples(index=False):
                first = next((c for c, v in zip(names, row[1:]) if v == 1), "none")
                out.append((str(DATASETS / name / "images" / row[0]), f"{name}_{first}"))
            continue
        for p in sorted((DATASETS / name).rglob("*.jpg")):
            out.append((str(p), f"{name}_{p.parent.name}"))
    return out


def _make(job: tuple[int, str, str, str]) -> None:
    import numpy as np
    from PIL import Image, ImageEnhance, ImageOps

    i, src, cls, root = job
    rng = np.random.default_rng(i)
    with Image.open(src) as im:
        im = im.convert("RGB")
    w, h = im.size
    area = rng.uniform(0.6, 1.0)
    cw, ch = int(w * math.sqrt(area)), int(h * math.sqrt(area))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.85, 1.15))
    im = ImageEnhance.Contrast(im).enhance(rng.uniform(0.85, 1.15))
    side = int(rng.integers(112, 225))
    im = im.resize((side, side), Image.Resampling.BILINEAR)
    out = Path(root) / cls / f"{i:06d}.jpg"
    out.parent.mkdir(parents=True, exist_ok=True)
    im.save(out, quality=int(rng.integers(75, 96)))


def make_images(root: Path, n: int) -> tuple[float, list[tuple[str, str]]]:
    """``n`` edited copies under ``root/<class>/``; returns (seconds, [(relative path, class)])."""
    src = _sources()
    jobs = [(i, *src[i % len(src)], str(root)) for i in range(n)]
    t = time.perf_counter()
    with mp.get_context("fork").Pool(2) as pool:
        for _ in pool.imap_unordered(_make, jobs, chunksize=256):
            pass
    rows = [(f"{cls}/{i:06d}.jpg", cls) for i, _, cls, _ in jobs]
    return time.perf_counter() - t, rows


# ---------------------------------------------------------------------------
# Memory and timing
# ---------------------------------------------------------------------------

def _tree_rss_kb(pid: int) -> tuple[int, int]:
    """Resident memory (kB) of ``pid`` and its descendants (from /proc): (all of it, its anonymous part)."""
    total = anon = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                    elif line.startswith("RssAnon:"):
                        anon += int(line.split()[1])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (OSError, ValueError):
            continue
    return total, anon


class Stage:
    """Times a stage and samples the process tree's peak resident memory while it runs."""

    def __init__(self, name: str, n: int, out: dict):
        self.name, self.n, self.out = name, n, out

    def __enter__(self):
        self.peak = _tree_rss_kb(os.getpid())
        self.stop = threading.Event()

        def sample():
            while not self.stop.wait(0.2):
                self.peak = tuple(map(max, self.peak, _tree_rss_kb(os.getpid())))

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        seconds = time.perf_counter() - self.t
        self.stop.set()
        self.thread.join()
        self.peak = tuple(map(max, self.peak, _tree_rss_kb(os.getpid())))
        self.out[self.name] = {"seconds": round(seconds, 2), "images_per_s": round(self.n / max(seconds, 1e-9), 1),
                               "peak_rss_mb": round(self.peak[0] / 1024, 1),
                               "peak_anon_mb": round(self.peak[1] / 1024, 1)}
        print(json.dumps({"stage": self.name, "n": self.n, **self.out[self.name]}), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# One size, in its own process
# ---------------------------------------------------------------------------

def train_probe(images: Path, table: Path, work: Path) -> Path:
    """A MobileNetV2-0.35 probe run (frozen ImageNet backbone, 96 px) on the table's rows; returns its folder."""
    from core import jobs
    from core.datasets import DatasetSpec, load_dataset
    from core.training import recommended_config
    from core.workspace import Workspace

    ws = Workspace(work / "ws_probe").ensure()
    ds = load_dataset(DatasetSpec(str(images), labels=str(table), image_column="image", label_columns=("label",),
                                  task="multiclass"), workspace=ws)
    cfg = recommended_config(model="mobilenet_v2", alpha=0.35, weights="imagenet", image_size=96, epochs=1,
                             fine_tune_layers=0, dataset_id=ds.dataset_id)
    out = ws.runs_dir / "probe"
    result = jobs.run_worker(cfg, out=out, workspace=ws)
    if result.state != "done":
        raise RuntimeError(f"the probe run ended {result.state}: {result.alerts}")
    return out


def pipeline(images: Path, table: Path, run: Path | None, work: Path) -> dict:
    """Every stage on the images ``table`` lists, in a fresh workspace under ``work`` (``run`` None:
    only load, audit and ImageNet features, the workspace the pages are timed on)."""
    import numpy as np
    import pandas as pd

    from core import audit, embeddings
    from core.datasets import DatasetSpec, load_dataset
    from core.predict import Predictor
    from core.workspace import Workspace

    n = len(pd.read_csv(table))
    out: dict = {"n": n}
    ws = Workspace(work / f"ws_{n}").ensure()
    spec = DatasetSpec(str(images), labels=str(table), image_column="image", label_columns=("label",),
                       task="multiclass")
    with Stage("load", n, out):
        ds = load_dataset(spec, workspace=ws)
    with Stage("audit", n, out):
        res = audit.audit_dataset(ds, workspace=ws, config={"label_issue_features": "image",
                                                            "near_duplicate_features": "pixels"})
    out["audit"]["flags"] = {k: int(v) for k, v in res.counts.items()}
    out["audit"]["detector_s"] = dict(res.timings)
    with Stage("imagenet_features", n, out):
        emb = embeddings.backbone_embeddings(ws, ds.dataset_id)
    if run is None:  # --pages-only: what the Data, Clean and Embeddings pages read is in place
        return out
    with Stage("near_duplicates_imagenet", n, out):
        nd = audit.audit_dataset(ds, workspace=ws, config={"enabled": ["near_duplicate"],
                                                           "near_duplicate_features": "pixels+imagenet"})
    out["near_duplicates_imagenet"]["flags"] = int(len(nd.issues))
    with Stage("pca", n, out):
        embeddings.project(emb.vectors, method="pca", dims=2, seed=0)
    with Stage("umap", n, out):
        embeddings.project(emb.vectors, method="umap", dims=2, seed=0, fit_size=20_000)
    with Stage("ood", n, out):
        scorer = embeddings.fit_ood(emb, method="knn", split="train")
        scores = scorer.score(emb.vectors)
    out["ood"]["finite"] = bool(np.isfinite(scores).all())
    files = [str(images / p) for p in pd.read_csv(table)["image"]]
    predictor = Predictor.load(run)
    with Stage("predict", n, out):
        pred = predictor.predict_paths(files)
    out["predict"]["errors"] = int((pred["error"] != "").sum())
    return out


def growth(rows: list[dict]) -> dict:
    """Per stage: k in time ∝ N^k (least squares on log-log), from the sizes measured."""
    import numpy as np

    out = {}
    stages = [k for k, v in rows[0].items() if isinstance(v, dict) and "seconds" in v]
    for s in stages:
        x = np.log([r["n"] for r in rows])
        y = np.log([max(r[s]["seconds"], 1e-3) for r in rows])
        out[s] = round(float(np.polyfit(x, y, 1)[0]), 2) if len(rows) > 1 else None
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)))
    ap.add_argument("--no-pages", action="store_true", help="skip the page render times at the largest size")
    ap.add_argument("--keep", type=Path, metavar="DIR",
                    help="work in DIR and keep it (images, the probe run, the largest size's workspace) for profiling")
    ap.add_argument("--pages-only", action="store_true",
                    help="only what the pages read (load, audit, ImageNet features) at the largest size, then the "
                         "page render times: no probe run, no other stage")
    ap.add_argument("--one", nargs=4, metavar=("IMAGES", "TABLE", "RUN", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv[1:])
    if args.one:  # one size, in the fresh process the parent started (KERAS_HOME inherited)
        images, table, run, work = map(Path, args.one)
        print(json.dumps(pipeline(images, table, None if str(run) == "-" else run, work)))
        return 0
    if not all((DATASETS / s).exists() for s in SOURCES):
        print(json.dumps({"bench": "scale", "skipped": f"needs {', '.join(SOURCES)} in {DATASETS}"}))
        return 0
    tmp = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    tmp.mkdir(parents=True, exist_ok=True)
    keras_home = tmp / "keras"
    shutil.copytree(WEIGHTS, keras_home, dirs_exist_ok=True)  # --keep DIR may hold it already
    os.environ.update({"KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"})
    import pandas as pd

    sizes = sorted(int(s) for s in args.sizes.split(","))
    results: dict = {"bench": "scale", "sizes": sizes, "sources": list(SOURCES), "rows": []}
    try:
        images = tmp / "images"
        gen_s, rows = make_images(images, max(sizes))
        results["generate_s"] = round(gen_s, 1)
        results["source_photos"] = len(_sources())
        table = pd.DataFrame(rows, columns=["image", "label"])
        probe_table = tmp / "probe.csv"
        table.iloc[:min(PROBE_ROWS, len(table))].to_csv(probe_table, index=False)
        if args.pages_only:
            sizes, run = [max(sizes)], "-"
        else:
            t = time.perf_counter()
            run = train_probe(images, probe_table, tmp)
            results["probe_train_s"] = round(time.perf_counter() - t, 1)
        for n in sizes:
            path = tmp / f"labels_{n}.csv"
            table.iloc[:n].to_csv(path, index=False)
            t = time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, "--one", str(images), str(path), str(run), str(tmp)],
                                  capture_output=True, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                raise RuntimeError(f"size {n} failed:\n{proc.stderr[-4000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["total_s"] = round(time.perf_counter() - t, 1)
            for key in ("peak_rss_mb", "peak_anon_mb"):
                row[key] = max(v[key] for v in row.values() if isinstance(v, dict) and key in v)
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
            if n == max(sizes) and not args.no_pages:
                from bench.bench_load import CHROMIUM, page_renders

                try:  # a browser problem must not lose the pipeline's figures
                    if not Path(CHROMIUM).exists():
                        raise RuntimeError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
                    results["pages"] = {"n": n, **page_renders(tmp / f"ws_{n}")}
                except Exception as exc:  # noqa: BLE001 - recorded, not fatal
                    results["pages"] = {"n": n, "error": f"{type(exc).__name__}: {exc}"}
                print(json.dumps(results["pages"]), flush=True)
            if not (args.keep and n == max(sizes)):
                shutil.rmtree(tmp / f"ws_{n}", ignore_errors=True)
        results["growth_exponent"] = growth(results["rows"])
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
