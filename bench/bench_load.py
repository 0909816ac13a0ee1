"""Load check: the app serving three browser sessions while a run trains; every page still renders.

1. A fresh workspace with the demo dataset and one small finished run (so Evaluate, Embeddings,
   Predict and Report have something to show).
2. ``streamlit run app.py`` on that workspace (a real server, output to a log file).
3. **Baseline**: one Chromium session visits every page, nothing training.
4. **Loaded**, ``common.REPEATS`` (3) times: a training run is launched (``core.jobs.launch``:
   CNN at 64 px on the demo, ~3 s per epoch on 2 idle cores) and, while it trains, three
   Chromium sessions visit every page at the same time (each starting on a different page);
   the run is stopped afterwards. Per page, the median visit of each repeat gives the spread.

A page's *render time* is from ``page.goto`` until the script run has finished
(``data-test-script-state="notRunning"``) and its ``st.title`` is on screen; a page that shows
an ``stException`` counts as a failure. Prints one JSON object as the last stdout line:
per page baseline and loaded times (median / max), the loaded / baseline ratio, the overall
max, failures, and what the training run did meanwhile.

With ``--workspace PATH`` it instead measures the pages on an existing workspace (its newest
dataset, nothing training; :func:`page_renders`): one session, the first (cold: the server
computes and caches) and the later (warm) visits of each page. ``bench_scale.py`` uses it on its
100k-image workspace.

Usage: ``python bench/bench_load.py [--sessions 3] [--rounds 2]`` or
``python bench/bench_load.py --workspace PATH [--visits 3]``. Needs Debian's chromium.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import REPEATS, spread  # noqa: E402

PAGES = [("data", "/"), ("clean", "/clean"), ("train", "/train"), ("evaluate", "/evaluate"),
         ("embeddings", "/embeddings"), ("predict", "/predict"), ("report", "/report")]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, log_path: Path, *, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LOUPE_HOME": str(home), "PYTHONPATH": str(REPO), **(env or {})}
    fh = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.fileWatcherType", "none", "--server.port", str(port), "--server.address", "127.0.0.1",
         "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early:\n{log_path.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("streamlit did not become healthy in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server :func:`start_server` started (killed if it has not exited within 15 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


#: True in the page when every visible chart container holds a chart plotly has drawn.
_CHARTS_DRAWN = """() => [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stPlotlyChart']")]
    .filter(b => b.offsetParent !== null)
    .every(b => b.querySelector('.js-plotly-plot .main-svg'))"""


async def render(page, url: str, timeout_ms: float = 180_000, *, charts: bool = False) -> tuple[float, bool]:
    """Seconds until the page's script finished and its title is shown (with ``charts``, also until every
    visible plotly chart is drawn: a big map is drawn a second after the script ends); and whether it
    showed an exception."""
    t0 = time.perf_counter()
    await page.goto(url)
    await page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    await page.wait_for_selector("[data-testid='stMain'] h1", timeout=timeout_ms)
    await page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout_ms)
    if charts:
        await page.wait_for_function(_CHARTS_DRAWN, timeout=timeout_ms, polling=20)
    seconds = time.perf_counter() - t0
    failed = await page.locator("[data-testid='stException']").count() > 0
    return seconds, failed


async def timed_visit(page, url: str, name: str, out: dict[str, list[float]], failures: list[str], *,
                      where: str, label: str | None = None, timeout_ms: float = 180_000, charts: bool = False) -> None:
    """One :func:`render` of ``url``: its seconds appended to ``out[name]``, a timeout or a shown
    exception to ``failures`` (as ``label``, default ``name``), and a log line."""
    label = label or name
    try:
        seconds, failed = await render(page, url, timeout_ms=timeout_ms, charts=charts)
    except Exception as exc:  # noqa: BLE001 - a timeout is a result here
        failures.append(f"{label}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
        return
    out.setdefault(name, []).append(seconds)
    log(f"  {where}: {label} rendered in {seconds:.1f}s" + (" (stException!)" if failed else ""))
    if failed:
        failures.append(f"{label}: stException shown")


async def session(browser, base: str, pages: list[tuple[str, str]], offset: int, rounds: int,
                  out: dict[str, list[float]], failures: list[str]) -> None:
    ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await ctx.new_page()
    order = pages[offset:] + pages[:offset]
    for _ in range(rounds):
        for name, path in order:
            await timed_visit(page, base + path, name, out, failures, where=f"session {offset}")
    await ctx.close()


async def visit(base: str, pages: list[tuple[str, str]], *, sessions: int, rounds: int):
    from playwright.async_api import async_playwright

    out: dict[str, list[float]] = {}
    failures: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        step = max(1, len(pages) // max(sessions, 1))
        await asyncio.gather(*(session(browser, base, pages, (i * step) % len(pages), rounds, out, failures)
                               for i in range(sessions)))
        await browser.close()
    return out, failures


#: Pages measured on a large workspace (the ones that show every sample: tables, grids, the map).
#: The pages bench_scale times at 100k; the Embeddings page per tab (only the open tab runs).
SCALE_PAGES = [("data", "/"), ("clean", "/clean"), ("embeddings", "/embeddings"),
               ("embeddings_clusters", "/embeddings?emb_tab=Clusters"),
               ("embeddings_ood", "/embeddings?emb_tab=" + urllib.parse.quote("Unusual images (OOD)"))]


async def _visits(base: str, pages: list[tuple[str, str]], visits: int, timeout_ms: float
                  ) -> tuple[dict[str, list[float]], list[str]]:
    from playwright.async_api import async_playwright

    out: dict[str, list[float]] = {}
    failures: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        ctx = await browser.new_context(viewport={"width": 1400, "height": 1000})
        page = await ctx.new_page()
        for name, path in pages:
            for v in range(visits):
                await timed_visit(page, base + path, name, out, failures, where="one session",
                                  label=f"{name} visit {v}", timeout_ms=timeout_ms, charts=True)
                if name == "embeddings" and v:  # the map is drawn: a box selection, until its thumbnails show
                    try:
                        seconds = await box_select(page, timeout_ms)
                    except Exception as exc:  # noqa: BLE001 - a timeout is a result here
                        failures.append(f"embeddings selection {v}: {type(exc).__name__}: "
                                        f"{str(exc).splitlines()[0][:200]}")
                    else:
                        out.setdefault("embeddings_selection", []).append(seconds)
                        log(f"  one session: box selection {v} showed its images in {seconds:.1f}s")
        await browser.close()
    return out, failures


async def box_select(page, timeout_ms: float) -> float:
    """Seconds from a box selection over the middle of the Embeddings map (mouse released) until the
    selection's summary is shown and every thumbnail of its gallery has loaded and decoded."""
    chart = page.locator(".js-plotly-plot").first
    await chart.wait_for(timeout=timeout_ms)
    box = await chart.locator(".nsewdrag").first.bounding_box()
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    x1, y1 = box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7
    await page.mouse.move(x0, y0)
    await page.mouse.down()
    await page.mouse.move(x1, y1, steps=8)
    await page.mouse.up()
    t0 = time.perf_counter()
    summary = page.get_by_text("selected —").first
    await summary.wait_for(timeout=timeout_ms)
    await page.wait_for_selector("[data-test-script-state='notRunning']", timeout=timeout_ms)
    await summary.scroll_into_view_if_needed()
    await page.wait_for_function("""() => {
        const imgs = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stImage'] img")];
        return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
    }""", timeout=timeout_ms)
    return time.perf_counter() - t0


def page_renders(workspace: Path, *, pages: list[tuple[str, str]] = SCALE_PAGES, visits: int = 6,
                 timeout_s: float = 900) -> dict:
    """Render times of ``pages`` on an existing workspace (until the script finished and every visible chart
    is drawn): per page the first visit (cold) and the median / max of the later ones (warm), one browser
    session, nothing else running: the server's
    background UMAP compilation (``ui.warmup``, a minute of one core after each start) is turned
    off, so a warm visit is the steady state, not a page sharing the CPUs with numba."""
    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-pages-"))
    proc, url = start_server(workspace, tmp / "streamlit.log", env={"LOUPE_UMAP_WARMUP": "0"})
    try:
        times, failures = asyncio.run(_visits(url, pages, visits, timeout_s * 1000))
    finally:
        stop_server(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    result: dict = {"visits": visits, "pages": {}, "failures": failures}
    for name, _ in pages:
        t = times.get(name, [])
        result["pages"][name] = {"cold_s": round(t[0], 2) if t else None,
                                 "warm_median_s": round(statistics.median(t[1:]), 2) if len(t) > 1 else None,
                                 "warm_max_s": round(max(t[1:]), 2) if len(t) > 1 else None}
    warm = [v["warm_max_s"] for v in result["pages"].values() if v["warm_max_s"] is not None]
    result["warm_max_s"] = max(warm) if warm else None
    sel = times.get("embeddings_selection", [])
    if sel:
        result["embeddings_selection"] = {"median_s": round(statistics.median(sel), 2), "max_s": round(max(sel), 2),
                                          "n": len(sel)}
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", type=Path, help="measure the pages on this existing workspace instead")
    ap.add_argument("--visits", type=int, default=6, help="with --workspace: visits per page (the first is cold)")
    ap.add_argument("--sessions", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2, help="visits of every page per session while training")
    ap.add_argument("--epochs", type=int, default=300,
                    help="epochs of the training run (64 px CNN on the demo, ~3 s each on 2 idle cores); it is "
                         "stopped once the pages are measured, so it trains during the whole loaded phase")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit("Debian's chromium is missing (apt-get install chromium)")
    if args.workspace:
        result = page_renders(args.workspace, visits=args.visits)
        print(json.dumps(result, sort_keys=True))
        return 0 if not result["failures"] else 1

    from core import demo, jobs, runs
    from core.training import recommended_config
    from core.workspace import home

    tmp = Path(tempfile.mkdtemp(prefix="loupe-bench-load-"))
    ws = home(tmp / "ws").ensure()
    t0 = time.perf_counter()
    demo.ensure_demo_dataset(ws)
    dataset_id = ws.list_datasets()[0]["dataset_id"]
    log(f"demo ready in {time.perf_counter() - t0:.1f}s; training a small finished run for the result pages")
    small = recommended_config(model="cnn", dataset_id=dataset_id, image_size=32, epochs=4, batch_size=32,
                               filters=16, embedding_dim=16, patience=0, augmentation=False)
    jobs.run_worker(small, out=ws.runs_dir / "bench-small", workspace=ws)
    pages = [(n, p) for n, p in PAGES if (REPO / "views" / f"{n}.py").exists()]

    proc, url = start_server(ws.root, tmp / "streamlit.log")
    result: dict = {"sessions": args.sessions, "rounds": args.rounds, "pages": {}, "workspace": str(ws.root)}
    try:
        log(f"server at {url}; baseline: 1 session, nothing training")
        asyncio.run(visit(url, pages, sessions=1, rounds=1))  # warm-up: caches, imports
        base, base_fail = asyncio.run(visit(url, pages, sessions=1, rounds=1))

        repeats = []
        for k in range(REPEATS):  # each repeat: a new training run, then every session visits every page
            run_id = jobs.launch(recommended_config(model="cnn", dataset_id=dataset_id, image_size=64,
                                                    epochs=args.epochs, batch_size=32, patience=0), workspace=ws)
            rd = runs.RunDir(ws.runs_dir / run_id)
            deadline = time.monotonic() + 300
            while runs.read_status(rd).get("state") != "running" or runs.read_metrics(rd).empty:
                if time.monotonic() > deadline or runs.read_status(rd).get("state") in ("failed", "done", "stopped"):
                    raise RuntimeError(f"the training run did not start: {runs.read_status(rd)}")
                time.sleep(0.5)
            log(f"repeat {k}: training {run_id}; loaded: {args.sessions} sessions x {args.rounds} rounds")
            t_load = time.perf_counter()
            loaded, load_fail = asyncio.run(visit(url, pages, sessions=args.sessions, rounds=args.rounds))
            load_seconds = time.perf_counter() - t_load
            status = runs.read_status(rd)
            epochs_during = int((runs.read_metrics(rd).get("kind") == "epoch").sum()) \
                if not runs.read_metrics(rd).empty else 0
            jobs.stop(rd.path)
            repeats.append({"loaded": loaded, "failures": load_fail, "training": {
                "run_id": run_id, "state_during_whole_phase": runs.effective_state(status) == "running",
                "epochs_done_after": epochs_during, "load_phase_seconds": round(load_seconds, 1)}})
        result["repeats"] = REPEATS
        result["training"] = [r["training"] for r in repeats]
        for name, _ in pages:
            b = base.get(name, [])
            meds = [statistics.median(r["loaded"][name]) for r in repeats if r["loaded"].get(name)]
            row = {"baseline_s": round(statistics.median(b), 2) if b else None,
                   "loaded_median_s": spread(meds, 2) if meds else None,
                   "loaded_max_s": round(max(max(r["loaded"][name]) for r in repeats if r["loaded"].get(name)), 2)
                   if meds else None,
                   "n": sum(len(r["loaded"].get(name, [])) for r in repeats)}
            result["pages"][name] = row
        slowest = [max(s for v in r["loaded"].values() for s in v) for r in repeats if any(r["loaded"].values())]
        result["max_s"] = spread(slowest, 2) if slowest else None
        result["baseline_max_s"] = round(max(s for v in base.values() for s in v), 2) if base else None
        result["failures"] = base_fail + [f for r in repeats for f in r["failures"]]
        result["all_pages_rendered"] = not result["failures"] and all(
            result["pages"][n]["n"] == REPEATS * args.sessions * args.rounds for n, _ in pages)
    finally:
        stop_server(proc)
        for child in ws.runs_dir.iterdir():  # never leave a worker behind (the in-process run recorded our pid)
            st = runs.read_status(child) if child.is_dir() else {}
            if st.get("pid") and st["pid"] != os.getpid() and runs.effective_state(st) in runs.ACTIVE_STATES:
                os.kill(st["pid"], 9)
    print(json.dumps(result, sort_keys=True))
    return 0 if result.get("all_pages_rendered") else 1


if __name__ == "__main__":
    raise SystemExit(main())
