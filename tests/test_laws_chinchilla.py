"""Chinchilla Approach 3: planted laws recovered, diagnostics, allocation, save/load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import (
    ChinchillaFit,
    FitWarning,
    chinchilla_loss,
    fit_chinchilla,
    load_fit,
    save_fit,
    small_grid,
    table_from_arrays,
)
from scalelab.laws.chinchilla import optimal_allocation
from scalelab.laws.fits import fit_form
from scalelab.laws.forms import ChinchillaForm

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def planted(noise=0.0, seed=0, sizes=8, ratios=(2, 5, 10, 20, 50, 100)):
    """A ladder of sizes x tokens-per-parameter with losses from TRUE (times log-normal noise)."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(2e7, 5e9, sizes), len(ratios))
    D = N * np.tile(np.asarray(ratios, dtype=float), sizes)
    L = chinchilla_loss(N, D, TRUE) * np.exp(rng.normal(0.0, noise, N.size))
    return table_from_arrays(N=N, D=D, loss=L, group=[f"{n:.3g}" for n in N])


def test_noise_free_law_recovered_exactly_from_small_grid():
    fit = fit_chinchilla(planted(), grid=small_grid())
    for k, v in TRUE.items():
        assert fit.params[k] == pytest.approx(v, rel=2e-4), k
    d = fit.diagnostics
    assert d.converged and d.grad_max < 1e-6 and d.best_objective < 1e-12
    assert d.n_starts == 243 and 1 <= d.n_best_basin <= 243
    # A and alpha (B and beta) are nearly degenerate: the diagnostics say so.
    assert d.correlations["a"]["alpha"] > 0.9 and d.correlations["b"]["beta"] > 0.9


def test_full_hoffmann_grid_on_noisy_planted_law():
    table = planted(noise=0.005, seed=3)
    fit = fit_chinchilla(table, method="grid")  # the reference path: all 4,500 starts
    assert fit.diagnostics.n_starts == 4500
    assert fit.diagnostics.converged
    assert fit.params["E"] == pytest.approx(TRUE["E"], rel=0.03)
    assert fit.params["alpha"] == pytest.approx(TRUE["alpha"], abs=0.04)
    assert fit.params["beta"] == pytest.approx(TRUE["beta"], abs=0.04)
    a_true = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert fit.exponents[0] == pytest.approx(a_true, abs=0.03)
    # The fitted surface predicts an unseen, in-range point to well under 1%.
    N, D = 3e8, 3e8 * 30
    assert fit.predict(N=N, D=D)[0] == pytest.approx(chinchilla_loss(N, D, TRUE), rel=5e-3)
    assert fit.rmse_log < 0.01


def test_optimal_closed_form_matches_numeric_minimum():
    fit = fit_chinchilla(planted(), grid=small_grid())
    c = np.array([1e20, 1e23])
    alloc = fit.optimal(c)
    for i, ci in enumerate(c):
        n = np.geomspace(1e6, 1e13, 20001)
        loss = fit.predict(N=n, D=ci / (6 * n))
        assert alloc.n_opt[i] == pytest.approx(n[np.argmin(loss)], rel=2e-3)
        assert alloc.loss[i] <= loss.min() + 1e-12  # the true minimum is below the grid's
        assert alloc.d_opt[i] * alloc.n_opt[i] * 6 == pytest.approx(ci)
    # Generic numeric path of LawFit agrees with the closed form.
    generic = super(ChinchillaFit, fit).optimal(c)
    np.testing.assert_allclose(generic.n_opt, alloc.n_opt, rtol=1e-6)
    # Vectorised over parameter samples: shape [R, len(C)].
    out = optimal_allocation({k: np.full(3, v) for k, v in TRUE.items()}, c, 6.0)
    assert out["n_opt"].shape == (3, 2)


def test_drop_highest_and_weights():
    table = planted(noise=0.002, seed=1)
    loss = np.array(table.loss)
    loss[5] *= 3.0  # one wild run
    bad = table_from_arrays(N=table.N, D=table.D, loss=loss)
    fit = fit_chinchilla(bad, grid=small_grid(), drop_highest=1)
    assert fit.dropped_rows == (6,) and fit.n_points == len(bad) - 1
    assert fit.params["E"] == pytest.approx(TRUE["E"], rel=0.02)
    w = np.ones(len(bad))
    w[5] = 0.0  # the same run weighted out
    fit_w = fit_chinchilla(bad, grid=small_grid(), weights=w)
    assert fit_w.weighted and fit_w.params["E"] == pytest.approx(fit.params["E"], rel=1e-3)


def test_non_convergence_is_reported_not_hidden():
    # An unattainable gradient tolerance: the fit must say it did not converge.
    with pytest.warns(FitWarning, match="did not converge"):
        fit = fit_form(
            ChinchillaForm(), planted(noise=0.01), starts=small_grid()[:5], grad_tol=1e-30
        )
    assert not fit.diagnostics.converged
    assert "NOT CONVERGED" in fit.summary()
    assert any("did not converge" in w for w in fit.diagnostics.warnings)


def test_fewer_points_than_parameters_and_missing_columns():
    t = table_from_arrays(N=[1e8, 2e8, 4e8, 8e8, 1.6e9], D=[1e10] * 5, loss=[3, 2.9, 2.8, 2.7, 2.6])
    with pytest.raises(UserError, match="5 parameters but the table has only 5 points"):
        fit_chinchilla(t)
    t2 = table_from_arrays(N=[1e8] * 7, loss=[3.0] * 7, flops_convention="none")
    with pytest.raises(UserError, match="needs D"):
        fit_chinchilla(t2)


def test_save_load_round_trip(tmp_path):
    fit = fit_chinchilla(planted(noise=0.003), grid=small_grid())
    path = save_fit(fit, tmp_path / "fit.json")
    raw = json.loads(path.read_text())
    assert raw["form"] == "chinchilla" and raw["params"]["alpha"] == fit.params["alpha"]
    back = load_fit(path)
    assert isinstance(back, ChinchillaFit)
    assert back.params == fit.params and back.theta == fit.theta
    assert back.diagnostics == fit.diagnostics
    np.testing.assert_allclose(back.predict(N=1e9, D=2e10), fit.predict(N=1e9, D=2e10))
    assert math.isinf(back.diagnostics.second_objective) or back.diagnostics.second_objective > 0


def test_summary_mentions_diagnostics():
    text = fit_chinchilla(planted(noise=0.003), grid=small_grid()).summary()
    assert "starts reached the best basin" in text and "max|grad|" in text
    assert "N_opt ~ C^" in text
