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
from collections.abc import Callable, Mapping
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


class CustomForm(LawForm):
    """A user expression with box-bounded parameters (fitted in their own units)."""

    def __init__(
        self, expression: str, bounds: Mapping[str, tuple[float, float]], *, n_starts: int = 4096
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
        self.theta_names = self.expr.params
        self.formula = f"L = {expression}"

    def log_pred(self, theta, data):
        val, grad = self.expr.value_and_grad(theta, {v: data[v] for v in self.variables})
        with np.errstate(all="ignore"):
            lp = np.where(val > 0, np.log(np.where(val > 0, val, 1.0)), np.nan)
            jac = grad / val[:, :, None]
        return lp, jac

    def bounds(self):
        lo = np.array([self.bounds_map[p][0] for p in self.theta_names])
        hi = np.array([self.bounds_map[p][1] for p in self.theta_names])
        return lo, hi

    def to_public(self, theta):
        return {p: float(t) for p, t in zip(self.theta_names, theta)}

    def spec(self):
        return {
            "expression": self.expr.text,
            "bounds": {k: list(v) for k, v in self.bounds_map.items()},
        }

    def grid(self, data, log_y):
        p = self.n_params
        k = max(2, min(8, int(math.floor(self.n_starts ** (1.0 / p)))))
        axes = []
        for name in self.theta_names:
            lo, hi = self.bounds_map[name]
            if lo > 0 and hi / lo >= 100:
                axes.append(np.geomspace(lo, hi, k + 2)[1:-1])
            else:
                axes.append(np.linspace(lo, hi, k + 2)[1:-1])
        return np.array(list(itertools.product(*axes)), dtype=np.float64)


_FORMS: dict[str, Callable[..., LawForm]] = {
    "chinchilla": lambda **kw: ChinchillaForm(),
    "kaplan_n": lambda **kw: KaplanForm("N"),
    "kaplan_d": lambda **kw: KaplanForm("D"),
    "kaplan_c": lambda **kw: KaplanForm("C"),
    "kaplan_nd": lambda **kw: KaplanNDForm(),
    "power_law": lambda variable="x", offset=True, **kw: PowerLawForm(variable, offset=offset),
    "custom": lambda expression="", bounds=None, **kw: CustomForm(expression, bounds or {}),
}

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
