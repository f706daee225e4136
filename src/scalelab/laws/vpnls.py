"""Fast, exact Chinchilla Approach 3 by variable projection over the exponent plane.

For fixed exponents ``(alpha, beta)`` the Chinchilla law ``L = E + A/N^alpha + B/D^beta``
(Hoffmann et al. 2022, eq. 2) is linear in ``(E, A, B)``. Variable projection (Golub &
Pereyra 1973, SIAM J. Numer. Anal. 10(2)) eliminates those three and leaves a profile over
the two exponents; Czech et al. (2026, arXiv:2603.22339, "VPNLS") use it to make Approach
3 a well-conditioned two-dimensional search that can be done exhaustively on a grid.

:func:`fit_vpnls` minimises the same objective as the 4,500-start grid of Hoffmann et al.
(Huber, delta 1e-3, on log-residuals, summed over points; ``fits.fit_form``) in four steps:

1. **Profile.** Over a dense ``(alpha, beta)`` grid (160 x 160 exponents in
   ``[0.02, 8]``, :data:`ALPHAS`), solve ``min_{E, A, B >= 0} sum_i q_i (E + A x_i +
   B z_i - L_i)^2`` with ``x = N^-alpha``, ``z = D^-beta`` and ``q_i = w_i / L_i^2``:
   least squares on the relative residual ``(Lhat - L) / L``, the first-order
   approximation of the log-residual. All grid points share the normal equations'
   entries, a few matrix products; the non-negative solution comes from the active sets
   in closed form (Lawson & Hanson 1974, ch. 23). On 240 points this takes ~6 ms.
2. **Starts.** The profile's best local minima, and the best point of each of 5 x 5
   blocks of the grid: a sum of squares can put its minimum where a few outliers pull it,
   while the Huber objective (linear beyond delta) shrugs them off, so every region of
   the exponent plane keeps a start.
3. **Refit.** From those starts the batched L-BFGS of :mod:`.optim` on the true
   objective, in coordinates centred on the mean ``log N`` and ``log D`` (``log A`` and
   ``alpha`` are then far less correlated): a short screening run of every start, then the
   profile minima and the best screened starts to convergence.
4. **Finish.** The best end point is polished by scipy's L-BFGS-B and by Newton steps
   with the exact Hessian (L-BFGS creeps along the nearly flat valleys of this objective);
   a degenerate optimum is also tried with ``E``, ``A`` or ``B`` pinned at 0, where such a
   valley ends. :func:`~scalelab.laws.fits.fit_form`, started there, then builds the fit
   and its diagnostics exactly as for the grid; ``n_starts`` and ``n_best_basin`` count the
   starts refitted to convergence in step 3, ``local_optima`` lists the distinct optima
   they ended in (a bootstrap starts every resample from those).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws import results as law_results
from scalelab.laws.fits import FitWarning, LawFit, distinct_optima, fit_form, select_points
from scalelab.laws.forms import ChinchillaForm
from scalelab.laws.objective import ChinchillaObjective, huber
from scalelab.laws.optim import STATUS_TEXT, batched_lbfgs, polish, single_threaded_blas
from scalelab.laws.table import RunTable

ALPHAS = np.concatenate([np.linspace(0.02, 2.0, 100), np.linspace(2.1, 8.0, 60)])
"""Exponent grid of the profile (both alpha and beta): steps of 0.02 on [0.02, 2], where
published exponents lie (Hoffmann et al. 2022, Approach 3: 0.34, 0.28; Besiroglu et al.
2024, Table 1: 0.35, 0.37) and the profiles of the published sweeps vary on a scale of
~0.1, then steps of 0.1 up to 8: a steep term with a huge coefficient that fits only the
smallest runs (an outlier among them) is a local optimum the grid of Hoffmann et al.
reaches (its starts go up to exponent 2 with coefficients up to e^25)."""

BLOCKS = 5
"""The exponent grid is cut into BLOCKS x BLOCKS blocks, each contributing its best point
as a start (step 2 of the module docstring)."""

N_MINIMA = 4
"""How many of the profile's best local minima start the refit."""

SCREEN_ITER = 40
"""L-BFGS iterations of the screening run; a start's objective after it ranks the start."""

KEEP = 6
"""Screened block starts (besides the profile minima) refitted to convergence."""

OFF = -700.0
"""Log of a coefficient pinned at zero (``exp(-700) ~ 1e-304``): where the objective keeps
falling as ``E`` (or ``A``, ``B``) goes to 0, the optimum lies on a boundary that the log
parametrisation only reaches at minus infinity."""


@dataclasses.dataclass(frozen=True, eq=False)
class Profile:
    """The inner least-squares solution at every ``(alpha, beta)`` of the grid."""

    alphas: np.ndarray
    betas: np.ndarray
    coef: np.ndarray
    """``[Ka, Kb, 3]``: ``E``, ``A N0^-alpha`` and ``B D0^-beta`` (``log N0`` = mean log N)."""
    rss: np.ndarray
    """``[Ka, Kb]`` weighted residual sum of squares of the relative residuals."""
    log_n0: float
    log_d0: float

    def theta(self, flat: np.ndarray, floor: float) -> np.ndarray:
        """Centred parameters ``(log A N0^-alpha, log B D0^-beta, log E, alpha, beta)``
        (see :func:`uncentre`) at flat grid indices; a coefficient that is 0 (on the NNLS
        bound) becomes ``floor``, which ``log`` can take (a small positive one stays: a
        steep term with a tiny scale is a real optimum)."""
        ia, ib = np.unravel_index(flat, self.rss.shape)
        coef = self.coef[ia, ib]
        c = np.log(np.where(coef > 0, coef, floor))  # [k, 3]
        return np.stack([c[:, 1], c[:, 2], c[:, 0], self.alphas[ia], self.betas[ib]], axis=1)


def uncentre(theta: np.ndarray, log_n0: float, log_d0: float) -> np.ndarray:
    """``(log A, log B, log E, alpha, beta)`` from centred parameters, in which the law
    reads ``E + A' (N/N0)^-alpha + B' (D/D0)^-beta`` with ``A' = A N0^-alpha``."""
    out = np.array(theta, dtype=np.float64)
    out[..., 0] += out[..., 3] * log_n0
    out[..., 1] += out[..., 4] * log_d0
    return out


def exponent_profile(
    log_n: np.ndarray,
    log_d: np.ndarray,
    loss: np.ndarray,
    weights: np.ndarray | None = None,
    alphas: np.ndarray = ALPHAS,
    betas: np.ndarray = ALPHAS,
) -> Profile:
    """The non-negative least-squares profile over ``alphas x betas`` (module docstring).

    ``N`` and ``D`` are centred on their mean logs so that the columns stay of order 1
    (the scale goes into the coefficients), which keeps the normal equations conditioned.
    """
    log_n0, log_d0 = float(np.mean(log_n)), float(np.mean(log_d))
    x = np.exp(-np.outer(alphas, log_n - log_n0))  # [Ka, P]
    z = np.exp(-np.outer(betas, log_d - log_d0))  # [Kb, P]
    q = (1.0 if weights is None else weights) / loss**2
    qy = q * loss
    col = (slice(None), None)
    row = (None, slice(None))
    gram = (
        np.sum(q),  # E E
        (x @ q)[col],  # E A
        (z @ q)[row],  # E B
        ((x * x) @ q)[col],  # A A
        (x * q) @ z.T,  # A B
        ((z * z) @ q)[row],  # B B
    )
    rhs = (np.sum(qy), (x @ qy)[col], (z @ qy)[row])
    coef, rss = nnls3(gram, rhs, float(np.sum(qy * loss)))
    return Profile(alphas, betas, coef, rss, log_n0, log_d0)


def nnls3(gram: tuple[Any, ...], rhs: tuple[Any, ...], yy: float) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative least squares in 3 unknowns for many problems at once.

    ``gram`` holds the broadcastable normal-equation entries ``(g00, g01, g02, g11, g12,
    g22)``, ``rhs`` ``(h0, h1, h2)`` and ``yy`` the weighted sum of squared targets. Every
    non-empty subset of the columns is solved in closed form (Cramer's rule); the NNLS
    solution is the feasible one with the least residual ``yy - c.h`` (Lawson & Hanson
    1974, ch. 23), or all zeros (residual ``yy``) when none is. Returns
    ``(c [..., 3], rss [...])``.
    """
    shape = np.broadcast_shapes(*(np.shape(v) for v in (*gram, *rhs)))
    g00, g01, g02, g11, g12, g22 = (np.broadcast_to(v, shape) for v in gram)
    h = [np.broadcast_to(v, shape) for v in rhs]
    g = {(0, 0): g00, (0, 1): g01, (0, 2): g02, (1, 1): g11, (1, 2): g12, (2, 2): g22}
    best = np.full(shape, float(yy))  # the empty set: all three coefficients 0
    coef = np.zeros((*shape, 3))

    def keep(cols: tuple[int, ...], vals: list[np.ndarray]) -> None:
        rss = yy - sum(v * h[j] for j, v in zip(cols, vals))
        ok = np.isfinite(rss) & (rss < best)
        for v in vals:
            ok &= v >= 0.0
        best[ok] = rss[ok]
        for j in range(3):
            coef[..., j][ok] = vals[cols.index(j)][ok] if j in cols else 0.0

    with np.errstate(all="ignore"):
        m00, m01, m02 = g11 * g22 - g12 * g12, g02 * g12 - g01 * g22, g01 * g12 - g02 * g11
        m11, m12, m22 = g00 * g22 - g02 * g02, g01 * g02 - g00 * g12, g00 * g11 - g01 * g01
        det = g00 * m00 + g01 * m01 + g02 * m02
        keep(
            (0, 1, 2),
            [
                (m00 * h[0] + m01 * h[1] + m02 * h[2]) / det,
                (m01 * h[0] + m11 * h[1] + m12 * h[2]) / det,
                (m02 * h[0] + m12 * h[1] + m22 * h[2]) / det,
            ],
        )
        for i, j in ((0, 1), (0, 2), (1, 2)):
            gii, gij, gjj = g[i, i], g[i, j], g[j, j]
            d = gii * gjj - gij * gij
            keep((i, j), [(gjj * h[i] - gij * h[j]) / d, (gii * h[j] - gij * h[i]) / d])
        for i in range(3):
            keep((i,), [h[i] / g[i, i]])
    return coef, best


def local_minima(values: np.ndarray) -> np.ndarray:
    """Flat indices of the finite points of a 2-D grid function that no neighbour (of 8)
    undercuts, lowest first."""
    ka, kb = values.shape
    v = np.where(np.isfinite(values), values, np.inf)
    pad = np.pad(v, 1, constant_values=np.inf)
    low = np.isfinite(v)
    for da in (-1, 0, 1):
        for db in (-1, 0, 1):
            if da or db:
                low &= v <= pad[1 + da : 1 + da + ka, 1 + db : 1 + db + kb]
    flat = np.flatnonzero(low)
    return flat[np.argsort(v.ravel()[flat], kind="stable")]


def profile_starts(prof: Profile, blocks: int, n_minima: int) -> tuple[np.ndarray, int]:
    """Flat grid indices to start from, and how many of them lead: the profile's
    ``n_minima`` best local minima, then the best point of each of ``blocks x blocks``
    blocks of the grid that is not one of them."""
    v = np.where(np.isfinite(prof.rss), prof.rss, np.inf)
    picks = [int(m) for m in local_minima(v)[:n_minima]]
    n_lead = len(picks)
    ka, kb = v.shape
    for sa in np.array_split(np.arange(ka), min(blocks, ka)):
        for sb in np.array_split(np.arange(kb), min(blocks, kb)):
            sub = v[np.ix_(sa, sb)]
            i, j = np.unravel_index(int(np.argmin(sub)), sub.shape)
            if np.isfinite(sub[i, j]):
                picks.append(int(sa[i] * kb + sb[j]))
    return np.array(list(dict.fromkeys(picks)), dtype=np.int64), n_lead


def newton_refine(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    theta: np.ndarray,
    weights: np.ndarray | None,
    delta: float,
    *,
    max_iter: int = 50,
) -> np.ndarray:
    """Newton steps with the exact Hessian of the Huber objective from ``theta``.

    ``data`` is ``(log N, log D, log L)`` (centred or not; ``theta`` to match). With
    ``t = (a - alpha log N, b - beta log D, e)`` the log-prediction is ``LSE(t)``, and ``t``
    is linear in theta, so its Hessian is ``T^T (diag p - p p^T) T`` with ``p = softmax(t)``;
    the objective's adds ``huber''(r) J J^T``. ``|eigenvalues|`` are floored (the objective
    is only piecewise smooth), each step backtracks until the objective falls, and the
    iteration ends when no step lowers it.
    """
    ln, ld, y = data
    w = np.ones_like(y) if weights is None else weights
    x = np.array(theta, dtype=np.float64)

    def at(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        t = np.stack([x[0] - x[3] * ln, x[1] - x[4] * ld, np.full_like(ln, x[2])], axis=1)
        lp = np.logaddexp.reduce(t, axis=1)
        r = lp - y
        f = float(np.sum(w * huber(r, delta)))
        return t, lp, r, f if np.isfinite(f) else math.inf

    t, lp, r, f = at(x)
    for _ in range(max_iter):
        p = np.exp(t - lp[:, None])  # [P, 3]
        psi = w * np.clip(r, -delta, delta)
        jac = np.stack([p[:, 0], p[:, 1], p[:, 2], -p[:, 0] * ln, -p[:, 1] * ld], axis=1)
        hess = (jac * (w * (np.abs(r) < delta) - psi)[:, None]).T @ jac
        s1, s2 = psi * p[:, 0], psi * p[:, 1]
        hess[[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]] += [
            s1.sum(), s2.sum(), (psi * p[:, 2]).sum(), (s1 * ln * ln).sum(), (s2 * ld * ld).sum()
        ]  # fmt: skip
        hess[[0, 3, 1, 4], [3, 0, 4, 1]] -= [(s1 * ln).sum()] * 2 + [(s2 * ld).sum()] * 2
        step = _newton_step(hess, jac.T @ psi)
        if step is None:
            break
        for _ in range(40):
            new = at(x + step)
            if new[3] < f:
                break
            step *= 0.5
        else:
            break
        x = x + step
        t, lp, r, f = new
    return x


def _newton_step(hess: np.ndarray, g: np.ndarray) -> np.ndarray | None:
    """``-H^-1 g`` in Jacobi-scaled coordinates, with ``|eigenvalue|`` floored at 1e-12 of
    the largest (a saddle's negative curvature becomes descent; None: no step)."""
    d = np.sqrt(np.maximum(np.abs(np.diag(hess)), 1e-300))
    hs = hess / np.outer(d, d)
    if not np.isfinite(hs).all():
        return None
    lam, vec = np.linalg.eigh(hs)
    top = float(np.max(np.abs(lam)))
    if not top > 0:
        return None
    lam = np.maximum(np.abs(lam), 1e-12 * top)
    step = -(vec @ ((vec.T @ (g / d)) / lam)) / d
    return step if np.isfinite(step).all() else None


def fit_vpnls(
    table: RunTable,
    *,
    delta: float = 1e-3,
    drop_highest: int = 0,
    weights: Any = None,
    basin_rtol: float = 1e-5,
    max_iter: int = 500,
    alphas: np.ndarray = ALPHAS,
    betas: np.ndarray = ALPHAS,
    result_cls: type[LawFit] = LawFit,
) -> LawFit:
    """Approach 3 by variable projection (module docstring): the same objective, the same
    kind of fit and the same diagnostics as :func:`~scalelab.laws.fits.fit_form` gives for
    the Hoffmann et al. grid. ``alphas`` and ``betas`` are the profile's exponent grid."""
    t0 = time.perf_counter()
    if not (delta > 0):
        raise UserError(f"Huber delta must be positive, got {delta}")
    alphas, betas = _exponents(alphas, "alphas"), _exponents(betas, "betas")
    form = ChinchillaForm()
    with single_threaded_blas():
        sel, _, w = select_points(table, form, drop_highest=drop_highest, weights=weights)
        search = _search(sel, w, delta, alphas, betas, max_iter, basin_rtol)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fit = fit_form(
                form,
                table,
                delta=delta,
                drop_highest=drop_highest,
                weights=weights,
                starts=search.theta[None, :],
                basin_rtol=basin_rtol,
                max_iter=max_iter,
                result_cls=result_cls,
            )
    for c in caught:  # fit_form's notes on its single start are replaced below
        if not issubclass(c.category, FitWarning):
            warnings.warn_explicit(c.message, c.category, c.filename, c.lineno)
    diag = _diagnostics(fit, sel, search, (alphas, betas), basin_rtol, t0)
    for note in diag.warnings:
        warnings.warn(f"{form.name} fit: {note}", FitWarning, stacklevel=3)
    return dataclasses.replace(fit, diagnostics=diag)


def _exponents(values: Any, name: str) -> np.ndarray:
    """An exponent grid: at least 3 finite, increasing values."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 3 or not np.isfinite(v).all() or np.any(np.diff(v) <= 0):
        raise UserError(f"{name} must be at least 3 finite, increasing exponents")
    return v


@dataclasses.dataclass(frozen=True, eq=False)
class _Search:
    """What the profile search found (parameters uncentred): the optimum, and per refit
    start where it began, where it ended and whether it reached the optimum."""

    theta: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    f: np.ndarray
    status: np.ndarray
    reached: np.ndarray
    n_screened: int


def _search(
    sel: RunTable,
    w: np.ndarray | None,
    delta: float,
    alphas: np.ndarray,
    betas: np.ndarray,
    max_iter: int,
    rtol: float,
) -> _Search:
    """Steps 1-4 of the module docstring on the selected points."""
    ln, ld, y = np.log(sel.N), np.log(sel.D), np.asarray(sel.loss, dtype=np.float64)
    prof = exponent_profile(ln, ld, y, w, alphas, betas)
    flat, n_lead = profile_starts(prof, BLOCKS, N_MINIMA)
    data = (ln - prof.log_n0, ld - prof.log_d0, np.log(y))  # centred coordinates
    obj = ChinchillaObjective(*data, delta=delta, weights=w)
    x0 = prof.theta(flat, floor=1e-4 * float(y.min()))
    screen = batched_lbfgs(obj, x0, max_iter=SCREEN_ITER, ftol=1e-10, behind=10.0)
    order = n_lead + np.argsort(screen.f[n_lead:], kind="stable")[:KEEP]
    keep = np.r_[np.arange(n_lead), order].astype(np.int64)
    keep = keep[np.isfinite(screen.f[keep])]
    if keep.size == 0:
        raise UserError(
            f"{sel.source}: the chinchilla law could not be evaluated at any start "
            "(every prediction was non-finite or non-positive)"
        )
    batch = batched_lbfgs(obj, screen.x[keep], max_iter=max_iter, ftol=1e-10, behind=10.0)
    theta, reached = _finish(obj, data, w, batch.x, batch.f, rtol)
    n0, d0 = prof.log_n0, prof.log_d0
    return _Search(
        theta=uncentre(theta, n0, d0),
        starts=uncentre(x0[keep], n0, d0),
        ends=uncentre(batch.x, n0, d0),
        f=batch.f,
        status=batch.status,
        reached=reached,
        n_screened=int(flat.size),
    )


def _finish(
    obj: ChinchillaObjective,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    w: np.ndarray | None,
    ends: np.ndarray,
    f: np.ndarray,
    rtol: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Polish the best end points (and runners-up within 10%), Newton-refine the winner,
    try its boundaries. Returns the optimum and which ends reached it: those in a group
    (of ends within ``rtol`` of each other) whose polished leader came within ``rtol``."""
    atol = 1e-12 * data[2].size
    optima = distinct_optima(ends, f, rtol=rtol, atol=atol)
    f_top = optima[0][1]
    close = [(x, fx) for x, fx in optima[:3] if fx <= f_top + 0.1 * abs(f_top)]
    polished = [polish(obj.single, x) for x, _ in close]
    win = int(np.argmin([p[1] for p in polished]))
    theta, f_best = polished[win][0], polished[win][1]
    newton = newton_refine(data, theta, w, obj.delta)
    f_newton, _ = obj.single(newton)
    if f_newton < f_best:
        theta, f_best = newton, f_newton
    theta, f_best = _try_bounds(obj, data, theta, f_best)
    tol = rtol * abs(f_best) + atol
    reached = f <= f_best + tol
    for (_, fx), p in zip(close, polished):
        if p[1] <= f_best + tol:
            reached |= (f >= fx) & (f <= fx * (1 + rtol) + atol)
    return theta, reached


def _try_bounds(
    obj: ChinchillaObjective,
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
    theta: np.ndarray,
    f_best: float,
) -> tuple[np.ndarray, float]:
    """The optimum, or a better one with one of ``E, A, B`` pinned at 0 (``OFF``).

    Tried only for a degenerate optimum (an exponent below 0.1, or a term below 1% of the
    lowest loss at every point): there L-BFGS creeps along a valley towards such a
    boundary (``E -> 0`` while ``beta -> 0``) and stops wherever its tolerance says.
    """
    ln, ld, log_y = data
    terms = [np.max(theta[0] - theta[3] * ln), np.max(theta[1] - theta[4] * ld), theta[2]]
    small = np.array(terms) < math.log(1e-2) + float(np.min(log_y))
    if not (min(theta[3], theta[4]) < 0.1 or small.any()):
        return theta, f_best
    best = (theta, f_best)
    for k in (2, 0, 1):  # E, A, B
        if theta[k] <= OFF:
            continue
        x0 = theta.copy()
        x0[k] = OFF
        lo, hi = np.full(5, -np.inf), np.full(5, np.inf)
        lo[k] = hi[k] = OFF
        x, fx, *_ = polish(obj.single, x0, lower=lo, upper=hi)
        if fx < best[1]:
            best = (x, fx)
    return best


def _diagnostics(
    fit: LawFit,
    sel: RunTable,
    search: _Search,
    grid: tuple[np.ndarray, np.ndarray],
    rtol: float,
    t0: float,
) -> Any:
    """The finishing fit's diagnostics with the counts and notes of the search: its
    notes are those ``fit_form`` makes, judged on the search's starts instead of one."""
    d = fit.diagnostics
    theta = np.asarray(fit.theta)
    n_starts, n_best = int(search.f.size), int(search.reached.sum())
    notes: list[tuple[str, str]] = []
    if n_best <= 1 < n_starts:
        notes.append(("one start", f"only {n_best} of {n_starts} starts reached the best optimum"))
    hit = search.reached
    notes += fit.law.trust_notes(
        theta, starts=search.starts[hit], ends=search.ends[hit], log_y=np.log(sel.loss)
    )
    (alphas, betas), al, be = grid, theta[3], theta[4]
    if not (alphas[0] <= al <= alphas[-1] and betas[0] <= be <= betas[-1]):
        notes.append(("outside the profile", (
            f"the exponents (alpha {al:.4g}, beta {be:.4g}) lie outside the profiled grid "
            f"[{alphas[0]:g}, {alphas[-1]:g}] x [{betas[0]:g}, {betas[-1]:g}]; compare "
            "method='grid'"
        )))  # fmt: skip
    units = law_results.units_warning(fit, sel)
    if units is not None:
        notes.append(("units", units))
    first = [] if d.converged else [law_results.not_converged_note(d.message, d.grad_max)]
    atol = 1e-12 * fit.n_points
    rest = ~search.reached
    others = distinct_optima(search.ends[rest], search.f[rest], rtol=rtol, atol=atol)
    changes: dict[str, Any] = {
        "n_starts": n_starts,
        "n_best_basin": n_best,
        "second_objective": float(others[0][1]) if others else math.inf,
        "n_basins": 1 + len(others),
        "status_counts": {
            STATUS_TEXT[s]: int(c) for s, c in zip(*np.unique(search.status, return_counts=True))
        },
        "local_optima": (tuple(fit.theta),) + tuple(tuple(map(float, x)) for x, _ in others[:4]),
        "warnings": tuple(first + [text for _, text in notes]),
        "seconds": time.perf_counter() - t0,
        "cautions": tuple(dict.fromkeys(tag for tag, _ in notes)),
    }
    return dataclasses.replace(d, **changes)
