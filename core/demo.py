"""The built-in demo dataset: generated UI-element crops with a ground truth of injected problems.

Vocabulary: the demo has N labelled images (``images/*.png``, listed in ``labels.csv``)
and a separate folder of unlabelled out-of-distribution images (``unseen/*.png``).
Each labelled image is a crop of one UI element, drawn with PIL + numpy from a seed,
so the same seed gives the same bytes on the same library versions.

Label hierarchy (two levels, ``group > element``)::

    action      button, link, icon
    choice      checkbox, radio, toggle, dropdown, slider
    text_entry  text_input, textarea            (textarea is the RARE class: 12 images)

Multi-label attributes ``disabled`` and ``dark_theme``: ``1`` / ``0``, and about 7 %
of the cells left empty (missing -- never read them as 0).

Injected problems, one row each in ``ground_truth.csv``
(columns ``image, problem, detail, true_element, given_element``; an image may have
several rows):

``uniform``             a blank crop (solid or near-solid colour, pixel std < 1.5) with an
                        arbitrary label; ``true_element`` is empty (no element visible).
``duplicate``           an exact byte copy of another image (``detail``: ``copy_of=...``);
                        half of them carry a conflicting element label, and those also
                        get a ``flipped_label`` row.
``near_duplicate``      a resized / recompressed / slightly cropped copy
                        (``detail``: ``of=...;transform=...``), same labels as the source.
``corrupt``             a file named ``.png`` that does not decode: a truncated PNG,
                        zero bytes, or a text file (``detail`` says which).
``flipped_label``       ~4 % of the clean images: the element replaced by another class's
                        element, **with the group changed to match** (the hierarchy stays
                        valid). The rare class is never flipped in or out.
``hierarchy_conflict``  a couple of rows whose element is right but whose group is wrong
                        (``detail``: ``given_group=...;true_group=...``), for validators.

Load it as a hierarchical table (see :data:`DATASET_OPTIONS`)::

    python -m core dataset inspect DEMO --labels labels.csv --image-column image \\
        --task hierarchical --label-columns group,element \\
        --attribute-columns disabled,dark_theme --unseen DEMO/unseen
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from core.workspace import Workspace, atomic_write_bytes, atomic_write_json, read_json

# ---------------------------------------------------------------------------
# Public constants
# ---------------------------------------------------------------------------

#: group -> elements, coarse -> fine (the two label levels of the demo).
HIERARCHY: dict[str, tuple[str, ...]] = {
    "action": ("button", "link", "icon"),
    "choice": ("checkbox", "radio", "toggle", "dropdown", "slider"),
    "text_entry": ("text_input", "textarea"),
}
#: element -> group.
GROUP_OF: dict[str, str] = {e: g for g, els in HIERARCHY.items() for e in els}
#: All element classes, sorted.
ELEMENTS: tuple[str, ...] = tuple(sorted(GROUP_OF))
#: The rare class and its (exact) number of labelled images.
RARE_CLASS = "textarea"
RARE_COUNT = 12

#: Clean images drawn per element before problems are injected (~1,050 labelled in all).
DEFAULT_COUNTS: dict[str, int] = {
    "button": 150, "link": 110, "icon": 90,
    "checkbox": 120, "radio": 100, "toggle": 90, "dropdown": 100, "slider": 80,
    "text_input": 140, "textarea": RARE_COUNT,
}
PROBLEMS = ("uniform", "duplicate", "near_duplicate", "corrupt", "flipped_label", "hierarchy_conflict")
LABEL_COLUMNS = ("image", "group", "element", "disabled", "dark_theme")
GROUND_TRUTH_COLUMNS = ("image", "problem", "detail", "true_element", "given_element")

#: How the demo loads as a Loupe dataset (paths relative to the demo folder).
DATASET_OPTIONS: dict[str, Any] = {
    "labels": "labels.csv",
    "image_column": "image",
    "task": "hierarchical",
    "label_columns": ["group", "element"],
    "attribute_columns": ["disabled", "dark_theme"],
    "unseen": "unseen",
}

MANIFEST = "demo.json"
_GENERATOR = "loupe.core.demo"
_FORMAT = 1
_SS = 2  # supersampling factor: shapes are drawn at 2x and box-reduced (anti-aliasing)


@dataclass(frozen=True)
class DemoInfo:
    """What :func:`generate_demo` wrote.

    ``classes`` are the element names (sorted); ``hierarchy`` maps group -> elements;
    ``problems`` maps each name in :data:`PROBLEMS` to its number of ground-truth rows.
    """

    out_dir: Path
    labels_csv: Path
    ground_truth: Path
    unseen_dir: Path
    readme: Path
    seed: int
    n_images: int
    n_unseen: int
    classes: tuple[str, ...]
    hierarchy: dict[str, tuple[str, ...]] = field(default_factory=dict)
    class_counts: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)

    def dataset_options(self) -> dict[str, Any]:
        """The loader options for this demo, with absolute paths (see :data:`DATASET_OPTIONS`)."""
        opts = dict(DATASET_OPTIONS)
        opts["path"] = str(self.out_dir)
        opts["labels"] = str(self.labels_csv)
        opts["unseen"] = str(self.unseen_dir)
        return opts

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "labels_csv": str(self.labels_csv),
            "ground_truth": str(self.ground_truth), "unseen_dir": str(self.unseen_dir),
            "readme": str(self.readme), "seed": self.seed, "n_images": self.n_images,
            "n_unseen": self.n_unseen, "classes": list(self.classes),
            "hierarchy": {g: list(e) for g, e in self.hierarchy.items()},
            "class_counts": dict(self.class_counts), "problems": dict(self.problems),
        }


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


# ---------------------------------------------------------------------------
# Building the folder
# ---------------------------------------------------------------------------

@dataclass
class _Sample:
    key: int                      # creation order (stable id before shuffling)
    element: str                  # the given label
    group: str                    # the given group
    true_element: str             # what is drawn ('' when nothing is)
    disabled: int
    dark: int
    data: bytes = b""
    problems: list = field(default_factory=list)  # [(problem, detail-template, ref-key or None)]
    name: str = ""
    missing: tuple = (False, False)


def _build(stage: Path, p: dict[str, Any]) -> None:
    rng = np.random.default_rng([p["seed"], 20240501])
    samples: list[_Sample] = []

    # 1. Clean images, drawn per element.
    for element in ELEMENTS:
        for _ in range(p["counts"][element]):
            style = _Style.draw(rng)
            img = _RENDERERS[element](rng, style)
            img = _degrade(rng, img)
            samples.append(_Sample(len(samples), element, GROUP_OF[element], element,
                                   int(style.disabled), int(style.dark), _png(img)))
    n_clean = len(samples)
    common = [s for s in samples if s.element != RARE_CLASS]
    label_pool = [e for e in ELEMENTS if e != RARE_CLASS]

    def pick(pool: list[_Sample], k: int) -> list[_Sample]:
        k = min(k, len(pool))
        idx = np.sort(rng.choice(len(pool), size=k, replace=False)) if k else []
        return [pool[i] for i in idx]

    untouched = list(common)  # clean, not yet used by any injection

    def take(k: int) -> list[_Sample]:
        chosen = pick(untouched, k)
        ids = {s.key for s in chosen}
        untouched[:] = [s for s in untouched if s.key not in ids]
        return chosen

    # 2. Flipped labels (group follows the element: the hierarchy stays valid).
    for s in take(int(round(p["flip_fraction"] * n_clean))):
        new = _other_element(rng, s.element, label_pool)
        s.problems.append(("flipped_label", f"true_group={s.group};given_group={GROUP_OF[new]}", None))
        s.element, s.group = new, GROUP_OF[new]

    # 3. Hierarchy conflicts: right element, wrong group.
    for s in take(p["n_hierarchy_conflicts"]):
        wrong = [g for g in HIERARCHY if g != s.group]
        g = wrong[int(rng.integers(len(wrong)))]
        s.problems.append(("hierarchy_conflict", f"given_group={g};true_group={s.group}", None))
        s.group = g

    # 4. Exact duplicates; the second half carries a conflicting label.
    for i, src in enumerate(take(p["n_duplicates"])):
        conflict = i >= (p["n_duplicates"] + 1) // 2
        element = _other_element(rng, src.element, label_pool) if conflict else src.element
        dup = _Sample(len(samples), element, GROUP_OF[element], src.true_element, src.disabled, src.dark,
                      src.data)
        dup.problems.append(("duplicate", "copy_of={ref}" + (";conflicting_label" if conflict else ""), src.key))
        if conflict:
            dup.problems.append(("flipped_label", "conflicting duplicate of {ref}", src.key))
        samples.append(dup)

    # 5. Near duplicates: same labels, slightly different pixels.
    for src in take(p["n_near_duplicates"]):
        img, how = _near_copy(rng, Image.open(io.BytesIO(src.data)).convert("RGB"))
        near = _Sample(len(samples), src.element, src.group, src.true_element, src.disabled, src.dark, _png(img))
        near.problems.append(("near_duplicate", "of={ref};transform=" + how, src.key))
        samples.append(near)

    # 6. Uniform blank crops with arbitrary labels.
    for _ in range(int(round(p["uniform_fraction"] * n_clean))):
        img, dark, how = _uniform(rng)
        element = label_pool[int(rng.integers(len(label_pool)))]
        s = _Sample(len(samples), element, GROUP_OF[element], "", int(rng.random() < 0.1), dark, _png(img))
        s.problems.append(("uniform", how, None))
        samples.append(s)

    # 7. Corrupt files: two truncated PNGs, zero bytes, a text file.
    for kind in ("truncated_png", "zero_bytes", "text_file", "truncated_png"):
        element = label_pool[int(rng.integers(len(label_pool)))]
        style = _Style.draw(rng)
        if kind == "truncated_png":
            full = _png(_RENDERERS[element](rng, style))
            data, true = full[: max(60, int(len(full) * rng.uniform(0.35, 0.7)))], element
        elif kind == "zero_bytes":
            data, true = b"", ""
        else:
            data, true = b"<html><body>404 Not Found: the crop was never exported</body></html>\n", ""
        s = _Sample(len(samples), element, GROUP_OF[element], true, int(style.disabled), int(style.dark), data)
        s.problems.append(("corrupt", kind, None))
        samples.append(s)

    # 8. Shuffle, name, blank some attribute cells.
    order = rng.permutation(len(samples))
    width = max(6, len(str(len(samples))))
    by_key: dict[int, _Sample] = {}
    for pos, i in enumerate(order):
        s = samples[int(i)]
        s.name = f"images/{pos:0{width}d}.png"
        by_key[s.key] = s
    ordered = [samples[int(i)] for i in order]
    miss = rng.random((len(ordered), 2)) < p["missing_fraction"]
    for s, m in zip(ordered, miss):
        s.missing = (bool(m[0]), bool(m[1]))

    # 9. Write everything (manifest last).
    files: dict[str, int] = {}

    def write(rel: str, data: bytes) -> None:
        atomic_write_bytes(stage / rel, data)
        files[rel] = len(data)

    for s in ordered:
        write(s.name, s.data)

    label_rows = [[s.name, s.group, s.element,
                   "" if s.missing[0] else str(s.disabled), "" if s.missing[1] else str(s.dark)]
                  for s in ordered]
    write("labels.csv", _csv(LABEL_COLUMNS, label_rows))

    gt_rows = []
    for s in ordered:
        for problem, detail, ref in s.problems:
            gt_rows.append([s.name, problem, detail.format(ref=by_key[ref].name) if ref is not None else detail,
                            s.true_element, s.element])
    gt_rows.sort(key=lambda r: (r[0], PROBLEMS.index(r[1])))
    write("ground_truth.csv", _csv(GROUND_TRUTH_COLUMNS, gt_rows))

    unseen_kinds = []
    for i in range(p["n_unseen"]):
        kind = _UNSEEN_KINDS[i % len(_UNSEEN_KINDS)]
        img = _UNSEEN[kind](rng)
        write(f"unseen/{i:03d}_{kind}.png", _png(img))
        unseen_kinds.append(kind)

    problems = {k: sum(1 for r in gt_rows if r[1] == k) for k in PROBLEMS}
    class_counts = {e: sum(1 for s in ordered if s.element == e) for e in ELEMENTS}
    n_missing = {"disabled": int(miss[:, 0].sum()), "dark_theme": int(miss[:, 1].sum())}
    write("README.txt", _readme(p, len(ordered), class_counts, problems, n_missing, unseen_kinds).encode("utf-8"))

    manifest = {
        "generator": _GENERATOR, "format": _FORMAT, "seed": p["seed"],
        "params": {k: v for k, v in p.items() if k != "seed"},
        "n_images": len(ordered), "n_unseen": p["n_unseen"], "classes": list(ELEMENTS),
        "hierarchy": {g: list(e) for g, e in HIERARCHY.items()}, "class_counts": class_counts,
        "problems": problems, "missing_attribute_cells": n_missing,
        "dataset_options": DATASET_OPTIONS, "files": dict(sorted(files.items())),
    }
    atomic_write_json(stage / MANIFEST, manifest)


def _other_element(rng: np.random.Generator, element: str, pool: list[str]) -> str:
    others = [e for e in pool if e != element]
    return others[int(rng.integers(len(others)))]


def _csv(header: tuple[str, ...], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _readme(p, n_images, class_counts, problems, n_missing, unseen_kinds) -> str:
    hier = "\n".join(f"    {g:<11} {', '.join(e)}" for g, e in HIERARCHY.items())
    counts = "\n".join(f"    {e:<11} {class_counts[e]}" for e in ELEMENTS)
    probs = "\n".join(f"    {k:<19} {problems[k]}" for k in PROBLEMS)
    kinds = ", ".join(dict.fromkeys(unseen_kinds)) or "-"
    return f"""Loupe demo dataset: UI-element crops (generated, seed {p['seed']})
====================================================================

Synthetic crops of user-interface elements, in the spirit of a "classify UI
elements by semantic tag" take-home: drawn by core/demo.py with PIL + numpy,
with varied sizes, aspect ratios, colours, font sizes, light and dark themes,
optional label text, noise, blur and JPEG-like recompression. Regenerate it with

    python -m core demo --out DIR --seed {p['seed']}

Files
-----
images/*.png        {n_images} labelled images (including the injected problems below)
labels.csv          image,group,element,disabled,dark_theme  (image: path relative to this folder)
ground_truth.csv    image,problem,detail,true_element,given_element  (one row per injected problem)
unseen/*.png        {p['n_unseen']} unlabelled out-of-distribution images ({kinds})
demo.json           manifest: parameters, counts and the size of every file

Labels: two levels, group > element
-----------------------------------
{hier}

Labelled images per element (as given in labels.csv, flips included):
{counts}
"{RARE_CLASS}" is the rare class: exactly {RARE_COUNT} images, never flipped in or out.

Attributes (multi-label): disabled, dark_theme = 1 or 0; an EMPTY cell means
missing (unknown), never 0. Missing cells: disabled {n_missing['disabled']}, dark_theme {n_missing['dark_theme']}.

Injected problems (rows in ground_truth.csv)
-------------------------------------------
{probs}

uniform             blank crop, solid or near-solid colour; arbitrary label; true_element empty.
duplicate           exact byte copy of another image (detail copy_of=...); the ones marked
                    conflicting_label carry another element and also have a flipped_label row.
near_duplicate      resized / recompressed / slightly cropped copy (detail of=...;transform=...),
                    same labels as its source.
corrupt             does not decode: truncated_png, zero_bytes or text_file (named .png).
flipped_label       the element was replaced by another class's element and the group changed
                    with it, so group > element stays a valid hierarchy.
hierarchy_conflict  the element is right but the group contradicts it (given_group / true_group).

Load in Loupe as a table: path = this folder, labels = labels.csv, image column
"image", task hierarchical, label columns group,element, attribute columns
disabled,dark_theme, unseen folder unseen/.
"""


# ---------------------------------------------------------------------------
# Drawing: styles, fonts, texts
# ---------------------------------------------------------------------------

_LIGHT_BG = [(255, 255, 255), (248, 249, 250), (243, 244, 246), (250, 250, 245), (236, 239, 241), (245, 247, 252)]
_DARK_BG = [(18, 18, 18), (30, 30, 30), (33, 37, 41), (24, 26, 27), (40, 44, 52), (22, 27, 34)]
_ACCENTS = [(13, 110, 253), (25, 118, 210), (46, 125, 50), (103, 58, 183), (211, 47, 47), (245, 124, 0),
            (0, 150, 136), (216, 27, 96), (63, 81, 181), (2, 136, 209), (0, 121, 107), (94, 53, 177)]

_BUTTON_WORDS = ["Submit", "Cancel", "OK", "Save", "Next", "Back", "Sign in", "Sign up", "Continue", "Delete",
                 "Buy now", "Apply", "Send", "Download", "Log out", "Confirm", "Add to cart", "Get started",
                 "Close", "Edit", "Upload", "Pay"]
_LINK_WORDS = ["Learn more", "Forgot password?", "Terms of service", "Privacy policy", "Read more", "View all",
               "Help", "Contact us", "See details", "Home", "About", "Docs", "Unsubscribe", "Back to top",
               "Sign in instead", "Pricing", "Blog", "Careers", "Edit profile"]
_CHOICE_WORDS = ["Remember me", "I agree", "Subscribe", "Email me", "Dark mode", "Notifications", "Option A",
                 "Option B", "Yes", "No", "Monthly", "Yearly", "Public", "Private", "Auto-save", "Wi-Fi",
                 "Show hidden", "Keep me signed in", "Beta features"]
_PLACEHOLDERS = ["Email", "Name", "Search...", "Password", "Username", "Phone number", "Address", "City",
                 "First name", "Enter code", "you@example.com", "Search", "Company", "Zip code"]
_TYPED = ["jane.doe", "42", "Berlin", "*********", "hello world", "Alex Smith", "2024-05-01", "loupe"]
_OPTIONS = ["Select...", "Country", "English", "Sort by", "All categories", "Month", "Small", "Choose one",
            "2024", "Newest first", "USD", "Medium", "France", "Any time"]
_FIELD_LABELS = ["Email", "Full name", "Password", "Message", "Country", "Amount", "Title", "Notes"]
_PARAGRAPH = ["Lorem ipsum dolor sit amet,", "consectetur adipiscing elit.", "Tell us about yourself",
              "Write your message here", "Describe the issue...", "Sed do eiusmod tempor", "incididunt ut labore",
              "Thanks for the quick reply!", "Steps to reproduce:", "1. Open the settings page"]


def _jitter(rng: np.random.Generator, c: tuple[int, int, int], amount: int = 6) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


@dataclass(frozen=True)
class _Style:
    dark: bool
    disabled: bool
    bg: tuple
    surface: tuple   # fill of fields
    text: tuple
    muted: tuple     # placeholder text, unchecked tracks
    border: tuple
    accent: tuple
    on_accent: tuple

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "_Style":
        dark = bool(rng.random() < 0.3)
        disabled = bool(rng.random() < 0.15)
        bg = _jitter(rng, (_DARK_BG if dark else _LIGHT_BG)[int(rng.integers(6))])
        accent = _jitter(rng, _ACCENTS[int(rng.integers(len(_ACCENTS)))], 12)
        if dark:
            text = _jitter(rng, (232, 234, 237))
            surface = _mix(bg, (255, 255, 255), rng.uniform(0.0, 0.08))
            muted, border = _mix(bg, text, 0.45), _mix(bg, text, rng.uniform(0.25, 0.45))
            accent = _mix(accent, (255, 255, 255), 0.2)
        else:
            text = _jitter(rng, (33, 37, 41))
            surface = (255, 255, 255) if rng.random() < 0.7 else bg
            muted, border = _mix(bg, text, 0.45), _mix(bg, text, rng.uniform(0.2, 0.45))
        on_accent = (255, 255, 255)
        if disabled:
            accent = _mix(accent, _mix(bg, (128, 128, 128), 0.5), 0.6)
            text, muted, border = _mix(text, bg, 0.5), _mix(muted, bg, 0.4), _mix(border, bg, 0.4)
            on_accent = _mix(on_accent, accent, 0.35)
        return cls(dark, disabled, bg, surface, text, muted, border, accent, on_accent)


@lru_cache(maxsize=128)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (Aileron Regular, basic layout): no system fonts needed."""
    return ImageFont.load_default(size=max(4, int(size)))


def _choice(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _text_w(text: str, size: int) -> int:
    return int(math.ceil(_font(size).getlength(text)))


def _canvas(w: int, h: int, bg) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (int(w) * _SS, int(h) * _SS), bg)
    return img, ImageDraw.Draw(img)


def _finish(img: Image.Image) -> Image.Image:
    return img.reduce(_SS)


# Every renderer works in 1x units and scales by _SS (k) when drawing.

def _draw_button(rng, st: _Style) -> Image.Image:
    k = _SS
    label = _choice(rng, _BUTTON_WORDS)
    if rng.random() < 0.25:
        label = label.upper()
    fs = int(rng.integers(10, 19))
    padx, h = int(rng.integers(8, 28)), int(fs * rng.uniform(1.8, 2.8))
    w = _text_w(label, fs) + 2 * padx
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    r = int(rng.choice([0, 3, 6, h // 2]))
    style = rng.choice(["filled", "filled", "filled", "outline", "soft"])
    box = [m * k, m * k, (m + w) * k - 1, (m + h) * k - 1]
    if style == "filled":
        if rng.random() < 0.3:  # drop shadow
            d.rounded_rectangle([box[0] + k, box[1] + 2 * k, box[2] + k, box[3] + 2 * k], r * k,
                                fill=_mix(st.bg, (0, 0, 0), 0.18))
        d.rounded_rectangle(box, r * k, fill=st.accent)
        fg = st.on_accent
    elif style == "outline":
        d.rounded_rectangle(box, r * k, outline=st.accent, width=int(rng.integers(1, 3)) * k)
        fg = st.accent
    else:
        d.rounded_rectangle(box, r * k, fill=_mix(st.bg, st.accent, 0.18))
        fg = st.accent
    d.text(((m + w / 2) * k, (m + h / 2) * k), label, font=_font(fs * k), fill=fg, anchor="mm")
    return _finish(img)


def _draw_link(rng, st: _Style) -> Image.Image:
    k = _SS
    label = _choice(rng, _LINK_WORDS)
    fs = int(rng.integers(10, 20))
    color = st.accent if rng.random() < 0.8 else _mix(st.text, st.accent, 0.3)
    arrow = rng.random() < 0.2
    tw = _text_w(label, fs)
    mx, my = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    w, h = tw + 2 * mx + (int(fs * 0.9) if arrow else 0), int(fs * 1.35) + 2 * my
    img, d = _canvas(w, h, st.bg)
    base = my + fs * 1.05
    d.text((mx * k, base * k), label, font=_font(fs * k), fill=color, anchor="ls")
    if rng.random() < 0.7:
        y = (base + max(1.0, fs * 0.12)) * k
        d.line([(mx * k, y), ((mx + tw) * k, y)], fill=color, width=max(1, fs // 10) * k)
    if arrow:
        x0, yc, s = (mx + tw + fs * 0.25) * k, (base - fs * 0.35) * k, fs * 0.25 * k
        d.line([(x0, yc - s), (x0 + s, yc), (x0, yc + s)], fill=color, width=max(1, fs // 9) * k)
    return _finish(img)


def _draw_icon(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(16, 49))
    w = s if rng.random() < 0.8 else int(s * rng.uniform(1.0, 1.3))
    img, d = _canvas(w, s, st.bg)
    color = st.text if rng.random() < 0.5 else st.accent
    under = st.bg
    if rng.random() < 0.35:  # icon button background
        on_accent = rng.random() < 0.5
        fillc = st.accent if on_accent else _mix(st.bg, st.text, 0.12)
        color, under = (st.on_accent if on_accent else color), fillc
        if rng.random() < 0.5:
            d.ellipse([0, 0, w * k - 1, s * k - 1], fill=fillc)
        else:
            d.rounded_rectangle([0, 0, w * k - 1, s * k - 1], s * k // 5, fill=fillc)
    cx, cy, r = w * k / 2, s * k / 2, s * k * rng.uniform(0.26, 0.36)
    lw = max(1, int(round(s * rng.uniform(0.06, 0.11)))) * k
    glyph = _choice(rng, ["menu", "search", "close", "plus", "gear", "chevron", "star", "home", "bell", "dots"])
    if glyph == "menu":
        for dy in (-0.6, 0, 0.6):
            d.line([(cx - r, cy + dy * r), (cx + r, cy + dy * r)], fill=color, width=lw)
    elif glyph == "search":
        rr = r * 0.62
        d.ellipse([cx - r, cy - r, cx - r + 2 * rr, cy - r + 2 * rr], outline=color, width=lw)
        d.line([(cx - r + 1.7 * rr, cy - r + 1.7 * rr), (cx + r, cy + r)], fill=color, width=lw)
    elif glyph == "close":
        d.line([(cx - r, cy - r), (cx + r, cy + r)], fill=color, width=lw)
        d.line([(cx - r, cy + r), (cx + r, cy - r)], fill=color, width=lw)
    elif glyph == "plus":
        d.line([(cx - r, cy), (cx + r, cy)], fill=color, width=lw)
        d.line([(cx, cy - r), (cx, cy + r)], fill=color, width=lw)
    elif glyph == "gear":
        for a in range(8):
            t = a * math.pi / 4
            d.line([(cx, cy), (cx + r * math.cos(t), cy + r * math.sin(t))], fill=color, width=lw * 2)
        d.ellipse([cx - r * 0.75, cy - r * 0.75, cx + r * 0.75, cy + r * 0.75], fill=color)
        d.ellipse([cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3], fill=under)
    elif glyph == "chevron":
        d.line([(cx - r * 0.4, cy - r), (cx + r * 0.4, cy), (cx - r * 0.4, cy + r)], fill=color, width=lw)
    elif glyph == "star":
        pts = [(cx + (r if i % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + i * math.pi / 5),
                cy + (r if i % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=color)
    elif glyph == "home":
        d.polygon([(cx - r, cy), (cx, cy - r), (cx + r, cy)], fill=color)
        d.rectangle([cx - r * 0.65, cy, cx + r * 0.65, cy + r], fill=color)
    elif glyph == "bell":
        d.pieslice([cx - r * 0.8, cy - r, cx + r * 0.8, cy + r * 0.9], 180, 360, fill=color)
        d.rectangle([cx - r * 0.8, cy - r * 0.05, cx + r * 0.8, cy + r * 0.6], fill=color)
        d.ellipse([cx - r * 0.25, cy + r * 0.6, cx + r * 0.25, cy + r], fill=color)
    else:  # dots
        for dx in (-0.7, 0, 0.7):
            d.ellipse([cx + dx * r - lw, cy - lw, cx + dx * r + lw, cy + lw], fill=color)
    return _finish(img)


def _with_label(rng, st: _Style, control_w: int, control_h: int, p_label: float):
    """Canvas for a small control with optional text to its right; returns (img, draw, x0, y0) in 1x units."""
    label = _choice(rng, _CHOICE_WORDS) if rng.random() < p_label else ""
    fs = int(max(9, min(18, control_h * rng.uniform(0.7, 1.0))))
    gap = int(rng.integers(4, 10))
    m = int(rng.integers(1, 5))
    w = control_w + 2 * m + (gap + _text_w(label, fs) if label else 0)
    h = max(control_h, int(fs * 1.3)) + 2 * m
    img, d = _canvas(w, h, st.bg)
    y0 = (h - control_h) // 2
    if label:
        d.text(((m + control_w + gap) * _SS, (h / 2) * _SS), label, font=_font(fs * _SS), fill=st.text,
               anchor="lm")
    return img, d, m, y0


def _draw_checkbox(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(12, 27))
    img, d, x0, y0 = _with_label(rng, st, s, s, 0.55)
    box = [x0 * k, y0 * k, (x0 + s) * k - 1, (y0 + s) * k - 1]
    r = int(rng.choice([0, 2, 3, s // 5])) * k
    state = rng.choice(["checked", "checked", "unchecked", "unchecked", "indeterminate"])
    bw = int(rng.integers(1, 3)) * k
    if state == "unchecked":
        d.rounded_rectangle(box, r, fill=st.surface, outline=st.border, width=bw)
    else:
        d.rounded_rectangle(box, r, fill=st.accent)
        lw = max(1, s // 8) * k
        if state == "checked":
            d.line([(box[0] + s * k * 0.22, box[1] + s * k * 0.52), (box[0] + s * k * 0.42, box[1] + s * k * 0.72),
                    (box[0] + s * k * 0.78, box[1] + s * k * 0.3)], fill=st.on_accent, width=lw, joint="curve")
        else:
            d.line([(box[0] + s * k * 0.25, box[1] + s * k / 2), (box[0] + s * k * 0.75, box[1] + s * k / 2)],
                   fill=st.on_accent, width=lw)
    return _finish(img)


def _draw_radio(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(12, 27))
    img, d, x0, y0 = _with_label(rng, st, s, s, 0.55)
    box = [x0 * k, y0 * k, (x0 + s) * k - 1, (y0 + s) * k - 1]
    selected = rng.random() < 0.5
    bw = int(rng.integers(1, 3)) * k
    if selected:
        d.ellipse(box, fill=st.surface, outline=st.accent, width=max(bw, k * max(1, s // 8)))
        inset = s * k * rng.uniform(0.25, 0.32)
        d.ellipse([box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset], fill=st.accent)
    else:
        d.ellipse(box, fill=st.surface, outline=st.border, width=bw)
    return _finish(img)


def _draw_toggle(rng, st: _Style) -> Image.Image:
    k = _SS
    h = int(rng.integers(12, 29))
    w = int(h * rng.uniform(1.6, 2.2))
    img, d, x0, y0 = _with_label(rng, st, w, h, 0.3)
    on = rng.random() < 0.5
    box = [x0 * k, y0 * k, (x0 + w) * k - 1, (y0 + h) * k - 1]
    track = st.accent if on else _mix(st.bg, st.text, 0.3)
    if rng.random() < 0.25:  # material style: thin track, knob overhangs
        ty = (y0 + h / 2) * k
        d.rounded_rectangle([box[0], ty - h * k * 0.28, box[2], ty + h * k * 0.28], h * k, fill=_mix(track, st.bg, 0.4))
        kr = h * k / 2
        kx = box[2] - kr if on else box[0] + kr
        d.ellipse([kx - kr, ty - kr, kx + kr, ty + kr], fill=st.accent if on else _mix(st.bg, (255, 255, 255), 0.8))
    else:
        d.rounded_rectangle(box, h * k // 2, fill=track)
        pad = max(1.5, h * 0.12) * k
        kr = h * k / 2 - pad
        kx = box[2] - pad - kr if on else box[0] + pad + kr
        ky = (y0 + h / 2) * k
        d.ellipse([kx - kr, ky - kr, kx + kr, ky + kr], fill=(255, 255, 255) if not st.disabled else st.surface)
    return _finish(img)


def _field(rng, st: _Style, w: int, h: int, m: int, top: int, d: ImageDraw.ImageDraw, *, underline_p: float) -> None:
    """Draw an input field frame (box or material underline) at (m, top)."""
    k = _SS
    box = [m * k, top * k, (m + w) * k - 1, (top + h) * k - 1]
    if rng.random() < underline_p:
        d.rectangle(box, fill=_mix(st.bg, st.text, 0.05) if rng.random() < 0.5 else st.bg)
        d.line([(box[0], box[3]), (box[2], box[3])], fill=st.border, width=int(rng.integers(1, 3)) * k)
    else:
        r = int(rng.choice([0, 2, 4, 6, 8])) * k
        focus = rng.random() < 0.15 and not st.disabled
        d.rounded_rectangle(box, r, fill=st.surface, outline=st.accent if focus else st.border,
                            width=(2 if focus else 1) * k)


def _draw_text_input(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(100, 281)), int(rng.integers(24, 45))
    fs = int(max(9, min(18, h * rng.uniform(0.4, 0.55))))
    label = _choice(rng, _FIELD_LABELS) if rng.random() < 0.2 else ""
    lfs = int(rng.integers(9, 14))
    m = int(rng.integers(0, 5))
    top = m + (int(lfs * 1.5) if label else 0)
    img, d = _canvas(w + 2 * m, top + h + m, st.bg)
    if label:
        d.text((m * k, (m + lfs) * k), label, font=_font(lfs * k), fill=st.text, anchor="ls")
    _field(rng, st, w, h, m, top, d, underline_p=0.15)
    mode = rng.random()
    tx = (m + rng.integers(6, 12)) * k
    ty = (top + h / 2) * k
    if mode < 0.6:
        d.text((tx, ty), _choice(rng, _PLACEHOLDERS), font=_font(fs * k), fill=st.muted, anchor="lm")
    elif mode < 0.9:
        txt = _choice(rng, _TYPED)
        d.text((tx, ty), txt, font=_font(fs * k), fill=st.text, anchor="lm")
        if rng.random() < 0.4:
            cx = tx + _text_w(txt, fs) * k + 2 * k
            d.line([(cx, ty - fs * k * 0.6), (cx, ty + fs * k * 0.6)], fill=st.text, width=k)
    if rng.random() < 0.15:  # trailing search / clear glyph
        gx, rr = (m + w - h * 0.5) * k, h * k * 0.18
        d.ellipse([gx - rr, ty - rr, gx + rr, ty + rr], outline=st.muted, width=k)
    return _finish(img)


def _draw_textarea(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(140, 301)), int(rng.integers(60, 141))
    fs = int(rng.integers(10, 15))
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    _field(rng, st, w, h, m, m, d, underline_p=0.0)
    lines = int(rng.integers(1, max(2, min(6, h // int(fs * 1.5)))))
    color = st.muted if rng.random() < 0.4 else st.text
    start = int(rng.integers(len(_PARAGRAPH)))
    for i in range(lines):
        y = (m + 6 + fs + i * fs * 1.45) * k
        if y > (m + h - 4) * k:
            break
        line = _PARAGRAPH[(start + i) % len(_PARAGRAPH)]
        while len(line) > 1 and _text_w(line, fs) > w - 20:
            line = line[:-1]
        d.text(((m + 8) * k, y), line, font=_font(fs * k), fill=color, anchor="ls")
    if rng.random() < 0.65:  # resize grip
        x1, y1 = (m + w - 3) * k, (m + h - 3) * k
        for off in (4, 8, 12):
            d.line([(x1 - off * k, y1), (x1, y1 - off * k)], fill=st.muted, width=k)
    if rng.random() < 0.2:  # scrollbar
        d.rounded_rectangle([(m + w - 8) * k, (m + 4) * k, (m + w - 4) * k, (m + h * 0.45) * k], 2 * k,
                            fill=_mix(st.surface, st.text, 0.3))
    return _finish(img)


def _draw_dropdown(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(90, 241)), int(rng.integers(24, 45))
    fs = int(max(9, min(18, h * rng.uniform(0.4, 0.55))))
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    if rng.random() < 0.2:  # filled, button-like select
        d.rounded_rectangle([m * k, m * k, (m + w) * k - 1, (m + h) * k - 1], int(rng.choice([2, 4, 6])) * k,
                            fill=_mix(st.bg, st.text, 0.08))
    else:
        _field(rng, st, w, h, m, m, d, underline_p=0.2)
    cy = (m + h / 2) * k
    d.text(((m + rng.integers(6, 12)) * k, cy), _choice(rng, _OPTIONS), font=_font(fs * k),
           fill=st.text if rng.random() < 0.7 else st.muted, anchor="lm")
    cx, s = (m + w - h * 0.5) * k, h * k * rng.uniform(0.12, 0.18)
    color = st.text if rng.random() < 0.7 else st.accent
    if rng.random() < 0.5:
        d.line([(cx - s, cy - s * 0.5), (cx, cy + s * 0.5), (cx + s, cy - s * 0.5)], fill=color,
               width=max(1, int(h / 16)) * k)
    else:
        d.polygon([(cx - s, cy - s * 0.45), (cx + s, cy - s * 0.45), (cx, cy + s * 0.55)], fill=color)
    if rng.random() < 0.25:
        sx = (m + w - h) * k
        d.line([(sx, (m + 4) * k), (sx, (m + h - 4) * k)], fill=st.border, width=k)
    return _finish(img)


def _draw_slider(rng, st: _Style) -> Image.Image:
    k = _SS
    w = int(rng.integers(80, 261))
    thumb = int(rng.integers(10, 23))
    value_label = rng.random() < 0.25
    h = thumb + int(rng.integers(4, 14)) + (12 if value_label else 0)
    img, d = _canvas(w, h, st.bg)
    cy = (h - thumb / 2 - rng.integers(2, 6)) * k if value_label else h * k / 2
    t = int(rng.integers(2, 7)) * k
    x0, x1 = thumb * 0.6 * k, (w - thumb * 0.6) * k
    pos = x0 + (x1 - x0) * rng.uniform(0.05, 0.95)
    d.rounded_rectangle([x0, cy - t / 2, x1, cy + t / 2], t // 2, fill=_mix(st.bg, st.text, 0.22))
    d.rounded_rectangle([x0, cy - t / 2, pos, cy + t / 2], t // 2, fill=st.accent)
    if rng.random() < 0.25:  # ticks
        n = int(rng.integers(4, 11))
        for i in range(n + 1):
            x = x0 + (x1 - x0) * i / n
            d.line([(x, cy + t), (x, cy + t + 3 * k)], fill=st.muted, width=k)
    r = thumb * k / 2
    if rng.random() < 0.8:
        d.ellipse([pos - r, cy - r, pos + r, cy + r], fill=st.accent if rng.random() < 0.6 else (255, 255, 255),
                  outline=_mix(st.accent, st.bg, 0.3), width=k)
    else:
        d.rounded_rectangle([pos - r * 0.5, cy - r, pos + r * 0.5, cy + r], k * 2, fill=st.accent)
    if value_label:
        d.text((pos, 1 * k), str(int(rng.integers(0, 101))), font=_font(10 * k), fill=st.text, anchor="mt")
    return _finish(img)


_RENDERERS: dict[str, Callable[[np.random.Generator, _Style], Image.Image]] = {
    "button": _draw_button, "link": _draw_link, "icon": _draw_icon,
    "checkbox": _draw_checkbox, "radio": _draw_radio, "toggle": _draw_toggle,
    "dropdown": _draw_dropdown, "slider": _draw_slider,
    "text_input": _draw_text_input, "textarea": _draw_textarea,
}


# ---------------------------------------------------------------------------
# Degradations and injected variants
# ---------------------------------------------------------------------------

def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _noise(rng: np.random.Generator, img: Image.Image, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, sigma, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _degrade(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Make crops look captured, not drawn: slight blur, sensor-like noise, JPEG round trips."""
    if rng.random() < 0.15:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    if rng.random() < 0.5:
        img = _noise(rng, img, rng.uniform(1.0, 5.0))
    if rng.random() < 0.35:
        img = _jpeg(img, int(rng.integers(55, 93)))
    return img


def _near_copy(rng: np.random.Generator, img: Image.Image) -> tuple[Image.Image, str]:
    how = _choice(rng, ["resize", "recompress", "crop", "resize+recompress"])
    out, parts = img, []
    if how.startswith("resize"):
        f = float(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.15, 1.3)]))
        out = out.resize((max(8, round(out.width * f)), max(8, round(out.height * f))), Image.Resampling.LANCZOS)
        parts.append(f"resize({f:.2f})")
    if how == "crop":
        # 1 px up to ~6 % per side: a slightly different crop box of the same element
        c = [int(rng.integers(1, max(1, round(0.06 * dim)) + 1)) for dim in (out.width, out.height) * 2]
        if out.width - c[0] - c[2] >= 8 and out.height - c[1] - c[3] >= 8:
            out = out.crop((c[0], c[1], out.width - c[2], out.height - c[3]))
            parts.append("crop({},{},{},{})".format(*c))
        else:
            how = "recompress"
    if how.endswith("recompress"):
        q = int(rng.integers(40, 75))
        out = _jpeg(out, q)
        parts.append(f"jpeg({q})")
    return out, "+".join(parts)


def _uniform(rng: np.random.Generator) -> tuple[Image.Image, int, str]:
    """A blank crop: solid colour, or the same plus faint noise (pixel std <= ~1)."""
    st = _Style.draw(rng)
    color = [st.bg, st.surface, st.accent][int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
    w, h = int(rng.integers(16, 241)), int(rng.integers(12, 81))
    img = Image.new("RGB", (w, h), color)
    if rng.random() < 0.5:
        return img, int(st.dark), "solid"
    return _noise(rng, img, rng.uniform(0.3, 0.9)), int(st.dark), "near_solid"


# ---------------------------------------------------------------------------
# Unseen (out-of-distribution) images
# ---------------------------------------------------------------------------

def _ood_size(rng) -> tuple[int, int]:
    w = int(rng.integers(64, 161))
    return w, int(w * rng.uniform(0.6, 1.2))


def _value_noise(rng, w: int, h: int, octaves: int = 4) -> np.ndarray:
    """Smooth fractal noise in [0, 1], shape (h, w): upsampled random grids summed over octaves."""
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = 2 ** (o + 2)
        grid = Image.fromarray((rng.random((g, g)) * 255).astype(np.uint8), "L")
        acc += amp * np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0
        total += amp
        amp *= 0.5
    acc /= total
    return (acc - acc.min()) / max(1e-6, float(acc.max() - acc.min()))


def _palette_map(v: np.ndarray, colors: list) -> Image.Image:
    c = np.asarray(colors, np.float32)
    pos = v * (len(c) - 1)
    i = np.clip(pos.astype(int), 0, len(c) - 2)
    t = (pos - i)[..., None]
    rgb = c[i] * (1 - t) + c[i + 1] * t
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _rand_color(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _ood_gradient(rng) -> Image.Image:
    w, h = _ood_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * math.pi)
        v = xx * math.cos(a) + yy * math.sin(a)
    else:
        v = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
    v = (v - v.min()) / max(1e-6, float(v.max() - v.min()))
    return _palette_map(v, [_rand_color(rng) for _ in range(int(rng.integers(2, 4)))])


def _ood_clouds(rng) -> Image.Image:
    w, h = _ood_size(rng)
    return _palette_map(_value_noise(rng, w, h, 5), [_rand_color(rng) for _ in range(3)])


def _ood_texture(rng) -> Image.Image:
    """Wood / marble-like: sine bands warped by fractal noise."""
    w, h = _ood_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.05, 0.25)
    v = 0.5 + 0.5 * np.sin(f * (xx + 0.6 * yy) + 8.0 * _value_noise(rng, w, h, 4))
    base = _rand_color(rng)
    return _palette_map(v, [_mix(base, (0, 0, 0), 0.5), base, _mix(base, (255, 255, 255), 0.4)])


def _ood_landscape(rng) -> Image.Image:
    w, h = _ood_size(rng)
    sky = _palette_map(np.repeat(np.linspace(0, 1, h, dtype=np.float32)[:, None], w, axis=1),
                       [_jitter(rng, (90, 150, 230), 30), _jitter(rng, (250, 200, 160), 30)])
    d = ImageDraw.Draw(sky)
    if rng.random() < 0.6:
        sx, sy, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.4) * h, rng.uniform(0.05, 0.12) * w
        d.ellipse([sx - r, sy - r, sx + r, sy + r], fill=_jitter(rng, (255, 230, 150), 20))
    for layer in range(int(rng.integers(2, 4))):
        base = h * (0.45 + 0.15 * layer)
        xs = np.linspace(0, w, 12)
        ys = base + _value_noise(rng, 12, 1, 2)[0] * h * 0.2 - h * 0.1
        col = _mix(_jitter(rng, (60, 110, 60), 30), (20, 30, 20), 0.25 * layer)
        d.polygon([(0, h)] + list(zip(xs.tolist(), ys.tolist())) + [(w, h)], fill=col)
    return _noise(rng, sky, 3.0)


def _ood_shapes(rng) -> Image.Image:
    w, h = _ood_size(rng)
    img = Image.new("RGB", (w, h), _rand_color(rng))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, w / 3)
        kind = int(rng.integers(3))
        if kind == 0:
            d.ellipse([x - r, y - r, x + r, y + r], fill=_rand_color(rng))
        elif kind == 1:
            n = int(rng.integers(3, 8))
            d.polygon([(x + r * math.cos(a), y + r * math.sin(a))
                       for a in np.sort(rng.uniform(0, 2 * math.pi, n))], fill=_rand_color(rng))
        else:
            d.line([(x, y), (rng.uniform(0, w), rng.uniform(0, h))], fill=_rand_color(rng),
                   width=int(rng.integers(2, 8)))
    return img


def _ood_noise(rng) -> Image.Image:
    w, h = _ood_size(rng)
    arr = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    img = Image.fromarray(arr, "RGB").resize((w, h), Image.Resampling.NEAREST if rng.random() < 0.5
                                             else Image.Resampling.BILINEAR)
    return _noise(rng, img, 12.0)


def _ood_mosaic(rng) -> Image.Image:
    w, h = _ood_size(rng)
    cell = int(rng.integers(6, 24))
    yy, xx = np.mgrid[0:h, 0:w]
    v = ((xx // cell + yy // cell) % 2).astype(np.float32)
    img = _palette_map(v, [_rand_color(rng), _rand_color(rng)])
    return img.rotate(float(rng.uniform(0, 90)), resample=Image.Resampling.BILINEAR, fillcolor=_rand_color(rng))


_UNSEEN: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "gradient": _ood_gradient, "clouds": _ood_clouds, "texture": _ood_texture, "landscape": _ood_landscape,
    "shapes": _ood_shapes, "noise": _ood_noise, "mosaic": _ood_mosaic,
}
_UNSEEN_KINDS = tuple(_UNSEEN)


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
