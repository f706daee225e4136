"""The safe expression language for custom laws: values, exact gradients, and rejections."""

from __future__ import annotations

import numpy as np
import pytest

from scalelab.errors import UserError
from scalelab.laws.expr import parse_expression, parse_param_bounds


def test_value_and_gradient_of_every_construct():
    expr = parse_expression(
        "E + A * exp(-alpha * log(N)) / sqrt(D) - tanh(B) + sigmoid(B) * log10(C) + abs(-A) ** 0.5 + (+E) - -1",
        ["E", "A", "alpha", "B"],
    )
    assert expr.variables == ("N", "D", "C")
    N, D = np.array([1e6, 4e6]), np.array([1e8, 2e8])
    data = {"N": N, "D": D, "C": 6 * N * D}
    theta = np.array([[1.5, 30.0, 0.3, 0.7], [2.0, 10.0, 0.5, -0.2]])
    val, jac = expr.value_and_grad(theta, data)
    E, A, al, B = (theta[:, i : i + 1] for i in range(4))
    sig = 1 / (1 + np.exp(-B))
    want = E + A * N**-al / np.sqrt(D) - np.tanh(B) + sig * np.log10(6 * N * D) + np.sqrt(A) + E + 1
    np.testing.assert_allclose(val, want, rtol=1e-12)
    eps = 1e-6
    for j in range(4):
        up, dn = theta.copy(), theta.copy()
        up[:, j] += eps
        dn[:, j] -= eps
        fd = (expr.evaluate(up, data) - expr.evaluate(dn, data)) / (2 * eps)
        np.testing.assert_allclose(jac[:, :, j], fd, rtol=1e-6, atol=1e-8)


def test_power_with_parameter_in_base_and_exponent():
    expr = parse_expression("(N / k) ** (-alpha)", ["k", "alpha"])
    N = np.array([10.0, 100.0])
    theta = np.array([[2.0, 0.5]])
    val, jac = expr.value_and_grad(theta, {"N": N})
    np.testing.assert_allclose(val[0], (N / 2.0) ** -0.5)
    np.testing.assert_allclose(jac[0, :, 0], 0.5 * (N / 2.0) ** -0.5 / 2.0)  # d/dk
    np.testing.assert_allclose(jac[0, :, 1], -np.log(N / 2.0) * (N / 2.0) ** -0.5)


@pytest.mark.parametrize(
    "text, params, message",
    [
        ("__import__('os').system('true')", [], "calling '__import__.*' is not allowed"),
        ("N.__class__", [], "Attribute is not allowed"),
        ("open('x')", [], "calling 'open' is not allowed"),
        ("[N][0]", [], "Subscript is not allowed"),
        ("(lambda: N)()", [], "calling 'lambda: N' is not allowed"),
        ("[x for x in N]", [], "ListComp is not allowed"),
        ("N if N else D", [], "IfExp is not allowed"),
        ("'abc'", [], "constant 'abc' is not a number"),
        ("N ^ alpha", ["alpha"], r"'\^' is not a power here; write \*\*"),
        ("N % 2", [], "operator Mod is not allowed"),
        ("N < D", [], "Compare is not allowed"),
        ("A / Q", ["A"], "unknown name 'Q'.*column 5"),
        ("A / N + B", ["A"], "unknown name 'B'"),
        ("A / N", ["A", "beta"], "parameter 'beta' is declared but not used"),
        ("A * 2", ["A"], "uses none of the variables"),
        ("exp(N, D)", [], r"exp\(\) takes exactly one argument"),
        ("E + A / N **", ["E", "A"], "invalid syntax"),
        ("", [], "empty"),
        ("N" + " + N" * 400, [], "longer than|too large"),
        ("A / N", ["N"], "clashes"),
    ],
)
def test_rejections_say_what_and_where(text, params, message):
    with pytest.raises(UserError, match=message) as err:
        parse_expression(text, params)
    assert "\n" not in str(err.value)


def test_param_bounds_parsing():
    assert parse_param_bounds(["alpha=0:2", "E = 0.5:5"]) == {"alpha": (0.0, 2.0), "E": (0.5, 5.0)}
    with pytest.raises(UserError, match="must look like name=lo:hi"):
        parse_param_bounds(["alpha=0"])
    with pytest.raises(UserError, match="bounds must be numbers"):
        parse_param_bounds(["alpha=a:b"])
