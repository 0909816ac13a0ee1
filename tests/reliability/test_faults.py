"""Faults: a killed worker, a server killed mid-review, concurrent launches, a read-only or full
workspace, corrupt run files.

Real failures only: ``kill -9`` of a real worker process and of the real ``streamlit run`` server
while Chromium's click is being handled, a real tmpfs that is full or
mounted read-only (when this machine lets the test mount one; otherwise the kernel's
per-process file-size limit ``RLIMIT_FSIZE`` makes the same writes fail for real), a
workspace path that cannot be a folder, bytes really written into run files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from core import audit, datasets, demo, jobs, models, review, runs
from core.workspace import WorkspaceError, home

from tests.conftest import CHROMIUM, colour_squares, demo_dataset_id, tiny_train_config, wait_for, worker_log
from tests.e2e.conftest import assert_no_exception, screenshot, start_server, wait_for_app
from tests.reliability.conftest import tree_snapshot

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

@pytest.fixture
def colours(tmp_path) -> Path:
    """36 tiny images in 3 class folders (learnable: a coloured square on noise)."""
    return colour_squares(tmp_path / "colours")


def _wait(pred, timeout=180.0, what="condition"):
    return wait_for(pred, timeout, what)


def _partials(root: Path) -> list[str]:
    """Temp / partial files an interrupted write could leave behind."""
    return sorted(str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".partial")) or ".partial" in p.name)


# ---------------------------------------------------------------------------
# kill -9, then two launches at once
# ---------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_mid_training_while_two_concurrent_launches_wait_then_both_finish(colours, ws):
    """Two sessions launch at the same instant while a run trains; that run's worker is killed with
    SIGKILL mid-training -> it shows interrupted, its best checkpoint loads, and the two queued runs
    then train one after the other, each in its own intact run directory. (The queue / SIGTERM /
    kill -9 basics are in tests/core/test_jobs.py; this adds what happens *after* the kill.)"""
    long_id = jobs.launch(tiny_train_config(colours, epochs=400), workspace=ws)
    long_rd = runs.RunDir(ws.runs_dir / long_id)
    _wait(lambda: rd_epochs(long_rd) >= 1 and long_rd.model.exists(), what=f"one epoch; log: {worker_log(long_rd)}")

    # two "browser sessions" launch at the same instant
    barrier = threading.Barrier(2)
    ids: list[str] = []
    errors: list[BaseException] = []

    def session(seed: int) -> None:
        try:
            barrier.wait()
            ids.append(jobs.launch(tiny_train_config(colours, epochs=1, seed=seed), workspace=ws))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=session, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(ids)) == 2
    for run_id in ids:  # both wait in the queue behind the training run
        _wait(lambda: runs.read_status(ws.runs_dir / run_id).get("pid"), timeout=60, what="queued worker pid")
        assert runs.effective_state(runs.read_status(ws.runs_dir / run_id)) == "queued"

    # kill -9 the training worker, mid-epoch
    _wait(lambda: rd_epochs(long_rd) >= 1, what="training to go on")
    os.kill(runs.read_status(long_rd)["pid"], signal.SIGKILL)
    _wait(lambda: runs.effective_state(runs.read_status(long_rd)) == "interrupted", timeout=30, what="interrupted")
    model_mtime = long_rd.model.stat().st_mtime_ns
    model = models.load_model(long_rd.model)
    assert model.predict(np.zeros((1, 16, 16, 3), "float32"), verbose=0).shape == (1, 3)

    for run_id in ids:
        rd = runs.RunDir(ws.runs_dir / run_id)
        _wait(lambda: runs.read_status(rd)["state"] in ("done", "failed", "stopped"), timeout=300,
              what=f"{run_id} to finish; log: {worker_log(rd)}")
        st = runs.read_status(rd)
        assert st["state"] == "done", worker_log(rd)
        cfg = runs.read_config(rd)
        assert cfg["run_id"] == run_id and cfg["seed"] in (1, 2)
        ep = runs.read_metrics(rd).query("kind == 'epoch'")
        assert list(ep["epoch"].astype(int)) == [1]                # its own epoch, nobody else's
        assert runs.read_predictions(rd, split="test").n_samples > 0
        assert models.load_model(rd.model) is not None
    s = sorted((runs.read_status(ws.runs_dir / i) for i in ids), key=lambda st: st["started_at"])
    assert s[1]["started_at"] >= s[0]["finished_at"] - 0.5     # queued: one after the other
    table = jobs.list_runs(ws).set_index("run_id")
    assert table.loc[long_id, "state"] == "interrupted" and bool(table.loc[long_id, "has_model"])
    assert (table.loc[ids, "state"] == "done").all()
    assert long_rd.model.stat().st_mtime_ns == model_mtime       # the interrupted run was left alone
    # every visible file is whole; only a killed writer's hidden temp file may remain in its own run
    assert json.loads(long_rd.status.read_text())["state"] == "running"  # whole JSON, not a torn file
    assert [p for p in _partials(ws.root) if not p.startswith(str(long_rd.path) + "/.")] == []


def rd_epochs(rd: runs.RunDir) -> int:
    m = runs.read_metrics(rd)
    return 0 if m.empty or "kind" not in m.columns else int((m["kind"] == "epoch").sum())


# ---------------------------------------------------------------------------
# corrupt run files
# ---------------------------------------------------------------------------

def _synthetic_run(path: Path) -> runs.RunDir:
    rd = runs.RunDir(path)
    rd.path.mkdir(parents=True)
    labels = {"task": "multiclass", "classes": ["cat", "dog"]}
    runs.write_config(rd, {"task": "multiclass", "model": "cnn", "monitor": "val_macro_f1", "dataset_id": "d1"})
    runs.write_status(rd, "done", epoch=3, message="finished")
    for e, f1 in enumerate((0.5, 0.8, 0.7), start=1):
        runs.append_metrics(rd, {"kind": "epoch", "epoch": e, "loss": 1.0 / e, "val_macro_f1": f1})
    runs.write_labels(rd, labels)
    frame = runs.predictions_frame(labels, sample_ids=["a", "b", "c"], paths=["/x/a.png", "/x/b.png", "/x/c.png"],
                                   splits="test", y_true=[0, 1, 1],
                                   probs=np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]))
    runs.write_predictions(rd, frame)
    return rd


def test_corrupt_metrics_line_and_status_json_keep_the_run_listed_and_readable(tmp_path):
    runs_dir = tmp_path / "runs"
    rd = _synthetic_run(runs_dir / "r-metrics")
    lines = rd.metrics.read_bytes().splitlines(keepends=True)
    rd.metrics.write_bytes(lines[0] + b'{"kind": "epoch", "epo\x00\xff garbage\n' + b"".join(lines[1:])
                           + b'{"kind": "epoch", "epoch": 4, "val_ma')  # a torn last line too
    m = runs.read_metrics(rd)
    assert list(m["epoch"]) == [1, 2, 3]
    row = runs.list_runs(runs_dir).set_index("run_id").loc["r-metrics"]
    assert row["state"] == "done" and row["best_value"] == 0.8 and row["best_epoch"] == 2

    for name, content in (("r-torn", b'{"state": "runn'), ("r-empty", b""), ("r-list", b"[1, 2]"),
                          ("r-binary", b"\x89PNG\r\n\x1a\n\x00\x00"), ("r-badstate", b'{"state": "exploded"}')):
        bad = _synthetic_run(runs_dir / name)
        bad.status.write_bytes(content)
    shutil.rmtree(runs_dir / "r-metrics")
    table = runs.list_runs(runs_dir).set_index("run_id")
    assert sorted(table.index) == ["r-badstate", "r-binary", "r-empty", "r-list", "r-torn"]
    for name in table.index:
        r = table.loc[name]
        assert r["state"] == "unknown" and "status.json" in r["message"], (name, r["message"])
        assert bool(r["has_predictions"]) and r["task"] == "multiclass"
        rd = runs.RunDir(runs_dir / name)
        assert runs.read_predictions(rd, split="test").n_samples == 3   # the results stay readable
        assert runs.read_labels(rd)["classes"] == ["cat", "dog"]
        assert len(runs.read_metrics(rd)) == 3
    # and the run can be written again: the next status replaces the corrupt one
    runs.write_status(runs_dir / "r-torn", "done", message="repaired")
    assert runs.list_runs(runs_dir).set_index("run_id").loc["r-torn", "state"] == "done"


# ---------------------------------------------------------------------------
# read-only and full workspaces
# ---------------------------------------------------------------------------

def _cli(*args: str, preexec=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, preexec_fn=preexec)


def test_unusable_workspace_path_is_a_clear_error_in_core_and_cli(corpus, corpus_snapshot, tmp_path):
    """Tests run as root, for whom chmod does not block writes: a path whose parent is a regular
    file can never be created, by anyone (ENOTDIR), so it stands in for a read-only workspace."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    ws = home(blocker / "ws")
    with pytest.raises(WorkspaceError, match="LOUPE_HOME") as err:
        datasets.load_dataset(datasets.DatasetSpec(path=str(corpus.folders)), workspace=ws)
    assert str(blocker / "ws") in str(err.value)
    proc = _cli("dataset", "inspect", str(corpus.folders), "--workspace", str(blocker / "ws"), "--json")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"error: Cannot use the workspace at {blocker / 'ws'}" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
    assert tree_snapshot(corpus.root) == corpus_snapshot


def _mount_tmpfs(target: Path, size: str) -> bool:
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)],
                          capture_output=True, text=True)
    return proc.returncode == 0


def _umount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A real 8 MB tmpfs mounted for this test, or None when this machine does not allow mounting."""
    target = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    if os.geteuid() != 0 or not shutil.which("mount") or not _mount_tmpfs(target, "8m"):
        yield None
        return
    try:
        yield target
    finally:
        _umount(target)


# One process loads the corpus into fresh workspaces with less and less free space. For each
# budget it prints one JSON line: ok, or the error type and message; a crash (SIGBUS from a
# memory-mapped write on a full disk) kills it and the test sees the missing lines.
_FULL_DISK_SCRIPT = r"""
import json, os, resource, signal, shutil, sys
from pathlib import Path
from core import datasets
from core.workspace import home

mode, base, folders = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
budgets = [int(b) for b in sys.argv[4].split(",")]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # rlimit mode: EFBIG errors instead of a signal
for i, budget in enumerate(budgets):
    root = base / f"ws{i}"
    filler = base / "filler"
    if mode == "tmpfs":
        if filler.exists():
            filler.unlink()
        st = os.statvfs(base)
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as fh:
            os.posix_fallocate(fh.fileno(), 0, max(1, free - budget))
    else:
        resource.setrlimit(resource.RLIMIT_FSIZE, (budget, resource.RLIM_INFINITY))
    try:
        ds = datasets.load_dataset(datasets.DatasetSpec(path=folders), workspace=home(root))
        out = {"budget": budget, "ok": True, "n": len(ds.samples)}
    except OSError as exc:
        out = {"budget": budget, "ok": False, "type": type(exc).__name__, "message": str(exc)}
    finally:
        if mode != "tmpfs":
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    leftovers = [str(p) for p in root.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    out["leftovers"] = leftovers
    print(json.dumps(out), flush=True)
    shutil.rmtree(root, ignore_errors=True)
"""


def test_full_disk_gives_a_clear_error_never_a_crash_or_partial_files(corpus, corpus_snapshot, tmp_path, tmpfs):
    if tmpfs is not None:
        mode, base = "tmpfs", tmpfs
        budgets = [64 << 10, 512 << 10, 900 << 10, 960 << 10, 1000 << 10, 1040 << 10, 1080 << 10, 6 << 20]
    else:  # no mount allowed here: the kernel's file-size limit makes the big writes fail instead
        mode, base = "rlimit", tmp_path / "rl"
        base.mkdir()
        budgets = [4 << 10, 64 << 10, 512 << 10, 64 << 20]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, mode, str(base), str(corpus.folders),
                           ",".join(map(str, budgets))], capture_output=True, text=True, env=env, timeout=300)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(results) == len(budgets), \
        f"rc={proc.returncode} (-7 = SIGBUS) after {results}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr
    failures = [r for r in results if not r["ok"]]
    assert failures, f"no budget was small enough to fail in {mode} mode: {results}"
    for r in failures:
        msg = r["message"]
        assert str(base) in msg, msg                                        # names where it could not write
        assert any(w in msg for w in ("No space left", "disk is full", "disk I/O error", "File too large",
                                      "could not be written")), msg
    assert results[-1]["ok"] and results[-1]["n"] == corpus.n_folder_valid  # with room, it loads
    assert all(r["leftovers"] == [] for r in results), results
    assert tree_snapshot(corpus.root) == corpus_snapshot


def test_read_only_workspace_refuses_writes_with_a_clear_message_and_still_reads(corpus, tmpfs):
    if tmpfs is None:
        pytest.skip("this machine does not allow mounting a tmpfs (the ENOTDIR test above covers the message)")
    ws = home(tmpfs / "ws").ensure()
    ds = datasets.load_dataset(datasets.DatasetSpec(path=str(corpus.table), labels=str(corpus.csv["bom"])),
                               workspace=ws)
    rd = _synthetic_run(ws.runs_dir / "r1")
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    with pytest.raises(OSError) as err:  # WorkspaceError is an OSError
        datasets.load_dataset(datasets.DatasetSpec(path=str(corpus.folders)), workspace=ws)
    assert str(tmpfs) in str(err.value) and "read-only" in str(err.value).lower(), str(err.value)
    with pytest.raises(OSError, match="Read-only file system"):
        runs.write_status(rd, "done", message="x")
    # what was saved before is still readable
    assert datasets.open_dataset(ws, ds.dataset_id).report.n_valid == 8
    assert runs.list_runs(ws.runs_dir).set_index("run_id").loc["r1", "state"] == "done"
    assert _partials(tmpfs) == []
    proc = _cli("dataset", "inspect", str(corpus.folders), "--workspace", str(ws.root))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and str(tmpfs) in proc.stderr, proc.stderr


# ---------------------------------------------------------------------------
# The server dies during review: every decision made before is there
# ---------------------------------------------------------------------------

def _queue_order(ws, ds) -> list[str]:
    """The samples of the Clean page's review queue with its default filters (every detector, pending),
    in display order, before any decision: each flagged sample once, at its first flag; never-loaded files out."""
    issues = audit.load_audit(ws, ds.dataset_id).issues
    loaded = set(ds.samples["sample_id"].astype(str))
    order = issues["sample_id"].astype(str).drop_duplicates()
    return [s for s in order if s in loaded]


def _rows(con: sqlite3.Connection) -> int:
    return con.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]


def _click_and_see_saved(page, click, message: str) -> None:
    """Click, then wait until the page says the decision was saved and the rerun has finished."""
    click()
    page.get_by_text(message, exact=False).first.wait_for(timeout=90_000)
    wait_for_app(page, timeout=90_000)
    assert_no_exception(page)


@pytest.mark.e2e
@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"Debian's chromium is missing at {CHROMIUM} (`make browser` installs it)")
def test_decisions_survive_the_server_being_killed_mid_review(page, tmp_path):
    """The real `streamlit run` server is SIGKILLed (its whole process group) while it handles a review
    click from Chromium; restarted on the same workspace, it has every decision and shows them.

    Three clicks on the Clean page's queue (exclude, keep, relabel through the card's popover) each
    complete: the page says "<action> · <sample>" and its rerun finishes. Then "Exclude all 12" is
    clicked and the server is killed *mid-click*, which here means: after the click's callback has
    committed its batch to SQLite (the test polls the database every 2 ms from the click on and kills
    at the first new row) and while the script run that click started is still rendering the page
    (that rerun takes about a second here; the kill lands some 25 ms after the click, and the test
    checks that the browser still shows the old "Excluded" count, i.e. the rerun never finished).
    Earlier than the commit no row exists yet, so the only other honest outcome, a kill before the
    server got to the write, leaves the batch wholly absent; both are accepted, a torn batch is not.
    """
    from playwright.sync_api import expect

    ws = home(tmp_path / "ws").ensure()
    demo.ensure_demo_dataset(ws)
    ds = datasets.open_dataset(ws, demo_dataset_id(ws))
    fast = [d for d in audit.DETECTORS if d not in ("near_duplicate", "label_issue")]  # the slow two
    audit.audit_dataset(ds, workspace=ws, config=audit.AuditConfig(enabled=fast))
    queue = _queue_order(ws, ds)
    pos = {sid: i for i, sid in enumerate(ds.samples["sample_id"].astype(str))}
    excluded, kept, relabelled, batch = queue[0], queue[1], queue[2], queue[3:15]
    leaf = ds.label_columns[-1]
    new_label = next(c for c in ds.schema.classes[leaf] if c != str(ds.samples.iloc[pos[relabelled]][leaf]))

    log = tmp_path / "streamlit.log"
    server = start_server(ws.root, log)
    restarted = None
    con = None
    try:
        page.goto(server.url + "/clean")
        wait_for_app(page, timeout=180_000)
        page.locator(f".st-key-exclude_{pos[excluded]} button").wait_for(timeout=120_000)
        assert_no_exception(page)

        # three clicks that complete: each is saved and shown before the next one
        _click_and_see_saved(page, page.locator(f".st-key-exclude_{pos[excluded]} button").click,
                             f"exclude · {excluded}")
        _click_and_see_saved(page, page.locator(f".st-key-keep_{pos[kept]} button").click, f"keep · {kept}")
        relabel = page.get_by_role("button", name="Relabel…", exact=True).first  # the first pending card's
        relabel.click()
        picker = page.locator(f"[data-testid='stPopoverBody'] .st-key-pick_{pos[relabelled]}")
        picker.get_by_role("combobox").click()
        page.get_by_role("option", name=new_label, exact=True).click()
        # the choice reruns the page, which drops the "keep · ..." message and may close the popover
        page.get_by_text(f"keep · {kept}").wait_for(state="detached", timeout=90_000)
        wait_for_app(page, timeout=90_000)
        if not picker.is_visible():
            relabel.click()
        expect(picker.get_by_role("combobox")).to_have_value(new_label, timeout=30_000)
        _click_and_see_saved(page, page.locator(f".st-key-pick_apply_{pos[relabelled]} button").click,
                             f"relabel · {relabelled} → {new_label}")
        page.keyboard.press("Escape")  # close the popover

        # the page now lists the next 12 pending samples: "Exclude all 12" is one click, one transaction
        for sid in batch:
            assert page.locator(f".st-key-exclude_{pos[sid]} button").count() == 1, sid
        con = sqlite3.connect(f"file:{ws.db_path}?mode=ro", uri=True, timeout=30)
        before = _rows(con)
        assert before == 3
        page.locator(".st-key-bulk_exclude button").click()  # returns once the click is dispatched
        t0 = time.monotonic()
        while _rows(con) == before and time.monotonic() - t0 < 60:
            time.sleep(0.002)
        seen = _rows(con)  # a reader sees a transaction whole: 3 or 15 rows, nothing in between
        server.kill()
        after_s = time.monotonic() - t0
        assert seen in (before, before + len(batch)), seen
        assert seen > before, f"the click's batch never reached SQLite within {after_s:.0f} s"
        # mid-click: the rerun the click started had not rendered its metrics in the browser yet
        assert _metric(page, "Excluded") == "1", f"the click's rerun had finished {after_s:.3f} s after the click"
        con.close()
        con = None

        # restart on the same workspace and port; reload the page in the same browser tab
        restarted = start_server(ws.root, log, port=server.port)
        page.reload()
        wait_for_app(page, timeout=180_000)
        page.locator(".st-key-bulk_exclude").wait_for(timeout=120_000)
        assert_no_exception(page)

        # the decision log: the three completed clicks exactly, and the in-flight batch whole or absent
        log_df = review.decisions(home(ws.root), ds.dataset_id).sort_values("decision_id")
        done = log_df.head(3)
        assert list(done["sample_id"]) == [excluded, kept, relabelled]
        assert list(done["action"]) == ["exclude", "keep", "relabel"]
        assert done["new_label"].isna().tolist() == [True, True, False] and done["new_label"].iloc[2] == new_label
        assert done["label_column"].iloc[2] == leaf
        flight = log_df.iloc[3:]
        assert len(flight) in (0, len(batch)), f"torn batch: {len(flight)} of {len(batch)} rows"
        if len(flight):
            assert sorted(flight["sample_id"]) == sorted(batch)
            assert set(flight["action"]) == {"exclude"} and flight["created_at"].nunique() == 1
            assert flight["detector"].notna().all() and flight["undone_at"].isna().all()
        eff = review.effective_labels(home(ws.root), ds).set_index("sample_id")
        assert eff.loc[relabelled, leaf] == new_label
        with home(ws.root).connect() as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

        # ... and the restarted page shows them
        n_excluded = 1 + len(flight)
        assert _metric(page, "Excluded") == str(n_excluded)
        assert _metric(page, "Relabelled") == "1"
        assert _metric(page, "Reviewed") == str(3 + len(flight))
        page.locator(".st-key-q_status").get_by_role("radio", name="decided").click()
        page.locator(f".st-key-keep_{pos[excluded]}").wait_for(timeout=90_000)
        wait_for_app(page, timeout=90_000)
        assert_no_exception(page)
        for sid, badge in ((excluded, "✖ excluded"), (kept, "✔ kept"), (relabelled, f"✎ relabelled → {new_label}")):
            card = page.locator("[data-testid='stVerticalBlock']").filter(
                has=page.locator(f".st-key-keep_{pos[sid]}")).filter(has_text=Path(sid).name).last
            assert badge in card.inner_text() and "→ nan" not in card.inner_text(), (sid, card.inner_text())
        page.get_by_text(f"{3 + len(flight)} sample(s) match").wait_for(timeout=30_000)  # every decided one
        page.locator(".st-key-bulk_exclude").scroll_into_view_if_needed()
        shot = screenshot(page, "faults_restarted_after_kill_mid_review")
        assert shot.stat().st_size > 10_000
    finally:
        if con is not None:
            con.close()
        server.stop()
        if restarted is not None:
            restarted.stop()


def _metric(page, label: str) -> str:
    box = page.locator("[data-testid='stMetric']").filter(has_text=label).first
    return box.locator("[data-testid='stMetricValue']").inner_text().strip()


def test_atomic_writes_leave_whole_files_with_ordinary_permissions(tmp_path):
    """Files written atomically get the mode ``open()`` would give them (0666 & ~umask), not
    mkstemp's private 0600, so a run folder stays readable by the other people sharing the app."""
    from core.workspace import _umask, atomic_write_json

    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "done"})
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
    with pytest.raises(TypeError):  # a write that fails midway keeps the old file and leaves no temp file
        from core.workspace import atomic_write_bytes
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert json.loads(target.read_text()) == {"state": "done"} and [p.name for p in tmp_path.iterdir()] == \
        ["status.json"]
