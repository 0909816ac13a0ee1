"""The workspace (``LOUPE_HOME``): layout, the SQLite store, atomic file writes.

Layout::

    $LOUPE_HOME/
      loupe.sqlite          datasets registry, review decisions (WAL mode, committed per write)
      datasets/<id>/        samples.parquet, schema.json, report.json (one folder per dataset)
      runs/<run_id>/        the run directory contract (see core/runs/)
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


class WorkspaceError(OSError):
    """The workspace cannot be used (read-only, full, corrupt); the message says which and where.

    An ``OSError``: whoever handles file-system failures (a full disk, a read-only folder)
    handles this one too.
    """


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

    @property
    def settings_path(self) -> Path:
        return self.root / "settings.json"

    def dataset_dir(self, dataset_id: str) -> Path:
        return self.datasets_dir / dataset_id

    def settings(self) -> dict[str, Any]:
        """The app's settings saved in this workspace (``settings.json``; {} when none or unreadable)."""
        found = read_json(self.settings_path, {})
        return found if isinstance(found, dict) else {}

    def save_setting(self, name: str, value: Any) -> None:
        """Save one setting (atomically; the others are kept)."""
        atomic_write_json(self.settings_path, {**self.settings(), name: value})

    def ensure(self) -> "Workspace":
        """Create the folders and the database; raise :class:`WorkspaceError` if the root is not writable."""
        try:
            for d in (self.root, self.datasets_dir, self.runs_dir, self.cache_dir):
                d.mkdir(parents=True, exist_ok=True)
            with self.connect():
                pass
        except WorkspaceError:
            raise  # already says where and what to do
        except (OSError, sqlite3.Error) as exc:
            raise WorkspaceError(
                f"Cannot use the workspace at {self.root}: {exc}. "
                "Point LOUPE_HOME at a writable folder."
            ) from exc
        return self

    def connect(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A connection in WAL mode with the schema in place; commits on success, rolls back on error."""
        return sqlite_session(self.db_path, _SCHEMA, timeout=30, rows=True)

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


@contextlib.contextmanager
def sqlite_session(db_path: Path, schema: str, *, timeout: float, rows: bool = False
                   ) -> Iterator[sqlite3.Connection]:
    """A connection to ``db_path`` in WAL mode with ``schema`` applied: commits on success, rolls back on error.

    ``rows``: rows as :class:`sqlite3.Row`. A failure to open or write (disk full, read-only folder)
    becomes a :class:`WorkspaceError` naming the file; nothing of the failed step is committed.
    """
    Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(db_path, timeout=timeout)
    except sqlite3.OperationalError as exc:
        raise _db_error(db_path, exc) from exc
    try:
        if rows:
            con.row_factory = sqlite3.Row
        _use_wal(con, timeout)
        con.execute("PRAGMA synchronous=NORMAL")
        con.executescript(schema)
        yield con
        con.commit()
    except sqlite3.OperationalError as exc:  # disk full, read-only, I/O error: say where and what to do
        with contextlib.suppress(sqlite3.Error):
            con.rollback()
        raise _db_error(db_path, exc) from exc
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            con.rollback()
        raise
    finally:
        con.close()


def _use_wal(con: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode (a persistent setting: a no-op once set).

    Switching the journal mode needs an exclusive lock and SQLite answers "database is locked" at once,
    without its busy handler, while another connection is opening the same new file. So the switch is
    only tried when the mode is not WAL yet, and retried with a short back-off for up to ``timeout`` s.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def _is_busy(exc: sqlite3.Error) -> bool:
    return any(word in str(exc).lower() for word in ("locked", "busy"))


def _db_error(db_path: Path, exc: sqlite3.Error) -> WorkspaceError:
    """A :class:`WorkspaceError` for a failed SQLite operation on ``db_path`` (nothing was committed)."""
    if _is_busy(exc):
        return WorkspaceError(
            f"{db_path}: the database stayed locked by another Loupe process for longer than the wait allowed "
            f"({exc}); nothing was saved by this step. Try again once the other job (a training run, an audit, "
            "a second browser tab) has finished writing."
        )
    return WorkspaceError(
        f"{db_path}: the database could not be written ({exc}); nothing was saved by this step. "
        "The disk may be full or the folder read-only: free some space or point LOUPE_HOME at a writable folder."
    )


def home(path: str | os.PathLike | None = None) -> Workspace:
    """The workspace at ``path``, else ``$LOUPE_HOME``, else ``./workspace`` (absolute, not yet created)."""
    root = path or os.environ.get("LOUPE_HOME") or DEFAULT_HOME
    return Workspace(Path(root).expanduser().resolve())


_UMASK: list[int] = []


def _umask() -> int:
    """The process umask (read once; from /proc without touching it when possible)."""
    if not _UMASK:
        value = None
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    value = int(line.split()[1], 8)
        if value is None:
            value = os.umask(0o022)
            os.umask(value)
        _UMASK.append(value)
    return _UMASK[0]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Either the old file or the complete new one is there afterwards, never a partial
    file; on failure the temp file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode open() would
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            # e.g. "[Errno 28] No space left on device": say which file (same OSError subclass, same errno)
            raise OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}; the previous version, if any, "
                                     "is unchanged") from exc
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


# ---------------------------------------------------------------------------
# Folder confinement: which server folders the app may read
# ---------------------------------------------------------------------------

#: Environment variable naming the folders a user may load from (``os.pathsep``-separated).
ALLOWED_ROOTS_ENV = "LOUPE_ALLOWED_ROOTS"


def allowed_roots(workspace: "Workspace | None" = None) -> list[Path]:
    """The folders (resolved) under which server paths typed in the app may be read.

    The workspace is always allowed (uploads are unpacked there). Then
    ``$LOUPE_ALLOWED_ROOTS`` (folders separated by ``os.pathsep``) when it is set and
    not empty; otherwise the user's home folder and the current working folder (the
    folder ``streamlit run`` was started from), unless either is the file-system root.
    A shared app should set the variable.

    Parameters
    ----------
    workspace : Workspace, optional
        Default: :func:`home` (``$LOUPE_HOME`` or ``./workspace``).
    """
    ws = workspace if workspace is not None else home()
    env = os.environ.get(ALLOWED_ROOTS_ENV, "")
    explicit = bool(env.strip())
    extra = [p for p in env.split(os.pathsep) if p.strip()] if explicit else [str(Path.home()), os.getcwd()]
    out: list[Path] = []
    for raw in [str(ws.root), *extra]:
        root = Path(raw.strip()).expanduser().resolve()
        if not explicit and root == Path(root.anchor):
            continue  # a server started from / (or HOME=/) must not open the whole disk by default
        if root not in out:
            out.append(root)
    return out


def confine(path: str | os.PathLike, *, workspace: "Workspace | None" = None) -> Path:
    """``path`` resolved (``~`` expanded, symbolic links followed), if it lies under an allowed root.

    Raises
    ------
    WorkspaceError
        The resolved path is outside every folder of :func:`allowed_roots`; the message
        names the path, the allowed roots and how to allow more.
    """
    raw = str(path).strip()
    if not raw:
        raise WorkspaceError("No folder given: type the path of a folder on the server.")
    resolved = Path(raw).expanduser().resolve()
    roots = allowed_roots(workspace)
    if any(resolved == r or resolved.is_relative_to(r) for r in roots):
        return resolved
    shown = f"{raw} (= {resolved})" if str(resolved) != raw else raw
    raise WorkspaceError(
        f"{shown} is outside the folders this app may read: {', '.join(map(str, roots))}. "
        f"Move the data under one of them, or have the server's owner add its folder to {ALLOWED_ROOTS_ENV} "
        f"(folders separated by {os.pathsep!r})."
    )
