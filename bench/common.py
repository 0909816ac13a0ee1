"""What every bench script shares: repeats summarised as median and min-max.

A figure in the README is never one run: each bench repeats its measurement (``REPEATS``,
at least 3) and stores, for every time or ratio it measured (floats; counts stay plain), ``{"median", "min", "max", "n",
"values"}`` (:func:`spread`). Ratios are computed *inside* each repeat (both sides timed
back to back, on the same data, in the same process state) and only then summarised, so a
busy machine slows both sides of one ratio alike.

>>> spread([3.0, 1.0, 2.0])["median"]
2.0
>>> repeated(lambda: {"a_s": 1.0, "b_s": 2.0, "name": "x"}, 3, ratios={"b_over_a": ("b_s", "a_s")})["b_over_a"]["max"]
2.0
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Mapping, Sequence

#: Repeats per figure: the README shows the median and the min-max of these.
REPEATS = 3


def spread(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """Median, min, max and the values themselves (rounded to ``digits``)."""
    vals = [float(v) for v in values]
    r = (lambda v: round(v, digits))
    return {"median": r(statistics.median(vals)), "min": r(min(vals)), "max": r(max(vals)), "n": len(vals),
            "values": [r(v) for v in vals]}


def repeated(measure: Callable[[], Mapping[str, Any]], n: int = REPEATS, *,
             ratios: Mapping[str, tuple[str, str]] = (), digits: int = 4) -> dict[str, Any]:
    """Call ``measure()`` ``n`` times; every float becomes a :func:`spread`, other values (counts, names) keep the first.

    ``ratios`` names ``{out_key: (numerator_key, denominator_key)}`` computed within each repeat
    before summarising (a ratio of medians would pair numbers from different repeats).
    """
    runs = [dict(measure()) for _ in range(n)]
    for r in runs:
        for key, (num, den) in dict(ratios).items():
            r[key] = r[num] / r[den]
    out: dict[str, Any] = {"repeats": n}
    for key, first in runs[0].items():
        out[key] = spread([r[key] for r in runs], digits) if isinstance(first, float) else first
    return out
