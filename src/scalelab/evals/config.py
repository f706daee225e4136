"""The config of ``scalelab eval`` (and, with the rungs to score, of ``scalelab study eval``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from scalelab.config import Config
from scalelab.errors import UserError

#: Examples drawn for a built-in task when no --limit is given.
DEFAULT_BUILTIN_EXAMPLES = 200


@dataclass(kw_only=True)
class EvalConfig(Config):
    """Zero-shot scoring of a decoder on multiple-choice / cloze tasks."""

    tasks: tuple[str, ...] = ("builtin:continuation", "builtin:wiki-topic")
    """Tasks, comma-separated: builtin:continuation, builtin:wiki-topic, or JSONL files with context, choices, gold (optional id) per line."""
    limit: int | None = None
    """At most this many examples per task (none: 200 for a built-in task, every line of a file)."""
    batch_size: int = 32
    """Sequences (one context + one choice each) per forward pass."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Forward-pass precision (the log-softmax over the vocabulary is always fp32)."""
    device: str = "auto"
    """auto, cpu, cuda or mps."""
    seed: int = 0
    """Seed of the built-in tasks' sampling (which documents, which distractors, their order)."""
    dataset: Path | None = None
    """Prepared pretraining dataset whose held-out text builds the built-in tasks (default: the run's own)."""
    progress: bool = True
    """Show a progress bar while scoring."""

    def validate(self) -> None:
        if not self.tasks:
            raise UserError("tasks: give at least one task (e.g. --tasks builtin:continuation)")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")
        from scalelab.evals.tasks import check_task_spec

        for spec in self.tasks:
            check_task_spec(spec)
