"""Extrapolation checks: leave-largest-out and rollout on planted laws."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws import (
    chinchilla_loss,
    extrapolation_check,
    fit_chinchilla,
    fit_kaplan,
    small_grid,
    table_from_arrays,
)

TRUE = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def ladder(noise=0.003, sizes=7):
    rng = np.random.default_rng(4)
    N = np.repeat(np.geomspace(2e7, 3e9, sizes), 4)
    D = N * np.tile([5.0, 15.0, 40.0, 120.0], sizes)
    L = chinchilla_loss(N, D, TRUE) * np.exp(rng.normal(0, noise, N.size))
    return table_from_arrays(N=N, D=D, loss=L)


def fit_small(t):
    return fit_chinchilla(t, grid=small_grid())


def test_leave_largest_out_predicts_the_largest_model():
    res = extrapolation_check(ladder(), fit_small, by="N")
    assert res.n_fits == 1 and len(res.points) == 4  # the largest size, 4 token counts
    assert all(p.distance > 0 for p in res.points)
    assert max(abs(p.rel_error) for p in res.points) < 0.02
    row = res.by_cutoff()[0]
    assert row["n"] == 4 and row["median_distance"] == pytest.approx(
        np.log10(3e9 / 3e9 * (3e9 / 3e9)) + res.points[0].distance
    )
    assert "extrapolation check" in res.summary()


def test_largest_compute_alias():
    res = extrapolation_check(ladder(), fit_small, holdout="largest-compute")
    assert res.by == "C" and res.n_fits == 1 and len(res.points) >= 1
    assert all(p.distance > 0 for p in res.points)


def test_rollout_errors_shrink_as_more_sizes_are_seen():
    res = extrapolation_check(
        ladder(noise=0.0), fit_small, mode="rollout", by="N", min_train_levels=4
    )
    cut = res.by_cutoff()
    assert len(cut) == 3 and res.n_fits == 3
    # Noise-free law: every cutoff extrapolates almost exactly.
    assert all(r["max_abs_rel_error"] < 1e-3 for r in cut)


def test_wrong_form_extrapolates_worse_and_k_largest_holdout():
    t = ladder()
    good = extrapolation_check(t, fit_small, holdout=6, by="C")
    bad = extrapolation_check(t, lambda s: fit_kaplan(s, variable="N"), holdout=6, by="C")
    err = lambda r: np.median([abs(p.rel_error) for p in r.points])  # noqa: E731
    assert len(good.points) == 6 and err(good) < err(bad)


def test_bad_arguments():
    t = ladder()
    with pytest.raises(UserError, match="mode must be"):
        extrapolation_check(t, fit_small, mode="sideways")
    with pytest.raises(UserError, match="between 1 and"):
        extrapolation_check(t, fit_small, holdout=len(t))
    with pytest.raises(UserError, match="unknown law form"):
        extrapolation_check(t, "quadratic")
