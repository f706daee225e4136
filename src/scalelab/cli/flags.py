"""Command-line flags generated from typed configs, and the common subcommand helpers.

One ``--flag`` per config field (nested fields as ``--section.field``), help text from the
fields' attribute docstrings, ``--config FILE`` and ``--set KEY=VALUE``; a field that moved
(``Config.renamed``) keeps its old flag as a hidden alias that prints a one-line
deprecation note. Precedence when resolving: defaults (or a saved config) < ``--config``
< ``--set`` < flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from scalelab.config import (
    Config,
    alias_targets,
    config_type,
    defaults_dict,
    field_default,
    flat_fields,
    parse_override,
    plain,
    read_config_file,
    set_dotted,
    type_hints,
)

C = TypeVar("C", bound=Config)


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help layout of every scalelab command (wide enough for dotted flags)."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


# A negative number, or a comma list of numbers starting with one, in any float spelling
# (``-1e9``, ``-2.5E-3``, ``-1_000``, ``-1e20,1e21``). argparse's own pattern has no exponent
# and no lists, so it took ``--n -1e9`` for a flag and said "expected one argument" before
# the value could reach the config's validation.
_NUMBER = r"(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][-+]?\d+)?"
NEGATIVE_NUMBER = re.compile(rf"^-{_NUMBER}(?:,\s*[-+]?{_NUMBER})*$")


class Parser(argparse.ArgumentParser):
    """argparse's parser with scalelab's error format: one line, ``scalelab: error: ...``,
    exit 2 (argparse prints its usage block first; the usage stays in ``--help``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"scalelab: error: {self.prog}: {message}\n")


def count(text: str) -> int:
    """An argparse type: a whole number >= 0 (workers, threads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def accept_negative_numbers(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``parser`` read ``-1e9`` as a value (no scalelab flag looks like a number)."""
    parser._negative_number_matcher = NEGATIVE_NUMBER
    return parser


def subparser(sub: argparse._SubParsersAction, name: str, *, help: str, example: str, **kw):  # noqa: A002
    """Add a subcommand whose --help ends with a usage example."""
    parser = sub.add_parser(
        name,
        help=help,
        description=help,
        epilog=f"example:\n  {example}",
        formatter_class=Formatter,
        **kw,
    )
    return accept_negative_numbers(parser)


def deprecated(old: str, new: str) -> None:
    """One line on stderr: ``old`` still works but is spelled ``new`` now."""
    print(f"scalelab: note: {old} is deprecated; use {new}", file=sys.stderr)


class _Alias(argparse.Action):
    """An old flag: stores its value under the new dotted key(s), with a note."""

    def __init__(self, option_strings, dest, targets=(), new_flag="", is_bool=False, **kw):  # noqa: ANN001
        self.targets, self.new_flag, self.is_bool = targets, new_flag, is_bool
        super().__init__(option_strings, dest, nargs=0 if is_bool else None, **kw)

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        if self.is_bool:
            values = not option_string.startswith("--no-")
        deprecated(option_string, self.new_flag)
        for target in self.targets:
            setattr(namespace, target, values)


def add_config_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type[Config],
    *,
    prefix: str = "",
    skip: tuple[str, ...] = (),
    defaults: Config | None = None,
) -> None:
    """Add one ``--flag`` per field of ``cls`` (see the module docstring).

    Flags default to "not given" so that only what the user typed overrides the config
    file and the defaults.
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
    hints = type_hints(cls)
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
        nested = config_type(tp)
        if nested is not None:
            sub_default = getattr(defaults, f.name) if defaults is not None else None
            title = f"{dotted} options" + ("" if isinstance(tp, type) else " (optional section)")
            sub = parser.add_argument_group(title)
            add_config_arguments(sub, nested, prefix=dotted + ".", defaults=sub_default)
            continue
        default = field_default(f) if defaults is None else getattr(defaults, f.name)
        group.add_argument(
            _flag(dotted), **_field_kwargs(tp, dotted, docs.get(f.name, ""), default)
        )
    _add_aliases(group, cls, prefix, skip)


def add_section_spelling(parser: Any, cls: type[Config], section: str) -> None:
    """Hidden ``--SECTION.FIELD`` spellings of a command's top-level flags, for a config
    that other commands nest as SECTION (``data prepare --data.text-field`` is
    ``--text-field``, as ``pretrain --data.text-field`` is)."""
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or config_type(hints[f.name]) is not None:
            continue
        kwargs = _field_kwargs(hints[f.name], f.name, "", field_default(f))
        kwargs["help"] = argparse.SUPPRESS
        try:
            parser.add_argument(_flag(f"{section}.{f.name}"), **kwargs)
        except argparse.ArgumentError:  # already defined (an alias of the same name)
            continue


def _flag(dotted: str) -> str:
    return "--" + dotted.replace("_", "-")


def _field_kwargs(tp: Any, dotted: str, doc: str, default: Any) -> dict[str, Any]:
    help_text = doc
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
    return kwargs


def _add_aliases(group: Any, cls: type[Config], prefix: str, skip: tuple[str, ...]) -> None:
    """Hidden flags for the old names of moved fields (``Config.renamed``); a moved section
    keeps every old flag below it (``--task.train-file`` -> ``--finetune.task.train-file``)."""
    flags: dict[str, tuple[list[str], Any]] = {}
    for old in cls.renamed:
        if old in skip:
            continue
        for target in alias_targets(cls, old):
            for old_key, new_key, tp in _moved_leaves(cls, prefix + old, prefix, target):
                flags.setdefault(old_key, ([], tp))[0].append(new_key)
    for old_key, (targets, tp) in flags.items():
        is_bool = tp is bool
        names = [_flag(old_key)]
        if is_bool:  # argparse's BooleanOptionalAction spelling: --no-section.field
            names.append("--no-" + _flag(old_key)[2:])
        try:
            group.add_argument(
                *names,
                action=_Alias,
                dest=f"_alias.{old_key}",
                targets=tuple(targets),
                new_flag=" and ".join(_flag(x) for x in targets),
                is_bool=is_bool,
                default=argparse.SUPPRESS,
                help=argparse.SUPPRESS,
            )
        except argparse.ArgumentError:  # the command defines this flag itself (a shortcut)
            continue


def _moved_leaves(
    cls: type[Config], old_key: str, prefix: str, target: str
) -> list[tuple[str, str, Any]]:
    """``(old dotted key, new dotted key, type)`` of every leaf an alias stands for."""
    klass: Any = cls
    parts = target.split(".")
    for part in parts[:-1]:
        klass = config_type(type_hints(klass)[part])
    tp = type_hints(klass)[parts[-1]]
    section = config_type(tp)
    if section is None:
        return [(old_key, prefix + target, tp)]
    return _section_leaves(section, old_key + ".", prefix + target + ".")


def _section_leaves(cls: type[Config], old: str, new: str) -> list[tuple[str, str, Any]]:
    """Every field of a moved section (and the section's own old names), old -> new."""
    out: list[tuple[str, str, Any]] = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        nested = config_type(hints[f.name])
        if nested is not None:
            out.extend(_section_leaves(nested, f"{old}{f.name}.", f"{new}{f.name}."))
        else:
            out.append((old + f.name, new + f.name, hints[f.name]))
    for name in cls.renamed:
        for target in alias_targets(cls, name):
            out.extend(_moved_leaves(cls, old + name, new, target))
    return out


def _show_default(value: Any) -> str:
    value = plain(value)
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
    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, value = parse_override(item)
        overrides[key] = value
    given = vars(args)
    for dotted in flat_fields(cls):
        if dotted in given:
            overrides[dotted] = given[dotted]
    cfg_file = getattr(args, "config", None)
    cfg = _from_file(cls, cfg_file, overrides) if cfg_file else base
    data = cfg.to_dict() if cfg is not None else defaults_dict(cls)
    for key, value in overrides.items():
        set_dotted(data, key, value, cls)
    # Required fields left unset must come from flags or --set; from_dict names them.
    return cls.from_dict({k: v for k, v in data.items() if v is not dataclasses.MISSING})


def _from_file(cls: type[C], path: str, overrides: dict[str, Any]) -> C:
    """The config in ``path``, its required fields that the file lacks taken from the
    command line (a positional such as ``fit TABLE.csv`` is not repeated in the file)."""
    data = read_config_file(path)
    for f in dataclasses.fields(cls):
        missing = f.init and f.name not in data and field_default(f) is dataclasses.MISSING
        if missing and f.name in overrides:
            data[f.name] = overrides[f.name]
    return cls.from_dict(data, where=f"{path}: ")
