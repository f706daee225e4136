"""Notebook views of run tables and fit results: ``_repr_html_`` and ``to_pandas``.

Jupyter shows an object by its ``_repr_html_``; every result (:class:`.results.Result`)
and :class:`.table.RunTable` hands that to :func:`result_html` / :func:`table_html` here,
which render a compact summary (the law and its parameters with their intervals, the
optimiser's status, the warnings, the number of points; a table's source, size, columns
and first rows) instead of a dataclass dump. Results are recognised by what they carry,
so this module imports no fit module. pandas is optional: :func:`frame` builds a
DataFrame when it is installed and otherwise raises an ImportError that says how to get
it. Numbers are shown with 6 significant digits (``f"{x:.6g}"``).
"""

from __future__ import annotations

import dataclasses
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from scalelab.laws.results import optimiser_status

MAX_ROWS = 8
"""Rows of a table shown before the rest are counted."""

_STYLE = "font-family: sans-serif; font-size: 13px"


def esc(value: Any) -> str:
    """``value`` as escaped HTML text."""
    return html.escape(str(value))


def num(value: Any, digits: int = 6) -> str:
    """A number with ``digits`` significant digits (ints and text as they are)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:
            value = float(value)  # numpy scalars
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain HTML table; cells that are numbers are formatted by :func:`num`."""

    def cell(v: Any) -> str:
        return esc(num(v)) if isinstance(v, int | float) and not isinstance(v, bool) else esc(v)

    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def block(title: str, parts: Sequence[str], warnings: Sequence[str] = ()) -> str:
    """The frame of every view: a bold title, the parts, then the warnings as a list."""
    body = "".join(p for p in parts if p)
    if warnings:
        items = "".join(f"<li>warning: {esc(w)}</li>" for w in warnings)
        body += f"<ul>{items}</ul>"
    return f'<div class="scalelab" style="{_STYLE}"><p><strong>{title}</strong></p>{body}</div>'


def _line(*items: str) -> str:
    return "<p>" + " &middot; ".join(i for i in items if i) + "</p>"


# ====================================================================== results


def param_rows(result: Any) -> list[dict[str, Any]]:
    """One row per parameter: ``parameter, value`` and, with a bootstrap, ``lo, hi, se,
    level``; derived quantities the bootstrap also has (Chinchilla's ``a, b``) follow."""
    params = dict(getattr(result, "params", {}) or {})
    boot = getattr(result, "bootstrap", None)
    intervals = dict(getattr(boot, "intervals", {}) or {})
    names = list(params) + [n for n in intervals if n not in params]
    rows = []
    for name in names:
        iv = intervals.get(name)
        row: dict[str, Any] = {
            "parameter": name,
            "value": float(params[name]) if name in params else float(iv.estimate),
        }
        if intervals:
            row.update(
                lo=iv.lo if iv else math.nan,
                hi=iv.hi if iv else math.nan,
                se=iv.se if iv else math.nan,
                level=iv.level if iv else math.nan,
            )
        rows.append(row)
    return rows


def _params_table(result: Any) -> str:
    rows = param_rows(result)
    if not rows:
        return ""
    if "lo" not in rows[0]:
        return html_table(["parameter", "value"], [(r["parameter"], r["value"]) for r in rows])
    level = next((r["level"] for r in rows if math.isfinite(r["level"])), 0.95)
    header = ["parameter", "value", f"{level:.0%} interval", "se"]
    body = [
        (r["parameter"], r["value"], f"[{num(r['lo'])}, {num(r['hi'])}]", r["se"]) for r in rows
    ]
    return html_table(header, body)


def law_fit_html(fit: Any) -> str:
    """A parametric law: formula, parameters (with intervals), status, points, warnings."""
    d = fit.diagnostics
    title = f"{esc(fit.form)} fit: <code>{esc(fit.formula)}</code>"
    dropped = f"{len(fit.dropped_rows)} highest-loss rows dropped" if fit.dropped_rows else ""
    facts = _line(
        f"optimiser: {esc(optimiser_status(d.converged, d.message))}",
        f"{fit.n_points} points" + (f" ({esc(fit.source)})" if fit.source else ""),
        dropped,
        f"rmse(log) {num(fit.rmse_log, 4)}",
        f"AIC {fit.aic:.2f}",
    )
    boot = fit.bootstrap
    extra = _line(f"bootstrap: {boot.n_ok}/{boot.n} resamples converged") if boot else ""
    return block(title, [_params_table(fit), facts, extra], d.warnings)


def allocation_laws_html(fit: Any) -> str:
    """An IsoFLOP (Approach 2) or envelope (Approach 1) fit: the allocation laws, their
    parameters (with intervals), the per-budget profiles, warnings."""
    profiles = getattr(fit, "profiles", None)
    title = "IsoFLOP (Approach 2) fit" if profiles is not None else "training-curve envelope"
    laws = _line(
        *(
            f"<code>{name} = {num(law.k, 4)} &middot; C^{law.exponent:.4f}</code> "
            f"(R<sup>2</sup> {law.r2:.4f})"
            for name, law in (("N_opt", fit.n_opt_law), ("D_opt", fit.d_opt_law))
        )
    )
    parts = [laws, _params_table(fit)]
    if profiles is not None:
        rows = [
            (
                p.budget,
                p.n_points,
                p.n_opt,
                p.d_opt,
                p.loss_opt,
                p.status + ("" if p.used else ", not used"),
            )  # fmt: skip
            for p in profiles
        ]
        parts.append(html_table(["budget C", "runs", "N_opt", "D_opt", "loss", "status"], rows))
        n_runs = sum(p.n_points for p in profiles)
        parts.append(_line(f"{len(profiles)} budgets", f"{n_runs} runs", esc(fit.source)))
    else:
        parts.append(_line(f"{fit.n_runs} runs", f"{len(fit.compute)} compute values", esc(fit.source)))  # fmt: skip
    boot = getattr(fit, "bootstrap", None)
    if boot is not None:
        parts.append(_line(f"bootstrap: {boot.n_ok}/{boot.n} resamples"))
    return block(title, parts, fit.warnings)


def bootstrap_html(boot: Any) -> str:
    """A bootstrap: its intervals, how many resamples converged, how it resampled."""
    rows = [
        (name, iv.estimate, f"[{num(iv.lo)}, {num(iv.hi)}]", iv.se)
        for name, iv in boot.intervals.items()
    ]
    table = html_table(["parameter", "estimate", f"{boot.level:.0%} interval", "se"], rows)
    facts = _line(
        f"{boot.n_ok}/{boot.n} resamples converged",
        f"resampling {esc(boot.group)}",
        esc(boot.method),
        f"seed {boot.seed}",
    )
    return block(f"bootstrap of {esc(boot.law_form)}", [table, facts])


def allocation_html(alloc: Any) -> str:
    """A compute-optimal allocation: one row per budget, then its warnings."""
    rows = alloc.rows()
    header = list(rows[0]) if rows else ["compute"]
    table = html_table(header, [list(r.values()) for r in rows])
    return block("compute-optimal allocation", [table], alloc.warnings)


def result_html(result: Any) -> str:
    """The notebook view of any result (dispatching on what it carries)."""
    if hasattr(result, "diagnostics") and hasattr(result, "formula"):
        return law_fit_html(result)
    if hasattr(result, "n_opt_law"):
        return allocation_laws_html(result)
    kind = getattr(result, "kind", "")
    if kind == "bootstrap":
        return bootstrap_html(result)
    if kind == "allocation":
        return allocation_html(result)
    title = esc(type(result).__name__)
    if callable(getattr(result, "summary", None)):
        return block(title, [f"<pre>{esc(result.summary())}</pre>"])
    return block(title, [html_table(["field", "value"], list(_scalars(result).items()))])


def _scalars(result: Any) -> dict[str, Any]:
    """The number, text and flag fields of a dataclass result."""
    out = {}
    for f in dataclasses.fields(result):
        v = getattr(result, f.name)
        if isinstance(v, int | float | str | bool):
            out[f.name] = v
    return out


def result_frame(result: Any) -> Any:
    """The DataFrame of :meth:`.results.Result.to_pandas` (see there)."""
    kind = getattr(result, "kind", "")
    if kind == "allocation":
        return frame(result.rows())
    if kind == "bootstrap":
        rows = [
            {"parameter": k, "value": iv.estimate, "lo": iv.lo, "hi": iv.hi, "se": iv.se}
            for k, iv in result.intervals.items()
        ]
        return frame(rows, index="parameter")
    if getattr(result, "params", None):
        return frame(param_rows(result), index="parameter")
    return frame([_scalars(result)])


# ====================================================================== tables


def table_html(table: Any, max_rows: int = MAX_ROWS) -> str:
    """A run table: source, size, which column holds each quantity, notes, first rows."""
    cols = table.to_columns()
    roles = [r for r in ("N", "D", "C", "loss") if r in cols]
    named = ", ".join(f"{r} = {esc(table.column_name(r))}" for r in roles)
    facts = _line(
        f"{len(table)} rows",
        f"columns: {named}",
        f"C = {table.flops_per_nd:g} N D"
        if table.flops_per_nd is not None
        else "no FLOP convention",
    )
    header = ["row", *cols]
    shown = [
        [int(table.rows[i]), *(cols[c][i] for c in cols)] for i in range(min(len(table), max_rows))
    ]
    more = _line(f"... {len(table) - max_rows} more rows") if len(table) > max_rows else ""
    notes = "".join(f"<li>note: {esc(n)}</li>" for n in table.notes)
    return block(
        f"RunTable: {esc(table.source)}",
        [facts, f"<ul>{notes}</ul>" if notes else "", html_table(header, shown), more],
    )


# ====================================================================== pandas


def require_pandas() -> Any:
    """The pandas module, or an ImportError saying ``pip install pandas``."""
    try:
        import pandas
    except ImportError:
        raise ImportError(
            "to_pandas() needs pandas, which is not installed: pip install pandas"
        ) from None
    return pandas


def frame(
    data: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]],
    *,
    index: str | Sequence[Any] | None = None,
    index_name: str | None = None,
) -> Any:
    """A DataFrame from columns or rows; ``index`` is a column to index by, or the index
    values themselves (named ``index_name``)."""
    pd = require_pandas()
    df = pd.DataFrame(list(data) if not isinstance(data, Mapping) else dict(data))
    if isinstance(index, str):
        df = df.set_index(index)
    elif index is not None:
        df.index = pd.Index(list(index), name=index_name)
    return df
