"""The one lazy-export mechanism of scalelab's package ``__init__`` modules.

``scalelab.laws``, ``scalelab.data`` and ``scalelab.models`` export names from their
submodules without importing them up front (numpy, scipy, tokenizers and torch load on
first use), so ``import scalelab.laws`` and ``scalelab --help`` stay fast::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"fit_chinchilla": "scalelab.laws.chinchilla"})
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for ``package``: each name in ``exports`` is
    imported from its module on first access and cached in the package namespace."""
    names = sorted(exports)

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
