"""Kaplan forms, the offset power law and user-defined expressions (all via :func:`fit_form`),
and ``y = k x^a`` by least squares on logs (the allocation laws of Approaches 1 and 2)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit, fit_form
from scalelab.laws.forms import CustomForm, KaplanForm, KaplanNDForm, LawForm, PowerLawForm
from scalelab.laws.results import Result
from scalelab.laws.table import RunTable, table_from_arrays


def fit_kaplan(
    table: RunTable,
    *,
    variable: str = "N",
    delta: float = 1e-3,
    drop_highest: int = 0,
    weights: Any = None,
) -> LawFit:
    """Kaplan et al. (2020) forms: ``variable`` in N, D, C (``L = (X_c/X)^alpha``) or ``"ND"``."""
    v = variable.upper()
    form: LawForm = KaplanNDForm() if v == "ND" else KaplanForm(v)
    return fit_form(form, table, delta=delta, drop_highest=drop_highest, weights=weights)


def fit_power_law(
    x: Any,
    y: Any = None,
    *,
    variable: str = "x",
    offset: bool = True,
    delta: float = 1e-3,
    weights: Any = None,
    drop_highest: int = 0,
) -> LawFit:
    """Fit ``y = E + A x^-alpha`` (or ``A x^-alpha`` with ``offset=False``).

    ``x, y`` are arrays of positive numbers; or pass a :class:`RunTable` as ``x`` with
    ``variable`` one of N, D, C (``y`` is then the table's loss column).
    """
    if variable not in ("N", "D", "C", "x"):
        raise UserError(f"fit_power_law: variable must be N, D, C or x, got {variable!r}")
    if isinstance(x, RunTable):
        if y is not None:
            raise UserError("fit_power_law: give either a table or x and y arrays, not both")
        if variable == "x":
            raise UserError("fit_power_law on a table: say which column, variable='N', 'D' or 'C'")
        form = PowerLawForm(variable, offset=offset)
        return fit_form(form, x, delta=delta, drop_highest=drop_highest, weights=weights)
    xs = np.asarray(x, dtype=np.float64).ravel()
    ys = np.asarray(y, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise UserError(f"fit_power_law: x has {xs.size} values but y has {ys.size}")
    # The x values ride in the table's N column; the fit is then relabelled as a law in x.
    table = _xy_table(xs, ys, variable, weights)
    fit = fit_form(PowerLawForm("N", offset=offset), table, delta=delta, drop_highest=drop_highest)
    if variable == "N":
        return fit
    form = PowerLawForm(variable, offset=offset)
    return dataclasses.replace(
        fit,
        spec=form.spec(),
        variables=form.variables,
        formula=form.formula,
        ranges={(variable if k == "N" else k): v for k, v in fit.ranges.items()},
    )


def _xy_table(x: np.ndarray, y: np.ndarray, variable: str, weights: Any) -> RunTable:
    for name, arr in (("x", x), ("y", y)):
        bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
        if bad.size:
            raise UserError(
                f"fit_power_law: {name}[{bad[0]}] = {float(arr[bad[0]])!r} must be positive and finite"
            )
    return table_from_arrays(
        loss=y, N=x, weights=weights, flops_convention="none", name=f"{variable} values"
    )


def fit_custom(
    table: RunTable,
    expression: str,
    params: Mapping[str, tuple[float, float]],
    *,
    delta: float = 1e-3,
    drop_highest: int = 0,
    weights: Any = None,
    n_starts: int = 4096,
) -> LawFit:
    """Fit a user expression, e.g. ``fit_custom(t, "E + A/N**alpha", {"E": (0.1, 5), ...})``.

    Parameters with non-negative bounds are fitted as their logs unless they are exponents
    (see :class:`~scalelab.laws.forms.CustomForm`; ``fit.params`` are in their own units);
    starts are a grid over the box, geometric for those and for positive exponent ranges
    wider than 100x.
    """
    form = CustomForm(expression, params, n_starts=n_starts)
    return fit_form(form, table, delta=delta, drop_highest=drop_highest, weights=weights)


# ====================================================================== y = k x^a


@dataclasses.dataclass(frozen=True)
class PowerFit(Result):
    """``y = k x^exponent`` fitted by least squares on logs."""

    kind: ClassVar[str] = "power_fit"
    k: float
    exponent: float
    exponent_se: float
    log_k_se: float
    r2: float
    n: int

    def __call__(self, x: float | np.ndarray) -> np.ndarray:
        return self.k * np.asarray(x, dtype=np.float64) ** self.exponent


def fit_loglog(x: np.ndarray, y: np.ndarray) -> PowerFit:
    """OLS of ``log y`` on ``log x`` with standard errors (nan with fewer than 3 points)."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    n = lx.size
    if n < 2 or np.ptp(lx) == 0:
        raise UserError("a power law across budgets needs at least 2 distinct budgets")
    design = np.column_stack([np.ones(n), lx])
    coef, *_ = np.linalg.lstsq(design, ly, rcond=None)
    resid = ly - design @ coef
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    if n > 2:
        s2 = float(np.sum(resid**2)) / (n - 2)
        cov = s2 * np.linalg.inv(design.T @ design)
        se_k, se_e = float(np.sqrt(cov[0, 0])), float(np.sqrt(cov[1, 1]))
    else:
        se_k = se_e = math.nan
    return PowerFit(
        k=float(np.exp(coef[0])),
        exponent=float(coef[1]),
        exponent_se=se_e,
        log_k_se=se_k,
        r2=r2,
        n=n,
    )
