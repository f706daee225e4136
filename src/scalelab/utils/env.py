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


def tune_allocator() -> None:
    """Keep glibc from returning big training buffers to the OS after every step.

    Large CPU tensors are otherwise freshly ``mmap``ed each step (82k page faults per step
    measured for an eager 4x128 model, ~1.6 us each); raising the mmap and trim thresholds
    removed them (about -6% CPU time). Process-wide, glibc only; a no-op elsewhere.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers (malloc.h)
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):
        pass
