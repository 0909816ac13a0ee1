"""The bad-input corpus through the CLI: ``python -m core dataset inspect --json``.

Every invocation: no Python traceback on stderr, exit 0 with the load report as the last
JSON line when something valid loaded, exit 2 with ``error: <file>: <problem>`` otherwise,
and the user's folder untouched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.reliability.conftest import tree_snapshot

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, cwd: Path | None = None) -> tuple[int, dict | None, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-m", "core", "dataset", "inspect", "--json", *args],
                          capture_output=True, text=True, env=env, cwd=cwd or REPO, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.strip().splitlines()
    out = json.loads(lines[-1]) if lines else None
    return proc.returncode, out, proc.stderr


def test_cli_reports_every_bad_file_of_the_class_folders(corpus, corpus_snapshot, tmp_path):
    rc, out, err = _cli(str(corpus.folders), "--workspace", str(tmp_path / "ws"))
    assert rc == 0, err
    assert out["n_valid"] == corpus.n_folder_valid
    assert out["problems"] == {"not_image": 2, "truncated": 2, "broken_symlink": 1, "empty": 1,
                               "not_image_file": 1, "too_large": 1}
    named = " ".join(e["message"] for e in out["invalid_examples"])
    for fname in ("zero.jpg", "truncated.jpg", "truncated.png", "notes.jpg", "page.png", "bomb.png",
                  "dangling.png", "vector.svg"):
        assert fname in named, fname
    assert tree_snapshot(corpus.root) == corpus_snapshot


def test_cli_table_of_bad_rows_names_each_row_and_file(corpus, tmp_path):
    rc, out, err = _cli(str(corpus.table), "--labels", str(corpus.csv["bad_files"]), "--workspace",
                        str(tmp_path / "ws"))
    assert rc == 0, err
    assert out["n_valid"] == 8 and out["n_invalid"] == 9
    by_file = {Path(e["path"]).name: e for e in out["invalid_examples"]}
    assert by_file["never-existed.png"]["problem"] == "missing" and by_file["never-existed.png"]["row"] == 16
    assert by_file["bomb.png"]["problem"] == "too_large"


def test_cli_unusable_inputs_exit_2_with_the_file_and_problem(corpus, tmp_path):
    ws = str(tmp_path / "ws")
    rc, out, err = _cli(str(corpus.empty), "--workspace", ws)
    assert rc == 2 and f"error: {corpus.empty}" in err and "no images found" in err
    assert out["error"] and out["n_valid"] == 0
    rc, out, err = _cli(str(corpus.table), "--labels", str(corpus.csv["no_image_column"]), "--workspace", ws)
    assert rc == 2 and "no_image_column.csv" in err and "image" in err
    rc, out, err = _cli(str(tmp_path / "nowhere"), "--workspace", ws)
    assert rc == 2 and "nowhere: no such folder" in err


def test_cli_accepts_a_folder_named_with_a_leading_dash_spaces_and_unicode(corpus, tmp_path):
    odd = tmp_path / "-rf my dätaset 📷"
    odd.symlink_to(corpus.folders, target_is_directory=True)
    rc, out, err = _cli("--workspace", str(tmp_path / "ws"), "--", odd.name, cwd=tmp_path)
    assert rc == 0, err
    assert out["n_valid"] == corpus.n_folder_valid and out["name"] == odd.name
