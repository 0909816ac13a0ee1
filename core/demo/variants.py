"""Images derived from the drawings: captured-looking degradations, injected variants, unseen images.

:func:`_degrade` makes a drawn crop look captured (blur, noise, JPEG); :func:`_near_copy` and
:func:`_uniform` make the near-duplicate and blank problems; :data:`_UNSEEN` draws the
out-of-distribution images of ``unseen/`` (gradients, clouds, textures, landscapes, ...).
"""

from __future__ import annotations

import io
import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from core.demo.draw import _choice, _jitter, _mix, _Style

# ---------------------------------------------------------------------------
# Degradations and injected variants
# ---------------------------------------------------------------------------

def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _noise(rng: np.random.Generator, img: Image.Image, sigma: float) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32)
    arr = arr + rng.normal(0.0, sigma, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def _degrade(rng: np.random.Generator, img: Image.Image) -> Image.Image:
    """Make crops look captured, not drawn: slight blur, sensor-like noise, JPEG round trips."""
    if rng.random() < 0.15:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 0.8)))
    if rng.random() < 0.5:
        img = _noise(rng, img, rng.uniform(1.0, 5.0))
    if rng.random() < 0.35:
        img = _jpeg(img, int(rng.integers(55, 93)))
    return img


def _near_copy(rng: np.random.Generator, img: Image.Image) -> tuple[Image.Image, str]:
    how = _choice(rng, ["resize", "recompress", "crop", "resize+recompress"])
    out, parts = img, []
    if how.startswith("resize"):
        f = float(rng.choice([rng.uniform(0.75, 0.9), rng.uniform(1.15, 1.3)]))
        out = out.resize((max(8, round(out.width * f)), max(8, round(out.height * f))), Image.Resampling.LANCZOS)
        parts.append(f"resize({f:.2f})")
    if how == "crop":
        # 1 px up to ~6 % per side: a slightly different crop box of the same element
        c = [int(rng.integers(1, max(1, round(0.06 * dim)) + 1)) for dim in (out.width, out.height) * 2]
        if out.width - c[0] - c[2] >= 8 and out.height - c[1] - c[3] >= 8:
            out = out.crop((c[0], c[1], out.width - c[2], out.height - c[3]))
            parts.append("crop({},{},{},{})".format(*c))
        else:
            how = "recompress"
    if how.endswith("recompress"):
        q = int(rng.integers(40, 75))
        out = _jpeg(out, q)
        parts.append(f"jpeg({q})")
    return out, "+".join(parts)


def _uniform(rng: np.random.Generator) -> tuple[Image.Image, int, str]:
    """A blank crop: solid colour, or the same plus faint noise (pixel std <= ~1)."""
    st = _Style.draw(rng)
    color = [st.bg, st.surface, st.accent][int(rng.choice(3, p=[0.6, 0.25, 0.15]))]
    w, h = int(rng.integers(16, 241)), int(rng.integers(12, 81))
    img = Image.new("RGB", (w, h), color)
    if rng.random() < 0.5:
        return img, int(st.dark), "solid"
    return _noise(rng, img, rng.uniform(0.3, 0.9)), int(st.dark), "near_solid"


# ---------------------------------------------------------------------------
# Unseen (out-of-distribution) images
# ---------------------------------------------------------------------------

def _ood_size(rng) -> tuple[int, int]:
    w = int(rng.integers(64, 161))
    return w, int(w * rng.uniform(0.6, 1.2))


def _value_noise(rng, w: int, h: int, octaves: int = 4) -> np.ndarray:
    """Smooth fractal noise in [0, 1], shape (h, w): upsampled random grids summed over octaves."""
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = 2 ** (o + 2)
        grid = Image.fromarray((rng.random((g, g)) * 255).astype(np.uint8), "L")
        acc += amp * np.asarray(grid.resize((w, h), Image.Resampling.BICUBIC), np.float32) / 255.0
        total += amp
        amp *= 0.5
    acc /= total
    return (acc - acc.min()) / max(1e-6, float(acc.max() - acc.min()))


def _palette_map(v: np.ndarray, colors: list) -> Image.Image:
    c = np.asarray(colors, np.float32)
    pos = v * (len(c) - 1)
    i = np.clip(pos.astype(int), 0, len(c) - 2)
    t = (pos - i)[..., None]
    rgb = c[i] * (1 - t) + c[i + 1] * t
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")


def _rand_color(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _ood_gradient(rng) -> Image.Image:
    w, h = _ood_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        a = rng.uniform(0, 2 * math.pi)
        v = xx * math.cos(a) + yy * math.sin(a)
    else:
        v = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
    v = (v - v.min()) / max(1e-6, float(v.max() - v.min()))
    return _palette_map(v, [_rand_color(rng) for _ in range(int(rng.integers(2, 4)))])


def _ood_clouds(rng) -> Image.Image:
    w, h = _ood_size(rng)
    return _palette_map(_value_noise(rng, w, h, 5), [_rand_color(rng) for _ in range(3)])


def _ood_texture(rng) -> Image.Image:
    """Wood / marble-like: sine bands warped by fractal noise."""
    w, h = _ood_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    f = rng.uniform(0.05, 0.25)
    v = 0.5 + 0.5 * np.sin(f * (xx + 0.6 * yy) + 8.0 * _value_noise(rng, w, h, 4))
    base = _rand_color(rng)
    return _palette_map(v, [_mix(base, (0, 0, 0), 0.5), base, _mix(base, (255, 255, 255), 0.4)])


def _ood_landscape(rng) -> Image.Image:
    w, h = _ood_size(rng)
    sky = _palette_map(np.repeat(np.linspace(0, 1, h, dtype=np.float32)[:, None], w, axis=1),
                       [_jitter(rng, (90, 150, 230), 30), _jitter(rng, (250, 200, 160), 30)])
    d = ImageDraw.Draw(sky)
    if rng.random() < 0.6:
        sx, sy, r = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.4) * h, rng.uniform(0.05, 0.12) * w
        d.ellipse([sx - r, sy - r, sx + r, sy + r], fill=_jitter(rng, (255, 230, 150), 20))
    for layer in range(int(rng.integers(2, 4))):
        base = h * (0.45 + 0.15 * layer)
        xs = np.linspace(0, w, 12)
        ys = base + _value_noise(rng, 12, 1, 2)[0] * h * 0.2 - h * 0.1
        col = _mix(_jitter(rng, (60, 110, 60), 30), (20, 30, 20), 0.25 * layer)
        d.polygon([(0, h)] + list(zip(xs.tolist(), ys.tolist())) + [(w, h)], fill=col)
    return _noise(rng, sky, 3.0)


def _ood_shapes(rng) -> Image.Image:
    w, h = _ood_size(rng)
    img = Image.new("RGB", (w, h), _rand_color(rng))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 14))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(4, w / 3)
        kind = int(rng.integers(3))
        if kind == 0:
            d.ellipse([x - r, y - r, x + r, y + r], fill=_rand_color(rng))
        elif kind == 1:
            n = int(rng.integers(3, 8))
            d.polygon([(x + r * math.cos(a), y + r * math.sin(a))
                       for a in np.sort(rng.uniform(0, 2 * math.pi, n))], fill=_rand_color(rng))
        else:
            d.line([(x, y), (rng.uniform(0, w), rng.uniform(0, h))], fill=_rand_color(rng),
                   width=int(rng.integers(2, 8)))
    return img


def _ood_noise(rng) -> Image.Image:
    w, h = _ood_size(rng)
    arr = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
    img = Image.fromarray(arr, "RGB").resize((w, h), Image.Resampling.NEAREST if rng.random() < 0.5
                                             else Image.Resampling.BILINEAR)
    return _noise(rng, img, 12.0)


def _ood_mosaic(rng) -> Image.Image:
    w, h = _ood_size(rng)
    cell = int(rng.integers(6, 24))
    yy, xx = np.mgrid[0:h, 0:w]
    v = ((xx // cell + yy // cell) % 2).astype(np.float32)
    img = _palette_map(v, [_rand_color(rng), _rand_color(rng)])
    return img.rotate(float(rng.uniform(0, 90)), resample=Image.Resampling.BILINEAR, fillcolor=_rand_color(rng))


_UNSEEN: dict[str, Callable[[np.random.Generator], Image.Image]] = {
    "gradient": _ood_gradient, "clouds": _ood_clouds, "texture": _ood_texture, "landscape": _ood_landscape,
    "shapes": _ood_shapes, "noise": _ood_noise, "mosaic": _ood_mosaic,
}
_UNSEEN_KINDS = tuple(_UNSEEN)
