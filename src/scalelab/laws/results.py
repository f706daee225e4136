"""Frozen, JSON-serialisable result types and ``save_fit`` / ``load_fit``.

Every result is a frozen dataclass deriving :class:`Result`. ``to_dict()`` gives plain JSON
(numbers, strings, lists, dicts; ``inf`` written as the string ``"inf"``) with a ``"form"``
key naming the result type; ``load_fit`` dispatches on that key. Fields hold tuples and
floats rather than numpy arrays, so results compare, hash and serialise predictably.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, Self, Union, get_args, get_origin

from scalelab.errors import UserError
from scalelab.utils.io import atomic_write_json, json_safe

SCHEMA_VERSION = 1

_REGISTRY: dict[str, type[Result]] = {}

# Modules whose import registers result types (imported lazily by load_fit).
_RESULT_MODULES = (
    "scalelab.laws.fits",
    "scalelab.laws.compare",
    "scalelab.laws.chinchilla",
    "scalelab.laws.isoflop",
    "scalelab.laws.bootstrap",
    "scalelab.laws.validation",
    "scalelab.laws.downstream",
)


def register(*forms: str):
    """Class decorator: ``load_fit`` builds this class for JSON whose ``"form"`` is in ``forms``."""

    def deco(cls: type[Result]) -> type[Result]:
        for form in forms:
            _REGISTRY[form] = cls
        return cls

    return deco


@dataclasses.dataclass(frozen=True)
class Result:
    """Base of every result: ``to_dict``/``from_dict``/``to_json`` by field type hints."""

    kind: ClassVar[str] = "result"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "form" not in {f.name for f in dataclasses.fields(self)}:
            out["form"] = self.kind
        for f in dataclasses.fields(self):
            out[f.name] = _dump(getattr(self, f.name))
        out["schema"] = SCHEMA_VERSION
        return json_safe(out)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        if not isinstance(data, dict):
            raise UserError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        hints = _hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                kwargs[f.name] = _load(data[f.name], hints[f.name], f"{cls.__name__}.{f.name}")
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise UserError(f"{cls.__name__}: {exc}") from None

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dump(value: Any) -> Any:
    if isinstance(value, Result):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _dump(v) for k, v in value.items()}
    return value


def _load(value: Any, tp: Any, where: str) -> Any:
    """Rebuild ``value`` (parsed JSON) as the annotated type ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _load(value, arg, where)
            except (UserError, TypeError, ValueError):
                continue
        raise UserError(f"{where}: cannot read {value!r}")
    if isinstance(tp, type) and issubclass(tp, Result):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object")
        sub = _REGISTRY.get(value.get("form", ""), tp)
        if not issubclass(sub, tp):
            sub = tp
        return sub.from_dict(value)
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(v, args[0], where) for v in value)
        if args and len(args) != len(value):
            raise UserError(f"{where}: expected {len(args)} values")
        return tuple(_load(v, t, where) for v, t in zip(value, args or [Any] * len(value)))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected an object")
        _, vt = args if args else (Any, Any)
        return {str(k): _load(v, vt, where) for k, v in value.items()}
    if tp is float:
        if value is None:
            return math.nan
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):
            return float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{where}: expected true/false, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{where}: expected text, got {value!r}")
    return value


# ====================================================================== shared results


@dataclasses.dataclass(frozen=True)
class Interval(Result):
    """A percentile interval (``lo``, ``hi``) around a point estimate, at ``level``."""

    kind: ClassVar[str] = "interval"
    estimate: float
    lo: float
    hi: float
    level: float = 0.95
    se: float = math.nan
    """Standard deviation of the bootstrap distribution."""


@dataclasses.dataclass(frozen=True)
class Allocation(Result):
    """Compute-optimal allocation at one or more compute budgets (all tuples per budget)."""

    kind: ClassVar[str] = "allocation"
    compute: tuple[float, ...]
    n_opt: tuple[float, ...]
    d_opt: tuple[float, ...]
    tokens_per_param: tuple[float, ...]
    loss: tuple[float, ...]
    intervals: dict[str, tuple[Interval, ...]] = dataclasses.field(default_factory=dict)
    """Per quantity (``n_opt``, ``d_opt``, ``tokens_per_param``, ``loss``): one interval per
    budget, present when the fit carries a bootstrap."""

    def rows(self) -> list[dict[str, float]]:
        """One dict per budget, with ``*_lo``/``*_hi`` columns when intervals exist."""
        out = []
        for i, c in enumerate(self.compute):
            row = {
                "compute": c,
                "n_opt": self.n_opt[i],
                "d_opt": self.d_opt[i],
                "tokens_per_param": self.tokens_per_param[i],
                "loss": self.loss[i],
            }
            for key, ivs in self.intervals.items():
                row[f"{key}_lo"], row[f"{key}_hi"] = ivs[i].lo, ivs[i].hi
            out.append(row)
        return out


def save_fit(fit: Result, path: str | Path) -> Path:
    """Write any result as JSON (atomically); ``load_fit`` reads it back."""
    path = Path(path)
    atomic_write_json(path, fit.to_dict())
    return path


def result_from_dict(data: dict[str, Any], *, where: str = "fit") -> Result:
    """Build the registered result type named by ``data["form"]``."""
    for name in _RESULT_MODULES:
        importlib.import_module(name)
    if not isinstance(data, dict) or "form" not in data:
        raise UserError(f"{where}: not a scalelab fit (no 'form' key)")
    form = data["form"]
    cls = _REGISTRY.get(form)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"{where}: unknown fit form {form!r}; known forms: {known}")
    return cls.from_dict({k: v for k, v in data.items() if k != "schema"})


def load_fit(path: str | Path) -> Result:
    """Read a result written by :func:`save_fit`, as the class its ``"form"`` names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"fit file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    return result_from_dict(data, where=str(path))
