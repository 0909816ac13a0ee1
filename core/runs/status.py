"""A run's progress: status.json (state, pid, message; written atomically), whether its worker is
alive (a running status whose process is gone reads as interrupted), and metrics.jsonl.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from core.runs.layout import ACTIVE_STATES, STATES, UNKNOWN_STATE, as_run_dir, json_default
from core.workspace import atomic_write_json, read_json


# ---------------------------------------------------------------------------
# status and worker liveness
# ---------------------------------------------------------------------------

def process_start_ticks(pid: int) -> int | None:
    """Start time of process ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22).

    ``None`` when unavailable (no /proc, no such process). Used to tell a live worker
    from an unrelated process that later got the same pid.
    """
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(raw.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _proc_state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{int(pid)}/stat").read_text()
        return raw.rsplit(")", 1)[1].split()[0]
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, *, start_ticks: int | None = None) -> bool:
    """Whether process ``pid`` is alive and (when ``start_ticks`` is given) is the same process.

    A zombie (exited, not yet reaped by its parent) counts as dead; a process whose
    start time differs from ``start_ticks`` is a different process that reused the pid.
    """
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    except OSError:
        return False
    if _proc_state(pid) in ("Z", "X"):
        return False
    if start_ticks is not None:
        try:
            expected = int(start_ticks)
        except (TypeError, ValueError):
            return True  # an unreadable record cannot prove the pid was reused
        now = process_start_ticks(pid)
        if now is not None and now != expected:
            return False
    return True


def write_status(run_dir, state: str, **fields: Any) -> dict[str, Any]:
    """Write ``status.json`` atomically and return what was written.

    The previous status's fields are kept and updated with ``fields`` (so a worker can
    write ``write_status(rd, "running", epoch=3)`` without repeating its pid). When
    ``pid`` is given, its start time (``pid_start``) and ``host`` are recorded too, so a
    later reader can detect a dead worker even if the pid was reused.

    Parameters
    ----------
    run_dir : path or RunDir
    state : {"queued", "running", "done", "failed", "stopped", "interrupted"}
    **fields : JSON-serialisable values, e.g. ``pid``, ``epoch``, ``message``.
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}; received {state!r}")
    rd = as_run_dir(run_dir)
    previous = read_json(rd.status, default=None)
    status = dict(previous) if isinstance(previous, dict) else {}
    status.pop("error", None)
    if "pid" in fields and fields["pid"] is not None:
        fields.setdefault("pid_start", process_start_ticks(fields["pid"]))
        fields.setdefault("host", socket.gethostname())
    status.update(fields)
    now = time.time()
    status["state"] = state
    status.setdefault("created_at", now)
    status["updated_at"] = now
    status = json.loads(json.dumps(status, default=json_default))
    atomic_write_json(rd.status, status)
    return status


def read_status(run_dir) -> dict[str, Any]:
    """``status.json`` as a dict with at least ``state``; never raises.

    A missing or corrupt file gives ``{"state": "unknown", "error": "<what is wrong>"}``.
    """
    rd = as_run_dir(run_dir)
    if not rd.status.exists():
        return {"state": UNKNOWN_STATE, "error": f"{rd.status} is missing"}
    try:
        status = json.loads(rd.status.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return {"state": UNKNOWN_STATE, "error": f"{rd.status} is unreadable: {exc}"}
    if not isinstance(status, dict) or status.get("state") not in STATES:
        got = status.get("state") if isinstance(status, dict) else type(status).__name__
        return {**(status if isinstance(status, dict) else {}), "state": UNKNOWN_STATE,
                "error": f"{rd.status} has no valid state (got {got!r})"}
    return status


def effective_state(status: Mapping[str, Any]) -> str:
    """The state to show: ``running``/``queued`` with a dead worker becomes ``interrupted``.

    A ``queued`` status without a pid stays ``queued`` (waiting for a launcher); a
    ``running`` status without a pid is ``interrupted`` (a worker always records its pid).
    A status recorded on another host is returned as is (its pid cannot be checked here).
    """
    state = status.get("state", UNKNOWN_STATE)
    if state not in ACTIVE_STATES:
        return state if state in STATES else UNKNOWN_STATE
    pid = status.get("pid")
    if pid is None:
        return "queued" if state == "queued" else "interrupted"
    host = status.get("host")
    if host and host != socket.gethostname():
        return state
    return state if pid_alive(pid, start_ticks=status.get("pid_start")) else "interrupted"


# ---------------------------------------------------------------------------
# metrics.jsonl
# ---------------------------------------------------------------------------

def append_metrics(run_dir, record: Mapping[str, Any]) -> None:
    """Append ``record`` as one JSON line to ``metrics.jsonl``, then flush and fsync.

    If the file ends in a partial line (a writer died mid-line), a newline is written
    first so the new record stays readable. NaN / inf are written as JSON ``NaN`` /
    ``Infinity`` (Python's reading of them is what matters).
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"record must be a mapping; received {type(record).__name__}")
    line = json.dumps(dict(record), default=json_default, sort_keys=True)
    path = as_run_dir(run_dir).metrics
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        prefix = b""
        size = fh.seek(0, os.SEEK_END)
        if size > 0:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                prefix = b"\n"
            fh.seek(0, os.SEEK_END)
        fh.write(prefix + line.encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir) -> pd.DataFrame:
    """All readable records of ``metrics.jsonl`` as a DataFrame, in file order.

    Corrupt or partial lines (a truncated last line while the worker writes) are skipped;
    a missing file gives an empty DataFrame.
    """
    path = as_run_dir(run_dir).metrics
    try:
        raw = path.read_bytes()
    except OSError:
        return pd.DataFrame()
    records = []
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()
