"""The self-contained HTML report of a run: one file a stakeholder opens offline.

:func:`build_report` turns a run directory (see :mod:`core.runs`) and its workspace into
**one** HTML file: no server, no internet. plotly.js is inlined once, every figure is a
small ``Plotly.newPlot`` call on inlined JSON, thumbnails are ``data:`` URIs (small JPEGs),
and the file holds no ``http://`` or ``https://`` text at all (plotly.js's built-in URLs —
XML namespaces, map-tile servers it never contacts here — are written with escaped
slashes, which JavaScript reads as the same strings).

Sections, in order (:data:`SECTIONS`): model card, dataset, cleaning log, training curves,
confusion matrix, per-class table, PR curves with the chosen thresholds, calibration,
embedding map, out-of-distribution examples, most confident mistakes; then, when another
run is given (``compare_with``), the paired comparison with it (:mod:`core.compare`). Each
section is built on its own: a piece that is missing (no review decisions, no embeddings
module, an unreadable image) makes *that section* say so; the report is still written.

HTML comes from the Jinja2 templates in ``core/report/templates/`` (``report.html.j2``, the
document; ``report_macros.html.j2``, tables, notes, figures, thumbnail cards; one
``sections/<key>.html.j2`` per section), rendered with autoescaping on.

Safety: every user-controlled string (class names, file names, dataset names, notes)
reaches the HTML only as a template variable, so it is escaped; :func:`esc`, the
templates' finalize hook, also writes ``scheme://`` as ``scheme&#58;//``. The only values
marked :class:`markupsafe.Markup` (inserted as they are) are this module's own: rendered
templates, plotly.js, figure JSON and ``data:`` URIs. Strings inside figure JSON are
encoded with ``<``, ``>``, ``&`` as ``\\uXXXX`` escapes, so a label such as
``</script><script>alert(1)</script>`` cannot end a ``<script>`` element, and they are
HTML-escaped for plotly, which renders its text as SVG text (never as HTML).

>>> html_text = build_report("runs/my-run", workspace=ws)          # doctest: +SKIP
>>> build_report("runs/my-run", workspace=ws, out="report.html")   # doctest: +SKIP

Where things live: :mod:`~core.report.build` (collect_sections, render_html, build_report),
:mod:`~core.report.sections` (one builder per section), :mod:`~core.report.card` (the model
card, the comparison), :mod:`~core.report.markup` (escaping, templates, thumbnails),
:mod:`~core.report.context` (constants, :class:`Section`, what the builders read).
This face only hands their public names on.
"""

from __future__ import annotations

from core.report.context import (
    MAX_CURVE_POINTS, MAX_FIGURE_CLASSES, MAX_LOG_ROWS, MAX_MAP_COLOURS, MAX_MAP_POINTS, PLOTLY_CONFIG, SECTIONS,
    STATUSES, ProgressFn, Section,
)
from core.report.markup import esc, plotly_js, thumbnail_data_uri
from core.report.build import build_report, collect_sections, render_html

__all__ = [
    "MAX_CURVE_POINTS", "MAX_FIGURE_CLASSES", "MAX_LOG_ROWS", "MAX_MAP_COLOURS", "MAX_MAP_POINTS", "PLOTLY_CONFIG",
    "ProgressFn", "SECTIONS", "STATUSES", "Section", "build_report", "collect_sections", "esc", "plotly_js", "render_html",
    "thumbnail_data_uri",
]
