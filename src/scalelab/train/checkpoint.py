"""Atomic, resumable checkpoints.

Layout of one checkpoint (``checkpoints/step-00001200/``)::

    config.json, model.safetensors   # the model, written by the stage's export function
                                     # (Hugging Face save_pretrained layout when it has one)
    optimizer.pt                     # optimizer state_dict (tensors only; loads weights_only)
    rng.pt                           # torch CPU (+ CUDA) RNG state of every rank
    trainer_state.json               # step, tokens, best metric, early stopping, wall time

The directory is built under a hidden temporary name, every file fsynced, then renamed
into place, so a crash at any moment leaves complete checkpoints only. The schedule is a
pure function of the step (see ``schedule.py``), so the step is its whole state; data
sampling is stateless in (seed, step), so the step is the data position too.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.utils.io import atomic_dir, atomic_write_json, read_json

_STEP_DIR = re.compile(r"^step-(\d{8})$")

ExportFn = Callable[[nn.Module, Path], None]
RestoreFn = Callable[[nn.Module, Path], None]


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary/partial ones are hidden)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    rng_states: list[dict[str, Any]],
    export: ExportFn,
    keep: int,
    protect: tuple[Path, ...] = (),
) -> Path:
    """Write ``checkpoints/step-XXXXXXXX`` atomically and prune to the last ``keep``."""
    path = Path(run_dir) / "checkpoints" / f"step-{step:08d}"
    with atomic_dir(path) as tmp:
        export(model, tmp)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save({"ranks": rng_states}, tmp / "rng.pt")
        atomic_write_json(tmp / "trainer_state.json", trainer_state)
    if keep > 0:
        for old in checkpoint_dirs(run_dir)[:-keep]:
            if old not in protect:
                shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(
    path: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    restore: RestoreFn,
    rank: int = 0,
) -> dict[str, Any]:
    """Restore model, optimizer and this rank's RNG; return the trainer state."""
    restore(model, path)
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)["ranks"]
    set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    return read_json(path / "trainer_state.json")


def export_state_dict(model: nn.Module, directory: Path) -> None:
    """Generic export: the module's full state dict as ``model.safetensors``."""
    from safetensors.torch import save_model

    save_model(model, str(Path(directory) / "model.safetensors"))


def restore_state_dict(model: nn.Module, directory: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(Path(directory) / "model.safetensors"))
