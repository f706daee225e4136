"""Chinchilla Approaches 1 and 2: compute-optimal scaling without a parametric loss law.

**Approach 2 (IsoFLOP profiles)**, Hoffmann et al. (2022, section 3.2): group the runs by
compute budget; for each budget fit a parabola (optionally a cubic) of loss against
``log N``; its minimum is that budget's loss-optimal model size, and ``D_opt = C/(k N_opt)``.
A minimum outside the sampled sizes is extrapolation, so it is flagged and left out of the
final fit; one at the edge of the samples is flagged. Then ``N_opt = k_N C^a`` and
``D_opt = k_D C^b`` are fitted by least squares in log-log space. Without a budget column
the runs are snapped to nominal budgets (:func:`budget_groups`). Each profile records how
far its vertex sits from the centre of the sizes sampled (``vertex_offset``): the vertex
is unbiased only for a centred grid on a symmetric profile (:data:`OFF_CENTRE`).

**Approach 1 (training-curve envelope)**, Hoffmann et al. (2022, section 3.1): from the
intermediate evaluations of several runs, take at each compute value on a log grid the
lowest loss over all runs' curves (interpolated linearly in log C) and record which model
size achieves it; fit the same two power laws to those minima.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.powerlaw import PowerFit, fit_loglog
from scalelab.laws.results import Allocation, Result, register
from scalelab.laws.table import RunTable

LN10 = math.log(10.0)

OFF_CENTRE = 0.5
"""A used budget whose parabola vertex sits farther than this fraction of the sampled
half-width from the centre of its sampled ``log N`` range is warned about (one next to the
smallest or largest size already has its ``edge`` warning). Open-Athena
(2026, arXiv:2603.22339, "Off-Center Sampling") show that the vertex of a parabola fitted to
an IsoFLOP profile is exact only for a grid centred on the optimum of a symmetric profile
(alpha = beta); an off-centre grid shifts it (a constant offset biases the intercept k_N, an
offset that drifts with C also the exponent a), as does alpha != beta (intercept only); their
off-centre example, a grid centred at 3x the optimum on a +-8x grid, is 0.53 of the
half-width."""


class IsoFLOPWarning(UserWarning):
    """An IsoFLOP profile whose minimum is not bracketed by the data, or sits off-centre."""


@dataclasses.dataclass(frozen=True)
class IsoFLOPProfile(Result):
    """One budget's profile: polynomial in log N and its minimum."""

    kind: ClassVar[str] = "isoflop_profile"
    budget: float
    n_points: int
    coeffs: tuple[float, ...]
    """Polynomial coefficients in ``log N``, highest power first (``np.polyval`` order)."""
    log_n_range: tuple[float, float]
    n_opt: float
    d_opt: float
    loss_opt: float
    status: str
    """``ok``; ``edge`` (minimum next to the smallest/largest size sampled);
    ``outside`` (minimum beyond the sampled sizes); ``no minimum``; ``too few points``."""
    used: bool
    """Whether this budget enters the power-law fits."""
    vertex_offset: float = math.nan
    """Where the minimum sits in the sampled sizes: ``(log N_opt - centre) / half-width`` of
    the sampled ``log N`` range (0: centred; +-1: at the largest/smallest size)."""

    @property
    def offset_decades(self) -> float:
        """The same offset in decades of N (``log10 N_opt`` minus the centre)."""
        return self.vertex_offset * (self.log_n_range[1] - self.log_n_range[0]) / (2 * LN10)


class _AllocationLaws:
    """Shared by the IsoFLOP and envelope results: N_opt, D_opt and loss laws in C."""

    n_opt_law: PowerFit
    d_opt_law: PowerFit
    loss_law: PowerFit | None

    @property
    def a(self) -> float:
        return self.n_opt_law.exponent

    @property
    def b(self) -> float:
        return self.d_opt_law.exponent

    @property
    def params(self) -> dict[str, float]:
        return {
            "a": self.a,
            "b": self.b,
            "k_N": self.n_opt_law.k,
            "k_D": self.d_opt_law.k,
        }

    def with_bootstrap(self, boot: Result) -> Any:
        """A copy carrying a bootstrap (refit per resample) whose samples give intervals."""
        return dataclasses.replace(self, bootstrap=boot)  # type: ignore[type-var]

    def optimal(self, compute: float | Sequence[float], *, level: float = 0.95) -> Allocation:
        """N_opt, D_opt (and loss) from the fitted power laws; percentile intervals at
        ``level`` when a bootstrap with samples of ``a, b, k_N, k_D`` is attached."""
        from scalelab.laws.fits import interval_from_samples

        cs = np.atleast_1d(np.asarray(compute, dtype=np.float64))
        if not (np.isfinite(cs).all() and (cs > 0).all()):
            raise UserError(f"compute budgets must be positive numbers, got {compute!r}")
        n_opt, d_opt = self.n_opt_law(cs), self.d_opt_law(cs)
        loss = self.loss_law(cs) if self.loss_law is not None else np.full_like(cs, math.nan)
        intervals = {}
        samples = getattr(getattr(self, "bootstrap", None), "samples", {})
        if all(k in samples for k in ("a", "b", "k_N", "k_D")):
            sm = {k: np.asarray(samples[k])[:, None] for k in ("a", "b", "k_N", "k_D")}
            n_s = sm["k_N"] * cs[None, :] ** sm["a"]  # [R, len(C)]
            d_s = sm["k_D"] * cs[None, :] ** sm["b"]
            for key, arr, est in (
                ("n_opt", n_s, n_opt),
                ("d_opt", d_s, d_opt),
                ("tokens_per_param", d_s / n_s, d_opt / n_opt),
            ):
                intervals[key] = tuple(
                    interval_from_samples(arr[:, i], float(est[i]), level) for i in range(cs.size)
                )
        return Allocation(
            compute=tuple(cs.tolist()),
            n_opt=tuple(n_opt.tolist()),
            d_opt=tuple(d_opt.tolist()),
            tokens_per_param=tuple((d_opt / n_opt).tolist()),
            loss=tuple(np.asarray(loss).tolist()),
            intervals=intervals,
        )


@register("isoflop")
@dataclasses.dataclass(frozen=True)
class IsoFLOPFit(_AllocationLaws, Result):
    """Approach 2 result: per-budget profiles and the allocation power laws."""

    kind: ClassVar[str] = "isoflop"
    degree: int
    profiles: tuple[IsoFLOPProfile, ...]
    n_opt_law: PowerFit
    d_opt_law: PowerFit
    loss_law: PowerFit | None
    flops_per_nd: float | None
    source: str = ""
    warnings: tuple[str, ...] = ()
    budget_column: str | None = None
    """The column that named the budgets (None: runs were grouped by C)."""
    budget_rtol: float = 0.1  # what fits saved before the default became BUDGET_RTOL used
    bootstrap: Result | None = None

    def summary(self) -> str:
        lines = [
            f"IsoFLOP (Approach 2) fit, degree {self.degree}, {len(self.profiles)} budgets "
            f"({sum(p.used for p in self.profiles)} used), {self.source}"
        ]
        if self.budget_column is None:
            k = f"{self.flops_per_nd:g}" if self.flops_per_nd is not None else "k"
            lines.append(
                f"  budgets found by clustering C = {k}ND (neighbours within a factor "
                f"{1 + self.budget_rtol:g}, each size once per budget; levels from sizes shared "
                "across budgets); name the budget column (--budget) to use nominal budgets"
            )
        for p in self.profiles:
            off = f", vertex {p.vertex_offset:+.2f} off-centre" if p.used else ""
            lines.append(
                f"  C={p.budget:.3g}: {p.n_points} runs, N_opt {p.n_opt:.4g}, D_opt {p.d_opt:.4g}, "
                f"loss {p.loss_opt:.4g} [{p.status}{'' if p.used else ', not used'}{off}]"
            )
        lines.extend(_sampling_line(self.profiles))
        lines.append(_law_line("N_opt", self.n_opt_law))
        lines.append(_law_line("D_opt", self.d_opt_law))
        for w in self.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


def _sampling_line(profiles: Sequence[IsoFLOPProfile]) -> list[str]:
    """How far each used budget's vertex is from the centre of its sizes, and its drift."""
    used = [p for p in profiles if p.used and math.isfinite(p.vertex_offset)]
    if not used:
        return []
    dec = np.array([p.offset_decades for p in used])
    drift = ""
    if len(used) >= 3:
        slope = np.polyfit(np.log10([p.budget for p in used]), dec, 1)[0]
        drift = f", drifting {slope:+.2f} decades per decade of C"
    return [
        f"  sampling: the vertices lie {dec.min():+.2f} to {dec.max():+.2f} decades of N from "
        f"the centres of their budgets' sizes{drift}; Approach 2's N_opt is unbiased only on "
        "centred grids with alpha = beta (arXiv:2603.22339)"
    ]


def _law_line(name: str, law: PowerFit) -> str:
    se = f" +- {law.exponent_se:.3f}" if math.isfinite(law.exponent_se) else ""
    return f"  {name} = {law.k:.4g} * C^{law.exponent:.4f}{se}  (R^2 {law.r2:.4f}, {law.n} points)"


BUDGET_RTOL = 0.2
"""Default tolerance for finding budgets without a budget column: runs whose C = k N D lie
within a factor 1.2 of their neighbour (in sorted order) can share a budget. A 6ND count
differs from a sweep's nominal budget by a factor that depends on the model (embedding
parameters counted or not, attention FLOPs: Kaplan et al. 2020, section 2.1; Hoffmann et
al. 2022, Appendix F), so one budget's runs spread over tens of percent (on ml-scalefit's
Chinchilla sweep neighbours sit up to 1.10x apart); 1.2 stays below the closest spacing of
nominal budgets among the published sweeps (1.24x, the (Mis)fitting sweep)."""


def budget_groups(
    table: RunTable, budget: str | None = None, *, rtol: float = BUDGET_RTOL
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels [P] int, budgets [G])``: from a budget column, or by clustering C values.

    Without a column, runs are snapped to nominal budgets by single-linkage clustering of
    ``log C``: neighbours (in sorted order) closer than a factor ``1 + rtol`` are joined,
    closest first, unless the join would put one model size twice into a budget at C values
    more than ``1 + rtol`` apart (an IsoFLOP sweep trains each size once per budget,
    Hoffmann et al. 2022, section 3.2; repeats at one budget have about the same C). Each
    budget's level comes from the additive model ``log C = budget + size effect`` fitted to
    the runs (see :func:`budget_levels`), so a 6ND count that is off the nominal budget by a
    size-dependent factor gives budgets in the nominal ratios.
    """
    if budget is not None:
        if budget not in table.extra:
            raise UserError(
                f"{table.source}: no budget column '{budget}' (load it with extra=['{budget}'])"
            )
        vals = np.asarray(table.extra[budget])
        if vals.dtype == object or not (np.isfinite(vals).all() and (vals > 0).all()):
            raise UserError(f"{table.source}: budget column '{budget}' must hold positive numbers")
        budgets, labels = np.unique(vals, return_inverse=True)
        return labels, budgets.astype(np.float64)
    table.require("C", what="grouping runs by compute budget")
    if not rtol > 0:
        raise UserError(f"budget_rtol must be positive, got {rtol}")
    lc = np.log(table.C)
    sizes = _size_ids(table.N) if table.N is not None else np.arange(len(table))
    labels = _cluster_log_c(lc, sizes, math.log1p(rtol))
    return labels, budget_levels(lc, sizes, labels)


def _size_ids(n: np.ndarray) -> np.ndarray:
    """An integer per run, equal for equal model sizes (to ~1e-6 relative)."""
    return np.unique(np.round(np.log(n), 6), return_inverse=True)[1]


def _cluster_log_c(lc: np.ndarray, sizes: np.ndarray, tol: float) -> np.ndarray:
    """Budget labels (0, 1, ... in increasing C) by the rule of :func:`budget_groups`."""
    order = np.argsort(lc, kind="stable")
    x = lc[order]
    parent = list(range(x.size))  # union-find over sorted positions
    spans = [{int(sizes[i]): (x[j], x[j])} for j, i in enumerate(order)]  # size -> lc range

    def root(j: int) -> int:
        while parent[j] != j:
            parent[j] = parent[parent[j]]
            j = parent[j]
        return j

    gaps = np.diff(x)
    for j in np.argsort(gaps, kind="stable"):
        if gaps[j] > tol:
            break
        a, b = root(int(j)), root(int(j) + 1)
        small, big = sorted((spans[a], spans[b]), key=len)
        if any(s in big and max(hi, big[s][1]) - min(lo, big[s][0]) > tol
               for s, (lo, hi) in small.items()):  # fmt: skip
            continue  # one size twice at clearly different C: two budgets
        for s, (lo, hi) in small.items():
            old = big.get(s, (lo, hi))
            big[s] = (min(lo, old[0]), max(hi, old[1]))
        parent[a] = parent[b] = a
        spans[a] = big
    roots = np.array([root(j) for j in range(x.size)])
    labels = np.empty(x.size, dtype=np.int64)
    labels[order] = np.unique(roots, return_inverse=True)[1]  # roots increase with C
    return labels


def budget_levels(lc: np.ndarray, sizes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each budget's C from ``log C_i = b_label(i) + s_size(i)`` by least squares.

    The size effects ``s`` absorb a FLOP count that differs from the nominal budget by a
    factor depending on the model; budgets connected through shared sizes get levels in
    their true ratios. The common level of each connected set is fixed so the size effects
    average to 0 over its runs (a budget sharing no size with another is the geometric mean
    of its runs' C, as with no size effects at all).
    """
    g, s = int(labels.max()) + 1, int(sizes.max()) + 1
    comp = list(range(g + s))  # union-find joining budgets and sizes through runs

    def root(j: int) -> int:
        while comp[j] != j:
            comp[j] = comp[comp[j]]
            j = comp[j]
        return j

    for lab, size in zip(labels, sizes):
        comp[root(int(lab))] = root(g + int(size))
    run_comp = np.array([root(int(lab)) for lab in labels])
    levels = np.zeros(g)
    for c in np.unique(run_comp):
        rows = np.flatnonzero(run_comp == c)
        bud, bud_idx = np.unique(labels[rows], return_inverse=True)
        siz, siz_idx = np.unique(sizes[rows], return_inverse=True)
        design = np.zeros((rows.size, bud.size + siz.size))
        design[np.arange(rows.size), bud_idx] = 1.0
        design[np.arange(rows.size), bud.size + siz_idx] = 1.0
        coef = np.linalg.lstsq(design, lc[rows], rcond=None)[0]
        shift = float(np.mean(coef[bud.size + siz_idx]))  # mean size effect over the runs
        levels[bud] = coef[: bud.size] + shift
    return np.exp(levels)


_STATUS_NOTE = {
    "outside": "the minimum lies outside the sizes sampled (extrapolated; not used)",
    "edge": "the minimum sits at the edge of the sizes sampled",
    "no minimum": "the profile has no minimum (not convex in log N; not used)",
}


def _poly_minimum(coeffs: np.ndarray) -> float | None:
    """Location of the local minimum of a polynomial (degree 2 or 3), or None."""
    deriv = np.polyder(coeffs)
    second = np.polyder(deriv)
    roots = np.roots(deriv)
    mins = [r.real for r in roots if abs(r.imag) < 1e-12 and np.polyval(second, r.real) > 0]
    if not mins:
        return None
    return float(min(mins, key=lambda r: np.polyval(coeffs, r)))


def fit_isoflop(
    table: RunTable,
    *,
    degree: int = 2,
    budget: str | None = None,
    budget_rtol: float = BUDGET_RTOL,
    min_points: int = 3,
    use_edges: bool = True,
) -> IsoFLOPFit:
    """Approach 2 on a table of runs at a few compute budgets (see the module docstring).

    ``budget`` names a column of nominal budgets (loaded with ``extra=[...]``); otherwise
    runs are snapped to budgets by clustering C (:func:`budget_groups`, ``budget_rtol``).
    ``use_edges=False`` also leaves out budgets whose minimum sits next to the smallest or
    largest size sampled. Emits :class:`IsoFLOPWarning` for every budget whose minimum is
    not bracketed or sits off-centre (:data:`OFF_CENTRE`). A profile whose minimum runs off
    to +-infinity (a near-flat parabola, e.g. in a bootstrap resample) is "outside", unused.
    """
    if degree not in (2, 3):
        raise UserError(f"IsoFLOP profiles are parabolas (degree 2) or cubics (3), not {degree}")
    table.require("N", "loss", what="an IsoFLOP fit")
    labels, budgets = budget_groups(table, budget, rtol=budget_rtol)
    k = table.flops_per_nd
    if k is None and table.D is None:
        raise UserError(f"{table.source}: IsoFLOP needs D or a FLOP convention to get D_opt")
    profiles: list[IsoFLOPProfile] = []
    notes: list[str] = []
    for g, c in enumerate(budgets):
        profile, note = _fit_profile(
            table,
            labels == g,
            float(c),
            degree=degree,
            min_points=min_points,
            use_edges=use_edges,
            k=k,
        )
        profiles.append(profile)
        if note is not None:
            notes.append(f"budget {c:.3g}: {note}")
    used = [p for p in profiles if p.used]
    if len(used) < 2:
        raise UserError(
            f"{table.source}: only {len(used)} budget(s) have a bracketed minimum; an IsoFLOP "
            "fit needs at least 2 (sample sizes on both sides of the optimum)"
        )
    off = [p for p in used if p.status == "ok" and abs(p.vertex_offset) > OFF_CENTRE]
    if off:
        worst = max((p.vertex_offset for p in off), key=abs)
        notes.append(
            f"budget{'s' if len(off) > 1 else ''} {', '.join(f'{p.budget:.3g}' for p in off)}: "
            f"the vertex sits more than {OFF_CENTRE:g} of the sampled half-width off the centre "
            f"of the sizes (up to {worst:+.2f}); an off-centre grid biases the parabola's N_opt "
            "(a constant offset k_N, one that drifts with C the exponent a; Open-Athena 2026, "
            "arXiv:2603.22339): centre those budgets' sizes on N_opt"
        )
    cs = np.array([p.budget for p in used])
    n_law = fit_loglog(cs, np.array([p.n_opt for p in used]))
    d_law = fit_loglog(cs, np.array([p.d_opt for p in used]))
    l_law = fit_loglog(cs, np.array([p.loss_opt for p in used]))
    for note in notes:
        warnings.warn(f"IsoFLOP: {note}", IsoFLOPWarning, stacklevel=2)
    return IsoFLOPFit(
        degree=degree,
        profiles=tuple(profiles),
        n_opt_law=n_law,
        d_opt_law=d_law,
        loss_law=l_law,
        flops_per_nd=k,
        source=table.source,
        warnings=tuple(notes),
        budget_column=budget,
        budget_rtol=budget_rtol,
    )


def _fit_profile(
    table: RunTable,
    sel: np.ndarray,
    c: float,
    *,
    degree: int,
    min_points: int,
    use_edges: bool,
    k: float | None,
) -> tuple[IsoFLOPProfile, str | None]:
    """One budget's profile (the runs ``sel`` at compute ``c``) and a note unless it is ok."""
    ln = np.log(table.N[sel])
    y = table.loss[sel]
    span = (float(ln.min()), float(ln.max()))
    need = max(min_points, degree + 1)
    if np.unique(ln).size < need:
        profile = IsoFLOPProfile(
            budget=c, n_points=int(sel.sum()), coeffs=(), log_n_range=span,
            n_opt=math.nan, d_opt=math.nan, loss_opt=math.nan,
            status="too few points", used=False,
        )  # fmt: skip
        return profile, f"only {np.unique(ln).size} distinct sizes, skipped"
    coeffs = np.polyfit(ln, y, degree)
    x_min = _poly_minimum(coeffs)
    if x_min is None:
        status, used = "no minimum", False
        n_opt = d_opt = loss_opt = math.nan
    else:
        xs = np.sort(np.unique(ln))
        if x_min < xs[0] or x_min > xs[-1]:
            status, used = "outside", False
        elif x_min < xs[1] or x_min > xs[-2] or np.argmin(y) in (np.argmin(ln), np.argmax(ln)):
            status, used = "edge", use_edges
        else:
            status, used = "ok", True
        with np.errstate(all="ignore"):  # a near-flat parabola's minimum can be at 1e300
            n_opt = float(np.exp(x_min))
            loss_opt = float(np.polyval(coeffs, x_min))
            if k is not None:
                d_opt = c / (k * n_opt) if n_opt > 0 else math.inf
            else:  # no convention: read D_opt off the runs' own D at N_opt
                ld = np.log(table.D[sel])
                d_opt = float(np.exp(np.polyval(np.polyfit(ln, ld, 1), x_min)))
        if not all(math.isfinite(v) and v > 0 for v in (n_opt, d_opt)):
            # Only a minimum far outside the sampled sizes overflows (not used; bootstrap
            # resamples of a flat profile do this).
            n_opt = d_opt = loss_opt = math.nan
    half = (span[1] - span[0]) / 2
    offset = (x_min - (span[0] + half)) / half if x_min is not None and half > 0 else math.nan
    profile = IsoFLOPProfile(
        budget=c, n_points=int(sel.sum()), coeffs=tuple(coeffs.tolist()),
        log_n_range=span, n_opt=n_opt, d_opt=d_opt, loss_opt=loss_opt,
        status=status, used=used, vertex_offset=offset,
    )  # fmt: skip
    return profile, None if status == "ok" else _STATUS_NOTE[status]


# ====================================================================== Approach 1


@register("envelope")
@dataclasses.dataclass(frozen=True)
class EnvelopeFit(_AllocationLaws, Result):
    """Approach 1 result: the lower envelope of training curves and the allocation laws."""

    kind: ClassVar[str] = "envelope"
    compute: tuple[float, ...]
    """The compute grid where at least ``min_runs`` curves overlap."""
    loss: tuple[float, ...]
    """Lowest interpolated loss at each grid value."""
    n_at_min: tuple[float, ...]
    d_at_min: tuple[float, ...]
    run_at_min: tuple[str, ...]
    n_opt_law: PowerFit
    d_opt_law: PowerFit
    loss_law: PowerFit | None
    n_runs: int
    source: str = ""
    warnings: tuple[str, ...] = ()
    bootstrap: Result | None = None

    def summary(self) -> str:
        runs = sorted(set(self.run_at_min))
        lines = [
            f"training-curve envelope (Approach 1): {self.n_runs} runs, {len(self.compute)} "
            f"compute values, {len(runs)} runs on the envelope ({self.source})",
            _law_line("N_opt", self.n_opt_law),
            _law_line("D_opt", self.d_opt_law),
        ]
        lines.extend(f"  warning: {w}" for w in self.warnings)
        return "\n".join(lines)


def fit_envelope(curves: RunTable, *, n_grid: int = 200, min_runs: int = 2) -> EnvelopeFit:
    """Approach 1 from training curves: rows are (run, N, D_t, C_t, loss_t) evaluations.

    The table's ``group`` column identifies the run; each run's loss is interpolated
    linearly in ``log C`` between its evaluations. At each of ``n_grid`` log-spaced compute
    values covered by at least ``min_runs`` runs, the run with the lowest loss gives
    N_opt(C) and D_opt(C) (its tokens at that compute, interpolated in log C).
    """
    if curves.group is None:
        raise UserError(f"{curves.source}: Approach 1 needs a run id column (group=...)")
    curves.require("N", "D", "C", what="Approach 1")
    if n_grid < 2 or min_runs < 1:
        raise UserError("n_grid must be >= 2 and min_runs >= 1")
    runs = []
    for rid in dict.fromkeys(curves.group.tolist()):
        sel = curves.group == rid
        order = np.argsort(curves.C[sel])
        lc = np.log(curves.C[sel][order])
        if np.unique(lc).size < 2:
            continue
        n_vals = curves.N[sel]
        if np.ptp(np.log(n_vals)) > 1e-6:
            raise UserError(f"{curves.source}: run '{rid}' has more than one N")
        runs.append(
            (str(rid), float(n_vals[0]), lc, curves.loss[sel][order], np.log(curves.D[sel][order]))
        )
    if len(runs) < 2:
        raise UserError(f"{curves.source}: Approach 1 needs curves (2+ evaluations) of 2+ runs")
    grid = np.linspace(min(r[2][0] for r in runs), max(r[2][-1] for r in runs), n_grid)
    loss = np.full((len(runs), n_grid), np.inf)  # [runs, grid]
    log_d = np.zeros((len(runs), n_grid))
    for i, (_, _, lc, y, ld) in enumerate(runs):
        inside = (grid >= lc[0]) & (grid <= lc[-1])
        loss[i, inside] = np.interp(grid[inside], lc, y)
        log_d[i, inside] = np.interp(grid[inside], lc, ld)
    covered = np.isfinite(loss).sum(axis=0) >= min_runs
    if covered.sum() < 2:
        raise UserError(
            f"{curves.source}: fewer than 2 compute values are covered by {min_runs} runs"
        )
    best = np.argmin(loss[:, covered], axis=0)
    cols = np.flatnonzero(covered)
    c_vals = np.exp(grid[covered])
    n_at = np.array([runs[i][1] for i in best])
    d_at = np.exp(log_d[best, cols])
    notes = []
    on_env = sorted({runs[i][0] for i in best})
    if len(on_env) < 2:
        notes.append(
            f"a single run ({on_env[0]}) forms the whole envelope; the exponents are meaningless"
        )
    elif len(on_env) < 3:
        notes.append("only 2 runs form the envelope; the exponents rest on one switch point")
    for note in notes:
        warnings.warn(f"Approach 1: {note}", IsoFLOPWarning, stacklevel=2)
    if np.ptp(np.log(n_at)) == 0:
        n_law = PowerFit(
            k=float(n_at[0]),
            exponent=0.0,
            exponent_se=math.nan,
            log_k_se=math.nan,
            r2=0.0,
            n=n_at.size,
        )
    else:
        n_law = fit_loglog(c_vals, n_at)
    return EnvelopeFit(
        compute=tuple(c_vals.tolist()),
        loss=tuple(loss[best, cols].tolist()),
        n_at_min=tuple(n_at.tolist()),
        d_at_min=tuple(d_at.tolist()),
        run_at_min=tuple(runs[i][0] for i in best),
        n_opt_law=n_law,
        d_opt_law=fit_loglog(c_vals, d_at),
        loss_law=fit_loglog(c_vals, loss[best, cols]),
        n_runs=len(runs),
        source=curves.source,
        warnings=tuple(notes),
    )
