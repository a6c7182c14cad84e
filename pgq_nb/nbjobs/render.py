"""The executed notebook as HTML that needs nothing from the network.

nbconvert's default (``lab``) template loads require.js, MathJax and mermaid from a CDN
(cdnjs.cloudflare.com) and inlines about 280 KB of JupyterLab's CSS: a stored run would make a
third-party request each time it is shown, and show unstyled offline. So the runner renders
with nbconvert's ``basic`` template (the cells' HTML only, no script or link to fetch) inside a
small page of its own: a few lines of CSS and pygments' styles for the code. What is lost:
math in Markdown shows as its TeX source, and widgets show their text form.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pgq_nb.models import storable_text

logger = logging.getLogger("pgq_nb.worker")

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px;
  margin: 0; padding: 8px 16px; color: #212121; }
.cell { margin: 6px 0; }
.input { display: flex; }
.output_area { display: flex; }
.prompt { flex: 0 0 64px; color: #888; font-family: monospace; font-size: 12px;
  text-align: right; padding: 4px 8px 0 0; }
.inner_cell, .output_subarea { flex: 1 1 auto; min-width: 0; }
.input_area { background: #f7f7f7; border: 1px solid #e0e0e0; border-radius: 2px; }
.input_area pre { margin: 0; padding: 6px; }
pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
  white-space: pre-wrap; word-break: break-word; margin: 4px 0; }
.output_error pre, .output_stderr pre { background: #fdd; }
.rendered_html table { border-collapse: collapse; }
.rendered_html th, .rendered_html td { border: 1px solid #ddd; padding: 2px 6px; }
.rendered_html img, .output_subarea img { max-width: 100%; }
.ansi-red-fg { color: #c00; } .ansi-green-fg { color: #080; } .ansi-yellow-fg { color: #a60; }
.ansi-blue-fg { color: #00c; } .ansi-cyan-fg { color: #088; } .ansi-magenta-fg { color: #a0a; }
.ansi-bold { font-weight: bold; }
"""


def _page(body: str) -> str:
    from pygments.formatters import HtmlFormatter  # type: ignore[import-untyped]

    code = HtmlFormatter(style="default").get_style_defs(".highlight")
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<style>{_STYLE}{code}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def render_html(nb: Any) -> str | None:
    """The executed notebook as a self-contained HTML page (see the module docstring); None if
    it cannot be rendered."""
    try:
        from nbconvert import HTMLExporter

        exporter = HTMLExporter(template_name="basic")  # type: ignore[no-untyped-call]
        body, _ = exporter.from_notebook_node(nb)
        page = _page(str(body))
    except Exception:
        logger.warning("could not render a notebook as HTML", exc_info=True)
        return None
    return str(storable_text(page, sys.maxsize))  # a NUL shown as \x00, not refused
