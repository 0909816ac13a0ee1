"""The bad-input corpus: every messy file a user brings, generated in a temporary folder.

Nothing binary is checked in: :func:`build_corpus` writes each case with Pillow / ``struct`` /
``zipfile`` once per test session (``corpus`` fixture, session scope). Tests read it and
must never write into it (they load it into their own workspace); :func:`tree_snapshot`
proves that.

Layout under the corpus root::

    files/                 one file per case of :data:`CASES` (the image-level corpus)
    folders/               class folders: valid images + every bad file, for load_dataset / detect / CLI
      good_a/ good_b/      valid images (6 each)
      formats/             the valid-but-unusual formats (CMYK, 16-bit, palette+alpha, EXIF, GIF, ...)
      good_b/              also the bad files (zero bytes, truncated, text.jpg, html.png, bomb, link, svg)
    table/                 images/ + one CSV per table case (see ``Corpus.csv``)
    outside/               an image outside the table dataset (for ``../`` rows)
    empty/                 an empty folder
    zips/                  slip.zip, bomb.zip, noimages.zip, ok.zip
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# ---------------------------------------------------------------------------
# What each image-level case is, and what Loupe must say about it.
# name -> (file name, expected ImageError reason or None when it must load, decoded (H, W) or None)
# ---------------------------------------------------------------------------

CASES: dict[str, tuple[str, str | None, tuple[int, int] | None]] = {
    "zero_bytes": ("zero.jpg", "empty", None),
    "truncated_jpeg": ("truncated.jpg", "truncated", None),
    "truncated_png": ("truncated.png", "truncated", None),
    "text_as_jpg": ("notes.jpg", "not_image", None),
    "html_as_png": ("page.png", "not_image", None),
    "png_bomb_header": ("bomb.png", "too_large", None),
    "svg": ("vector.svg", "not_image", None),
    "broken_symlink": ("dangling.png", "broken_symlink", None),
    "directory_named_jpg": ("folder.jpg", "directory", None),
    "cmyk_jpeg": ("cmyk.jpg", None, (24, 32)),
    "png_16bit": ("deep16.png", None, (24, 32)),
    "palette_transparency": ("palette_t.png", None, (24, 32)),
    "grayscale": ("gray.png", None, (24, 32)),
    "rgba": ("rgba.png", None, (24, 32)),
    "exif_rotated_jpeg": ("exif6.jpg", None, (40, 20)),  # stored 40 wide x 20 high, orientation 6
    "animated_gif": ("anim.gif", None, (12, 12)),
    "webp": ("img.webp", None, (24, 32)),
    "bmp": ("img.bmp", None, (24, 32)),
    "tiff": ("img.tiff", None, (24, 32)),
    "one_pixel": ("one.png", None, (1, 1)),
    "very_wide": ("wide.png", None, (100, 8000)),
    "name_with_spaces": ("a photo with spaces.png", None, (24, 32)),
    "unicode_name": ("ünïcødé 图片 🐱.png", None, (24, 32)),
    "leading_dash": ("-rf --help.png", None, (24, 32)),
}
BAD = {k for k, (_f, reason, _s) in CASES.items() if reason is not None}
GOOD = set(CASES) - BAD


def _pattern(w: int = 32, h: int = 24, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 60 + seed * 20 % 180)], -1)
    return np.clip(base + rng.integers(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (what a decompression bomb looks like)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _write_case(name: str, path: Path) -> None:
    """Write corpus case ``name`` at ``path``."""
    arr = _pattern()
    im = Image.fromarray(arr)
    if name == "zero_bytes":
        path.write_bytes(b"")
    elif name in ("truncated_jpeg", "truncated_png"):
        noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
        buf = io.BytesIO()
        noisy.save(buf, format="JPEG" if name == "truncated_jpeg" else "PNG")
        data = buf.getvalue()
        path.write_bytes(data[: len(data) // 2])
    elif name == "text_as_jpg":
        path.write_text("shopping list: milk, eggs\n")
    elif name == "html_as_png":
        path.write_text("<!doctype html><html><body><h1>404 Not Found</h1></body></html>\n")
    elif name == "png_bomb_header":
        path.write_bytes(png_claiming(50_000, 50_000))
    elif name == "svg":
        path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="32" height="24">'
                        '<rect width="32" height="24" fill="red"/></svg>\n')
    elif name == "broken_symlink":
        os.symlink(path.parent / "this-target-was-deleted.png", path)
    elif name == "directory_named_jpg":
        path.mkdir()
    elif name == "cmyk_jpeg":
        Image.new("CMYK", (32, 24), (0, 255, 255, 0)).save(path, quality=95)  # pure red in CMYK
    elif name == "png_16bit":
        deep = (np.tile(np.linspace(0, 65535, 32), (24, 1))).astype(np.uint16)
        Image.fromarray(deep).save(path)  # mode I;16
    elif name == "palette_transparency":
        p = Image.new("P", (32, 24), 1)
        p.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
        p.paste(0, (0, 0, 16, 24))  # left half: index 0, the transparent one
        p.save(path, transparency=0)
    elif name == "grayscale":
        im.convert("L").save(path)
    elif name == "rgba":
        rgba = np.dstack([arr, np.zeros((24, 32), np.uint8)])  # fully transparent: white after compositing
        rgba[:, 16:, 3] = 255
        Image.fromarray(rgba, "RGBA").save(path)
    elif name == "exif_rotated_jpeg":
        a = np.zeros((20, 40, 3), np.uint8)
        a[:, :20] = (230, 20, 20)   # left half red
        a[:, 20:] = (20, 20, 230)   # right half blue
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees clockwise to display: red ends up on top
        Image.fromarray(a).save(path, exif=exif, quality=95)
    elif name == "animated_gif":
        frames = [Image.new("RGB", (12, 12), c) for c in ((250, 0, 0), (0, 0, 250), (0, 250, 0))]
        frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    elif name == "webp":
        im.save(path, format="WEBP", quality=90)
    elif name == "bmp":
        im.save(path, format="BMP")
    elif name == "tiff":
        im.save(path, format="TIFF")
    elif name == "one_pixel":
        Image.new("RGB", (1, 1), (10, 200, 30)).save(path)
    elif name == "very_wide":
        Image.fromarray(np.tile(_pattern(80, 100), (1, 100, 1))).save(path)
    elif name in ("name_with_spaces", "unicode_name", "leading_dash"):
        im.save(path)
    else:  # pragma: no cover - a new case without a writer
        raise KeyError(name)


def _zip(path: Path, entries: dict[str, bytes], *, compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _png_bytes(seed: int, colour: tuple[int, int, int] | None = None) -> bytes:
    buf = io.BytesIO()
    arr = _pattern(seed=seed) if colour is None else np.full((24, 32, 3), colour, np.uint8)
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------
# The corpus object
# ---------------------------------------------------------------------------

@dataclass
class Corpus:
    root: Path
    files: dict[str, Path] = field(default_factory=dict)       # case -> file under files/
    folders: Path = Path()
    folder_cases: dict[str, Path] = field(default_factory=dict)  # case -> file inside folders/
    n_folder_valid: int = 0
    table: Path = Path()
    csv: dict[str, Path] = field(default_factory=dict)
    outside_image: Path = Path()
    empty: Path = Path()
    zips: dict[str, Path] = field(default_factory=dict)


def build_corpus(root: Path) -> Corpus:
    c = Corpus(root=root)
    # 1. one file per case
    files = root / "files"
    files.mkdir(parents=True)
    for case, (fname, _reason, _shape) in CASES.items():
        _write_case(case, files / fname)
        c.files[case] = files / fname

    # 2. class folders: valid images + every case (bad ones land in good_b, unusual formats in formats/)
    c.folders = root / "folders"
    for cls, seed0 in (("good_a", 0), ("good_b", 10)):
        (c.folders / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(_pattern(seed=seed0 + i)).save(c.folders / cls / f"ok_{i}.png")
    (c.folders / "formats").mkdir()
    n_valid = 12
    for case, (fname, reason, _shape) in CASES.items():
        if case == "directory_named_jpg":
            continue  # an empty folder is not a file: a walk cannot see it (the table case covers it)
        target = c.folders / ("good_b" if reason is not None else "formats") / fname
        _write_case(case, target)
        c.folder_cases[case] = target
        n_valid += reason is None
    c.n_folder_valid = n_valid

    # 3. a table dataset: images/ + one CSV per case
    c.table = root / "table"
    img = c.table / "images"
    img.mkdir(parents=True)
    for i in range(4):
        Image.fromarray(_pattern(seed=20 + i)).save(img / f"cat_{i}.png")
        Image.fromarray(_pattern(seed=30 + i)).save(img / f"dog_{i}.png")
    Image.fromarray(_pattern(seed=50)).save(img / "listed by absolute path.png")
    for case in ("zero_bytes", "truncated_jpeg", "text_as_jpg", "html_as_png", "png_bomb_header",
                 "broken_symlink", "directory_named_jpg", "svg"):
        _write_case(case, img / CASES[case][0])
    c.outside_image = root / "outside" / "far away.png"
    c.outside_image.parent.mkdir()
    Image.fromarray(_pattern(seed=40)).save(c.outside_image)
    rows = [f"images/cat_{i}.png,cat" for i in range(4)] + [f"images/dog_{i}.png,dog" for i in range(4)]
    body = "\n".join(rows) + "\n"

    def write(name: str, text: str) -> None:
        (c.table / name).write_text(text, encoding="utf-8")
        c.csv[name.removesuffix(".csv")] = c.table / name

    write("bom.csv", "\ufeffimage,label\n" + body)
    write("semicolon.csv", "image;label\n" + body.replace(",", ";"))
    write("quoted.csv", "image,label\n" + "".join(
        f'images/cat_{i}.png,"tabby, striped"\n' for i in range(4)) + "".join(
        f'images/dog_{i}.png,"retriever, golden"\n' for i in range(4)))
    write("no_image_column.csv", "label,comment\ncat,nice\ndog,good\n")
    write("duplicates.csv", "image,label\n" + body + "images/cat_0.png,cat\nimages/cat_1.png,dog\n")
    write("odd_labels.csv", "image,label\n" + "".join(
        f"images/cat_{i}.png,<script>alert(1)</script>\n" for i in range(4)) + "".join(
        f"images/dog_{i}.png,🐶 dog & co\n" for i in range(4)))
    write("missing_labels.csv", "image,label\n" + "".join(f"images/{n}.png,{lab}\n" for n, lab in (
        ("cat_0", "cat"), ("cat_1", "cat"), ("cat_2", ""), ("cat_3", "  "),
        ("dog_0", "dog"), ("dog_1", "dog"), ("dog_2", "NaN"), ("dog_3", "-1"))))
    write("multilabel_missing.csv", "image,indoor,outdoor\n" + "".join(
        f"images/{n}.png,{a},{b}\n" for n, a, b in (
            ("cat_0", "1", "0"), ("cat_1", "NaN", "1"), ("cat_2", "", "0"), ("cat_3", "-1", "1"),
            ("dog_0", "0", "1"), ("dog_1", "1", ""), ("dog_2", "0", "-1"), ("dog_3", "1", "0"))))
    write("paths.csv", "image,label\n" + body
          + f"{(img / 'listed by absolute path.png').resolve()},cat\n" + "../outside/far away.png,dog\n")
    write("bad_files.csv", "image,label\n" + body + "".join(
        f"images/{CASES[case][0]},bad\n" for case in (
            "zero_bytes", "truncated_jpeg", "text_as_jpg", "html_as_png", "png_bomb_header",
            "broken_symlink", "directory_named_jpg", "svg")) + "images/never-existed.png,bad\n")

    # 4. an empty folder
    c.empty = root / "empty"
    c.empty.mkdir()

    # 5. zips
    z = root / "zips"
    z.mkdir()
    c.zips["slip"] = _zip(z / "slip.zip", {"cat/a.png": _png_bytes(1), "../../evil.png": _png_bytes(2)})
    c.zips["bomb"] = _zip(z / "bomb.zip", {"cat/a.png": _png_bytes(1), "cat/huge.png": b"\0" * (64 << 20)})
    c.zips["noimages"] = _zip(z / "noimages.zip", {"readme.txt": b"hello", "data/notes.csv": b"a,b\n1,2\n"})
    c.zips["ok"] = _zip(z / "ok.zip", {
        **{f"pets/cat/{i}.png": _png_bytes(i, (220, 30, 30)) for i in range(5)},
        **{f"pets/dog/{i}.png": _png_bytes(i, (30, 30, 220)) for i in range(5)},
    })
    # a symbolic link stored in a zip (external attributes say S_IFLNK)
    info = zipfile.ZipInfo("cat/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(z / "symlink.zip", "w") as zf:
        zf.writestr("cat/a.png", _png_bytes(1))
        zf.writestr(info, "/etc/passwd")
    c.zips["symlink"] = z / "symlink.zip"
    return c


def tree_snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (not following links): relative path -> (kind, size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            kind = "link" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "file"
            out[str(p.relative_to(root))] = (kind, st.st_size if kind == "file" else 0, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Corpus:
    """The whole bad-input corpus, built once per session (read-only for tests)."""
    return build_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def corpus_snapshot(corpus) -> dict[str, tuple]:
    """The corpus as built, to compare with after loading: the user's files are never written."""
    return tree_snapshot(corpus.root)
