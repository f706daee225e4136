"""What a stage hands the one training loop: :class:`TrainJob` (model, stateless batches,
:class:`Evaluation`, :class:`ModelIO`), and what the loop keeps: :class:`TrainState`
(a checkpoint's ``trainer_state.json``) and each step's :class:`StepResult`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from scalelab.train.checkpoint import ExportFn, RestoreFn, export_state_dict, restore_state_dict
from scalelab.train.config import OptimConfig, RuntimeConfig

Batch = dict[str, torch.Tensor]


class BatchSource(Protocol):
    """Stateless batches: the same arguments always give the same batch (exact resume)."""

    def get(self, step: int, micro: int = 0, rank: int = 0, world: int = 1) -> Batch:
        """The micro-batch ``micro`` of optimizer step ``step`` for ``rank``."""
        ...


@dataclass(kw_only=True)
class Evaluation:
    """When the trainer evaluates, and what it does with the result."""

    fn: Callable[[nn.Module], dict[str, float]] | None = None
    """Metrics of the model (rank 0, eval mode, no grad); None: never evaluate."""
    every: int = 0
    """Evaluate every this many steps (0: only at the end)."""
    at_start: bool = False
    """Also evaluate before the first step of a fresh run."""
    metric: str = "val_loss"
    """The key of ``fn``'s result that ranks evaluations (best model, early stopping)."""
    mode: Literal["min", "max"] = "min"
    """Whether a lower or a higher ``metric`` is better."""
    patience: int | None = None
    """Stop after this many evaluations without improvement (None: never stop early)."""
    restore_best: bool = False
    """Keep the best evaluated weights in ``best/`` and load them at the end (fine-tuning)."""


@dataclass(kw_only=True)
class ModelIO:
    """How the trainer writes, reads and compiles the stage's model."""

    export: ExportFn = export_state_dict
    """Writes the model into a checkpoint (or ``best/``) directory."""
    restore: RestoreFn = restore_state_dict
    """Reads what ``export`` wrote back into the model."""
    compile_fn: Callable[[nn.Module], nn.Module] | None = None
    """Used instead of ``torch.compile`` when ``runtime.compile`` is set."""


@dataclass(kw_only=True)
class TrainJob:
    """Everything the trainer needs from a stage (not user-facing; stages build it)."""

    run_dir: Path
    model: nn.Module
    batches: BatchSource
    total_steps: int
    grad_accum: int = 1
    """Micro-batches per optimizer step and rank."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    tokens_per_step: int | None = None
    """Tokens per optimizer step, all ranks together, when fixed (pretraining); None: count
    each batch's non-padding tokens (``attention_mask``, else every ``input_ids`` entry)."""
    examples_per_step: int | None = None
    """Examples per optimizer step (fine-tuning); reported as ``examples`` in the summary."""
    unique_tokens: int | None = None
    """Distinct training tokens the batches come from (pretraining): the summary then has
    ``unique_tokens``, ``tokens_seen`` (= ``tokens``) and ``epochs`` = their ratio."""
    evaluation: Evaluation = field(default_factory=Evaluation)
    io: ModelIO = field(default_factory=ModelIO)
    checkpoint_every: int = 0
    """Checkpoint every this many steps (0: time-based only, plus at the end)."""
    keep_steps: tuple[int, ...] = ()
    """Also checkpoint at these steps and never prune those checkpoints (the branch points
    of a WSD trunk)."""
    init_from: Path | None = None
    """A checkpoint of another run to start from when this run has none of its own: a WSD
    branch starts from its trunk's stable-phase checkpoint (weights, optimizer, step, RNG)."""
    on_step_end: Callable[[int], None] | None = None
    """Called with the step index after each optimizer step (gradients already cleared)."""
    flops_per_token: dict[str, float] = field(default_factory=dict)
    """FLOPs per training token under each named convention (for the summary)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Static facts merged into summary.json (parameter counts, config hash, ...)."""
    description: str = "train"
    """Label of the progress bar."""


@dataclass
class TrainState:
    """Where a run stands; a checkpoint's ``trainer_state.json`` is exactly this."""

    step: int = 0
    """Optimizer steps done (also the data position and the schedule's state)."""
    best: float | None = None
    """Best value of the evaluation metric so far."""
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_s: float = 0.0
    """Training and evaluation time over all sessions (not checkpoint writing)."""
    last_eval: dict[str, float] | None = None
    finished: bool = False
    """Stopped early: running the job again does no more steps."""
    tokens: int = 0
    """Training tokens seen, all ranks together (absent from older checkpoints)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written into checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        """Read a checkpoint's state; missing fields keep their defaults, unknown ones drop."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class StepResult:
    """What one optimizer step reports (losses averaged over micro-batches and ranks)."""

    losses: dict[str, float]
    grad_norm: float
    lr: float
    tokens: int
    """Tokens of this step, all ranks together."""
