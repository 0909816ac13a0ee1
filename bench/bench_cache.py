"""First vs later loads of the real datasets through ``load_dataset``: the stored dataset and the image cache.

For flowers12 (class folders, 960 JPEGs) and miml_scene (multi-hot CSV, 2,000 JPEGs), each
in a fresh temporary workspace, in this process:

* ``first_s``: the first load (scan, decode every image once at the preview size, split, store);
* ``second_s``: the same load again, median of 3 calls. Nothing changed, so the *stored dataset*
  is reused (the files are stat-ed and the stored Parquet table read): this measures that
  shortcut, not the image cache;
* ``recheck_s``: a load with another seed, i.e. a new dataset over the same, already cached
  images: the whole loader runs (table / folder scan, validation, split, store) but decodes
  nothing. ``first_s / recheck_s`` is what the *image cache* saves;
* ``decode_1thread_s`` / ``decode_2threads_s`` / ``decode_2processes_s``: the image cache alone,
  cold, decoding in this thread, in 2 threads (``LOUPE_DECODE_PROCESSES=0``) and in 2 forked worker
  processes (the default from 256 images on Linux).

Before any timing, the process loads a separate folder of 300 generated images once
(``warm_up``): imports and one-off set-up (Pillow's plugin registry, pyarrow's Parquet reader,
the first decode worker pool) are paid there, not by either timed load.

The whole measurement is repeated ``common.REPEATS`` (3) times, each in a fresh workspace and
cache; every figure and ratio is reported as median and min-max over the repeats (ratios are
computed within a repeat). Prints one JSON object per dataset, then the combined object as
the last line. Usage: ``python bench/bench_cache.py``. Needs ../shared/datasets.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import repeated  # noqa: E402
from core.datasets import PREVIEW_SIZE, DatasetSpec, load_dataset  # noqa: E402
from core.images import ImageCache  # noqa: E402
from core.workspace import Workspace  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"


def bench(name: str, spec: DatasetSpec) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench_cache_{name}_"))
    try:
        ws = Workspace(tmp / "ws")
        t = time.perf_counter()
        first = load_dataset(spec, workspace=ws)
        first_s = time.perf_counter() - t
        seconds = []
        for _ in range(3):
            t = time.perf_counter()
            second = load_dataset(spec, workspace=ws)
            seconds.append(time.perf_counter() - t)
        second_s = sorted(seconds)[1]
        t = time.perf_counter()
        recheck = load_dataset(spec.replace(seed=spec.seed + 1), workspace=ws)
        recheck_s = time.perf_counter() - t
        n = len(first.samples)
        decode = {}
        for how, workers, processes in (("1thread", 1, "0"), ("2threads", 2, "0"), ("2processes", 2, "1")):
            os.environ["LOUPE_DECODE_PROCESSES"] = processes
            cache = ImageCache(tmp / f"cache_{how}", workers=workers)
            t = time.perf_counter()
            cache.arrays(first.samples, PREVIEW_SIZE)
            decode[how] = time.perf_counter() - t
        os.environ.pop("LOUPE_DECODE_PROCESSES")
        return {
            "dataset": name, "n_images": n,
            "first_s": round(first_s, 3), "second_s": round(second_s, 4),
            "speedup": round(first_s / second_s, 1),
            "images_per_s_first": round(n / first_s, 1),
            "first_decoded": first.report.n_decoded, "second_decoded": second.report.n_decoded,
            "recheck_s": round(recheck_s, 3), "recheck_decoded": recheck.report.n_decoded,
            "speedup_recheck": round(first_s / recheck_s, 1),
            "decode_1thread_s": round(decode["1thread"], 3), "decode_2threads_s": round(decode["2threads"], 3),
            "decode_2processes_s": round(decode["2processes"], 3),
            "threads_speedup": round(decode["1thread"] / decode["2threads"], 2),
            "processes_speedup": round(decode["1thread"] / decode["2processes"], 2),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def warm_up() -> None:
    """Load (twice) a separate folder of 300 generated 64 px PNGs: imports and one-off set-up happen here."""
    import numpy as np
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="bench_cache_warm_"))
    try:
        rng = np.random.default_rng(0)
        for i in range(300):
            (tmp / "data" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp / "data" / f"c{i % 3}" / f"{i}.png")
        for _ in range(2):
            load_dataset(DatasetSpec(str(tmp / "data")), workspace=Workspace(tmp / "ws"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    if not DATASETS.exists():
        print(json.dumps({"skipped": f"{DATASETS} is absent"}))
        return 0
    warm_up()
    specs = {"flowers12": DatasetSpec(str(DATASETS / "flowers12")),
             "miml_scene": DatasetSpec(str(DATASETS / "miml_scene"), labels="labels.csv")}
    results = [repeated(lambda: bench(name, spec)) for name, spec in specs.items()]
    for r in results:
        print(json.dumps(r))
    combined = {"bench": "cache", **{r["dataset"]: r for r in results}}
    print(json.dumps(combined))
    return 0


if __name__ == "__main__":
    sys.exit(main())
