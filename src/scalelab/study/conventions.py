"""Compute-optimal allocation exponents under each convention of N and C, side by side.

The exponents a (``N_opt ∝ C^a``) and b (``D_opt ∝ C^b``) a study reports depend on what it
calls N and C. Kaplan et al. (2020, arXiv:2001.08361, Sec. 2.1) count non-embedding
parameters and ``C = 6 N D``; Hoffmann et al. (2022, arXiv:2203.15556) count every
parameter and, in Appendix F, the full forward-and-backward FLOPs of embeddings, attention
(``QK^T`` and the weighted sum over the context) and the output head. Pearce & Song (2024,
arXiv:2406.12907) show that most of the gap between Kaplan's a = 0.73 and Chinchilla's
a = 0.50 comes from counting non-embedding rather than total parameters at small scale;
Porian et al. (2024, arXiv:2406.19146) attribute it to the FLOP count (the head and
attention, most of the compute of small models), the warmup and the tuning. At CPU scale
the difference is large (rung c0-n1 of a CPU study: 6 N D = 2.65e10, Appendix F 3.79e11).

:func:`allocation_by_convention` gives the exponents for N in {non-embedding, total} x C in
{6 N D with that N, the Appendix F count}, with 95% bootstrap intervals (runs resampled,
seeded), by

- **Approach 3** (Hoffmann et al. 2022, Sec. 3.3): ``L(N, D) = E + A/N^alpha + B/D^beta``
  fitted once per N definition. Under ``C = 6 N D`` the optimum has the closed form
  ``a = beta/(alpha+beta)``, ``b = alpha/(alpha+beta)`` (their eq. 4). Under the Appendix F
  count ``C = f(N) D``, with ``f`` the rungs' FLOPs per token (:class:`PerTokenCount`),
  which is not proportional to N, so C is not a power law of ``N D`` and the optimum has no
  closed form: ``N_opt(C)`` is found numerically (:func:`optimal_log_n`) and a, b are its
  local log-log slopes across the fitted rungs' compute range (:func:`local_slope`).
- **Approach 2** (Hoffmann et al. 2022, Sec. 3.2), when every run has a compute level: the
  IsoFLOP parabola vertices of each level (``N_opt`` in that N, ``D_opt`` read off the
  level's runs at ``N_opt``) regressed on each convention's C at the vertex. The levels are
  iso only under the plan's convention; under any other count a level's runs spread in C.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError

N_DEFS = {"non-embedding": "N", "total": "N_total"}
"""N definitions and their results column: non-embedding (Kaplan et al. 2020, Sec. 2.1) and
every parameter (Hoffmann et al. 2022)."""

SIX_ND = "6ND"
APPENDIX_F = "Appendix F"
C_DEFS = (SIX_ND, APPENDIX_F)
"""C = 6 N D with the cell's N (Kaplan et al. 2020, Eq. 2.1), and the full count of Hoffmann
et al. 2022, Appendix F (embeddings, attention and the head included)."""

C_COLUMNS = {
    ("non-embedding", SIX_ND): "C_6n_kaplan",
    ("total", SIX_ND): "C_6n_total",
    ("non-embedding", APPENDIX_F): "C_chinchilla",
    ("total", APPENDIX_F): "C_chinchilla",
}
"""The results column that holds each cell's C (``Study.result_rows``)."""

APPROACH3, APPROACH2 = "Approach 3", "Approach 2"

SLOPE_POINTS = 7
"""Compute values, log-spaced over the fitted rungs' range, where N_opt(C) is solved under the
Appendix F count; a and b are the least-squares log-log slopes through them."""

SEARCH_DECADES = 3.0
"""N_opt(C) is searched within this many decades of N beyond the sampled sizes; a resample
whose optimum lies farther out counts as failed (it would rest on an extrapolated f(N))."""

SEARCH_POINTS = 1201
"""Grid points in log N for the search (then a parabola through the best three): 0.015
natural-log units apart over 15 decades, about 1e-5 in log N_opt after refinement."""

FAILURES = (UserError, ArithmeticError, ValueError, np.linalg.LinAlgError)
"""What a cell's fit may raise; the cell then shows "–" with the reason."""


@dataclasses.dataclass(frozen=True)
class ConventionCell:
    """The exponents of one (N definition, C definition, method)."""

    n_def: str
    """``non-embedding`` or ``total``."""
    c_def: str
    """``6ND`` or ``Appendix F``."""
    method: str
    """``Approach 3`` or ``Approach 2``."""
    how: str
    """How a and b were obtained (analytic, numerical local slope, IsoFLOP regression)."""
    a: float | None = None
    b: float | None = None
    a_interval: tuple[float, float] | None = None
    b_interval: tuple[float, float] | None = None
    resamples: int = 0
    """Bootstrap resamples behind the intervals (those whose refit gave finite exponents)."""
    error: str | None = None
    """Why the cell has no exponents (None: it has them)."""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("a_interval", "b_interval"):
            out[key] = None if out[key] is None else list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConventionCell:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        for key in ("a_interval", "b_interval"):
            if kw.get(key) is not None:
                kw[key] = tuple(kw[key])
        return cls(**kw)


@dataclasses.dataclass(frozen=True)
class ConventionTable:
    """:func:`allocation_by_convention`'s result: one cell per N x C x method."""

    cells: tuple[ConventionCell, ...]
    plan_convention: str
    """The convention of the plan's compute levels (the only one they are iso under)."""
    n_rows: int
    """Rungs of the Approach 3 fits."""
    levels: int
    """Compute levels of Approach 2 (0: the design has none; Approach 3 only)."""
    compute_range: dict[str, tuple[float, float]]
    """Per C column, the smallest and largest C of the Approach 3 rungs."""
    n_boot: int
    seed: int
    level: float
    notes: tuple[str, ...] = ()

    def cell(self, n_def: str, c_def: str, method: str = APPROACH3) -> ConventionCell:
        for c in self.cells:
            if (c.n_def, c.c_def, c.method) == (n_def, c_def, method):
                return c
        raise KeyError((n_def, c_def, method))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (``fits/summary.json``'s ``conventions``)."""
        return {
            "cells": [c.to_dict() for c in self.cells],
            "plan_convention": self.plan_convention,
            "n_rows": self.n_rows,
            "levels": self.levels,
            "compute_range": {k: list(v) for k, v in self.compute_range.items()},
            "n_boot": self.n_boot,
            "seed": self.seed,
            "level": self.level,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConventionTable:
        return cls(
            cells=tuple(ConventionCell.from_dict(c) for c in data.get("cells", ())),
            plan_convention=str(data.get("plan_convention", "")),
            n_rows=int(data.get("n_rows", 0)),
            levels=int(data.get("levels", 0)),
            compute_range={k: tuple(v) for k, v in (data.get("compute_range") or {}).items()},
            n_boot=int(data.get("n_boot", 0)),
            seed=int(data.get("seed", 0)),
            level=float(data.get("level", 0.95)),
            notes=tuple(data.get("notes", ())),
        )


@dataclasses.dataclass(frozen=True, eq=False)
class PerTokenCount:
    """The study's training FLOPs per token under the Appendix F count as a function of N,
    ``f(N) = C_chinchilla / D`` (Hoffmann et al. 2022, Appendix F: it depends on the model's
    shape, not on D). Between the sampled sizes ``log f`` is interpolated linearly in
    ``log N``; beyond them it continues from the end sizes with the least-squares slope of
    ``log f`` on ``log N`` over every size (steadier than an end segment, where the size dial
    may switch depth)."""

    log_n: np.ndarray
    """Distinct sampled sizes, ``log N`` ascending, ``[S]``."""
    log_f: np.ndarray
    """``log f`` at those sizes (the mean over rungs of one size), ``[S]``."""
    slope: float
    """d log f / d log N used beyond the sampled sizes."""

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]], n_key: str) -> PerTokenCount:
        pairs = [(r.get(n_key), r.get("C_chinchilla"), r.get("D")) for r in rows]
        if any(not (_positive(n) and _positive(c) and _positive(d)) for n, c, d in pairs):
            raise UserError(f"the Appendix F count needs C_chinchilla, D and {n_key} on every rung")
        ln = np.round(np.log([float(p[0]) for p in pairs]), 9)
        lf = np.log([float(c) / float(d) for _, c, d in pairs])
        sizes = np.unique(ln)
        if sizes.size < 2:
            raise UserError("the Appendix F count per token needs 2 or more model sizes")
        mean_f = np.array([lf[ln == s].mean() for s in sizes])
        slope = float(np.polyfit(sizes, mean_f, 1)[0])
        return cls(log_n=sizes, log_f=mean_f, slope=slope)

    def __call__(self, log_n: Any) -> np.ndarray:
        x = np.asarray(log_n, dtype=np.float64)
        y = np.interp(x, self.log_n, self.log_f)
        y = np.where(x < self.log_n[0], self.log_f[0] + self.slope * (x - self.log_n[0]), y)
        return np.where(x > self.log_n[-1], self.log_f[-1] + self.slope * (x - self.log_n[-1]), y)


def optimal_log_n(
    params: Mapping[str, Any], log_c: np.ndarray, per_token: PerTokenCount
) -> np.ndarray:
    """``log N_opt`` minimising ``A/N^alpha + B/D^beta`` subject to ``f(N) D = C``, for each
    law in ``params`` (arrays ``[R]``: bootstrap samples, or scalars) at each ``log C`` in
    ``log_c`` ``[K]``; returns ``[R, K]`` (nan where the optimum lies beyond
    :data:`SEARCH_DECADES` of the sampled sizes). E does not move the optimum.

    The constraint substitutes ``D = C / f(N)`` (Hoffmann et al. 2022, Sec. 3.3, with their
    ``FLOPs(N, D) = C`` taken as the Appendix F count); the reducible loss is minimised over
    a grid in ``log N`` (:data:`SEARCH_POINTS`), refined by the vertex of a parabola through
    the best grid point and its neighbours. The reducible loss, ``LSE(log A - alpha log N,
    log B - beta log D)``, is unimodal in ``log N`` while ``f`` grows with N."""
    la, lb, al, be = (
        np.atleast_1d(np.asarray(v, dtype=np.float64))[:, None]
        for v in (np.log(params["A"]), np.log(params["B"]), params["alpha"], params["beta"])
    )
    span = SEARCH_DECADES * math.log(10.0)
    grid = np.linspace(per_token.log_n[0] - span, per_token.log_n[-1] + span, SEARCH_POINTS)
    step = grid[1] - grid[0]
    log_f = per_token(grid)
    r = np.arange(la.shape[0])
    out = np.full((la.shape[0], len(log_c)), np.nan)
    with np.errstate(all="ignore"):
        for k, lc in enumerate(np.asarray(log_c, dtype=np.float64)):
            y = np.logaddexp(la - al * grid, lb - be * (lc - log_f))  # [R, G]
            j = np.argmin(np.where(np.isfinite(y), y, np.inf), axis=1)
            jj = np.clip(j, 1, grid.size - 2)
            y0, y1, y2 = y[r, jj - 1], y[r, jj], y[r, jj + 1]
            curv = y0 - 2 * y1 + y2
            shift = np.where(curv > 0, 0.5 * (y0 - y2) / curv, 0.0)
            inside = (j > 0) & (j < grid.size - 1) & np.isfinite(y1)
            out[:, k] = np.where(inside, grid[jj] + np.clip(shift, -1, 1) * step, np.nan)
    return out


def local_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope of each row of ``y`` ``[R, K]`` on ``x`` ``[K]`` (nan rows stay
    nan): the local log-log exponent across the range of ``x``."""
    xc = np.asarray(x, dtype=np.float64) - np.mean(x)
    y = np.asarray(y, dtype=np.float64)
    return ((y - y.mean(axis=1, keepdims=True)) @ xc) / float(xc @ xc)


def allocation_by_convention(
    rows: Sequence[Mapping[str, Any]],
    *,
    approach3_rows: Sequence[Mapping[str, Any]] | None = None,
    loss: str = "final_val_loss",
    plan_convention: str = "6n_kaplan",
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    grid: Any = None,
) -> ConventionTable:
    """The compute-optimal exponents a, b under N in {non-embedding, total} x C in {6 N D,
    Appendix F}, by Approach 3 and (when every run has a compute level ``budget``) Approach 2.

    ``rows`` are results rows (``Study.result_rows()``: ``N``, ``N_total``, ``D``,
    ``C_6n_kaplan``, ``C_6n_total``, ``C_chinchilla``, ``budget`` and ``loss``) of the rungs
    to fit; Approach 3 uses ``approach3_rows`` when given (a frontier band's subset) and
    Approach 2 every row. ``n_boot`` resamples of runs (within each compute level for
    Approach 2), seeded by ``seed``, give ``level`` percentile intervals (none below 2).
    ``grid`` is Approach 3's start grid (None: variable projection). A cell that cannot be
    fitted records why (``error``); the others are unaffected. See the module docstring for
    the formulas and their sources."""
    rows = [r for r in rows if _positive(r.get(loss))]
    a3 = rows if approach3_rows is None else [r for r in approach3_rows if _positive(r.get(loss))]
    cells: list[ConventionCell] = []
    for n_def in N_DEFS:
        cells += _approach3_cells(a3, n_def, loss, n_boot, seed, level, grid)
    budgets = [r.get("budget") for r in rows]
    levels = len(set(budgets)) if rows and all(_positive(b) for b in budgets) else 0
    if levels:
        for n_def in N_DEFS:
            cells += _approach2_cells(rows, n_def, loss, plan_convention, n_boot, seed, level)
    cols = sorted(set(C_COLUMNS.values()))
    ranges = {c: (min(v), max(v)) for c in cols if (v := _column(a3, c))}
    return ConventionTable(
        cells=tuple(cells),
        plan_convention=plan_convention,
        n_rows=len(a3),
        levels=levels,
        compute_range=ranges,
        n_boot=n_boot,
        seed=seed,
        level=level,
        notes=tuple(_notes(levels, plan_convention, ranges)),
    )


def _notes(levels: int, plan_convention: str, ranges: Mapping[str, tuple[float, float]]) -> list:
    out = [
        "Approach 3 fits L(N, D) once per N definition; under C = 6 N D a = β/(α+β) and "
        "b = α/(α+β) (Hoffmann et al. 2022, eq. 4). Under the Appendix F count C = f(N)·D, "
        "f the rungs' FLOPs per token, is not a power law of N·D: N_opt(C) is solved "
        "numerically and a, b are local log-log slopes"
        + (
            f" over C = {ranges['C_chinchilla'][0]:.3g} to {ranges['C_chinchilla'][1]:.3g} "
            "(the fitted rungs' range)."
            if "C_chinchilla" in ranges
            else " over the fitted rungs' compute range."
        )
    ]
    if levels:
        out.append(
            f"Approach 2's {levels} compute levels are iso only under {plan_convention} (the "
            "plan's convention): its vertices are that convention's optima, and under the "
            "other counts each is placed at its own C, so those rows trace the "
            f"{plan_convention} frontier in another unit of compute, not that count's own "
            "optimum (Approach 3's rows give that)."
        )
    else:
        out.append("No compute levels in this design: Approach 3 only.")
    return out


def _approach3_cells(
    rows: Sequence[Mapping[str, Any]],
    n_def: str,
    loss: str,
    n_boot: int,
    seed: int,
    level: float,
    grid: Any,
) -> list[ConventionCell]:
    """The two Approach 3 cells of ``n_def``: one law L(N, D), allocated under 6 N D
    (closed form) and under the Appendix F count (numerically)."""
    how6 = "a = β/(α+β), b = α/(α+β)"
    how_f = f"local slope of the numerical N_opt(C), {SLOPE_POINTS} points over the rungs' C"
    try:
        fit, boot = _fit_law(rows, N_DEFS[n_def], loss, n_boot, seed, level, grid)
    except FAILURES as exc:
        return [
            ConventionCell(n_def=n_def, c_def=c, method=APPROACH3, how=h, error=_reason(exc))
            for c, h in ((SIX_ND, how6), (APPENDIX_F, how_f))
        ]
    a, b = fit.exponents
    ivs = getattr(boot, "intervals", {}) if boot is not None else {}
    six = ConventionCell(
        n_def=n_def,
        c_def=SIX_ND,
        method=APPROACH3,
        how=how6,
        a=float(a),
        b=float(b),
        a_interval=_pair(ivs.get("a")),
        b_interval=_pair(ivs.get("b")),
        resamples=boot.n_ok if boot is not None else 0,
    )
    try:
        full = _numeric_cell(rows, fit, boot, n_def, level, how_f)
    except FAILURES as exc:
        full = ConventionCell(
            n_def=n_def, c_def=APPENDIX_F, method=APPROACH3, how=how_f, error=_reason(exc)
        )
    return [six, full]


def _fit_law(
    rows: Sequence[Mapping[str, Any]],
    n_key: str,
    loss: str,
    n_boot: int,
    seed: int,
    level: float,
    grid: Any,
) -> tuple[Any, Any]:
    """Approach 3 with N from ``n_key`` and a bootstrap of runs; raises when the law has no
    finite compute-optimal allocation (an exponent <= 0)."""
    from scalelab.laws import bootstrap, fit_chinchilla

    table = _law_table(rows, n_key, loss)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the main fit records the law's own warnings
        fit = fit_chinchilla(table, grid=grid)
        if not (fit.alpha > 0 and fit.beta > 0):
            raise UserError(
                f"no finite optimum: alpha={fit.alpha:.3g}, beta={fit.beta:.3g} (both must be > 0)"
            )
        boot = None
        if n_boot >= 2:
            try:
                boot = bootstrap(table, fit, n=n_boot, seed=seed, level=level)
            except FAILURES:  # no intervals (resamples = 0) rather than no exponents
                boot = None
    return fit, boot


def _numeric_cell(
    rows: Sequence[Mapping[str, Any]],
    fit: Any,
    boot: Any,
    n_def: str,
    level: float,
    how: str,
) -> ConventionCell:
    """The Approach 3 cell under the Appendix F count: local slopes of N_opt(C) and D_opt(C)
    over the rungs' range of C_chinchilla, for the fit and for each bootstrap sample."""
    from scalelab.laws.fits import interval_from_samples

    per_token = PerTokenCount.from_rows(rows, N_DEFS[n_def])
    cs = _column(rows, "C_chinchilla")
    if len(cs) < len(rows) or not max(cs) > min(cs) * (1 + 1e-9):
        raise UserError("the rungs span one Appendix F compute value: no slope")
    log_c = np.linspace(math.log(min(cs)), math.log(max(cs)), SLOPE_POINTS)

    def exponents(params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        log_n = optimal_log_n(params, log_c, per_token)  # [R, K]
        return local_slope(log_c, log_n), local_slope(log_c, log_c - per_token(log_n))

    a, b = (float(v[0]) for v in exponents(fit.params))
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UserError(f"N_opt lies more than {SEARCH_DECADES:g} decades beyond the sampled sizes")
    cell = {"a": a, "b": b}
    samples = {k: np.asarray(v) for k, v in getattr(boot, "samples", {}).items()}
    if boot is not None and all(k in samples for k in ("A", "B", "alpha", "beta")):
        sa, sb = exponents(samples)
        cell["a_interval"] = _pair(interval_from_samples(sa, a, level))
        cell["b_interval"] = _pair(interval_from_samples(sb, b, level))
        cell["resamples"] = int(np.sum(np.isfinite(sa) & np.isfinite(sb)))
    return ConventionCell(n_def=n_def, c_def=APPENDIX_F, method=APPROACH3, how=how, **cell)


def _approach2_cells(
    rows: Sequence[Mapping[str, Any]],
    n_def: str,
    loss: str,
    plan_convention: str,
    n_boot: int,
    seed: int,
    level: float,
) -> list[ConventionCell]:
    """The two Approach 2 cells of ``n_def``: IsoFLOP vertices regressed on 6 N D and on the
    Appendix F count at each vertex; intervals from resampling runs within each level."""
    from scalelab.laws.fits import interval_from_samples

    how = f"IsoFLOP vertices (levels iso under {plan_convention}) regressed on this C"
    n_key = N_DEFS[n_def]
    try:
        per_token: PerTokenCount | str = PerTokenCount.from_rows(rows, n_key)
    except FAILURES as exc:
        per_token = _reason(exc)
    try:
        table = _law_table(rows, n_key, loss, budget=True)
        est = _isoflop_exponents(table, per_token)
    except FAILURES as exc:
        return [
            ConventionCell(n_def=n_def, c_def=c, method=APPROACH2, how=how, error=_reason(exc))
            for c in C_DEFS
        ]
    draws = _level_bootstrap(table, per_token, n_boot, seed) if n_boot >= 2 else {}
    cells = []
    for c_def in C_DEFS:
        got = est[c_def]
        if isinstance(got, str):
            cells.append(
                ConventionCell(n_def=n_def, c_def=c_def, method=APPROACH2, how=how, error=got)
            )
            continue
        kw: dict[str, Any] = {"a": got[0], "b": got[1]}
        if len(draws.get(c_def, ())) >= 2:
            arr = np.array(draws[c_def])  # [R, 2]
            kw["a_interval"] = _pair(interval_from_samples(arr[:, 0], got[0], level))
            kw["b_interval"] = _pair(interval_from_samples(arr[:, 1], got[1], level))
            kw["resamples"] = len(arr)
        cells.append(ConventionCell(n_def=n_def, c_def=c_def, method=APPROACH2, how=how, **kw))
    return cells


def _isoflop_exponents(
    table: Any, per_token: PerTokenCount | str
) -> dict[str, tuple[float, float] | str]:
    """Approach 2's (a, b) per C definition: the used parabola vertices' N_opt and D_opt
    (D read off the level's runs at N_opt: ``fit_isoflop`` without a convention) regressed in
    log-log on ``6 N_opt D_opt`` and on ``f(N_opt) D_opt``; a string says why a C has none."""
    from scalelab.laws import fit_isoflop
    from scalelab.laws.powerlaw import fit_loglog

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the main fit records the profiles' own warnings
        iso = fit_isoflop(table, budget="budget")
    used = [p for p in iso.profiles if p.used]
    n_opt = np.array([p.n_opt for p in used])
    d_opt = np.array([p.d_opt for p in used])
    out: dict[str, tuple[float, float] | str] = {}
    for c_def in C_DEFS:
        if c_def == APPENDIX_F and isinstance(per_token, str):
            out[c_def] = per_token
            continue
        if c_def == SIX_ND:
            c = 6.0 * n_opt * d_opt
        else:
            c = np.exp(per_token(np.log(n_opt))) * d_opt  # type: ignore[operator]
        out[c_def] = (fit_loglog(c, n_opt).exponent, fit_loglog(c, d_opt).exponent)
    return out


def _level_bootstrap(
    table: Any, per_token: PerTokenCount | str, n: int, seed: int
) -> dict[str, list[tuple[float, float]]]:
    """Approach 2 refitted on ``n`` resamples of runs drawn within each compute level (an
    IsoFLOP design fixes the levels; a resample keeps each level's number of runs);
    resamples that leave fewer than 2 bracketed levels are dropped."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(table.extra["budget"], dtype=np.float64)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    draws: dict[str, list[tuple[float, float]]] = {c: [] for c in C_DEFS}
    for _ in range(n):
        idx = np.concatenate([rng.choice(g, size=g.size) for g in groups])
        try:
            est = _isoflop_exponents(table.subset(idx), per_token)
        except FAILURES:
            continue
        for c_def, got in est.items():
            if not isinstance(got, str) and all(map(math.isfinite, got)):
                draws[c_def].append(got)
    return draws


def _law_table(
    rows: Sequence[Mapping[str, Any]], n_key: str, loss: str, *, budget: bool = False
) -> Any:
    from scalelab.laws import load_table

    missing = [str(r.get("rung", i)) for i, r in enumerate(rows) if not _positive(r.get(n_key))]
    if missing:
        raise UserError(f"no {n_key} for rung(s) {', '.join(missing[:3])}")
    cols: dict[str, list[Any]] = {
        "N": [float(r[n_key]) for r in rows],
        "D": [r.get("D") for r in rows],
        "loss": [r[loss] for r in rows],
    }
    if budget:
        cols["budget"] = [float(r["budget"]) for r in rows]
    return load_table(
        cols,
        n="N",
        d="D",
        loss="loss",
        extra=["budget"] if budget else (),
        flops_convention="none",
        name=f"results ({n_key})",
    )


def _column(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if _positive(r.get(key))]


def _positive(value: Any) -> bool:
    try:
        return (
            value is not None and value != "" and math.isfinite(float(value)) and float(value) > 0
        )
    except (TypeError, ValueError):
        return False


def _pair(iv: Any) -> tuple[float, float] | None:
    if iv is None or not (math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return None
    return (float(iv.lo), float(iv.hi))


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
