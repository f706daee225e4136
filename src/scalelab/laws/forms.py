"""Law forms: each gives a log-prediction with its exact Jacobian, a start grid, and the map
between the optimisation parameters ``theta`` and the published parameters.

All forms predict ``log L`` because every fit minimises a Huber loss on log-residuals.
Shapes: ``theta [b, p]`` (one row per start), data ``{var: [P]}``,
``log_pred -> (lp [b, P], jac [b, P, p])``.

Forms:

- ``chinchilla`` (Hoffmann et al. 2022): ``L = E + A/N^alpha + B/D^beta``, theta =
  ``(log A, log B, log E, alpha, beta)``, prediction ``LSE(a - alpha log N, b - beta log D, e)``.
- ``kaplan_n`` / ``kaplan_d`` / ``kaplan_c`` (Kaplan et al. 2020, eqs. 1.1-1.3):
  ``L = (X_c / X)^alpha_X``, theta = ``(alpha log X_c, alpha)``; linear in log space.
- ``kaplan_nd`` (Kaplan et al. 2020, eq. 1.5): ``L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D``,
  theta = ``(log N_c, log D_c, alpha_N, alpha_D)``.
- ``power_law``: ``L = E + A x^-alpha`` (or ``A x^-alpha`` without offset) in one variable.
- ``custom``: any expression over N, D, C and bounded parameters (see :mod:`.expr`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.expr import Expression, check_bounds, parse_expression
from scalelab.laws.objective import ChinchillaObjective, HuberObjective

Data = Mapping[str, np.ndarray]


def _exp(x: float) -> float:
    """exp that saturates to inf (a degenerate fit's log-coefficient can exceed 709)."""
    return math.exp(x) if x < 709.0 else math.inf


class LawForm:
    """Base class; subclasses define the law."""

    name: str = ""
    variables: tuple[str, ...] = ()
    theta_names: tuple[str, ...] = ()
    formula: str = ""
    offset_param: str | None = None
    """Published name of the law's irreducible additive term (``E``), if it has one."""
    exponent_params: tuple[str, ...] = ()
    """Published names of its power-law exponents (``alpha``, ``beta``)."""
    blind_starts: bool = True
    """Whether :meth:`grid` is a blind grid (an optimum exactly at a grid value means the
    parameter did not move); False where the start is already an estimate (Kaplan's OLS)."""

    # ---- to be provided by subclasses
    def log_pred(self, theta: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def to_public(self, theta: np.ndarray) -> dict[str, float]:
        raise NotImplementedError

    def grid(self, data: Data, log_y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # ---- defaults
    @property
    def n_params(self) -> int:
        return len(self.theta_names)

    def bounds(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return None, None

    def spec(self) -> dict[str, Any]:
        """What, besides ``name``, rebuilds this form (see :func:`make_form`)."""
        return {}

    def objective(
        self, data: Data, log_y: np.ndarray, *, delta: float, weights: np.ndarray | None
    ) -> HuberObjective | ChinchillaObjective:
        return HuberObjective(
            lambda th: self.log_pred(th, data), log_y, delta=delta, weights=weights
        )

    def predict(self, theta: np.ndarray, data: Data) -> np.ndarray:
        """The law's value (not its log) for one parameter vector, ``[P]``."""
        lp, _ = self.log_pred(np.asarray(theta, float)[None, :], data)
        return np.exp(lp[0])

    def trust_notes(
        self,
        theta: np.ndarray,
        *,
        starts: np.ndarray | None = None,
        ends: np.ndarray | None = None,
        log_y: Any = None,
    ) -> list[tuple[str, str]]:
        """Reasons to distrust an optimum ``theta`` even when the optimiser converged, as
        ``(caution, warning)`` pairs: parameters that no start reaching this optimum moved
        (``starts`` and ``ends`` ``[m, p]``: those starts and where they ended) or at a bound,
        an irreducible term ~0 or exponents below 0.05 (see :data:`NEGLIGIBLE_OFFSET`,
        :data:`MIN_EXPONENT`), and losses (``log_y``) with too little spread."""
        theta = np.asarray(theta, dtype=np.float64)
        notes: list[tuple[str, str]] = []
        if starts is not None and ends is not None and len(starts) and self.blind_starts:
            still = [n for n, m in zip(self.theta_names, _moved(starts, ends)) if not m]
            if still:
                notes.append(("did not move", (
                    f"still at their start values (the optimiser did not move them): "
                    f"{', '.join(still)}; the objective is flat in them there, or they are "
                    "badly scaled"
                )))  # fmt: skip
        lo, hi = self.bounds()
        if lo is not None and hi is not None:
            at = [
                f"{n} ({'lower' if np.isclose(t, a) else 'upper'})"
                for n, t, a, b in zip(self.theta_names, theta, lo, hi)
                if np.isclose(t, a) or np.isclose(t, b)
            ]
            if at:
                notes.append(("at a bound", f"parameters at a bound: {', '.join(at)}"))
        public = self.to_public(theta)
        e_name = self.offset_param
        if e_name in public and log_y is not None and len(log_y):
            e, y_min = public[e_name], float(np.exp(np.min(log_y)))
            if e < NEGLIGIBLE_OFFSET * y_min:
                notes.append((f"{e_name} ~ 0", (
                    f"{e_name} = {e:.3g} is below {NEGLIGIBLE_OFFSET:g} of the lowest loss "
                    f"({y_min:.4g}): the fit dropped the irreducible term, so its asymptote and "
                    "the exponents traded against it are not identified by these points"
                )))  # fmt: skip
        small = [n for n in self.exponent_params if abs(public.get(n, 1.0)) < MIN_EXPONENT]
        if e_name is not None and small:
            vals = ", ".join(f"{n} = {public[n]:.3g}" for n in small)
            notes.append((f"exponent < {MIN_EXPONENT:g}", (
                f"{vals} below {MIN_EXPONENT:g}: the power-law term is then nearly constant "
                f"over the data and trades off against {e_name}"
            )))  # fmt: skip
        if log_y is not None and 0 < (n := distinct_count(log_y)) <= self.n_params:
            notes.append(("no spread", (
                f"only {n} distinct loss values for {self.n_params} parameters: these losses "
                "cannot identify the law"
            )))  # fmt: skip
        return notes


NEGLIGIBLE_OFFSET = 1e-3
"""An irreducible term below this fraction of the lowest observed loss is reported as ~0:
dropping it changes every log-prediction by less than 1e-3, the Huber delta of Hoffmann et
al. (2022, App. D.2), i.e. below what the fit itself treats as the noise scale; such a law is
a pure power law (E, then alpha, ran to 0 on the (Mis)fitting runs with non-embedding N)."""

MIN_EXPONENT = 0.05
"""Exponents of a law with an irreducible term below this are reported: published data and
parameter exponents of such laws are 0.28-0.37 (Hoffmann et al. 2022, Approach 3;
Besiroglu et al. 2024, Table 1), and x^-0.05 varies by only 1.41x over three decades of x,
so the term is nearly a second constant. Laws without an offset are not checked: Kaplan et
al. (2020, eq. 1.3) measure alpha_C = 0.050 in ``L = (C_c/C)^alpha_C``."""


def distinct_count(values: Any, rtol: float = 1e-9) -> int:
    """How many distinct values (within ``rtol`` of each other, relative to the largest)."""
    v = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if v.size == 0:
        return 0
    tol = rtol * max(float(np.max(np.abs(v))), 1e-300)
    return 1 + int(np.sum(np.diff(v) > tol))


def _moved(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Per parameter: whether any start moved it (by more than 1e-8 of its size, at least
    1e-8). A parameter the objective does not see keeps its start value to the last bit (or
    moves by ~1e-12 of it when badly scaled); one the optimiser works on moves far more."""
    s, e = np.array(starts, dtype=np.float64, ndmin=2), np.array(ends, dtype=np.float64, ndmin=2)
    tol = 1e-8 * np.maximum(np.abs(s), 1.0)
    return np.any(~(np.abs(e - s) <= tol), axis=0)


def _lse_weights(*terms: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """log(sum exp(terms)) and the softmax weight of each term (all broadcast to one shape)."""
    m = terms[0]
    for t in terms[1:]:
        m = np.maximum(m, t)
    exps = [np.exp(t - m) for t in terms]
    total = sum(exps)
    return m + np.log(total), [e / total for e in exps]


class ChinchillaForm(LawForm):
    name = "chinchilla"
    variables = ("N", "D")
    theta_names = ("a", "b", "e", "alpha", "beta")
    formula = "L = E + A/N^alpha + B/D^beta"
    offset_param = "E"
    exponent_params = ("alpha", "beta")

    def log_pred(self, theta: np.ndarray, data: Data) -> tuple[np.ndarray, np.ndarray]:
        a, b, e, al, be = (theta[:, i : i + 1] for i in range(5))
        ln, ld = np.log(data["N"])[None, :], np.log(data["D"])[None, :]
        t1, t2 = a - al * ln, b - be * ld
        lp, (w1, w2, w3) = _lse_weights(t1, t2, np.broadcast_to(e, t1.shape))
        jac = np.stack([w1, w2, w3, -w1 * ln, -w2 * ld], axis=-1)
        return lp, jac

    def objective(self, data, log_y, *, delta, weights):
        return ChinchillaObjective(
            np.log(data["N"]), np.log(data["D"]), log_y, delta=delta, weights=weights
        )

    def to_public(self, theta: np.ndarray) -> dict[str, float]:
        a, b, e, al, be = (float(t) for t in theta)
        return {"E": _exp(e), "A": _exp(a), "B": _exp(b), "alpha": al, "beta": be}

    def grid(self, data: Data, log_y: np.ndarray) -> np.ndarray:
        return hoffmann_grid()


def hoffmann_grid() -> np.ndarray:
    """The 4,500-point initialisation grid of Hoffmann et al. (2022), Appendix D.2.

    ``alpha, beta in {0, 0.5, ..., 2}``, ``e in {-1, -0.5, ..., 1}``, ``a, b in {0, 5, ..., 25}``.
    Columns ``(a, b, e, alpha, beta)``.
    """
    ab = np.arange(0.0, 30.0, 5.0)
    e = np.arange(-1.0, 1.5, 0.5)
    exps = np.arange(0.0, 2.5, 0.5)
    return np.array(list(itertools.product(ab, ab, e, exps, exps)), dtype=np.float64)


class KaplanForm(LawForm):
    """``L = (X_c / X)^alpha`` for one variable X."""

    def __init__(self, variable: str) -> None:
        if variable not in ("N", "D", "C"):
            raise UserError(f"Kaplan single-variable law needs N, D or C, got {variable!r}")
        self.variable = variable
        self.name = f"kaplan_{variable.lower()}"
        self.variables = (variable,)
        self.theta_names = ("c0", "alpha")  # log L = c0 - alpha log X, c0 = alpha log X_c
        self.formula = f"L = ({variable}_c/{variable})^alpha_{variable}"
        self.exponent_params = (f"alpha_{variable}",)
        self.blind_starts = False  # the start is the OLS solution in log space

    def log_pred(self, theta, data):
        lx = np.log(data[self.variable])[None, :]
        lp = theta[:, 0:1] - theta[:, 1:2] * lx
        jac = np.stack([np.ones_like(lp), -np.broadcast_to(lx, lp.shape)], axis=-1)
        return lp, jac

    def to_public(self, theta):
        c0, al = float(theta[0]), float(theta[1])
        xc = math.exp(c0 / al) if al != 0 and abs(c0 / al) < 700 else math.inf
        return {f"{self.variable}_c": xc, f"alpha_{self.variable}": al}

    def spec(self):
        return {"variable": self.variable}

    def grid(self, data, log_y):
        # Linear in log space: ordinary least squares is the natural (and only) start.
        lx = np.log(data[self.variable])
        slope, icpt = np.polyfit(lx, log_y, 1)
        return np.array([[icpt, -slope], [icpt, 0.0]])


class KaplanNDForm(LawForm):
    """``L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D`` (Kaplan et al. 2020, eq. 1.5)."""

    name = "kaplan_nd"
    variables = ("N", "D")
    theta_names = ("log_Nc", "log_Dc", "alpha_N", "alpha_D")
    formula = "L = [(N_c/N)^(alpha_N/alpha_D) + D_c/D]^alpha_D"
    exponent_params = ("alpha_N", "alpha_D")

    def log_pred(self, theta, data):
        lnc, ldc, an, ad = (theta[:, i : i + 1] for i in range(4))
        ln, ld = np.log(data["N"])[None, :], np.log(data["D"])[None, :]
        ratio = an / ad
        t1, t2 = ratio * (lnc - ln), ldc - ld
        s, (w1, w2) = _lse_weights(t1, t2)
        lp = ad * s
        jac = np.stack([w1 * an, w2 * ad, w1 * (lnc - ln), s - w1 * t1], axis=-1)
        return lp, jac

    def bounds(self):
        # alpha_D divides alpha_N: keep it away from 0.
        return np.array([-np.inf, -np.inf, 1e-6, 1e-4]), np.full(4, np.inf)

    def to_public(self, theta):
        lnc, ldc, an, ad = (float(t) for t in theta)
        return {
            "N_c": math.exp(min(lnc, 700)),
            "D_c": math.exp(min(ldc, 700)),
            "alpha_N": an,
            "alpha_D": ad,
        }

    def grid(self, data, log_y):
        ln, ld = np.median(np.log(data["N"])), np.median(np.log(data["D"]))
        offs = np.array([0.0, 4.0, 8.0, 12.0, 16.0, 20.0])
        exps = np.array([0.05, 0.1, 0.2, 0.4, 0.8])
        return np.array(list(itertools.product(ln + offs, ld + offs, exps, exps)), dtype=np.float64)


class PowerLawForm(LawForm):
    """``y = E + A x^-alpha`` (``offset=True``) or ``y = A x^-alpha`` in one variable."""

    def __init__(self, variable: str = "x", *, offset: bool = True) -> None:
        self.variable = variable
        self.offset = offset
        self.name = "power_law"
        self.variables = (variable,)
        self.theta_names = ("a", "e", "alpha") if offset else ("a", "alpha")
        self.formula = f"y = E + A*{variable}^-alpha" if offset else f"y = A*{variable}^-alpha"
        self.offset_param = "E" if offset else None
        self.exponent_params = ("alpha",)
        self.blind_starts = offset  # without an offset the only start is the OLS solution

    def log_pred(self, theta, data):
        lx = np.log(data[self.variable])[None, :]
        if self.offset:
            a, e, al = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
            t1 = a - al * lx
            lp, (w1, w2) = _lse_weights(t1, np.broadcast_to(e, t1.shape))
            return lp, np.stack([w1, w2, -w1 * lx], axis=-1)
        a, al = theta[:, 0:1], theta[:, 1:2]
        lp = a - al * lx
        return lp, np.stack([np.ones_like(lp), -np.broadcast_to(lx, lp.shape)], axis=-1)

    def to_public(self, theta):
        if self.offset:
            a, e, al = (float(t) for t in theta)
            return {"E": _exp(e), "A": _exp(a), "alpha": al}
        a, al = (float(t) for t in theta)
        return {"A": _exp(a), "alpha": al}

    def spec(self):
        return {"variable": self.variable, "offset": self.offset}

    def grid(self, data, log_y):
        lx = np.log(data[self.variable])
        y = np.exp(log_y)
        slope, icpt = np.polyfit(lx, log_y, 1)
        if not self.offset:
            return np.array([[icpt, -slope]])
        # For each (alpha, E) put the curve through the median point: A = (y_med - E) x_med^alpha.
        x_med, y_med, y_min = float(np.median(lx)), float(np.median(y)), float(y.min())
        starts = [[icpt, math.log(1e-3 * y_min), -slope]]
        for al in (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0):
            for frac in (0.001, 0.25, 0.5, 0.75, 0.9, 0.98):
                e_val = frac * y_min
                if y_med - e_val <= 0:
                    continue
                starts.append([math.log(y_med - e_val) + al * x_med, math.log(e_val), al])
        return np.array(starts, dtype=np.float64)


LOG_FLOOR = 1e-12
"""A custom parameter bounded below by 0 and fitted as its log gets the lower bound
``LOG_FLOOR * hi`` (``log 0`` is not a number): twelve decades below its upper bound, where
the term it scales no longer moves any prediction at the 1e-3 Huber scale of the fit
(Hoffmann et al. 2022, App. D.2), i.e. indistinguishable from 0. An optimum there is
reported as at its lower bound."""


class CustomForm(LawForm):
    """A user expression with box-bounded parameters.

    Parameters that can only be positive are fitted as their logarithm (theta = log p; the
    published ``params`` stay in their own units), as the built-in forms fit log A, log B and
    log E: an amplitude's gradient in its own units is ~1/A times smaller than in log units,
    so an optimiser in raw units leaves A and B at their starts (on the Epoch Chinchilla
    points it stopped at A = 1.66667e6, B = 1.66667e8, five times the built-in form's
    objective). Exponents (parameters in the exponent of a ``**``) stay linear, as in
    Hoffmann et al.'s grid, unless their range is positive and wider than 100x. The
    parameterisation is part of :meth:`spec` (``log_params``); a saved fit whose spec has no
    ``log_params`` was fitted in raw units and is rebuilt that way.
    """

    def __init__(
        self,
        expression: str,
        bounds: Mapping[str, tuple[float, float]],
        *,
        n_starts: int = 4096,
        log_params: str | Sequence[str] = "auto",
    ) -> None:
        if not bounds:
            raise UserError("a custom law needs its parameters with bounds, e.g. alpha=0:2")
        bounds = {str(k): (float(v[0]), float(v[1])) for k, v in bounds.items()}
        check_bounds(bounds)
        self.expr: Expression = parse_expression(expression, list(bounds))
        self.bounds_map = bounds
        self.n_starts = n_starts
        self.name = "custom"
        self.variables = self.expr.variables
        self.log_params = _log_params(self.expr, bounds, log_params)
        self._log = np.array([p in self.log_params for p in self.expr.params], dtype=bool)
        self.theta_names = tuple(
            f"log_{p}" if p in self.log_params else p for p in self.expr.params
        )
        self.formula = f"L = {expression}"
        offsets = self.expr.offset_params
        self.offset_param = offsets[0] if len(offsets) == 1 else None
        self.exponent_params = self.expr.exponent_params

    def _params(self, theta: np.ndarray) -> np.ndarray:
        """Parameters in their own units, ``[b, p]``, from the optimisation's ``theta``."""
        p = np.array(theta, dtype=np.float64, ndmin=2)
        if self._log.any():
            with np.errstate(over="ignore"):
                p[:, self._log] = np.exp(p[:, self._log])
        return p

    def log_pred(self, theta, data):
        p = self._params(theta)
        val, grad = self.expr.value_and_grad(p, {v: data[v] for v in self.variables})
        if self._log.any():  # chain rule: d/d(log p) = p d/dp
            grad[:, :, self._log] *= p[:, None, self._log]
        with np.errstate(all="ignore"):
            lp = np.where(val > 0, np.log(np.where(val > 0, val, 1.0)), np.nan)
            jac = grad / val[:, :, None]
        return lp, jac

    def bounds(self):
        lo = np.array([self.bounds_map[p][0] for p in self.expr.params])
        hi = np.array([self.bounds_map[p][1] for p in self.expr.params])
        with np.errstate(divide="ignore", invalid="ignore"):  # raw parameters may be <= 0
            lo_log, hi_log = np.log(np.where(lo > 0, lo, LOG_FLOOR * hi)), np.log(hi)
        return np.where(self._log, lo_log, lo), np.where(self._log, hi_log, hi)

    def to_public(self, theta):
        p = self._params(np.asarray(theta, dtype=np.float64))[0]
        return {name: float(v) for name, v in zip(self.expr.params, p)}

    def spec(self):
        return {
            "expression": self.expr.text,
            "bounds": {k: list(v) for k, v in self.bounds_map.items()},
            "log_params": list(self.log_params),
        }

    def grid(self, data, log_y):
        """A product grid of ``k`` interior points per axis (``k^p <= n_starts``): evenly
        spaced in theta (so geometric for log parameters, over their whole range down to the
        floor), geometric for raw positive ranges wider than 100x, linear otherwise."""
        p = self.n_params
        k = max(2, min(8, int(math.floor(self.n_starts ** (1.0 / p)))))
        lo_t, hi_t = self.bounds()
        axes = []
        for j, name in enumerate(self.expr.params):
            lo, hi = self.bounds_map[name]
            if self._log[j] or not (lo > 0 and hi / lo >= 100):
                axes.append(np.linspace(lo_t[j], hi_t[j], k + 2)[1:-1])
            else:
                axes.append(np.geomspace(lo, hi, k + 2)[1:-1])
        return np.array(list(itertools.product(*axes)), dtype=np.float64)


def _log_params(
    expr: Expression, bounds: Mapping[str, tuple[float, float]], requested: str | Sequence[str]
) -> tuple[str, ...]:
    """The parameters fitted as logs: ``"auto"`` (see :class:`CustomForm`) or the saved list."""
    if isinstance(requested, str) and requested == "auto":
        out = []
        for name in expr.params:
            lo, hi = bounds[name]
            if lo < 0:
                continue
            if name not in expr.exponent_params or (lo > 0 and hi / lo >= 100):
                out.append(name)
        return tuple(out)
    if isinstance(requested, str) or not all(isinstance(n, str) for n in requested):
        raise UserError(f"the custom law's 'log_params' must be a list of names, got {requested!r}")
    for name in requested:
        if name not in expr.params:
            raise UserError(f"the custom law's 'log_params' names an unknown parameter {name!r}")
        if bounds[name][0] < 0:
            raise UserError(
                f"the custom law's 'log_params' names {name!r}, whose bounds include negatives"
            )
    return tuple(n for n in expr.params if n in requested)


_FORMS: dict[str, Callable[..., LawForm]] = {
    "chinchilla": lambda **kw: ChinchillaForm(),
    "kaplan_n": lambda **kw: KaplanForm("N"),
    "kaplan_d": lambda **kw: KaplanForm("D"),
    "kaplan_c": lambda **kw: KaplanForm("C"),
    "kaplan_nd": lambda **kw: KaplanNDForm(),
    "power_law": lambda variable="x", offset=True, **kw: PowerLawForm(variable, offset=offset),
    # A saved spec without log_params is an earlier version's fit, made in raw units.
    "custom": lambda expression="", bounds=None, log_params=(), **kw: CustomForm(
        expression, bounds or {}, log_params=log_params
    ),
    # Forms defined in their own modules, imported on first use (no import cycle).
    "data_constrained": lambda **kw: _lazy_form("scalelab.laws.constrained", "DataConstrainedForm")(
        **kw
    ),
    "finetune_law": lambda **kw: _lazy_form("scalelab.laws.finetune_law", "FinetuneLawForm")(**kw),
}


def _lazy_form(module: str, name: str) -> Callable[..., LawForm]:
    import importlib

    return getattr(importlib.import_module(module), name)


PARAMETRIC_FORMS = tuple(_FORMS)


def make_form(name: str, spec: Mapping[str, Any] | None = None) -> LawForm:
    """Rebuild a form from its name and :meth:`LawForm.spec` (as stored in a fit's JSON)."""
    factory = _FORMS.get(name)
    if factory is None:
        raise UserError(f"unknown law form {name!r}; known: {', '.join(_FORMS)}")
    if spec is not None and not isinstance(spec, Mapping):
        raise UserError(f"the spec of a {name} law must be a mapping, got {type(spec).__name__}")
    spec = dict(spec or {})
    if "bounds" in spec:
        spec["bounds"] = _bounds_from_spec(spec["bounds"])
    try:
        return factory(**spec)
    except TypeError as exc:  # e.g. an expression that is not text
        raise UserError(f"the spec of a {name} law is not understood: {exc}") from None


def saved_law_problem(law: LawForm, fit: Any) -> tuple[str, str] | None:
    """The first way a saved fit disagrees with its rebuilt ``law``: ``(key, what is
    wrong)``, or None. ``fit`` is a :class:`~scalelab.laws.fits.LawFit` read from a file."""
    theta, names = tuple(fit.theta), tuple(fit.theta_names)
    if names != law.theta_names:
        return "theta_names", f"the {law.name} law's parameters are {', '.join(law.theta_names)}"
    if len(theta) != law.n_params:
        return "theta", f"the {law.name} law has {law.n_params} parameters, not {len(theta)}"
    if not all(math.isfinite(t) for t in theta):
        return "theta", f"every value must be finite, got {list(theta)}"
    if tuple(fit.variables) != law.variables:
        return "variables", f"the {law.name} law is in {', '.join(law.variables)}"
    absent = [k for k in law.to_public(np.asarray(theta)) if k not in fit.params]
    if absent:
        return "params", f"missing {', '.join(map(repr, absent))}"
    k = fit.flops_per_nd
    if k is not None and not (math.isfinite(k) and k > 0):
        return "flops_per_nd", f"must be a positive number or null, got {k}"
    if any(len(t) != law.n_params for t in getattr(fit.bootstrap, "theta_samples", ())):
        return "bootstrap.theta_samples", f"every sample needs {law.n_params} values"
    samples = getattr(fit.bootstrap, "samples", None) or {}
    absent = [k for k in fit.params if samples and k not in samples]
    if absent:
        return "bootstrap.samples", f"missing {', '.join(map(repr, absent))}"
    return None


def _bounds_from_spec(bounds: Any) -> dict[str, tuple[float, float]]:
    """A custom law's saved bounds ``{name: [lo, hi]}`` as tuples (UserError otherwise)."""
    ok = isinstance(bounds, Mapping) and all(
        isinstance(v, list | tuple)
        and len(v) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
        for v in bounds.values()
    )
    if not ok:
        raise UserError(
            "the custom law's 'bounds' must map each parameter to [lo, hi], got "
            f"{type(bounds).__name__} {str(bounds)[:40]!r}"
        )
    return {str(k): (float(v[0]), float(v[1])) for k, v in bounds.items()}
