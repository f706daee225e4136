"""The one lazy-export mechanism of scalelab's package ``__init__`` modules.

``scalelab.laws``, ``scalelab.data`` and ``scalelab.models`` export names from their
submodules without importing them up front (numpy, scipy, tokenizers and torch load on
first use), so ``import scalelab.laws`` and ``scalelab --help`` stay fast::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"fit_chinchilla": "scalelab.laws.chinchilla"})
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


class _LazyPackage(types.ModuleType):
    """A package whose exported names are never shadowed by its submodules.

    Importing a submodule binds it as an attribute of its package, after the submodule
    ran: ``import scalelab.laws.bootstrap`` would make ``from scalelab.laws import
    bootstrap`` the module instead of the function. Here that binding stores the export.
    """

    _lazy_exports: dict[str, str]

    def __setattr__(self, name: str, value: Any) -> None:
        exports = self.__dict__.get("_lazy_exports", {})
        shadows = isinstance(value, types.ModuleType) and exports.get(name) == value.__name__
        if shadows and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: each name in ``exports`` is
    imported from its module on first access and cached in the package namespace (a
    submodule of the same name never replaces it: :class:`_LazyPackage`)."""
    names = sorted(exports)
    mod = sys.modules[package]
    mod.__dict__["_lazy_exports"] = exports
    mod.__class__ = _LazyPackage

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return names

    return __getattr__, __dir__, names
