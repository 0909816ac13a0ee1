"""Safe reading of zip archives (dataset imports, prediction uploads).

Every entry is checked **before** anything is written: absolute paths and ``..`` (zip-slip),
symbolic links, too many files, a declared size over the limit and suspicious compression
ratios are refused. Extraction then counts the bytes really written, so a header that lies
about its size cannot exceed the limit either. Messages start with the archive's label
(its file name, or "the uploaded zip") and name the offending entry.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Callable

#: An entry expanding more than this many times its compressed size (and over 1 MiB) is refused.
MAX_RATIO = 200


class UnsafeArchive(ValueError):
    """The archive is unreadable or unsafe; the message says which entry and why."""


def open_zip(data: bytes | str | os.PathLike, label: str) -> zipfile.ZipFile:
    """``data`` (bytes or a path) opened as a zip; :class:`UnsafeArchive` when it is not one."""
    src: Any = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else Path(data)
    try:
        return zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchive(f"{label}: not a readable zip file ({exc}).") from None


def _relative(info: zipfile.ZipInfo, label: str) -> PurePosixPath:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in parts or not parts:
        raise UnsafeArchive(f"{label}: refused — the entry {info.filename!r} points outside the extraction folder "
                            "(absolute path or '..'). Re-create the zip from inside the folder you zipped.")
    if stat.S_ISLNK((info.external_attr >> 16) & 0xFFFF):
        raise UnsafeArchive(f"{label}: refused — the entry {info.filename!r} is a symbolic link. Zip the files "
                            "themselves.")
    return PurePosixPath(*parts)


def checked_members(zf: zipfile.ZipFile, label: str, *, max_total_bytes: int, max_files: int,
                    max_ratio: float = MAX_RATIO, skip: Callable[[str], bool] = lambda part: part.startswith("."),
                    keep: Callable[[PurePosixPath], bool] = lambda rel: True
                    ) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    """Validate every entry of ``zf``; return the (entry, relative path) pairs to extract.

    Parameters
    ----------
    skip : callable
        A path component for which the entry is silently left out (hidden files, ``__MACOSX``).
    keep : callable
        Entries for which it is False are left out (e.g. non-images); they still count as checked.

    Raises
    ------
    UnsafeArchive
        An entry escapes the folder or is a link, more than ``max_files`` entries are kept,
        more than ``max_total_bytes`` are declared, or an entry's compression ratio is suspect.
    """
    members, total = [], 0
    for info in zf.infolist():
        rel = _relative(info, label)
        if info.is_dir() or any(skip(p) for p in rel.parts) or not keep(rel):
            continue
        members.append((info, rel))
        total += info.file_size
        if len(members) > max_files:
            raise UnsafeArchive(f"{label}: refused — more than {max_files:,} files. Split it, or place the files "
                                "on the server and give their folder.")
        if total > max_total_bytes:
            raise UnsafeArchive(f"{label}: refused — it declares more than {max_total_bytes:,} bytes once extracted "
                                "(a zip bomb?). Split it, or place the files on the server and give their folder.")
        if info.file_size > 1024 * 1024 and info.file_size > max_ratio * max(1, info.compress_size):
            raise UnsafeArchive(f"{label}: refused — the entry {info.filename!r} expands {info.file_size:,} bytes "
                                f"from {info.compress_size:,} (ratio over {max_ratio:g}): a zip bomb?")
    return members


def extract_members(zf: zipfile.ZipFile, members, dest: str | os.PathLike, label: str, *,
                    max_total_bytes: int) -> list[Path]:
    """Extract ``members`` (from :func:`checked_members`) under ``dest``, counting the bytes really written.

    Returns the extracted paths, in order. On :class:`UnsafeArchive` the caller removes ``dest``.
    """
    root = Path(dest).resolve()
    written, out = 0, []
    for info, rel in members:
        target = root.joinpath(*rel.parts)
        if not target.resolve().is_relative_to(root):
            raise UnsafeArchive(f"{label}: refused — the entry {info.filename!r} escapes the extraction folder.")
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 0
        with zf.open(info) as fin, open(target, "wb") as fout:
            while chunk := fin.read(1 << 20):
                n += len(chunk)
                written += len(chunk)
                if n > info.file_size or written > max_total_bytes:
                    raise UnsafeArchive(f"{label}: refused — {info.filename!r} holds more data than its header "
                                        "declares (a zip bomb?).")
                fout.write(chunk)
        out.append(target)
    return out
