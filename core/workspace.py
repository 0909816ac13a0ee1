"""The workspace (``LOUPE_HOME``): layout, the SQLite store, atomic file writes.

Layout::

    $LOUPE_HOME/
      loupe.sqlite          datasets registry, review decisions (WAL mode, committed per write)
      datasets/<id>/        samples.parquet, schema.json, report.json (one folder per dataset)
      runs/<run_id>/        the run directory contract (see core/runs.py)
      cache/images/         decoded, resized uint8 image caches
      demo/                 the generated demo dataset

Every file Loupe writes goes through :func:`atomic_write_bytes` (temp file in the
same folder + ``os.replace``), so a crash or a full disk never leaves a half file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

DEFAULT_HOME = "workspace"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    dataset_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    task TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    decision_id INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('keep', 'exclude', 'relabel')),
    label_column TEXT,
    old_label TEXT,
    new_label TEXT,
    detector TEXT,
    note TEXT,
    created_at REAL NOT NULL,
    undone_at REAL
);
CREATE INDEX IF NOT EXISTS decisions_by_dataset ON decisions (dataset_id, sample_id);
"""


class WorkspaceError(RuntimeError):
    """The workspace cannot be used (read-only, full, corrupt); the message says which and where."""


@dataclass(frozen=True)
class Workspace:
    """A Loupe workspace rooted at ``root``. Cheap to construct; folders are made on demand."""

    root: Path

    @property
    def db_path(self) -> Path:
        return self.root / "loupe.sqlite"

    @property
    def datasets_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def demo_dir(self) -> Path:
        return self.root / "demo"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def ensure(self) -> "Workspace":
        """Create the folders and the database; raise :class:`WorkspaceError` if the root is not writable."""
        try:
            for d in (self.root, self.datasets_dir, self.runs_dir, self.cache_dir):
                d.mkdir(parents=True, exist_ok=True)
            with self.connect():
                pass
        except (OSError, sqlite3.Error) as exc:
            raise WorkspaceError(
                f"Cannot use the workspace at {self.root}: {exc}. "
                "Point LOUPE_HOME at a writable folder."
            ) from exc
        return self

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection in WAL mode with the schema in place; commits on success, rolls back on error."""
        self.root.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.db_path, timeout=30)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.executescript(_SCHEMA)
            yield con
            con.commit()
        except BaseException:
            con.rollback()
            raise
        finally:
            con.close()

    # -- datasets registry -------------------------------------------------
    def upsert_dataset(self, dataset_id: str, *, name: str, spec: dict, task: str, n_samples: int) -> None:
        now = time.time()
        with self.connect() as con:
            con.execute(
                """INSERT INTO datasets (dataset_id, name, spec_json, task, n_samples, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(dataset_id) DO UPDATE SET name=excluded.name, spec_json=excluded.spec_json,
                       task=excluded.task, n_samples=excluded.n_samples, updated_at=excluded.updated_at""",
                (dataset_id, name, json.dumps(spec, sort_keys=True), task, int(n_samples), now, now),
            )

    def list_datasets(self) -> list[dict[str, Any]]:
        """Registered datasets, newest first, as plain dicts (``spec`` decoded)."""
        if not self.db_path.exists():
            return []
        with self.connect() as con:
            rows = con.execute("SELECT * FROM datasets ORDER BY created_at DESC").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["spec"] = json.loads(d.pop("spec_json"))
            out.append(d)
        return out

    def delete_dataset(self, dataset_id: str) -> None:
        with self.connect() as con:
            con.execute("DELETE FROM datasets WHERE dataset_id = ?", (dataset_id,))


def home(path: str | os.PathLike | None = None) -> Workspace:
    """The workspace at ``path``, else ``$LOUPE_HOME``, else ``./workspace`` (absolute, not yet created)."""
    root = path or os.environ.get("LOUPE_HOME") or DEFAULT_HOME
    return Workspace(Path(root).expanduser().resolve())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Either the old file or the complete new one is there afterwards, never a partial
    file; on failure the temp file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """Read a JSON file; return ``default`` when it is missing or unreadable (never raise on corruption)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
