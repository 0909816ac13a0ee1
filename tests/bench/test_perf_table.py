"""README's Performance table is exactly what bench/perf_table.py writes from bench/results/*.json."""

from __future__ import annotations

import json
from pathlib import Path

from bench import perf_table
from bench.common import repeated, spread

REPO = Path(__file__).resolve().parents[2]


def test_readme_table_is_generated_from_the_committed_results():
    results = sorted(p.stem for p in (REPO / "bench" / "results").glob("bench_*.json"))
    assert results == sorted(perf_table.BUILDERS), "every bench script has committed results, and only those"
    table = perf_table.render()
    assert perf_table.block((REPO / "README.md").read_text()) == table, \
        "README's Performance table differs from bench/results: run python bench/perf_table.py"
    assert table.count("\n") >= 20


def test_every_row_names_its_script_and_every_spread_is_median_min_max():
    for line in perf_table.render().splitlines()[2:]:
        cells = line.strip("|").split(" | ")
        assert len(cells) == 5 and cells[4].startswith("`bench/bench_"), line
    for path in (REPO / "bench" / "results").glob("bench_*.json"):
        def walk(node):
            if isinstance(node, dict):
                if {"median", "min", "max", "values"} <= set(node):
                    vals = sorted(node["values"])
                    assert node["n"] == len(vals) and node["min"] == vals[0] and node["max"] == vals[-1]
                    assert vals[0] <= node["median"] <= vals[-1]
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        walk(json.loads(path.read_text()))


def test_update_rewrites_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{perf_table.BEGIN}\nstale | row\n{perf_table.END}\nafter\n")
    assert perf_table.update_readme(readme) is True
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{perf_table.END}\nafter\n")
    assert perf_table.block(text) == perf_table.render()
    assert perf_table.update_readme(readme) is False


def test_repeats_keep_ratios_within_one_repeat():
    values = iter([(1.0, 1.0), (2.0, 6.0), (4.0, 3.0)])

    def measure():
        a, b = next(values)
        return {"a_s": a, "b_s": b, "count": 7}

    out = repeated(measure, 3, ratios={"b_over_a": ("b_s", "a_s")})
    assert out["count"] == 7 and out["repeats"] == 3
    assert out["b_over_a"]["values"] == [1.0, 3.0, 0.75]
    assert out["b_over_a"]["median"] == 1.0  # the median of per-repeat ratios, not median(b) / median(a) = 1.5
    assert spread([5, 1, 3])["median"] == 3.0
