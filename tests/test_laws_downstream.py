"""Downstream scaling: metric power law, sigmoid, the two-step ladder, label efficiency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import (
    chinchilla_loss,
    fit_ladder,
    fit_metric_power_law,
    fit_sigmoid,
    label_efficiency,
    ladder_holdout,
    load_fit,
    load_table,
    save_fit,
    small_grid,
)
from scalelab.laws.downstream import predict_ladder

TRUE = {"E": 1.5, "A": 300.0, "B": 1500.0, "alpha": 0.33, "beta": 0.33}
SIG = {"a": 0.7, "k": -4.0, "L0": 2.6, "b": 0.25}  # accuracy falls with task loss


def sigmoid(loss, p=SIG):
    return p["a"] / (1 + np.exp(-p["k"] * (loss - p["L0"]))) + p["b"]


def test_sigmoid_recovers_planted_curve_free_and_with_chance_fixed():
    loss = np.linspace(1.8, 3.6, 15)
    fit = fit_sigmoid(loss, sigmoid(loss))
    for k, v in SIG.items():
        assert getattr(fit, k) == pytest.approx(v, rel=1e-5), k
    fixed = fit_sigmoid(loss, sigmoid(loss), chance=0.25)
    assert fixed.b_fixed and fixed.b == 0.25 and fixed.a == pytest.approx(0.7, rel=1e-5)
    assert "b" not in fixed.params
    with pytest.raises(UserError, match="3 free parameters but there are only 3 points"):
        fit_sigmoid(loss[:3], sigmoid(loss[:3]), chance=0.25)


def ladder_rows(noise=0.0, seed=0):
    """A ladder: 5 sizes x 4 token counts; task loss from TRUE, accuracy from the sigmoid."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in np.geomspace(2e7, 1.2e9, 5):
        for ratio in (5.0, 10.0, 20.0, 40.0):
            d = n * ratio
            loss = chinchilla_loss(n, d, TRUE) * np.exp(rng.normal(0, noise))
            acc = sigmoid(loss) + rng.normal(0, noise)
            rows.append({"N": n, "D": d, "loss": loss, "acc": acc})
    return load_table(rows, n="N", d="D", extra=["acc"])


def test_ladder_chains_loss_law_and_sigmoid(tmp_path):
    table = ladder_rows()
    fit = fit_ladder(table, "acc", chance=0.25, grid=small_grid())
    n, d = 7e9, 7e9 * 20
    truth = sigmoid(chinchilla_loss(n, d, TRUE))
    assert fit.predict(n, d)[0] == pytest.approx(truth, abs=2e-3)
    assert fit.predict_loss(n, d)[0] == pytest.approx(chinchilla_loss(n, d, TRUE), rel=1e-3)
    back = load_fit(save_fit(fit, tmp_path / "ladder.json"))
    assert back.predict(n, d)[0] == pytest.approx(fit.predict(n, d)[0])


def test_ladder_holdout_reports_error_and_interval():
    table = ladder_rows(noise=0.003, seed=1)
    res = ladder_holdout(table, "acc", chance=0.25, n_boot=40, seed=0)
    held_n, held_d = res.N, res.D
    assert held_n == pytest.approx(1.2e9) and held_d == pytest.approx(1.2e9 * 40)
    assert math.isfinite(res.observed_metric) and abs(res.abs_error) < 0.03
    assert res.metric.lo <= res.metric.estimate <= res.metric.hi
    assert res.n_ok >= 35
    assert "observed metric" in res.summary()
    again = ladder_holdout(table, "acc", chance=0.25, n_boot=40, seed=0)
    assert again.metric == res.metric  # seeded


def test_predict_ladder_bad_metric_column():
    with pytest.raises(UserError, match="no metric column 'f1'"):
        predict_ladder(ladder_rows(), "f1", 1e9, 2e10)


def test_metric_power_law_against_size():
    n = np.geomspace(1e7, 1e10, 8)
    metric = 1.0 - (0.1 + 5.0 * n**-0.2)
    fit = fit_metric_power_law(n, metric)
    assert fit.law.params["alpha"] == pytest.approx(0.2, rel=1e-3)
    assert fit.predict([1e11])[0] == pytest.approx(1.0 - (0.1 + 5.0 * 1e11**-0.2), rel=1e-4)
    with pytest.raises(UserError, match="not below the ceiling"):
        fit_metric_power_law(n, np.full(8, 1.2))


def test_label_efficiency_and_labels_needed():
    rng = np.random.default_rng(0)
    n = np.array([100, 200, 400, 800, 1600, 3200, 6400, 12800], dtype=float)
    f1 = 1.0 - (0.08 + 2.5 * n**-0.45) * np.exp(rng.normal(0, 0.01, n.size))
    res = label_efficiency(n, f1, n_boot=200, seed=0)
    assert res.law.params["alpha"] == pytest.approx(0.45, abs=0.08)
    target = 0.85
    truth = (2.5 / (1 - target - 0.08)) ** (1 / 0.45)
    iv = res.labels_needed(target)
    assert iv.lo < iv.estimate < iv.hi
    assert iv.lo < truth < iv.hi
    # Beyond the law's floor (error below E): unreachable.
    assert math.isinf(res.labels_needed(0.99).estimate)
    assert res.predict([25600])[0] > res.predict([12800])[0]
    with pytest.raises(UserError, match="below the ceiling"):
        res.labels_needed(1.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_sigmoid_through_trendless_points_says_it_is_not_identified(seed):
    """Accuracies with no trend in the loss (small models near chance, as in the default
    study's zero-shot scores): the sigmoid fits noise, and must say so."""
    rng = np.random.default_rng(seed)
    loss = np.linspace(2.5, 3.1, 15)
    fit = fit_sigmoid(loss, 0.30 + rng.normal(0, 0.01, loss.size), chance=0.25)
    assert any("not identified" in w for w in fit.warnings)


def test_a_sigmoid_through_its_whole_range_is_identified():
    rng = np.random.default_rng(0)
    full = np.linspace(1.0, 5.0, 30)
    acc = 0.6 / (1 + np.exp(3.0 * (full - 3.0))) + 0.25 + rng.normal(0, 0.01, full.size)
    good = fit_sigmoid(full, acc, chance=0.25)
    assert good.warnings == ()
    assert abs(good.L0 - 3.0) < 0.05
