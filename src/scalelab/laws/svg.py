"""SVG figures whose data points show their run when hovered.

Matplotlib writes each point of a scatter as one element (a ``<use>`` of the marker, or
a ``<path>``, alone or together in clipping ``<g>`` elements) inside a group that carries
the collection's ``gid``, in the order of the points. :func:`attach_point_titles` records
one line of text per point on a collection; :func:`figure_svg` renders the figure with a
unique gid on every such collection and then inserts a ``<title>`` into each point's
element, which browsers show as a tooltip (a ``<title>`` child of a graphics element is
its tooltip, SVG 1.1 Sec. 5.4). When the count of drawn elements does not match the
titles (matplotlib skipped a non-finite point, say) the group gets one title listing every
point instead, so no tooltip is ever attached to the wrong point.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET  # noqa: N817 - the usual name
from collections.abc import Mapping, Sequence
from typing import Any

SVG_NS = "http://www.w3.org/2000/svg"
_NAMESPACES = {
    "": SVG_NS,
    "xlink": "http://www.w3.org/1999/xlink",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "cc": "http://creativecommons.org/ns#",
    "dc": "http://purl.org/dc/elements/1.1/",
}
_ATTR = "_scalelab_point_titles"
_GID_PREFIX = "scalelab-points-"


def _tag(name: str) -> str:
    return f"{{{SVG_NS}}}{name}"


def attach_point_titles(artist: Any, titles: Sequence[str]) -> Any:
    """Give every point of ``artist`` (a scatter's collection) a hover title in the SVG.

    ``titles`` has one line per point, in the order of the points. Returns ``artist``.
    """
    setattr(artist, _ATTR, [str(t) for t in titles])
    return artist


def titled_artists(fig: Any) -> list[Any]:
    """The artists of ``fig`` that carry point titles, in drawing-tree order."""
    return list(fig.findobj(match=lambda a: hasattr(a, _ATTR)))


def figure_svg(fig: Any, **savefig: Any) -> bytes:
    """Render ``fig`` as SVG bytes, with the point titles of :func:`attach_point_titles`.

    ``savefig`` is passed on to ``Figure.savefig`` (``bbox_inches``, ...). The SVG carries
    no date and fixed element ids, so the same figure gives the same file.
    """
    artists = titled_artists(fig)
    old = [a.get_gid() for a in artists]
    titles: dict[str, list[str]] = {}
    for i, a in enumerate(artists):
        gid = f"{_GID_PREFIX}{i + 1}"
        a.set_gid(gid)
        titles[gid] = getattr(a, _ATTR)
    from matplotlib import rc_context

    buf = io.BytesIO()
    # A fixed salt: the ids of clip paths and markers repeat from run to run. Text stays
    # text (svg.fonttype none): editable in a paper's figure, searchable, smaller.
    try:
        with rc_context({"svg.hashsalt": "scalelab", "svg.fonttype": "none"}):
            fig.savefig(buf, format="svg", metadata={"Date": None}, **savefig)
    finally:
        for a, gid in zip(artists, old):
            a.set_gid(gid)
    return add_titles(buf.getvalue(), titles) if titles else buf.getvalue()


def add_titles(svg: bytes, titles: Mapping[str, Sequence[str]]) -> bytes:
    """Insert ``<title>`` elements into the groups of ``svg`` whose ids are in ``titles``."""
    for prefix, uri in _NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    root = ET.fromstring(svg)
    for group in root.iter(_tag("g")):
        lines = titles.get(group.get("id", ""))
        if lines is None:
            continue
        points = _drawn(group)
        if len(points) == len(lines):
            for elem, text in zip(points, lines):
                _prepend_title(elem, text)
        else:
            _prepend_title(group, "\n".join(lines))
    out = io.BytesIO()
    ET.ElementTree(root).write(out, encoding="utf-8", xml_declaration=True)
    return out.getvalue()


def _drawn(elem: ET.Element) -> list[ET.Element]:
    """The marker elements under ``elem`` in drawing order (``<use>``/``<path>``, through
    clipping groups; marker definitions in ``<defs>`` are not drawn)."""
    out = []
    for child in elem:
        if child.tag in (_tag("use"), _tag("path")):
            out.append(child)
        elif child.tag == _tag("g"):
            out += _drawn(child)
    return out


def _prepend_title(elem: ET.Element, text: str) -> None:
    title = ET.Element(_tag("title"))
    title.text = text
    elem.insert(0, title)


def point_titles(svg: bytes) -> list[str]:
    """Every ``<title>`` text of ``svg`` inside a titled points group (for checks)."""
    root = ET.fromstring(svg)
    out = []
    for group in root.iter(_tag("g")):
        if group.get("id", "").startswith(_GID_PREFIX):
            out += [t.text or "" for t in group.iter(_tag("title"))]
    return out
