"""Figures of fitted laws (matplotlib, Agg; no pyplot, so no global figure state).

Each function takes result objects plus the table they were fitted to and returns a
:class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as PNG. The HTML report
calls these directly.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit
from scalelab.laws.isoflop import EnvelopeFit, IsoFLOPFit, budget_groups
from scalelab.laws.table import RunTable


def _figure(ncols: int = 1, *, width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def tidy_log_axes(fig: Any) -> None:
    """Readable log axes: matplotlib labels some minor ticks of short log axes, and at 1-2
    decades they overprint each other; label 1, 2 and 5 of each decade instead."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, limits in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(limits)
            if axis.get_scale() != "log" or lo <= 0 or hi / lo <= 10:
                continue
            axis.set_minor_formatter(NullFormatter())
            if hi / lo < 10**2.5:  # few decades: label 1, 2 and 5 of each
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as PNG (parent directories created)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    tidy_log_axes(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def _fitted_mask(table: RunTable, fit: LawFit) -> np.ndarray:
    """Which table rows the fit used (the others were dropped as outliers)."""
    if not fit.dropped_rows:
        return np.ones(len(table), dtype=bool)
    return ~np.isin(table.rows, np.asarray(fit.dropped_rows))


def plot_loss_vs_n(table: RunTable, fit: LawFit, *, n_curves: int = 5) -> Any:
    """Loss against N (or the law's variable), coloured by D, with the fitted law as curves
    at a few values of D. Dropped outliers are drawn hollow."""
    from matplotlib.colors import LogNorm

    xvar = "N" if "N" in fit.variables else fit.variables[0]
    if getattr(table, xvar, None) is None:
        raise UserError(f"the table has no {xvar} column to plot against")
    x = getattr(table, xvar)
    fig, (ax,) = _figure()
    used = _fitted_mask(table, fit)
    has_d = table.D is not None and xvar != "D"
    cmap = norm = None
    if has_d:
        norm = LogNorm(vmin=float(table.D.min()), vmax=float(table.D.max()))
        cmap = _cmap("viridis")
        sc = ax.scatter(x[used], table.loss[used], c=table.D[used], cmap=cmap, norm=norm, s=18, edgecolors="k", linewidths=0.3, zorder=3)  # fmt: skip
        fig.colorbar(sc, ax=ax, label="D (tokens)")
    else:
        ax.scatter(x[used], table.loss[used], s=18, color="C0", zorder=3)
    if (~used).any():
        ax.scatter(x[~used], table.loss[~used], s=22, facecolors="none", edgecolors="r", label="dropped", zorder=3)  # fmt: skip
    grid = np.geomspace(float(x.min()) / 1.5, float(x.max()) * 1.5, 200)
    if "D" in fit.variables and xvar == "N":
        for dv in np.quantile(table.D, np.linspace(0.05, 0.95, n_curves)):
            color = cmap(norm(dv)) if cmap is not None and norm is not None else None
            ax.plot(grid, fit.predict(N=grid, D=np.full_like(grid, dv)), color=color, lw=1.4)
    else:
        ax.plot(grid, fit.predict(**{xvar: grid}), color="k", lw=1.4, label=fit.formula)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(
        f"{xvar} ({'parameters' if xvar == 'N' else 'tokens' if xvar == 'D' else 'FLOPs'})"
    )
    ax.set_ylabel("loss")
    ax.set_title(f"{fit.form}: {fit.formula}", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return fig


def plot_residuals(table: RunTable, fit: LawFit) -> Any:
    """Relative residuals (predicted / observed - 1) against N and against C."""
    used = _fitted_mask(table, fit)
    t = table.subset(used)
    pred = fit.predict(**{v: getattr(t, v) for v in fit.variables if v in ("N", "D", "C")})
    rel = pred / t.loss - 1.0
    xs = [v for v in ("N", "C") if getattr(t, v) is not None] or ["loss"]
    fig, axes = _figure(len(xs))
    color = np.log10(t.D) if t.D is not None else None
    for ax, v in zip(axes, xs):
        xv = getattr(t, v) if v != "loss" else t.loss
        sc = ax.scatter(xv, 100 * rel, s=14, c=color, cmap="viridis")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(v)
        ax.set_ylabel("residual: predicted / observed - 1 (%)")
    if color is not None:
        fig.colorbar(sc, ax=axes[-1], label="log10 D (tokens)")
    axes[0].set_title(f"{fit.form} residuals (rmse(log) {fit.rmse_log:.3g})", fontsize=10)
    return fig


def plot_isoflop(table: RunTable, iso: IsoFLOPFit) -> Any:
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
        ax.scatter(table.N[sel], table.loss[sel], color=color, s=14)
        prof = min(iso.profiles, key=lambda p: abs(math.log(p.budget / c)))
        if prof.coeffs:
            lo, hi = prof.log_n_range
            pad = 0.1 * (hi - lo)
            xs = np.linspace(lo - pad, hi + pad, 100)
            ax.plot(np.exp(xs), np.polyval(prof.coeffs, xs), color=color, lw=1.0)
        if math.isfinite(prof.n_opt):
            face = color if prof.status == "ok" else "none"
            ax.scatter([prof.n_opt], [prof.loss_opt], marker="*", s=120, facecolors=face, edgecolors=color, zorder=4)  # fmt: skip
    sm = _scalar_mappable(norm, cmap)
    fig.colorbar(sm, ax=ax, label="compute budget (FLOPs)")
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss")
    ax.set_title(f"IsoFLOP profiles: N_opt ~ C^{iso.a:.3f}, D_opt ~ C^{iso.b:.3f}", fontsize=10)
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
) -> Any:
    """N_opt and D_opt against compute, with bootstrap bands when the fit carries them;
    IsoFLOP minima drawn as points when given."""
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
    alloc = fit.optimal(cs)
    fig, axes = _figure(2)
    for ax, key, label in (
        (axes[0], "n_opt", "N_opt (parameters)"),
        (axes[1], "d_opt", "D_opt (tokens)"),
    ):
        ax.plot(cs, getattr(alloc, key), color="C0", lw=1.6, label=type(fit).__name__)
        ivs = alloc.intervals.get(key)
        if ivs:
            ax.fill_between(cs, [iv.lo for iv in ivs], [iv.hi for iv in ivs], color="C0", alpha=0.2, label=f"{ivs[0].level:.0%} bootstrap")  # fmt: skip
        iso = isoflop if isoflop is not None else (fit if isinstance(fit, IsoFLOPFit) else None)
        if iso is not None:
            used = [p for p in iso.profiles if p.used]
            ax.scatter([p.budget for p in used], [getattr(p, key) for p in used], color="C3", s=20, zorder=3, label="IsoFLOP minima")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compute C (FLOPs)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("compute-optimal allocation", fontsize=10)
    return fig


def plot_extrapolation(result: Any) -> Any:
    """|relative error| against extrapolation distance (decades beyond the training data)."""
    fig, (ax,) = _figure()
    d = np.array([p.distance for p in result.points])
    e = np.array([abs(p.rel_error) for p in result.points])
    cut = np.array([p.cutoff for p in result.points])
    sc = ax.scatter(d, 100 * e, c=np.log10(cut), cmap="viridis", s=16)
    fig.colorbar(sc, ax=ax, label=f"log10 cutoff ({result.by})")
    ax.set_xlabel(f"extrapolation distance (decades of {result.by})")
    ax.set_ylabel("|relative error| (%)")
    ax.set_title(f"extrapolation check ({result.mode})", fontsize=10)
    return fig
