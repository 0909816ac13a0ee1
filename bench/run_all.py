"""Run every bench/bench_*.py in its own process and collect their JSON results.

Each benchmark prints one JSON object as its last stdout line (side-by-side figures and
ratios, median and min-max over repeats). Results are written to bench/results/<name>.json
(committed: they are the evidence for README's figures), then README's Performance table
is rewritten from them (``bench/perf_table.py``).
Usage: python bench/run_all.py [name-substring ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def main(argv: list[str]) -> int:
    wanted = argv[1:]
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        if wanted and not any(w in script.stem for w in wanted):
            continue
        print(f"== {script.stem}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        if proc.returncode != 0 or not lines:
            failed.append(script.stem)
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n")
            continue
        try:
            result = json.loads(lines[-1])
        except ValueError:
            failed.append(script.stem)
            print("last line is not JSON:", lines[-1][:500])
            continue
        result["_wall_s"] = round(time.monotonic() - t0, 1)
        (results_dir / f"{script.stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2), flush=True)
    sys.path.insert(0, str(REPO))
    from bench import perf_table

    print("README's Performance table", "rewritten" if perf_table.update_readme() else "unchanged")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
