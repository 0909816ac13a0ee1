"""The demo folder: generate it atomically, recognise and read it, ensure it in a workspace.

:func:`generate_demo` validates its parameters, builds the demo in a hidden sibling folder
(:func:`core.demo.build._build`) and renames it into place; :func:`is_demo`,
:func:`is_complete_demo` and :func:`read_demo` read the manifest; :func:`ensure_demo` and
:func:`ensure_demo_dataset` give a workspace its demo, the latter loaded as a dataset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.demo.build import _build
from core.demo.contents import _FORMAT, _GENERATOR, DEFAULT_COUNTS, ELEMENTS, MANIFEST, DemoInfo
from core.workspace import Workspace, read_json

# ---------------------------------------------------------------------------
# Public functions
# ---------------------------------------------------------------------------

def generate_demo(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    counts: Mapping[str, int] | None = None,
    n_unseen: int = 40,
    uniform_fraction: float = 0.03,
    flip_fraction: float = 0.04,
    missing_fraction: float = 0.07,
    n_duplicates: int = 8,
    n_near_duplicates: int = 12,
    n_hierarchy_conflicts: int = 2,
) -> DemoInfo:
    """Generate the demo dataset into ``out_dir``.

    The folder is built in a hidden sibling folder and renamed into place, so ``out_dir``
    is either absent, the previous demo, or the complete new one -- never half written.

    Parameters
    ----------
    out_dir : path
        Target folder. It must not exist, be empty, or hold a previous demo (which is
        replaced); anything else raises ``ValueError`` and nothing is touched.
    seed : int, default 0
        Same seed, same bytes.
    counts : mapping element -> int, optional
        Clean images drawn per element (default :data:`DEFAULT_COUNTS`); every element
        in :data:`ELEMENTS` must be present with a count >= 1.
    n_unseen : int, default 40
        Out-of-distribution images in ``unseen/``.
    uniform_fraction, flip_fraction : float in [0, 0.5]
        Blank crops added, and clean labels flipped, as a fraction of the clean images.
    missing_fraction : float in [0, 0.5]
        Fraction of attribute cells left empty (missing).
    n_duplicates, n_near_duplicates, n_hierarchy_conflicts : int >= 0
        Exact copies (half with conflicting labels), near copies, and rows with a
        group that contradicts their element.

    Returns
    -------
    DemoInfo
        Paths, ``n_images`` (rows of ``labels.csv`` = files in ``images/``), classes,
        class counts as labelled, and ``problems`` (ground-truth rows per problem).

    Examples
    --------
    >>> info = generate_demo(tmp / "demo", seed=0)        # doctest: +SKIP
    >>> info.n_images, info.problems["corrupt"]           # doctest: +SKIP
    (1046, 4)
    """
    out = Path(out_dir).expanduser().absolute()
    params = _validate(seed=seed, counts=counts, n_unseen=n_unseen, uniform_fraction=uniform_fraction,
                       flip_fraction=flip_fraction, missing_fraction=missing_fraction,
                       n_duplicates=n_duplicates, n_near_duplicates=n_near_duplicates,
                       n_hierarchy_conflicts=n_hierarchy_conflicts)
    _check_target(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        _build(stage, params)
        _swap_into_place(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return read_demo(out)


def is_demo(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder with a demo manifest (complete or not)."""
    manifest = read_json(Path(path) / MANIFEST, default=None)
    return isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR


def is_complete_demo(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a demo whose every listed file exists with its listed size."""
    root = Path(path)
    manifest = read_json(root / MANIFEST, default=None)
    if not (isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR
            and manifest.get("format") == _FORMAT and isinstance(manifest.get("files"), dict)):
        return False
    for rel, size in manifest["files"].items():
        try:
            if (root / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def read_demo(path: str | os.PathLike) -> DemoInfo:
    """The :class:`DemoInfo` of an existing demo folder (from its manifest); ``ValueError`` if it is none."""
    root = Path(path).expanduser().absolute()
    m = read_json(root / MANIFEST, default=None)
    if not (isinstance(m, dict) and m.get("generator") == _GENERATOR):
        raise ValueError(f"path={str(root)!r} is not a Loupe demo folder (no readable {MANIFEST}).")
    return DemoInfo(
        out_dir=root, labels_csv=root / "labels.csv", ground_truth=root / "ground_truth.csv",
        unseen_dir=root / "unseen", readme=root / "README.txt", seed=int(m["seed"]),
        n_images=int(m["n_images"]), n_unseen=int(m["n_unseen"]), classes=tuple(m["classes"]),
        hierarchy={g: tuple(e) for g, e in m["hierarchy"].items()},
        class_counts={k: int(v) for k, v in m["class_counts"].items()},
        problems={k: int(v) for k, v in m["problems"].items()},
    )


def ensure_demo(workspace: Workspace, *, seed: int = 0) -> Path:
    """Return ``workspace.demo_dir``, generating the demo there first if it is missing or incomplete.

    Idempotent and cheap when the demo is already complete (one manifest read and a
    ``stat`` per file). Generation is atomic (built beside, then renamed). A folder in
    the way that is not a demo is moved aside to ``demo.moved-N``, never deleted.
    Safe when two processes race: the loser discards its copy and uses the winner's.
    """
    if not isinstance(workspace, Workspace):
        raise ValueError(f"workspace must be a core.workspace.Workspace, received {workspace!r}")
    target = workspace.demo_dir
    if is_complete_demo(target):
        return target
    if target.exists() and not is_demo(target) and any(_iterdir(target)):
        n = 1
        while (target.parent / f"{target.name}.moved-{n}").exists():
            n += 1
        target.rename(target.parent / f"{target.name}.moved-{n}")
    try:
        generate_demo(target, seed=seed)
    except (OSError, ValueError):
        if not is_complete_demo(target):  # a concurrent caller did not win either
            raise
    return target


# ---------------------------------------------------------------------------
# Validation and the folder swap
# ---------------------------------------------------------------------------

def _validate(**p: Any) -> dict[str, Any]:
    seed = p["seed"]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, received {seed!r}")
    counts = dict(DEFAULT_COUNTS) if p["counts"] is None else dict(p["counts"])
    unknown = sorted(set(counts) - set(ELEMENTS))
    missing = [e for e in ELEMENTS if e not in counts]
    if unknown or missing:
        raise ValueError(f"counts must name exactly the elements {list(ELEMENTS)}; received {p['counts']!r}")
    for e, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"counts[{e!r}] must be an int >= 1, received {n!r}")
    for name in ("uniform_fraction", "flip_fraction", "missing_fraction"):
        v = p[name]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= float(v) <= 0.5:
            raise ValueError(f"{name} must be a number in [0, 0.5], received {v!r}")
    for name in ("n_unseen", "n_duplicates", "n_near_duplicates", "n_hierarchy_conflicts"):
        v = p[name]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, received {v!r}")
    out = {k: (float(v) if k.endswith("fraction") else int(v)) for k, v in p.items() if k != "counts"}
    out["counts"] = {e: int(counts[e]) for e in ELEMENTS}
    return out


def _iterdir(path: Path):
    try:
        return path.iterdir()
    except OSError:
        return iter(())


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir={str(out)!r} exists and is not a folder; choose another path.")
    if out.is_dir() and any(_iterdir(out)) and not is_demo(out):
        raise ValueError(
            f"out_dir={str(out)!r} is not empty and is not a previous Loupe demo; "
            "refusing to overwrite it. Choose an empty or new folder."
        )


def _swap_into_place(stage: Path, out: Path) -> None:
    """Rename the finished ``stage`` folder to ``out``, replacing an empty folder or a previous demo."""
    if not out.exists():
        os.rename(stage, out)
        return
    _check_target(out)  # re-check: it may have changed while we generated
    old = stage.with_name(stage.name + ".old")
    os.rename(out, old)
    try:
        os.rename(stage, out)
    except BaseException:
        os.rename(old, out)  # put the previous demo back
        raise
    shutil.rmtree(old, ignore_errors=True)



def ensure_demo_dataset(workspace: Workspace, *, seed: int = 0):
    """Generate the demo into the workspace if needed and register it as a dataset.

    Returns the loaded :class:`core.datasets.Dataset` ("Demo: UI elements"). Cheap on a
    second call: the demo files are checked against their manifest and the loader reuses
    its stored result when nothing changed.
    """
    from core import datasets

    folder = ensure_demo(workspace, seed=seed)
    options = read_demo(folder).dataset_options()
    spec = datasets.DatasetSpec.from_dict({**options, "name": "Demo: UI elements", "seed": seed})
    return datasets.load_dataset(spec, workspace=workspace)
