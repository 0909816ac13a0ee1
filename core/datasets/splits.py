"""The stored split: a seeded, stratified train/val/test assignment that never moves a sample.

:func:`assign_splits` places the unassigned samples of each stratum; ``_strata`` gives each
sample its stratum (the class; the path of levels for hierarchies; the rarest positive
label for multi-label).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from typing import Sequence

import numpy as np
import pandas as pd

from core.datasets.types import DEFAULT_FRACTIONS, SPLITS

def _unit_hash(seed: int, sample_id: str) -> float:
    h = hashlib.sha1(f"{seed}\0{sample_id}".encode("utf-8", "surrogateescape")).hexdigest()
    return int(h[:13], 16) / float(16 ** 13)


def assign_splits(strata: Sequence[str], sample_ids: Sequence[str], *, existing: Sequence[str | None] | None = None,
                  seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """Seeded, stratified train/val/test assignment that never moves an existing assignment.

    Within each stratum the unassigned samples are taken in a seeded pseudo-random order
    (a hash of ``seed`` and the sample id, so the result does not depend on row order) and
    each goes to the split furthest below its target share of the stratum so far (ties:
    test, then val, then train). With 70/15/15 a stratum of 1 or 2 goes to train, of 3
    gives 2 train + 1 test, of 5 gives 3 / 1 / 1, of 20 gives 14 / 3 / 3.

    Parameters
    ----------
    strata : sequence of str, length N
        Stratum (class) of each sample.
    sample_ids : sequence of str, length N
        Stable unique ids.
    existing : sequence of (str or None), length N, optional
        Splits already fixed (kept as they are); None = to assign.
    seed : int
    fractions : (train, val, test) floats summing to 1

    Returns
    -------
    list of str, length N
        ``"train"``, ``"val"`` or ``"test"`` per sample.
    """
    n = len(strata)
    if len(sample_ids) != n or (existing is not None and len(existing) != n):
        raise ValueError(f"strata, sample_ids and existing must have the same length; received {n}, "
                         f"{len(sample_ids)}, {None if existing is None else len(existing)}")
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or not math.isclose(sum(fr), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1; received fractions={fractions!r}")
    out: list[str | None] = list(existing) if existing is not None else [None] * n
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(strata):
        groups.setdefault(str(s), []).append(i)
    target = dict(zip(SPLITS, fr))
    prefer = ("test", "val", "train")
    for idx in groups.values():
        counts = Counter(out[i] for i in idx if out[i] is not None)
        total = sum(counts.values())
        todo = sorted((i for i in idx if out[i] is None), key=lambda i: (_unit_hash(seed, sample_ids[i]), sample_ids[i]))
        for i in todo:
            total += 1
            best = max(prefer, key=lambda s: (target[s] * total - counts[s], -prefer.index(s)))
            out[i] = best
            counts[best] += 1
    return [str(s) for s in out]


def _strata(samples: pd.DataFrame, task: str, label_cols: tuple[str, ...]) -> list[str]:
    if task in ("multiclass", "binary"):
        return samples[label_cols[0]].astype(str).tolist()
    if task == "hierarchical":
        path = samples[label_cols[0]].astype(str)
        for c in label_cols[1:]:  # column-wise concatenation: a row-wise agg costs ~0.1 ms per row
            path = path + " > " + samples[c].astype(str)
        return path.tolist()
    Y = samples[list(label_cols)].to_numpy(dtype=float) if label_cols else np.zeros((len(samples), 0))
    pos = np.nansum(Y == 1.0, axis=0)
    out = []
    for row in Y:
        idx = np.flatnonzero(row == 1.0)
        if idx.size:
            out.append(label_cols[int(idx[np.argmin(pos[idx])])])
        elif np.isnan(row).all() and row.size:
            out.append("(all missing)")
        else:
            out.append("(none)")
    return out
