"""The user-facing settings of the training loop, shared by pretraining and fine-tuning.

Both configs are nested in every stage's config and saved in its ``config.yaml``; their
field names, defaults and values are part of those files and of the config hashes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.train.schedule import DecayShape, Schedule

Precision = Literal["bf16", "fp32", "fp16"]


@dataclass(kw_only=True)
class OptimConfig(Config):
    """Optimizer, schedule and numerics shared by pretraining and fine-tuning."""

    lr: float | None = 1e-3
    """Peak learning rate of AdamW (none: the stage's default; fine-tuning picks one by method)."""
    weight_decay: float = 0.1
    """Decoupled weight decay applied to matrices (not norms or biases)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value (0 disables)."""
    schedule: Schedule = "cosine"
    """Learning-rate shape after warmup: cosine, wsd (warmup-stable-decay), linear or constant."""
    warmup_fraction: float = 0.05
    """Fraction of the optimizer steps spent in linear warmup."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup (0: warmup_fraction of the run). The runs of one WSD trunk share it, so that each branch's schedule is the trunk's up to its cool-down."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine, wsd, linear)."""
    decay_fraction: float = 0.2
    """wsd only: fraction of the run spent in the final decay (the cool-down)."""
    decay_shape: DecayShape = "linear"
    """wsd only: shape of the cool-down: linear, or 1-sqrt (Hägele et al. 2024, arXiv:2405.18392)."""

    def validate(self) -> None:
        """Reject values AdamW or the schedule cannot use (``not x > 0`` also catches nan)."""
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        for name, beta in (("beta1", self.beta1), ("beta2", self.beta2)):
            if not 0 <= beta < 1:
                raise UserError(f"{name} must be in [0, 1), got {beta}")
        if not self.eps > 0:
            raise UserError(f"eps must be positive, got {self.eps}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0:
            raise UserError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.decay_shape not in ("linear", "1-sqrt"):
            raise UserError(f"decay_shape must be linear or 1-sqrt, got {self.decay_shape!r}")
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"decay_fraction must be in (0, 1], got {self.decay_fraction}")
        if self.grad_clip < 0 or self.weight_decay < 0:
            raise UserError("grad_clip and weight_decay must be >= 0")


@dataclass(kw_only=True)
class RuntimeConfig(Config):
    """Where and how a run executes: device, precision, compile, logging, checkpoints."""

    device: str = "auto"
    """cpu, cuda or auto (cuda when available)."""
    precision: Precision = "bf16"
    """bf16 autocast (fast on CPUs with AMX and on GPUs), fp32, or fp16 (CUDA, with loss scaling)."""
    compile: bool = False
    """Run the model under torch.compile (30-60 s cold compile; pays off on long runs)."""
    threads: int = 0
    """torch CPU threads for this process (0 = leave torch's default)."""
    checkpoint_every_s: float = 120.0
    """Also checkpoint whenever this many seconds passed since the last one."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep (the best one is kept besides)."""
    log_every: int = 10
    """Log training metrics every this many optimizer steps."""
    progress: bool = True
    """Show a progress bar (rank 0 only)."""
    tensorboard: bool = True
    """Write TensorBoard events when the tensorboard package is installed."""
    deterministic: bool = False
    """Use deterministic algorithms (for exact resume tests; slower)."""
    wandb: bool = False
    """Also log to Weights & Biases: the config, every metric, the summary; resumes the same W&B run after a restart (needs the wandb package; WANDB_MODE=offline logs without an account)."""
    wandb_project: str = "scalelab"
    """W&B project of the run."""
    wandb_name: str = ""
    """W&B run name (empty: the run directory's name)."""
    wandb_group: str = ""
    """W&B group of the run, e.g. a study's name (empty: none)."""
    peak_flops: float = 0.0
    """Peak FLOP/s of one device for the MFU in summary.json (0: NVIDIA's dense bf16 datasheet figure for known GPUs; none on CPU)."""
    activation_checkpointing: bool = False
    """Recompute each Transformer block's activations in the backward pass (less memory, about a third more compute)."""
    fsdp: bool = False
    """Under torchrun, shard parameters, gradients and optimizer state over the processes (FSDP2, per block) instead of replicating them with DDP."""

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.keep_checkpoints < 1:
            raise UserError("keep_checkpoints must be at least 1")
        # torch.set_num_threads is only called for threads > 0, so a negative count would
        # silently run with torch's default instead of what was asked for.
        if self.threads < 0:
            raise UserError(
                f"runtime.threads must be >= 0 (0: torch's default), got {self.threads}"
            )
        if self.log_every < 1:  # the trainer logs when step % log_every == 0
            raise UserError(f"runtime.log_every must be at least 1, got {self.log_every}")
        if self.wandb and not self.wandb_project.strip():
            raise UserError("runtime.wandb_project must not be empty when runtime.wandb is on")
        if not self.peak_flops >= 0:  # also nan
            raise UserError(
                f"runtime.peak_flops must be >= 0 (0: from the table), got {self.peak_flops}"
            )
        if not self.checkpoint_every_s >= 0:  # also nan
            raise UserError(
                f"runtime.checkpoint_every_s must be >= 0 seconds, got {self.checkpoint_every_s}"
            )
