"""Atomic, resumable checkpoints.

Layout of one checkpoint (``checkpoints/step-00001200/``)::

    config.json, model.safetensors   # the model, written by the stage's export function
                                     # (Hugging Face save_pretrained layout when it has one)
    optimizer.pt                     # optimizer state_dict (tensors only; loads weights_only)
    rng.pt                           # torch CPU (+ CUDA) RNG state of every rank
    trainer_state.json               # step, tokens, best metric, early stopping, wall time
    manifest.json                    # size and sha256 of every other file (written last)

The directory is built under a hidden temporary name, every file fsynced, then renamed
into place, so a crash at any moment leaves complete checkpoints only (and a hidden
``.step-XXXXXXXX.*.tmp`` directory, removed by :func:`remove_leftovers` on the next start).
The manifest catches what the rename cannot: a file damaged later (a full disk, a copy cut
short, an edit). On resume, :func:`resume_latest` takes the newest checkpoint that matches
its manifest (or, written before manifests existed, that loads) and reports the others.
The schedule is a pure function of the step (see ``schedule.py``), so the step is its
whole state; data sampling is stateless in (seed, step), so the step is the data position too.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.errors import UserError
from scalelab.utils.io import atomic_dir, atomic_write_json, read_json, sha256_file

_STEP_DIR = re.compile(r"^step-(\d{8})$")
MANIFEST = "manifest.json"
STATE = "trainer_state.json"
# utils.io's temporaries: tempfile puts 8 characters of [a-z0-9_] between the target's
# name and ".tmp"; atomic_dir moves the version it replaces aside as ".NAME.old".
_TEMP = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")
_ASIDE = re.compile(r"^\.(?P<name>.+)\.old$")

ExportFn = Callable[[nn.Module, Path], None]
RestoreFn = Callable[[nn.Module, Path], None]
LoadFn = Callable[[Path], dict[str, Any]]


def _step_of(path: Path) -> int:
    return int(path.name[len("step-") :])


def step_dirs(run_dir: Path) -> list[Path]:
    """Every ``checkpoints/step-XXXXXXXX`` directory of a run, oldest first, intact or not."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)), key=_step_of)


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary/partial ones are hidden)."""
    return [p for p in step_dirs(run_dir) if (p / STATE).is_file()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def write_manifest(directory: Path) -> None:
    """``manifest.json``: size and sha256 of every file below ``directory`` (write it last)."""
    directory = Path(directory)
    files = {
        f.relative_to(directory).as_posix(): {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
        for f in sorted(directory.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    atomic_write_json(directory / MANIFEST, {"format": 1, "files": files})


def manifest_problems(path: Path) -> dict[str, str]:
    """What in checkpoint ``path`` differs from its manifest, by file (empty: nothing, or
    no manifest: written by a version before manifests, to be judged by loading it)."""
    manifest = Path(path) / MANIFEST
    if not manifest.exists():
        return {}
    try:
        entries = [
            (str(rel), int(meta["bytes"]), str(meta["sha256"]))
            for rel, meta in read_json(manifest)["files"].items()
        ]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {MANIFEST: "unreadable"}
    problems: dict[str, str] = {}
    for rel, size, digest in entries:
        f = Path(path) / rel
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            problems[MANIFEST] = f"names a file outside the checkpoint ({rel!r})"
        elif not f.is_file():
            problems[rel] = "missing"
        elif (actual := f.stat().st_size) != size:
            problems[rel] = f"{actual} bytes, {size} written"
        elif sha256_file(f) != digest:
            problems[rel] = "content differs from what was written"
    return problems


@dataclass
class Resumed:
    """The checkpoint a run resumes from, and the newer ones it had to skip."""

    path: Path
    state: dict[str, Any]
    """Its ``trainer_state.json``."""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """``{"step": ..., "reason": ...}`` of each newer checkpoint found broken, newest first."""

    @property
    def step(self) -> int:
        return _step_of(self.path)


def _load_checked(path: Path, load: LoadFn) -> dict[str, Any]:
    state = load(path)
    if not isinstance(state, dict) or state.get("step") != _step_of(path):
        raise ValueError(f"{STATE} does not hold step {_step_of(path)}")
    return state


def _why_broken(path: Path, load: LoadFn, warn: bool) -> tuple[str | None, dict[str, Any]]:
    """``(None, state)`` when checkpoint ``path`` is intact and loaded, else ``(reason, {})``.

    Tensor files must match their manifest (a damaged tensor can load without complaint);
    the JSON state is judged by its content instead, so that a hand-edited one (or one
    rewritten the way older versions wrote it) still resumes, while one that does not
    parse, or names another step, is broken.
    """
    problems = manifest_problems(path)
    edited = problems.pop(STATE, None)
    if problems:
        return "; ".join(f"{k}: {v}" for k, v in sorted(problems.items())), {}
    try:
        state = _load_checked(path, load)
    except Exception as exc:  # noqa: BLE001 - whatever stops it from loading makes it broken
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        failed = f"does not load: {type(exc).__name__}: {first}".rstrip(": ")
        return (f"{STATE}: {edited}; {failed}" if edited else failed), {}
    if edited and warn:
        print(f"scalelab: warning: {path / STATE} changed since it was written", file=sys.stderr)
    return None, state


def resume_latest(run_dir: Path, load: LoadFn, *, warn: bool = True) -> Resumed | None:
    """Load the newest intact checkpoint of ``run_dir`` with ``load``; None when it has none.

    A broken checkpoint is skipped, and the next older one tried; once an intact one is
    found each skipped one gets a warning on stderr (``warn``). When every one is broken
    this refuses with a one-line UserError naming them, rather than start over, which
    would silently throw away the work they hold.
    """
    skipped: list[dict[str, Any]] = []
    for path in reversed(step_dirs(run_dir)):
        reason, state = _why_broken(path, load, warn)
        if reason is None:
            for s in skipped if warn else ():
                bad = path.parent / f"step-{s['step']:08d}"
                print(f"scalelab: warning: skipping broken checkpoint {bad}: {s['reason']}",
                      file=sys.stderr)  # fmt: skip
            return Resumed(path=path, state=state, skipped=skipped)
        skipped.append({"step": _step_of(path), "reason": reason})
    if not skipped:
        return None
    listed = "; ".join(f"step-{s['step']:08d}: {s['reason']}" for s in skipped)
    raise UserError(
        f"no intact checkpoint to resume {run_dir} from ({listed}); "
        f"remove {Path(run_dir) / 'checkpoints'} to restart the run from step 0"
    )


def load_intact(path: Path, load: LoadFn) -> dict[str, Any]:
    """Load checkpoint ``path`` of another run (a WSD branch's start) with ``load`` and
    return its state; a missing or broken one is a one-line UserError."""
    if not (path / STATE).is_file():
        raise UserError(
            f"checkpoint {path} to start from does not exist: train the run it belongs to "
            "(a WSD trunk) first"
        )
    reason, state = _why_broken(path, load, warn=True)
    if reason is not None:
        raise UserError(f"checkpoint {path} to start from is broken ({reason}); retrain its run")
    return state


def fallback_facts(previous: dict[str, Any], resumed: Resumed | None) -> dict[str, Any]:
    """Summary facts on skipped checkpoints: ``resumed_from`` (the step of the latest resume
    that skipped some) and ``skipped_checkpoints`` over all sessions, carried over from the
    ``previous`` summary so that a later plain resume does not erase the record."""
    if resumed is None:  # a fresh start: nothing was skipped in this run
        return {}
    earlier = previous.get("skipped_checkpoints")
    earlier = [s for s in earlier if isinstance(s, dict)] if isinstance(earlier, list) else []
    if resumed.skipped:
        new = [s for s in resumed.skipped if s not in earlier]
        return {"resumed_from": resumed.step, "skipped_checkpoints": earlier + new}
    if earlier:
        return {"resumed_from": previous.get("resumed_from"), "skipped_checkpoints": earlier}
    return {}


def remove_leftovers(run_dir: Path) -> list[str]:
    """Delete what writes killed midway left in ``run_dir`` and ``run_dir/checkpoints``:
    utils.io temporaries (``.NAME.XXXXXXXX.tmp``; under ``checkpoints/`` a whole checkpoint
    each) and directories moved aside (``.NAME.old``) once ``NAME`` is back in place.

    Only while holding the run lock: a live writer's temporaries look just the same.
    Returns the names removed.
    """
    removed = []
    for parent in (Path(run_dir), Path(run_dir) / "checkpoints"):
        if not parent.is_dir():
            continue
        for p in sorted(parent.iterdir()):
            aside = _ASIDE.match(p.name)
            if aside and not (p.is_dir() and (parent / aside["name"]).is_dir()):
                continue  # the only copy left of NAME (killed between the two renames)
            if not (aside or _TEMP.match(p.name)):
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


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
        atomic_write_json(tmp / STATE, trainer_state)
        write_manifest(tmp)
    if keep > 0:
        # Newer step directories than this one can only be broken ones skipped on resume
        # (about to be overwritten as the run gets there again): they keep no slot.
        done = [p for p in checkpoint_dirs(run_dir) if _step_of(p) <= step]
        for old in done[:-keep]:
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
        load_optimizer_state(model, optimizer, torch.load(path / "optimizer.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)["ranks"]
    set_rng_state(rng[rank] if rank < len(rng) else rng[0])
    return read_json(path / STATE)


def load_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Load an ``optimizer.pt``: torch's own layout (parameters by position), or the one
    FSDP runs write (``torch.distributed.checkpoint`` full state dict, parameters by name),
    so that either kind resumes under DDP, FSDP or in one process."""
    groups = state.get("param_groups") or [{}]
    if any(isinstance(p, str) for g in groups for p in g.get("params", ())):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, state, options=options)
    else:
        optimizer.load_state_dict(state)


def export_state_dict(model: nn.Module, directory: Path) -> None:
    """Generic export: the module's full state dict as ``model.safetensors``."""
    from safetensors.torch import save_model

    save_model(model, str(Path(directory) / "model.safetensors"))


def restore_state_dict(model: nn.Module, directory: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(Path(directory) / "model.safetensors"))
