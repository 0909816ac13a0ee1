"""Warm single-image prediction: ``core.predict.Predictor`` vs the raw Keras model.

Two models, each loaded once and warmed up, then timed (ms):

* ``demo_cnn32``: the tiny CNN trained on the demo at 32 px (15 epochs, as the test fixtures),
  with its embeddings computed and an out-of-distribution threshold saved, so the Predictor
  also scores OOD (Mahalanobis on the embedding) in its single forward pass;
* ``mobilenet_v2_128``: MobileNetV2-0.35 at 128 px (random weights: timing only), no OOD.

Side by side, for one image:

* ``model_predict_ms``: ``model.predict(x, verbose=0)`` on the already decoded, resized array
  (the baseline named in the issue);
* ``model_call_ms``: ``model(x, training=False)`` (an eager call);
* ``model_predict_on_batch_ms``: ``model.predict_on_batch(x)`` (the compiled graph, no tf.data:
  the fastest raw Keras call, and what the Predictor uses inside);
* ``predictor_image_ms``: ``Predictor.predict_images([array])`` (decisions, OOD, the table);
* ``predictor_file_ms``: ``Predictor.predict_paths([png])`` (plus decoding and resizing the file);
* ratios of the Predictor timings to ``predict_on_batch`` (the fair baseline: the Predictor calls
  it inside), ``model(x)`` and ``model.predict`` (which pays for building a tf.data pipeline on
  every call).

Each round times every call ``REPEAT`` (50) times, interleaved, and takes the medians; the
ratios are computed within a round; ``common.REPEATS`` (3) rounds give median and min-max.

Then the cost of test-time flip averaging (the default for models trained on mirrored images):
the same MobileNetV2 run with ``flip_average`` on and off in ``preprocessing.json``, timed on one
image (``predict_images``) and on a batch of 256 (``Predictor.probabilities``), interleaved.

Usage: ``python bench/bench_predict.py``. Prints one JSON object per model, then the combined
object as the last stdout line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from bench.common import REPEATS, repeated  # noqa: E402
from core import runs  # noqa: E402
from core.predict import Predictor  # noqa: E402
from core.workspace import atomic_write_json  # noqa: E402

REPEAT = 50


def _interleaved_medians(fns: dict, repeat: int = REPEAT) -> dict:
    """Median wall time (ms) of each callable, timed in interleaved rounds (a busy machine slows all alike)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: 1000 * statistics.median(ts) for name, ts in times.items()}


def _demo_run(tmp: Path) -> tuple[Path, Path]:
    from core import demo, embeddings, jobs
    from core.training import recommended_config
    from core.workspace import home

    ws = home(tmp / "ws").ensure()
    demo.ensure_demo_dataset(ws)
    ds_id = ws.list_datasets()[0]["dataset_id"]
    cfg = recommended_config(model="cnn", image_size=32, epochs=15, batch_size=32, filters=16, embedding_dim=16,
                             patience=0, log_every=5, augmentation=False, dataset_id=ds_id)
    out = ws.runs_dir / "bench-cnn32"
    result = jobs.run_worker(cfg, out=out, workspace=ws)
    if result.state != "done":
        raise RuntimeError(f"training the bench run failed: {result.state}")
    emb = embeddings.compute_embeddings(out, workspace=ws)
    scores = embeddings.ood_scores(out, emb.vectors[emb.split_mask("test")], workspace=ws)
    embeddings.save_ood_threshold(out, method="mahalanobis", threshold=float(np.quantile(scores, 0.95)), fpr=0.05)
    test = runs.read_predictions(out, split="test")
    return out, Path(test.paths[0])


def _mobilenet_run(tmp: Path) -> tuple[Path, Path]:
    from PIL import Image

    from core.models import build_model, save_model

    out = tmp / "mobilenet"
    out.mkdir()
    model = build_model(5, backbone="mobilenet_v2", image_size=128, weights=None, augmentation=False)
    save_model(model, out / runs.MODEL)
    runs.write_labels(out, {"task": "multiclass", "classes": list("abcde")})
    atomic_write_json(out / runs.PREPROCESSING, {"image_size": 128, "input_range": [0, 255]})
    png = tmp / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(png)
    return out, png


def bench(name: str, run_dir: Path, image: Path) -> dict:
    from core.images import load_image, resize_image

    t = time.perf_counter()
    predictor = Predictor.load(run_dir)
    load_s = time.perf_counter() - t
    model = predictor.model
    arr = resize_image(load_image(image), predictor.image_size)
    x = arr[None].astype(np.float32)
    calls = {
        "model_predict_ms": lambda: model.predict(x, verbose=0),
        "model_call_ms": lambda: model([x], training=False),
        "model_predict_on_batch_ms": lambda: model.predict_on_batch(x),
        "predictor_image_ms": lambda: predictor.predict_images([arr]),
        "predictor_file_ms": lambda: predictor.predict_paths([image]),
    }
    res = {"model": name, "image_size": predictor.image_size, "ood": predictor.ood_note is None,
           "load_s": round(load_s, 3)}
    res.update(repeated(lambda: _interleaved_medians(calls), ratios={
        "ratio_image_vs_predict_on_batch": ("predictor_image_ms", "model_predict_on_batch_ms"),
        "ratio_file_vs_predict_on_batch": ("predictor_file_ms", "model_predict_on_batch_ms"),
        "ratio_image_vs_call": ("predictor_image_ms", "model_call_ms"),
        "ratio_image_vs_predict": ("predictor_image_ms", "model_predict_ms"),
    }, digits=3))
    return res


def flip_cost(run_dir: Path, image: Path) -> dict:
    """One image and a batch of 256: the same model predicting with and without flip averaging."""
    from core.images import load_image, resize_image

    flip_dir = run_dir.parent / f"{run_dir.name}_flip"
    shutil.copytree(run_dir, flip_dir)
    pre = json.loads((run_dir / runs.PREPROCESSING).read_text())
    atomic_write_json(flip_dir / runs.PREPROCESSING, {**pre, runs.FLIP_AVERAGE: True})
    plain, flip = Predictor.load(run_dir), Predictor.load(flip_dir)
    assert flip.flip_average and not plain.flip_average
    arr = resize_image(load_image(image), plain.image_size)
    batch = np.random.default_rng(0).integers(0, 256, (256, *arr.shape), dtype=np.uint8)
    for p in (plain, flip):  # warm: every batch shape traced once
        p.probabilities(batch)
        p.predict_images([arr])

    def measure() -> dict:
        out = {}
        for _ in range(3):  # interleaved, best of 3 per round
            for key, fn in (("plain_batch256_s", lambda: plain.probabilities(batch)),
                            ("flip_batch256_s", lambda: flip.probabilities(batch)),
                            ("plain_image_ms", lambda: plain.predict_images([arr])),
                            ("flip_image_ms", lambda: flip.predict_images([arr]))):
                t = time.perf_counter()
                fn()
                dt = (time.perf_counter() - t) * (1000 if key.endswith("_ms") else 1)
                out[key] = min(out.get(key, dt), dt)
        return out

    return {"model": "mobilenet_v2_128", **repeated(measure, ratios={
        "ratio_batch": ("flip_batch256_s", "plain_batch256_s"), "ratio_image": ("flip_image_ms", "plain_image_ms")},
        digits=3)}


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        results = []
        for name, make in (("demo_cnn32", _demo_run), ("mobilenet_v2_128", _mobilenet_run)):
            run_dir, image = make(tmp)
            r = bench(name, run_dir, image)
            print(json.dumps(r), flush=True)
            results.append(r)
        flips = flip_cost(run_dir, image)  # the MobileNetV2 run, made last
        print(json.dumps(flips), flush=True)
        print(json.dumps({"bench": "predict", "calls_per_round": REPEAT, "rounds": REPEATS, "cpus": os.cpu_count(),
                          "results": results, "flip_average": flips}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
