"""The audit side by side with cleanvision: throughput, recall on shared issue types, label-issue quality.

Each part runs in fresh temporary workspaces, in this process:

1. ``demo``: the generated demo (1,046 PNG crops with a ground truth of injected problems).
   Throughput of Loupe's audit and of cleanvision's ``Imagelab.find_issues`` on the same
   files, and the recall / precision of both on the issue types they share (``uniform`` ~
   cleanvision ``low_information``, ``duplicate`` ~ ``exact_duplicates``, ``near_duplicate``
   ~ ``near_duplicates``). Loupe's thresholds were tuned on this demo: its recall here is
   not evidence about other data (``near_duplicate_variants`` is). cleanvision 0.3.7 raises
   ``UnidentifiedImageError`` on the demo's 4 corrupt files, so it is given the 1,042
   decodable ones (the error is recorded in the output).
2. ``flowers12`` (960 JPEG photos): the same throughput comparison on natural images.
3. ``flowers12_equal_work``: the same photos shrunk beforehand to 96 px PNGs, so both tools
   decode the same pixels (see :func:`bench_equal_work`).
4. ``near_duplicate_variants``: near-duplicate recall and precision of both tools on
   flowers12, miml_scene and cub100 (held out), each plus edited copies of its photos
   (see :func:`bench_variants`).
5. ``label_flips``: flowers12 and cub100 with 5 % of the labels flipped to another class at random,
   3 seeds (see :func:`bench_label_flips`); precision, recall and F1 of ``label_issue`` (quick
   out-of-fold classifier, no run) on image + pretrained ImageNet features (MobileNetV2-0.35 at
   96 px from a temporary copy of ../shared/weights/keras; the default config), with the
   previous filter, and on image features alone, against cleanlab's default ``find_label_issues``
   on a 5-fold linear probe of the same ImageNet features, with a paired-bootstrap interval.
6. ``synthetic_memory``: peak heap (tracemalloc) of a full audit on 500 / 1,000 / 2,000 /
   4,000 generated images, against the bytes of their cached pixels: pixels stream, they
   are never all in RAM.

Throughput, parts 1-3 (:func:`paired_runs`): ``REPEATS`` (3) times, Loupe cold (a fresh
workspace: load, decoding every file into the cache, then the audit) and then cleanvision on
the same files, back to back; each ratio is computed within its repeat, and the JSON gives
median and min-max. ``ratio`` = Loupe images/s over cleanvision images/s, wall clock, cold.
Loupe decodes JPEGs at reduced scale and analyses 96 px copies while cleanvision reads the
full files: part 3 is the row at equal work. ``ratio_audit``: the audit alone on the loaded
dataset (what the Clean page's "Run audit" costs once the Data page has loaded it) against
cleanvision *including* its decoding: less work by design, not faster code. ``ratio_cpu``
compares images per CPU-second (this process's threads plus finished child processes).
Before any timing, both tools run once on a separate folder of 300 generated images
(``warm_up``), so neither pays its one-off imports. Loupe runs two decoding worker processes
(its default from 256 images on Linux) and two threads for its image statistics; cleanvision
its default ``n_jobs`` (all cores, in worker processes).

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

from bench.common import REPEATS, spread  # noqa: E402
from core import audit, demo  # noqa: E402
from core.datasets import DatasetSpec, load_dataset  # noqa: E402
from core.images import IMAGE_EXTENSIONS  # noqa: E402
from core.workspace import Workspace  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
#: Loupe's detectors comparable to cleanvision's default checks (no label checks).
IMAGE_DETECTORS = ("corrupt", "uniform", "duplicate", "near_duplicate", "dark", "bright", "blurry", "odd_size")
SHARED = {"uniform": "low_information", "duplicate": "exact_duplicates", "near_duplicate": "near_duplicates"}
#: Throughput parts run label_issue (in the "full" audits) on image features and near duplicates on pixels
#: only: no TensorFlow, the kind of checks cleanvision runs (the ImageNet-feature variants are timed in
#: ``near_duplicate_variants`` and ``flowers12_flipped``).
IMAGE_ONLY = {"label_issue_features": "image", "near_duplicate_features": "pixels"}
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


def paired_runs(spec: DatasetSpec, files: list[str], root: Path, *, enabled=tuple(audit.DETECTORS)) -> dict:
    """Loupe cold (fresh workspace under ``root``) then cleanvision on ``files``, ``REPEATS`` times, back to back.

    Every ratio is computed within one repeat (both tools timed on the same machine state), then
    summarised as median and min-max; ``loupe`` is Loupe's median-cold run (its result and
    dataset), ``cleanvision`` the issues table of cleanvision's last run.
    """
    pairs = []
    for k in range(REPEATS):
        lo = run_loupe(spec, Workspace(root / f"run{k}"), enabled=enabled)
        cv_s, cv_issues, version, cv_cpu = run_cleanvision(files)
        pairs.append((lo, cv_s, cv_issues, version, cv_cpu))
    n, n_cv = len(files), len(pairs[0][2])
    rows = [{"loupe_cold_s": lo["cold_s"], "loupe_load_s": lo["load_s"], "loupe_audit_s": lo["audit_s"],
             "loupe_warm_audit_s": lo["warm_s"], "cleanvision_s": cv_s,
             "loupe_cold_cpu_s": lo["cold_cpu_s"], "cleanvision_cpu_s": cv_cpu,
             "ratio": (n / lo["cold_s"]) / (n_cv / cv_s), "ratio_audit": (n / lo["audit_s"]) / (n_cv / cv_s),
             "ratio_cpu": (n / lo["cold_cpu_s"]) / (n_cv / cv_cpu)} for lo, cv_s, _, _, cv_cpu in pairs]
    out = {key: spread([r[key] for r in rows], 3) for key in rows[0]}
    med = sorted(pairs, key=lambda p: p[0]["cold_s"])[len(pairs) // 2][0]
    return {"figures": out, "loupe": med, "cleanvision": pairs[-1][2], "cleanvision_version": pairs[-1][3],
            "n_images": n, "cleanvision_n_images": n_cv}


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


def _recall_rows(gt: pd.DataFrame, issues: pd.DataFrame, cv_issues: pd.DataFrame) -> dict:
    recall = {}
    for ours, theirs in SHARED.items():
        truth = set(gt.loc[gt["problem"] == ours, "image"])
        col = f"is_{theirs}_issue"
        recall[ours] = {
            "truth": len(truth),
            "loupe": _pr(truth, set(issues.loc[issues["issue"] == ours, "path"])),
            "cleanvision": _pr(truth, set(cv_issues.index[cv_issues[col]]) if col in cv_issues else set()),
        }
    return recall


def bench_demo(tmp: Path) -> dict:
    out_dir = tmp / "demo"
    info = demo.generate_demo(out_dir, seed=0)
    gt = pd.read_csv(info.ground_truth, keep_default_na=False)
    spec = DatasetSpec.from_dict(info.dataset_options())
    files = _images(out_dir / "images")
    try:
        run_cleanvision(files)
        cv_error, valid = None, files
    except Exception as exc:  # noqa: BLE001 - cleanvision 0.3.7 raises on the demo's corrupt files
        cv_error = f"{type(exc).__name__}: {exc}"[:200]
        ok = set(load_dataset(spec, workspace=Workspace(tmp / "ws_probe")).samples["path"].astype(str))
        valid = [f for f in files if f in ok]
    pr = paired_runs(spec, valid, tmp / "ws_img", enabled=IMAGE_DETECTORS)
    full = run_loupe(spec, Workspace(tmp / "ws_full"))
    root = str(out_dir) + os.sep
    cv_issues = pr["cleanvision"]
    cv_issues = cv_issues.set_axis([p[len(root):] if p.startswith(root) else p for p in cv_issues.index.astype(str)])
    fr = full["result"].issues
    truth = set(gt.loc[gt["problem"] == "flipped_label", "image"])
    t = time.perf_counter()
    net = audit.audit_dataset(full["ds"], workspace=Workspace(tmp / "ws_full"),
                              config={"enabled": ["label_issue"], "label_issue_features": "image+imagenet"})
    net_s = time.perf_counter() - t
    nd = audit.audit_dataset(full["ds"], workspace=Workspace(tmp / "ws_full"),
                             config={"enabled": ["near_duplicate"], "near_duplicate_features": "pixels+imagenet"})
    nd_truth = set(gt.loc[gt["problem"] == "near_duplicate", "image"])
    return {
        "dataset": "demo",
        "near_duplicate_imagenet": {"truth": len(nd_truth), **_pr(nd_truth, set(nd.issues["path"]))}, "n_images": len(files), "cleanvision_version": pr["cleanvision_version"],
        "cleanvision_error_on_all_files": cv_error, "cleanvision_n_images": pr["cleanvision_n_images"],
        **pr["figures"],
        "recall": _recall_rows(gt, pr["loupe"]["result"].issues, cv_issues),
        "recall_note": "the demo's own injected problems; Loupe's thresholds were tuned on this demo",
        "label_issue": {"truth": len(truth), **_pr(truth, set(fr.loc[fr["issue"] == "label_issue", "path"]))},
        "label_issue_imagenet": {"features": net.source, "truth": len(truth), **_pr(truth, set(net.issues["path"])),
                                 "seconds": round(net_s, 3), "notes": list(net.notes)},
        "loupe_counts": full["result"].counts,
    }


def bench_flowers(tmp: Path) -> dict:
    root = DATASETS / "flowers12"
    files = _images(root)
    pr = paired_runs(DatasetSpec(str(root)), files, tmp / "ws_flowers", enabled=IMAGE_DETECTORS)
    lo, cv_issues = pr["loupe"], pr["cleanvision"]
    ours = set(lo["ds"].samples.set_index("rel_path").loc[
        lo["result"].issues.loc[lo["result"].issues["issue"] == "near_duplicate", "path"], "path"])
    theirs = set(cv_issues.index[cv_issues["is_near_duplicates_issue"]].astype(str))
    cv_counts = {c[3:-6]: int(cv_issues[c].sum()) for c in cv_issues.columns if c.startswith("is_")}
    return {
        "dataset": "flowers12", "n_images": len(files), "cleanvision_version": pr["cleanvision_version"],
        **pr["figures"],
        "near_duplicate_agreement": {"loupe": len(ours), "cleanvision": len(theirs), "both": len(ours & theirs)},
        "loupe_counts": lo["result"].counts, "cleanvision_counts": cv_counts,
    }


def bench_equal_work(tmp: Path) -> dict:
    """flowers12 shrunk beforehand to PNGs of ``audit.AUDIT_SIZE`` px (longest side): both tools decode the same pixels.

    Cold, Loupe decodes JPEGs at reduced scale (libjpeg's draft mode) and analyses 96 px copies,
    while cleanvision decodes full files: less work by design. On these files neither shortcut
    applies (PNG has no draft mode, and the files are already that small), so the ratio is
    the speed of the code at equal work.
    """
    from PIL import Image

    src = DATASETS / "flowers12"
    root = tmp / "flowers12_small"
    for f in _images(src):
        rel = Path(f).relative_to(src).with_suffix(".png")
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(f) as im:
            im = im.convert("RGB")
            im.thumbnail((audit.AUDIT_SIZE, audit.AUDIT_SIZE))
            im.save(root / rel)
    files = _images(root)
    pr = paired_runs(DatasetSpec(str(root)), files, tmp / "ws_small", enabled=IMAGE_DETECTORS)
    return {"dataset": "flowers12_equal_work", "n_images": len(files), "side_px": audit.AUDIT_SIZE,
            "cleanvision_version": pr["cleanvision_version"], **pr["figures"]}


def _variant(im, rng: np.random.Generator):
    """A near duplicate as people make them: crop 2-8 % per side, resize 0.7-1.0, rotate <= 3 degrees,
    brightness +-10 %, JPEG quality 60-90."""
    from PIL import Image, ImageEnhance

    w, h = im.size
    c = rng.uniform(0.02, 0.08, 4)
    im = im.crop((int(c[0] * w), int(c[1] * h), w - int(c[2] * w), h - int(c[3] * h)))
    s = rng.uniform(0.7, 1.0)
    im = im.resize((max(8, int(im.width * s)), max(8, int(im.height * s))), Image.LANCZOS)
    im = im.rotate(float(rng.uniform(-3, 3)), resample=Image.BILINEAR, expand=False, fillcolor=(128, 128, 128))
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.9, 1.1)))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(rng.integers(60, 91)))
    return buf.getvalue()


def _pairs(groups) -> set[frozenset]:
    return {frozenset((a, b)) for g in groups for i, a in enumerate(g) for b in g[i + 1:]}


#: Real photo sets for the near-duplicate check: the threshold was chosen on the first two, cub100 is held out.
VARIANT_SETS = {"flowers12": 100, "miml_scene": 150, "cub100": 300}


def bench_variants(tmp: Path, name: str, n_variants: int, *, seed: int = 0) -> dict:
    """Near-duplicate recall on real photos: a dataset's images plus ``n_variants`` edited copies of random ones.

    A copy is found when it lands in one near- or exact-duplicate group with its original
    (Loupe: the ``group`` column; cleanvision: ``info["near_duplicates"]["sets"]`` and
    ``["exact_duplicates"]["sets"]``). Precision is over the flagged pairs that hold an edited
    copy: a copy paired with anything but its original (or a photo that is pixel-for-pixel a
    duplicate of its original: flowers12 holds 59 such pairs) is a false alarm; pairs of two
    originals are left out, since nobody labelled which of those are real duplicates. Loupe
    runs with ``near_duplicate_features=pixels+imagenet`` (ImageNet features, verified by
    keypoints) and with its default, ``pixels``.
    """
    from PIL import Image

    src = DATASETS / name
    root = tmp / f"{name}_variants"
    originals = _images(src)
    rng = np.random.default_rng(seed)
    rel = [str(Path(f).relative_to(src)) for f in originals]
    for r in rel:
        (root / r).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / r, root / r)
    truth = set()
    for i in rng.choice(len(rel), size=n_variants, replace=False):
        copy = str(Path(rel[i]).with_name(f"{Path(rel[i]).stem}_variant.jpg"))
        with Image.open(root / rel[i]) as im:
            (root / copy).write_bytes(_variant(im.convert("RGB"), rng))
        truth.add(frozenset((rel[i], copy)))
    files = _images(root)
    table = tmp / f"{name}_variants.csv"
    pd.DataFrame({"image": [str(Path(f).relative_to(root)) for f in files],
                  "label": [("a", "b")[k % 2] for k in range(len(files))]}).to_csv(table, index=False)
    spec = DatasetSpec(str(root), labels=str(table), image_column="image", label_columns=("label",), task="multiclass")

    def loupe(features: str) -> tuple[set, float]:
        ws = Workspace(tmp / f"ws_variants_{name}_{features}")
        ds = load_dataset(spec, workspace=ws)
        t = time.perf_counter()
        res = audit.audit_dataset(ds, workspace=ws, config={"enabled": ["duplicate", "near_duplicate"],
                                                            "near_duplicate_features": features})
        seconds = time.perf_counter() - t
        iss = res.issues
        return _pairs([list(g["path"]) for _, g in iss[iss["group"] != ""].groupby("group")]), seconds

    from cleanvision import Imagelab

    logging.disable(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=files, verbose=False)
        lab.find_issues({"near_duplicates": {}, "exact_duplicates": {}}, verbose=False)
    logging.disable(logging.NOTSET)
    prefix = str(root) + os.sep
    cv_pairs = _pairs([[p[len(prefix):] for p in g] for key in ("near_duplicates", "exact_duplicates")
                       for g in lab.info.get(key, {}).get("sets", [])])

    auto, auto_s = loupe("pixels+imagenet")
    pixels, pixels_s = loupe("pixels")
    # the same photo twice among the originals (identical or nearly identical pixels): a copy of one is a copy of both
    same = _pairs([[a, b] for a, b in (tuple(p) for p in pixels) if "_variant" not in a + b])
    original = {x: y for p in truth for x, y in (tuple(p), tuple(p)[::-1]) if "_variant" in x}

    def right(pair: frozenset) -> bool:
        a, b = tuple(pair)
        copy, other = (a, b) if "_variant" in a else (b, a)
        return other == original.get(copy) or frozenset((other, original.get(copy))) in same

    def score(found: set) -> dict:
        tp = len(found & truth)
        judged = [p for p in found if any("_variant" in x for x in p)]  # pairs of two originals: truth unknown
        good = sum(map(right, judged))
        return {"recall": round(tp / len(truth), 3), "precision": round(good / len(judged), 3) if judged else None,
                "pairs_with_a_copy": len(judged), "pairs_flagged": len(found)}

    return {"dataset": name, "n_images": len(files), "variants": n_variants, "seed": seed,
            "held_out": name == "cub100",
            "edits": "crop 2-8 % per side, resize 0.7-1.0, rotate <= 3 deg, brightness +-10 %, JPEG q60-90",
            "loupe": {**score(auto), "audit_s": round(auto_s, 2)},
            "loupe_pixels": {**score(pixels), "audit_s": round(pixels_s, 2)}, "cleanvision": score(cv_pairs)}


#: Real photo sets for label_issue with flipped labels -> the labels.csv column of the true label (None: the
#: class folder). flowers12 is where the ``auto`` filter was looked at first; cub100 (100 fine-grained species)
#: is the set the issue asked to be judged on.
FLIP_SETS = {"flowers12": None, "cub100": "species"}
#: Seeds of the flipped labels (each seed flips other images, to other labels).
FLIP_SEEDS = (0, 1, 2)


def _prf(truth: np.ndarray, flagged: np.ndarray) -> dict:
    """:func:`_pr` of boolean masks over the same images, plus F1."""
    tp = int((truth & flagged).sum())
    return {**_pr(set(np.flatnonzero(truth)), set(np.flatnonzero(flagged))),
            "f1": round(2 * tp / int(truth.sum() + flagged.sum()), 3) if flagged.any() else 0.0}


def paired_f1_bootstrap(truth: np.ndarray, a: np.ndarray, b: np.ndarray, *, resamples: int = 2000,
                        seed: int = 0) -> dict:
    """F1(a) - F1(b) over the same images, with its 95 % paired-bootstrap interval (images resampled)."""
    rng = np.random.default_rng(seed)
    n = len(truth)
    w = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # (B, N) image weights

    def f1(flag):
        tp, fl, tr = w @ (flag & truth), w @ flag, w @ truth
        return np.where(fl + tr > 0, 2 * tp / np.maximum(fl + tr, 1e-12), 0.0)

    d = f1(a) - f1(b)
    point = 2 * (a & truth).sum() / (a.sum() + truth.sum()) - 2 * (b & truth).sum() / (b.sum() + truth.sum())
    lo, hi = np.percentile(d, [2.5, 97.5])
    return {"diff": round(float(point), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "significant": bool(lo > 0 or hi < 0)}


def _probe_cleanlab(features: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """The practitioner's baseline: cleanlab's default ``find_label_issues`` on 5-fold out-of-fold
    probabilities of a standardized logistic regression (scikit-learn defaults) on the frozen features."""
    import warnings

    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs = cross_val_predict(clf, features, y, cv=StratifiedKFold(5, shuffle=True, random_state=seed),
                                  method="predict_proba")
        found = find_label_issues(y, probs, n_jobs=1)
    return np.asarray(found, bool)


def bench_label_flips(tmp: Path, name: str, *, fraction: float = 0.05, seeds=FLIP_SEEDS) -> dict:
    """``name`` with ``fraction`` of its labels flipped to another class at random, per seed: ``label_issue``
    (default config, image + ImageNet features) against cleanlab on a 5-fold linear probe of the same ImageNet
    features, with the paired-bootstrap interval of the F1 difference; also Loupe with the previous default
    filter (``both``) and with image features alone."""
    from core import embeddings

    root = DATASETS / name
    column = FLIP_SETS[name]
    if column:
        table = pd.read_csv(root / "labels.csv")
        rel, true = table["image"].astype(str).tolist(), table[column].astype(str).tolist()
    else:
        rel = [str(Path(f).relative_to(root)) for f in _images(root)]
        true = [Path(r).parts[-2] for r in rel]
    classes = sorted(set(true))
    ws = Workspace(tmp / f"ws_flips_{name}")
    out = {"dataset": name, "n_images": len(rel), "classes": len(classes), "fraction": fraction, "seeds": []}
    for seed in seeds:
        rng = np.random.default_rng(seed)
        flip = set(rng.choice(len(rel), size=int(round(fraction * len(rel))), replace=False).tolist())
        given = [([c for c in classes if c != t][int(rng.integers(len(classes) - 1))] if i in flip else t)
                 for i, t in enumerate(true)]
        path = tmp / f"flipped_{name}_{seed}.csv"
        pd.DataFrame({"image": rel, "label": given}).to_csv(path, index=False)
        ds = load_dataset(DatasetSpec(str(root), labels=str(path), image_column="image", label_columns=("label",),
                                      task="multiclass"), workspace=ws)
        samples = ds.samples.reset_index(drop=True)
        rel_of = samples["rel_path"].astype(str).to_numpy()
        truth = np.isin(rel_of, [rel[i] for i in flip])
        true_of = dict(zip(rel, true))
        row: dict[str, Any] = {"seed": seed, "flipped": int(truth.sum())}
        for key, cfg in (("loupe", {"label_issue_features": "image+imagenet"}),
                         ("loupe_filter_both", {"label_issue_features": "image+imagenet", "label_issue_filter": "both"}),
                         ("loupe_image_features", {"label_issue_features": "image"})):
            t = time.perf_counter()
            res = audit.audit_dataset(ds, workspace=ws, config={"enabled": ["label_issue"], **cfg})
            seconds = time.perf_counter() - t
            li = res.issues.set_index("path")
            flagged = np.isin(rel_of, li.index.astype(str))
            hits = li.loc[[r for r in rel_of[flagged & truth]]]
            right = float((hits["suggested_label"] == pd.Series(hits.index, index=hits.index).map(true_of)).mean())
            row[key] = {"features": res.source, **_prf(truth, flagged), "seconds": round(seconds, 2),
                        "suggested_label_right": round(right, 3) if len(hits) else None, "notes": list(res.notes)}
            row[key]["_flagged"] = flagged
        emb = embeddings.backbone_embeddings(ws, ds.dataset_id)  # cached by the audit above
        feats = emb.vectors[pd.Index(emb.sample_ids.astype(str)).get_indexer(samples["sample_id"].astype(str))]
        y = pd.Index(classes).get_indexer(samples["label"].astype(str))
        t = time.perf_counter()
        base = _probe_cleanlab(feats, y, seed)
        row["probe_cleanlab"] = {**_prf(truth, base), "seconds": round(time.perf_counter() - t, 2)}
        row["loupe_vs_probe_cleanlab"] = paired_f1_bootstrap(truth, row["loupe"]["_flagged"], base, seed=seed)
        row["loupe_vs_filter_both"] = paired_f1_bootstrap(truth, row["loupe"]["_flagged"],
                                                          row["loupe_filter_both"]["_flagged"], seed=seed)
        for key in ("loupe", "loupe_filter_both", "loupe_image_features"):
            del row[key]["_flagged"]
        out["seeds"].append(row)
        print(json.dumps({"label_flips": name, **row}), file=sys.stderr, flush=True)
    for key in ("loupe", "loupe_filter_both", "loupe_image_features", "probe_cleanlab"):
        out[key] = {m: spread([r[key][m] for r in out["seeds"]], 3) for m in ("precision", "recall", "f1")}
    out["loupe"]["seconds"] = spread([r["loupe"]["seconds"] for r in out["seeds"]], 2)
    out["loupe"]["suggested_label_right"] = spread([r["loupe"]["suggested_label_right"] or 0 for r in out["seeds"]], 3)
    return out


def bench_multilabel_flipped(tmp: Path, *, fraction: float = 0.05, seed: int = 0) -> dict:
    """miml_scene with one label bit flipped on 5 % of the images (seeded): multi-label label_issue P / R."""
    src = DATASETS / "miml_scene"
    table = pd.read_csv(src / "labels.csv")
    cols = [c for c in table.columns if c != "image"]
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(table), size=int(round(fraction * len(table))), replace=False)
    flipped = table.copy()
    which = {}
    for r in rows:
        c = cols[int(rng.integers(len(cols)))]
        flipped.loc[r, c] = 1 - int(flipped.loc[r, c])
        which[str(table.loc[r, "image"])] = c
    path = tmp / "miml_flipped.csv"
    flipped.to_csv(path, index=False)
    spec = DatasetSpec(str(src), labels=str(path), image_column="image", label_columns=tuple(cols), task="multilabel")
    out = {"dataset": "miml_scene_flipped", "n_images": len(table), "flipped": len(rows), "seed": seed}
    for key, mode in (("label_issue", "image"), ("label_issue_imagenet", "image+imagenet")):
        ws = Workspace(tmp / f"ws_miml_flipped_{mode}")
        ds = load_dataset(spec, workspace=ws)
        t = time.perf_counter()
        res = audit.audit_dataset(ds, workspace=ws, config={"enabled": ["label_issue"], "label_issue_features": mode})
        li = res.issues
        hits = li[li["path"].isin(which)]
        top = li.sort_values("score", ascending=False, kind="stable").head(len(which))
        out[key] = {"features": res.source, **_pr(set(which), set(li["path"])),
                    "precision_top_k": round(float(top["path"].isin(which).mean()), 3), "k": len(which),
                    "right_label_named": round(float((hits["label_column"] == hits["path"].map(which)).mean()), 3)
                    if len(hits) else None, "seconds": round(time.perf_counter() - t, 2), "notes": list(res.notes)}
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
    """:func:`memory_once` ``REPEATS`` times (fresh folders each time): per size, the peak heap's median and min-max."""
    runs = [memory_once(tmp / f"memory{k}", sizes) for k in range(REPEATS)]
    out = runs[0]
    for i, row in enumerate(out["rows"]):
        for key in ("peak_heap_mb", "peak_kb_per_image", "seconds"):
            row[key] = spread([r["rows"][i][key] for r in runs], 2)
    for key in ("peak_growth", "marginal_kb_per_image"):
        out[key] = spread([r[key] for r in runs], 2)
    return out


def memory_once(tmp: Path, sizes) -> dict:
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
            results.append(bench_equal_work(tmp))
            variants = [bench_variants(tmp, name, n) for name, n in VARIANT_SETS.items() if (DATASETS / name).exists()]
            results.append({"dataset": "near_duplicate_variants", "sets": variants})
            results.append({"dataset": "label_flips",
                            "sets": [bench_label_flips(tmp, name) for name in FLIP_SETS if (DATASETS / name).exists()]})
        if (DATASETS / "miml_scene").exists():
            results.append(bench_multilabel_flipped(tmp))
        else:
            results.append({"dataset": "flowers12", "skipped": f"{DATASETS / 'flowers12'} is absent"})
        results.append(bench_memory(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for r in results:
        print(json.dumps(r))
    combined = {"bench": "audit", **{r["dataset"]: r for r in results}}
    print(json.dumps(combined))
    return 0


if __name__ == "__main__":
    sys.exit(main())
