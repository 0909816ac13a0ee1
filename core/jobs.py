"""Training jobs: launch a worker process per run, queue them, stop them, list them.

A run executes in its own OS process (``python -m core train --config ... --out RUN_DIR
--queue``), started with ``start_new_session=True`` and its stdout/stderr going to the
run's ``worker.log`` (a file, never a pipe: a full pipe would block the worker). The UI
and the worker share nothing but the run directory (:mod:`core.runs`).

**Queue.** Only one training runs at a time per workspace (2 cores are easily
oversubscribed). A launched worker records its pid with state ``queued``, waits until
every run queued before it has started, then takes an exclusive ``fcntl.flock`` on
``<workspace>/runs/.train.lock`` and holds it until it exits (the OS releases it even
after ``kill -9``). Only then does it import TensorFlow and decode images, so waiting
workers cost little memory.

**Stop.** :func:`stop` sends SIGTERM to the run's recorded pid only (after checking the
process start time, so a reused pid is never signalled). A running worker finishes its
batch, keeps the best checkpoint and writes ``stopped``; a queued one leaves the queue
and writes ``stopped``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from core import runs
from core.training import StopRequest, TrainConfig, TrainResult
from core.workspace import Workspace, atomic_write_bytes, home

#: The workspace-wide lock a worker holds while it trains (a file under runs/, ignored by list_runs).
LOCK_NAME = ".train.lock"
#: How often a queued worker looks at the queue, in seconds.
POLL_S = 0.5

_CHILDREN: list[subprocess.Popen] = []  # launched workers, reaped so they do not linger as zombies
_REPO_ROOT = Path(__file__).resolve().parents[1]


def _ws(workspace: Workspace | str | os.PathLike | None) -> Workspace:
    if isinstance(workspace, Workspace):
        return workspace
    return home(workspace)


def _reap() -> None:
    for proc in list(_CHILDREN):
        if proc.poll() is not None:
            _CHILDREN.remove(proc)


def new_run_id(config: TrainConfig) -> str:
    """A sortable, unique run id: ``<YYYYmmdd-HHMMSS>-<model>-<task>-<4 hex>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    task = config.task or "auto"
    return f"{stamp}-{config.model}-{task}-{secrets.token_hex(2)}"


def _store_override(ws: Workspace, frame: pd.DataFrame, run_dir: runs.RunDir | None = None) -> str:
    """Write a labels patch; return its path: the run's ``label_patch.parquet`` when ``run_dir`` is given,
    else once, content-addressed, under the workspace cache."""
    if not isinstance(frame, pd.DataFrame):
        raise ValueError(f"labels_override must be a pandas DataFrame; received {type(frame).__name__}")
    buf = io.BytesIO()
    frame.reset_index(drop=True).to_parquet(buf, index=False)
    data = buf.getvalue()
    if run_dir is not None:
        return str(atomic_write_bytes(run_dir.label_patch, data))
    path = ws.cache_dir / "label_overrides" / f"{hashlib.sha1(data).hexdigest()[:20]}.parquet"
    if not path.exists():
        atomic_write_bytes(path, data)
    return str(path)


#: ``label_patch_version`` of a run told to ignore the review decisions (``--raw-labels``).
RAW_LABELS = "raw"


def resolve_review_labels(workspace: Workspace, config: TrainConfig, *, raw_labels: bool = False,
                          dataset_id: str | None = None,
                          run_dir: runs.RunDir | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """Point ``config`` at the review decisions' effective labels (or the raw ones); return it and config.json keys.

    A config whose ``label_patch_version`` is already set is returned as is (a run's
    config.json reproduces the same patch file). Otherwise the dataset's current patch
    (:func:`core.review.labels_override`) is stored in ``run_dir`` (the run's
    ``label_patch.parquet``; without one, under the workspace cache) and named in
    ``labels_override_path``; ``label_patch_version`` becomes the decision version (``"raw"``
    with ``raw_labels``). The dict holds ``decision_version`` (int, or None for raw labels).
    """
    dataset_id = dataset_id or config.dataset_id
    if raw_labels:
        return config.replace(label_patch_version=RAW_LABELS, labels_override_path=None), {"decision_version": None}
    if config.label_patch_version is not None or not dataset_id:
        return config, {}
    from core import review

    frame, version = review.labels_override(workspace, dataset_id)
    path = _store_override(workspace, frame, run_dir) if frame is not None else None
    return config.replace(label_patch_version=str(version), labels_override_path=path), {"decision_version": version}


def launch(config: TrainConfig, *, workspace: Workspace | str | os.PathLike | None = None,
           labels_override: pd.DataFrame | None = None, run_id: str | None = None,
           extra: Mapping[str, Any] | None = None, raw_labels: bool = False) -> str:
    """Queue a training run and start its worker process; return at once.

    Parameters
    ----------
    config : TrainConfig
        Needs ``dataset_id`` (a dataset registered in ``workspace``) or ``dataset`` (a spec dict).
    workspace : Workspace or path, optional
        Default: ``$LOUPE_HOME`` or ``./workspace``.
    labels_override : DataFrame, optional
        Effective-label patch (``sample_id``, label columns, optional ``excluded``), e.g.
        from the review decisions; stored in the run as ``label_patch.parquet`` and applied by the worker.
    run_id : str, optional
        Default: :func:`new_run_id`.
    extra : dict, optional
        Extra keys for config.json (e.g. ``{"grid": {...}}``).
    raw_labels : bool
        Train on the raw labels. By default (no ``labels_override`` given) the run uses the
        effective labels of the review decisions (:func:`core.review.labels_override`) as
        they are at launch; config.json records ``decision_version``.

    Returns
    -------
    str : the run id; the run directory is ``workspace.runs_dir / run_id``.
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig; received {type(config).__name__}")
    if not config.dataset_id and not config.dataset:
        raise ValueError("config needs dataset_id (a registered dataset) or dataset (a spec dict); received neither")
    ws = _ws(workspace).ensure()
    _reap()
    run_id = run_id or new_run_id(config)
    rd = runs.RunDir(ws.runs_dir / run_id)
    if rd.path.exists():
        raise ValueError(f"run_id={run_id!r} already exists in {ws.runs_dir}")
    rd.path.mkdir(parents=True)
    if labels_override is None:
        config, decision_extra = resolve_review_labels(ws, config, raw_labels=raw_labels, run_dir=rd)
        extra = {**decision_extra, **dict(extra or {})}
    if labels_override is not None:
        config = config.replace(labels_override_path=_store_override(ws, labels_override, rd))
    queued_at = time.time()
    runs.write_config(rd, {**config.to_dict(), **dict(extra or {}), "run_id": run_id, "queued_at": queued_at})
    runs.write_status(rd, "queued", queued_at=queued_at, message="queued")
    cmd = [sys.executable, "-m", "core", "train", "--config", str(rd.config), "--out", str(rd.path),
           "--workspace", str(ws.root), "--queue"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONUNBUFFERED"] = "1"
    with open(rd.worker_log, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env, cwd=os.getcwd())
    _CHILDREN.append(proc)
    status = runs.read_status(rd)
    if status.get("state") == "queued" and status.get("pid") is None:
        runs.write_status(rd, "queued", pid=proc.pid)  # the worker writes it too, once started
    return run_id


def launch_grid(base_config: TrainConfig, grid: Mapping[str, Sequence[Any]], *,
                workspace: Workspace | str | os.PathLike | None = None,
                labels_override: pd.DataFrame | None = None) -> list[str]:
    """Queue one run per combination of ``grid`` values (they run one after another).

    Parameters
    ----------
    base_config : TrainConfig
    grid : dict
        ``{TrainConfig field: [values]}``, e.g. ``{"kernel_size": [3, 5, 7], "filters": [32, 64]}``.
    workspace, labels_override
        As for :func:`launch`.

    Returns
    -------
    list of str : run ids, in launch (and queue) order. Each run's config.json holds
        ``grid = {"id", "params"}``; see :func:`grid_table`.
    """
    if not isinstance(grid, Mapping) or not grid:
        raise ValueError(f"grid must be a non-empty dict {{parameter: [values]}}; received {grid!r}")
    fields = set(TrainConfig.__dataclass_fields__)
    for key, values in grid.items():
        if key not in fields:
            raise ValueError(f"grid parameter {key!r} is not a TrainConfig field; choose from {sorted(fields)}")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid[{key!r}] must be a non-empty list of values; received {values!r}")
    keys = list(grid)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(grid[k] for k in keys))]
    configs = [base_config.replace(**c) for c in combos]  # validates every combination before launching any
    grid_id = f"grid-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    ws = _ws(workspace)
    ids = []
    for combo, cfg in zip(combos, configs):
        ids.append(launch(cfg, workspace=ws, labels_override=labels_override,
                          extra={"grid": {"id": grid_id, "params": combo}}))
    return ids


def grid_table(workspace: Workspace | str | os.PathLike | None = None, grid_id: str | None = None) -> pd.DataFrame:
    """Runs of a grid (or of every grid) as a table: run, state, the grid parameters, best value, test metrics.

    Columns: ``run_id, grid_id, state, <param>..., monitor, best_value, best_epoch,
    test_accuracy, test_macro_f1, val_accuracy, val_macro_f1, seconds``; sorted by
    ``best_value`` (best first; ``val_loss`` ascending).
    """
    ws = _ws(workspace)
    table = list_runs(ws)
    rows = []
    for _, r in table.iterrows():
        rd = runs.RunDir(r["path"])
        cfg = runs.read_config(rd)
        g = cfg.get("grid") or {}
        if not g or (grid_id is not None and g.get("id") != grid_id):
            continue
        st = runs.read_status(rd)
        row = {"run_id": r["run_id"], "grid_id": g.get("id"), "state": r["state"], **(g.get("params") or {}),
               "monitor": r["monitor"], "best_value": r["best_value"], "best_epoch": r["best_epoch"]}
        for split in ("test", "val"):
            m = st.get(split) or {}
            row[f"{split}_accuracy"] = m.get("accuracy")
            row[f"{split}_macro_f1"] = m.get("macro_f1")
        row["seconds"] = st.get("seconds")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        asc = bool((df["monitor"] == "val_loss").all())
        df = df.sort_values("best_value", ascending=asc, na_position="last").reset_index(drop=True)
    return df


def list_runs(workspace: Workspace | str | os.PathLike | None = None) -> pd.DataFrame:
    """All runs of the workspace, newest first (see :func:`core.runs.list_runs`; dead workers show as interrupted)."""
    _reap()
    return runs.list_runs(_ws(workspace).runs_dir)


def stop(run_dir: str | os.PathLike) -> bool:
    """Ask a run's worker to stop: SIGTERM to its recorded pid, and nothing else.

    Returns
    -------
    bool : True when a live worker was signalled (it writes ``stopped`` itself); False when
        the run is not active (done, failed, interrupted) or its process is gone.
    """
    _reap()
    rd = runs.RunDir(Path(run_dir))
    status = runs.read_status(rd)
    if runs.effective_state(status) not in runs.ACTIVE_STATES:
        return False
    pid = status.get("pid")
    if pid is None:  # queued, worker not started yet: cancel in place
        runs.write_status(rd, "stopped", message="cancelled before it started")
        return False
    if not runs.pid_alive(pid, start_ticks=status.get("pid_start")):
        return False
    try:
        os.kill(int(pid), signal.SIGTERM)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------------------
# The worker side (called by ``python -m core train``)
# ---------------------------------------------------------------------------

class _Cancelled(Exception):
    pass


def _queued_before(rd: runs.RunDir, runs_dir: Path, queued_at: float) -> list[runs.RunDir]:
    """Runs queued before ``rd`` whose worker is alive and still waiting."""
    ahead = []
    with contextlib.suppress(OSError):
        for child in runs_dir.iterdir():
            if not child.is_dir() or child.name.startswith(".") or child == rd.path:
                continue
            st = runs.read_status(child)
            if st.get("state") != "queued" or st.get("pid") is None:
                continue
            key = (float(st.get("queued_at") or st.get("created_at") or 0.0), child.name)
            if key < (queued_at, rd.path.name) and runs.effective_state(st) == "queued":
                ahead.append(runs.RunDir(child))
    return ahead


def wait_for_turn(rd: runs.RunDir, runs_dir: Path, *, stop: StopRequest,
                  log: Callable[[str], None] = lambda m: None) -> int:
    """Block until this run may train: the runs queued before it have started, and the lock is ours.

    Returns the open lock file descriptor (keep it open while training; closing it or
    exiting releases the lock). Raises ``_Cancelled`` when a stop is requested meanwhile.
    """
    import fcntl

    runs_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(runs_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    status = runs.read_status(rd)
    queued_at = float(status.get("queued_at") or time.time())
    ahead = _queued_before(rd, runs_dir, queued_at)
    said = False
    try:
        while True:
            if stop.requested:
                raise _Cancelled()
            ahead = [a for a in ahead if runs.read_status(a).get("state") == "queued"
                     and runs.effective_state(runs.read_status(a)) == "queued"]
            if not ahead:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    return fd
                except BlockingIOError:
                    pass
            if not said:
                msg = (f"queued: waiting for {len(ahead)} earlier run(s)" if ahead
                       else "queued: waiting for the running training to finish")
                runs.write_status(rd, "queued", pid=os.getpid(), message=msg)
                log(msg)
                said = True
            time.sleep(POLL_S)
    except BaseException:
        os.close(fd)
        raise


def _read_override(path: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise ValueError(f"labels override file {p} does not exist")
    if p.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(p)
    return pd.read_csv(p, dtype={"sample_id": str})


def run_worker(config: TrainConfig, *, out: str | os.PathLike, workspace: Workspace | str | os.PathLike | None,
               queue: bool = False, log: Callable[[str], None] = lambda m: None) -> TrainResult:
    """The worker's job: (wait for the queue,) load the dataset, train, write the run directory.

    SIGTERM / Ctrl-C request a graceful stop at any point (queued: leave the queue). A folder
    that already holds a run, other than the queued one :func:`launch` prepared, is refused
    (``ValueError``): a run is never overwritten.
    """
    import signal as _signal

    from core import datasets, training

    ws = _ws(workspace).ensure()
    rd = runs.RunDir(Path(out))
    state = runs.read_status(rd).get("state") if rd.config.exists() else None
    if state not in (None, "queued"):
        # a run launched by launch() is queued; any other run here is an earlier one: never overwrite it
        raise ValueError(f"{rd.path} already holds a run ({state}); train into a new folder, or delete that one first")
    rd.path.mkdir(parents=True, exist_ok=True)
    stop = StopRequest()

    def handler(signum, frame):
        stop.request("stopped by the user" if signum == _signal.SIGTERM else "interrupted (Ctrl-C)")

    previous = {s: _signal.signal(s, handler) for s in (_signal.SIGTERM, _signal.SIGINT)}
    lock_fd = None
    try:
        if not rd.config.exists():  # started without a launcher: this worker writes the run's config.json
            decision_extra = {}
            if config.dataset_id and config.label_patch_version is None:
                try:
                    config, decision_extra = resolve_review_labels(ws, config, run_dir=rd)
                except Exception as exc:
                    runs.write_status(rd, "failed", message=f"cannot read the review decisions: {exc}",
                                      finished_at=time.time())
                    raise
            runs.write_config(rd, {**config.to_dict(), **decision_extra})
        if queue:
            st = runs.read_status(rd)
            runs.write_status(rd, "queued", pid=os.getpid(), queued_at=st.get("queued_at") or time.time())
            try:
                lock_fd = wait_for_turn(rd, ws.runs_dir, stop=stop, log=log)
            except _Cancelled:
                runs.write_status(rd, "stopped", pid=os.getpid(), message="cancelled while queued",
                                  stop_reason=stop.reason, finished_at=time.time())
                return TrainResult(run_dir=str(rd.path), state="stopped", best_epoch=None, monitor=config.monitor,
                                   best_value=None, val={}, test={}, seconds=0.0, images_per_second=0.0,
                                   weights_used="", alerts=())
        runs.write_status(rd, "running", pid=os.getpid(), message="loading the dataset", started_at=time.time())
        try:
            if config.dataset_id:
                ds = datasets.open_dataset(ws, config.dataset_id)
            else:
                log(f"loading the dataset at {config.dataset.get('path')}")
                ds = datasets.load_dataset(datasets.DatasetSpec.from_dict(config.dataset), workspace=ws)
                config = config.replace(dataset_id=ds.dataset_id)
                runs.record_resolved(rd, {"dataset_id": ds.dataset_id})
            if config.label_patch_version is None:  # a dataset given as a spec: its review decisions as they are now
                config, decision_extra = resolve_review_labels(ws, config, dataset_id=ds.dataset_id, run_dir=rd)
                runs.record_resolved(rd, {"label_patch_version": config.label_patch_version,
                                          "labels_override_path": config.labels_override_path, **decision_extra})
            override = _read_override(config.labels_override_path) if config.labels_override_path else None
        except Exception as exc:
            runs.write_status(rd, "failed", message=f"cannot load the dataset: {exc}", finished_at=time.time())
            raise
        return training.train(config, out=rd.path, samples=ds.samples, schema=ds.schema, workspace=ws,
                              labels_override=override, stop=stop, handle_signals=False, log=log)
    finally:
        for s, h in previous.items():
            _signal.signal(s, h)
        if lock_fd is not None:
            os.close(lock_fd)
