"""Approach 2 (IsoFLOP profiles) and Approach 1 (training-curve envelope) on planted laws."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import (
    IsoFLOPFit,
    IsoFLOPWarning,
    chinchilla_loss,
    fit_envelope,
    fit_isoflop,
    load_fit,
    load_table,
    save_fit,
    table_from_arrays,
)
from scalelab.laws.chinchilla import optimal_allocation

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}
A_TRUE = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])


def isoflop_table(budgets=(1e18, 1e19, 1e20, 1e21), width=1.5, k=9, noise=0.0, shift=0.0):
    """Runs on each budget at sizes spread +-``width`` decades around the true optimum."""
    rng = np.random.default_rng(0)
    rows = []
    for c in budgets:
        n_opt = optimal_allocation(TRUE, np.array([c]), 6.0)["n_opt"][0]
        for n in n_opt * np.logspace(-width + shift, width + shift, k):
            d = c / (6 * n)
            rows.append(
                {
                    "N": n,
                    "D": d,
                    "budget": c,
                    "loss": chinchilla_loss(n, d, TRUE) * np.exp(rng.normal(0, noise)),
                }
            )
    return load_table(rows, n="N", d="D", extra=["budget"])


def test_isoflop_recovers_planted_exponents():
    table = isoflop_table(width=0.6)
    fit = fit_isoflop(table)
    # Parabolas in log N are an approximation: the exponent is recovered to ~0.01.
    assert fit.a == pytest.approx(A_TRUE, abs=0.01)
    assert fit.a + fit.b == pytest.approx(1.0, abs=1e-9)  # D_opt = C / (6 N_opt)
    assert all(p.status == "ok" and p.used for p in fit.profiles)
    alloc = fit.optimal([1e22])
    exact = optimal_allocation(TRUE, np.array([1e22]), 6.0)
    assert alloc.n_opt[0] == pytest.approx(exact["n_opt"][0], rel=0.1)
    # Budget column or clustering by C give the same groups.
    fit_c = fit_isoflop(table, budget="budget")
    assert fit_c.a == pytest.approx(fit.a, abs=1e-9)


def test_cubic_profiles_are_closer_on_wide_sweeps():
    table = isoflop_table(width=1.5, k=13)
    quad, cubic = fit_isoflop(table), fit_isoflop(table, degree=3)
    assert abs(cubic.a - A_TRUE) < abs(quad.a - A_TRUE)
    assert cubic.a == pytest.approx(A_TRUE, abs=0.01)


def test_minimum_outside_the_sampled_sizes_is_flagged_and_left_out():
    good = isoflop_table(budgets=(1e18, 1e19, 1e20), width=0.6)
    # The largest budget only sampled far below its optimum: minimum beyond the data.
    shifted = isoflop_table(budgets=(1e21,), width=0.5, shift=-1.5)
    rows = good.to_columns()
    for k, v in shifted.to_columns().items():
        rows[k] = rows[k] + v
    table = load_table(rows, n="N", d="D", extra=["budget"])
    with pytest.warns(IsoFLOPWarning, match="outside"):
        fit = fit_isoflop(table, budget="budget")
    statuses = {p.budget: p.status for p in fit.profiles}
    assert statuses[1e21] in ("outside", "edge")
    assert not [p for p in fit.profiles if p.budget == 1e21][0].used
    assert fit.a == pytest.approx(A_TRUE, abs=0.02)
    assert any("1e+21" in w for w in fit.warnings)


def test_isoflop_errors_and_round_trip(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IsoFLOPWarning)
        with pytest.raises(UserError, match="only 1 budget"):
            fit_isoflop(isoflop_table(budgets=(1e19,)))
        with pytest.raises(UserError, match="only 0 budget"):
            fit_isoflop(isoflop_table(k=2))  # 2 sizes per budget: no parabola
    with pytest.raises(UserError, match="degree 2"):
        fit_isoflop(isoflop_table(), degree=4)
    fit = fit_isoflop(isoflop_table(width=0.6))
    back = load_fit(save_fit(fit, tmp_path / "iso.json"))
    assert isinstance(back, IsoFLOPFit) and back.a == fit.a and back.profiles == fit.profiles


def training_curves(sizes=(3e7, 1e8, 3e8, 1e9, 3e9), max_ratio=200, points=40):
    """Intermediate evaluations of runs, each trained to ``max_ratio`` tokens per parameter.

    The loss along a run follows the planted L(N, D_t), so the envelope's optimum should
    follow the law's compute-optimal allocation.
    """
    rows = []
    for n in sizes:
        for d in np.geomspace(n, n * max_ratio, points):
            rows.append({"run": f"{n:.0e}", "N": n, "D": d, "loss": chinchilla_loss(n, d, TRUE)})
    return load_table(rows, n="N", d="D", group="run")


def test_envelope_recovers_allocation_exponent():
    fit = fit_envelope(training_curves(), n_grid=300)
    assert fit.n_runs == 5 and len(set(fit.run_at_min)) >= 3
    # The envelope picks among 5 discrete sizes, so the exponent is coarse but close.
    assert fit.a == pytest.approx(A_TRUE, abs=0.07)
    assert fit.b == pytest.approx(1 - A_TRUE, abs=0.07)
    assert np.all(np.diff(fit.loss) <= 1e-12)  # the envelope only goes down with compute
    assert fit.optimal([1e21]).n_opt[0] > 0


def test_envelope_errors():
    curves = training_curves(sizes=(1e8,))
    with pytest.raises(UserError, match="2\\+ runs"):
        fit_envelope(curves)
    no_group = table_from_arrays(N=[1e8, 1e8], D=[1e9, 2e9], loss=[3.0, 2.9])
    with pytest.raises(UserError, match="run id column"):
        fit_envelope(no_group)
