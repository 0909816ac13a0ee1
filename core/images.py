"""Safe image decoding and the resized-image cache.

Vocabulary: an *image* here is a ``numpy.ndarray`` of shape ``(H, W, 3)`` and dtype
``uint8`` in RGB order. Every decode goes through :func:`load_image` (or the cache,
which uses the same code), so every caller gets the same guarantees:

* EXIF orientation is applied: ``(H, W)`` is the size a photo viewer shows.
* Any PIL mode becomes RGB: ``1``/``L``/``P``/``CMYK``/``YCbCr`` are converted; modes with
  alpha (``LA``, ``PA``, ``RGBA``, ``P`` with a transparent colour) are composited on
  white; 16-bit and 32-bit integer / float images (``I;16``, ``I``, ``F``) are scaled
  to 0..255.
* Animated files (GIF, APNG, WebP) give their first frame.
* Decompression bombs are refused from the header, *before* any pixel is decoded:
  more than :data:`MAX_PIXELS` pixels raises ``ImageError(reason="too_large")``.
* Truncated or corrupt data raises ``ImageError(reason="truncated")``; a file PIL
  cannot identify raises ``reason="not_image"``.

Boxes are ``(x1, y1, x2, y2)`` floats in pixel coordinates of the EXIF-corrected
original image; they are clipped to the image, and an empty box after clipping
raises ``reason="bad_box"``.

:class:`ImageCache` decodes each image once at a target size and keeps the result
on disk (``<workspace>/cache/images``); see its docstring for the key and layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import re
import stat
import threading
import time
import contextlib
import gc
import sys
import warnings
from struct import error as struct_error  # raised by some Pillow plugins on garbage
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from core.workspace import atomic_write_json, sqlite_session

#: Refuse images with more pixels than this (checked from the header, before decoding).
MAX_PIXELS = 64_000_000

#: File name extensions treated as images when scanning folders (lower case).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
     ".ppm", ".pgm", ".pbm", ".pnm"}
)

#: reason code -> what the user should do about it (used in messages and load reports).
REASONS: dict[str, str] = {
    "missing": "the file does not exist. Check the path (it is relative to the dataset folder) or remove the entry.",
    "empty": "the file is empty (0 bytes). Re-export or re-download it.",
    "directory": "this is a folder, not an image file. Point at the image inside it.",
    "broken_symlink": "this is a symbolic link whose target does not exist. Fix or remove the link.",
    "unreadable": "the file cannot be read (permissions?). Make it readable for this user.",
    "not_image": "the file is not an image Pillow can read. Remove it or convert it to JPEG/PNG.",
    "truncated": "the image data is truncated or corrupt. Re-export or re-download the file.",
    "too_large": "the image has more pixels than the safety limit (a possible decompression bomb). "
                 "Downscale it first.",
    "unsupported": "the image uses a pixel format Loupe cannot convert to RGB. Convert it to 8-bit RGB JPEG/PNG.",
    "bad_box": "the crop box is empty or outside the image after clipping. Fix the box coordinates.",
}

_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = {5, 6, 7, 8}
_RESAMPLE = Image.Resampling.BICUBIC  # antialiased when downsampling (Pillow scales the kernel)
_REDUCING_GAP = 3.0  # fast integer pre-reduction, then BICUBIC: visually identical, several times faster


class ImageError(ValueError):
    """An image that cannot be used.

    ``path`` is the file, ``reason`` a short code (one of :data:`REASONS`), and ``str()``
    reads ``"<path>: <what is wrong> <what to do>"``.
    """

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = "") -> None:
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        explanation = REASONS.get(reason, "the image cannot be used.")
        msg = f"{self.path}: {explanation}"
        if detail:
            msg = f"{self.path}: {detail}. {explanation[0].upper()}{explanation[1:]}"
        super().__init__(msg)


@dataclass(frozen=True)
class ImageInfo:
    """Header facts of an image: EXIF-corrected ``width`` x ``height``, PIL ``mode``, ``format``."""

    width: int
    height: int
    mode: str
    format: str | None


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------

def _check_file(path: str | Path) -> os.stat_result:
    """Stat ``path`` and raise the right :class:`ImageError` for missing / empty / folder / link."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ImageError(path, "broken_symlink") from None
        raise ImageError(path, "missing") from None
    except PermissionError:
        raise ImageError(path, "unreadable") from None
    except OSError as exc:
        raise ImageError(path, "unreadable", str(exc)) from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(path, "directory")
    if st.st_size == 0:
        raise ImageError(path, "empty")
    return st


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 from what is already parsed (never triggers a pixel decode)."""
    try:
        tags = getattr(im, "tag_v2", None)
        if tags is not None:
            value = tags.get(_ORIENTATION_TAG)
        else:
            raw = im.info.get("exif")
            if not raw:
                return 1
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(_ORIENTATION_TAG)
        value = int(value)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not make the image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def _open(path: Path) -> Image.Image:
    """Open ``path`` lazily (header only) and refuse bombs; the caller closes the image."""
    _check_file(path)
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        raise ImageError(path, "not_image") from None
    except Image.DecompressionBombError as exc:  # Pillow's own (looser) limit fired first
        m = re.search(r"\((\d+) pixels\)", str(exc))
        declared = f"{int(m.group(1)):,} pixels" if m else "an enormous image"
        raise ImageError(path, "too_large", f"the header declares {declared}, over the limit of {MAX_PIXELS:,}") \
            from None
    except PermissionError:
        raise ImageError(path, "unreadable") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(path, "not_image", f"Pillow cannot read the header ({exc})") from None
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise ImageError(path, "not_image", f"the header declares a {w}x{h} image")
    if w * h > MAX_PIXELS:
        im.close()
        raise ImageError(
            path, "too_large",
            f"the header declares {w}x{h} = {w * h:,} pixels, over the limit of {MAX_PIXELS:,}",
        )
    return im


def probe_image(path: str | os.PathLike) -> ImageInfo:
    """Read an image's header only (fast, no pixel decode).

    Parameters
    ----------
    path : str or PathLike
        The image file.

    Returns
    -------
    ImageInfo
        ``width`` and ``height`` after EXIF orientation, the PIL ``mode`` and ``format``.

    Raises
    ------
    ImageError
        ``missing``, ``empty``, ``directory``, ``broken_symlink``, ``unreadable``,
        ``not_image`` or ``too_large``. Truncation is only found by :func:`load_image`.
    """
    p = Path(path)
    with _open(p) as im:
        w, h = im.size
        if _orientation(im) in _SWAPS_AXES:
            w, h = h, w
        return ImageInfo(int(w), int(h), str(im.mode), im.format)


def _clip_box(box: Any, width: int, height: int, path: Path) -> tuple[float, float, float, float]:
    """Validate a box and clip it to the ``width`` x ``height`` image; raise ``bad_box`` when empty."""
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise ImageError(path, "bad_box", f"the box {box!r} is not four numbers (x1, y1, x2, y2)") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise ImageError(path, "bad_box", f"the box {(x1, y1, x2, y2)} contains NaN or infinity")
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if cx2 - cx1 <= 0 or cy2 - cy1 <= 0:
        raise ImageError(
            path, "bad_box",
            f"the box (x1={x1:g}, y1={y1:g}, x2={x2:g}, y2={y2:g}) is empty inside the {width}x{height} image",
        )
    return cx1, cy1, cx2, cy2


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    """Any PIL mode -> 8-bit RGB (alpha composited on white, high bit depths scaled)."""
    mode = im.mode
    try:
        if mode == "RGB":
            return im
        if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F") or mode.startswith("I;"):
            arr = np.asarray(im).astype(np.float64)
            if arr.ndim == 3:
                arr = arr[..., 0]
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if mode.startswith("I;16") or (mode == "I" and lo >= 0 and 255 < hi <= 65535):
                arr = arr / 257.0
            elif mode == "F" and lo >= 0 and hi <= 1.0:
                arr = arr * 255.0
            elif lo < 0 or hi > 255:
                arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
            arr = np.nan_to_num(arr, nan=0.0)
            gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
            return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
        has_alpha = mode in ("LA", "La", "PA", "RGBA", "RGBa") or (
            mode in ("P", "L", "RGB") and "transparency" in im.info
        )
        if has_alpha:
            rgba = im.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(path, "unsupported", f"cannot convert mode {mode!r} to RGB ({exc})") from None


def _decode(path: Path, *, box: Any = None, target: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Decode ``path`` (optionally a box of it) to RGB; with ``target``, resized to target x target.

    Returns the array and the header facts of the whole original image.
    """
    with _open(path) as im:
        fmt, orig_mode = im.format, str(im.mode)
        ow, oh = im.size
        orient = _orientation(im)
        cw, ch = (oh, ow) if orient in _SWAPS_AXES else (ow, oh)
        clipped = _clip_box(box, cw, ch, path) if box is not None else (0.0, 0.0, float(cw), float(ch))
        if target is not None and fmt == "JPEG":
            # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the needed region stays >= target.
            rw, rh = clipped[2] - clipped[0], clipped[3] - clipped[1]
            scale = max(target / max(rw, 1e-6), target / max(rh, 1e-6))
            if scale < 0.5:
                req = (max(1, math.ceil(ow * scale)), max(1, math.ceil(oh * scale)))
                with contextlib.suppress(Exception):
                    im.draft(None, req)
        try:
            im.load()
        except Image.DecompressionBombError:
            raise ImageError(path, "too_large") from None
        except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct_error) as exc:
            raise ImageError(path, "truncated", f"decoding failed ({exc})") from None
        # PNG can carry its EXIF block after the pixel data: look again now that it is read.
        orient = _orientation(im)
        cw2, ch2 = (oh, ow) if orient in _SWAPS_AXES else (ow, oh)
        if (cw2, ch2) != (cw, ch):
            cw, ch = cw2, ch2
            clipped = _clip_box(box, cw, ch, path) if box is not None else (0.0, 0.0, float(cw), float(ch))
        rgb = _to_rgb(im, path)
        if orient in _TRANSPOSE:
            rgb = rgb.transpose(_TRANSPOSE[orient])
        # draft() may have decoded at a reduced scale: map the box to the decoded pixels.
        fx, fy = rgb.size[0] / cw, rgb.size[1] / ch
        x1, y1, x2, y2 = clipped[0] * fx, clipped[1] * fy, clipped[2] * fx, clipped[3] * fy
        info = ImageInfo(int(cw), int(ch), orig_mode, fmt)
        if target is not None:
            out = rgb.resize((target, target), _RESAMPLE, box=(x1, y1, x2, y2), reducing_gap=_REDUCING_GAP)
            return np.asarray(out, dtype=np.uint8), info
        if box is not None:
            W, H = rgb.size
            ix1, iy1 = max(0, int(math.floor(x1))), max(0, int(math.floor(y1)))
            ix2, iy2 = min(W, int(math.ceil(x2))), min(H, int(math.ceil(y2)))
            rgb = rgb.crop((ix1, iy1, ix2, iy2))
        return np.array(rgb, dtype=np.uint8), info


def load_image(path: str | os.PathLike, *, box: Sequence[float] | None = None) -> np.ndarray:
    """Decode an image safely to RGB at full resolution.

    Parameters
    ----------
    path : str or PathLike
        The image file. It is only read.
    box : sequence of 4 floats, optional
        ``(x1, y1, x2, y2)`` in pixels of the EXIF-corrected image; clipped to it. The
        crop covers every pixel the box touches (floor / ceil).

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
        RGB pixels, EXIF orientation applied, alpha composited on white, first frame
        of an animation.

    Raises
    ------
    ImageError
        With ``reason`` one of :data:`REASONS` (``too_large`` is decided from the
        header, before decoding).
    """
    arr, _info = _decode(Path(path), box=box)
    return arr


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Stretch an RGB image to ``size`` x ``size`` (antialiased bicubic).

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) or (H, W), dtype uint8
    size : int
        Target side in pixels, >= 1.

    Returns
    -------
    ndarray of shape (size, size, 3), dtype uint8
    """
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size must be a positive int; received size={size!r}")
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] != 3) \
            or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(
            f"image must be a uint8 array of shape (H, W, 3) or (H, W); received "
            f"shape={arr.shape}, dtype={arr.dtype}"
        )
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    out = Image.fromarray(np.ascontiguousarray(arr), "RGB").resize(
        (int(size), int(size)), _RESAMPLE, reducing_gap=_REDUCING_GAP
    )
    return np.asarray(out, dtype=np.uint8)


# ---------------------------------------------------------------------------
# The on-disk cache of resized images
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedArrays:
    """Resized images of a samples table, row ``i`` = the table's ``i``-th row (positional).

    ``images``: ndarray of shape (N, size, size, 3), uint8 — a read-only ``np.memmap``
    (a plain empty array when N == 0); rows that failed are all zeros.
    ``ok``: bool (N,). ``errors``: row -> message; ``reasons``: row -> :data:`REASONS` code.
    ``widths`` / ``heights``: int64 (N,), EXIF-corrected size of the whole original image
    (-1 when it failed); ``modes`` / ``formats``: PIL mode and format per row ("" when failed).
    ``n_decoded``: images decoded by this call (0 when everything came from the cache).
    """

    images: np.ndarray
    ok: np.ndarray
    errors: dict[int, str]
    reasons: dict[int, str] = field(default_factory=dict)
    widths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    heights: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    modes: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    n_decoded: int = 0


#: Bytes read through one memory map between two :func:`release_pages` calls of a streamed pass.
RELEASE_BYTES = 256 << 20


def release_pages(arr: Any) -> bool:
    """Unmap from this process the resident pages of the read-only memory map behind ``arr``
    (``madvise(MADV_DONTNEED)``); True when there was one.

    A pass over a memory-mapped image cache otherwise keeps every page it touched mapped:
    the process's resident memory grows to the file's size (2.7 GB at 100k images of 96 px)
    although nothing is allocated. The pages stay in the kernel's page cache, so a later read
    costs a minor fault, not a disk read; the mapping's contents are unchanged. Only for
    read-only maps (a dirty page of a writable map would be lost): a writable array is left alone.
    """
    base = arr
    while base is not None and not isinstance(base, mmap.mmap):
        if isinstance(base, np.ndarray) and base.flags.writeable:
            return False
        base = getattr(base, "base", None)
    if base is None or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    try:
        base.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # a closed map, or a platform without madvise
        return False
    return True


class RowView:
    """Read-only rows ``rows`` of a cached set, without copying them: ``view[i]`` is ``source[rows[i]]``.

    What :meth:`ImageCache.arrays` returns as ``images`` with ``lazy=True`` when every
    requested row already sits in one cached set (e.g. the valid samples of a dataset whose
    load decoded a superset, or exactly that set): reading a chunk reads only its rows from
    the memory map, and every :data:`RELEASE_BYTES` read the map's pages are released
    (:func:`release_pages`), so a pass over the view streams in flat memory, resident pages
    included, and nothing is written. Supports ``len``, ``shape``, ``dtype``, ``ndim``, an int,
    a slice or an int / bool array as index, and ``np.asarray`` (which materialises every row).
    """

    def __init__(self, source: np.ndarray, rows: np.ndarray) -> None:
        self._source = source
        self._rows = np.asarray(rows, dtype=np.int64)
        self.shape = (len(self._rows), *source.shape[1:])
        self.dtype = source.dtype
        self.ndim = source.ndim
        self._unreleased = 0  # bytes read since the last release (threads may race on it: a late release is harmless)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self._read(np.asarray(self._source[int(self._rows[index])]))
        picked = self._rows[index]  # slice, int array or bool mask, with numpy's own checks
        if np.ndim(picked) == 0:
            return self._read(np.asarray(self._source[int(picked)]))
        if len(picked) and np.all(np.diff(picked) == 1):  # contiguous: one slice of the map
            return self._read(np.array(self._source[int(picked[0]):int(picked[-1]) + 1]))
        return self._read(np.asarray(self._source[picked]))

    def _read(self, out: np.ndarray) -> np.ndarray:
        """``out`` (rows just read from the map), releasing the map's pages every :data:`RELEASE_BYTES` read."""
        self._unreleased += out.nbytes
        if self._unreleased >= RELEASE_BYTES:
            self._unreleased = 0
            release_pages(self._source)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out.astype(dtype) if dtype is not None else out


_CACHE_VERSION = 1
_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    ident TEXT NOT NULL,
    set_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    reason TEXT,
    error TEXT,
    width INTEGER,
    height INTEGER,
    mode TEXT,
    format TEXT
);
CREATE INDEX IF NOT EXISTS entries_by_set ON entries (set_id);
CREATE INDEX IF NOT EXISTS entries_by_ident ON entries (ident);
CREATE TABLE IF NOT EXISTS sets (set_id TEXT PRIMARY KEY, size INTEGER NOT NULL, n INTEGER NOT NULL,
                                 created_at REAL NOT NULL);
"""


def _ident(path: str, box: Any, size: int) -> str:
    """What a cache entry is *of* (file, box, size), independent of the file's version."""
    bkey = "-" if box is None else ",".join(f"{v:.3f}" for v in box)
    return f"{path}\0{bkey}\0{size}"


def _paths_and_boxes(samples: Any) -> tuple[list[str], list]:
    """Absolute paths and boxes (None: the whole image) of a samples table's rows."""
    paths = [os.path.abspath(str(p)) for p in samples["path"].tolist()]
    if all(c in samples.columns for c in ("x1", "y1", "x2", "y2")):
        boxes = [_box_of(r) for r in samples[["x1", "y1", "x2", "y2"]].itertuples(index=False, name=None)]
    else:
        boxes = [None] * len(paths)
    return paths, boxes


def decode_rows(samples: Any, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The pixels :meth:`ImageCache.arrays` gives for ``samples``' rows, decoded here without the cache.

    For workers that have no workspace (the Ray engine's actors). Returns ``images`` (N, size, size, 3)
    uint8 (zeros where a row failed), ``ok`` (N,) bool and one error message per row ("" when ok).
    """
    paths, boxes = _paths_and_boxes(samples)
    out = np.zeros((len(paths), size, size, 3), np.uint8)
    ok = np.zeros(len(paths), bool)
    errors = [""] * len(paths)
    for i, (p, b) in enumerate(zip(paths, boxes)):
        try:
            _check_file(p)
        except ImageError as exc:
            errors[i] = str(exc)
            continue
        arr, _, err = _decode_job((Path(p), b, size))
        if err is not None:
            errors[i] = str(err)
        else:
            out[i], ok[i] = arr, True
    return out, ok, errors


def _box_of(row: Any) -> tuple[float, float, float, float] | None:
    vals = []
    for v in row:
        try:
            f = float(v)
        except (TypeError, ValueError):
            return (math.nan,) * 4  # type: ignore[return-value]  # invalid box -> bad_box
        vals.append(f)
    if all(math.isnan(v) for v in vals):
        return None
    return tuple(vals)  # type: ignore[return-value]


class ImageCache:
    """Decoded, resized ``uint8`` images on disk, so each image is decoded once per size.

    Key of one sample: ``(absolute path, file size, mtime_ns, box, size)``. An unchanged
    file is never decoded again (failures are remembered too); a changed file gets a
    new key and is decoded again.

    Layout under ``root``::

        index.sqlite              key -> (set, row, ok, error, width, height, mode, format)
        <size>px/<set_id>.npy     (N, size, size, 3) uint8, rows in one request's order
        <size>px/<set_id>.json    per-row metadata of that set (written last: its presence
                                  marks the set complete)

    A *set* is the answer to one :meth:`arrays` call; ``set_id`` hashes the ordered keys,
    so asking again for the same unchanged samples just maps the existing file (no
    decode, no copy). A request that differs reuses rows of older sets through the
    index and decodes only the new keys. Sets no key points to any more are deleted.
    Files are written to a temp name and ``os.replace``-d; the index is SQLite (WAL),
    so two processes can share a cache.

    Parameters
    ----------
    root : str or PathLike
        Cache folder, normally ``workspace.cache_dir / "images"``.
    workers : int, optional
        Decoding workers. Default: ``min(2, os.cpu_count())``. From 256 images to decode
        on Linux they are forked processes (Pillow's per-image Python work holds the GIL,
        so threads do not speed up small images); fewer, elsewhere, or with
        ``LOUPE_DECODE_PROCESSES=0``, threads.
    """

    def __init__(self, root: str | os.PathLike, *, workers: int | None = None) -> None:
        self.root = Path(root)
        self.workers = int(workers) if workers else max(1, min(2, os.cpu_count() or 1))
        self.n_decoded = 0  # images decoded by this object since it was made (all calls)
        self._lock = threading.Lock()

    # -- index ---------------------------------------------------------------
    def _connect(self):
        return sqlite_session(self.root / "index.sqlite", _INDEX_SCHEMA, timeout=60)

    # -- public --------------------------------------------------------------
    def arrays(
        self,
        samples: "Any",
        size: int,
        *,
        progress: Callable[[int, int], None] | None = None,
        lazy: bool = False,
    ) -> CachedArrays:
        """Resized images for every row of ``samples``, decoding only what the cache lacks.

        Parameters
        ----------
        samples : pandas.DataFrame
            One row per sample with a ``path`` column (absolute, or relative to the
            current folder) and optionally ``x1, y1, x2, y2`` box columns (NaN = whole image).
        size : int
            Side of the square output images, in pixels.
        progress : callable(done, total), optional
            Called as rows are resolved.
        lazy : bool
            When every row is already cached in one set but not as this exact request (a
            subset or reordering), return ``images`` as a :class:`RowView` of that set instead
            of writing a new set: for one streamed pass (the audit), nothing is copied.

        Returns
        -------
        CachedArrays
            ``images`` of shape (N, size, size, 3), uint8, row ``i`` = the ``i``-th row
            of ``samples``.
        """
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or not 1 <= size <= 4096:
            raise ValueError(f"size must be an int in 1..4096; received size={size!r}")
        size = int(size)
        if "path" not in getattr(samples, "columns", ()):
            raise ValueError("samples must be a DataFrame with a 'path' column; "
                             f"received columns={list(getattr(samples, 'columns', []))}")
        n = len(samples)
        paths, boxes = _paths_and_boxes(samples)
        if n == 0:
            return CachedArrays(np.zeros((0, size, size, 3), np.uint8), np.zeros(0, bool), {}, {},
                                np.zeros(0, np.int64), np.zeros(0, np.int64), (), (), 0)

        keys, early = self._keys(paths, boxes, size)
        set_id = hashlib.sha1(("\n".join(keys) + f"\nv{_CACHE_VERSION}").encode()).hexdigest()[:24]
        set_dir = self.root / f"{size}px"
        npy, meta_path = set_dir / f"{set_id}.npy", set_dir / f"{set_id}.json"

        hit = self._open_set(npy, meta_path, n)
        if hit is not None:
            if progress:
                progress(n, n)
            if lazy and len(hit.images):  # one streamed pass: a view that releases the map's pages as it goes
                hit = dataclasses.replace(hit, images=RowView(hit.images, np.arange(n)))
            return hit
        return self._build(paths, boxes, keys, early, size, set_id, npy, meta_path, progress, lazy=lazy)

    # -- internals -----------------------------------------------------------
    @staticmethod
    def _idents(paths: list[str], boxes: list, size: int) -> list[str]:
        return [hashlib.sha1(_ident(p, b, size).encode("utf-8", "surrogateescape")).hexdigest()
                for p, b in zip(paths, boxes)]

    @staticmethod
    def _keys(paths: list[str], boxes: list, size: int) -> tuple[list[str], dict[int, ImageError]]:
        """Cache keys per row; rows whose file cannot even be stat-ed get an error instead."""
        keys: list[str] = []
        early: dict[int, ImageError] = {}
        for i, (p, b) in enumerate(zip(paths, boxes)):
            try:
                st = _check_file(p)
            except ImageError as exc:
                early[i] = exc
                keys.append(f"!{exc.reason}:{p}")
                continue
            raw = f"{_ident(p, b, size)}\0{st.st_size}\0{st.st_mtime_ns}"
            keys.append(hashlib.sha1(raw.encode("utf-8", "surrogateescape")).hexdigest())
        return keys, early

    @staticmethod
    def _open_set(npy: Path, meta_path: Path, n: int) -> CachedArrays | None:
        meta = None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            images = np.load(npy, mmap_mode="r")
        except (OSError, ValueError):
            return None
        if meta is None or images.shape[0] != n or len(meta.get("ok", ())) != n:
            return None
        return CachedArrays(
            images=images,
            ok=np.asarray(meta["ok"], dtype=bool),
            errors={int(k): v for k, v in meta["errors"].items()},
            reasons={int(k): v for k, v in meta["reasons"].items()},
            widths=np.asarray(meta["width"], dtype=np.int64),
            heights=np.asarray(meta["height"], dtype=np.int64),
            modes=tuple(meta["mode"]),
            formats=tuple(meta["format"]),
            n_decoded=0,
        )

    def _lookup(self, keys: Iterable[str]) -> dict[str, tuple]:
        found: dict[str, tuple] = {}
        wanted = [k for k in keys if not k.startswith("!")]
        if not wanted or not (self.root / "index.sqlite").exists():
            return found
        with self._connect() as con:
            for start in range(0, len(wanted), 500):
                chunk = wanted[start:start + 500]
                q = ("SELECT key, set_id, row, ok, reason, error, width, height, mode, format FROM entries "
                     f"WHERE key IN ({','.join('?' * len(chunk))})")
                for r in con.execute(q, chunk):
                    found[r[0]] = r[1:]
        return found

    def _build(self, paths, boxes, keys, early, size, set_id, npy, meta_path, progress, *,
               lazy: bool = False) -> CachedArrays:
        n = len(paths)
        set_dir = npy.parent
        set_dir.mkdir(parents=True, exist_ok=True)
        for old in set_dir.glob(".*.npy.tmp"):  # left by a process that died mid-build
            with contextlib.suppress(OSError):
                if time.time() - old.stat().st_mtime > 6 * 3600:
                    old.unlink()
        known = self._lookup(keys)
        ok = np.zeros(n, dtype=bool)
        errors: dict[int, str] = {}
        reasons: dict[int, str] = {}
        widths = np.full(n, -1, dtype=np.int64)
        heights = np.full(n, -1, dtype=np.int64)
        modes = [""] * n
        formats = [""] * n
        for i, exc in early.items():
            errors[i], reasons[i] = str(exc), exc.reason

        done = len(early)
        to_decode: list[int] = []
        sources: dict[str, np.ndarray | None] = {}
        copies: dict[str, tuple[list[int], list[int]]] = {}  # source set -> (rows here, rows there)
        for i, key in enumerate(keys):
            if i in early:
                continue
            hit = known.get(key)
            if hit is None:
                to_decode.append(i)
                continue
            src_set, src_row, k_ok, reason, error, w, h, mode, fmt = hit
            if k_ok:
                if src_set not in sources:
                    try:
                        sources[src_set] = np.load(set_dir / f"{src_set}.npy", mmap_mode="r")
                    except (OSError, ValueError):
                        sources[src_set] = None  # deleted meanwhile: decode again
                src = sources[src_set]
                if src is None or src_row >= src.shape[0]:
                    to_decode.append(i)
                    continue
                dst_rows, src_rows = copies.setdefault(src_set, ([], []))
                dst_rows.append(i)
                src_rows.append(src_row)
                ok[i] = True
            else:
                errors[i], reasons[i] = error, reason
            widths[i], heights[i], modes[i], formats[i] = w, h, mode or "", fmt or ""
            done += 1
        if lazy and not to_decode and not errors and len(copies) == 1:
            # every row is cached, all in one set, none failed: a view of that set, nothing written
            ((src_set, (_, src_rows)),) = copies.items()
            if progress:
                progress(n, n)
            return CachedArrays(RowView(sources[src_set], np.asarray(src_rows)), ok, {}, {}, widths, heights,
                                tuple(modes), tuple(formats), 0)
        tmp = set_dir / f".{set_id}.{os.getpid()}.{threading.get_ident()}.npy.tmp"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
            _reserve_disk_space(tmp)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise OSError(exc.errno, f"cannot write the image cache in {set_dir} ({n * size * size * 3:,} "
                                     f"bytes): {exc.strerror or exc}. Free some disk space, or point LOUPE_HOME "
                                     "at a folder on a larger disk") from exc
        mm = out
        out = mm.view(np.ndarray)  # plain ndarray over the same mapping: no memmap bookkeeping per row
        try:
            for src_set, (dst_rows, src_rows) in copies.items():  # one gather per source set
                src = sources[src_set].view(np.ndarray)
                for a in range(0, len(dst_rows), 1024):  # bounded RAM for the gathered rows
                    out[dst_rows[a:a + 1024]] = src[src_rows[a:a + 1024]]
            sources.clear()
            copies.clear()
            if progress:
                progress(done, n)

            n_decoded = 0
            for i, info, err in self._decode_into(out, tmp, int(mm.offset), to_decode, paths, boxes, size):
                n_decoded += 1
                if info is not None:
                    widths[i], heights[i] = info.width, info.height
                    modes[i], formats[i] = info.mode, info.format or ""
                if err is not None:
                    errors[i], reasons[i] = err
                else:
                    ok[i] = True
                done += 1
                if progress and (done % _DECODE_CHUNK == 0 or done == n):
                    progress(done, n)
            del out
            mm.flush()
            del mm
            os.replace(tmp, npy)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        with self._lock:
            self.n_decoded += n_decoded

        meta = {
            "version": _CACHE_VERSION, "size": size, "n": n,
            "ok": ok.tolist(), "errors": {str(k): v for k, v in errors.items()},
            "reasons": {str(k): v for k, v in reasons.items()},
            "width": widths.tolist(), "height": heights.tolist(), "mode": modes, "format": formats,
        }
        atomic_write_json(meta_path, meta)
        self._register(set_id, size, keys, self._idents(paths, boxes, size), early, ok, errors, reasons, widths, heights, modes, formats)
        images = np.load(npy, mmap_mode="r")
        return CachedArrays(images, ok, errors, reasons, widths, heights, tuple(modes), tuple(formats), n_decoded)

    def _decode_into(self, out: np.ndarray, tmp: Path, offset: int, rows: list[int], paths: list[str], boxes: list,
                     size: int):
        """Decode ``rows`` into ``out`` (the memory map of ``tmp``, its data ``offset`` bytes in): yield
        ``(row, info, (message, reason) or None)``.

        Many images: ``self.workers`` forked processes, each writing its rows straight into
        the file behind ``out`` and sending back only their metadata (PIL's per-image
        Python work holds the GIL, so threads do not scale on small images). Few images,
        no ``fork`` (not Linux, a daemon process, ``LOUPE_DECODE_PROCESSES=0``) or a
        worker that died (killed, out of memory): threads, in this process.
        """
        pending = list(rows)
        ctx = _fork_context() if self.workers > 1 and len(rows) >= _PROCESS_MIN else None
        if ctx is not None:
            Image.init()  # every Pillow plugin imported before forking: a child must never import
            got: set[int] = set()
            finished = False
            pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=gc.disable)
            try:
                with warnings.catch_warnings():  # the first submit forks; Python >= 3.12 warns on fork with threads
                    warnings.simplefilter("ignore", DeprecationWarning)
                    futures = [pool.submit(_decode_rows_into, str(tmp), offset, size,
                                           [(i, paths[i], boxes[i]) for i in pending[a:a + _DECODE_CHUNK]])
                               for a in range(0, len(pending), _DECODE_CHUNK)]
                for fut in as_completed(futures):
                    for i, info, err in fut.result():
                        got.add(i)
                        yield i, info, err
                pending, finished = [], True
            except BrokenProcessPool:  # a worker died: what it had not sent back decodes here
                pending = [i for i in pending if i not in got]
            finally:
                # wait (reaping the workers) only after a clean finish: never on a broken pool (Python 3.11
                # can hang joining its manager) or when the caller stopped reading (a rerun), where the
                # running chunks only write into a file that is dropped
                pool.shutdown(wait=finished, cancel_futures=not finished)
        if not pending:
            return
        with ThreadPoolExecutor(max_workers=self.workers) if self.workers > 1 else contextlib.nullcontext() as tp:
            for start in range(0, len(pending), _DECODE_CHUNK):
                chunk = pending[start:start + _DECODE_CHUNK]
                jobs = [(Path(paths[i]), boxes[i], size) for i in chunk]
                results = tp.map(_decode_job, jobs) if tp is not None else map(_decode_job, jobs)
                for i, (arr, info, err) in zip(chunk, results):
                    if arr is not None:
                        out[i] = arr
                    yield i, info, None if err is None else (str(err), err.reason)

    def _register(self, set_id, size, keys, idents, early, ok, errors, reasons, widths, heights, modes, formats) -> None:
        rows = [
            (k, idents[i], set_id, i, int(ok[i]), reasons.get(i), errors.get(i), int(widths[i]), int(heights[i]),
             modes[i], formats[i])
            for i, k in enumerate(keys) if i not in early
        ]
        set_dir = self.root / f"{size}px"
        with self._connect() as con:
            con.execute("INSERT OR REPLACE INTO sets (set_id, size, n, created_at) VALUES (?, ?, ?, ?)",
                        (set_id, size, len(keys), time.time()))
            # Older versions of the same file (same path, box, size) are superseded.
            con.executemany("DELETE FROM entries WHERE ident = ? AND key != ?", [(r[1], r[0]) for r in rows])
            con.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            stale = [r[0] for r in con.execute(
                "SELECT set_id FROM sets WHERE set_id != ? AND size = ? AND set_id NOT IN "
                "(SELECT DISTINCT set_id FROM entries)", (set_id, size))]
            for sid in stale:
                for suffix in (".json", ".npy"):  # json first: a reader then sees the set as incomplete
                    with contextlib.suppress(OSError):
                        os.unlink(set_dir / f"{sid}{suffix}")
                con.execute("DELETE FROM sets WHERE set_id = ?", (sid,))


def _reserve_disk_space(path: Path) -> None:
    """Allocate every block of the (sparse) file at ``path`` now, so a full disk raises ``OSError``
    here instead of killing the process with SIGBUS when the memory map is written later."""
    if not hasattr(os, "posix_fallocate"):
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
    finally:
        os.close(fd)


#: Images per decode task (and per progress update).
_DECODE_CHUNK = 64
#: Fewer images than this to decode: threads (a process pool's start-up would cost more than it saves).
_PROCESS_MIN = 256


def _fork_context():
    """The ``fork`` multiprocessing context where decoding in forked workers is safe and cheap, else None.

    Linux only (macOS system frameworks are not fork-safe), never from a daemonic process
    (which may not have children), and ``LOUPE_DECODE_PROCESSES=0`` turns it off.
    """
    if not sys.platform.startswith("linux") or os.environ.get("LOUPE_DECODE_PROCESSES", "1").strip() == "0":
        return None
    import multiprocessing

    if multiprocessing.current_process().daemon:
        return None
    try:
        return multiprocessing.get_context("fork")
    except ValueError:
        return None


def _decode_rows_into(tmp: str, offset: int, size: int, rows: list[tuple[int, str, Any]]) -> list[tuple[int, Any, Any]]:
    """In a worker process: decode ``rows`` (row, path, box) straight into the set file ``tmp``.

    Row ``i`` is written with ``pwrite`` at ``offset + i * size * size * 3`` (``offset``: the
    ``.npy`` header); cheaper than faulting in pages of a fresh memory map. Returns
    ``(row, ImageInfo or None, (message, reason) or None)`` per row: only metadata crosses
    the process boundary, the pixels are already in the shared file.
    """
    step = size * size * 3
    meta = []
    fd = os.open(tmp, os.O_WRONLY)
    try:
        for i, path, box in rows:
            arr, info, err = _decode_job((Path(path), box, size))
            if arr is not None:
                data = memoryview(np.ascontiguousarray(arr, dtype=np.uint8)).cast("B")
                if os.pwrite(fd, data, offset + i * step) != step:
                    raise OSError(f"{tmp}: short write of image row {i}")
            meta.append((i, info, None if err is None else (str(err), err.reason)))
    finally:
        os.close(fd)
    return meta


def _decode_job(job: tuple[Path, Any, int]) -> tuple[np.ndarray | None, ImageInfo | None, ImageError | None]:
    """One cache decode in a worker thread; errors are returned, not raised."""
    path, box, size = job
    try:
        arr, info = _decode(path, box=box, target=size)
        return arr, info, None
    except ImageError as exc:
        info = None
        if exc.reason == "bad_box":
            with contextlib.suppress(ImageError):
                info = probe_image(path)
        return None, info, exc
    except Exception as exc:  # noqa: BLE001 - one odd file must not stop a 100k-image load
        return None, None, ImageError(path, "truncated", f"unexpected decoder error ({type(exc).__name__}: {exc})")
