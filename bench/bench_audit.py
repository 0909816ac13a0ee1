"""The audit side by side with cleanvision: throughput, recall on shared issue types, label-issue quality.

Three measurements, each in fresh temporary workspaces, in this process:

1. ``demo``: the generated demo (1,046 PNG crops with a ground truth of injected problems).
   Throughput (images/s) of Loupe's audit and of cleanvision's ``Imagelab.find_issues`` on
   the same files, and the recall / precision of both on the issue types they share:
   ``uniform`` ~ cleanvision ``low_information``, ``duplicate`` ~ ``exact_duplicates``,
   ``near_duplicate`` ~ ``near_duplicates``. Loupe's images/s is *cold*: loading the
   dataset (every image decoded once into the cache) plus the audit, so both tools decode
   every file; the warm figure (a second audit, cache filled) is printed beside it.
   cleanvision 0.3.7 raises ``UnidentifiedImageError`` on the demo's 4 corrupt files, so
   it is given the 1,042 decodable ones (the error is recorded in the output).
2. ``flowers12`` (960 JPEG photos): the same throughput comparison on natural images.
3. ``flowers12_flipped``: 5 % of the labels flipped at random (seeded); precision and
   recall of ``label_issue`` (quick out-of-fold classifier, no run) on image features
   (``label_issue``) and on image + pretrained ImageNet features (``label_issue_imagenet``,
   MobileNetV2-0.35 at 96 px from a temporary copy of ../shared/weights/keras).

4. ``synthetic_memory``: peak heap (tracemalloc) of a full audit on 500 / 1,000 / 2,000 /
   4,000 generated images, against the bytes of their cached pixels: pixels stream, they
   are never all in RAM.

``ratio`` = Loupe images/s / cleanvision images/s, wall clock, *cold*: Loupe's load (decoding
every file into the cache) plus its audit, against cleanvision's run (target >= 3). Each tool is
timed ``REPEATS`` (3) times on the same files, Loupe in a fresh workspace each time (every file
decoded again), and the median run counts; the list of all runs is printed beside it. Before
any timing, both tools run once on a separate folder of 300 generated images (``warm_up``), so
neither timed run pays its one-off imports and initialisation (Pillow's plugin registry, lazy
imports, first process pool): throughput is per image, not per process start.
``ratio_audit``: the audit alone, its first run on the loaded dataset (what the Clean page's
"Run audit" costs once the Data page has loaded the dataset), against the same cleanvision run. Loupe runs two
decoding worker processes (its default from 256 images on Linux) and two threads for its image
statistics; cleanvision runs with its default ``n_jobs`` (all cores, in worker processes). ``ratio_cpu`` compares images per CPU-second (this process's threads plus
finished child processes): the fair figure on a shared, busy machine, where wall clock mostly
measures how much of the CPU each tool's processes happened to get.

Usage: ``python bench/bench_audit.py`` (needs ``pip install -r bench/requirements-bench.txt``
and ../shared/datasets for flowers12). Prints one JSON object per part, then the combined
object as the last stdout line.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core import audit, demo  # noqa: E402
from core.datasets import DatasetSpec, load_dataset  # noqa: E402
from core.images import IMAGE_EXTENSIONS  # noqa: E402
from core.workspace import Workspace  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
#: Loupe's detectors comparable to cleanvision's default checks (no label checks).
IMAGE_DETECTORS = ("corrupt", "uniform", "duplicate", "near_duplicate", "dark", "bright", "blurry", "odd_size")
SHARED = {"uniform": "low_information", "duplicate": "exact_duplicates", "near_duplicate": "near_duplicates"}
#: Throughput parts run label_issue (in the "full" audits) on image features only: no TensorFlow.
IMAGE_ONLY = {"label_issue_features": "image"}
#: Timed runs per tool and dataset; the median counts.
REPEATS = 3
WEIGHTS = REPO.parent / "shared" / "weights" / "keras"
if WEIGHTS.exists() and "KERAS_HOME" not in os.environ:
    # Keras reads KERAS_HOME at its import: a temporary copy of the shared ImageNet weights, for the
    # label_issue variant on image + ImageNet features (the download fails offline)
    _kh = Path(tempfile.mkdtemp(prefix="bench_audit_keras_"))
    shutil.copytree(WEIGHTS, _kh, dirs_exist_ok=True)
    os.environ["KERAS_HOME"] = str(_kh)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _images(root: Path) -> list[str]:
    return sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


class _Clock:
    """Wall seconds and CPU seconds (this process, all threads, plus finished child processes)."""

    def __enter__(self) -> "_Clock":
        self.w = time.perf_counter()
        self.c = time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime \
            + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
        return self

    def __exit__(self, *exc) -> None:
        ch = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.wall = time.perf_counter() - self.w
        self.cpu = time.process_time() + ch.ru_utime + ch.ru_stime - self.c


def run_cleanvision(files: list[str]) -> tuple[float, pd.DataFrame, str, float]:
    """cleanvision on ``files``: (wall seconds, its issues table indexed by path, version, CPU seconds)."""
    import cleanvision
    from cleanvision import Imagelab

    logging.disable(logging.WARNING)
    with _Clock() as clock, contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=files, verbose=False)
        lab.find_issues(verbose=False)
    logging.disable(logging.NOTSET)
    return clock.wall, lab.issues, cleanvision.__version__, clock.cpu


def run_loupe(spec: DatasetSpec, ws: Workspace, *, enabled=tuple(audit.DETECTORS)) -> dict:
    with _Clock() as load:
        ds = load_dataset(spec, workspace=ws)
    with _Clock() as first:
        res = audit.audit_dataset(ds, workspace=ws, config={"enabled": list(enabled), **IMAGE_ONLY})
    with _Clock() as warm:
        audit.audit_dataset(ds, workspace=ws, config={"enabled": list(enabled), **IMAGE_ONLY})
    return {"ds": ds, "result": res, "load_s": load.wall, "audit_s": first.wall, "warm_s": warm.wall,
            "cold_s": load.wall + first.wall, "cold_cpu_s": load.cpu + first.cpu, "warm_cpu_s": warm.cpu}


def _median(runs: list, key) -> Any:
    return sorted(runs, key=key)[len(runs) // 2]


def run_loupe_median(spec: DatasetSpec, root: Path, *, enabled=tuple(audit.DETECTORS)) -> dict:
    """:func:`run_loupe` ``REPEATS`` times, each in a fresh workspace under ``root`` (cold every time): the median run."""
    runs = [run_loupe(spec, Workspace(root / f"run{k}"), enabled=enabled) for k in range(REPEATS)]
    med = _median(runs, key=lambda r: r["cold_s"])
    med["cold_all_s"] = [round(r["cold_s"], 3) for r in runs]
    return med


def run_cleanvision_median(files: list[str]) -> tuple[float, pd.DataFrame, str, float, list[float]]:
    """:func:`run_cleanvision` ``REPEATS`` times on ``files``: the median run, plus every run's wall seconds."""
    runs = [run_cleanvision(files) for _ in range(REPEATS)]
    wall, issues, version, cpu = _median(runs, key=lambda r: r[0])
    return wall, issues, version, cpu, [round(r[0], 3) for r in runs]


def warm_up(tmp: Path) -> None:
    """Both tools once on 300 generated images (a separate folder): imports and one-off set-up happen here."""
    root = tmp / "warm_up"
    _synthetic_folder(root, 300, seed=1)
    ws = Workspace(tmp / "ws_warm_up")
    ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
    audit.audit_dataset(ds, workspace=ws, config=IMAGE_ONLY)
    run_cleanvision(_images(root))


def _pr(truth: set[str], flagged: set[str]) -> dict:
    tp = len(truth & flagged)
    return {"recall": round(tp / len(truth), 3) if truth else None,
            "precision": round(tp / len(flagged), 3) if flagged else None, "flagged": len(flagged)}


def bench_demo(tmp: Path) -> dict:
    out_dir = tmp / "demo"
    info = demo.generate_demo(out_dir, seed=0)
    gt = pd.read_csv(info.ground_truth, keep_default_na=False)
    spec = DatasetSpec.from_dict(info.dataset_options())
    files = _images(out_dir / "images")
    n = len(files)
    lo = run_loupe_median(spec, tmp / "ws_img", enabled=IMAGE_DETECTORS)
    full = run_loupe(spec, Workspace(tmp / "ws_full"))
    try:
        run_cleanvision(files)
        cv_error, valid = None, files
    except Exception as exc:  # noqa: BLE001 - cleanvision 0.3.7 raises on the demo's corrupt files
        cv_error = f"{type(exc).__name__}: {exc}"[:200]
        valid = [f for f in files if f in set(lo["ds"].samples["path"].astype(str))]
    cv_s, cv_issues, version, cv_cpu, cv_all = run_cleanvision_median(valid)
    root = str(out_dir) + os.sep
    cv_rel = [p[len(root):] if p.startswith(root) else p for p in cv_issues.index.astype(str)]
    cv_issues = cv_issues.set_axis(cv_rel)
    recall = {}
    for ours, theirs in SHARED.items():
        truth = set(gt.loc[gt["problem"] == ours, "image"])
        iss = lo["result"].issues
        col = f"is_{theirs}_issue"
        recall[ours] = {
            "truth": len(truth),
            "loupe": _pr(truth, set(iss.loc[iss["issue"] == ours, "path"])),
            "cleanvision": _pr(truth, set(cv_issues.index[cv_issues[col]]) if col in cv_issues else set()),
        }
    fr = full["result"].issues
    truth = set(gt.loc[gt["problem"] == "flipped_label", "image"])
    t = time.perf_counter()
    net = audit.audit_dataset(full["ds"], workspace=Workspace(tmp / "ws_full"),
                              config={"enabled": ["label_issue"], "label_issue_features": "image+imagenet"})
    net_s = time.perf_counter() - t
    loupe_ips = n / lo["cold_s"]
    cv_ips = len(cv_issues) / cv_s
    return {
        "dataset": "demo", "n_images": n, "cleanvision_version": version,
        "loupe_cold_s": round(lo["cold_s"], 3), "loupe_load_s": round(lo["load_s"], 3),
        "loupe_audit_s": round(lo["audit_s"], 3), "loupe_warm_audit_s": round(lo["warm_s"], 3),
        "loupe_full_audit_cold_s": round(full["cold_s"], 3), "loupe_full_audit_warm_s": round(full["warm_s"], 3),
        "cleanvision_s": round(cv_s, 3), "cleanvision_error_on_all_files": cv_error,
        "loupe_cold_all_s": lo["cold_all_s"], "cleanvision_all_s": cv_all,
        "cleanvision_n_images": int(len(cv_issues)),
        "loupe_images_per_s": round(loupe_ips, 1), "loupe_warm_images_per_s": round(n / lo["warm_s"], 1),
        "cleanvision_images_per_s": round(cv_ips, 1), "ratio": round(loupe_ips / cv_ips, 2),
        "ratio_audit": round((n / lo["audit_s"]) / cv_ips, 2),
        "ratio_full_audit": round((n / full["cold_s"]) / cv_ips, 2),
        "loupe_cold_cpu_s": round(lo["cold_cpu_s"], 3), "loupe_warm_cpu_s": round(lo["warm_cpu_s"], 3),
        "loupe_full_audit_cold_cpu_s": round(full["cold_cpu_s"], 3), "cleanvision_cpu_s": round(cv_cpu, 3),
        "ratio_cpu": round((n / lo["cold_cpu_s"]) / (len(cv_issues) / cv_cpu), 2),
        "ratio_cpu_full_audit": round((n / full["cold_cpu_s"]) / (len(cv_issues) / cv_cpu), 2),
        "recall": recall,
        "label_issue": {"truth": len(truth), **_pr(truth, set(fr.loc[fr["issue"] == "label_issue", "path"]))},
        "label_issue_imagenet": {"features": net.source, "truth": len(truth), **_pr(truth, set(net.issues["path"])),
                                 "seconds": round(net_s, 3), "notes": list(net.notes)},
        "loupe_counts": full["result"].counts,
    }


def bench_flowers(tmp: Path) -> dict:
    root = DATASETS / "flowers12"
    files = _images(root)
    n = len(files)
    lo = run_loupe_median(DatasetSpec(str(root)), tmp / "ws_flowers", enabled=IMAGE_DETECTORS)
    full = run_loupe(DatasetSpec(str(root)), Workspace(tmp / "ws_flowers_full"))
    cv_s, cv_issues, version, cv_cpu, cv_all = run_cleanvision_median(files)
    loupe_ips, cv_ips = n / lo["cold_s"], n / cv_s
    ours = set(lo["ds"].samples.set_index("rel_path").loc[
        lo["result"].issues.loc[lo["result"].issues["issue"] == "near_duplicate", "path"], "path"])
    theirs = set(cv_issues.index[cv_issues["is_near_duplicates_issue"]].astype(str))
    cv_counts = {c[3:-6]: int(cv_issues[c].sum()) for c in cv_issues.columns if c.startswith("is_")}
    return {
        "dataset": "flowers12", "n_images": n, "cleanvision_version": version,
        "loupe_cold_s": round(lo["cold_s"], 3), "loupe_load_s": round(lo["load_s"], 3),
        "loupe_audit_s": round(lo["audit_s"], 3), "loupe_warm_audit_s": round(lo["warm_s"], 3),
        "loupe_full_audit_cold_s": round(full["cold_s"], 3), "cleanvision_s": round(cv_s, 3),
        "loupe_cold_all_s": lo["cold_all_s"], "cleanvision_all_s": cv_all,
        "loupe_images_per_s": round(loupe_ips, 1), "cleanvision_images_per_s": round(cv_ips, 1),
        "ratio": round(loupe_ips / cv_ips, 2), "ratio_audit": round((n / lo["audit_s"]) / cv_ips, 2),
        "ratio_full_audit": round((n / full["cold_s"]) / cv_ips, 2),
        "loupe_cold_cpu_s": round(lo["cold_cpu_s"], 3), "cleanvision_cpu_s": round(cv_cpu, 3),
        "ratio_cpu": round(cv_cpu / lo["cold_cpu_s"], 2),
        "ratio_cpu_full_audit": round(cv_cpu / full["cold_cpu_s"], 2),
        "near_duplicate_agreement": {"loupe": len(ours), "cleanvision": len(theirs), "both": len(ours & theirs)},
        "loupe_counts": lo["result"].counts, "cleanvision_counts": cv_counts,
    }


def bench_flowers_flipped(tmp: Path, *, fraction: float = 0.05, seed: int = 0) -> dict:
    """flowers12 as a table whose labels are 5 % flipped (seeded); label_issue precision / recall."""
    root = DATASETS / "flowers12"
    files = _images(root)
    rel = [str(Path(f).relative_to(root)) for f in files]
    true = [Path(r).parts[-2] for r in rel]
    split = [Path(r).parts[0] for r in rel]
    classes = sorted(set(true))
    rng = np.random.default_rng(seed)
    k = int(round(fraction * len(rel)))
    flip = set(rng.choice(len(rel), size=k, replace=False).tolist())
    given = []
    for i, t in enumerate(true):
        if i in flip:
            others = [c for c in classes if c != t]
            given.append(others[int(rng.integers(len(others)))])
        else:
            given.append(t)
    table = tmp / "flipped_labels.csv"
    pd.DataFrame({"image": rel, "label": given, "split": ["test" if s == "test" else "train" for s in split]}) \
        .to_csv(table, index=False)
    ws = Workspace(tmp / "ws_flipped")
    spec = DatasetSpec(str(root), labels=str(table), image_column="image", label_columns=("label",),
                       task="multiclass", split_column="split")
    ds = load_dataset(spec, workspace=ws)
    truth = {rel[i] for i in flip}
    true_of = dict(zip(rel, true))
    out = {"dataset": "flowers12_flipped", "n_images": len(rel), "flipped": k, "seed": seed}
    # image features (the default offline), then image + ImageNet MobileNetV2-0.35 features (96 px), the
    # second run twice: cold (TensorFlow import, backbone forward pass) and with the features cached
    for key, mode in (("label_issue", "image"), ("label_issue_imagenet", "image+imagenet")):
        t = time.perf_counter()
        res = audit.audit_dataset(ds, workspace=ws, config={"enabled": ["label_issue"], "label_issue_features": mode})
        seconds = time.perf_counter() - t
        li = res.issues
        found = set(li["path"])
        hits = li[li["path"].isin(truth)]
        right = float((hits["suggested_label"] == hits["path"].map(true_of)).mean()) if len(hits) else None
        out[key] = {"features": res.source, "truth": k, **_pr(truth, found),
                    "suggested_label_right": None if right is None else round(right, 3), "seconds": round(seconds, 3),
                    "notes": list(res.notes)}
    t = time.perf_counter()
    audit.audit_dataset(ds, workspace=ws, config={"enabled": ["label_issue"], "label_issue_features": "image+imagenet"})
    out["label_issue_imagenet"]["seconds_features_cached"] = round(time.perf_counter() - t, 3)
    return out


def _synthetic_folder(root: Path, n: int, *, seed: int = 0) -> None:
    """``n`` 64 x 64 PNGs in two class folders: noisy colour fields with a shape, all different."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    for i in range(n):
        cls = ("round", "square")[i % 2]
        (root / cls).mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 255, 3)
        arr = np.clip(base + rng.normal(0, 25, (64, 64, 3)), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr)
        d = ImageDraw.Draw(im)
        x, y = rng.integers(4, 36, 2)
        box = (int(x), int(y), int(x) + 24, int(y) + 24)
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (d.ellipse if cls == "round" else d.rectangle)(box, fill=colour)
        im.save(root / cls / f"{i:06d}.png")


def bench_memory(tmp: Path, sizes=(500, 1000, 2000, 4000)) -> dict:
    """Peak heap (tracemalloc: Python objects and numpy buffers, not the page cache of the memory-mapped
    image cache) of a full audit as the dataset grows, against the bytes of its cached pixels."""
    import gc
    import tracemalloc

    rows = []
    warm = tmp / "synthetic_warm"  # import every library the audit uses before measuring (imports allocate)
    _synthetic_folder(warm, 60)
    wws = Workspace(tmp / "ws_mem_warm")
    audit.audit_dataset(load_dataset(DatasetSpec(str(warm)), workspace=wws), workspace=wws, config=IMAGE_ONLY)
    for n in sizes:
        root = tmp / f"synthetic_{n}"
        _synthetic_folder(root, n)
        ws = Workspace(tmp / f"ws_mem_{n}")
        ds = load_dataset(DatasetSpec(str(root)), workspace=ws)
        gc.collect()
        tracemalloc.start()
        t = time.perf_counter()
        audit.audit_dataset(ds, workspace=ws, config=IMAGE_ONLY)  # every detector, label_issue included
        seconds = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        pixels = n * audit.AUDIT_SIZE * audit.AUDIT_SIZE * 3
        rows.append({"n_images": n, "peak_heap_mb": round(peak / 2**20, 1), "cached_pixels_mb": round(pixels / 2**20, 1),
                     "peak_over_pixels": round(peak / pixels, 3), "peak_kb_per_image": round(peak / n / 1024, 1),
                     "seconds": round(seconds, 2)})
        shutil.rmtree(root, ignore_errors=True)
    growth = rows[-1]["peak_heap_mb"] / max(rows[0]["peak_heap_mb"], 1e-9)
    marginal = (rows[-1]["peak_heap_mb"] - rows[0]["peak_heap_mb"]) * 1024 / (rows[-1]["n_images"] - rows[0]["n_images"])
    return {"dataset": "synthetic_memory", "rows": rows,
            "peak_growth": round(growth, 2), "images_growth": round(rows[-1]["n_images"] / rows[0]["n_images"], 2),
            "marginal_kb_per_image": round(marginal, 1),
            "pixel_kb_per_image": round(audit.AUDIT_SIZE * audit.AUDIT_SIZE * 3 / 1024, 1),
            "note": "peak heap of audit_dataset (all detectors) under tracemalloc, libraries imported first; "
                    "pixels stream from the cache memmap in chunks of 256; what grows with N is the per-image "
                    "features (thumbnails, HOG, colour histograms) the duplicate and label detectors compare"}


def main() -> int:
    try:
        import cleanvision  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "cleanvision is not installed: pip install -r bench/requirements-bench.txt"}))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench_audit_"))
    results = []
    try:
        warm_up(tmp)
        results.append(bench_demo(tmp))
        if (DATASETS / "flowers12").exists():
            results.append(bench_flowers(tmp))
            results.append(bench_flowers_flipped(tmp))
        else:
            results.append({"dataset": "flowers12", "skipped": f"{DATASETS / 'flowers12'} is absent"})
        results.append(bench_memory(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        print(json.dumps(r))
    combined = {r["dataset"]: r for r in results}
    ratios = [r["ratio"] for r in results if "ratio" in r]
    combined["ratio"] = min(ratios) if ratios else None
    cpu = [r["ratio_cpu"] for r in results if "ratio_cpu" in r]
    combined["ratio_cpu"] = min(cpu) if cpu else None
    stage = [r["ratio_audit"] for r in results if "ratio_audit" in r]
    combined["ratio_audit"] = min(stage) if stage else None
    print(json.dumps(combined))
    return 0


if __name__ == "__main__":
    sys.exit(main())
