"""Calibrated intervals: a cluster bootstrap by compute level plus model-form error measured
by rolling-origin cross-validation.

A scaling law is used to extrapolate. Its error there has three parts, and an interval
that covers what it claims must carry all three:

- **parameter uncertainty**: refit on resamples of the data. Runs of one compute level
  share a training setup and are not independent draws, so whole *levels* are resampled
  (a cluster bootstrap; Davison & Hinkley 1997, sec. 3.8), not single runs.
- **run-to-run noise**: a new run scatters around the law as the fitted ones did; its
  standard deviation is the residual RMS with ``n - k`` degrees of freedom.
- **model-form error**: the law's form is not the truth, and its error grows with the
  distance of the extrapolation. It is measured the way it is used (rolling-origin
  evaluation, Tashman 2000): fit on the smallest ``j`` levels, predict each larger level,
  for every cut ``j``. Each (cut, level) pair gives a mean log error ``e`` at a distance
  ``d`` in decades of compute beyond the cut's largest level. The form error is modelled as
  growing linearly with distance, ``sd_form(d) = s * d``, with ``s = sqrt(mean(e^2/d^2))``.

The prediction interval for a new run at distance ``d`` is then Gaussian in log-loss:
``log L_hat +/- z sqrt(sd_param^2 + sd_noise^2 + (s d)^2)`` (the confidence interval of the
law leaves out the noise term). The method and its settings (levels resampled, all later
levels predicted at each of the last ``max_cuts`` cuts, no bias correction) were chosen on
the published IsoFLOP sweeps with their two largest budgets removed, predicting the next
two; ``bench/laws_calibration.py`` then reports them on the two largest budgets, unseen
during the design.

The same rolled-forward cuts give a model-form spread for derived quantities (the
allocation exponent ``a``, ``N_opt`` and ``D_opt`` at a budget): the RMS difference between
the fits on the later cuts and the full fit, added in quadrature to the bootstrap interval.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit
from scalelab.laws.results import Allocation, Interval, Result, check_level, register
from scalelab.laws.table import RunTable


@register("rolling_point")
@dataclasses.dataclass(frozen=True)
class RollingPoint(Result):
    """One rolled-forward prediction: a cut's fit predicting one larger compute level."""

    kind: ClassVar[str] = "rolling_point"
    train_levels: int
    """Compute levels the cut's fit saw (the smallest ones)."""
    cut: float
    """Compute of the cut's largest training level (median C of its runs)."""
    level: float
    """Compute of the predicted level (median C of its runs)."""
    distance: float
    """log10(level / cut): decades of extrapolation."""
    n: int
    """Runs at the predicted level."""
    mean_log_error: float
    """Mean over its runs of log(predicted) - log(observed)."""
    mean_abs_rel_error: float
    noise_sd: float = math.nan
    """The cut's own residual RMS (n - k degrees of freedom)."""
    covered: float = math.nan
    """Fraction of the level's runs inside the cut's nested prediction interval (noise and
    form error estimated from earlier cuts only; NaN when no earlier cut predicted within
    the cut's own levels)."""


@register("calibration")
@dataclasses.dataclass(frozen=True)
class Calibration(Result):
    """Rolling-origin model-form error of a law on one table, and what derives from it."""

    kind: ClassVar[str] = "calibration"
    form_sd_per_decade: float
    """s: the model-form log-error standard deviation per decade of extrapolation."""
    bias_per_decade: float
    """mean(e / d): the drift of the rolled-forward errors (reported, not corrected)."""
    noise_sd: float
    """Residual RMS of the full fit (n - k degrees of freedom)."""
    n_levels: int
    levels: tuple[float, ...]
    """Median C of each compute level, ascending."""
    level_source: str
    """How levels were found: the group column, or clusters of C."""
    points: tuple[RollingPoint, ...]
    cut_params: tuple[dict[str, float], ...] = ()
    """Published parameters of each cut's fit (ascending cuts)."""
    cut_thetas: tuple[tuple[float, ...], ...] = ()
    cut_levels: tuple[int, ...] = ()
    level: float = 0.95
    failures: tuple[str, ...] = ()
    top_nd: float = math.nan
    """Median N*D of the largest level's runs: distances of points given as N and D when the
    law has no C = k N D convention (a study under the Appendix F count)."""

    @property
    def top_level(self) -> float:
        return self.levels[-1]

    def coverage(self) -> float:
        """Mean nested coverage over the rolled-forward points that have one (NaN if none)."""
        cov = [p.covered for p in self.points if math.isfinite(p.covered)]
        return float(np.mean(cov)) if cov else math.nan

    def summary(self) -> str:
        lines = [
            f"rolling-origin validation: {len(self.cut_levels)} cuts over {self.n_levels} "
            f"compute levels ({self.level_source})",
            f"  {'train':>5} {'cut C':>10} {'level C':>10} {'decades':>8} {'runs':>5} "
            f"{'mean err':>9} {'mean|err|':>10} {'covered':>8}",
        ]
        for p in self.points:
            cov = f"{p.covered:.0%}" if math.isfinite(p.covered) else "-"
            lines.append(
                f"  {p.train_levels:>5d} {p.cut:>10.3g} {p.level:>10.3g} {p.distance:>8.2f} "
                f"{p.n:>5d} {math.expm1(p.mean_log_error):>+9.2%} "
                f"{p.mean_abs_rel_error:>10.2%} {cov:>8}"
            )
        cov = self.coverage()
        lines.append(
            f"  model-form error {self.form_sd_per_decade:.4f} per decade (drift "
            f"{self.bias_per_decade:+.4f}/decade, not corrected), run noise {self.noise_sd:.4f}"
        )
        if math.isfinite(cov):
            lines.append(
                f"  nested {self.level:.0%} prediction intervals (noise + form error from "
                f"earlier cuts) covered {cov:.0%} of the rolled-forward runs"
            )
        lines.extend(f"  failed: {f}" for f in self.failures)
        return "\n".join(lines)


def compute_levels(table: RunTable, by: str = "auto") -> tuple[np.ndarray, np.ndarray, str]:
    """``(label per run, median C per level ascending, how)``: levels from a numeric group
    column (a budget column) when ``by`` is "auto" or "group", else runs snapped to nominal
    budgets by :func:`~scalelab.laws.isoflop.budget_groups` (log-C gaps)."""
    if table.C is None:
        raise UserError(f"{table.source}: compute levels need C (or N and D with a convention)")
    if by not in ("auto", "group", "C"):
        raise UserError(f"levels 'by' must be auto, group or C, got {by!r}")
    values = None
    if by != "C" and table.group is not None:
        try:
            values = np.array([float(g) for g in table.group])
        except ValueError:
            if by == "group":
                raise UserError(f"{table.source}: the group column is not numeric") from None
    if values is not None:
        uniq, labels = np.unique(values, return_inverse=True)
        how = "the group column's values"
    else:  # snapped to nominal budgets as Approach 2 does
        from scalelab.laws.isoflop import BUDGET_RTOL, budget_groups

        labels, _ = budget_groups(table)
        how = f"C snapped to budgets within {1 + BUDGET_RTOL:g}x"
        uniq = np.unique(labels)
    med = np.array([np.median(table.C[labels == i]) for i in range(len(uniq))])
    order = np.argsort(med)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return rank[labels], med[order], how


def refitter(fit: LawFit) -> Callable[[RunTable], LawFit]:
    """A function refitting ``fit``'s law with its settings on another table."""
    if fit.form == "chinchilla":
        from scalelab.laws.chinchilla import fit_chinchilla

        return lambda t: fit_chinchilla(t, delta=fit.delta)
    from scalelab.laws.fits import fit_form

    law = fit.law
    return lambda t: fit_form(law, t, delta=fit.delta)


def noise_sd(fit: LawFit) -> float:
    """Residual RMS of a fit with ``n - k`` degrees of freedom (0 when n <= k)."""
    r = np.asarray(fit.residuals, dtype=np.float64)
    dof = r.size - len(fit.theta)
    return float(math.sqrt(np.sum(r**2) / dof)) if dof > 0 else 0.0


def form_error(pairs: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """``(s, drift)`` from (distance, mean log error) pairs with distance > 0."""
    d = np.array([p[0] for p in pairs if p[0] > 0])
    e = np.array([p[1] for p in pairs if p[0] > 0])
    if d.size == 0:
        return math.nan, math.nan
    return float(np.sqrt(np.mean((e / d) ** 2))), float(np.mean(e / d))


def rolling_origin(
    table: RunTable,
    fit: LawFit,
    *,
    refit: Callable[[RunTable], LawFit] | None = None,
    min_train_levels: int = 2,
    max_cuts: int = 8,
    by: str = "auto",
    level: float = 0.95,
) -> Calibration:
    """Fit on the smallest ``j`` compute levels, predict every larger one, for the last
    ``max_cuts`` cuts ``j >= min_train_levels``; the model-form error from all of them.

    ``table`` holds the points ``fit`` was fitted on (its outlier rule is reapplied by the
    refits only when given in ``refit``). Each cut's runs also get a nested coverage: the
    prediction interval built from the cut's own noise and the form error of earlier
    cuts' predictions *within* the cut's training levels.
    """
    check_level(level)
    labels, levels, how = compute_levels(table, by)
    k = len(levels)
    if k < min_train_levels + 1:
        raise UserError(
            f"{table.source}: rolling-origin validation needs at least {min_train_levels + 1} "
            f"compute levels, found {k}"
        )
    refit = refit or refitter(fit)
    cuts = list(range(max(min_train_levels, k - max_cuts), k))
    z = _z(level)
    points: list[RollingPoint] = []
    pairs_by_target: list[tuple[int, int, float, float]] = []  # (cut j, level L, d, e)
    params, thetas, used, failures = [], [], [], []
    for j in cuts:
        train = table.subset(np.flatnonzero(labels < j))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                f = refit(train)
        except (UserError, ArithmeticError, np.linalg.LinAlgError) as exc:
            failures.append(f"{j} levels: {exc}")
            continue
        params.append(dict(f.params))
        thetas.append(tuple(f.theta))
        used.append(j)
        earlier = [(d, e) for (jj, ll, d, e) in pairs_by_target if ll < j]
        s_prev, _ = form_error(earlier)
        for lv in range(j, k):
            point = _rolled_point(f, table, labels, levels, j, lv, s_prev, z)
            pairs_by_target.append((j, lv, point.distance, point.mean_log_error))
            points.append(point)
    if not points:
        raise UserError(f"{table.source}: no rolling-origin fit succeeded ({'; '.join(failures)})")
    s, drift = form_error([(d, e) for (_, _, d, e) in pairs_by_target])
    return Calibration(
        form_sd_per_decade=s,
        bias_per_decade=drift,
        noise_sd=noise_sd(fit),
        n_levels=k,
        levels=tuple(float(v) for v in levels),
        level_source=how,
        points=tuple(points),
        cut_params=tuple(params),
        cut_thetas=tuple(thetas),
        cut_levels=tuple(used),
        level=level,
        failures=tuple(failures),
        top_nd=_top_nd(table, labels),
    )


def _top_nd(table: RunTable, labels: np.ndarray) -> float:
    if table.N is None or table.D is None:
        return math.nan
    top = labels == labels.max()
    return float(np.median(np.asarray(table.N)[top] * np.asarray(table.D)[top]))


def _rolled_point(
    f: LawFit,
    table: RunTable,
    labels: np.ndarray,
    levels: np.ndarray,
    j: int,
    lv: int,
    s_prev: float,
    z: float,
) -> RollingPoint:
    """Cut ``j``'s fit ``f`` predicting level ``lv``; its nested coverage uses the form error
    ``s_prev`` of earlier cuts (NaN: none)."""
    test = table.subset(np.flatnonzero(labels == lv))
    err = np.log(f.predict(**_inputs(f, test))) - np.log(test.loss)
    sd_n = noise_sd(f)
    covered = math.nan
    if math.isfinite(s_prev):
        run_d = np.maximum(np.log10(np.asarray(test.C) / levels[j - 1]), 0.0)
        sd = np.sqrt(sd_n**2 + (s_prev * run_d) ** 2)
        covered = float(np.mean(np.abs(err) <= z * sd))
    return RollingPoint(
        train_levels=j,
        cut=float(levels[j - 1]),
        level=float(levels[lv]),
        distance=math.log10(levels[lv] / levels[j - 1]),
        n=len(test),
        mean_log_error=float(np.mean(err)),
        mean_abs_rel_error=float(np.mean(np.abs(np.expm1(err)))),
        noise_sd=sd_n,
        covered=covered,
    )


def _inputs(fit: LawFit, table: RunTable) -> dict[str, np.ndarray]:
    return {v: getattr(table, v) for v in fit.variables if v in ("N", "D", "C", "U")}


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def level_table(table: RunTable, by: str = "auto") -> RunTable:
    """``table`` with its compute level as the group column (for a cluster bootstrap)."""
    labels, levels, _ = compute_levels(table, by)
    names = np.array([f"{levels[i]:.6g}" for i in labels], dtype=object)
    return dataclasses.replace(table, group=names, columns={**table.columns, "group": "C level"})


def calibrated_bootstrap(
    table: RunTable,
    fit: LawFit,
    *,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    by: str = "auto",
    min_train_levels: int = 2,
    max_cuts: int = 8,
    compute: Sequence[float] | None = None,
    refit: Callable[[RunTable], LawFit] | None = None,
) -> Any:
    """A :class:`~scalelab.laws.bootstrap.BootstrapResult` resampling whole compute levels,
    carrying the rolling-origin :class:`Calibration` (so prediction intervals include
    model-form error). ``table`` is the table ``fit`` was fitted on; ``refit`` fits the law
    on a cut (default: the fit's own form and settings)."""
    from scalelab.laws.bootstrap import _base_table, bootstrap

    base, _ = _base_table(table, fit)
    cal = rolling_origin(
        base,
        fit,
        refit=refit,
        min_train_levels=min_train_levels,
        max_cuts=max_cuts,
        by=by,
        level=level,
    )
    boot = bootstrap(level_table(table, by), fit, n=n, seed=seed, level=level)
    boot = dataclasses.replace(boot, calibration=cal, seconds=boot.seconds)
    if compute is not None:
        boot = dataclasses.replace(
            boot, allocation=calibrated_allocation(fit.with_bootstrap(boot), compute, level=level)
        )
    return boot


def distance_of(fit: LawFit, cal: Calibration, data: dict[str, np.ndarray]) -> np.ndarray:
    """Decades of compute beyond the fit's largest compute level, per point (>= 0)."""
    if "C" in data:
        c = np.asarray(data["C"], dtype=np.float64)
    elif "N" in data and "D" in data:
        nd = np.asarray(data["N"]) * np.asarray(data["D"])
        if fit.flops_per_nd is None:  # C is not k N D: decades of N D (same as of C for 6ND)
            return np.maximum(np.log10(nd / cal.top_nd), 0.0) if cal.top_nd > 0 else 0 * nd
        c = fit.flops_per_nd * nd
    else:
        return np.zeros(len(next(iter(data.values()))))
    return np.maximum(np.log10(c / cal.top_level), 0.0)


def calibrated_prediction(
    fit: LawFit, data: dict[str, np.ndarray], level: float
) -> dict[str, np.ndarray]:
    """Estimate, confidence and prediction intervals with parameter, noise and model-form
    terms (the fit's bootstrap must carry a :class:`Calibration`)."""
    boot = fit.bootstrap
    cal = getattr(boot, "calibration", None)
    if not isinstance(cal, Calibration):
        raise UserError("calibrated intervals need a calibrated bootstrap (--validate rolling)")
    check_level(level)
    z = _z(level)
    est_lp, _ = fit.law.log_pred(np.asarray(fit.theta)[None, :], data)
    est_lp = est_lp[0]
    lp, _ = fit.law.log_pred(np.asarray(boot.theta_samples), data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sd_param = np.nanstd(lp, axis=0)
    d = distance_of(fit, cal, data)
    sd_form = cal.form_sd_per_decade * d if math.isfinite(cal.form_sd_per_decade) else 0 * d
    sd_ci = np.sqrt(sd_param**2 + sd_form**2)
    sd_pi = np.sqrt(sd_ci**2 + cal.noise_sd**2)
    return {
        "estimate": np.exp(est_lp),
        "lo": np.exp(est_lp - z * sd_ci),
        "hi": np.exp(est_lp + z * sd_ci),
        "pred_lo": np.exp(est_lp - z * sd_pi),
        "pred_hi": np.exp(est_lp + z * sd_pi),
        "sd_param": sd_param,
        "sd_noise": np.full_like(est_lp, cal.noise_sd),
        "sd_form": sd_form,
        "distance": d,
    }


def later_cuts(cal: Calibration) -> list[int]:
    """Indices of the cuts that saw at least half of the levels (their spread around the full
    fit is the form spread of derived quantities)."""
    return [i for i, j in enumerate(cal.cut_levels) if j >= cal.n_levels / 2]


def widen(iv: Interval, spread: float, z: float, *, log: bool) -> Interval:
    """``iv`` with ``z * spread`` added in quadrature to each half-width (in log space if
    ``log``)."""
    if not (math.isfinite(spread) and spread > 0 and math.isfinite(iv.lo) and math.isfinite(iv.hi)):
        return iv
    if log and not (iv.lo > 0 and iv.estimate > 0):  # a bound at 0: no log-space half-width
        return iv
    f = math.log if log else (lambda v: v)
    g = math.exp if log else (lambda v: v)
    e = f(iv.estimate)
    lo = e - math.hypot(e - f(iv.lo), z * spread)
    hi = e + math.hypot(f(iv.hi) - e, z * spread)
    return dataclasses.replace(iv, lo=g(lo), hi=g(hi))


def calibrated_allocation(
    fit: LawFit, compute: float | Sequence[float], *, level: float = 0.95
) -> Allocation:
    """:meth:`LawFit.optimal` with every interval widened by the model-form spread of the
    later rolled-forward cuts (and the loss interval by the form error at its distance)."""
    alloc = fit.optimal(compute, level=level)
    cal = getattr(fit.bootstrap, "calibration", None)
    if not isinstance(cal, Calibration) or not alloc.intervals:
        return alloc
    z = _z(level)
    idx = later_cuts(cal)
    spreads: dict[str, list[float]] = {"n_opt": [], "d_opt": [], "tokens_per_param": []}
    for c_i, c in enumerate(alloc.compute):
        devs: dict[str, list[float]] = {key: [] for key in spreads}
        for i in idx:
            cut = dataclasses.replace(
                fit, theta=cal.cut_thetas[i], params=cal.cut_params[i], bootstrap=None
            )
            try:
                a = cut.optimal([c])
            except UserError:
                continue
            for key in devs:
                devs[key].append(math.log(getattr(a, key)[0] / getattr(alloc, key)[c_i]))
        for key in spreads:
            v = np.array(devs[key])
            spreads[key].append(float(np.sqrt(np.mean(v**2))) if v.size else math.nan)
    intervals = dict(alloc.intervals)
    for key, s in spreads.items():
        intervals[key] = tuple(widen(iv, sp, z, log=True) for iv, sp in zip(intervals[key], s))
    d = np.maximum(np.log10(np.asarray(alloc.compute) / cal.top_level), 0.0)
    intervals["loss"] = tuple(
        widen(iv, cal.form_sd_per_decade * di, z, log=True) for iv, di in zip(intervals["loss"], d)
    )
    return dataclasses.replace(alloc, intervals=intervals)


def calibrated_exponents(fit: LawFit, *, level: float = 0.95) -> dict[str, Interval]:
    """Bootstrap intervals of the Chinchilla allocation exponents ``a`` and ``b`` widened by
    their spread over the later rolled-forward cuts."""
    boot = fit.bootstrap
    cal = getattr(boot, "calibration", None)
    if fit.form != "chinchilla" or not isinstance(cal, Calibration):
        return {}
    z = _z(level)
    out = {}
    for key, num in (("a", "beta"), ("b", "alpha")):
        iv = boot.intervals.get(key)
        if iv is None:
            continue
        vals = [
            p[num] / (p["alpha"] + p["beta"]) for p in (cal.cut_params[i] for i in later_cuts(cal))
        ]
        spread = float(np.sqrt(np.mean((np.array(vals) - iv.estimate) ** 2))) if vals else math.nan
        out[key] = widen(iv, spread, z, log=False)
    return out


__all__ = [
    "Calibration",
    "RollingPoint",
    "calibrated_allocation",
    "calibrated_bootstrap",
    "calibrated_exponents",
    "calibrated_prediction",
    "compute_levels",
    "level_table",
    "rolling_origin",
]
