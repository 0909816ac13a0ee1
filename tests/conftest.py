"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"
WEIGHTS = SHARED / "weights" / "keras"

# Quiet TensorFlow's C++ start-up chatter in test logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the real datasets and weights live in ../shared beside the repo "
                    "(present in CI; a fresh user's clone does not have them)")
    return path


@pytest.fixture(scope="session")
def flowers12() -> Path:
    """Root of ../shared/datasets/flowers12 (class folders with train/ and test/)."""
    return _require(DATASETS / "flowers12")


@pytest.fixture(scope="session")
def miml_scene() -> Path:
    """Root of ../shared/datasets/miml_scene (images/ + multi-hot labels.csv)."""
    return _require(DATASETS / "miml_scene")


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory) -> Path:
    """A temporary copy of ../shared/weights/keras, for ``KERAS_HOME`` (real ImageNet MobileNetV2-0.35)."""
    src = _require(WEIGHTS)
    dst = tmp_path_factory.mktemp("keras_home")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


@pytest.fixture
def loupe_home(tmp_path, monkeypatch) -> Path:
    """An empty workspace, exported as ``LOUPE_HOME`` for the code under test."""
    home = tmp_path / "loupe_home"
    home.mkdir()
    monkeypatch.setenv("LOUPE_HOME", str(home))
    return home
