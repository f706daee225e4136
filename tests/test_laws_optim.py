"""Batched L-BFGS and the analytic gradients of every objective (against finite differences)."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.laws.forms import ChinchillaForm, CustomForm, KaplanNDForm, PowerLawForm
from scalelab.laws.objective import ChinchillaObjective, HuberObjective, huber
from scalelab.laws.optim import CONVERGED_F, CONVERGED_GRAD, batched_lbfgs, polish


def _fd_grad(fun, theta, rel=1e-7):
    """Central differences of a batched objective, ``[S, p]`` -> ``[S, p]``."""
    rows = np.arange(theta.shape[0])
    out = np.zeros_like(theta)
    for j in range(theta.shape[1]):
        eps = rel * np.maximum(1.0, np.abs(theta[:, j]))
        up, dn = theta.copy(), theta.copy()
        up[:, j] += eps
        dn[:, j] -= eps
        out[:, j] = (fun(up, rows)[0] - fun(dn, rows)[0]) / (2 * eps)
    return out


def _chinchilla_data(rng, n=40):
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = N * np.exp(rng.uniform(np.log(2), np.log(100), n))
    L = 1.8 + 400 * N**-0.34 + 2000 * D**-0.37
    return N, D, L * np.exp(rng.normal(0, 0.01, n))


def test_huber_values():
    r = np.array([-1.0, -1e-3, 0.0, 5e-4, 2.0])
    np.testing.assert_allclose(
        huber(r, 1e-3), [1e-3 * (1 - 5e-4), 5e-7, 0.0, 1.25e-7, 1e-3 * (2 - 5e-4)]
    )
    np.testing.assert_allclose(huber(r, np.inf), 0.5 * r**2)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("delta", [1e-3, 0.05])
def test_chinchilla_gradient_matches_finite_differences(weighted, delta):
    rng = np.random.default_rng(0)
    N, D, L = _chinchilla_data(rng)
    w = rng.integers(0, 3, size=(3, N.size)).astype(float) if weighted else None
    obj = ChinchillaObjective(np.log(N), np.log(D), np.log(L), delta=delta, weights=w)
    theta = np.array(
        [[6.0, 7.6, 0.6, 0.34, 0.37], [5.0, 8.0, 0.2, 0.3, 0.4], [7.0, 7.0, 0.5, 0.4, 0.3]]
    )
    f, g = obj(theta, np.arange(3))
    np.testing.assert_allclose(g, _fd_grad(obj, theta), rtol=1e-5, atol=1e-9)
    # The fused objective agrees with the generic one built on the form's Jacobian.
    form = ChinchillaForm()
    generic = HuberObjective(
        lambda th: form.log_pred(th, {"N": N, "D": D}), np.log(L), delta=delta, weights=w
    )
    f2, g2 = generic(theta, np.arange(3))
    np.testing.assert_allclose(f, f2, rtol=1e-10)
    np.testing.assert_allclose(g, g2, rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize(
    "form, theta",
    [
        (KaplanNDForm(), [[30.0, 25.0, 0.08, 0.1], [28.0, 24.0, 0.1, 0.05]]),
        (PowerLawForm("N"), [[5.0, 0.5, 0.3], [2.0, -1.0, 0.1]]),
        (PowerLawForm("N", offset=False), [[5.0, 0.3]]),
        (
            CustomForm("E + A / (N - N**2/D)**alpha + B / D**beta", {"E": (0.5, 3), "A": (1, 1e4), "alpha": (0.1, 1), "B": (1, 1e4), "beta": (0.1, 1)}, log_params=()),
            [[1.8, 400.0, 0.34, 2000.0, 0.37], [1.0, 100.0, 0.2, 500.0, 0.5]],
        ),
        (  # amplitudes in log space (the default since 0.3): theta = log E, log A, alpha, ...
            CustomForm("E + A / (N - N**2/D)**alpha + B / D**beta", {"E": (0.5, 3), "A": (1, 1e4), "alpha": (0.1, 1), "B": (1, 1e4), "beta": (0.1, 1)}),
            [[0.59, 6.0, 0.34, 7.6, 0.37], [0.0, 4.6, 0.2, 6.2, 0.5]],
        ),
    ],
)  # fmt: skip
def test_form_jacobians_match_finite_differences(form, theta):
    rng = np.random.default_rng(1)
    N, D, L = _chinchilla_data(rng, 25)
    data = {"N": N, "D": D, "C": 6 * N * D}
    obj = HuberObjective(lambda th: form.log_pred(th, data), np.log(L), delta=1e-2)
    th = np.array(theta, dtype=float)
    _, g = obj(th, np.arange(th.shape[0]))
    np.testing.assert_allclose(g, _fd_grad(obj, th), rtol=1e-5, atol=1e-9)


def _rosenbrock(x, rows):
    a, b = x[:, 0], x[:, 1]
    f = (1 - a) ** 2 + 100 * (b - a * a) ** 2
    g = np.column_stack([-2 * (1 - a) - 400 * a * (b - a * a), 200 * (b - a * a)])
    return f, g


def test_batched_lbfgs_solves_many_rosenbrocks():
    starts = np.random.default_rng(0).uniform(-2, 2, size=(200, 2))
    res = batched_lbfgs(_rosenbrock, starts, gtol=1e-9, ftol=0.0)
    assert np.all(np.isin(res.status, (CONVERGED_GRAD, CONVERGED_F)))
    np.testing.assert_allclose(res.x, 1.0, atol=1e-5)
    assert res.n_eval < 200 * 200  # far fewer evaluations than 200 per start


def test_batched_lbfgs_respects_bounds_and_polish_agrees():
    res = batched_lbfgs(
        _rosenbrock,
        np.array([[0.0, 0.0], [-1.5, 2.0]]),
        lower=np.array([-2, -2]),
        upper=np.array([0.5, 2]),
    )
    np.testing.assert_allclose(res.x[:, 0], 0.5, atol=1e-6)  # the minimum (1, 1) is outside the box
    np.testing.assert_allclose(res.x[:, 1], 0.25, atol=1e-4)
    x, f, g, ok, msg, nit = polish(lambda z: tuple(v[0] for v in _rosenbrock(z[None], None)), res.x[0], lower=np.array([-2, -2]), upper=np.array([0.5, 2]))  # fmt: skip
    np.testing.assert_allclose(x, [0.5, 0.25], atol=1e-7)
