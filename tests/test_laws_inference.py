"""Inference-aware allocation (Sardana et al. 2024) and the smallest model for a target loss:
closed forms, brute-force grids, the data-constrained law, the CLI, bad input."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest

from scalelab.cli import main
from scalelab.errors import UserError
from scalelab.laws.chinchilla import chinchilla_loss, fit_chinchilla, small_grid
from scalelab.laws.constrained import data_constrained_loss, fit_data_constrained
from scalelab.laws.inference import (
    inference_optimal,
    inference_optimal_at_compute,
    smallest_model,
    tokens_for_loss,
)
from scalelab.laws.results import load_fit, save_fit
from scalelab.laws.table import table_from_arrays

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def _table(params=TRUE):
    n = np.repeat(np.geomspace(2e7, 2e9, 6), 3)
    d = n * np.tile([5.0, 20.0, 80.0], 6)
    return table_from_arrays(loss=chinchilla_loss(n, d, params), N=n, D=d)


@pytest.fixture(scope="module")
def fit():
    return fit_chinchilla(_table(), grid=small_grid())


def _tokens(p, n, loss):
    """Closed form: the D at which E + A/N^alpha + B/D^beta = loss (nan if unreachable)."""
    gap = loss - p["E"] - p["A"] * n ** -p["alpha"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(gap > 0, (p["B"] / gap) ** (1 / p["beta"]), np.nan)


def test_without_inference_it_is_the_compute_optimal_model(fit):
    p, losses = fit.params, [2.0, 2.3, 2.6]
    plan = inference_optimal(fit, loss=losses, inference_tokens=0)
    al, be = p["alpha"], p["beta"]
    for i, lv in enumerate(losses):
        # alpha A N^-alpha = beta B D^-beta at the optimum (Hoffmann et al. 2022, eq. 4), so
        # L - E = A N^-alpha (1 + alpha/beta).
        n = (p["A"] * (1 + al / be) / (lv - p["E"])) ** (1 / al)
        d = (p["B"] * (1 + be / al) / (lv - p["E"])) ** (1 / be)
        assert plan.n_opt[i] == pytest.approx(n, rel=1e-6)
        assert plan.d_opt[i] == pytest.approx(d, rel=1e-6)
        assert plan.compute_optimal_n[i] == pytest.approx(n, rel=1e-6)
        alloc = fit.optimal(6 * n * d)  # the compute-optimal model at that compute has loss lv
        assert alloc.loss[0] == pytest.approx(lv, rel=1e-9)
        assert alloc.n_opt[0] == pytest.approx(plan.n_opt[i], rel=1e-6)
    assert all(abs(r["saving"]) < 1e-9 for r in plan.rows())


def test_serving_more_trains_a_smaller_model_longer(fit):
    served = [0, 1e9, 1e10, 1e11, 1e12, 1e13]
    plans = [inference_optimal(fit, loss=2.2, inference_tokens=t) for t in served]
    n = [p.n_opt[0] for p in plans]
    d = [p.d_opt[0] for p in plans]
    assert all(a > b for a, b in zip(n, n[1:])) and all(a < b for a, b in zip(d, d[1:]))
    savings = [p.rows()[0]["saving"] for p in plans]
    assert all(a <= b + 1e-12 for a, b in zip(savings, savings[1:])) and savings[-1] > 0.3
    for p in plans:  # every plan reaches the target loss
        assert fit.predict(N=p.n_opt, D=p.d_opt)[0] == pytest.approx(2.2, rel=1e-12)
    assert "smaller model" in plans[-1].summary() and "inference-aware" in plans[-1].summary()


@pytest.mark.parametrize("served", [1e11, 1e13])
def test_matches_a_brute_force_grid(fit, served):
    p, target = fit.params, 2.2
    plan = inference_optimal(fit, loss=target, inference_tokens=served)
    n = np.exp(np.linspace(math.log(1e8), math.log(1e12), 600_001))
    cost = 6 * n * _tokens(p, n, target) + 2 * n * served
    i = int(np.nanargmin(cost))
    assert plan.n_opt[0] == pytest.approx(n[i], rel=1e-4)
    assert plan.d_opt[0] == pytest.approx(_tokens(p, n[i], target), rel=1e-4)
    assert plan.rows()[0]["total_flops"] == pytest.approx(cost[i], rel=1e-8)
    assert plan.rows()[0]["total_flops"] <= cost[i] * (1 + 1e-12)


def test_tokens_for_loss_is_the_inverse_of_the_law(fit):
    n = np.array([1e8, 1e9, 1e10])
    ld = tokens_for_loss(lambda a, b: fit.predict(N=a, D=b), n, 2.3)
    np.testing.assert_allclose(np.exp(ld), _tokens(fit.params, n, 2.3), rtol=1e-12)
    assert np.isnan(tokens_for_loss(lambda a, b: fit.predict(N=a, D=b), np.array([1e3]), 2.3))[0]


def test_from_a_budget_same_loss_less_lifetime_compute(fit):
    plan = inference_optimal_at_compute(fit, compute=[1e20, 1e21], inference_tokens=2e12)
    ref = fit.optimal([1e20, 1e21])
    np.testing.assert_allclose(plan.loss, ref.loss, rtol=1e-12)
    np.testing.assert_allclose(plan.compute_optimal_n, ref.n_opt, rtol=1e-12)
    for row in plan.rows():
        assert row["n_opt"] < row["compute_optimal_n"] and row["d_opt"] > row["compute_optimal_d"]
        assert row["train_flops"] > row["compute_optimal_train_flops"]
        assert row["total_flops"] < row["compute_optimal_total_flops"]
    assert plan.compute == (1e20, 1e21) and "compute-optimal at C = 1e+21" in plan.summary()


def test_smallest_model_within_a_budget(fit):
    c, target = 1e21, 2.3
    res = smallest_model(fit, loss=target, compute=c, inference_tokens=1e12)
    best = fit.optimal(c)
    assert res.reachable and res.n < best.n_opt[0] and res.best_loss == pytest.approx(best.loss[0])
    assert fit.predict(N=res.n, D=res.d)[0] == pytest.approx(target, rel=1e-10)
    assert res.d == pytest.approx(c / (6 * res.n))
    n = np.exp(np.linspace(math.log(1e6), math.log(best.n_opt[0]), 400_001))  # brute force
    ok = fit.predict(N=n, D=c / (6 * n)) <= target
    assert res.n == pytest.approx(n[np.argmax(ok)], rel=1e-4)
    text = res.summary()
    assert "smallest model reaching loss 2.3000" in text and "serving 1e+12 tokens" in text


def test_results_round_trip_through_json(fit, tmp_path):
    plan = inference_optimal_at_compute(fit, compute=[1e20, 1e21], inference_tokens=1e12)
    small = smallest_model(fit, loss=2.3, compute=1e21)
    for res in (plan, small):
        back = load_fit(save_fit(res, tmp_path / f"{res.kind}.json"))
        assert type(back) is type(res) and back == res


def test_unreachable_targets_say_so(fit):
    res = smallest_model(fit, loss=2.0, compute=1e21)
    assert not res.reachable and math.isnan(res.n)
    assert res.best_loss == pytest.approx(fit.optimal(1e21).loss[0])
    text = res.summary()
    assert "\n" not in text and re.search(r"unreachable within C = 1e\+21.*lowest loss", text)
    with pytest.raises(UserError, match="unreachable by this law at any model size"):
        inference_optimal(fit, loss=1.7, inference_tokens=1e12)  # below E = 1.8
    with pytest.raises(UserError, match="inference tokens must be a number >= 0"):
        inference_optimal(fit, loss=2.2, inference_tokens=-1)
    with pytest.raises(UserError, match="unique tokens need a data_constrained fit"):
        inference_optimal(fit, loss=2.2, inference_tokens=1e12, unique_tokens=1e9)


def test_with_a_cap_on_unique_data():
    true = {**TRUE, "R_D_star": 15.0}
    rows = [(n, u * ep, u) for n in np.geomspace(2e7, 2e9, 5) for u in (1e8, 1e9) for ep in (0.5, 2, 8, 30)]  # fmt: skip
    n, d, u = (np.array(col) for col in zip(*rows))
    dc = fit_data_constrained(
        table_from_arrays(loss=data_constrained_loss(n, d, u, true), N=n, D=d, U=u)
    )
    free = inference_optimal(dc, loss=2.3, inference_tokens=1e12)  # no cap: Chinchilla's answer
    cap = inference_optimal(dc, loss=2.3, inference_tokens=1e12, unique_tokens=3e10)
    ch = inference_optimal(
        fit_chinchilla(_table(), grid=small_grid()), loss=2.3, inference_tokens=1e12
    )
    assert free.n_opt[0] == pytest.approx(ch.n_opt[0], rel=1e-4)
    # Repeated tokens are worth less, so reaching the loss takes a larger model than unlimited data.
    assert cap.d_opt[0] > 3e10 and cap.n_opt[0] > free.n_opt[0]
    assert dc.predict(N=cap.n_opt, D=cap.d_opt, U=3e10)[0] == pytest.approx(2.3, rel=1e-10)
    res = smallest_model(dc, loss=2.4, compute=1e21, unique_tokens=3e9)
    assert res.reachable and dc.predict(N=res.n, D=res.d, U=3e9)[0] == pytest.approx(2.4, rel=1e-9)


@pytest.fixture()
def fit_json(tmp_path):
    path = tmp_path / "runs.csv"
    t = _table()
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["params", "tokens", "loss"])
        w.writerows(zip(t.N, t.D, t.loss))
    out = tmp_path / "fit.json"
    assert main(["fit", str(path), "--grid", "small", "--out", str(out)]) == 0
    kaplan = tmp_path / "kaplan.json"
    assert main(["fit", str(path), "--form", "kaplan_n", "--out", str(kaplan)]) in (0, 1)
    return out, kaplan


def test_cli(fit_json, capsys):
    out, _ = fit_json
    capsys.readouterr()
    assert main(["optimal", str(out), "--compute", "1e21", "--inference-tokens", "1e12"]) == 0
    text = capsys.readouterr().out
    assert "Sardana et al. 2024" in text and "inference-aware" in text and "smaller model" in text
    assert (
        main(["optimal", str(out), "--target-loss", "2.3,2.5", "--inference-tokens", "1e12"]) == 0
    )
    assert capsys.readouterr().out.count("-> serving 1e+12 tokens") == 2
    argv = ["optimal", str(out), "--target-loss", "2.3", "--compute", "1e21"]
    assert main(argv + ["--inference-tokens", "1e12"]) == 0
    text = capsys.readouterr().out
    assert "smallest model reaching loss 2.3000 within C = 1e+21" in text and "serving" in text
    assert main(["optimal", str(out), "--target-loss", "2.0", "--compute", "1e21"]) == 0
    text = capsys.readouterr().out.strip()
    assert text.startswith("loss 2.0000 is unreachable within C = 1e+21") and "\n" not in text


def test_cli_bad_input_is_one_line(fit_json, capsys):
    out, kaplan = fit_json
    capsys.readouterr()
    cases = [
        (["--target-loss", "2.3"], r"--target-loss needs --compute C .* or --inference-tokens T"),
        (["--compute", "1e21", "--inference-tokens", "-1"], r"--inference-tokens must be >= 0"),
        (["--target-loss", "-2"], r"--target-loss values must be positive"),
        (["--target-loss", "2.3,2.4", "--compute", "1e21,1e22,1e23"], r"equal lengths"),
        (["--target-loss", "1.0", "--inference-tokens", "1e12"], r"unreachable by this law"),
        ([], r"optimal needs --compute C"),
    ]
    for extra, message in cases:
        assert main(["optimal", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert err.startswith("scalelab: error:") and "\n" not in err and re.search(message, err), (
            err
        )
    assert main(["optimal", str(kaplan), "--target-loss", "2.3", "--compute", "1e21"]) == 2
    assert "needs a loss law in two of N, D, C" in capsys.readouterr().err
