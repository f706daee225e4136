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
    "scalelab.laws.calibration",
    "scalelab.laws.constrained",
    "scalelab.laws.inference",
    "scalelab.laws.finetune_law",
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
    def from_dict(cls, data: dict[str, Any], *, where: str = "", path: str = "") -> Self:
        """Rebuild from parsed JSON; a missing key, a value of the wrong type or an
        inconsistent result is a :class:`UserError` naming ``where`` (the file) and the key
        (``path``: the dotted key of this result inside the file, empty at the top)."""
        where = where or cls.__name__
        if not isinstance(data, dict):
            raise UserError(
                f"{_at(where, path)}: expected a JSON object, got {type(data).__name__}"
            )
        hints = _hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        missing = [
            f.name
            for f in fields
            if f.name not in data
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            keys = ", ".join(f"'{_join(path, m)}'" for m in missing)
            raise UserError(
                f"{where}: missing key{'s' if len(missing) > 1 else ''} {keys} of a {cls.kind} "
                "result (the file is incomplete or was edited)"
            )
        kwargs = {
            f.name: _load(data[f.name], hints[f.name], where, _join(path, f.name))
            for f in fields
            if f.name in data
        }
        try:
            obj = cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{_at(where, path)}: {exc}") from None
        obj.check(where, path)
        return obj

    def check(self, where: str, path: str = "") -> None:
        """Raise :class:`UserError` if a result read from a file is inconsistent (values of
        the right types that do not fit together); ``from_dict`` calls it."""

    def to_json(self, *, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def _repr_html_(self) -> str:
        """A compact summary for notebooks (law, parameters and intervals, status, warnings)."""
        from scalelab.laws.notebook import result_html

        return result_html(self)

    def to_pandas(self) -> Any:
        """The result's table as a pandas DataFrame: a fit's parameters (with interval
        columns when a bootstrap is attached), an allocation's budgets, a bootstrap's
        intervals; other results give one row of their numbers. Needs pandas."""
        from scalelab.laws.notebook import result_frame

        return result_frame(self)


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


def _join(path: str, key: str) -> str:
    """The dotted key ``key`` below ``path`` (list positions are already ``[i]``)."""
    return f"{path}.{key}" if path and not key.startswith("[") else f"{path}{key}"


def _at(where: str, path: str) -> str:
    """``fit.json: key 'diagnostics.converged'`` (or just the file at the top)."""
    return f"{where}: key '{path}'" if path else where


def _short(value: Any) -> str:
    """``repr(value)``, cut short: a tampered file can hold a huge list where a number goes."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _load(value: Any, tp: Any, where: str, path: str = "") -> Any:
    """Rebuild ``value`` (parsed JSON) as the annotated type ``tp`` (``path``: its key)."""
    origin, args = get_origin(tp), get_args(tp)
    at = _at(where, path)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _load(value, arg, where, path)
            except UserError as exc:
                errors.append(exc.message)
        raise UserError(errors[0] if errors else f"{at}: cannot read {_short(value)}")
    if isinstance(tp, type) and issubclass(tp, Result):
        if not isinstance(value, dict):
            raise UserError(f"{at}: expected an object, got {_short(value)}")
        sub = _REGISTRY.get(value.get("form", ""), tp) if isinstance(value.get("form"), str) else tp
        if not issubclass(sub, tp):
            sub = tp
        return sub.from_dict(value, where=where, path=path)
    if origin is tuple:
        if not isinstance(value, list):
            raise UserError(f"{at}: expected a list, got {_short(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(v, args[0], where, f"{path}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise UserError(f"{at}: expected {len(args)} values, got {len(value)}")
        types_ = args or (Any,) * len(value)
        return tuple(
            _load(v, t, where, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, types_))
        )
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{at}: expected an object, got {_short(value)}")
        _, vt = args if args else (Any, Any)
        return {str(k): _load(v, vt, where, _join(path, str(k))) for k, v in value.items()}
    return _load_scalar(value, tp, at)


def _load_scalar(value: Any, tp: Any, at: str) -> Any:
    """A float (``"inf"``/``"nan"`` text and null for nan allowed), int, bool or str."""
    if tp is float:
        if value is None:
            return math.nan
        if isinstance(value, str) and value in ("inf", "-inf", "nan"):
            return float(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{at}: expected a number, got {_short(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{at}: expected an integer, got {_short(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{at}: expected true/false, got {_short(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{at}: expected text, got {_short(value)}")
    return value


# ====================================================================== shared results


def check_level(level: float, what: str = "level") -> None:
    """Raise :class:`UserError` unless ``level`` is an interval level in (0, 1)."""
    if not 0 < level < 1:  # also nan
        raise UserError(f"{what} must be between 0 and 1 (e.g. 0.95), got {level}")


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
    warnings: tuple[str, ...] = ()
    """Reasons to distrust the allocation; filled in when empty (an implausible number of
    tokens per parameter says the table may be in other units)."""

    def __post_init__(self) -> None:
        if not self.warnings:
            note = tokens_per_param_warning(self.compute, self.tokens_per_param)
            object.__setattr__(self, "warnings", () if note is None else (note,))

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


# Compute-optimal allocations put about 20 tokens per parameter (Hoffmann et al. 2022,
# Table 3; the replication of Besiroglu et al. 2024 agrees). The band [1, 1e4] is
# deliberately wide: leaving it points to a table in other units, or a broken fit.
PLAUSIBLE_TOKENS_PER_PARAM = (1.0, 1e4)


def tokens_per_param_warning(
    compute: tuple[float, ...] | list[float], ratio: tuple[float, ...] | list[float]
) -> str | None:
    """The warning for an allocation whose D_opt/N_opt leaves :data:`PLAUSIBLE_TOKENS_PER_PARAM`
    at some budget (None when every finite ratio is plausible)."""
    lo, hi = PLAUSIBLE_TOKENS_PER_PARAM
    bad = [(c, r) for c, r in zip(compute, ratio) if math.isfinite(r) and not lo <= r <= hi]
    if not bad:
        return None
    c, r = bad[0]
    more = f" (and at {len(bad) - 1} more budgets)" if len(bad) > 1 else ""
    return (
        f"{r:.3g} tokens per parameter at C = {c:.3g}{more} is implausible for a "
        "compute-optimal model (Hoffmann et al. 2022 find about 20): the table may be in other "
        "units (N in millions, D in billions?); rescale it with --n-scale/--d-scale "
        "(n_scale=/d_scale= in load_table)"
    )


def units_warning(fit: Any, table: Any) -> str | None:
    """The :func:`tokens_per_param_warning` of a law's compute-optimal allocation at the
    table's own median compute (a table in millions of parameters or billions of tokens
    gives ~0.02 tokens per parameter there); None for laws not in N and D."""
    if not {"N", "D"} <= set(fit.variables) or fit.flops_per_nd is None or table.C is None:
        return None
    logs = sorted(math.log(c) for c in table.C)
    budget = math.exp(logs[len(logs) // 2])
    if budget / fit.flops_per_nd <= 1.0:  # no model with D >= 1 fits the budget
        return None
    try:
        alloc = fit.optimal([budget])
    except UserError:
        return None
    if not alloc.warnings:
        return None
    return alloc.warnings[0].replace(" at C = ", " at the table's median compute C = ", 1)


def optimiser_note(message: str) -> str:
    """scipy's L-BFGS-B message, readable: ``""`` when it says nothing, and its bare
    ``ABNORMAL:`` spelled out (the line search could not lower the objective; at float
    precision that is how a converged fit ends, which the gradient test decides)."""
    text = str(message).strip().rstrip(":").strip()
    if not text.upper().startswith("ABNORMAL"):
        return text
    detail = text.split(":", 1)[1].strip() if ":" in text else ""
    said = "scipy's line search could not lower the objective further"
    return f"{said}: {detail}" if detail else said


def optimiser_status(converged: bool, message: str) -> str:
    """``converged`` or ``NOT CONVERGED``, with what the optimiser said when it said
    something, e.g. ``converged (CONVERGENCE: ...)`` (never an empty parenthesis)."""
    word = "converged" if converged else "NOT CONVERGED"
    note = optimiser_note(message)
    return f"{word} ({note})" if note else word


def not_converged_note(message: str, grad_max: float) -> str:
    """The diagnostics warning of a fit whose gradient test failed."""
    note = optimiser_note(message)
    return f"the optimiser did not converge ({note + '; ' if note else ''}max|grad| {grad_max:.2g})"


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
    cls = _REGISTRY.get(form) if isinstance(form, str) else None
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"{where}: unknown fit form {form!r}; known forms: {known}")
    return cls.from_dict({k: v for k, v in data.items() if k != "schema"}, where=where)


def read_fit_file(path: str | Path) -> Any:
    """The parsed JSON of a fit file; one-line UserErrors for a missing or unreadable one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"fit file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (a fit JSON was expected)") from None
    except RecursionError:  # a hostile file: [[[[...]]]] nested beyond the parser's stack
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # JSONDecodeError, or a number with too many digits
        raise UserError(f"{path}: not valid JSON ({exc})") from None


def load_fit(path: str | Path) -> Result:
    """Read a result written by :func:`save_fit`, as the class its ``"form"`` names."""
    return result_from_dict(read_fit_file(path), where=str(path))
