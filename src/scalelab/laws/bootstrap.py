"""Bootstrap uncertainty for any fit: resample runs (or clusters of runs), refit, take percentiles.

Two paths:

- **Batched warm start** (any parametric law, given as its full-data fit): a resample is
  a row of integer counts over the points, so all ``n`` resampled objectives are one
  ``[n, P]`` weight matrix. Every resample starts from the full-data optimum and from the
  next-best distinct optima that the full fit found (up to ``extra_starts`` of them), and
  all ``n x K`` starts run together in the batched L-BFGS. A resample's answer is its best
  start. On the 240 Chinchilla points 1,000 resamples take a few seconds, against minutes
  for a 4,500-start grid per resample; starting from the local optima of the full fit
  guards against a resample whose optimum moved to another basin.
- **Refit per resample** (any callable ``table -> result`` with a ``params`` mapping): the
  general path, for IsoFLOP and downstream fits.

Clusters: with ``group`` (a table column given to ``load_table(group=...)``), whole groups
are drawn with replacement (runs that share a model move together).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit, interval_from_samples, select_points
from scalelab.laws.optim import MAX_ITER, NOT_FINITE, batched_lbfgs, single_threaded_blas
from scalelab.laws.results import Allocation, Interval, Result, check_level, register
from scalelab.laws.table import RunTable


@register("bootstrap")
@dataclasses.dataclass(frozen=True)
class BootstrapResult(Result):
    """Bootstrap distribution of a fit's parameters and derived quantities."""

    kind: ClassVar[str] = "bootstrap"
    law_form: str
    n: int
    """Resamples drawn."""
    n_ok: int
    """Resamples whose refit converged (the intervals use only these)."""
    seed: int
    level: float
    group: str
    """How runs were resampled: 'runs' or 'clusters of <column>'."""
    n_clusters: int
    method: str
    samples: dict[str, tuple[float, ...]]
    """Per parameter (and derived quantity), the converged resamples' values."""
    intervals: dict[str, Interval]
    theta_names: tuple[str, ...] = ()
    theta_samples: tuple[tuple[float, ...], ...] = ()
    """Optimisation parameters per converged resample (parametric laws only)."""
    residuals: tuple[float, ...] = ()
    """Full-fit log-residuals (observed - predicted), drawn for prediction intervals."""
    allocation: Allocation | None = None
    seconds: float = math.nan
    calibration: Result | None = None
    """A :class:`~scalelab.laws.calibration.Calibration` (rolling-origin model-form error)
    when the bootstrap is calibrated: prediction intervals then include model-form error."""

    def check(self, where: str, path: str = "") -> None:
        """Every parameter's samples come from the same resamples: equal lengths."""
        lengths = {len(v) for v in self.samples.values()}
        if len(lengths) > 1:
            at = f"{where}: key '{path + '.' if path else ''}samples'"
            raise UserError(f"{at}: the parameters have different numbers of samples")

    def se(self, name: str) -> float:
        return self.intervals[name].se

    def summary(self) -> str:
        lines = [
            f"bootstrap ({self.method}): {self.n_ok}/{self.n} resamples converged, "
            f"resampling {self.group}, seed {self.seed}, {self.level:.0%} percentile intervals"
        ]
        for name, iv in self.intervals.items():
            lines.append(
                f"  {name:>16} = {iv.estimate:.6g}  [{iv.lo:.6g}, {iv.hi:.6g}]  se {iv.se:.4g}"
            )
        return "\n".join(lines)


def _with_group(table: RunTable, group: str | bool | None) -> RunTable:
    if group is None or group is True:
        return table
    if group is False:
        return dataclasses.replace(table, group=None)
    if group not in table.extra:
        raise UserError(
            f"{table.source}: no column '{group}' to cluster on (load it with extra=[...])"
        )
    labels = np.array([str(v) for v in table.extra[group]], dtype=object)
    return dataclasses.replace(table, group=labels, columns={**table.columns, "group": group})


def resample_counts(
    table: RunTable, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, str, int]:
    """``[n, P]`` integer counts: how often each point appears in each resample."""
    if table.group is None:
        idx = rng.integers(0, len(table), size=(n, len(table)))
        counts = np.zeros((n, len(table)))
        np.add.at(counts, (np.arange(n)[:, None], idx), 1.0)
        return counts, "runs", len(table)
    labels, inverse = np.unique(table.group.astype(str), return_inverse=True)
    g = labels.size
    if g < 2:
        raise UserError(f"{table.source}: cluster bootstrap needs at least 2 groups, found {g}")
    draws = rng.integers(0, g, size=(n, g))
    per_group = np.zeros((n, g))
    np.add.at(per_group, (np.arange(n)[:, None], draws), 1.0)
    name = table.columns.get("group", "group")
    return per_group[:, inverse], f"clusters of '{name}'", g


def bootstrap(
    table: RunTable,
    fit_fn: LawFit | Callable[[RunTable], Any],
    *,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    compute: Sequence[float] | None = None,
    group: str | bool | None = None,
    extra_starts: int = 4,
    max_iter: int = 500,
) -> BootstrapResult:
    """Percentile intervals for every parameter of a fit by resampling runs.

    ``fit_fn`` is a fitted :class:`LawFit` (fast batched path; the fit's own settings --
    delta, dropped rows, weights -- are reused) or any callable ``table -> result`` whose
    result has a ``params`` mapping (refit per resample). ``compute`` adds intervals for
    the compute-optimal allocation at those budgets. Clusters: ``group=None`` follows the
    table's ``group`` column (runs when it has none), ``False`` resamples single runs, and a
    name picks a column loaded with ``extra=[...]``. The same ``seed`` gives the same result.
    """
    table = _with_group(table, group)
    if n < 2:
        raise UserError(f"bootstrap needs at least 2 resamples, got {n}")
    check_level(level)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    if isinstance(fit_fn, LawFit):
        res = _batched(table, fit_fn, n, rng, level, extra_starts, max_iter)
    elif callable(fit_fn):
        res = _refit(table, fit_fn, n, rng, level)
    else:
        raise UserError("bootstrap needs a fitted law or a function table -> fit")
    res = dataclasses.replace(res, seed=seed, seconds=time.perf_counter() - t0)
    if compute is not None and isinstance(fit_fn, LawFit):
        alloc = fit_fn.with_bootstrap(res).optimal(compute, level=level)  # type: ignore[call-arg]
        res = dataclasses.replace(res, allocation=alloc)
    return res


def _base_table(table: RunTable, fit: LawFit) -> tuple[RunTable, np.ndarray | None]:
    """The points the fit used (its outliers dropped) and their normalised weights."""
    base = table.without_rows(fit.dropped_rows)
    base, _, w = select_points(base, fit.law, drop_highest=0)
    if len(base) != fit.n_points or tuple(int(r) for r in base.rows) != tuple(fit.rows):
        raise UserError(
            f"{table.source}: the table does not match the fit ({len(base)} points after "
            f"dropping the fit's outliers, the fit used {fit.n_points})"
        )
    return base, w


def batched_refit(
    table: RunTable,
    fit: LawFit,
    counts: np.ndarray,
    *,
    extra_starts: int = 4,
    max_iter: int = 500,
    starts: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refit ``fit`` under each row of ``counts`` (``[R, P]`` point multiplicities) at once.

    Starts (``[k, p]``) default to :func:`bootstrap_starts`: the fit's optimum and up to
    ``extra_starts`` rival optima. Returns ``(theta [R, p], ok [R])``.
    """
    form = fit.law
    base, w = _base_table(table, fit)
    n = counts.shape[0]
    weights = counts if w is None else counts * w[None, :]
    data = _fit_data(base, fit)
    obj = form.objective(data, np.log(base.loss), delta=fit.delta, weights=weights)
    if starts is None:
        starts = bootstrap_starts(fit, base, w, extra_starts)
    k = len(starts)
    x0 = np.tile(np.array(starts), (n, 1))  # [n*k, p], resample-major

    def fun(theta: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return obj(theta, rows // k)  # start row -> its resample's weight row

    lo, hi = form.bounds()
    with single_threaded_blas():
        out = batched_lbfgs(fun, x0, lower=lo, upper=hi, max_iter=max_iter, ftol=1e-12)
    f = out.f.reshape(n, k)
    best = np.argmin(np.where(np.isfinite(f), f, np.inf), axis=1)
    pick = np.arange(n) * k + best
    ok = np.isfinite(out.f[pick]) & ~np.isin(out.status[pick], (MAX_ITER, NOT_FINITE))
    return out.x[pick], ok


def _fit_data(base: RunTable, fit: LawFit) -> dict[str, np.ndarray]:
    return {v: getattr(base, v) for v in fit.law.variables}


# A local optimum of the full fit whose objective is more than this factor above the best
# cannot plausibly win a resample; starting resamples from it only costs iterations (the
# same 10% rule as the polish of the full fit, fits._polish_best).
RIVAL_RTOL = 0.1


def bootstrap_starts(
    fit: LawFit, base: RunTable, w: np.ndarray | None, extra_starts: int
) -> np.ndarray:
    """``[k, p]``: the full fit's optimum, then up to ``extra_starts`` runner-up optima within
    :data:`RIVAL_RTOL` of its objective (on the fit's points ``base``, weights ``w``)."""
    full = fit.law.objective(_fit_data(base, fit), np.log(base.loss), delta=fit.delta, weights=w)
    best = fit.objective
    out = [np.asarray(fit.theta, dtype=np.float64)]
    for opt in fit.diagnostics.local_optima[1 : 1 + extra_starts]:
        x = np.asarray(opt, dtype=np.float64)
        f, _ = full.single(x)
        if np.isfinite(f) and f <= best + RIVAL_RTOL * abs(best):
            out.append(x)
    return np.array(out)


def _batched(
    table: RunTable,
    fit: LawFit,
    n: int,
    rng: np.random.Generator,
    level: float,
    extra_starts: int,
    max_iter: int,
) -> BootstrapResult:
    base, w = _base_table(table, fit)
    counts, how, n_clusters = resample_counts(base, n, rng)
    starts = bootstrap_starts(fit, base, w, extra_starts)
    theta_all, ok = batched_refit(table, fit, counts, max_iter=max_iter, starts=starts)
    form = fit.law
    k = len(starts)
    # A resample whose optimum runs off to infinity (e.g. A = e^800) counts as failed.
    publics_all = [form.to_public(t) if good else None for t, good in zip(theta_all, ok)]
    ok = ok & np.array([p is not None and all(map(math.isfinite, p.values())) for p in publics_all])
    thetas = theta_all[ok]
    publics = [p for p, good in zip(publics_all, ok) if good]
    names = list(fit.params)
    samples = {name: np.array([p[name] for p in publics]) for name in names}
    estimates = dict(fit.params)
    if fit.form == "chinchilla":
        al, be = samples["alpha"], samples["beta"]
        samples["a"] = be / (al + be)
        samples["b"] = al / (al + be)
        s = fit.params["alpha"] + fit.params["beta"]
        estimates["a"] = fit.params["beta"] / s
        estimates["b"] = fit.params["alpha"] / s
    intervals = {
        name: interval_from_samples(samples[name], estimates[name], level) for name in samples
    }
    return BootstrapResult(
        law_form=fit.form,
        n=n,
        n_ok=int(ok.sum()),
        seed=0,
        level=level,
        group=how,
        n_clusters=n_clusters,
        method=f"batched warm start from {k} optima of the full fit",
        samples={name: tuple(v.tolist()) for name, v in samples.items()},
        intervals=intervals,
        theta_names=fit.theta_names,
        theta_samples=tuple(tuple(float(v) for v in t) for t in thetas),
        residuals=tuple((-np.asarray(fit.residuals)).tolist()),
    )


def _refit(
    table: RunTable,
    fit_fn: Callable[[RunTable], Any],
    n: int,
    rng: np.random.Generator,
    level: float,
) -> BootstrapResult:
    full = fit_fn(table)
    params = _params_of(full)
    counts, how, n_clusters = resample_counts(table, n, rng)
    draws: dict[str, list[float]] = {k: [] for k in params}
    n_ok = 0
    for r in range(n):
        idx = np.repeat(np.arange(len(table)), counts[r].astype(int))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # per-resample fit notes would flood the output
                res = fit_fn(table.subset(idx))
        except (UserError, ArithmeticError, np.linalg.LinAlgError):
            continue  # a degenerate resample (too few distinct sizes, a runaway optimum)
        diag = getattr(res, "diagnostics", None)
        if diag is not None and not getattr(diag, "converged", True):
            continue
        p = _params_of(res)
        if not all(math.isfinite(p.get(k, math.nan)) for k in draws):
            continue
        for k in draws:
            draws[k].append(p[k])
        n_ok += 1
    if n_ok < 2:
        raise UserError(f"bootstrap: only {n_ok} of {n} resamples could be fitted")
    samples = {k: np.array(v) for k, v in draws.items()}
    intervals = {k: interval_from_samples(samples[k], params[k], level) for k in samples}
    return BootstrapResult(
        law_form=str(getattr(full, "form", type(full).__name__)),
        n=n,
        n_ok=n_ok,
        seed=0,
        level=level,
        group=how,
        n_clusters=n_clusters,
        method="refit per resample",
        samples={k: tuple(v.tolist()) for k, v in samples.items()},
        intervals=intervals,
    )


def _params_of(result: Any) -> dict[str, float]:
    params = getattr(result, "params", None)
    if callable(params):
        params = params()
    if not isinstance(params, dict):
        raise UserError(f"bootstrap: {type(result).__name__} has no 'params' mapping")
    return {str(k): float(v) for k, v in params.items()}


def prediction_intervals(
    fit: LawFit,
    *,
    N: Any = None,  # noqa: N803
    D: Any = None,  # noqa: N803
    C: Any = None,  # noqa: N803
    x: Any = None,
    U: Any = None,  # noqa: N803
    level: float | None = None,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Point estimate, confidence interval of the law and prediction interval for a new run.

    Needs a bootstrap on the fit. The confidence interval is the percentile interval of
    the law over resamples; the prediction interval also multiplies each resampled
    prediction by exp(residual) drawn from the full fit's residuals (a new run scatters
    around the law like the old ones did). Returns arrays ``estimate, lo, hi, pred_lo,
    pred_hi``. A calibrated bootstrap (:func:`~scalelab.laws.calibration.calibrated_bootstrap`)
    gives Gaussian log-space intervals with parameter, noise and model-form terms instead
    (and also ``sd_param, sd_noise, sd_form, distance``).
    """
    boot = fit.bootstrap
    if not isinstance(boot, BootstrapResult) or not boot.theta_samples:
        raise UserError("prediction intervals need a fit with a bootstrap (run with --bootstrap N)")
    lvl = boot.level if level is None else level
    check_level(lvl)
    data = fit.inputs(N=N, D=D, C=C, x=x, **({"U": U} if U is not None else {}))
    if boot.calibration is not None:
        from scalelab.laws.calibration import calibrated_prediction

        return calibrated_prediction(fit, data, lvl)
    est = fit.law.predict(np.asarray(fit.theta), data)
    thetas = np.asarray(boot.theta_samples)
    lp, _ = fit.law.log_pred(thetas, data)  # [R, M]
    rng = np.random.default_rng(seed)
    resid = np.asarray(boot.residuals)
    noise = rng.choice(resid, size=lp.shape) if resid.size else np.zeros_like(lp)
    q = (1 - lvl) / 2
    lo, hi = np.quantile(np.exp(lp), [q, 1 - q], axis=0)
    plo, phi = np.quantile(np.exp(lp + noise), [q, 1 - q], axis=0)
    return {"estimate": est, "lo": lo, "hi": hi, "pred_lo": plo, "pred_hi": phi}
