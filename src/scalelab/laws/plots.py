"""Figures of fitted laws (matplotlib, Agg; no pyplot, so no global figure state).

Each function takes result objects plus the table they were fitted to and returns a
:class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG and, beside it, as
SVG whose data points show their run, N, D and loss when hovered in a browser. The HTML
report calls these directly. Log axes get plain tick labels (1, 2, 5, 10, 20, 50, then
``1e4``, ``2e4``, ...), see :func:`tidy_log_axes`; legends name laws by
:func:`law_name`.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit
from scalelab.laws.isoflop import EnvelopeFit, IsoFLOPFit, budget_groups
from scalelab.laws.svg import attach_point_titles, figure_svg
from scalelab.laws.table import RunTable
from scalelab.utils.io import atomic_write_bytes

# The one mapping from a result's form (LawFit.form) or kind to the name legends show.
# Approaches 1-3: Hoffmann et al. (2022), Sec. 3; the Kaplan forms: Kaplan et al. (2020),
# Eqs. 1.1-1.3 (one variable) and 1.5 (N and D).
LAW_NAMES = {
    "chinchilla": "Chinchilla law (Approach 3)",
    "kaplan_n": "Kaplan power law in N",
    "kaplan_d": "Kaplan power law in D",
    "kaplan_c": "Kaplan power law in C",
    "kaplan_nd": "Kaplan law in N and D",
    "power_law": "power law",
    "custom": "custom law",
    "isoflop": "IsoFLOP parabolas (Approach 2)",
    "envelope": "loss envelope (Approach 1)",
}
_UNITS = {"N": "parameters", "D": "tokens", "C": "FLOPs"}
RED = (1.0, 0.0, 0.0, 1.0)
"""The edge of a dropped outlier's hollow marker (its legend entry keeps it)."""
# A column RunTable derived through C = k N D (table.derive_missing names it by its formula).
_DERIVED = re.compile(r"[0-9.eE+-]+\*N\*D|C/\([0-9.eE+-]+\*[ND]\)")


def law_name(result: Any) -> str:
    """What legends call ``result``: ``"Chinchilla law (Approach 3)"``, ``"power law in C"``."""
    form = getattr(result, "form", None)
    key = form if isinstance(form, str) else str(getattr(result, "kind", "law"))
    name = LAW_NAMES.get(key, key.replace("_", " "))
    variables = tuple(getattr(result, "variables", ()) or ())
    if key == "power_law" and len(variables) == 1:
        name = f"power law in {variables[0]}"
    return name


def pretty_formula(formula: str) -> str:
    """A law's formula with Greek letters and a centred dot: ``L = E + A/N^α + B/D^β``."""
    text = re.sub(r"\balpha(?![A-Za-z])", "α", formula)
    text = re.sub(r"\bbeta(?![A-Za-z])", "β", text)
    return text.replace("*", "·")


def law_label(result: Any) -> str:
    """``law_name`` and, for a parametric law, its formula: the legend line of a fitted curve."""
    formula = getattr(result, "formula", "")
    name = law_name(result)
    return f"{name}: {pretty_formula(formula)}" if formula else name


def axis_label(table: RunTable | None, role: str, override: str | None = None) -> str:
    """An axis label for N, D or C: ``override`` (e.g. ``"non-embedding N"``), else the
    table's source column, with the unit: ``"Model Size (parameters)"``."""
    name = override or _column_label(table, role)
    unit = _UNITS.get(role)
    if unit is None or unit[:5].lower() in name.lower():  # "tokens", not "tokens (tokens)"
        return name
    return f"{name} ({unit})"


def _column_label(table: RunTable | None, role: str) -> str:
    columns = getattr(table, "columns", None) or {}
    col = columns.get(role)
    if not col or col == role:
        return role
    return f"{role} = {col.replace('*', '·')}" if _DERIVED.fullmatch(col) else str(col)


def number_label(value: float | None, digits: int = 3) -> str:
    """A short number: plain from 0.001 to below 10^4 (``0.05``, ``2``, ``5000``), else
    mantissa-e-exponent (``1e6``, ``2.5e9``); ``–`` for None."""
    if value is None:
        return "–"
    v = float(value)
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    if 1e-3 <= abs(v) < 1e4:  # plain, never 5e+03
        return np.format_float_positional(float(f"{v:.{digits}g}"), trim="-")
    exp = math.floor(math.log10(abs(v)) + 1e-9)
    mant = float(f"{v / 10.0**exp:.{digits}g}")
    if abs(mant) >= 10:  # 9.999e5 rounded to 10e5
        mant, exp = mant / 10, exp + 1
    return f"{mant:g}e{exp}"


def _figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """``(labelled, unlabelled)`` tick values of a log axis from ``lo`` to ``hi``.

    Two decades or more: the powers of ten are labelled (every k-th one when there are
    more than 8), 2..9 of each decade are unlabelled minor ticks. One to two decades:
    1, 2 and 5 of each decade are labelled. Less than a decade: 1..9 of each decade when
    that gives three labels, else evenly spaced round numbers (a loss axis from 2.1 to 2.6).
    """
    from matplotlib.ticker import MaxNLocator

    lo, hi = sorted((float(lo), float(hi)))
    eps = 1e-9

    def inside(vals):
        return sorted(v for v in vals if lo * (1 - eps) <= v <= hi * (1 + eps))

    e_lo, e_hi = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    decades = range(e_lo, e_hi + 1)
    span = math.log10(hi / lo)
    if span >= 2:
        powers = inside(10.0**e for e in decades)
        step = max(1, math.ceil(len(powers) / 8))
        major = powers[::step]
        minor = [p for p in powers if p not in major] if step > 1 else []
        minor += inside(m * 10.0**e for e in decades for m in range(2, 10)) if step == 1 else []
        return major, minor
    if span >= 1:
        major = inside(m * 10.0**e for e in decades for m in (1, 2, 5))
        return major, inside(m * 10.0**e for e in decades for m in (3, 4, 6, 7, 8, 9))
    major = inside(m * 10.0**e for e in decades for m in range(1, 10))
    if len(major) >= 3:
        return major, []
    return inside(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)), []


def tidy_log_axes(fig: Any) -> None:
    """Readable log axes on every axes of ``fig`` (colorbars included): the ticks of
    :func:`log_ticks` labelled by :func:`number_label`, so no ``5×10^0`` labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(limits)
            if axis.get_scale() != "log" or not (lo > 0 and math.isfinite(hi)):
                continue
            major, minor = log_ticks(lo, hi)
            axis.set_major_locator(FixedLocator(major))
            axis.set_major_formatter(FuncFormatter(lambda v, _pos: number_label(v)))
            axis.set_minor_locator(FixedLocator(minor))
            axis.set_minor_formatter(NullFormatter())


def render_figure(fig: Any, fmt: str, **savefig: Any) -> bytes:
    """``fig`` as PNG or SVG bytes (SVG with the hover titles of its data points)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        FigureCanvasAgg(fig)
    tidy_log_axes(fig)
    if fmt == "svg":
        return figure_svg(fig, **savefig)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, **savefig)
    return buf.getvalue()


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120, svg: bool = True) -> Path:
    """Write ``fig`` as PNG at ``path`` and (``svg``) as SVG beside it, same stem, both
    atomically (parent directories created). Returns the PNG's path."""
    path = Path(path)
    atomic_write_bytes(path, render_figure(fig, "png", dpi=dpi))
    if svg:
        atomic_write_bytes(path.with_suffix(".svg"), render_figure(fig, "svg"))
    return path


def _fitted_mask(table: RunTable, fit: LawFit) -> np.ndarray:
    """Which table rows the fit used (the others were dropped as outliers)."""
    if not fit.dropped_rows:
        return np.ones(len(table), dtype=bool)
    return ~np.isin(table.rows, np.asarray(fit.dropped_rows))


def point_titles(table: RunTable, note: str = "", extra: Sequence[str] | None = None) -> list[str]:
    """One hover line per row: ``"rung r03: N = 1.2e7, D = 2.4e8, loss = 3.2104 (fitted)"``
    (a user table's rows are named by their row number; a ``rung`` extra column wins)."""
    ids = table.extra.get("rung") if table.extra else None
    out = []
    for i in range(len(table)):
        name = f"rung {ids[i]}" if ids is not None else f"row {int(table.rows[i])}"
        parts = [
            f"{role} = {number_label(getattr(table, role)[i], 4)}"
            for role in ("N", "D", "C")
            if getattr(table, role) is not None
        ]
        parts.append(f"loss = {number_label(table.loss[i], 5)}")
        more = f", {extra[i]}" if extra is not None else ""
        out.append(f"{name}: {', '.join(parts)}{more}" + (f" ({note})" if note else ""))
    return out


def legend(ax: Any, **kw: Any) -> Any:
    """``ax.legend`` with neutral grey markers for points whose colour encodes a quantity
    (a colorbar explains the colours; the legend only says fitted, dropped or held out).
    Hollow markers get a grey edge, except the red one of dropped outliers."""
    from matplotlib.collections import PathCollection

    leg = ax.legend(**kw)
    for handle in leg.legend_handles:
        if not isinstance(handle, PathCollection):
            continue
        if len(handle.get_facecolor()):
            handle.set_array(None)
            handle.set_facecolor("0.45")
        elif len(handle.get_edgecolor()) and not np.allclose(handle.get_edgecolor(), RED):
            handle.set_edgecolor("0.45")  # hollow: grey too, but an outlier's red edge stays
    return leg


def hollow(colors: Any = "0.45", width: float = 1.1) -> dict[str, Any]:
    """Scatter keywords of a point the fit did not use: no fill, the edge in ``colors`` (one
    colour or one per point). Every figure draws not-fitted points this way."""
    return {"facecolors": "none", "edgecolors": colors, "linewidths": width}


def _scatter(ax: Any, table: RunTable, x: np.ndarray, note: str, **kw: Any) -> Any:
    """``ax.scatter`` of ``table``'s loss against ``x``, every point titled for the SVG."""
    return attach_point_titles(ax.scatter(x, table.loss, **kw), point_titles(table, note))


def plot_loss_vs_n(
    table: RunTable,
    fit: LawFit,
    *,
    n_curves: int = 5,
    n_label: str | None = None,
    held_out: RunTable | None = None,
    excluded: RunTable | None = None,
    excluded_label: str = "not fitted",
) -> Any:
    """Loss against N (or the law's variable), coloured by D, with the fitted law as curves
    at a few values of D. Every point the fit did not use is hollow: dropped outliers (red
    edge), ``held_out`` runs (e.g. a study's extrapolation rung) as hollow stars, and
    ``excluded`` runs (left out by a selection, e.g. a frontier band), labelled
    ``excluded_label``. ``n_label`` names N on the axis (default: the table's column)."""
    from matplotlib.colors import LogNorm

    xvar = "N" if "N" in fit.variables else fit.variables[0]
    if getattr(table, xvar, None) is None:
        raise UserError(f"the table has no {xvar} column to plot against")
    x = getattr(table, xvar)
    fig, (ax,) = _figure()
    used = _fitted_mask(table, fit)
    fitted, dropped = table.subset(used), table.subset(~used)
    has_d = table.D is not None and xvar != "D"
    cmap = norm = None
    if has_d:
        norm = LogNorm(vmin=float(table.D.min()), vmax=float(table.D.max()) * 1.0001)
        cmap = _cmap("viridis")
        sc = _scatter(ax, fitted, x[used], "fitted", c=fitted.D, cmap=cmap, norm=norm, s=18, edgecolors="k", linewidths=0.3, zorder=3, label="fitted")  # fmt: skip
        fig.colorbar(sc, ax=ax, label=axis_label(table, "D"))
    else:
        _scatter(ax, fitted, x[used], "fitted", s=18, color="C0", zorder=3, label="fitted")
    if len(dropped):
        _scatter(ax, dropped, x[~used], "dropped as outlier, not fitted", s=22, facecolors="none", edgecolors="r", zorder=3, label="dropped as outlier (not fitted)")  # fmt: skip
    if held_out is not None and len(held_out) and getattr(held_out, xvar, None) is not None:
        colors = cmap(norm(held_out.D)) if has_d and held_out.D is not None else "k"
        _scatter(ax, held_out, getattr(held_out, xvar), "held out, not fitted", marker="*", s=130, zorder=4, label="held out (not fitted)", **hollow(colors))  # fmt: skip
    if excluded is not None and len(excluded) and getattr(excluded, xvar, None) is not None:
        colors = cmap(norm(excluded.D)) if has_d and excluded.D is not None else "0.45"
        _scatter(ax, excluded, getattr(excluded, xvar), excluded_label, s=22, zorder=3, label=excluded_label, **hollow(colors))  # fmt: skip
    extra = [t for t in (held_out, excluded) if t is not None and len(t)]
    xs = [x] + [getattr(t, xvar) for t in extra]
    lo, hi = min(float(v.min()) for v in xs), max(float(v.max()) for v in xs)
    grid = np.geomspace(lo / 1.5, hi * 1.5, 200)
    if "D" in fit.variables and xvar == "N":
        for dv in np.quantile(table.D, np.linspace(0.05, 0.95, n_curves)):
            color = cmap(norm(dv)) if cmap is not None and norm is not None else None
            ax.plot(grid, fit.predict(N=grid, D=np.full_like(grid, dv)), color=color, lw=1.4)
        ax.plot([], [], color="0.35", lw=1.4, label=f"{law_name(fit)} at {n_curves} values of D")
    else:
        ax.plot(grid, fit.predict(**{xvar: grid}), color="k", lw=1.4, label=law_name(fit))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label(table, xvar, n_label if xvar == "N" else None))
    ax.set_ylabel("loss")
    ax.set_title(law_label(fit), fontsize=10)
    legend(ax, fontsize=8)
    return fig


def plot_residuals(
    table: RunTable,
    fit: LawFit,
    *,
    n_label: str | None = None,
    held_out: RunTable | None = None,
    excluded: RunTable | None = None,
    excluded_label: str = "not fitted",
) -> Any:
    """Relative residuals (predicted / observed - 1) of the fitted points against N and
    against C, coloured by D. ``held_out`` runs (their residual is the law's prediction
    error) are drawn as hollow stars and ``excluded`` runs (left out by a selection) hollow,
    labelled ``excluded_label``; a legend tells them from the fitted points."""
    from matplotlib.colors import LogNorm

    used = _fitted_mask(table, fit)
    t = table.subset(used)
    groups = [(t, "fitted", "fitted", {"s": 14})]
    for other, note, label, kw in (
        (excluded, excluded_label, excluded_label, {"s": 22}),
        (held_out, "held out, not fitted", "held out (not fitted)", {"s": 110, "marker": "*"}),
    ):
        if other is not None and len(other):
            groups.append((other, note, label, kw))
    xs = [v for v in ("N", "C") if getattr(t, v) is not None] or ["loss"]
    fig, axes = _figure(len(xs))
    ds = [g[0].D for g in groups if g[0].D is not None]
    norm = LogNorm(min(float(d.min()) for d in ds), max(float(d.max()) for d in ds) * 1.0001) if len(ds) == len(groups) else None  # fmt: skip
    cmap = _cmap("viridis")
    for g, (part, note, label, kw) in enumerate(groups):
        pred = fit.predict(**{v: getattr(part, v) for v in fit.variables if v in ("N", "D", "C")})
        rel = pred / part.loss - 1.0
        titles = point_titles(part, note, extra=[f"residual {100 * r:+.2f}%" for r in rel])
        colors = cmap(norm(part.D)) if norm is not None else ("C0" if g == 0 else "0.45")
        style = {"c": part.D, "cmap": cmap, "norm": norm} if g == 0 and norm is not None else {}
        style = style or ({"color": colors} if g == 0 else hollow(colors))
        for ax, v in zip(axes, xs):
            xv = getattr(part, v) if v != "loss" else part.loss
            sc = ax.scatter(xv, 100 * rel, zorder=3 + g, label=label if len(groups) > 1 else None, **kw, **style)  # fmt: skip
            attach_point_titles(sc, titles)
            if g == 0:
                mappable = sc
    for ax, v in zip(axes, xs):
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(axis_label(t, v, n_label if v == "N" else None))
        ax.set_ylabel("residual: predicted / observed - 1 (%)")
    if len(groups) > 1:
        legend(axes[0], fontsize=8)
    if norm is not None:
        fig.colorbar(mappable, ax=axes[-1], label=axis_label(t, "D"))
    axes[0].set_title(f"{law_name(fit)}: residuals, rmse(log) {fit.rmse_log:.3g}", fontsize=10)
    return fig


def plot_isoflop(table: RunTable, iso: IsoFLOPFit, *, n_label: str | None = None) -> Any:
    """IsoFLOP profiles: loss against N per budget, the fitted polynomials and their minima
    (hollow markers: minima flagged as not bracketed)."""
    from matplotlib.colors import LogNorm

    labels, budgets = budget_groups(table, iso.budget_column, rtol=iso.budget_rtol)
    fig, (ax,) = _figure()
    norm = LogNorm(vmin=float(budgets.min()), vmax=float(budgets.max()) * 1.0001)
    cmap = _cmap("plasma", top=0.85)
    for g, c in enumerate(budgets):
        sel = labels == g
        color = cmap(norm(c))
        note = f"budget {number_label(c, 3)} FLOPs"
        _scatter(ax, table.subset(sel), table.N[sel], note, color=color, s=14)
        prof = min(iso.profiles, key=lambda p: abs(math.log(p.budget / c)))
        if prof.coeffs:
            lo, hi = prof.log_n_range
            pad = 0.1 * (hi - lo)
            xs = np.linspace(lo - pad, hi + pad, 100)
            ax.plot(np.exp(xs), np.polyval(prof.coeffs, xs), color=color, lw=1.0)
        if math.isfinite(prof.n_opt):
            face = color if prof.status == "ok" else "none"
            ax.scatter([prof.n_opt], [prof.loss_opt], marker="*", s=120, facecolors=face, edgecolors=color, zorder=4)  # fmt: skip
    ax.plot([], [], color="0.35", lw=1.0, label=f"{law_name(iso)}, one per budget")
    ax.scatter([], [], marker="*", s=120, facecolors="0.35", edgecolors="0.35", label="minimum (hollow: not bracketed)")  # fmt: skip
    ax.legend(fontsize=8)
    sm = _scalar_mappable(norm, cmap)
    fig.colorbar(sm, ax=ax, label="compute budget (FLOPs)")
    ax.set_xscale("log")
    ax.set_xlabel(axis_label(table, "N", n_label))
    ax.set_ylabel("loss")
    ax.set_title(f"IsoFLOP profiles: N_opt ∝ C^{iso.a:.3f}, D_opt ∝ C^{iso.b:.3f}", fontsize=10)
    return fig


def _cmap(name: str, top: float = 1.0):
    """A colormap, optionally cut at ``top`` (plasma's last tenth is too pale on white)."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    cmap = colormaps[name]
    return cmap if top >= 1.0 else ListedColormap(cmap(np.linspace(0.0, top, 256)))


def _scalar_mappable(norm, cmap):
    from matplotlib.cm import ScalarMappable

    return ScalarMappable(norm=norm, cmap=cmap)


def plot_optimal(
    fit: LawFit | IsoFLOPFit | EnvelopeFit,
    *,
    compute: tuple[float, float] | None = None,
    isoflop: IsoFLOPFit | None = None,
    n_label: str | None = None,
) -> Any:
    """N_opt and D_opt against compute, with bootstrap bands when the fit carries them
    (calibrated, :func:`~scalelab.laws.calibration.calibrated_allocation`, when its bootstrap
    is); IsoFLOP minima drawn as points when given (hollow: not fitted). ``n_label`` names N (``"non-embedding N"``)."""
    if compute is None:
        if isinstance(fit, LawFit):
            c_lo, c_hi = fit.ranges.get("C", (1e18, 1e22))
        elif isinstance(fit, IsoFLOPFit):
            bs = [p.budget for p in fit.profiles]
            c_lo, c_hi = min(bs), max(bs)
        else:
            c_lo, c_hi = min(fit.compute), max(fit.compute)
        compute = (c_lo, c_hi * 100.0)
    cs = np.geomspace(compute[0], compute[1], 60)
    calibrated = getattr(getattr(fit, "bootstrap", None), "calibration", None) is not None
    if isinstance(fit, LawFit):  # the answer table's intervals (widened when calibrated)
        from scalelab.laws.calibration import calibrated_allocation

        alloc = calibrated_allocation(fit, cs)
    else:
        alloc = fit.optimal(cs)
    fig, axes = _figure(2)
    n_text = f"optimal {n_label} (parameters)" if n_label else "N_opt (parameters)"
    for ax, key, label in ((axes[0], "n_opt", n_text), (axes[1], "d_opt", "D_opt (tokens)")):
        ax.plot(cs, getattr(alloc, key), color="C0", lw=1.6, label=law_name(fit))
        ivs = alloc.intervals.get(key)
        if ivs:
            band = "calibrated" if calibrated else "bootstrap"
            ax.fill_between(cs, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color="C0", alpha=0.2, label=f"{ivs[0].level:.0%} {band}")  # fmt: skip
        iso = isoflop if isoflop is not None else (fit if isinstance(fit, IsoFLOPFit) else None)
        if iso is not None:
            _isoflop_minima(ax, iso, key)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("compute-optimal allocation", fontsize=10)
    return fig


def _isoflop_minima(ax: Any, iso: IsoFLOPFit, key: str) -> None:
    """The IsoFLOP minima on an allocation panel: those the Approach 2 fit used filled, the
    rest (not bracketed) hollow."""
    for used, label, style in (
        (True, "IsoFLOP minima (Approach 2)", {"color": "C3"}),
        (False, "IsoFLOP minima not fitted (not bracketed)", hollow("C3")),
    ):
        sel = [p for p in iso.profiles if p.used == used and math.isfinite(getattr(p, key))]
        if not sel:
            continue
        note = "" if used else " (not fitted)"
        pts = ax.scatter([p.budget for p in sel], [getattr(p, key) for p in sel], s=20, zorder=3, label=label, **style)  # fmt: skip
        attach_point_titles(pts, [f"budget C = {number_label(p.budget, 4)}: N_opt = {number_label(p.n_opt, 4)}, D_opt = {number_label(p.d_opt, 4)}, loss = {number_label(p.loss_opt, 5)}{note}" for p in sel])  # fmt: skip


def plot_extrapolation(result: Any) -> Any:
    """|relative error| against extrapolation distance (decades beyond the training data)."""
    from matplotlib.colors import LogNorm

    fig, (ax,) = _figure()
    d = np.array([p.distance for p in result.points])
    e = np.array([abs(p.rel_error) for p in result.points])
    cut = np.array([p.cutoff for p in result.points])
    norm = LogNorm(float(cut.min()), float(cut.max()) * 1.0001)
    sc = ax.scatter(d, 100 * e, c=cut, norm=norm, cmap="viridis", s=16)
    fig.colorbar(sc, ax=ax, label=f"cutoff ({result.by})")
    ax.set_xlabel(f"extrapolation distance (decades of {result.by})")
    ax.set_ylabel("|relative error| (%)")
    ax.set_title(f"extrapolation check ({result.mode})", fontsize=10)
    return fig
