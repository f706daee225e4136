"""A batched L-BFGS minimiser: thousands of independent starts advanced together in numpy.

Fitting a scaling law from the Hoffmann et al. (2022) initialisation grid means 4,500
independent L-BFGS runs on a 5-parameter objective. Run one by one through scipy, the
Python overhead per evaluation dominates (~70 s for 240 points). Here every start is one
row of an ``[S, p]`` array: the objective and its analytic gradient are evaluated for all
active rows at once (``fun_grad(x[S, p], rows[S]) -> (f[S], g[S, p])``), the two-loop
recursion runs as ``[S, m, p]`` array operations, and each row has its own backtracking
(Armijo) line search and its own stopping test. Rows that have stopped drop out of the
active set, so the cost falls as starts converge.

Simple box bounds are handled by projection (a step is clipped into the box, and the
components of the search direction that push against an active bound are zeroed); the
final answer is polished by scipy's L-BFGS-B, which handles bounds exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator

import numpy as np

# fun_grad(x [s, p], rows [s] int) -> (f [s], g [s, p]); rows are the indices of the starts.
FunGrad = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]

# Status codes of one start.
CONVERGED_GRAD = 0  # projected gradient below gtol
CONVERGED_F = 1  # relative decrease of f below ftol
STALLED = 2  # line search found no decrease (at the limit of float precision)
MAX_ITER = 3  # iteration limit reached
NOT_FINITE = 4  # the objective is not finite at the start point
BEHIND = 5  # at its recent pace it cannot reach the best objective found before max_iter

STATUS_TEXT = {
    CONVERGED_GRAD: "gradient below tolerance",
    CONVERGED_F: "relative decrease below tolerance",
    STALLED: "line search made no progress",
    MAX_ITER: "iteration limit reached",
    NOT_FINITE: "objective not finite at the start",
    BEHIND: "too slow to reach the best objective",
}


@dataclasses.dataclass(frozen=True, eq=False)
class BatchResult:
    """Outcome of :func:`batched_lbfgs`: one row per start."""

    x: np.ndarray
    """Final points, ``[S, p]``."""
    f: np.ndarray
    """Objective at ``x``, ``[S]`` (``inf`` where it was never finite)."""
    grad: np.ndarray
    """Gradient at ``x``, ``[S, p]``."""
    n_iter: np.ndarray
    """Iterations each start took, ``[S]``."""
    n_eval: int
    """Total objective evaluations summed over rows (a cost measure)."""
    status: np.ndarray
    """Per-start status code (see ``STATUS_TEXT``), ``[S]``."""


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS/OpenMP pools to one thread while fitting.

    The fits are many tiny array operations; a multi-threaded BLAS on a loaded 2-core
    machine was measured about 30x slower on them (see the README, Performance).
    """
    # threadpoolctl only limits libraries already loaded when the context is entered, and
    # scipy.optimize brings its own OpenBLAS: load it first (measured: an unlimited cold
    # L-BFGS-B polish took 1.2 s instead of 0.1 s).
    import scipy.optimize  # noqa: F401

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with the environment
        yield
        return
    with threadpool_limits(limits=1):
        yield


def batched_lbfgs(
    fun_grad: FunGrad,
    x0: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    memory: int = 10,
    max_iter: int = 2000,
    gtol: float = 1e-10,
    ftol: float = 1e-13,
    window: int = 30,
    window_tol: float = 1e-8,
    behind: float = np.inf,
    c1: float = 1e-4,
    max_backtracks: int = 40,
) -> BatchResult:
    """Minimise ``S`` independent problems from the rows of ``x0`` (``[S, p]``) at once.

    ``gtol`` bounds the largest absolute (projected) gradient component; ``ftol`` bounds
    the relative decrease ``(f_k - f_{k+1}) / |f_k|`` of one iteration. Both are explicit
    because scipy's defaults stop early on objectives whose value is ~1e-3. A start also
    stops when its objective fell by less than ``window_tol`` (relative) over the last
    ``window`` iterations: starts stranded on a plateau (a term of the law switched off,
    e.g. ``A N^-alpha`` ~ 1e-9) otherwise creep for thousands of iterations at ~1e-11 per
    iteration without getting anywhere. For the same reason a start stops (``BEHIND``)
    when, at its pace over the last ``window`` iterations, it could not get within a factor
    ``1 + behind`` of the best objective of any start before ``max_iter``: it would end at
    the iteration limit in a worse basin anyway (off by default: it assumes all rows
    minimise the same objective, which a bootstrap batch does not).
    """
    # Long: one loop over batched L-BFGS iterations whose steps (two-loop direction, Armijo
    # line search, curvature memory, stopping tests) all read and update the same [p, s]
    # state arrays in place, compacted together; helpers would pass a dozen arrays back and
    # forth and hide which step changes which.
    x0 = np.array(x0, dtype=np.float64, ndmin=2)
    n_start, p = x0.shape
    lo = np.full(p, -np.inf) if lower is None else np.asarray(lower, dtype=np.float64)
    hi = np.full(p, np.inf) if upper is None else np.asarray(upper, dtype=np.float64)
    bounded = bool(np.isfinite(lo).any() or np.isfinite(hi).any())
    x0 = np.clip(x0, lo, hi)
    lo_c, hi_c = lo[:, None], hi[:, None]  # [p, 1] for the parameter-major state below

    out_x = x0.copy()
    out_f = np.full(n_start, np.inf)
    out_g = np.zeros((n_start, p))
    out_it = np.zeros(n_start, dtype=np.int64)
    out_status = np.full(n_start, MAX_ITER, dtype=np.int64)

    with np.errstate(all="ignore"):
        f, g = fun_grad(x0, np.arange(n_start))
    n_eval = n_start
    ok = np.isfinite(f) & np.isfinite(g).all(axis=1)
    out_status[~ok] = NOT_FINITE

    # Active-set state, parameter-major ([p, s]: one row per parameter) because with p ~ 5
    # the per-start dot products are then sums of a few contiguous rows (2x faster than
    # [s, p] here). Stopped rows stay in place (``live`` False) until they are an eighth
    # of the state, then everything is compacted.
    rows = np.flatnonzero(ok)
    x, f, g = x0[rows].T.copy(), f[rows], g[rows].T.copy()
    hist_s = np.zeros((memory, p, rows.size))  # [m, p, s] steps
    hist_y = np.zeros((memory, p, rows.size))  # [m, p, s] gradient changes
    hist_rho = np.zeros((memory, rows.size))  # [m, s] 1/(s.y); 0 marks an empty slot
    gamma = 1.0 / np.maximum(np.sqrt((g * g).sum(0)), 1e-12)  # [s] initial H0 scale
    f_hist = np.repeat(f[None, :], window, axis=0)  # [W, s] objective of past iterations
    live = np.ones(rows.size, dtype=bool)
    n_live = rows.size
    f_best = float(f.min()) if f.size else np.inf  # best objective of any start so far

    for it in range(max_iter):
        if n_live == 0:
            break
        if (rows.size - n_live) * 8 > rows.size:
            rows, f, gamma = rows[live], f[live], gamma[live]
            x, g = x[:, live], g[:, live]
            hist_s, hist_y, hist_rho = hist_s[:, :, live], hist_y[:, :, live], hist_rho[:, live]
            f_hist = f_hist[:, live]
            live = np.ones(rows.size, dtype=bool)
        all_live = n_live == rows.size

        # ---- search direction d = -H g by the two-loop recursion, batched over starts.
        order = [(it - 1 - j) % memory for j in range(min(it, memory))]  # newest first
        q = g.copy()
        coef = []
        for j in order:
            a_j = hist_rho[j] * (hist_s[j] * q).sum(0)
            q -= a_j * hist_y[j]
            coef.append(a_j)
        d = gamma * q
        for j, a_j in zip(reversed(order), reversed(coef)):
            b_j = hist_rho[j] * (hist_y[j] * d).sum(0)
            d += (a_j - b_j) * hist_s[j]
        np.negative(d, out=d)
        if bounded:
            d = _project_direction(d, x, lo_c, hi_c)
        slope = (g * d).sum(0)  # [s] directional derivative
        bad = ~(slope < 0)  # also catches NaN
        if not all_live:
            bad &= live
        if bad.any():  # not a descent direction: restart from steepest descent
            gb = g[:, bad]
            d[:, bad] = -gb / np.maximum(np.sqrt((gb * gb).sum(0)), 1e-300)
            if bounded:
                d[:, bad] = _project_direction(d[:, bad], x[:, bad], lo_c, hi_c)
            hist_rho[:, bad] = 0.0
            slope = (g * d).sum(0)

        # ---- backtracking (Armijo) line search, each start with its own step length.
        x_new, f_new, g_new = x.copy(), f.copy(), g.copy()
        accepted = np.zeros(rows.size, dtype=bool)
        step = np.ones(rows.size)
        todo = None if all_live else np.flatnonzero(live)  # None: every start
        for _ in range(max_backtracks):
            if todo is None:
                trial = x + d
                f0, sl, t = f, slope, step
            else:
                t = step[todo]
                trial = x[:, todo] + t * d[:, todo]
                f0, sl = f[todo], slope[todo]
            if bounded:
                np.clip(trial, lo_c, hi_c, out=trial)
            with np.errstate(all="ignore"):
                ft, gt = fun_grad(trial.T, rows if todo is None else rows[todo])
            n_eval += ft.size
            good = (ft <= f0 + c1 * t * sl) & np.isfinite(gt).all(axis=1)  # NaN f fails
            idx = np.arange(rows.size) if todo is None else todo
            acc = idx[good]
            x_new[:, acc], f_new[acc], g_new[:, acc] = trial[:, good], ft[good], gt[good].T
            accepted[acc] = True
            if good.all():
                break
            # Shrink: minimiser of the quadratic through f, slope and f(trial), kept
            # within [0.1, 0.5] of the current step (10x where f was not finite).
            back = ~good
            tb, fb, f0b, slb = t[back], ft[back], f0[back], sl[back]
            with np.errstate(all="ignore"):
                t_quad = -slb * tb * tb / (2.0 * (fb - f0b - slb * tb))
            todo = idx[back]
            step[todo] = np.where(
                np.isfinite(t_quad), np.clip(t_quad, 0.1 * tb, 0.5 * tb), 0.1 * tb
            )

        # ---- curvature pair and stopping tests.
        slot = it % memory
        s_vec = x_new - x  # [p, s]
        y_vec = g_new - g
        sy = (s_vec * y_vec).sum(0)
        yy = (y_vec * y_vec).sum(0)
        use = accepted & (sy > 1e-12 * yy) & (yy > 0)
        s_vec[:, ~use] = 0.0
        y_vec[:, ~use] = 0.0
        hist_s[slot], hist_y[slot] = s_vec, y_vec
        hist_rho[slot] = np.where(use, 1.0 / np.where(use, sy, 1.0), 0.0)
        gamma = np.where(use, sy / np.where(yy > 0, yy, 1.0), gamma)

        decrease = f - f_new
        f_prev = f
        x, f, g = x_new, f_new, g_new
        pg = _projected_gradient(g, x, lo_c, hi_c) if bounded else g
        status = np.full(rows.size, -1)
        status[np.abs(pg).max(axis=0) <= gtol] = CONVERGED_GRAD
        rel = decrease <= ftol * np.maximum(np.abs(f_prev), 1e-300)
        status[(status < 0) & accepted & rel] = CONVERGED_F
        f_old = f_hist[it % window].copy()  # objective `window` iterations ago
        f_hist[it % window] = f
        if it >= window:  # noqa: SIM102
            flat = (f_old - f) <= window_tol * np.maximum(np.abs(f), 1e-300)
            status[(status < 0) & flat] = CONVERGED_F
            f_best = min(f_best, float(f[live].min()))
            reach = f - (f_old - f) / window * (max_iter - 1 - it)
            slow = reach > f_best + behind * abs(f_best)
            status[(status < 0) & slow] = BEHIND
        status[(status < 0) & ~accepted] = STALLED
        if it == max_iter - 1:
            status[status < 0] = MAX_ITER
        if not all_live:
            status[~live] = -1
        out_it[rows[live]] = it + 1
        stop = status >= 0
        if stop.any():
            done = rows[stop]
            out_x[done], out_f[done], out_g[done] = x[:, stop].T, f[stop], g[:, stop].T
            out_status[done] = status[stop]
            live &= ~stop
            n_live = int(live.sum())

    return BatchResult(
        x=out_x, f=out_f, grad=out_g, n_iter=out_it, n_eval=n_eval, status=out_status
    )


def _project_direction(d: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Zero the direction components that point out of the box at an active bound."""
    blocked = ((x <= lo) & (d < 0)) | ((x >= hi) & (d > 0))
    return np.where(blocked, 0.0, d)


def _projected_gradient(g: np.ndarray, x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The gradient with components that would leave the box at an active bound zeroed."""
    blocked = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
    return np.where(blocked, 0.0, g)


def polish(
    fun_grad_1: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    *,
    lower: np.ndarray | None = None,
    upper: np.ndarray | None = None,
    ftol: float = 1e-15,
    gtol: float = 1e-12,
    max_iter: int = 20000,
) -> tuple[np.ndarray, float, np.ndarray, bool, str, int]:
    """Finish one start with scipy's L-BFGS-B at tight, explicit tolerances.

    Returns ``(x, f, grad, success, message, n_iter)``.
    """
    from scipy.optimize import minimize

    x0 = np.asarray(x0, dtype=np.float64)
    bounds = None
    if lower is not None or upper is not None:
        lo = np.full(x0.size, -np.inf) if lower is None else np.asarray(lower, float)
        hi = np.full(x0.size, np.inf) if upper is None else np.asarray(upper, float)
        bounds = [
            (None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
            for a, b in zip(lo, hi)
        ]
    with np.errstate(all="ignore"):
        res = minimize(
            fun_grad_1,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": ftol, "gtol": gtol, "maxiter": max_iter, "maxls": 50},
        )
        f, g = fun_grad_1(res.x)
    return (
        np.asarray(res.x),
        float(f),
        np.asarray(g),
        bool(res.success),
        str(res.message),
        int(res.nit),
    )
