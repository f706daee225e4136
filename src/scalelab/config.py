"""Typed, keyword-only configs: to/from YAML and JSON, dotted overrides, CLI flags.

Every stage takes one config dataclass derived from :class:`Config`. Fields carry their
help text as *attribute docstrings* (a string literal right below the field), which this
module reads from the source so that ``--help`` and the saved ``config.yaml`` explain
themselves::

    @dataclass(kw_only=True)
    class TrainConfig(Config):
        lr: float = 3e-4
        \"\"\"Peak learning rate of AdamW.\"\"\"

        def validate(self) -> None:
            if self.lr <= 0:
                raise UserError(f"lr must be positive, got {self.lr}")

Values given as text (CLI flags, ``--set key=value`` overrides) are coerced to the
annotated type; a wrong key or value is a :class:`~scalelab.errors.UserError` that names
the key. Nested configs are addressed with dots (``train.lr``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import functools
import hashlib
import inspect
import json
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal, Self, TypeVar, Union, get_args, get_origin

import yaml

from scalelab.errors import UserError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(kw_only=True)
class Config:
    """Base class of every stage config (a keyword-only dataclass)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`UserError` for an impossible combination of values."""

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON/YAML-safe nested dict (tuples become lists, paths strings)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "") -> Self:
        """Build from a nested dict, coercing values; unknown keys are errors."""
        if not isinstance(data, dict):
            raise UserError(
                f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}"
            )
        hints = _hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.init]
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise UserError(_unknown_key(f"{where}{key}", key, names))
            kwargs[key] = _coerce(value, hints[key], f"{where}{key}")
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise UserError(f"{where or cls.__name__}: {exc}") from None

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as commented YAML (field docs as comments); written to ``path`` if given."""
        text = _to_commented_yaml(self)
        if path is not None:
            from scalelab.utils.io import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def load(cls, path: str | Path) -> Self:
        """Read a YAML or JSON file."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML/JSON: {str(exc).splitlines()[0]}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Self:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> Self:
        """A copy with dotted-key overrides applied: ``["train.lr=1e-3", "seed=3"]``."""
        if isinstance(overrides, list):
            overrides = dict(parse_override(o) for o in overrides)
        data = self.to_dict()
        for key, value in overrides.items():
            _set_dotted(data, key, value, type(self))
        return type(self).from_dict(data)

    def hash(self, *, exclude: tuple[str, ...] = ()) -> str:
        """Short content hash of the config (fields in ``exclude`` left out)."""
        data = {k: v for k, v in self.to_dict().items() if k not in exclude}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """Attribute docstrings of the fields, by name (inherited ones included)."""
        return _field_docs(cls)


# ====================================================================== helpers


def _plain(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:] + [None]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(nxt.value.value).split())
    return docs


def _unknown_key(where: str, key: str, names: list[str]) -> str:
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
    return f"unknown config key '{where}'{hint}"


def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, Config)


def _config_type(tp: Any) -> type[Config] | None:
    """The Config class of ``tp`` or of ``Optional[tp]``; None otherwise."""
    if _is_config(tp):
        return tp
    if get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        if len(inner) == 1 and _is_config(inner[0]):
            return inner[0]
    return None


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Coerce ``value`` (possibly text from a flag or YAML) to the annotated type ``tp``."""
    origin, args = get_origin(tp), get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UserError as exc:
                errors.append(exc.message)
        raise UserError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise UserError(f"{where}: {value!r} is not one of {', '.join(map(str, args))}")
    if _is_config(tp):
        if isinstance(value, tp):
            return value
        return tp.from_dict(value, where=f"{where}.")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            value = [value]
        item_tp = args[0] if args else Any
        if origin is tuple and args and (len(args) != 2 or args[1] is not Ellipsis):
            if len(args) != len(value):
                raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _coerce(v, t, f"{where}[{i}]") for i, (v, t) in enumerate(zip(value, args))
            )
        out = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if isinstance(value, str):
            value = yaml.safe_load(value)
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {value!r}")
        key_tp, val_tp = args if args else (Any, Any)
        return {
            _coerce(k, key_tp, where): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()
        }
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "true",
            "yes",
            "1",
            "on",
            "false",
            "no",
            "0",
            "off",
        ):
            return value.lower() in ("true", "yes", "1", "on")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UserError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.replace("_", ""))
            except ValueError:
                pass
            else:
                if number.is_integer():
                    return int(number)
        raise UserError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.replace("_", ""))
            except ValueError:
                pass
        raise UserError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise UserError(f"{where}: expected text, got {value!r}")
    if tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise UserError(f"{where}: expected a path, got {value!r}")
    return value


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-3"`` -> ``("train.lr", 1e-3)`` (the value parsed as YAML)."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any, cls: type) -> None:
    parts = key.split(".")
    node, klass = data, cls
    for i, part in enumerate(parts):
        names = [f.name for f in dataclasses.fields(klass)] if _is_config(klass) else list(node)
        if part not in names:
            raise UserError(_unknown_key(key, part, names))
        if i == len(parts) - 1:
            node[part] = value
            return
        klass = _config_type(_hints(klass).get(part)) if _is_config(klass) else None
        if node.get(part) is None and klass is not None:
            node[part] = _defaults_dict(klass)  # an optional section, created on first use
        if not isinstance(node.get(part), dict):
            raise UserError(f"'{'.'.join(parts[: i + 1])}' is not a nested section")
        node = node[part]


def _to_commented_yaml(cfg: Config, indent: int = 0) -> str:
    docs = cfg.field_docs()
    pad = " " * indent
    lines: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        doc = docs.get(f.name)
        if doc:
            for line in textwrap.wrap(doc, 88 - indent):
                lines.append(f"{pad}# {line}")
        if isinstance(value, Config):
            lines.append(f"{pad}{f.name}:")
            lines.append(_to_commented_yaml(value, indent + 2).rstrip("\n"))
        else:
            dumped = yaml.safe_dump({f.name: _plain(value)}, sort_keys=False, width=1000)
            lines.extend(pad + line for line in dumped.rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n"


# ====================================================================== CLI bridge


def add_config_arguments(
    parser: argparse.ArgumentParser,
    cls: type[Config],
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    defaults: Config | None = None,
) -> None:
    """Add one ``--flag`` per config field (nested fields as ``--section.field``).

    Flags default to "not given" so that only what the user typed overrides the config
    file and the defaults. ``--config FILE`` and ``--set KEY=VALUE`` are added too.
    """
    if not prefix:
        parser.add_argument(
            "--config",
            metavar="FILE",
            help="YAML or JSON file with config values (flags override it).",
        )
        parser.add_argument(
            "--set",
            metavar="KEY=VALUE",
            action="append",
            default=[],
            help="override any config key, dotted for nested ones (repeatable): --set optim.lr=1e-3",
        )
    docs = cls.field_docs()
    hints = _hints(cls)
    group = (
        parser.add_argument_group(f"{prefix.rstrip('.') or cls.__name__} options")
        if not prefix
        else parser
    )
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp = hints[f.name]
        dotted = f"{prefix}{f.name}"
        nested = _config_type(tp)
        if nested is not None:
            sub_default = getattr(defaults, f.name) if defaults is not None else None
            title = f"{dotted} options" + ("" if _is_config(tp) else " (optional section)")
            sub = parser.add_argument_group(title)
            add_config_arguments(sub, nested, prefix=dotted + ".", defaults=sub_default)
            continue
        flag = "--" + dotted.replace("_", "-")
        default = _field_default(f) if defaults is None else getattr(defaults, f.name)
        help_text = docs.get(f.name, "")
        if default is not dataclasses.MISSING:
            help_text = f"{help_text} (default: {_show_default(default)})".strip()
        help_text = help_text.replace("%", "%%")  # argparse formats help strings with %
        kwargs: dict[str, Any] = {"dest": dotted, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["metavar"] = _metavar(tp)
            if get_origin(tp) is Literal:
                kwargs["choices"] = [str(a) for a in get_args(tp)]
                kwargs["metavar"] = "{" + "|".join(kwargs["choices"]) + "}"
        group.add_argument(flag, **kwargs)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _show_default(value: Any) -> str:
    value = _plain(value)
    if isinstance(value, list):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def _metavar(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (tuple, list):
        return "A,B,..."
    if origin in (Union, types.UnionType):
        return "/".join(_metavar(a) for a in get_args(tp) if a is not type(None))
    if tp is int:
        return "INT"
    if tp is float:
        return "FLOAT"
    if tp is Path:
        return "PATH"
    return "TEXT"


def config_from_args(cls: type[C], args: argparse.Namespace, *, base: C | None = None) -> C:
    """Resolve a config: defaults (or ``base``) < ``--config FILE`` < ``--set`` < flags."""
    cfg_file = getattr(args, "config", None)
    if cfg_file:
        cfg = cls.load(cfg_file)
    else:
        cfg = base
    data = cfg.to_dict() if cfg is not None else {}
    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, value = parse_override(item)
        overrides[key] = value
    flat = _flat_fields(cls)
    for dotted in flat:
        if dotted in vars(args):
            overrides[dotted] = vars(args)[dotted]
    if cfg is None:
        # Start from the defaults; required fields must then come from flags or --set.
        data = _defaults_dict(cls)
    for key, value in overrides.items():
        _set_dotted(data, key, value, cls)
    return cls.from_dict({k: v for k, v in data.items() if v is not dataclasses.MISSING})


def _flat_fields(cls: type[Config], prefix: str = "") -> list[str]:
    out: list[str] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        nested = _config_type(hints[f.name])
        if nested is not None:
            out.extend(_flat_fields(nested, f"{prefix}{f.name}."))
        else:
            out.append(f"{prefix}{f.name}")
    return out


def _defaults_dict(cls: type[Config]) -> dict[str, Any]:
    hints = _hints(cls)
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = _field_default(f)
        if isinstance(default, Config):
            data[f.name] = default.to_dict()
        elif default is dataclasses.MISSING and _is_config(hints[f.name]):
            data[f.name] = _defaults_dict(hints[f.name])
        else:
            data[f.name] = _plain(default) if default is not dataclasses.MISSING else default
    return data
