"""Turning values into safe HTML: escaping, JSON inside ``<script>``, plotly.js, the Jinja2
templates of ``core/report/templates/`` (autoescaped, strict) and thumbnails as ``data:`` URIs.
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import html
import io
import math
import re
from pathlib import Path
from typing import Any, Sequence

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from core.report.context import _Context


_TEMPLATES = Path(__file__).with_name("templates")


# ---------------------------------------------------------------------------
# escaping and encoding
# ---------------------------------------------------------------------------

_URL_RE = re.compile(r"(?i)(https?):(//)")


def esc(text: Any) -> Markup:
    """HTML-escaped user text (``None`` -> ""; Markup is not escaped again), ``scheme://`` written ``scheme&#58;//``.

    The templates' finalize hook: every ``{{ value }}`` goes through it.
    """
    return Markup(_URL_RE.sub(r"\1&#58;//", str(escape("" if text is None else text))))


def _plot_text(text: Any) -> str:
    """A label for plotly: HTML-escaped (plotly shows the entities as the characters)."""
    return html.escape(str(text), quote=False)


def _script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``<``, ``>``, ``&`` and no ``scheme://`` text."""
    import plotly.io.json as pjson

    text = pjson.to_json_plotly(obj)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return _URL_RE.sub(r"\1:\\/\\/", text)


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js (the version plotly.py ships), with ``http(s)://`` written ``http(s):\\/\\/``.

    In JavaScript strings, regular expressions and comments ``\\/`` stands for ``/``, so the
    library behaves the same; the report simply holds no URL text. It never contacts
    those URLs anyway: they serve map tiles and plotly's cloud, which the report does not use.
    """
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    if re.search(r"(?i)</script", js):  # not the case for the bundled versions; keep the guarantee
        js = re.sub(r"(?i)</script", r"<\\/script", js)
    return _URL_RE.sub(r"\1:\\/\\/", js)


# ---------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return "n/a" if not math.isfinite(float(v)) else f"{float(v):.{digits}f}"
    return str(v)


def _pct(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if not math.isfinite(f) else f"{100 * f:.1f}%"


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    """The templates of ``core/report/templates/``: autoescaped, strict (an unknown variable is an error), ``|fmt|pct``."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_TEMPLATES), autoescape=True, finalize=esc,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(fmt=_fmt, pct=_pct)
    return env


def _render(name: str, **values: Any) -> Markup:
    """Template ``name`` rendered with ``values`` (escaped by the template, hence Markup)."""
    return Markup(_env().get_template(name).render(**values))


def _macros():
    """The macros of ``report_macros.html.j2`` (``note``, ``figure``, ...), callable from Python; they return Markup."""
    return _env().get_template("report_macros.html.j2").module


def _note(text: str) -> Markup:
    return _macros().note(text)


def _figure(ctx: _Context, fig) -> Markup:
    """A plotly figure as a div + a ``Plotly.newPlot`` call on inlined, script-safe JSON."""
    ctx.figure_count += 1
    d = fig.to_plotly_json()
    height = (d.get("layout") or {}).get("height") or 420
    payload = Markup(_script_json({"data": d.get("data", []), "layout": d.get("layout", {})}))
    return _macros().figure(f"fig-{ctx.figure_count}", int(height), payload)


# ---------------------------------------------------------------------------
# thumbnails
# ---------------------------------------------------------------------------

def thumbnail_data_uri(path: str | Path, *, box: Sequence[float] | None = None, size: int = 80,
                       quality: int = 80) -> str | None:
    """A small JPEG of an image (longest side ``size`` px) as a ``data:image/jpeg;base64,...`` URI.

    ``None`` when the image cannot be decoded (missing, corrupt, too large): callers show a
    placeholder. Decoding goes through :func:`core.images.load_image` (EXIF, modes, bombs).
    """
    from PIL import Image

    from core import images

    try:
        arr = images.load_image(path, box=box)
    except (images.ImageError, OSError, ValueError):
        return None
    im = Image.fromarray(arr)
    im.thumbnail((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _thumb(ctx: _Context, path: str, sample_id: str, **caption: Any) -> dict[str, Any]:
    """A thumbnail card for the ``thumb`` macro: the image (a data: URI, None if unreadable), its side, ``caption``."""
    uri = thumbnail_data_uri(path, box=ctx.boxes.get(str(sample_id)), size=ctx.thumbnail_size)
    return {"uri": None if uri is None else Markup(uri), "side": max(96, ctx.thumbnail_size), "sample_id": sample_id,
            **caption}


def _cell(v: Any) -> str:
    """A table cell from a value that may be None / NaN (shown empty)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA else str(v)


def _sentence(text: str) -> str:
    """``text`` with a capital first letter and a final full stop."""
    text = str(text).strip()
    return (text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")) if text else text


def _plain(fragment: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded), on one line."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def _when(t: Any) -> str:
    try:
        return _dt.datetime.fromtimestamp(float(t), _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError, OverflowError, OSError):
        return "at an unknown time"


def _signed(v: float) -> str:
    return f"{v:+.4f}" if v is not None and math.isfinite(v) else "n/a"
