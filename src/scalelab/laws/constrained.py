"""Data-constrained scaling (Muennighoff et al. 2023): the Chinchilla law with repeated data.

Muennighoff et al. (2023, "Scaling Data-Constrained Language Models", arXiv 2305.16264,
Sec. 3, eqs. 5-7) replace D (and optionally N) in ``L = E + A/N^alpha + B/D^beta`` by an
*effective* amount that discounts repetition. With ``U_D`` unique tokens seen and
``R_D = D/U_D - 1`` repetitions beyond the first epoch,

    D' = U_D + U_D R_D* (1 - exp(-R_D / R_D*))                               (eq. 5)

so the R-th repetition is worth ``exp(-R/R_D*)`` of fresh data and ``D' <= (1 + R_D*) U_D``.
Here ``U_D = min(U, D)``: a run with ``D <= U`` sees every token once and ``D' = D``.
The N side (eq. 6, ``excess_params=True``) discounts parameters beyond ``U_N``, the
compute-optimal size for ``U_D`` tokens, the same way:
``N' = U_N + U_N R_N* (1 - exp(-R_N / R_N*))``, ``U_N = min(N, N_opt(U_D))``,
``R_N = N/U_N - 1``; ``N_opt(U_D)`` solves Chinchilla's optimality condition
``alpha A N^-alpha = beta B U_D^-beta`` (Hoffmann et al. 2022, eq. 4), i.e.
``log N_opt = (log(alpha A / (beta B)) + beta log U_D) / alpha``. The loss is

    L = E + A / N'^alpha + B / D'^beta                                       (eq. 7)

On C4 the authors fit ``R_D* ~ 15.4`` and ``R_N* ~ 5.3`` (with ``E = 1.87, A = 521,
B = 1488, alpha = beta = 0.353``; Sec. 3 and the fitted values printed in the README of
their repository, huggingface/datablations: R_D* = 15.387756, R_N* = 5.309743):
see :data:`MUENNIGHOFF_2023`. They fit the N side too; it is off by default here because
it also changes single-epoch predictions for models larger than ``N_opt(U)`` (so a table
without repetition would no longer give Chinchilla's fit) and it needs runs with such
over-sized models to identify ``R_N*``.

The fit is Chinchilla's Approach 3 (Huber on log L, multi-start L-BFGS; :func:`.fits.fit_form`)
with ``theta = (log A, log B, log E, alpha, beta, log R_D* [, log R_N*])`` and the exact
Jacobian. :meth:`DataConstrainedFit.optimal` gives the loss-minimising N and D at compute
C when only U unique tokens exist (D may exceed U: repeated epochs).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import FitWarning, LawFit, _argmin_n, _budgets, fit_form
from scalelab.laws.fits import interval_from_samples as _interval
from scalelab.laws.forms import Data, LawForm, _exp, _lse_weights
from scalelab.laws.results import Allocation, register
from scalelab.laws.table import RunTable, derive_missing

MUENNIGHOFF_2023 = {
    "E": 1.87,
    "A": 521.0,
    "B": 1488.0,
    "alpha": 0.353,
    "beta": 0.353,
    "R_D_star": 15.4,
    "R_N_star": 5.3,
}
"""The data-constrained law fitted on C4 by Muennighoff et al. (2023, arXiv 2305.16264,
Sec. 3; values as in their repository's README)."""

# Bounds on log R*: R* in [~1e-3, ~1.6e5] epochs. Below, repetition is worthless; above, a
# repeated token is as good as a new one at any epoch count a study can run.
LOG_R_BOUNDS = (-7.0, 12.0)


def effective_tokens(D: Any, U: Any, r_star: Any) -> np.ndarray:  # noqa: N803
    """``D'`` of eq. 5 (Muennighoff et al. 2023) for plain values (broadcast together)."""
    d, u, s = (np.asarray(v, dtype=np.float64) for v in (D, U, r_star))
    ud = np.minimum(u, d)
    return ud * (1.0 + s * -np.expm1(-np.expm1(np.log(d) - np.log(ud)) / s))


def optimal_params_for(U: Any, params: Mapping[str, float]) -> np.ndarray:  # noqa: N803
    """``N_opt(U)``: the Chinchilla compute-optimal size for U tokens (Hoffmann et al. 2022,
    eq. 4: ``alpha A N^-alpha = beta B U^-beta``)."""
    al, be = params["alpha"], params["beta"]
    k = math.log(al * params["A"]) - math.log(be * params["B"])
    return np.exp((k + be * np.log(np.asarray(U, dtype=np.float64))) / al)


def data_constrained_loss(
    N: Any,  # noqa: N803 - the quantities' names
    D: Any,  # noqa: N803
    U: Any,  # noqa: N803
    params: Mapping[str, float],
) -> np.ndarray:
    """Eq. 7 for plain parameter values (e.g. to plant a law); the N side (eq. 6) is used
    when ``params`` has ``R_N_star``."""
    n, d = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    d_eff = effective_tokens(d, U, params["R_D_star"])
    if "R_N_star" in params:
        un = np.minimum(n, optimal_params_for(np.minimum(U, d), params))
        n = effective_tokens(n, un, params["R_N_star"])  # same discount, eq. 6
    return (
        params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d_eff ** -params["beta"]
    )


def _repeat_term(lu: np.ndarray, lx: np.ndarray, log_s: np.ndarray) -> tuple[np.ndarray, ...]:
    """``log X'`` for ``X' = U + U s (1 - exp(-R/s))``, ``R = X/U - 1`` (``lu <= lx``, logs;
    ``lu`` may be ``[1, P]`` or ``[b, P]``, ``log_s [b, 1]``). Returns ``(log X', d/dlog s,
    d/dlog U)`` (the last with X fixed)."""
    r = np.expm1(lx - lu)  # repetitions beyond the first, >= 0
    s = np.exp(log_s)
    x = r / s
    ex = np.exp(-x)
    q = -np.expm1(-x)  # 1 - exp(-R/s)
    h = 1.0 + s * q
    g = lu + np.log(h)
    dg_ds = s * (q - x * ex) / h
    dg_du = 1.0 - ex * (r + 1.0) / h
    return g, dg_ds, dg_du


class DataConstrainedForm(LawForm):
    """``L = E + A/N'^alpha + B/D'^beta`` (Muennighoff et al. 2023, eqs. 5-7)."""

    name = "data_constrained"
    variables = ("N", "D", "U")
    offset_param = "E"
    exponent_params = ("alpha", "beta")

    def __init__(self, *, excess_params: bool = False) -> None:
        if not isinstance(excess_params, bool):
            raise UserError(f"excess_params must be true or false, got {excess_params!r}")
        self.excess_params = excess_params
        names = ("a", "b", "e", "alpha", "beta", "log_rd")
        self.theta_names = names + (("log_rn",) if excess_params else ())
        d_side = "D' = U_D + U_D R_D*(1 - exp(-R_D/R_D*)), U_D = min(U, D), R_D = D/U_D - 1"
        if excess_params:
            self.formula = (
                f"L = E + A/N'^alpha + B/D'^beta, {d_side}; N' = U_N + U_N R_N*(1 - "
                "exp(-R_N/R_N*)), U_N = min(N, N_opt(U_D)), R_N = N/U_N - 1"
            )
        else:
            self.formula = f"L = E + A/N^alpha + B/D'^beta, {d_side}"

    def log_pred(self, theta: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray]:
        a, b, e, al, be, lrd = (theta[:, i : i + 1] for i in range(6))
        ln, ld = np.log(data["N"])[None, :], np.log(data["D"])[None, :]
        lud = np.minimum(np.log(data["U"])[None, :], ld)  # log U_D (U = inf: no cap)
        gd, gd_s, _ = _repeat_term(lud, ld, lrd)  # log D', [b, P]
        t2 = b - be * gd
        if not self.excess_params:
            t1 = a - al * ln
            lp, (w1, w2, w3) = _lse_weights(t1, t2, np.broadcast_to(e, t1.shape))
            cols = [w1, w2, w3, -w1 * ln, -w2 * gd, -w2 * be * gd_s]
            return lp, np.stack(np.broadcast_arrays(*cols), axis=-1)
        return self._log_pred_excess(theta, ln, lud, gd, gd_s, t2)

    def _log_pred_excess(self, theta, ln, lud, gd, gd_s, t2):
        """The N side (eq. 6): parameters beyond ``N_opt(U_D)`` discounted by ``R_N*``."""
        a, b, e, al, be, _, lrn = (theta[:, i : i + 1] for i in range(7))
        with np.errstate(invalid="ignore", divide="ignore"):
            lm = (a - b + np.log(al) - np.log(be) + be * lud) / al  # log N_opt(U_D), [b, P]
        over = ln > lm  # over-sized for the unique data: U_N = N_opt(U_D)
        lun = np.where(over, lm, ln)
        gn, gn_s, gn_u = _repeat_term(lun, np.broadcast_to(ln, lun.shape), lrn)
        gn_u, gn_s = np.where(over, gn_u, 0.0), np.where(over, gn_s, 0.0)
        t1 = a - al * gn
        lp, (w1, w2, w3) = _lse_weights(t1, t2, np.broadcast_to(e, t1.shape))
        # t1 = a - alpha log N', log N' = f(log N_opt(U_D), log R_N*) on the over-sized
        # points, d log N_opt / d(a, b, alpha, beta) = (1, -1, (1 - alpha lm)/alpha, lud - 1/beta)/alpha.
        cols = [
            w1 * (1.0 - gn_u),
            w1 * gn_u + w2,
            w3,
            w1 * (-gn - gn_u * (1.0 - al * lm) / al),
            -w1 * gn_u * (lud - 1.0 / be) - w2 * gd,
            -w2 * be * gd_s,
            -w1 * al * gn_s,
        ]
        return lp, np.stack(np.broadcast_arrays(*cols), axis=-1)

    def bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        lo = [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf, LOG_R_BOUNDS[0]]
        hi = [np.inf] * 5 + [LOG_R_BOUNDS[1]]
        if self.excess_params:  # log alpha, log beta in N_opt(U_D)
            lo[3] = lo[4] = 1e-3
            lo.append(LOG_R_BOUNDS[0])
            hi.append(LOG_R_BOUNDS[1])
        return np.array(lo), np.array(hi)

    def to_public(self, theta: np.ndarray) -> dict[str, float]:
        a, b, e, al, be, lrd = (float(t) for t in theta[:6])
        out = {"E": _exp(e), "A": _exp(a), "B": _exp(b), "alpha": al, "beta": be}
        out["R_D_star"] = _exp(lrd)
        if self.excess_params:
            out["R_N_star"] = _exp(float(theta[6]))
        return out

    def spec(self) -> dict[str, Any]:
        return {"excess_params": self.excess_params}

    def grid(self, data: Data, log_y: np.ndarray) -> np.ndarray:
        return data_constrained_grid(excess_params=self.excess_params)


def data_constrained_grid(*, excess_params: bool = False, full: bool = False) -> np.ndarray:
    """Starts: Chinchilla's ``(log A, log B, log E, alpha, beta)`` (3^5 values, or with
    ``full`` the 4,500 of Hoffmann et al. 2022, App. D.2) times ``R_D* in {2, 10, 50}``
    (and ``R_N*`` likewise), spanning the ~15 epochs Muennighoff et al. found."""
    from scalelab.laws.chinchilla import hoffmann_grid, small_grid

    base = hoffmann_grid() if full else small_grid()
    if excess_params:  # N_opt(U_D) takes log alpha, log beta
        base = base[(base[:, 3] > 0) & (base[:, 4] > 0)]
    rs = np.log([2.0, 10.0, 50.0])
    extra = [rs, rs] if excess_params else [rs]
    rows = [np.concatenate([row, r]) for row in base for r in itertools.product(*extra)]
    return np.array(rows, dtype=np.float64)


@register("constrained_allocation")
@dataclasses.dataclass(frozen=True)
class ConstrainedAllocation(Allocation):
    """Compute-optimal N, D under a cap of ``unique_tokens`` (``epochs = D_opt / U``)."""

    kind: ClassVar[str] = "constrained_allocation"
    unique_tokens: float = math.inf
    """The unique tokens available (inf: no cap, every token fresh)."""
    epochs: tuple[float, ...] = ()
    """Passes over the unique data at each budget (``D_opt / U``; 0 without a cap)."""

    def rows(self) -> list[dict[str, float]]:
        out = super().rows()
        for row, ep in zip(out, self.epochs):
            row["epochs"] = ep
        return out


@register("data_constrained")
@dataclasses.dataclass(frozen=True)
class DataConstrainedFit(LawFit):
    """A fitted data-constrained law; ``predict(N, D, U=...)`` and
    ``optimal(C, unique_tokens=U)`` take the unique tokens (None: no cap)."""

    kind: ClassVar[str] = "data_constrained"

    def inputs(self, *, N=None, D=None, C=None, x=None, U=None) -> dict[str, np.ndarray]:  # noqa: N803
        """N, D (one derived from C = k N D if needed) and U unique tokens (None: unlimited,
        D' = D), broadcast together; ``predict(N, D, U=...)`` passes U here."""
        given = {k: v for k, v in (("N", N), ("D", D), ("C", C)) if v is not None}
        given["U"] = math.inf if U is None else U
        arrs = {k: np.atleast_1d(np.asarray(v, dtype=np.float64)) for k, v in given.items()}
        try:
            shape = np.broadcast_shapes(*(a.shape for a in arrs.values()))
        except ValueError:
            raise UserError("N, D, C and U need equal lengths (or a single value)") from None
        arrs = {k: np.broadcast_to(a, shape).ravel() for k, a in arrs.items()}
        derived = None if self.flops_per_nd is None else derive_missing(arrs, self.flops_per_nd)
        if derived is not None:
            arrs[derived[0]] = derived[1]
        missing = [v for v in ("N", "D") if v not in arrs]
        if missing:
            raise UserError(f"the data_constrained law needs N and D; missing {', '.join(missing)}")
        for v in ("N", "D"):
            if not (np.isfinite(arrs[v]).all() and (arrs[v] > 0).all()):
                raise UserError(f"{v} must be positive and finite to evaluate the law")
        if not (arrs["U"] > 0).all():  # inf allowed: no cap
            raise UserError("unique tokens U must be positive")
        return {v: arrs[v] for v in self.variables}

    def optimal(
        self,
        compute: float | Sequence[float],
        *,
        unique_tokens: float | None = None,
        level: float = 0.95,
    ) -> ConstrainedAllocation:
        """Loss-minimising N, D = C/(kN) at each budget when only ``unique_tokens`` unique
        tokens exist (D may exceed them: repeated epochs); None: unlimited fresh data.
        Intervals from the bootstrap samples when one is attached."""
        if self.flops_per_nd is None:
            raise UserError("compute-optimal allocation needs a FLOP convention (C = k N D)")
        u = unique_cap(unique_tokens)
        cs, k = _budgets(compute), self.flops_per_nd
        n_opt = np.array(
            [_argmin_n(lambda n, c=c: self.predict(N=n, D=c / (k * n), U=u), c, k) for c in cs]
        )
        d_opt = cs / (k * n_opt)
        est = {
            "n_opt": n_opt,
            "d_opt": d_opt,
            "tokens_per_param": d_opt / n_opt,
            "loss": self.predict(N=n_opt, D=d_opt, U=u),
        }
        intervals = {}
        thetas = getattr(self.bootstrap, "theta_samples", ())
        if thetas:
            th = np.asarray(thetas)
            cols = [_grid_argmin(self.law, th, c, k, u) for c in cs]  # ([R], [R]) per budget
            for key in est:
                intervals[key] = tuple(
                    _interval(_draw(key, n_s, l_s, c, k), float(est[key][i]), level)
                    for i, (c, (n_s, l_s)) in enumerate(zip(cs, cols))
                )
        return ConstrainedAllocation(
            compute=tuple(cs.tolist()),
            **{key: tuple(v.tolist()) for key, v in est.items()},
            intervals=intervals,
            unique_tokens=u,
            epochs=tuple((d_opt / u).tolist()),
        )

    def summary(self) -> str:
        p = self.params
        text = super().summary()
        note = (
            f"\n  repeated data: the R-th repetition is worth exp(-R/{p['R_D_star']:.3g}) of a "
            f"fresh token; U unique tokens give at most {1 + p['R_D_star']:.3g} U effective tokens"
        )
        if "R_N_star" in p:
            note += f"; parameters beyond N_opt(U_D) decay with R_N* = {p['R_N_star']:.3g}"
        return text + note


def _draw(key: str, n_s: np.ndarray, l_s: np.ndarray, c: float, k: float) -> np.ndarray:
    d_s = c / (k * n_s)
    return {"n_opt": n_s, "d_opt": d_s, "tokens_per_param": d_s / n_s, "loss": l_s}[key]


def unique_cap(unique_tokens: float | None) -> float:
    """The unique-token cap as a number (inf when None); a UserError unless positive."""
    if unique_tokens is None:
        return math.inf
    u = float(unique_tokens)
    if not (u > 0 and not math.isnan(u)):
        raise UserError(f"unique tokens must be a positive number, got {unique_tokens!r}")
    return u


def _grid_argmin(
    law: LawForm, thetas: np.ndarray, c: float, k: float, u: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter row, argmin over N of the law at compute c with U = u: a log grid
    refined by the parabola through the best point and its neighbours. -> ``([R], [R])``."""
    t = np.linspace(0.0, math.log(c / k), 801)  # log N, with D = C/(kN) >= 1
    n = np.exp(t)
    with np.errstate(all="ignore"):
        lp, _ = law.log_pred(thetas, {"N": n, "D": c / (k * n), "U": np.full_like(n, u)})
    lp = np.where(np.isfinite(lp), lp, np.inf)
    i = np.clip(np.argmin(lp, axis=1), 1, t.size - 2)
    rows = np.arange(thetas.shape[0])
    y0, y1, y2 = lp[rows, i - 1], lp[rows, i], lp[rows, i + 1]
    h = t[1] - t[0]
    with np.errstate(all="ignore"):
        shift = 0.5 * h * (y0 - y2) / (y0 - 2 * y1 + y2)
    shift = np.where(np.isfinite(shift), np.clip(shift, -h, h), 0.0)
    return np.exp(t[i] + shift), np.exp(y1 - 0.25 * (y0 - y2) * shift / h)


def fit_data_constrained(
    table: RunTable,
    *,
    excess_params: bool = False,
    delta: float = 1e-3,
    grid: np.ndarray | None = None,
    drop_highest: int = 0,
    weights: Any = None,
    basin_rtol: float = 1e-5,
    max_iter: int = 500,
) -> DataConstrainedFit:
    """Fit eq. 7 of Muennighoff et al. (2023) to a table with a unique-tokens column U.

    ``grid`` is ``[K, 6]`` (``[K, 7]`` with ``excess_params``) starts in
    ``(log A, log B, log E, alpha, beta, log R_D* [, log R_N*])``; default
    :func:`data_constrained_grid`. A table where no run repeats data (D <= U everywhere)
    gives Chinchilla's fit with R_D* unidentified, and says so in the diagnostics.
    """
    if table.U is None:
        raise UserError(
            f"{table.source}: the data_constrained law needs the unique tokens of each run: "
            "a U column (unique_tokens, U, U_D or unique; or name it with --u COLUMN)"
        )
    form = DataConstrainedForm(excess_params=excess_params)
    fit = fit_form(
        form,
        table,
        delta=delta,
        drop_highest=drop_highest,
        weights=weights,
        starts=grid,
        basin_rtol=basin_rtol,
        max_iter=max_iter,
        result_cls=DataConstrainedFit,
    )
    assert isinstance(fit, DataConstrainedFit)
    notes = _identification_notes(fit, table.subset(np.isin(table.rows, fit.rows)))
    for note in notes:
        warnings.warn(f"data_constrained fit: {note}", FitWarning, stacklevel=2)
    if notes:
        diag = dataclasses.replace(fit.diagnostics, warnings=fit.diagnostics.warnings + notes)
        fit = dataclasses.replace(fit, diagnostics=diag)
    return fit


def _identification_notes(fit: DataConstrainedFit, table: RunTable) -> tuple[str, ...]:
    """Why R_D* (or R_N*) cannot be read from these points, if it cannot."""
    assert table.D is not None and table.U is not None and table.N is not None
    notes = []
    if not (table.D > table.U).any():
        notes.append(
            "no run repeats data (D <= U in every row): R_D* is not identified and the law "
            "is Chinchilla's"
        )
    if "R_N_star" in fit.params:
        n_opt = optimal_params_for(np.minimum(table.U, table.D), fit.params)
        if not (n_opt < table.N).any():
            notes.append(
                "no model is larger than N_opt(U_D), the compute-optimal size for its unique "
                "data: R_N* is not identified"
            )
    return tuple(notes)


__all__ = [
    "MUENNIGHOFF_2023",
    "ConstrainedAllocation",
    "DataConstrainedFit",
    "DataConstrainedForm",
    "data_constrained_grid",
    "data_constrained_loss",
    "effective_tokens",
    "fit_data_constrained",
    "optimal_params_for",
    "unique_cap",
]
