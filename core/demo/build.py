"""Building the demo folder: draw the clean crops, inject the problems, write images, labels and ground truth.

:func:`_build` draws every labelled image from one seeded generator, injects flipped labels,
hierarchy conflicts, exact and near duplicates, blank and corrupt files, shuffles and names
them, and writes ``images/``, ``labels.csv``, ``ground_truth.csv``, ``unseen/``,
``README.txt`` and the manifest (last) into the staging folder.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from core.demo.contents import (_FORMAT, _GENERATOR, DATASET_OPTIONS, ELEMENTS, GROUND_TRUTH_COLUMNS, GROUP_OF,
                                HIERARCHY, LABEL_COLUMNS, MANIFEST, PROBLEMS, RARE_CLASS, RARE_COUNT)
from core.demo.draw import _RENDERERS, _Style
from core.demo.variants import _UNSEEN, _UNSEEN_KINDS, _degrade, _near_copy, _uniform
from core.workspace import atomic_write_bytes, atomic_write_json

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
