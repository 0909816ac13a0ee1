"""core.engines: on Ray, predict / embed / ood / audit give the local engine's results, and survive an actor
killed mid-batch.

A real 2-CPU Ray head is started for this module (``ray start --head``) and the CLI joins it through
``RAY_ADDRESS``, as a user's job would join a cluster: Loupe's ``core`` package travels to the actors
with the job (``runtime_env``), nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core import engines, predict

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address(tmp_path_factory):
    port = _free_port()
    temp = tmp_path_factory.mktemp("ray")
    # a throwaway cluster on loopback: Ray's token authentication off, for the head and every client
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    up = subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                         "--disable-usage-stats", f"--temp-dir={temp}"], capture_output=True, text=True, env=env,
                        timeout=180)
    assert up.returncode == 0, up.stdout[-2000:] + up.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(RAY), "stop", "--force"], capture_output=True, env=env, timeout=120)
        os.environ.pop("RAY_AUTH_MODE", None)


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}, timeout=600)


def _predict_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return _cli("predict", *args, env=env)


@pytest.fixture(scope="module")
def images(demo_workspace, flowers12, tmp_path_factory) -> list[str]:
    """146 demo crops, the demo's 4 corrupt files (their rows carry the error) and 60 flowers12 photos."""
    root = demo_workspace.root / "demo"
    truth = pd.read_csv(root / "ground_truth.csv", keep_default_na=False)
    corrupt = [str(root / p) for p in truth.loc[truth["problem"] == "corrupt", "image"]]
    crops = [str(p) for p in sorted((root / "images").glob("*.png")) if str(p) not in corrupt]
    flowers = sorted(str(p) for p in (flowers12 / "test").rglob("*.jpg"))[::4][:60]
    assert len(corrupt) == 4
    return crops[:146] + corrupt + flowers


def test_ray_engine_writes_the_local_engines_csv_byte_for_byte(demo_multiclass_run, images, ray_address, tmp_path):
    local, ray_csv = tmp_path / "local.csv", tmp_path / "ray.csv"
    p = _predict_cli(str(demo_multiclass_run), *images, "--csv", str(local))
    assert p.returncode == 0, p.stderr[-3000:]
    p = _predict_cli(str(demo_multiclass_run), *images, "--csv", str(ray_csv), "--engine", "ray",
                     env={"RAY_ADDRESS": ray_address})
    assert p.returncode == 0, p.stderr[-3000:]
    assert "engine: ray" in p.stderr
    assert ray_csv.read_bytes() == local.read_bytes()
    table = pd.read_csv(ray_csv, keep_default_na=False)
    assert len(table) == len(images) and table["path"].tolist() == [str(p) for p in predict.collect_images(images)]
    assert (table["error"] != "").sum() == 4  # the corrupt files are rows with their message, as locally


def test_an_actor_killed_mid_batch_is_restarted_and_no_row_is_lost_or_doubled(demo_multiclass_run, images,
                                                                              ray_address, tmp_path, monkeypatch):
    marker = tmp_path / "crash-once"
    marker.touch()
    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    monkeypatch.setenv("LOUPE_RAY_CRASH_ONCE", str(marker))  # the first actor to see it exits (os._exit) mid-batch
    predictor = predict.Predictor.load(demo_multiclass_run)
    seen = []
    table = predictor.predict_paths(images, engine="ray", progress=lambda done, total: seen.append((done, total)))
    assert not marker.exists()  # an actor did die
    expected = predictor.predict_paths(images)
    pd.testing.assert_frame_equal(table, expected)
    assert seen[-1] == (len(images), len(images))


def test_engine_names_and_a_missing_ray_say_what_to_do(demo_multiclass_run, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="engine must be one of"):
        engines.check_engine("spark")
    p = _predict_cli(str(demo_multiclass_run), str(tmp_path), "--engine", "spark")
    assert p.returncode == 2 and "invalid choice" in p.stderr
    # Ray not importable: a clear message, not a traceback
    blocker = tmp_path / "noray"
    (blocker / "ray").mkdir(parents=True)
    (blocker / "ray" / "__init__.py").write_text("raise ImportError('ray is not installed')\n")
    img = _png(tmp_path / "one.png")
    p = _predict_cli(str(demo_multiclass_run), str(img), "--engine", "ray",
                     env={"PYTHONPATH": f"{blocker}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert p.returncode != 0
    assert "pip install -r requirements-ray.txt" in p.stderr and "Traceback" not in p.stderr


def _png(path: Path) -> Path:
    from PIL import Image

    Image.new("RGB", (24, 20), (200, 30, 30)).save(path)
    return path


def _run_copy(run: Path, dst: Path) -> Path:
    """A copy of a finished run without its embeddings cache (so the engine under test computes them)."""
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns("embeddings.npz"))
    return dst


def test_embed_and_ood_on_ray_give_the_local_map_and_scores(demo_multiclass_run, demo_workspace, flowers12,
                                                            ray_address, tmp_path):
    unseen = flowers12 / "test" / "daisy"
    ws = ["--workspace", str(demo_workspace.root)]
    out = {}
    for engine in ("local", "ray"):
        run = _run_copy(demo_multiclass_run, tmp_path / f"run-{engine}")
        env = {"RAY_ADDRESS": ray_address} if engine == "ray" else {}
        p = _cli("ood", str(run), "--unseen", str(unseen), "--json", "--engine", engine, *ws, env=env)
        assert p.returncode == 0, p.stderr[-3000:]
        csv = tmp_path / f"map-{engine}.csv"
        p2 = _cli("embed", str(run), "--out", str(csv), "--engine", engine, *ws, env=env)
        assert p2.returncode == 0, p2.stderr[-3000:]
        out[engine] = (json.loads(p.stdout.strip().splitlines()[-1]), csv.read_bytes())
    (ood_local, map_local), (ood_ray, map_ray) = out["local"], out["ray"]
    assert ood_ray == {**ood_local, "run_dir": ood_ray["run_dir"]}  # same AUROC, threshold, counts
    assert map_ray.replace(b"run-ray", b"run-local") == map_local  # same vectors, hence the same PCA map


def test_audit_features_on_ray_give_the_local_flags(flowers12, keras_home, ray_address, tmp_path):
    rows = sorted((flowers12 / "train").rglob("*.jpg"))[::6]
    table = tmp_path / "labels.csv"
    pd.DataFrame({"image": [str(p.relative_to(flowers12)) for p in rows],
                  "label": [p.parent.name for p in rows]}).to_csv(table, index=False)
    csvs = {}
    for engine in ("local", "ray"):
        csv = tmp_path / f"audit-{engine}.csv"
        p = _cli("audit", str(flowers12), "--labels", str(table), "--image-column", "image", "--label-columns", "label",
                 "--workspace", str(tmp_path / f"ws-{engine}"), "--only", "label_issue,near_duplicate",
                 "--set", "label_issue_features=image+imagenet", "--set", "near_duplicate_features=pixels+imagenet",
                 "--csv", str(csv), "--engine", engine, "--json",
                 env={"KERAS_HOME": str(keras_home), **({"RAY_ADDRESS": ray_address} if engine == "ray" else {})})
        assert p.returncode == 0, p.stderr[-3000:]
        summary = json.loads(p.stdout.strip().splitlines()[-1])
        assert summary["source"] == "features+imagenet" and not summary["notes"], summary  # the features were had
        csvs[engine] = csv.read_bytes()
    assert csvs["ray"] == csvs["local"]
    assert len(pd.read_csv(tmp_path / "audit-local.csv")) > 0
