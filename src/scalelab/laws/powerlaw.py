"""Kaplan forms, the offset power law and user-defined expressions (all via :func:`fit_form`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit, fit_form
from scalelab.laws.forms import CustomForm, KaplanForm, KaplanNDForm, LawForm, PowerLawForm
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

    Parameters are fitted in their own units within their bounds; starts are a grid over
    the box (log-spaced for positive ranges wider than 100x).
    """
    form = CustomForm(expression, params, n_starts=n_starts)
    return fit_form(form, table, delta=delta, drop_highest=drop_highest, weights=weights)
