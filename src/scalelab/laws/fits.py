"""Fitting parametric laws: the shared multi-start Huber fit, its result, and model comparison.

:func:`fit_form` is the one fitting routine behind every parametric law (Chinchilla,
Kaplan, offset power law, user expressions): Huber loss on log-residuals, every start of a
grid minimised together by the batched L-BFGS of :mod:`.optim`, the lowest few distinct
basins polished by scipy's L-BFGS-B at tight tolerances, and diagnostics saying how far to
trust the answer (best objective, starts reaching it, gradient, parameter correlations).
Not converged: ``converged=False``; converged to a suspect optimum (:meth:`.LawForm.
trust_notes`): ``cautions``, "converged, but: ..." in the summary; each a :class:`FitWarning`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws import results as law_results
from scalelab.laws.forms import (
    PARAMETRIC_FORMS,
    LawForm,
    distinct_count,
    make_form,
    saved_law_problem,
)
from scalelab.laws.optim import (
    STATUS_TEXT,
    BatchResult,
    batched_lbfgs,
    polish,
    single_threaded_blas,
)
from scalelab.laws.results import Allocation, Interval, Result, check_level, register
from scalelab.laws.table import RunTable, derive_missing


class FitWarning(UserWarning):
    """A fit finished but should not be trusted as is (not converged, fragile optimum)."""


@dataclasses.dataclass(frozen=True)
class Diagnostics(Result):
    """How the optimisation went."""

    kind: ClassVar[str] = "diagnostics"
    converged: bool
    message: str
    best_objective: float
    n_starts: int
    n_best_basin: int
    """Starts whose batched run ended within ``basin_rtol`` of the best objective."""
    basin_rtol: float
    second_objective: float
    """Objective of the next-best distinct local optimum (inf if every start agreed)."""
    n_basins: int
    """Distinct local optima among the starts (objective differing by > basin_rtol)."""
    grad_max: float
    """Largest absolute gradient component at the optimum (optimisation parameters)."""
    polish_iterations: int
    status_counts: dict[str, int]
    correlations: dict[str, dict[str, float]]
    """Parameter correlations from the Gauss-Newton matrix J^T W J at the optimum
    (optimisation parameters: log A etc.; a correlation is unchanged by the log)."""
    condition: float
    """Condition number of the correlation matrix (large: parameters nearly degenerate)."""
    local_optima: tuple[tuple[float, ...], ...] = ()
    """The best few distinct optima found (theta), best first; bootstrap starts from them."""
    warnings: tuple[str, ...] = ()
    seconds: float = math.nan
    cautions: tuple[str, ...] = ()
    """Short names of the reasons (each explained in ``warnings``) not to trust an optimum
    the optimiser calls converged: ``did not move``, ``at a bound``, ``E ~ 0``, ``exponent <
    0.05``, ``no spread``, ``one start``, ``units``, ``not identified``, ``outside the profile``."""

    @property
    def healthy(self) -> bool:
        """Converged, with no caution: the fit can be taken at face value."""
        return self.converged and not self.cautions


@register(*(f for f in PARAMETRIC_FORMS if f != "chinchilla"))
@dataclasses.dataclass(frozen=True)
class LawFit(Result):
    """A fitted parametric law. ``predict`` evaluates it; JSON round-trips via ``to_dict``."""

    kind: ClassVar[str] = "law"
    form: str
    params: dict[str, float]
    """Published parameters (``E, A, B, alpha, beta`` for Chinchilla)."""
    theta: tuple[float, ...]
    """Optimisation parameters (log A etc.)."""
    theta_names: tuple[str, ...]
    spec: dict[str, Any]
    formula: str
    variables: tuple[str, ...]
    objective: float
    """Sum over points of w * Huber_delta(log-residual) at the optimum."""
    delta: float
    n_points: int
    rmse_log: float
    """Root mean square log-residual (~ relative error)."""
    aic: float
    """AIC of a Gaussian model of the log-residuals: n log(RSS/n) + 2k."""
    bic: float
    """BIC of the same: n log(RSS/n) + k log n."""
    diagnostics: Diagnostics
    residuals: tuple[float, ...] = ()
    """log(prediction) - log(observed), per fitted point."""
    rows: tuple[int, ...] = ()
    """Source row numbers of the fitted points."""
    dropped_rows: tuple[int, ...] = ()
    """Source rows left out by the outlier rule (``drop_highest``)."""
    drop_highest: int = 0
    weighted: bool = False
    flops_per_nd: float | None = 6.0
    ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    source: str = ""
    bootstrap: Result | None = None
    """A :class:`~scalelab.laws.bootstrap.BootstrapResult`, when one was run."""

    def check(self, where: str, path: str = "") -> None:
        """A fit read from a file must describe its law consistently (or predict and
        optimal would fail deep inside numpy on an edited file)."""
        at = f"{where}: key '{path + '.' if path else ''}"
        try:
            problem = saved_law_problem(self.law, self)
        except UserError as exc:  # the spec does not rebuild a law
            raise UserError(f"{at}spec': {exc.message}") from None
        if problem is not None:
            raise UserError(f"{at}{problem[0]}': {problem[1]}")

    # ------------------------------------------------------------------ evaluation
    @functools.cached_property
    def law(self) -> LawForm:
        return make_form(self.form, self.spec)

    def predict(
        self,
        N: Any = None,  # noqa: N803 - the quantities' names
        D: Any = None,  # noqa: N803
        C: Any = None,  # noqa: N803
        *,
        x: Any = None,
        theta: Sequence[float] | None = None,
        **variables: Any,
    ) -> np.ndarray:
        """The law at the points (broadcast; C = k N D if needed; ``variables``: e.g. ``U``)."""
        data = self.inputs(N=N, D=D, C=C, x=x, **variables)
        th = np.asarray(self.theta if theta is None else theta, dtype=np.float64)
        return self.law.predict(th, data)

    def inputs(self, *, N=None, D=None, C=None, x=None) -> dict[str, np.ndarray]:  # noqa: N803
        """Arrays for the law's variables, derived through C = k N D where needed."""
        given = {k: v for k, v in (("N", N), ("D", D), ("C", C), ("x", x)) if v is not None}
        arrs = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in given.items()}
        if arrs:
            shape = np.broadcast_shapes(*(a.shape for a in arrs.values()))
            arrs = {k: np.broadcast_to(a, shape).ravel() for k, a in arrs.items()}
        derived = None if self.flops_per_nd is None else derive_missing(arrs, self.flops_per_nd)
        if derived is not None:
            role, values, formula = derived
            others = list(arrs.values())
            arrs[role] = values
            bad = np.flatnonzero(~np.isfinite(values) & np.isfinite(others).all(axis=0))
            if bad.size:  # N = D = 1e300: C overflows
                i = int(bad[0])
                at = ", ".join(f"{v}={a[i]:.4g}" for v, a in arrs.items() if v != role)
                raise UserError(f"values out of range: {role} = {formula} overflows at {at}")
        missing = [v for v in self.variables if v not in arrs]
        if missing:
            raise UserError(
                f"the {self.form} law needs {', '.join(self.variables)}; missing {', '.join(missing)}"
            )
        for v in self.variables:
            if not (np.isfinite(arrs[v]).all() and (arrs[v] > 0).all()):
                raise UserError(f"{v} must be positive and finite to evaluate the law")
        return {v: arrs[v] for v in self.variables}

    def optimal(self, compute: float | Sequence[float], *, level: float = 0.95) -> Allocation:
        """Compute-optimal N and D at each budget, found numerically (the law must depend on
        two of N, D, C); intervals from the bootstrap samples when one is attached."""
        used = set(self.variables)
        if not used <= {"N", "D", "C"} or len(used) < 2:
            raise UserError(
                f"compute-optimal allocation needs a law in two of N, D, C, not {self.formula}"
            )
        if self.flops_per_nd is None:
            raise UserError("compute-optimal allocation needs a FLOP convention (C = k N D)")
        cs = _budgets(compute)
        k = self.flops_per_nd
        n_opt = np.array(
            [_argmin_n(lambda n, c=c: self._loss_at(n, c, self.theta), c, k) for c in cs]
        )
        intervals = {}
        thetas = getattr(self.bootstrap, "theta_samples", ())
        if thetas:
            th = np.asarray(thetas)
            draws: dict[str, list[np.ndarray]] = {
                "n_opt": [],
                "d_opt": [],
                "tokens_per_param": [],
                "loss": [],
            }
            for c in cs:
                n_s, l_s = _grid_argmin(self.law, th, c, k)
                d_s = c / (k * n_s)
                draws["n_opt"].append(n_s)
                draws["d_opt"].append(d_s)
                draws["tokens_per_param"].append(d_s / n_s)
                draws["loss"].append(l_s)
            est = self._allocation(cs, n_opt, self.theta)
            for key, cols in draws.items():
                point = getattr(est, key)
                intervals[key] = tuple(
                    interval_from_samples(col, point[i], level) for i, col in enumerate(cols)
                )
        return self._allocation(cs, n_opt, self.theta, intervals)

    def _loss_at(self, n: np.ndarray, c: float, theta: Sequence[float]) -> np.ndarray:
        k = self.flops_per_nd
        return self.predict(N=n, D=c / (k * n), C=np.full_like(n, c), theta=theta)

    def _allocation(self, cs: np.ndarray, n_opt: np.ndarray, theta, intervals=None) -> Allocation:
        k = self.flops_per_nd
        d_opt = cs / (k * n_opt)
        loss = np.array([self._loss_at(np.array([n]), c, theta)[0] for n, c in zip(n_opt, cs)])
        return Allocation(
            compute=tuple(cs.tolist()),
            n_opt=tuple(n_opt.tolist()),
            d_opt=tuple(d_opt.tolist()),
            tokens_per_param=tuple((d_opt / n_opt).tolist()),
            loss=tuple(loss.tolist()),
            intervals=intervals or {},
        )

    def with_bootstrap(self, boot: Result) -> LawFit:
        """A copy carrying a bootstrap result (saved with it; gives intervals)."""
        return dataclasses.replace(self, bootstrap=boot)

    def summary(self) -> str:
        """A readable multi-line summary."""
        d = self.diagnostics
        lines = [f"{self.form} fit: {self.formula}  ({self.n_points} points, {self.source})"]
        if self.dropped_rows:
            lines.append(
                f"  dropped {len(self.dropped_rows)} highest-loss rows: {list(self.dropped_rows)}"
            )
        boot = self.bootstrap
        for name, val in self.params.items():
            iv = boot.intervals.get(name) if boot is not None else None  # type: ignore[attr-defined]
            extra = f"   [{iv.lo:.5g}, {iv.hi:.5g}] se {iv.se:.3g}" if iv is not None else ""
            lines.append(f"  {name:>8} = {val:.6g}{extra}")
        lines.append(
            f"  objective {self.objective:.6g} (Huber delta {self.delta:g}, summed), "
            f"rmse(log) {self.rmse_log:.4g}, AIC {self.aic:.2f}, BIC {self.bic:.2f}"
        )
        status = law_results.optimiser_status(d.converged, d.message)
        if d.converged and d.cautions:  # the optimiser stopped, but the optimum is suspect
            status += f", but: {', '.join(d.cautions)} (see the warnings)"
        lines.append(
            f"  optimiser: {status}; "
            f"{d.n_best_basin}/{d.n_starts} starts reached the best basin; "
            f"{d.n_basins} distinct optima; max|grad| {d.grad_max:.2g}; {d.seconds:.2f} s"
        )
        strong = _strong_correlations(d.correlations)
        if strong:
            lines.append(f"  strongly correlated: {strong}")
        for w in d.warnings:
            lines.append(f"  warning: {w}")
        return "\n".join(lines)


def _strong_correlations(corr: Mapping[str, Mapping[str, float]], threshold: float = 0.9) -> str:
    names = list(corr)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            r = corr[a].get(b, 0.0)
            if abs(r) >= threshold:
                out.append(f"{a}~{b} {r:+.3f}")
    return ", ".join(out)


def _budgets(compute: float | Sequence[float]) -> np.ndarray:
    cs = np.atleast_1d(np.asarray(compute, dtype=np.float64))
    if not (np.isfinite(cs).all() and (cs > 0).all()):
        raise UserError(f"compute budgets must be positive numbers, got {compute!r}")
    return cs


def _argmin_n(loss_of_n: Callable[[np.ndarray], np.ndarray], c: float, k: float) -> float:
    """Minimise loss(N) on N in [1, C/k] (D >= 1): a log grid, then a bounded refinement."""
    from scipy.optimize import minimize_scalar

    hi = math.log(c / k)
    grid = np.linspace(0.0, hi, 801)
    with np.errstate(all="ignore"):
        vals = loss_of_n(np.exp(grid))
    vals = np.where(np.isfinite(vals), vals, np.inf)
    i = int(np.argmin(vals))
    lo_b, hi_b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if hi_b <= lo_b:
        return float(math.exp(grid[i]))
    res = minimize_scalar(
        lambda t: float(loss_of_n(np.array([math.exp(t)]))[0]),
        bounds=(lo_b, hi_b),
        method="bounded",
        options={"xatol": 1e-10},
    )
    return float(math.exp(res.x))


def _grid_argmin(
    law: LawForm, thetas: np.ndarray, c: float, k: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter row, argmin over N of the law at compute c: a log grid refined by the
    parabola through the best grid point and its neighbours. ``thetas [R, p]`` -> ``[R]``."""
    t = np.linspace(0.0, math.log(c / k), 801)  # log N, with D = C/(kN) >= 1
    n = np.exp(t)
    data = {"N": n, "D": c / (k * n), "C": np.full_like(n, c)}
    with np.errstate(all="ignore"):
        lp, _ = law.log_pred(thetas, {v: data[v] for v in law.variables})  # [R, G]
    lp = np.where(np.isfinite(lp), lp, np.inf)
    i = np.clip(np.argmin(lp, axis=1), 1, t.size - 2)
    rows = np.arange(thetas.shape[0])
    y0, y1, y2 = lp[rows, i - 1], lp[rows, i], lp[rows, i + 1]
    h = t[1] - t[0]
    with np.errstate(all="ignore"):
        shift = 0.5 * h * (y0 - y2) / (y0 - 2 * y1 + y2)
    shift = np.where(np.isfinite(shift), np.clip(shift, -h, h), 0.0)
    best_t = t[i] + shift
    best_lp = y1 - 0.25 * (y0 - y2) * shift / h
    return np.exp(best_t), np.exp(best_lp)


# ====================================================================== the fit


def select_points(
    table: RunTable, form: LawForm, *, drop_highest: int = 0, weights: Any = None
) -> tuple[RunTable, tuple[int, ...], np.ndarray | None]:
    """Apply the outlier rule and resolve weights (normalised to mean 1)."""
    if drop_highest < 0:
        raise UserError(f"drop_highest must be >= 0, got {drop_highest}")
    table.require(*form.variables, what=f"the {form.name} law")
    table, dropped = table.drop_highest(drop_highest)
    table.require_points(form.n_params, f"the {form.name} law")
    table.require_distinct(form.variables, form.n_params, f"the {form.name} law")
    if distinct_count(table.loss) < 2:
        raise UserError(
            f"{table.source}: all {len(table)} losses are equal ({table.loss[0]:.6g}); "
            f"the {form.name} law cannot be fitted to losses that do not vary"
        )
    w = table.weights if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None:
        if w.shape != (len(table),):
            raise UserError(f"weights must have one value per point ({len(table)}), got {w.shape}")
        if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
            raise UserError("weights must be finite, non-negative and not all zero")
        w = w * (len(w) / w.sum())
    return table, dropped, w


def _one_blas_thread(fn: Callable[..., LawFit]) -> Callable[..., LawFit]:
    """Run ``fn`` with BLAS on one thread (threaded BLAS made the fits ~30x slower)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> LawFit:
        with single_threaded_blas():
            return fn(*args, **kwargs)

    return run


@_one_blas_thread
def fit_form(
    form: LawForm,
    table: RunTable,
    *,
    delta: float = 1e-3,
    drop_highest: int = 0,
    weights: Any = None,
    starts: np.ndarray | None = None,
    basin_rtol: float = 1e-5,
    grad_tol: float = 1e-6,
    max_iter: int = 500,
    polish_top: int = 3,
    result_cls: type[LawFit] = LawFit,
) -> LawFit:
    """Fit ``form`` to ``table`` from every start of its grid (or ``starts``): the
    multi-start search, its diagnostics and the result."""
    if not (delta > 0):
        raise UserError(f"Huber delta must be positive, got {delta}")
    t0 = time.perf_counter()
    table, dropped, w = select_points(table, form, drop_highest=drop_highest, weights=weights)
    data = {v: getattr(table, v) for v in form.variables}
    log_y = np.log(table.loss)
    fun = form.objective(data, log_y, delta=delta, weights=w)
    x0 = form.grid(data, log_y) if starts is None else np.array(starts, dtype=np.float64, ndmin=2)
    if x0.shape[1] != form.n_params:
        raise UserError(f"starts need {form.n_params} columns ({', '.join(form.theta_names)})")
    lo, hi = form.bounds()
    batch = batched_lbfgs(fun, x0, lower=lo, upper=hi, max_iter=max_iter, ftol=1e-10, behind=10.0)
    # Basin tolerance: relative, plus an absolute floor for (near-)perfect fits whose best
    # objective is ~0 (1e-12 per point: log-residuals of ~1e-6).
    atol = 1e-12 * len(table)
    optima = distinct_optima(batch.x, batch.f, rtol=basin_rtol, atol=atol)
    if not optima:
        raise UserError(
            f"{table.source}: the {form.name} law could not be evaluated at any start "
            "(every prediction was non-finite or non-positive)"
        )
    best = _polish_best(fun, optima, polish_top, lo, hi)
    theta = best[0]
    lp, jac = form.log_pred(theta[None, :], data)
    resid = lp[0] - log_y
    diag = _diagnostics(
        form, batch, optima, best, jac[0], w, rtol=basin_rtol, atol=atol, grad_tol=grad_tol,
        t0=t0, starts=x0, log_y=log_y,
    )  # fmt: skip
    n, k = len(table), form.n_params
    rss = max(float(np.sum(resid**2 if w is None else w * resid**2)), 1e-300)
    fit = result_cls(
        form=form.name,
        params=form.to_public(theta),
        theta=tuple(float(t) for t in theta),
        theta_names=form.theta_names,
        spec=form.spec(),
        formula=form.formula,
        variables=form.variables,
        objective=diag.best_objective,
        delta=float(delta),
        n_points=n,
        rmse_log=float(np.sqrt(np.mean(resid**2))),
        aic=n * math.log(rss / n) + 2 * k,
        bic=n * math.log(rss / n) + k * math.log(n),
        diagnostics=diag,
        residuals=tuple(resid.tolist()),
        rows=tuple(int(r) for r in table.rows),
        dropped_rows=dropped,
        drop_highest=int(drop_highest),
        weighted=w is not None,
        flops_per_nd=table.flops_per_nd,
        ranges=table.ranges(),
        source=table.source,
    )
    units = law_results.units_warning(fit, table)
    if units is not None:
        diag = dataclasses.replace(
            diag, warnings=diag.warnings + (units,), cautions=diag.cautions + ("units",)
        )
        fit = dataclasses.replace(fit, diagnostics=diag)
    for note in diag.warnings:
        warnings.warn(f"{form.name} fit: {note}", FitWarning, stacklevel=3)
    return fit


def _polish_best(
    fun: Any,
    optima: list[tuple[np.ndarray, float]],
    polish_top: int,
    lo: np.ndarray | None,
    hi: np.ndarray | None,
) -> tuple[np.ndarray, float, np.ndarray, bool, str, int]:
    """The best of the top batched optima after a scipy polish (a :func:`polish` tuple)."""
    # Polish the best optimum and any runner-up within 10% of it (a basin the batched run
    # may have stopped short in); ones far above cannot overtake it.
    f_top = optima[0][1]
    close = [x for x, f in optima[:polish_top] if f <= f_top + 0.1 * abs(f_top)]
    polished = [polish(fun.single, x, lower=lo, upper=hi) for x in close]
    return min(polished, key=lambda p: p[1])


def _diagnostics(
    form: LawForm,
    batch: BatchResult,
    optima: list[tuple[np.ndarray, float]],
    best: tuple[np.ndarray, float, np.ndarray, bool, str, int],
    jac: np.ndarray,
    w: np.ndarray | None,
    *,
    rtol: float,
    atol: float,
    grad_tol: float,
    t0: float,
    starts: np.ndarray | None = None,
    log_y: np.ndarray | None = None,
) -> Diagnostics:
    """How the search went, with a warning for each reason to distrust the optimum ``best``
    (``starts``: the start grid; ``log_y``: the fitted log-losses; both enable more checks)."""
    theta, f_best, grad, _, message, nit = best
    lo, hi = form.bounds()
    n_starts = int(batch.x.shape[0])
    finite_f = batch.f[np.isfinite(batch.f)]
    n_best = int(np.sum(finite_f <= f_best * (1 + rtol) + atol))
    grad_max = float(np.max(np.abs(_free_gradient(grad, theta, lo, hi))))
    # A stationary point is what we asked for: judge by the gradient, not scipy's message
    # (its line search reports ABNORMAL when it is already at float precision).
    converged = bool(np.isfinite(f_best) and grad_max <= grad_tol * max(1.0, abs(f_best)))
    notes: list[tuple[str, str]] = []  # (caution, warning)
    if n_best <= 1 and n_starts > 1:
        notes.append(("one start", f"only {n_best} of {n_starts} starts reached the best optimum"))
    members = np.isfinite(batch.f) & (batch.f <= f_best * (1 + rtol) + atol)
    ends = batch.x[members] if starts is not None else None
    starts = starts[members] if starts is not None else None
    notes += form.trust_notes(theta, starts=starts, ends=ends, log_y=log_y)
    corr, cond = _correlations(jac, w, form.theta_names)
    first = [law_results.not_converged_note(message, grad_max)] if not converged else []
    return Diagnostics(
        converged=converged,
        message=message,
        best_objective=float(f_best),
        n_starts=n_starts,
        n_best_basin=n_best,
        basin_rtol=rtol,
        second_objective=float(optima[1][1]) if len(optima) > 1 else math.inf,
        n_basins=len(optima),
        grad_max=grad_max,
        polish_iterations=nit,
        status_counts={
            STATUS_TEXT[s]: int(c) for s, c in zip(*np.unique(batch.status, return_counts=True))
        },
        correlations=corr,
        condition=cond,
        local_optima=tuple(tuple(float(v) for v in x) for x, _ in optima[:5]),
        warnings=tuple(first + [text for _, text in notes]),
        seconds=time.perf_counter() - t0,
        cautions=tuple(dict.fromkeys(tag for tag, _ in notes)),
    )


def distinct_optima(
    x: np.ndarray, f: np.ndarray, *, rtol: float, atol: float = 0.0
) -> list[tuple[np.ndarray, float]]:
    """Group end points by objective (within ``rtol`` and ``atol``), best first: ``[(x, f)]``."""
    order = np.argsort(f)
    out: list[tuple[np.ndarray, float]] = []
    for i in order:
        if not np.isfinite(f[i]):
            break
        if out and f[i] <= out[-1][1] * (1 + rtol) + atol:
            continue
        out.append((x[i].copy(), float(f[i])))
    return out


def _free_gradient(
    g: np.ndarray, x: np.ndarray, lo: np.ndarray | None, hi: np.ndarray | None
) -> np.ndarray:
    """Gradient components that are not pinned by an active bound."""
    if lo is None:
        return g
    pinned = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
    return np.where(pinned, 0.0, g)


def _correlations(
    jac: np.ndarray, w: np.ndarray | None, names: Sequence[str]
) -> tuple[dict[str, dict[str, float]], float]:
    """Correlation matrix from (J^T W J)^-1; J is the [P, p] Jacobian of log-predictions."""
    jw = jac if w is None else jac * w[:, None]
    h = jac.T @ jw  # [p, p]
    # Scaled to a unit diagonal first (the same correlations, a far better conditioned
    # inverse: unscaled, log A and alpha differ by ~20x in size and the pseudo-inverse of a
    # near-singular matrix gave "correlations" of 1e140).
    s = np.sqrt(np.clip(np.diag(h), 1e-300, None))
    cov = np.linalg.pinv(h / np.outer(s, s), hermitian=True)
    sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
    corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    try:
        cond = float(np.linalg.cond(corr))
    except np.linalg.LinAlgError:
        cond = math.inf
    table = {a: {b: float(corr[i, j]) for j, b in enumerate(names)} for i, a in enumerate(names)}
    return table, cond


def interval_from_samples(samples: np.ndarray, estimate: float, level: float) -> Interval:
    """Percentile interval of finite samples around ``estimate``."""
    check_level(level)
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return Interval(estimate=estimate, lo=math.nan, hi=math.nan, level=level)
    q = (1 - level) / 2
    lo, hi = np.quantile(s, [q, 1 - q])
    return Interval(
        estimate=float(estimate),
        lo=float(lo),
        hi=float(hi),
        level=level,
        se=float(np.std(s, ddof=1)) if s.size > 1 else math.nan,
    )
