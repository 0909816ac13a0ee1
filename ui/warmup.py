"""Background warm-up of UMAP in the server process, so a user's first UMAP map is nearly warm.

umap-learn pays numba's compile time on its first fit in a process (tens of seconds on a
2-core machine; a disk cache does not remove it). ``app.py`` calls
:func:`start_umap_warmup` at every script run; ``st.cache_resource`` makes it start one
daemon thread per server process, which fits and applies a UMAP on a few thousand random
points (above umap-learn's small-data threshold, so the nearest-neighbour-descent code
paths a real map uses are compiled too). Set ``LOUPE_UMAP_WARMUP=0`` to turn it off.
"""

from __future__ import annotations

import os
import threading
import time

import streamlit as st

#: Points of the warm-up fit: > 4096 so umap-learn takes its approximate-neighbours path.
WARMUP_POINTS = 5000


class _Warmup:
    def __init__(self) -> None:
        self.state = "idle"  # idle | running | done | failed | off
        self.error: str | None = None
        self.seconds: float | None = None
        self.started_at: float | None = None
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def _run(self, n: int) -> None:
        try:
            try:  # be polite to the user's own work: lower this thread's priority (Linux: per thread)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
            except (AttributeError, OSError):
                pass
            from core.embeddings import warm_up_umap

            self.seconds = warm_up_umap(n=n)
            self.state = "done"
        except Exception as exc:  # noqa: BLE001 - a failed warm-up only means a slower first map
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.done.set()

    def start(self, n: int) -> "_Warmup":
        if os.environ.get("LOUPE_UMAP_WARMUP", "1").strip().lower() in ("0", "false", "no", "off"):
            self.state = "off"
            self.done.set()
            return self
        self.state, self.started_at = "running", time.time()
        self.thread = threading.Thread(target=self._run, args=(n,), name="loupe-umap-warmup", daemon=True)
        self.thread.start()
        return self

    def status(self) -> dict:
        return {"state": self.state, "error": self.error, "seconds": self.seconds,
                "elapsed": (time.time() - self.started_at) if self.started_at else None}


@st.cache_resource(show_spinner=False)
def _warmup(n: int = WARMUP_POINTS) -> _Warmup:
    return _Warmup().start(n)


def start_umap_warmup() -> None:
    """Start the UMAP warm-up once per server process (idempotent; returns at once)."""
    _warmup()


def umap_status() -> dict:
    """``{"state": "running" | "done" | "failed" | "off", "elapsed": s, ...}`` of the warm-up (starts it if needed)."""
    return _warmup().status()
