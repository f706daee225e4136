"""A small document model that renders to a self-contained HTML page and a Markdown twin.

``report.html`` embeds every figure as a base64 PNG and its CSS inline, so it opens from a
file, offline, anywhere. ``report.md`` references the same figures as files under
``figures/`` (for viewing on GitHub or in an editor). Each figure is also written as
``figures/<name>.svg`` (vector, for papers; its data points show their run when hovered),
linked under the figure. Everything is written atomically.
"""

from __future__ import annotations

import base64
import datetime
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalelab.utils.io import atomic_write_bytes, atomic_write_text

_CSS = """
body{font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1f2328;max-width:1100px;margin:2em auto;padding:0 1.5em;background:#fff}
h1{font-size:1.9em;border-bottom:1px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.4em;margin-top:2em;border-bottom:1px solid #eaeef2;padding-bottom:.2em}
h3{font-size:1.15em;margin-top:1.5em}
table{border-collapse:collapse;margin:.8em 0;font-size:13px;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:4px 9px;text-align:right}
th{background:#f6f8fa} td:first-child,th:first-child{text-align:left}
caption{caption-side:bottom;color:#57606a;font-size:12px;padding-top:4px;text-align:left}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:13px}
.note{background:#f6f8fa;border-left:4px solid #0969da;padding:.6em 1em;margin:1em 0}
.warn{background:#fff8c5;border-left:4px solid #bf8700;padding:.6em 1em;margin:1em 0}
.meta{color:#57606a;font-size:13px}
code{background:#f6f8fa;padding:1px 4px;border-radius:4px;font-size:90%}
"""


def fmt(value: Any, digits: int = 4) -> str:
    """Human formatting: ints with separators, floats with ``digits`` significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
            return f"{value:.{max(digits - 1, 1)}e}"
        return f"{value:.{digits}g}"
    return str(value)


@dataclass
class _Block:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)


class Report:
    """Accumulate headings, text, tables and figures; :meth:`write` renders both formats."""

    def __init__(self, title: str, subtitle: str | None = None) -> None:
        self.title = title
        self.subtitle = subtitle
        self.blocks: list[_Block] = []
        self._figures: dict[str, bytes] = {}
        self._svgs: dict[str, bytes] = {}

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(_Block("heading", {"text": text, "level": level}))

    def paragraph(self, text: str, *, style: str | None = None) -> None:
        """Plain text (escaped); ``style`` is ``note`` or ``warn`` for a call-out box."""
        self.blocks.append(_Block("para", {"text": text, "style": style}))

    def table(
        self,
        rows: list[dict[str, Any]],
        *,
        columns: list[str] | None = None,
        caption: str | None = None,
        digits: int = 4,
    ) -> None:
        if not rows:
            return
        columns = columns or list(dict.fromkeys(k for r in rows for k in r))
        cells = [[fmt(r.get(c), digits) for c in columns] for r in rows]
        self.blocks.append(
            _Block("table", {"columns": columns, "cells": cells, "caption": caption})
        )

    def figure(
        self, fig: Any, name: str, caption: str | None = None, *, dpi: int = 110, svg: bool = True
    ) -> None:
        """Add a matplotlib figure (a ``Figure``; pyplot figures are closed after rendering),
        as PNG and (``svg``) as SVG beside it."""
        from scalelab.laws.plots import render_figure

        png = render_figure(fig, "png", dpi=dpi, bbox_inches="tight")
        vector = render_figure(fig, "svg", bbox_inches="tight") if svg else None
        if getattr(fig, "number", None) is not None:  # managed by pyplot: release it
            import matplotlib.pyplot as plt

            plt.close(fig)
        self.add_png(png, name, caption, svg=vector)

    def add_png(
        self, png: bytes, name: str, caption: str | None = None, *, svg: bytes | None = None
    ) -> None:
        """Add a rendered PNG (and optionally its SVG, written as ``<stem>.svg``)."""
        stem = name if name.endswith(".png") else f"{name}.png"
        self._figures[stem] = png
        if svg is not None:
            self._svgs[stem[: -len(".png")] + ".svg"] = svg
        self.blocks.append(_Block("figure", {"name": stem, "caption": caption}))

    def _svg_name(self, png_name: str) -> str | None:
        name = png_name[: -len(".png")] + ".svg"
        return name if name in self._svgs else None

    # ------------------------------------------------------------------ rendering
    def to_html(self) -> str:
        out = [
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width,initial-scale=1'>",
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        sub = f"{html.escape(self.subtitle)} · " if self.subtitle else ""
        out.append(f"<p class='meta'>{sub}generated {stamp} by scalelab</p>")
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                lvl = min(max(int(d["level"]), 2), 4)
                out.append(f"<h{lvl}>{html.escape(d['text'])}</h{lvl}>")
            elif b.kind == "para":
                cls = f" class='{d['style']}'" if d["style"] else ""
                out.append(f"<p{cls}>{html.escape(d['text'])}</p>")
            elif b.kind == "table":
                head = "".join(f"<th>{html.escape(c)}</th>" for c in d["columns"])
                body = "".join(
                    "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                    for row in d["cells"]
                )
                cap = f"<caption>{html.escape(d['caption'])}</caption>" if d["caption"] else ""
                out.append(
                    f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                )
            elif b.kind == "figure":
                data = base64.b64encode(self._figures[d["name"]]).decode("ascii")
                cap = (
                    f"<figcaption>{html.escape(d['caption'])}</figcaption>" if d["caption"] else ""
                )
                alt = html.escape(d["caption"] or d["name"])
                svg = self._svg_name(d["name"])
                link = (
                    f"<figcaption class='meta'><a href='figures/{html.escape(svg)}'>SVG</a> "
                    "(vector; hover a point for its run)</figcaption>"
                    if svg
                    else ""
                )
                out.append(
                    f"<figure><img alt='{alt}' src='data:image/png;base64,{data}'>{cap}{link}</figure>"
                )
        out.append("</body></html>\n")
        return "\n".join(out)

    def to_markdown(self, figure_dir: str = "figures") -> str:
        out = [f"# {self.title}", ""]
        if self.subtitle:
            out += [f"_{self.subtitle}_", ""]
        for b in self.blocks:
            d = b.data
            if b.kind == "heading":
                out += ["#" * min(max(int(d["level"]), 2), 4) + " " + d["text"], ""]
            elif b.kind == "para":
                prefix = "> " if d["style"] else ""
                out += [prefix + d["text"], ""]
            elif b.kind == "table":
                out.append("| " + " | ".join(d["columns"]) + " |")
                out.append("|" + "|".join("---" for _ in d["columns"]) + "|")
                out += [
                    "| " + " | ".join(c.replace("|", "\\|") for c in row) + " |"
                    for row in d["cells"]
                ]
                if d["caption"]:
                    out += ["", f"_{d['caption']}_"]
                out.append("")
            elif b.kind == "figure":
                out += [f"![{d['caption'] or d['name']}]({figure_dir}/{d['name']})", ""]
                if d["caption"]:
                    out += [f"_{d['caption']}_", ""]
                svg = self._svg_name(d["name"])
                if svg:
                    out += [f"[SVG]({figure_dir}/{svg})", ""]
        return "\n".join(out)

    def write(self, out_dir: str | Path, *, stem: str = "report") -> tuple[Path, Path]:
        """Write ``<stem>.html`` (self-contained), ``<stem>.md``, ``figures/*.png`` and
        ``figures/*.svg``."""
        out_dir = Path(out_dir)
        for name, data in {**self._figures, **self._svgs}.items():
            atomic_write_bytes(out_dir / "figures" / name, data)
        html_path, md_path = out_dir / f"{stem}.html", out_dir / f"{stem}.md"
        atomic_write_text(html_path, self.to_html())
        atomic_write_text(md_path, self.to_markdown())
        return html_path, md_path
