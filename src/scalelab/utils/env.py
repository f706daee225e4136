"""Facts about the environment a run records (package versions, threads)."""

from __future__ import annotations

import importlib.metadata
import os
import platform

_TRACKED = ("torch", "transformers", "peft", "tokenizers", "numpy", "scipy", "scalelab")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Versions of Python and the libraries that decide a run's numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _TRACKED + extra:
        out[name] = package_version(name)
    return out


def quiet_threads_env() -> None:
    """Set OpenMP to sleep rather than spin when idle; must run before torch is imported.

    On a loaded 2-core machine torch's spinning OpenMP threads were measured 25x slower.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # No hub access at run time, ever: everything is local.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
