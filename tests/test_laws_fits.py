"""Kaplan forms, the offset power law, custom expressions and model comparison."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import (
    LawFit,
    compare_models,
    fit_chinchilla,
    fit_custom,
    fit_kaplan,
    fit_power_law,
    load_fit,
    save_fit,
    small_grid,
    table_from_arrays,
)


def test_kaplan_single_variable_forms_recover_planted_laws():
    rng = np.random.default_rng(0)
    N = np.geomspace(1e6, 1e9, 12)
    L = (8.8e13 / N) ** 0.076 * np.exp(rng.normal(0, 0.002, N.size))
    fit = fit_kaplan(table_from_arrays(N=N, loss=L, flops_convention="none"), variable="N")
    assert fit.form == "kaplan_n"
    assert fit.params["alpha_N"] == pytest.approx(0.076, abs=0.004)
    assert np.log10(fit.params["N_c"]) == pytest.approx(np.log10(8.8e13), abs=0.6)
    C = np.geomspace(1e17, 1e21, 9)
    fit_c = fit_kaplan(table_from_arrays(C=C, loss=(3.1e8 / (C / 8.64e19)) ** 0.05, flops_convention="none"), variable="C")  # fmt: skip
    assert fit_c.params["alpha_C"] == pytest.approx(0.05, rel=1e-4)
    assert fit_c.predict(C=1e19)[0] == pytest.approx((3.1e8 / (1e19 / 8.64e19)) ** 0.05, rel=1e-6)


def test_kaplan_joint_nd_form():
    N = np.repeat(np.geomspace(1e7, 1e9, 6), 5)
    D = np.tile(np.geomspace(1e8, 1e11, 5), 6)
    an, ad, nc, dc = 0.076, 0.095, 8.8e13, 5.4e13
    L = ((nc / N) ** (an / ad) + dc / D) ** ad
    fit = fit_kaplan(table_from_arrays(N=N, D=D, loss=L), variable="ND")
    assert fit.diagnostics.converged
    assert fit.params["alpha_N"] == pytest.approx(an, rel=1e-3)
    assert fit.params["alpha_D"] == pytest.approx(ad, rel=1e-3)
    assert fit.predict(N=3e8, D=3e9)[0] == pytest.approx(
        ((nc / 3e8) ** (an / ad) + dc / 3e9) ** ad, rel=1e-6
    )


@pytest.mark.parametrize("offset", [True, False])
def test_power_law_on_arrays(offset):
    x = np.geomspace(10, 1e5, 10)
    y = (0.2 if offset else 0.0) + 3.0 * x**-0.4
    fit = fit_power_law(x, y, offset=offset)
    assert fit.variables == ("x",)
    assert fit.params["alpha"] == pytest.approx(0.4, rel=1e-4)
    assert fit.params["A"] == pytest.approx(3.0, rel=1e-3)
    if offset:
        assert fit.params["E"] == pytest.approx(0.2, rel=1e-3)
    np.testing.assert_allclose(
        fit.predict(x=[50.0]), (0.2 if offset else 0.0) + 3.0 * 50.0**-0.4, rtol=1e-6
    )


def test_power_law_bad_input():
    with pytest.raises(UserError, match=r"x\[1\] = -1.0 must be positive"):
        fit_power_law([1.0, -1.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(UserError, match="x has 3 values but y has 2"):
        fit_power_law([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(UserError, match="3 parameters but the table has only 3 points"):
        fit_power_law([1.0, 2.0, 3.0], [3.0, 2.0, 1.5])


def test_custom_expression_recovers_planted_effective_parameter_law():
    # "Effective parameters" N_eff = N - N^2/D: a claim a user can test against data.
    N = np.repeat(np.geomspace(1e7, 1e9, 5), 4)
    D = N * np.tile([5.0, 20.0, 80.0, 320.0], 5)
    L = 1.7 + 300 * (N - N**2 / D) ** -0.3 + 1500 * D**-0.35
    t = table_from_arrays(N=N, D=D, loss=L)
    fit = fit_custom(
        t,
        "E + A / (N - N**2/D)**alpha + B / D**beta",
        {"E": (0.5, 3.0), "A": (10, 1e4), "alpha": (0.1, 0.8), "B": (10, 1e4), "beta": (0.1, 0.8)},
        n_starts=243,
    )
    assert fit.form == "custom" and fit.diagnostics.converged
    for k, v in {"E": 1.7, "alpha": 0.3, "beta": 0.35}.items():
        assert fit.params[k] == pytest.approx(v, rel=1e-3), k
    assert fit.rmse_log < 1e-4


def test_custom_round_trip_and_bounds(tmp_path):
    x = np.geomspace(1e7, 1e9, 8)
    t = table_from_arrays(N=x, loss=2.0 + 50 * x**-0.2, flops_convention="none")
    fit = fit_custom(
        t, "E + A * N**(-alpha)", {"E": (1.0, 3.0), "A": (1, 100), "alpha": (0.05, 0.5)}
    )
    back = load_fit(save_fit(fit, tmp_path / "c.json"))
    assert isinstance(back, LawFit) and back.form == "custom"
    np.testing.assert_allclose(back.predict(N=[3e8]), fit.predict(N=[3e8]))
    with pytest.raises(UserError, match="lo < hi"):
        fit_custom(t, "E + A * N**(-alpha)", {"E": (3.0, 1.0), "A": (1, 100), "alpha": (0.05, 0.5)})
    with pytest.raises(UserError, match="unknown name 'beta'"):
        fit_custom(t, "E + A * N**(-beta)", {"E": (1.0, 3.0), "A": (1, 100)})


def test_compare_models_prefers_the_true_form():
    rng = np.random.default_rng(2)
    N = np.repeat(np.geomspace(2e7, 2e9, 6), 4)
    D = N * np.tile([5.0, 20.0, 60.0, 200.0], 6)
    L = (1.8 + 400 * N**-0.34 + 2000 * D**-0.37) * np.exp(rng.normal(0, 0.002, N.size))
    t = table_from_arrays(N=N, D=D, loss=L)
    comp = compare_models(
        t,
        {
            "chinchilla": lambda s: fit_chinchilla(s, grid=small_grid()),
            "kaplan_n": lambda s: fit_kaplan(s, variable="N"),
        },
        holdout=0.25,
    )
    best = comp.best()
    assert best.name == "chinchilla"
    scores = {s.name: s for s in comp.scores}
    assert scores["chinchilla"].aic < scores["kaplan_n"].aic
    assert scores["chinchilla"].bic < scores["kaplan_n"].bic
    assert "held-out" in comp.summary()
