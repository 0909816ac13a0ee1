"""core.archives: every unsafe entry is refused before anything is written."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest

from core import archives


def _zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, *mode in entries:
            info = zipfile.ZipInfo(name)
            if mode:
                info.external_attr = mode[0] << 16
            zf.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _members(data: bytes, **kw):
    with archives.open_zip(data, "up.zip") as zf:
        return archives.checked_members(zf, "up.zip", **{"max_total_bytes": 10**9, "max_files": 100, **kw})


@pytest.mark.parametrize("name", ["../evil.png", "/abs.png", "a/../../evil.png", "C:/win.png"])
def test_entries_escaping_the_folder_are_refused(name):
    with pytest.raises(archives.UnsafeArchive, match="up.zip: refused .* points outside"):
        _members(_zip([("ok.png", b"x"), (name, b"x")]))


def test_symlinks_bombs_and_counts_are_refused_hidden_files_skipped():
    with pytest.raises(archives.UnsafeArchive, match="symbolic link"):
        _members(_zip([("link.png", b"/etc/passwd", stat.S_IFLNK | 0o777)]))
    with pytest.raises(archives.UnsafeArchive, match="zip bomb"):
        _members(_zip([("big.png", b"\0" * (4 * 1024 * 1024))]))
    with pytest.raises(archives.UnsafeArchive, match="more than 2 files"):
        _members(_zip([(f"{i}.png", b"x") for i in range(3)]), max_files=2)
    kept = _members(_zip([("a/1.png", b"x"), (".hidden/2.png", b"x"), ("a/.DS_Store", b"x")]))
    assert [str(rel) for _, rel in kept] == ["a/1.png"]


def test_extract_writes_only_under_dest_and_counts_real_bytes(tmp_path):
    data = _zip([("a/1.png", b"one"), ("b/2.png", b"two")])
    with archives.open_zip(data, "up.zip") as zf:
        members = archives.checked_members(zf, "up.zip", max_total_bytes=100, max_files=10)
        out = archives.extract_members(zf, members, tmp_path / "x", "up.zip", max_total_bytes=100)
    assert [p.read_bytes() for p in out] == [b"one", b"two"]
    assert all(p.is_relative_to(tmp_path / "x") for p in out)
    with archives.open_zip(data, "up.zip") as zf:
        members = archives.checked_members(zf, "up.zip", max_total_bytes=100, max_files=10)
        with pytest.raises(archives.UnsafeArchive, match="more data than its header"):
            archives.extract_members(zf, members, tmp_path / "y", "up.zip", max_total_bytes=4)


def test_not_a_zip_is_a_clear_error():
    with pytest.raises(archives.UnsafeArchive, match="not a readable zip"):
        archives.open_zip(b"not a zip", "notes.zip")
