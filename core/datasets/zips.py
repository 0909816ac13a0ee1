"""Zip import (the Data page's upload): :func:`import_zip` extracts an uploaded zip of images safely.

The safety checks themselves (zip-slip, links, bombs, size limits) are
:mod:`core.archives`'; this module adds the dataset rules (no images -> refused; one
wrapping folder -> that folder is the dataset) and extracts into a fresh folder atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from core.datasets.tables import _is_hidden, _is_image_name
from core.datasets.types import DatasetError

def import_zip(zip_path_or_bytes: str | os.PathLike | bytes, dest_dir: str | os.PathLike, *,
               max_total_bytes: int = 2 * 1024 ** 3, max_files: int = 100_000,
               max_ratio: float = 200.0) -> Path:
    """Extract an uploaded zip of images safely into a new folder; return the dataset folder.

    Refused, with a message, before anything is written: entries with absolute paths or
    ``..`` components (zip-slip), symbolic links, more than ``max_files`` files, a declared
    total size over ``max_total_bytes``, an entry whose compression ratio exceeds
    ``max_ratio`` (zip bomb), and zips without any image. While extracting, the bytes
    actually written are counted too (a lying header cannot exceed the limits).

    Parameters
    ----------
    zip_path_or_bytes : path or bytes
        The zip file, or its content (an upload).
    dest_dir : path
        Folder to create; it must not exist yet, or be empty. Files are extracted into a
        temporary sibling folder renamed into place at the end, so a failure leaves nothing.
    max_total_bytes, max_files, max_ratio
        Limits.

    Returns
    -------
    Path
        ``dest_dir``, or its single top folder when the zip wraps everything in one folder.

    Raises
    ------
    DatasetError
        Not a zip, unsafe, too large, or without images.
    """
    for name, v in (("max_total_bytes", max_total_bytes), ("max_files", max_files), ("max_ratio", max_ratio)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
            raise ValueError(f"{name} must be a positive number; received {name}={v!r}")
    dest = Path(dest_dir).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DatasetError(f"{dest}: the destination exists and is not an empty folder; choose a new folder.")
    from core import archives

    label = "the uploaded zip" if isinstance(zip_path_or_bytes, (bytes, bytearray)) else str(zip_path_or_bytes)
    try:
        zf = archives.open_zip(zip_path_or_bytes, label)
    except archives.UnsafeArchive as exc:
        raise DatasetError(str(exc)) from None
    with zf:
        try:
            members = archives.checked_members(zf, label, max_total_bytes=max_total_bytes, max_files=max_files,
                                               max_ratio=max_ratio, skip=_is_hidden)
        except archives.UnsafeArchive as exc:
            raise DatasetError(str(exc)) from None
        if not any(_is_image_name(rel.name) for _, rel in members):
            raise DatasetError(f"{label}: no images inside (expected .jpg, .png, ... files, in class folders or "
                               "beside a labels table).")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
        try:
            archives.extract_members(zf, members, tmp, label, max_total_bytes=max_total_bytes)
            if dest.exists():
                dest.rmdir()
            os.replace(tmp, dest)
        except archives.UnsafeArchive as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(str(exc)) from None
        except zipfile.BadZipFile as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatasetError(f"{label}: the zip is damaged ({exc}).") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    tops = [p for p in dest.iterdir() if not _is_hidden(p.name)]
    if len(tops) == 1 and tops[0].is_dir():
        return tops[0]
    return dest
