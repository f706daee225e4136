"""A study in a notebook: its HTML summary (``Study._repr_html_``) and its tables as pandas
DataFrames (``Study.to_pandas``, ``curves_to_pandas``, ``downstream_to_pandas``).

pandas is optional: without it the DataFrame methods raise an ImportError that says
``pip install pandas``; the HTML summary needs nothing beyond the standard library.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scalelab.study.study import Study

MAX_TABLE_ROWS = 12
"""Rungs shown in the HTML summary (the DataFrame has them all)."""
TABLE_COLUMNS = ("rung", "role", "status", "in_fit", "N_non_embedding", "D", "final_val_loss")


def require_pandas(what: str = "this") -> Any:
    """The pandas module; an ImportError naming the fix when it is not installed."""
    try:
        import pandas
    except ImportError:
        raise ImportError(f"{what} needs pandas: pip install pandas") from None
    return pandas


def frame(records: list[dict[str, Any]], columns: list[str]) -> Any:
    """``records`` as a DataFrame: ``columns`` first, then any other key, sorted (the
    order of the CSV files); empty values are NaN."""
    pd = require_pandas("a study table as a DataFrame")
    extra = sorted({k for r in records for k in r if k not in columns})
    return pd.DataFrame.from_records(records, columns=columns + extra)


def _fit_summary(study: Study) -> dict[str, Any] | None:
    """``fits/summary.json`` when it holds an Approach 3 law (None otherwise, also when it
    is unreadable: a notebook summary never raises for a damaged file)."""
    from scalelab.utils.io import read_json

    path = study.root / "fits" / "summary.json"
    try:
        summary = read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or not isinstance(summary.get("chinchilla"), dict):
        return None
    return summary


def law_line(summary: dict[str, Any]) -> str | None:
    """The Approach 3 law of a fit summary in one line (None when it has no parameters)."""
    chin = summary["chinchilla"]
    p = chin.get("params") or {}
    if not all(isinstance(p.get(k), int | float) for k in ("E", "A", "alpha", "B", "beta")):
        return None
    line = (
        f"L(N, D) = {p['E']:.4f} + {p['A']:.4g}/N^{p['alpha']:.4f} + {p['B']:.4g}/D^{p['beta']:.4f}"
    )
    facts = [f"fitted on {summary['n_fit']} rungs"] if "n_fit" in summary else []
    if isinstance(chin.get("rmse_log"), int | float):
        facts.append(f"rmse(log) {chin['rmse_log']:.4f}")
    if chin.get("converged") is False:
        facts.append("NOT CONVERGED")
    return line + (f" ({', '.join(facts)})" if facts else "")


def _cell(column: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and column.endswith("loss"):
        return f"{value:.4f}"
    if isinstance(value, int | float) and column in ("N_non_embedding", "D"):
        return f"{value:,.0f}"
    return str(value)


def _table(records: list[dict[str, Any]]) -> str:
    """The first :data:`MAX_TABLE_ROWS` rungs as an HTML table."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in TABLE_COLUMNS)
    body = []
    for r in records[:MAX_TABLE_ROWS]:
        cells = "".join(f"<td>{html.escape(_cell(c, r.get(c)))}</td>" for c in TABLE_COLUMNS)
        body.append(f"<tr>{cells}</tr>")
    more = len(records) - MAX_TABLE_ROWS
    tail = (
        f"<p>… and {more} more rung(s): <code>study.to_pandas()</code> has them all.</p>"
        if more > 0
        else ""
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{tail}"


def study_html(study: Study) -> str:
    """A compact HTML summary of ``study``: its root, design, rungs by status, the fitted
    law (when there is a fit) and a small rung table."""
    records = study.results_records()
    counts = Counter(r["status"] for r in records)
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    plan = study.plan
    lines = [
        f"<b>scalelab study</b> <code>{html.escape(str(study.root))}</code>",
        f"{html.escape(plan.design)} design, {html.escape(plan.base.arch)} models, FLOPs "
        f"in {html.escape(plan.flops_convention)}; {len(records)} rungs"
        + (f": {html.escape(by_status)}" if by_status else ""),
    ]
    summary = _fit_summary(study)
    law = law_line(summary) if summary is not None else None
    lines.append(
        f"Approach 3: <code>{html.escape(law)}</code>"
        if law
        else "No fit yet (<code>scalelab study fit</code>)."
    )
    for c in (summary or {}).get("holdout", []):
        if isinstance(c, dict) and {"rung", "estimate", "actual", "rel_error"} <= set(c):
            lines.append(
                f"held out {html.escape(str(c['rung']))}: predicted {c['estimate']:.4f}, "
                f"measured {c['actual']:.4f} (error {100 * c['rel_error']:+.2f}%)"
            )
    paragraphs = "".join(f"<p>{line}</p>" for line in lines)
    return f'<div class="scalelab-study">{paragraphs}{_table(records)}</div>'
