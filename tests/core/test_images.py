"""core.images: safe decoding (modes, EXIF, bombs, truncation, boxes) and the resized cache."""

from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core import images
from core.images import ImageCache, ImageError, ImageInfo, load_image, probe_image, resize_image


def _gradient(w: int = 40, h: int = 30) -> np.ndarray:
    """A deterministic RGB test pattern, (h, w, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) * 7) % 256],
                    axis=-1).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


# ---------------------------------------------------------------------------
# probe / load
# ---------------------------------------------------------------------------

def test_probe_reads_header(tmp_path):
    p = _save(tmp_path / "a.png", _gradient(40, 30))
    assert probe_image(p) == ImageInfo(40, 30, "RGB", "PNG")


def test_load_png_is_lossless_rgb(tmp_path):
    arr = _gradient(40, 30)
    p = _save(tmp_path / "a.png", arr)
    out = load_image(p)
    assert out.dtype == np.uint8 and out.shape == (30, 40, 3)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("mode", ["L", "1", "P", "CMYK", "YCbCr"])
def test_modes_without_alpha_become_rgb(tmp_path, mode):
    src = Image.fromarray(_gradient(24, 16)).convert(mode)
    ext = "jpg" if mode in ("CMYK", "YCbCr") else "png"
    if mode == "YCbCr":
        p = tmp_path / f"x.{ext}"
        src.convert("RGB").save(p, quality=95)
    else:
        p = tmp_path / f"x.{ext}"
        src.save(p, **({"quality": 95} if ext == "jpg" else {}))
    out = load_image(p)
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8
    ref = np.asarray(Image.open(p).convert("RGB"))
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 200                      # red-ish
    rgba[:5, :, 3] = 0                      # top half fully transparent
    rgba[5:, :, 3] = 255                    # bottom half opaque
    p = _save(tmp_path / "a.png", rgba)
    out = load_image(p)
    np.testing.assert_array_equal(out[:5], 255)                 # white where transparent
    assert (out[5:] == [200, 0, 0]).all()                      # unchanged where opaque
    la = Image.fromarray(rgba).convert("LA")
    la.save(tmp_path / "la.png")
    np.testing.assert_array_equal(load_image(tmp_path / "la.png")[:5], 255)


def test_palette_transparency_is_composited(tmp_path):
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    im.info["transparency"] = 1
    im.save(tmp_path / "p.png", transparency=1)
    out = load_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, 255)


def test_16bit_and_float_images_are_scaled(tmp_path):
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    out = load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], np.rint(g16 / 257.0).astype(np.uint8))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    f = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    outf = load_image(tmp_path / "f.tif")
    np.testing.assert_array_equal(outf[..., 0], np.rint(f * 255).astype(np.uint8))


def test_exif_orientation_is_applied(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)   # landscape 40x20, red block top-left
    arr[:8, :8] = [255, 0, 0]
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6                        # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=95)
    assert probe_image(p).width == 20 and probe_image(p).height == 40
    out = load_image(p)
    assert out.shape == (40, 20, 3)
    ref = np.asarray(Image.fromarray(arr).transpose(Image.Transpose.ROTATE_270))
    assert np.abs(out.astype(int) - ref.astype(int)).mean() < 6
    assert out[:6, -6:, 0].mean() > 200     # the red block is now top-right


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("RGB", (12, 12), c) for c in [(255, 0, 0), (0, 0, 255)]]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    out = load_image(tmp_path / "a.gif")
    assert out.shape == (12, 12, 3)
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize("kind", ["missing", "empty", "directory", "not_image", "broken_symlink"])
def test_unusable_files_raise_clear_errors(tmp_path, kind):
    p = tmp_path / "x.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "directory":
        p.mkdir()
    elif kind == "not_image":
        p.write_text("this is a text file, not a photo")
    elif kind == "broken_symlink":
        os.symlink(tmp_path / "nowhere.jpg", p)
    with pytest.raises(ImageError) as info:
        load_image(p)
    assert info.value.reason == kind
    assert info.value.path == str(p)
    assert str(info.value).startswith(f"{p}: ")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ImageError):
        probe_image(p)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_is_reported(tmp_path, fmt):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    p = tmp_path / f"t.{fmt.lower()}"
    Image.fromarray(arr).save(p, format=fmt)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError) as info:
        load_image(p)
    assert info.value.reason == "truncated"
    assert "truncated" in str(info.value)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bomb_refused_from_header_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_claiming(50000, 50000))
    for fn in (probe_image, load_image):
        with pytest.raises(ImageError) as info:
            fn(p)
        assert info.value.reason == "too_large"
        assert "2,500,000,000 pixels, over the limit" in str(info.value)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bomb_below_pillow_limit_refused_by_ours(tmp_path):
    p = tmp_path / "big.png"
    p.write_bytes(_png_claiming(10000, 10000))   # 100 Mpx: over MAX_PIXELS, under Pillow's error limit
    with pytest.raises(ImageError) as info:
        load_image(p)
    assert info.value.reason == "too_large" and "10000x10000" in str(info.value)


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    p = _save(tmp_path / "a.png", _gradient(40, 30))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="over the limit"):
        load_image(p)


def test_box_crop_matches_slicing(tmp_path):
    arr = _gradient(40, 30)
    p = _save(tmp_path / "a.png", arr)
    np.testing.assert_array_equal(load_image(p, box=(5, 6, 20, 16)), arr[6:16, 5:20])
    # fractional boxes cover every touched pixel; out-of-image parts are clipped
    np.testing.assert_array_equal(load_image(p, box=(5.5, 6.2, 19.1, 15.9)), arr[6:16, 5:20])
    np.testing.assert_array_equal(load_image(p, box=(-10, -10, 10, 8)), arr[0:8, 0:10])


@pytest.mark.parametrize("box", [(50, 50, 60, 60), (10, 10, 10, 20), (20, 5, 10, 8), (float("nan"), 0, 5, 5),
                                 ("a", 0, 5, 5)])
def test_empty_or_invalid_box_is_bad_box(tmp_path, box):
    p = _save(tmp_path / "a.png", _gradient(40, 30))
    with pytest.raises(ImageError) as info:
        load_image(p, box=box)
    assert info.value.reason == "bad_box"


# ---------------------------------------------------------------------------
# resize
# ---------------------------------------------------------------------------

def test_resize_shapes_and_quality():
    arr = _gradient(80, 60)
    out = resize_image(arr, 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    const = np.full((50, 70, 3), 123, np.uint8)
    np.testing.assert_array_equal(resize_image(const, 17), 123)
    # downsampling a 1-px checkerboard averages it (antialiased), instead of aliasing to 0/255
    checker = ((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)
    small = resize_image(checker, 8)
    assert np.abs(small.astype(int) - 127).max() < 20
    assert resize_image(np.zeros((5, 5), np.uint8), 3).shape == (3, 3, 3)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_resize_rejects_bad_size(bad):
    with pytest.raises(ValueError, match="size"):
        resize_image(np.zeros((4, 4, 3), np.uint8), bad)


def test_resize_rejects_bad_array():
    with pytest.raises(ValueError, match="shape"):
        resize_image(np.zeros((4, 4, 4), np.uint8), 3)
    with pytest.raises(ValueError, match="dtype"):
        resize_image(np.zeros((4, 4, 3), np.float32), 3)


# ---------------------------------------------------------------------------
# cache
# ---------------------------------------------------------------------------

@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        arr = rng.integers(0, 255, (50 + i, 70, 3), dtype=np.uint8)
        _save(d / f"{i}.png", arr)
    (d / "broken.jpg").write_text("not an image")
    return d


def _table(d: Path, names) -> pd.DataFrame:
    return pd.DataFrame({"path": [str(d / n) for n in names]})


def test_cache_matches_direct_decode_and_keeps_order(tmp_path, image_dir):
    names = ["3.png", "0.png", "broken.jpg", "5.png", "missing.png"]
    cache = ImageCache(tmp_path / "cache")
    res = cache.arrays(_table(image_dir, names), 24)
    assert res.images.shape == (5, 24, 24, 3) and res.images.dtype == np.uint8
    assert isinstance(res.images, np.memmap)
    assert res.ok.tolist() == [True, True, False, True, False]
    assert res.reasons == {2: "not_image", 4: "missing"}
    assert "broken.jpg" in res.errors[2] and "missing.png" in res.errors[4]
    for i, n in enumerate(names):
        if res.ok[i]:
            np.testing.assert_array_equal(res.images[i], resize_image(load_image(image_dir / n), 24))
    assert res.widths.tolist() == [70, 70, -1, 70, -1]
    assert res.heights.tolist()[:2] == [53, 50]
    assert res.modes[0] == "RGB" and res.formats[0] == "PNG"
    assert res.n_decoded == 4  # the missing file is never opened


def test_cache_second_call_decodes_nothing(tmp_path, image_dir):
    names = [f"{i}.png" for i in range(6)] + ["broken.jpg"]
    cache = ImageCache(tmp_path / "cache")
    first = cache.arrays(_table(image_dir, names), 16)
    seen = []
    second = ImageCache(tmp_path / "cache").arrays(_table(image_dir, names), 16,
                                                   progress=lambda d, t: seen.append((d, t)))
    assert first.n_decoded == 7 and second.n_decoded == 0
    np.testing.assert_array_equal(np.asarray(first.images), np.asarray(second.images))
    assert second.errors == first.errors and second.ok.tolist() == first.ok.tolist()
    assert seen[-1] == (7, 7)
    # a different size is a different key
    assert cache.arrays(_table(image_dir, names), 8).n_decoded == 7
    assert cache.n_decoded == 14


def test_cache_redecodes_only_changed_and_new_files(tmp_path, image_dir):
    names = [f"{i}.png" for i in range(4)]
    cache = ImageCache(tmp_path / "cache")
    cache.arrays(_table(image_dir, names), 16)
    # change one file (content and mtime), add another: only those two are decoded
    new = np.full((20, 20, 3), 77, np.uint8)
    _save(image_dir / "1.png", new)
    st = os.stat(image_dir / "1.png")
    os.utime(image_dir / "1.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    res = cache.arrays(_table(image_dir, names + ["5.png"]), 16)
    assert res.n_decoded == 2
    np.testing.assert_array_equal(res.images[1], 77)
    # the reused rows equal a fresh decode
    np.testing.assert_array_equal(res.images[0], resize_image(load_image(image_dir / "0.png"), 16))
    # the superseded set was garbage-collected: one set file left for this size
    assert len(list((tmp_path / "cache" / "16px").glob("*.npy"))) == 1


def _many(d: Path, n: int = 40) -> list[str]:
    """``n`` small PNGs of varied sizes plus a truncated PNG and a non-image, in ``d``."""
    rng = np.random.default_rng(5)
    names = []
    for i in range(n):
        _save(d / f"m{i}.png", rng.integers(0, 255, (10 + i % 7, 12 + i % 5, 3), dtype=np.uint8))
        names.append(f"m{i}.png")
    data = (d / "m0.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    (d / "text.png").write_text("not an image")
    return names[:17] + ["cut.png"] + names[17:] + ["text.png"]


@pytest.mark.skipif(images._fork_context() is None, reason="decoding in processes needs fork (Linux)")
def test_decoding_in_processes_equals_decoding_in_threads(tmp_path, monkeypatch):
    """Forked workers write pixels straight into the set file and send back only metadata: same result as threads."""
    names = _many(tmp_path)
    monkeypatch.setattr(images, "_PROCESS_MIN", 8)
    monkeypatch.setattr(images, "_DECODE_CHUNK", 8)
    seen = []
    procs = ImageCache(tmp_path / "procs", workers=2).arrays(_table(tmp_path, names), 20,
                                                               progress=lambda d, t: seen.append(d))
    monkeypatch.setenv("LOUPE_DECODE_PROCESSES", "0")
    threads = ImageCache(tmp_path / "threads", workers=2).arrays(_table(tmp_path, names), 20)
    assert procs.n_decoded == threads.n_decoded == len(names)
    np.testing.assert_array_equal(np.asarray(procs.images), np.asarray(threads.images))
    assert procs.ok.tolist() == threads.ok.tolist() and procs.ok.sum() == len(names) - 2
    assert procs.reasons == threads.reasons == {17: "truncated", len(names) - 1: "not_image"}
    assert procs.errors == threads.errors
    assert procs.widths.tolist() == threads.widths.tolist() and procs.modes == threads.modes
    np.testing.assert_array_equal(procs.images[3], resize_image(load_image(tmp_path / names[3]), 20))
    assert seen == sorted(seen) and seen[-1] == len(names)


_REAL_DECODE_ROWS = images._decode_rows_into


def _dying_decode(tmp, offset, size, rows):
    """A decode worker that vanishes without a word (os._exit) on the chunk holding row 20."""
    if any(i == 20 for i, _p, _b in rows):
        Path(tmp + ".died").touch()  # proof, for the test, that a worker did die
        os._exit(9)
    return _REAL_DECODE_ROWS(tmp, offset, size, rows)


@pytest.mark.skipif(images._fork_context() is None, reason="decoding in processes needs fork (Linux)")
def test_a_decode_worker_that_dies_leaves_its_rows_to_this_process(tmp_path, monkeypatch):
    """A worker killed mid-chunk (out of memory, kill -9) breaks the pool: what it did not send back decodes here."""
    names = _many(tmp_path)
    monkeypatch.setattr(images, "_PROCESS_MIN", 8)
    monkeypatch.setattr(images, "_DECODE_CHUNK", 8)
    monkeypatch.setattr(images, "_decode_rows_into", _dying_decode)
    res = ImageCache(tmp_path / "cache", workers=2).arrays(_table(tmp_path, names), 20)
    assert list((tmp_path / "cache" / "20px").glob("*.died"))
    assert res.n_decoded == len(names) and res.ok.sum() == len(names) - 2
    for i in (0, 20, 23, len(names) - 2):
        np.testing.assert_array_equal(res.images[i], resize_image(load_image(tmp_path / names[i]), 20))


def test_cache_remembers_failures(tmp_path, image_dir):
    cache = ImageCache(tmp_path / "cache")
    assert cache.arrays(_table(image_dir, ["broken.jpg"]), 16).n_decoded == 1
    res = cache.arrays(_table(image_dir, ["broken.jpg", "0.png"]), 16)
    assert res.n_decoded == 1            # only 0.png; the broken file is not opened again
    assert res.reasons == {0: "not_image"}


def test_lazy_subset_of_cached_rows_is_a_row_view_without_a_new_set(tmp_path, image_dir):
    """The audit's request (the valid rows of a load that decoded a superset) streams from the cached set."""
    cache = ImageCache(tmp_path / "cache")
    everything = [f"{i}.png" for i in range(6)] + ["broken.jpg"]
    full = cache.arrays(_table(image_dir, everything), 16)
    sets = sorted((tmp_path / "cache" / "16px").glob("*.npy"))
    subset = ["5.png", "0.png", "3.png", "2.png"]  # valid rows only, another order
    lazy = ImageCache(tmp_path / "cache").arrays(_table(image_dir, subset), 16, lazy=True)
    assert isinstance(lazy.images, images.RowView)
    assert lazy.n_decoded == 0 and lazy.ok.all() and lazy.errors == {}
    assert sorted((tmp_path / "cache" / "16px").glob("*.npy")) == sets  # nothing written
    assert lazy.images.shape == (4, 16, 16, 3) and len(lazy.images) == 4 and lazy.images.dtype == np.uint8
    want = np.stack([np.asarray(full.images[everything.index(n)]) for n in subset])
    np.testing.assert_array_equal(np.asarray(lazy.images), want)
    np.testing.assert_array_equal(lazy.images[1], want[1])                       # int
    np.testing.assert_array_equal(lazy.images[1:3], want[1:3])                   # slice
    np.testing.assert_array_equal(lazy.images[np.array([3, 0])], want[[3, 0]])  # int array
    np.testing.assert_array_equal(lazy.images[np.array([True, False, True, False])], want[[0, 2]])  # mask
    assert lazy.widths.tolist() == [70] * 4 and lazy.heights.tolist() == [55, 50, 53, 52]
    # the same request without lazy (or with a row the cache lacks) is an ordinary set on disk
    plain = cache.arrays(_table(image_dir, subset), 16)
    assert isinstance(plain.images, np.memmap)
    np.testing.assert_array_equal(np.asarray(plain.images), want)
    with_failure = cache.arrays(_table(image_dir, ["0.png", "broken.jpg"]), 16, lazy=True)
    assert isinstance(with_failure.images, np.memmap) and with_failure.reasons == {1: "not_image"}


def _mapped_kb(path) -> int:
    """Resident KB of this process's memory maps of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_a_streamed_pass_releases_the_mapped_pages_it_read(tmp_path, monkeypatch):
    """A pass over a RowView reads the same rows but leaves at most ~RELEASE_BYTES of the map resident;
    without the releases every page read stays mapped (the 100k bench's 2.7 GB)."""
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (512, 64, 64, 3), dtype=np.uint8)  # 6 MB
    npy = tmp_path / "set.npy"
    np.save(npy, data)
    for release_bytes, most_kb in ((1 << 20, 2 * 1024 + 200), (1 << 40, None)):
        monkeypatch.setattr(images, "RELEASE_BYTES", release_bytes)
        view = images.RowView(np.load(npy, mmap_mode="r"), np.arange(512))
        got = np.concatenate([view[a:a + 32] for a in range(0, 512, 32)]
                             + [view[np.array([5, 3])], view[7][None]])
        np.testing.assert_array_equal(got, np.concatenate([data, data[[5, 3]], data[7][None]]))
        if most_kb is None:
            assert _mapped_kb(npy) >= data.nbytes // 1024  # nothing released: every page read is resident
        else:
            assert _mapped_kb(npy) <= most_kb
        del view
    assert images.release_pages(np.load(npy, mmap_mode="r"))
    assert not images.release_pages(np.load(npy, mmap_mode="r+"))  # a writable map could lose writes
    assert not images.release_pages(data)


def test_cache_boxes(tmp_path):
    arr = _gradient(120, 80)
    p = _save(tmp_path / "big.png", arr)
    df = pd.DataFrame({"path": [str(p)] * 3, "x1": [10.0, np.nan, 500.0], "y1": [5.0, np.nan, 500.0],
                       "x2": [60.0, np.nan, 600.0], "y2": [45.0, np.nan, 600.0]})
    res = ImageCache(tmp_path / "c").arrays(df, 16)
    assert res.ok.tolist() == [True, True, False]
    assert res.reasons == {2: "bad_box"}
    assert res.widths.tolist() == [120, 120, 120]     # size of the whole image, even for a bad box
    ref = resize_image(load_image(p, box=(10, 5, 60, 45)), 16)
    assert np.abs(res.images[0].astype(int) - ref.astype(int)).mean() < 2
    np.testing.assert_array_equal(res.images[1], resize_image(arr, 16))


def test_cache_jpeg_draft_is_close_to_full_decode(tmp_path):
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(base).resize((800, 600), Image.Resampling.BILINEAR))
    p = _save(tmp_path / "big.jpg", big, quality=92)
    res = ImageCache(tmp_path / "c").arrays(pd.DataFrame({"path": [str(p)]}), 32)
    ref = resize_image(load_image(p), 32)
    assert np.abs(res.images[0].astype(int) - ref.astype(int)).mean() < 3


def test_cache_concurrent_users_agree(tmp_path, image_dir):
    names = [f"{i}.png" for i in range(6)]
    results = {}

    def work(k):
        results[k] = ImageCache(tmp_path / "cache").arrays(_table(image_dir, names), 12)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(1, 3):
        np.testing.assert_array_equal(np.asarray(results[0].images), np.asarray(results[k].images))
    assert ImageCache(tmp_path / "cache").arrays(_table(image_dir, names), 12).n_decoded == 0
    assert not list((tmp_path / "cache").rglob("*.tmp"))


def test_cache_empty_table_and_validation(tmp_path):
    cache = ImageCache(tmp_path / "c")
    res = cache.arrays(pd.DataFrame({"path": []}), 8)
    assert res.images.shape == (0, 8, 8, 3) and res.ok.shape == (0,)
    with pytest.raises(ValueError, match="path"):
        cache.arrays(pd.DataFrame({"file": ["x"]}), 8)
    with pytest.raises(ValueError, match="size"):
        cache.arrays(pd.DataFrame({"path": []}), 0)


def test_user_files_are_not_modified(tmp_path, image_dir):
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in image_dir.iterdir()}
    ImageCache(tmp_path / "c").arrays(_table(image_dir, sorted(before)), 16)
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in image_dir.iterdir()}
    assert before == after
