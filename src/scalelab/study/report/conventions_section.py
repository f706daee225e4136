"""The report's "Allocation under each convention" section and its terminal lines.

Renders ``fits/summary.json``'s ``conventions`` (:func:`scalelab.study.conventions.
allocation_by_convention`): the compute-optimal exponents a and b under non-embedding and
total N, each with C = 6 N D and the full count of Hoffmann et al. 2022 (Appendix F), by
Approach 3 and, where the design has compute levels, Approach 2. A summary written before
the key existed gets no section.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from scalelab.study.conventions import (
    APPENDIX_F,
    C_COLUMNS,
    SIX_ND,
    ConventionCell,
    ConventionTable,
)

HEADING = "Allocation under each convention"


def conventions_section(rep: Any, fits: Mapping[str, Any]) -> None:
    """Add the section to ``rep`` (a :class:`~scalelab.study.report.html.Report`) when the
    fit summary has ``conventions``; nothing otherwise."""
    data = fits.get("conventions")
    if not data:
        return
    rep.heading(HEADING)
    if not data.get("cells"):
        rep.paragraph(f"Not computed: {data.get('error', 'no cells')}", style="warn")
        return
    sentence = contrast_sentence(data)
    if sentence:
        rep.paragraph(sentence)
    rep.table(
        convention_rows(data),
        caption="Compute-optimal exponents N_opt ∝ C^a and D_opt ∝ C^b with N counting "
        "non-embedding parameters (Kaplan et al. 2020, Sec. 2.1) or every parameter, and C = "
        "6 N D with that N or the full count of Hoffmann et al. 2022 (Appendix F: embeddings, "
        f"attention and the head). 95% intervals from {data.get('n_boot', 0)} bootstrap "
        "resamples of runs (within each compute level for Approach 2; seed "
        f"{data.get('seed', 0)}), not the calibrated ones of the answer table. "
        "–: not computed, with the reason.",
    )
    for note in data.get("notes", ()):
        rep.paragraph(note, style="note")


def convention_rows(data: Mapping[str, Any]) -> list[dict[str, str]]:
    """The report's table: one row per cell (N, C, a [95%], b [95%], method); a failed cell
    shows "–" and its reason."""
    out = []
    for c in ConventionTable.from_dict(data).cells:
        method = f"{c.method}: {c.how}" if c.error is None else f"{c.method}: – ({c.error})"
        out.append(
            {
                "N": c.n_def,
                "C": c_label(c),
                "a (N_opt ∝ C^a) [95%]": value_text(c.a, c.a_interval),
                "b (D_opt ∝ C^b) [95%]": value_text(c.b, c.b_interval),
                "method": method,
            }
        )
    return out


def contrast_sentence(data: Mapping[str, Any]) -> str:
    """One sentence on what moves a: the N definition (under 6 N D) and the FLOP count
    (with non-embedding N), from the Approach 3 cells; empty when they are missing."""
    table = ConventionTable.from_dict(data)
    try:
        base = table.cell("non-embedding", SIX_ND).a
        total = table.cell("total", SIX_ND).a
        full = table.cell("non-embedding", APPENDIX_F).a
    except KeyError:
        return ""
    if base is None or (total is None and full is None):
        return ""
    moves = [
        f"{what} moves it to {v:.3f}"
        for what, v in (
            ("counting every parameter in N", total),
            ("the Appendix F count instead of 6 N D (non-embedding N)", full),
        )
        if v is not None
    ]
    return (
        f"Approach 3 on these rungs gives a = {base:.3f} with Kaplan's convention "
        f"(non-embedding N, 6 N D); {' and '.join(moves)}. Pearce & Song 2024 "
        "(arXiv:2406.12907) trace most of the gap between Kaplan's and Chinchilla's exponents "
        "to the N definition, Porian et al. 2024 (arXiv:2406.19146) to the FLOP count (head "
        "and attention), warmup and tuning."
    )


def convention_lines(summary: Mapping[str, Any]) -> list[str]:
    """Short terminal lines (what ``scalelab study fit`` prints); nothing without the key."""
    data = summary.get("conventions")
    if not data:
        return []
    if not data.get("cells"):
        return [f"allocation exponents by convention: not computed ({data.get('error')})"]
    lines = ["allocation exponents by convention (95% intervals, runs resampled):"]
    for c in ConventionTable.from_dict(data).cells:
        where = f"  N {c.n_def:<13} C {c_label(c):<23} {c.method}: "
        if c.error is not None:
            lines.append(where + f"– ({c.error})")
        else:
            lines.append(
                where + f"a {value_text(c.a, c.a_interval)}, b {value_text(c.b, c.b_interval)}"
            )
    return lines


def c_label(c: ConventionCell) -> str:
    """``6 N D (6n_kaplan)``, ``6 N D (6n_total)`` or ``Appendix F (chinchilla)``: the C
    definition with the name of its results column."""
    if c.c_def == SIX_ND:
        return f"6 N D ({C_COLUMNS[(c.n_def, SIX_ND)][2:]})"
    return "Appendix F (chinchilla)"


def value_text(v: float | None, iv: tuple[float, float] | None) -> str:
    """``0.512 [0.480, 0.545]``, ``0.512`` without an interval, ``–`` without a value."""
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.3f}" + (f" [{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "")
