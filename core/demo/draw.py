"""Drawing the UI-element crops: random light / dark styles, fonts and texts, one renderer per element.

Every renderer takes a seeded generator and a :class:`_Style` and returns a PIL image drawn
at ``_SS`` times the size and box-reduced (anti-aliasing); :data:`_RENDERERS` maps each
element of :data:`core.demo.contents.ELEMENTS` to its renderer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_SS = 2  # supersampling factor: shapes are drawn at 2x and box-reduced (anti-aliasing)


# ---------------------------------------------------------------------------
# Drawing: styles, fonts, texts
# ---------------------------------------------------------------------------

_LIGHT_BG = [(255, 255, 255), (248, 249, 250), (243, 244, 246), (250, 250, 245), (236, 239, 241), (245, 247, 252)]
_DARK_BG = [(18, 18, 18), (30, 30, 30), (33, 37, 41), (24, 26, 27), (40, 44, 52), (22, 27, 34)]
_ACCENTS = [(13, 110, 253), (25, 118, 210), (46, 125, 50), (103, 58, 183), (211, 47, 47), (245, 124, 0),
            (0, 150, 136), (216, 27, 96), (63, 81, 181), (2, 136, 209), (0, 121, 107), (94, 53, 177)]

_BUTTON_WORDS = ["Submit", "Cancel", "OK", "Save", "Next", "Back", "Sign in", "Sign up", "Continue", "Delete",
                 "Buy now", "Apply", "Send", "Download", "Log out", "Confirm", "Add to cart", "Get started",
                 "Close", "Edit", "Upload", "Pay"]
_LINK_WORDS = ["Learn more", "Forgot password?", "Terms of service", "Privacy policy", "Read more", "View all",
               "Help", "Contact us", "See details", "Home", "About", "Docs", "Unsubscribe", "Back to top",
               "Sign in instead", "Pricing", "Blog", "Careers", "Edit profile"]
_CHOICE_WORDS = ["Remember me", "I agree", "Subscribe", "Email me", "Dark mode", "Notifications", "Option A",
                 "Option B", "Yes", "No", "Monthly", "Yearly", "Public", "Private", "Auto-save", "Wi-Fi",
                 "Show hidden", "Keep me signed in", "Beta features"]
_PLACEHOLDERS = ["Email", "Name", "Search...", "Password", "Username", "Phone number", "Address", "City",
                 "First name", "Enter code", "you@example.com", "Search", "Company", "Zip code"]
_TYPED = ["jane.doe", "42", "Berlin", "*********", "hello world", "Alex Smith", "2024-05-01", "loupe"]
_OPTIONS = ["Select...", "Country", "English", "Sort by", "All categories", "Month", "Small", "Choose one",
            "2024", "Newest first", "USD", "Medium", "France", "Any time"]
_FIELD_LABELS = ["Email", "Full name", "Password", "Message", "Country", "Amount", "Title", "Notes"]
_PARAGRAPH = ["Lorem ipsum dolor sit amet,", "consectetur adipiscing elit.", "Tell us about yourself",
              "Write your message here", "Describe the issue...", "Sed do eiusmod tempor", "incididunt ut labore",
              "Thanks for the quick reply!", "Steps to reproduce:", "1. Open the settings page"]


def _jitter(rng: np.random.Generator, c: tuple[int, int, int], amount: int = 6) -> tuple[int, int, int]:
    return tuple(int(np.clip(v + rng.integers(-amount, amount + 1), 0, 255)) for v in c)


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round(x * (1 - t) + y * t)) for x, y in zip(a, b))


@dataclass(frozen=True)
class _Style:
    dark: bool
    disabled: bool
    bg: tuple
    surface: tuple   # fill of fields
    text: tuple
    muted: tuple     # placeholder text, unchecked tracks
    border: tuple
    accent: tuple
    on_accent: tuple

    @classmethod
    def draw(cls, rng: np.random.Generator) -> "_Style":
        dark = bool(rng.random() < 0.3)
        disabled = bool(rng.random() < 0.15)
        bg = _jitter(rng, (_DARK_BG if dark else _LIGHT_BG)[int(rng.integers(6))])
        accent = _jitter(rng, _ACCENTS[int(rng.integers(len(_ACCENTS)))], 12)
        if dark:
            text = _jitter(rng, (232, 234, 237))
            surface = _mix(bg, (255, 255, 255), rng.uniform(0.0, 0.08))
            muted, border = _mix(bg, text, 0.45), _mix(bg, text, rng.uniform(0.25, 0.45))
            accent = _mix(accent, (255, 255, 255), 0.2)
        else:
            text = _jitter(rng, (33, 37, 41))
            surface = (255, 255, 255) if rng.random() < 0.7 else bg
            muted, border = _mix(bg, text, 0.45), _mix(bg, text, rng.uniform(0.2, 0.45))
        on_accent = (255, 255, 255)
        if disabled:
            accent = _mix(accent, _mix(bg, (128, 128, 128), 0.5), 0.6)
            text, muted, border = _mix(text, bg, 0.5), _mix(muted, bg, 0.4), _mix(border, bg, 0.4)
            on_accent = _mix(on_accent, accent, 0.35)
        return cls(dark, disabled, bg, surface, text, muted, border, accent, on_accent)


@lru_cache(maxsize=128)
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (Aileron Regular, basic layout): no system fonts needed."""
    return ImageFont.load_default(size=max(4, int(size)))


def _choice(rng: np.random.Generator, words: list[str]) -> str:
    return words[int(rng.integers(len(words)))]


def _text_w(text: str, size: int) -> int:
    return int(math.ceil(_font(size).getlength(text)))


def _canvas(w: int, h: int, bg) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (int(w) * _SS, int(h) * _SS), bg)
    return img, ImageDraw.Draw(img)


def _finish(img: Image.Image) -> Image.Image:
    return img.reduce(_SS)


# Every renderer works in 1x units and scales by _SS (k) when drawing.

def _draw_button(rng, st: _Style) -> Image.Image:
    k = _SS
    label = _choice(rng, _BUTTON_WORDS)
    if rng.random() < 0.25:
        label = label.upper()
    fs = int(rng.integers(10, 19))
    padx, h = int(rng.integers(8, 28)), int(fs * rng.uniform(1.8, 2.8))
    w = _text_w(label, fs) + 2 * padx
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    r = int(rng.choice([0, 3, 6, h // 2]))
    style = rng.choice(["filled", "filled", "filled", "outline", "soft"])
    box = [m * k, m * k, (m + w) * k - 1, (m + h) * k - 1]
    if style == "filled":
        if rng.random() < 0.3:  # drop shadow
            d.rounded_rectangle([box[0] + k, box[1] + 2 * k, box[2] + k, box[3] + 2 * k], r * k,
                                fill=_mix(st.bg, (0, 0, 0), 0.18))
        d.rounded_rectangle(box, r * k, fill=st.accent)
        fg = st.on_accent
    elif style == "outline":
        d.rounded_rectangle(box, r * k, outline=st.accent, width=int(rng.integers(1, 3)) * k)
        fg = st.accent
    else:
        d.rounded_rectangle(box, r * k, fill=_mix(st.bg, st.accent, 0.18))
        fg = st.accent
    d.text(((m + w / 2) * k, (m + h / 2) * k), label, font=_font(fs * k), fill=fg, anchor="mm")
    return _finish(img)


def _draw_link(rng, st: _Style) -> Image.Image:
    k = _SS
    label = _choice(rng, _LINK_WORDS)
    fs = int(rng.integers(10, 20))
    color = st.accent if rng.random() < 0.8 else _mix(st.text, st.accent, 0.3)
    arrow = rng.random() < 0.2
    tw = _text_w(label, fs)
    mx, my = int(rng.integers(1, 6)), int(rng.integers(1, 5))
    w, h = tw + 2 * mx + (int(fs * 0.9) if arrow else 0), int(fs * 1.35) + 2 * my
    img, d = _canvas(w, h, st.bg)
    base = my + fs * 1.05
    d.text((mx * k, base * k), label, font=_font(fs * k), fill=color, anchor="ls")
    if rng.random() < 0.7:
        y = (base + max(1.0, fs * 0.12)) * k
        d.line([(mx * k, y), ((mx + tw) * k, y)], fill=color, width=max(1, fs // 10) * k)
    if arrow:
        x0, yc, s = (mx + tw + fs * 0.25) * k, (base - fs * 0.35) * k, fs * 0.25 * k
        d.line([(x0, yc - s), (x0 + s, yc), (x0, yc + s)], fill=color, width=max(1, fs // 9) * k)
    return _finish(img)


def _draw_icon(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(16, 49))
    w = s if rng.random() < 0.8 else int(s * rng.uniform(1.0, 1.3))
    img, d = _canvas(w, s, st.bg)
    color = st.text if rng.random() < 0.5 else st.accent
    under = st.bg
    if rng.random() < 0.35:  # icon button background
        on_accent = rng.random() < 0.5
        fillc = st.accent if on_accent else _mix(st.bg, st.text, 0.12)
        color, under = (st.on_accent if on_accent else color), fillc
        if rng.random() < 0.5:
            d.ellipse([0, 0, w * k - 1, s * k - 1], fill=fillc)
        else:
            d.rounded_rectangle([0, 0, w * k - 1, s * k - 1], s * k // 5, fill=fillc)
    cx, cy, r = w * k / 2, s * k / 2, s * k * rng.uniform(0.26, 0.36)
    lw = max(1, int(round(s * rng.uniform(0.06, 0.11)))) * k
    glyph = _choice(rng, ["menu", "search", "close", "plus", "gear", "chevron", "star", "home", "bell", "dots"])
    if glyph == "menu":
        for dy in (-0.6, 0, 0.6):
            d.line([(cx - r, cy + dy * r), (cx + r, cy + dy * r)], fill=color, width=lw)
    elif glyph == "search":
        rr = r * 0.62
        d.ellipse([cx - r, cy - r, cx - r + 2 * rr, cy - r + 2 * rr], outline=color, width=lw)
        d.line([(cx - r + 1.7 * rr, cy - r + 1.7 * rr), (cx + r, cy + r)], fill=color, width=lw)
    elif glyph == "close":
        d.line([(cx - r, cy - r), (cx + r, cy + r)], fill=color, width=lw)
        d.line([(cx - r, cy + r), (cx + r, cy - r)], fill=color, width=lw)
    elif glyph == "plus":
        d.line([(cx - r, cy), (cx + r, cy)], fill=color, width=lw)
        d.line([(cx, cy - r), (cx, cy + r)], fill=color, width=lw)
    elif glyph == "gear":
        for a in range(8):
            t = a * math.pi / 4
            d.line([(cx, cy), (cx + r * math.cos(t), cy + r * math.sin(t))], fill=color, width=lw * 2)
        d.ellipse([cx - r * 0.75, cy - r * 0.75, cx + r * 0.75, cy + r * 0.75], fill=color)
        d.ellipse([cx - r * 0.3, cy - r * 0.3, cx + r * 0.3, cy + r * 0.3], fill=under)
    elif glyph == "chevron":
        d.line([(cx - r * 0.4, cy - r), (cx + r * 0.4, cy), (cx - r * 0.4, cy + r)], fill=color, width=lw)
    elif glyph == "star":
        pts = [(cx + (r if i % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + i * math.pi / 5),
                cy + (r if i % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=color)
    elif glyph == "home":
        d.polygon([(cx - r, cy), (cx, cy - r), (cx + r, cy)], fill=color)
        d.rectangle([cx - r * 0.65, cy, cx + r * 0.65, cy + r], fill=color)
    elif glyph == "bell":
        d.pieslice([cx - r * 0.8, cy - r, cx + r * 0.8, cy + r * 0.9], 180, 360, fill=color)
        d.rectangle([cx - r * 0.8, cy - r * 0.05, cx + r * 0.8, cy + r * 0.6], fill=color)
        d.ellipse([cx - r * 0.25, cy + r * 0.6, cx + r * 0.25, cy + r], fill=color)
    else:  # dots
        for dx in (-0.7, 0, 0.7):
            d.ellipse([cx + dx * r - lw, cy - lw, cx + dx * r + lw, cy + lw], fill=color)
    return _finish(img)


def _with_label(rng, st: _Style, control_w: int, control_h: int, p_label: float):
    """Canvas for a small control with optional text to its right; returns (img, draw, x0, y0) in 1x units."""
    label = _choice(rng, _CHOICE_WORDS) if rng.random() < p_label else ""
    fs = int(max(9, min(18, control_h * rng.uniform(0.7, 1.0))))
    gap = int(rng.integers(4, 10))
    m = int(rng.integers(1, 5))
    w = control_w + 2 * m + (gap + _text_w(label, fs) if label else 0)
    h = max(control_h, int(fs * 1.3)) + 2 * m
    img, d = _canvas(w, h, st.bg)
    y0 = (h - control_h) // 2
    if label:
        d.text(((m + control_w + gap) * _SS, (h / 2) * _SS), label, font=_font(fs * _SS), fill=st.text,
               anchor="lm")
    return img, d, m, y0


def _draw_checkbox(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(12, 27))
    img, d, x0, y0 = _with_label(rng, st, s, s, 0.55)
    box = [x0 * k, y0 * k, (x0 + s) * k - 1, (y0 + s) * k - 1]
    r = int(rng.choice([0, 2, 3, s // 5])) * k
    state = rng.choice(["checked", "checked", "unchecked", "unchecked", "indeterminate"])
    bw = int(rng.integers(1, 3)) * k
    if state == "unchecked":
        d.rounded_rectangle(box, r, fill=st.surface, outline=st.border, width=bw)
    else:
        d.rounded_rectangle(box, r, fill=st.accent)
        lw = max(1, s // 8) * k
        if state == "checked":
            d.line([(box[0] + s * k * 0.22, box[1] + s * k * 0.52), (box[0] + s * k * 0.42, box[1] + s * k * 0.72),
                    (box[0] + s * k * 0.78, box[1] + s * k * 0.3)], fill=st.on_accent, width=lw, joint="curve")
        else:
            d.line([(box[0] + s * k * 0.25, box[1] + s * k / 2), (box[0] + s * k * 0.75, box[1] + s * k / 2)],
                   fill=st.on_accent, width=lw)
    return _finish(img)


def _draw_radio(rng, st: _Style) -> Image.Image:
    k = _SS
    s = int(rng.integers(12, 27))
    img, d, x0, y0 = _with_label(rng, st, s, s, 0.55)
    box = [x0 * k, y0 * k, (x0 + s) * k - 1, (y0 + s) * k - 1]
    selected = rng.random() < 0.5
    bw = int(rng.integers(1, 3)) * k
    if selected:
        d.ellipse(box, fill=st.surface, outline=st.accent, width=max(bw, k * max(1, s // 8)))
        inset = s * k * rng.uniform(0.25, 0.32)
        d.ellipse([box[0] + inset, box[1] + inset, box[2] - inset, box[3] - inset], fill=st.accent)
    else:
        d.ellipse(box, fill=st.surface, outline=st.border, width=bw)
    return _finish(img)


def _draw_toggle(rng, st: _Style) -> Image.Image:
    k = _SS
    h = int(rng.integers(12, 29))
    w = int(h * rng.uniform(1.6, 2.2))
    img, d, x0, y0 = _with_label(rng, st, w, h, 0.3)
    on = rng.random() < 0.5
    box = [x0 * k, y0 * k, (x0 + w) * k - 1, (y0 + h) * k - 1]
    track = st.accent if on else _mix(st.bg, st.text, 0.3)
    if rng.random() < 0.25:  # material style: thin track, knob overhangs
        ty = (y0 + h / 2) * k
        d.rounded_rectangle([box[0], ty - h * k * 0.28, box[2], ty + h * k * 0.28], h * k, fill=_mix(track, st.bg, 0.4))
        kr = h * k / 2
        kx = box[2] - kr if on else box[0] + kr
        d.ellipse([kx - kr, ty - kr, kx + kr, ty + kr], fill=st.accent if on else _mix(st.bg, (255, 255, 255), 0.8))
    else:
        d.rounded_rectangle(box, h * k // 2, fill=track)
        pad = max(1.5, h * 0.12) * k
        kr = h * k / 2 - pad
        kx = box[2] - pad - kr if on else box[0] + pad + kr
        ky = (y0 + h / 2) * k
        d.ellipse([kx - kr, ky - kr, kx + kr, ky + kr], fill=(255, 255, 255) if not st.disabled else st.surface)
    return _finish(img)


def _field(rng, st: _Style, w: int, h: int, m: int, top: int, d: ImageDraw.ImageDraw, *, underline_p: float) -> None:
    """Draw an input field frame (box or material underline) at (m, top)."""
    k = _SS
    box = [m * k, top * k, (m + w) * k - 1, (top + h) * k - 1]
    if rng.random() < underline_p:
        d.rectangle(box, fill=_mix(st.bg, st.text, 0.05) if rng.random() < 0.5 else st.bg)
        d.line([(box[0], box[3]), (box[2], box[3])], fill=st.border, width=int(rng.integers(1, 3)) * k)
    else:
        r = int(rng.choice([0, 2, 4, 6, 8])) * k
        focus = rng.random() < 0.15 and not st.disabled
        d.rounded_rectangle(box, r, fill=st.surface, outline=st.accent if focus else st.border,
                            width=(2 if focus else 1) * k)


def _draw_text_input(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(100, 281)), int(rng.integers(24, 45))
    fs = int(max(9, min(18, h * rng.uniform(0.4, 0.55))))
    label = _choice(rng, _FIELD_LABELS) if rng.random() < 0.2 else ""
    lfs = int(rng.integers(9, 14))
    m = int(rng.integers(0, 5))
    top = m + (int(lfs * 1.5) if label else 0)
    img, d = _canvas(w + 2 * m, top + h + m, st.bg)
    if label:
        d.text((m * k, (m + lfs) * k), label, font=_font(lfs * k), fill=st.text, anchor="ls")
    _field(rng, st, w, h, m, top, d, underline_p=0.15)
    mode = rng.random()
    tx = (m + rng.integers(6, 12)) * k
    ty = (top + h / 2) * k
    if mode < 0.6:
        d.text((tx, ty), _choice(rng, _PLACEHOLDERS), font=_font(fs * k), fill=st.muted, anchor="lm")
    elif mode < 0.9:
        txt = _choice(rng, _TYPED)
        d.text((tx, ty), txt, font=_font(fs * k), fill=st.text, anchor="lm")
        if rng.random() < 0.4:
            cx = tx + _text_w(txt, fs) * k + 2 * k
            d.line([(cx, ty - fs * k * 0.6), (cx, ty + fs * k * 0.6)], fill=st.text, width=k)
    if rng.random() < 0.15:  # trailing search / clear glyph
        gx, rr = (m + w - h * 0.5) * k, h * k * 0.18
        d.ellipse([gx - rr, ty - rr, gx + rr, ty + rr], outline=st.muted, width=k)
    return _finish(img)


def _draw_textarea(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(140, 301)), int(rng.integers(60, 141))
    fs = int(rng.integers(10, 15))
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    _field(rng, st, w, h, m, m, d, underline_p=0.0)
    lines = int(rng.integers(1, max(2, min(6, h // int(fs * 1.5)))))
    color = st.muted if rng.random() < 0.4 else st.text
    start = int(rng.integers(len(_PARAGRAPH)))
    for i in range(lines):
        y = (m + 6 + fs + i * fs * 1.45) * k
        if y > (m + h - 4) * k:
            break
        line = _PARAGRAPH[(start + i) % len(_PARAGRAPH)]
        while len(line) > 1 and _text_w(line, fs) > w - 20:
            line = line[:-1]
        d.text(((m + 8) * k, y), line, font=_font(fs * k), fill=color, anchor="ls")
    if rng.random() < 0.65:  # resize grip
        x1, y1 = (m + w - 3) * k, (m + h - 3) * k
        for off in (4, 8, 12):
            d.line([(x1 - off * k, y1), (x1, y1 - off * k)], fill=st.muted, width=k)
    if rng.random() < 0.2:  # scrollbar
        d.rounded_rectangle([(m + w - 8) * k, (m + 4) * k, (m + w - 4) * k, (m + h * 0.45) * k], 2 * k,
                            fill=_mix(st.surface, st.text, 0.3))
    return _finish(img)


def _draw_dropdown(rng, st: _Style) -> Image.Image:
    k = _SS
    w, h = int(rng.integers(90, 241)), int(rng.integers(24, 45))
    fs = int(max(9, min(18, h * rng.uniform(0.4, 0.55))))
    m = int(rng.integers(0, 5))
    img, d = _canvas(w + 2 * m, h + 2 * m, st.bg)
    if rng.random() < 0.2:  # filled, button-like select
        d.rounded_rectangle([m * k, m * k, (m + w) * k - 1, (m + h) * k - 1], int(rng.choice([2, 4, 6])) * k,
                            fill=_mix(st.bg, st.text, 0.08))
    else:
        _field(rng, st, w, h, m, m, d, underline_p=0.2)
    cy = (m + h / 2) * k
    d.text(((m + rng.integers(6, 12)) * k, cy), _choice(rng, _OPTIONS), font=_font(fs * k),
           fill=st.text if rng.random() < 0.7 else st.muted, anchor="lm")
    cx, s = (m + w - h * 0.5) * k, h * k * rng.uniform(0.12, 0.18)
    color = st.text if rng.random() < 0.7 else st.accent
    if rng.random() < 0.5:
        d.line([(cx - s, cy - s * 0.5), (cx, cy + s * 0.5), (cx + s, cy - s * 0.5)], fill=color,
               width=max(1, int(h / 16)) * k)
    else:
        d.polygon([(cx - s, cy - s * 0.45), (cx + s, cy - s * 0.45), (cx, cy + s * 0.55)], fill=color)
    if rng.random() < 0.25:
        sx = (m + w - h) * k
        d.line([(sx, (m + 4) * k), (sx, (m + h - 4) * k)], fill=st.border, width=k)
    return _finish(img)


def _draw_slider(rng, st: _Style) -> Image.Image:
    k = _SS
    w = int(rng.integers(80, 261))
    thumb = int(rng.integers(10, 23))
    value_label = rng.random() < 0.25
    h = thumb + int(rng.integers(4, 14)) + (12 if value_label else 0)
    img, d = _canvas(w, h, st.bg)
    cy = (h - thumb / 2 - rng.integers(2, 6)) * k if value_label else h * k / 2
    t = int(rng.integers(2, 7)) * k
    x0, x1 = thumb * 0.6 * k, (w - thumb * 0.6) * k
    pos = x0 + (x1 - x0) * rng.uniform(0.05, 0.95)
    d.rounded_rectangle([x0, cy - t / 2, x1, cy + t / 2], t // 2, fill=_mix(st.bg, st.text, 0.22))
    d.rounded_rectangle([x0, cy - t / 2, pos, cy + t / 2], t // 2, fill=st.accent)
    if rng.random() < 0.25:  # ticks
        n = int(rng.integers(4, 11))
        for i in range(n + 1):
            x = x0 + (x1 - x0) * i / n
            d.line([(x, cy + t), (x, cy + t + 3 * k)], fill=st.muted, width=k)
    r = thumb * k / 2
    if rng.random() < 0.8:
        d.ellipse([pos - r, cy - r, pos + r, cy + r], fill=st.accent if rng.random() < 0.6 else (255, 255, 255),
                  outline=_mix(st.accent, st.bg, 0.3), width=k)
    else:
        d.rounded_rectangle([pos - r * 0.5, cy - r, pos + r * 0.5, cy + r], k * 2, fill=st.accent)
    if value_label:
        d.text((pos, 1 * k), str(int(rng.integers(0, 101))), font=_font(10 * k), fill=st.text, anchor="mt")
    return _finish(img)


_RENDERERS: dict[str, Callable[[np.random.Generator, _Style], Image.Image]] = {
    "button": _draw_button, "link": _draw_link, "icon": _draw_icon,
    "checkbox": _draw_checkbox, "radio": _draw_radio, "toggle": _draw_toggle,
    "dropdown": _draw_dropdown, "slider": _draw_slider,
    "text_input": _draw_text_input, "textarea": _draw_textarea,
}
