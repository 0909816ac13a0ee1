import json
import os
import sqlite3

import pytest

from core import workspace as wsmod
from core.workspace import Workspace, WorkspaceError, atomic_write_bytes, atomic_write_json, read_json


def test_home_defaults_to_env(loupe_home):
    assert wsmod.home().root == loupe_home.resolve()


def test_ensure_creates_layout_and_wal_database(tmp_path):
    ws = Workspace(tmp_path / "w").ensure()
    for d in (ws.datasets_dir, ws.runs_dir, ws.cache_dir):
        assert d.is_dir()
    con = sqlite3.connect(ws.db_path)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"datasets", "decisions"} <= tables


def test_dataset_registry_roundtrip_and_upsert(tmp_path):
    ws = Workspace(tmp_path).ensure()
    ws.upsert_dataset("a1", name="A", spec={"path": "/x"}, task="multiclass", n_samples=3)
    ws.upsert_dataset("a1", name="A2", spec={"path": "/y"}, task="binary", n_samples=4)
    [row] = ws.list_datasets()
    assert (row["name"], row["task"], row["n_samples"], row["spec"]) == ("A2", "binary", 4, {"path": "/y"})
    ws.delete_dataset("a1")
    assert ws.list_datasets() == []


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


def test_failed_write_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    class Boom:
        def __len__(self):
            return 3

    with pytest.raises(TypeError):
        atomic_write_bytes(target, Boom())  # the write itself fails midway
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_workspace_gives_clear_error(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(WorkspaceError, match="writable"):
        Workspace(ro / "w").ensure()


def test_read_only_workspace_as_root_gives_clear_error(tmp_path):
    """A path that cannot be a folder (a file is in the way) stands in for an unwritable workspace."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WorkspaceError, match="LOUPE_HOME"):
        Workspace(blocker / "w").ensure()


def test_read_json_tolerates_missing_and_corrupt(tmp_path):
    p = tmp_path / "s.json"
    assert read_json(p, default={}) == {}
    p.write_text('{"state": "runn')
    assert read_json(p, default=None) is None


def test_threads_opening_a_new_database_together_all_write(tmp_path):
    # SQLite refuses the switch to WAL at once ("database is locked", no busy wait) while another
    # connection opens the same new file: this failed about 1 trial in 20 before the switch was retried.
    import threading

    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY);"
    for trial in range(60):
        db = tmp_path / f"{trial}.sqlite"
        errors = []

        def work(k, db=db, errors=errors):
            try:
                for j in range(3):
                    with wsmod.sqlite_session(db, schema, timeout=30) as con:
                        con.execute("INSERT INTO t VALUES (?)", (f"{k}-{j}",))
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, f"trial {trial}: {errors[0]}"
        assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 12


def test_a_database_held_locked_says_so_and_saves_nothing(tmp_path):
    db = tmp_path / "x.sqlite"
    schema = "CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY);"
    with wsmod.sqlite_session(db, schema, timeout=5):
        pass
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(WorkspaceError, match="locked by another Loupe process"):
            with wsmod.sqlite_session(db, schema, timeout=0.2) as con:
                con.execute("INSERT INTO t VALUES ('a')")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM t").fetchone()[0] == 0
