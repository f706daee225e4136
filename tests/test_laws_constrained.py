"""The data-constrained law (Muennighoff et al. 2023): planted laws recovered, the Chinchilla
limit, the optimum under a cap on unique data, JSON and the CLI, bad input."""

from __future__ import annotations

import csv
import json
import math
import re
import warnings

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.laws.bootstrap import bootstrap
from scalelab.laws.chinchilla import fit_chinchilla, optimal_allocation, small_grid
from scalelab.laws.constrained import (
    MUENNIGHOFF_2023,
    DataConstrainedFit,
    DataConstrainedForm,
    data_constrained_loss,
    effective_tokens,
    fit_data_constrained,
    optimal_params_for,
)
from scalelab.laws.fits import FitWarning
from scalelab.laws.forms import make_form
from scalelab.laws.results import load_fit, save_fit
from scalelab.laws.table import load_table, table_from_arrays

TRUE = {"E": 1.8, "A": 450.0, "B": 1800.0, "alpha": 0.34, "beta": 0.30, "R_D_star": 12.0}
EPOCHS = (0.5, 1, 2, 4, 8, 16, 40)  # D/U: from half an epoch to 40


SIZES = tuple(np.geomspace(2e7, 2e9, 6))


def _grid(sizes=SIZES, uniques=(1e8, 1e9, 1e10), epochs=EPOCHS):
    rows = [(n, u * ep, u) for n in sizes for u in uniques for ep in epochs]
    return (np.array(col) for col in zip(*rows))


def _planted(params=TRUE, noise=0.002, seed=0, **grid):
    n, d, u = _grid(**grid)
    rng = np.random.default_rng(seed)
    loss = data_constrained_loss(n, d, u, params) * np.exp(rng.normal(0, noise, n.size))
    return table_from_arrays(loss=loss, N=n, D=d, U=u)


@pytest.fixture(scope="module")
def fit():
    return fit_data_constrained(_planted())


def test_effective_tokens_follow_eq5():
    u, s = 1e9, 15.4
    assert effective_tokens(0.5e9, u, s) == pytest.approx(0.5e9)  # under an epoch: D' = D
    assert effective_tokens(u, u, s) == pytest.approx(u)
    r = 3.0  # 4 epochs
    assert effective_tokens(4e9, u, s) == pytest.approx(u + u * s * (1 - math.exp(-r / s)))
    assert effective_tokens(1e15, u, s) == pytest.approx(u * (1 + s))  # saturates
    assert effective_tokens(4e9, math.inf, s) == pytest.approx(4e9)  # no cap


def test_published_constants_and_n_opt():
    assert MUENNIGHOFF_2023["R_D_star"] == 15.4 and MUENNIGHOFF_2023["R_N_star"] == 5.3
    # N_opt(U) solves alpha A N^-alpha = beta B U^-beta (Chinchilla's optimality condition).
    p, u = MUENNIGHOFF_2023, 1e10
    n = optimal_params_for(u, p)
    assert p["alpha"] * p["A"] * n ** -p["alpha"] == pytest.approx(
        p["beta"] * p["B"] * u ** -p["beta"]
    )


@pytest.mark.parametrize("excess", [False, True])
def test_jacobian_is_exact(excess):
    rng = np.random.default_rng(1)
    u = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 40))
    data = {"N": np.exp(rng.uniform(np.log(1e7), np.log(1e10), 40)), "U": u}
    data["D"] = u * np.exp(rng.uniform(np.log(0.3), np.log(60), 40))
    form = DataConstrainedForm(excess_params=excess)
    theta = np.array([[6.1, 7.4, 0.6, 0.36, 0.31, math.log(14.0)] + [math.log(5.0)] * excess])
    lp, jac = form.log_pred(theta, data)
    params = {**TRUE, "A": math.exp(6.1), "B": math.exp(7.4), "E": math.exp(0.6)}
    params.update(alpha=0.36, beta=0.31, R_D_star=14.0, **({"R_N_star": 5.0} if excess else {}))
    np.testing.assert_allclose(
        np.exp(lp[0]), data_constrained_loss(**data, params=params), rtol=1e-12
    )
    for i in range(theta.shape[1]):
        step = np.zeros_like(theta)
        step[0, i] = 1e-6
        num = (form.log_pred(theta + step, data)[0] - form.log_pred(theta - step, data)[0]) / 2e-6
        np.testing.assert_allclose(jac[0, :, i], num[0], atol=1e-8)


def test_recovers_a_planted_law(fit):
    assert isinstance(fit, DataConstrainedFit) and fit.diagnostics.converged
    for name, rel in (("E", 0.01), ("A", 0.05), ("B", 0.05), ("alpha", 0.02), ("beta", 0.02)):
        assert fit.params[name] == pytest.approx(TRUE[name], rel=rel), name
    assert fit.params["R_D_star"] == pytest.approx(TRUE["R_D_star"], rel=0.03)
    assert fit.rmse_log < 0.003  # the planted noise is 0.002
    assert "repetition is worth exp(-R/12" in fit.summary()


def test_recovers_a_planted_law_with_its_n_side():
    true = {**TRUE, "R_N_star": 5.0}
    # Models up to 40x N_opt(U) for their unique data, so that R_N* shows. Noiseless: with
    # the N side, log A, alpha and log R_N* correlate at -0.998 on this design (0.1% noise
    # moved R_N* to 4.3), so exact recovery is the test of the optimiser and the Jacobian.
    table = _planted(true, noise=0.0, sizes=np.geomspace(1e7, 4e9, 6), uniques=(1e8, 1e9))
    n_opt = optimal_params_for(np.minimum(table.U, table.D), true)
    assert np.mean(table.N > n_opt) > 0.3  # noqa: SIM300
    fit = fit_data_constrained(table, excess_params=True)
    assert fit.law.theta_names[-1] == "log_rn" and "N'" in fit.formula
    for name, value in true.items():
        assert fit.params[name] == pytest.approx(value, rel=1e-5), name
    assert "decay with R_N* = 5" in fit.summary()


def test_without_repetition_it_is_the_chinchilla_fit():
    table = _planted(epochs=(0.1, 0.3, 0.6, 1.0))  # D <= U everywhere: D' = D
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dc = fit_data_constrained(table)
    notes = [str(w.message) for w in record if issubclass(w.category, FitWarning)]
    assert any("no run repeats data" in n for n in notes), notes
    ch = fit_chinchilla(table, grid=small_grid())
    for name in ("E", "A", "B", "alpha", "beta"):
        assert dc.params[name] == pytest.approx(ch.params[name], rel=1e-4), name
    assert dc.objective == pytest.approx(ch.objective, rel=1e-6)
    assert any("R_D* is not identified" in w for w in dc.diagnostics.warnings)
    n, d = np.array([3e8, 1e9]), np.array([1e9, 5e9])
    np.testing.assert_allclose(dc.predict(N=n, D=d, U=d), ch.predict(N=n, D=d), rtol=1e-4)


def test_optimum_under_a_cap_matches_a_brute_force_grid(fit):
    k = fit.flops_per_nd
    free = fit.optimal([1e19, 1e21])  # no cap: Chinchilla's closed form of the same E, A, ...
    closed = optimal_allocation(fit.params, np.array([1e19, 1e21]), k)
    np.testing.assert_allclose(free.n_opt, closed["n_opt"], rtol=1e-6)
    for c, u in ((1e19, 3e8), (1e21, 1e9), (1e21, 1e11)):
        alloc = fit.optimal(c, unique_tokens=u)
        n = np.exp(np.linspace(math.log(1e6), math.log(1e12), 400_001))  # brute force
        losses = fit.predict(N=n, D=c / (k * n), U=u)
        i = int(np.argmin(losses))
        assert alloc.n_opt[0] == pytest.approx(n[i], rel=1e-4)
        assert alloc.loss[0] == pytest.approx(losses[i], rel=1e-9)
        assert alloc.epochs[0] == pytest.approx(alloc.d_opt[0] / u)
        assert alloc.loss[0] == pytest.approx(fit.predict(N=alloc.n_opt, D=alloc.d_opt, U=u)[0])
        uncapped = fit.optimal(c)
        if u < uncapped.d_opt[0]:  # the cap binds: pricier data, so a larger model, a higher loss
            assert alloc.n_opt[0] > 1.05 * uncapped.n_opt[0]
            assert alloc.loss[0] > uncapped.loss[0] and alloc.epochs[0] > 1
        else:
            assert alloc.n_opt[0] == pytest.approx(uncapped.n_opt[0], rel=1e-4)


def test_json_round_trip_and_bootstrap_intervals(fit, tmp_path):
    boot = bootstrap(_planted(), fit, n=20, seed=0)
    fit = fit.with_bootstrap(boot)
    path = save_fit(fit, tmp_path / "dc.json")
    back = load_fit(path)
    assert isinstance(back, DataConstrainedFit) and back.params == fit.params
    assert back.spec == {"excess_params": False}
    n, d, u = np.array([1e8, 1e9]), np.array([4e9, 4e10]), np.array([1e9, 1e9])
    np.testing.assert_array_equal(back.predict(N=n, D=d, U=u), fit.predict(N=n, D=d, U=u))
    alloc = back.optimal([1e20], unique_tokens=1e9)
    assert alloc.rows()[0]["epochs"] == alloc.epochs[0]
    iv = alloc.intervals["n_opt"][0]
    assert iv.lo <= alloc.n_opt[0] <= iv.hi
    assert json.loads(path.read_text())["form"] == "data_constrained"


def _write_csv(path, table, u_name="unique_tokens"):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["params", "tokens", u_name, "loss"])
        for row in zip(table.N, table.D, table.U, table.loss):
            w.writerow(row)
    return path


def test_cli_fit_optimal_predict(tmp_path, capsys):
    csv_path = _write_csv(tmp_path / "runs.csv", _planted())
    out = tmp_path / "fit.json"
    assert main(["fit", str(csv_path), "--form", "data_constrained", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "data_constrained fit" in text and "R_D_star" in text
    assert "unique tokens U = 'unique_tokens' (found by name" in text
    assert main(["optimal", str(out), "--compute", "1e19,1e21", "--unique-tokens", "3e8"]) == 0
    text = capsys.readouterr().out
    assert "with 3e+08 unique tokens" in text and "epochs" in text
    alloc = load_fit(out).optimal([1e19, 1e21], unique_tokens=3e8)
    assert f"{alloc.n_opt[1]:.4g}" in text
    assert main(["predict", str(out), "--n", "1e9", "--d", "4e10", "--u", "1e9,4e10"]) == 0
    text = capsys.readouterr().out
    values = [float(v) for v in re.findall(r": (\d\.\d+)$", text, flags=re.M)]
    assert values[0] > values[1]  # 40 epochs of 1e9 tokens is worse than 1 of 4e10


def test_u_column_named_scaled_and_kept(tmp_path):
    table = _planted(uniques=(1e9,), epochs=(1, 4))
    path = _write_csv(tmp_path / "runs.csv", table, u_name="udata")
    t = load_table(path, u="udata")
    np.testing.assert_array_equal(t.U, table.U)
    assert t.subset([0, 1]).U.tolist() == table.U[:2].tolist() and "U" in t.ranges()
    cols = {"N": table.N, "D_bn": table.D / 1e9, "U_D": table.U / 1e9, "loss": table.loss}
    t = load_table({k: list(v) for k, v in cols.items()}, n="N", d="D_bn", d_scale=1e9)
    np.testing.assert_allclose(t.U, table.U)  # found by name, and in the same units as D
    assert any("--d-scale" in n and n.startswith("U =") for n in t.notes)
    junk = {"N": [1e8, 2e8], "D": [1e9, 2e9], "unique": ["yes", "no"], "loss": [3.0, 2.9]}
    t = load_table(junk)  # a column that only looks like U is not read as one
    assert t.U is None


def test_bad_input_is_one_line(tmp_path, capsys):
    table = _planted(uniques=(1e9,), epochs=(1, 4))
    no_u = tmp_path / "no_u.csv"
    with open(no_u, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["params", "tokens", "loss"])
        w.writerows(zip(table.N, table.D, table.loss))
    cases = [
        (["fit", str(no_u), "--form", "data_constrained"], r"needs the unique tokens.*--u COLUMN"),
        (["fit", str(no_u), "--excess-params"], r"--excess-params only applies"),
        (["fit", str(no_u), "--form", "data_constrained", "--u", "uniq"], r"no column 'uniq'"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("scalelab: error:") and "\n" not in err and re.search(message, err), (
            err
        )
    ch = tmp_path / "ch.json"
    assert main(["fit", str(no_u), "--grid", "small", "--out", str(ch)]) in (0, 1)
    capsys.readouterr()
    assert main(["optimal", str(ch), "--compute", "1e20", "--unique-tokens", "1e9"]) == 2
    assert "needs a data_constrained fit" in capsys.readouterr().err
    assert main(["optimal", str(ch), "--compute", "1e20", "--unique-tokens", "-1"]) == 2
    assert "--unique-tokens must be positive" in capsys.readouterr().err
    with pytest.raises(UserError, match="excess_params must be true or false"):
        make_form("data_constrained", {"excess_params": "yes"})
    with pytest.raises(UserError, match="not understood"):
        make_form("data_constrained", {"R_D_star": 3})
    fit = fit_data_constrained(_planted(uniques=(1e9,), epochs=(0.5, 2, 8)))
    with pytest.raises(UserError, match="unique tokens U must be positive"):
        fit.predict(N=1e9, D=1e10, U=0.0)
    with pytest.raises(UserError, match="unique tokens must be a positive number"):
        fit.optimal(1e20, unique_tokens=-5)


def test_a_named_u_column_must_hold_positive_numbers():
    with pytest.raises(UserError, match=r"row 2, column 'U': -1.0 is not positive"):
        load_table({"N": [1e8, 2e8], "D": [1e9, 1e9], "U": [1e9, -1], "loss": [3, 2]}, u="U")
