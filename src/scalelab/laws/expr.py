"""User-defined law forms: a safe expression language with exact gradients.

An expression such as ``"E + A / (N - N**2/D)**alpha + B / D**beta"`` is parsed with
:mod:`ast` and checked against a whitelist (numbers, the variables N, D, C, declared
parameter names, ``+ - * / **``, unary minus, and the functions ``exp log log10 sqrt
tanh sigmoid abs``). Nothing is ever passed to ``eval``: the tree is compiled into nested
numpy closures that compute the value *and* its gradient with respect to every parameter
(forward-mode differentiation), batched over starts:

    value [b, P], grads {param index: [b, P]}   for theta [b, p] and data [P]
"""

from __future__ import annotations

import ast
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from scalelab.errors import UserError

VARIABLES = ("N", "D", "C")
MAX_LENGTH = 1000
MAX_NODES = 300
MAX_DEPTH = 40

# A compiled node: (theta [b, p], data {var: [1, P]}) -> (value, {param: d value/d param}).
Node = Callable[[np.ndarray, Mapping[str, np.ndarray]], tuple[np.ndarray, dict[int, np.ndarray]]]

_ALLOWED_HELP = (
    "allowed: numbers, N, D, C, the declared parameters, + - * / ** and unary minus, "
    "exp() log() log10() sqrt() tanh() sigmoid() abs()"
)


@dataclasses.dataclass(frozen=True)
class Expression:
    """A parsed, compiled law expression."""

    text: str
    """The expression as the user wrote it."""
    params: tuple[str, ...]
    """Parameter names, in the order of the parameter vector."""
    variables: tuple[str, ...]
    """The variables (of N, D, C) the expression uses."""
    _root: Node = dataclasses.field(repr=False, compare=False)
    exponent_params: tuple[str, ...] = ()
    """Parameters that occur in the exponent of a power (``N**alpha``, ``(N/k)**(-a)``)."""
    offset_params: tuple[str, ...] = ()
    """Parameters that are a bare term of the top-level sum (the ``E`` of ``E + A/N**a``)."""

    def value_and_grad(
        self, theta: np.ndarray, data: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``theta [b, p]``, ``data {var: [P]}`` -> ``(value [b, P], grad [b, P, p])``."""
        theta = np.asarray(theta, dtype=np.float64)
        cols = {k: np.asarray(v, dtype=np.float64)[None, :] for k, v in data.items()}
        n_points = next(iter(cols.values())).shape[1]
        with np.errstate(all="ignore"):
            val, grads = self._root(theta, cols)
        b = theta.shape[0]
        val = np.broadcast_to(val, (b, n_points))
        jac = np.zeros((b, n_points, len(self.params)))
        for j, gj in grads.items():
            jac[:, :, j] = np.broadcast_to(gj, (b, n_points))
        return np.array(val), jac

    def evaluate(self, theta: np.ndarray, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """Value only, ``[b, P]``."""
        return self.value_and_grad(theta, data)[0]


def parse_expression(text: str, params: Sequence[str]) -> Expression:
    """Parse and compile ``text`` over the variables N, D, C and the named ``params``.

    Raises :class:`UserError` naming the column of the first problem: a syntax error, a
    construct outside the whitelist (attribute access, calls of other functions, ``^``
    instead of ``**``, ...), an unknown name, or a declared parameter that is not used.
    """
    if not isinstance(text, str) or not text.strip():
        raise UserError("the law expression is empty")
    if len(text) > MAX_LENGTH:
        raise UserError(f"the law expression is longer than {MAX_LENGTH} characters")
    params = tuple(params)
    for p in params:
        if not p.isidentifier():
            raise UserError(f"parameter name {p!r} is not a valid name")
        if p in VARIABLES or p in _FUNCS:
            raise UserError(f"parameter name {p!r} clashes with a variable or function name")
    if len(set(params)) != len(params):
        raise UserError("parameter names must be distinct")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        col = f" at column {exc.offset}" if exc.offset else ""
        raise UserError(f"law expression {text!r}: invalid syntax{col}") from None
    compiler = _Compiler(text, params)
    root = compiler.compile(tree.body, depth=0)
    unused = [p for p in params if p not in compiler.used_params]
    if unused:
        raise UserError(
            f"law expression {text!r}: parameter '{unused[0]}' is declared but not used"
        )
    if not compiler.used_vars:
        raise UserError(f"law expression {text!r} uses none of the variables N, D, C")
    variables = tuple(v for v in VARIABLES if v in compiler.used_vars)
    return Expression(
        text=text,
        params=params,
        variables=variables,
        _root=root,
        exponent_params=tuple(p for p in params if p in compiler.exponent_params),
        offset_params=tuple(p for p in params if p in _sum_terms(tree.body, params)),
    )


def _sum_terms(node: ast.AST, params: Sequence[str]) -> set[str]:
    """The parameters that stand alone as a term of the top-level sum ``t1 + t2 - t3``."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
        right = _sum_terms(node.right, params) if isinstance(node.op, ast.Add) else set()
        return _sum_terms(node.left, params) | right
    if isinstance(node, ast.Name) and node.id in params:
        return {node.id}
    return set()


def parse_param_bounds(items: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``["alpha=0:2", "E=0.5:5"]`` -> ``{"alpha": (0.0, 2.0), "E": (0.5, 5.0)}``."""
    out: dict[str, tuple[float, float]] = {}
    for item in items:
        if "=" not in item or ":" not in item.split("=", 1)[1]:
            raise UserError(f"parameter spec {item!r} must look like name=lo:hi (e.g. alpha=0:2)")
        name, rng = item.split("=", 1)
        lo_text, hi_text = rng.split(":", 1)
        try:
            lo, hi = float(lo_text), float(hi_text)
        except ValueError:
            raise UserError(f"parameter spec {item!r}: bounds must be numbers") from None
        out[name.strip()] = (lo, hi)
    return out


def check_bounds(bounds: Mapping[str, tuple[float, float]]) -> None:
    for name, (lo, hi) in bounds.items():
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise UserError(f"parameter '{name}': bounds ({lo}, {hi}) must be finite with lo < hi")


# ====================================================================== compiler


def _sigmoid(u: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * u))  # overflow-free logistic


# name -> (value, derivative of value w.r.t. its argument given (u, value))
_FUNCS: dict[str, tuple[Callable, Callable]] = {
    "exp": (np.exp, lambda u, v: v),
    "log": (np.log, lambda u, v: 1.0 / u),
    "log10": (np.log10, lambda u, v: 1.0 / (u * math.log(10.0))),
    "sqrt": (np.sqrt, lambda u, v: 0.5 / v),
    "tanh": (np.tanh, lambda u, v: 1.0 - v * v),
    "sigmoid": (_sigmoid, lambda u, v: v * (1.0 - v)),
    "abs": (np.abs, lambda u, v: np.sign(u)),
}


class _Compiler:
    def __init__(self, text: str, params: tuple[str, ...]) -> None:
        self.text = text
        self.params = {p: i for i, p in enumerate(params)}
        self.used_params: set[str] = set()
        self.used_vars: set[str] = set()
        self.exponent_params: set[str] = set()
        self._in_exponent = 0  # > 0 while compiling the exponent of a power
        self.n_nodes = 0

    def _fail(self, node: ast.AST, message: str) -> UserError:
        col = getattr(node, "col_offset", None)
        where = f" at column {col + 1}" if col is not None else ""
        return UserError(f"law expression {self.text!r}: {message}{where}")

    def compile(self, node: ast.AST, depth: int) -> Node:
        self.n_nodes += 1
        if self.n_nodes > MAX_NODES or depth > MAX_DEPTH:
            raise self._fail(node, "the expression is too large or too deeply nested")
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self._fail(node, f"constant {node.value!r} is not a number")
            c = np.float64(node.value)
            return lambda th, data: (c, {})
        if isinstance(node, ast.Name):
            return self._name(node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = self.compile(node.operand, depth + 1)
            if isinstance(node.op, ast.UAdd):
                return inner

            def neg(th, data, inner=inner):
                v, g = inner(th, data)
                return -v, {k: -x for k, x in g.items()}

            return neg
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.BitXor):
                raise self._fail(node, "'^' is not a power here; write ** (e.g. N**alpha)")
            op = _BINOPS.get(type(node.op))
            if op is None:
                raise self._fail(node, f"operator {type(node.op).__name__} is not allowed")
            left = self.compile(node.left, depth + 1)
            is_pow = isinstance(node.op, ast.Pow)
            self._in_exponent += is_pow
            right = self.compile(node.right, depth + 1)
            self._in_exponent -= is_pow
            return lambda th, data: op(left(th, data), right(th, data))
        if isinstance(node, ast.Call):
            return self._call(node, depth)
        raise self._fail(node, f"{type(node).__name__} is not allowed ({_ALLOWED_HELP})")

    def _name(self, node: ast.Name) -> Node:
        name = node.id
        if name in VARIABLES:
            self.used_vars.add(name)
            return lambda th, data: (data[name], {})
        if name in self.params:
            self.used_params.add(name)
            if self._in_exponent:
                self.exponent_params.add(name)
            j = self.params[name]

            def param(th, data, j=j):
                col = th[:, j : j + 1]  # [b, 1]
                return col, {j: np.ones_like(col)}

            return param
        known = ", ".join(self.params) or "none"
        raise self._fail(node, f"unknown name '{name}' (variables: N, D, C; parameters: {known})")

    def _call(self, node: ast.Call, depth: int) -> Node:
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise self._fail(node, f"calling '{what}' is not allowed ({_ALLOWED_HELP})")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            raise self._fail(node, f"{node.func.id}() takes exactly one argument")
        fn, dfn = _FUNCS[node.func.id]
        inner = self.compile(node.args[0], depth + 1)

        def call(th, data):
            u, g = inner(th, data)
            v = fn(u)
            if not g:
                return v, {}
            dv = dfn(u, v)
            return v, {k: dv * x for k, x in g.items()}

        return call


def _add(a, b):
    (u, gu), (v, gv) = a, b
    g = dict(gu)
    for k, x in gv.items():
        g[k] = g[k] + x if k in g else x
    return u + v, g


def _sub(a, b):
    (u, gu), (v, gv) = a, b
    g = dict(gu)
    for k, x in gv.items():
        g[k] = g[k] - x if k in g else -x
    return u - v, g


def _mul(a, b):
    (u, gu), (v, gv) = a, b
    g = {k: x * v for k, x in gu.items()}
    for k, x in gv.items():
        g[k] = g[k] + u * x if k in g else u * x
    return u * v, g


def _div(a, b):
    (u, gu), (v, gv) = a, b
    val = u / v
    g = {k: x / v for k, x in gu.items()}
    for k, x in gv.items():
        term = -val * x / v
        g[k] = g[k] + term if k in g else term
    return val, g


def _pow(a, b):
    (u, gu), (v, gv) = a, b
    val = u**v
    g = {}
    if gu:  # d/dp u^v through the base: v u^(v-1) u'
        base = v * u ** (v - 1.0)
        g = {k: base * x for k, x in gu.items()}
    if gv:  # through the exponent: u^v log(u) v' (needs u > 0)
        lu = val * np.log(u)
        for k, x in gv.items():
            g[k] = g[k] + lu * x if k in g else lu * x
    return val, g


_BINOPS = {ast.Add: _add, ast.Sub: _sub, ast.Mult: _mul, ast.Div: _div, ast.Pow: _pow}
