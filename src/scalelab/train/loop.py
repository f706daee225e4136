"""The one training loop: pretraining and every fine-tuning method run through it.

A stage describes its job as a :class:`TrainJob` — the model, a stateless batch source,
an evaluation function, how to export/restore the model — and calls :func:`run`. The loop
owns everything else: optimizer and schedule, gradient accumulation, mixed precision,
``torch.compile``, DDP, periodic evaluation with best-metric tracking and early stopping,
atomic checkpoints with resume, ``metrics.jsonl`` / TensorBoard, the progress bar,
Ctrl-C/SIGTERM handling (checkpoint, then stop) and ``summary.json``.

Resume contract: batches are a pure function of (step, micro-batch, rank), the schedule a
pure function of the step, and the checkpoint carries model, optimizer and RNG state;
so a run killed at any point and resumed retraces the uninterrupted run exactly in fp32.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn

from scalelab.config import Config
from scalelab.errors import TrainingFailed, UserError
from scalelab.train import distributed as ddp
from scalelab.train.checkpoint import (
    ExportFn,
    RestoreFn,
    export_state_dict,
    latest_checkpoint,
    load_checkpoint,
    restore_state_dict,
    rng_state,
    save_checkpoint,
)
from scalelab.train.lock import run_lock
from scalelab.train.metrics_log import MetricsLog, write_summary
from scalelab.train.schedule import Schedule, lr_multiplier
from scalelab.train.step import Precision, make_optimizer, train_step


class BatchSource(Protocol):
    def get(
        self, step: int, micro: int = 0, rank: int = 0, world: int = 1
    ) -> dict[str, torch.Tensor]:
        """The micro-batch ``micro`` of optimizer step ``step`` for ``rank``."""
        ...


@dataclass(kw_only=True)
class OptimConfig(Config):
    """Optimizer, schedule and numerics shared by pretraining and fine-tuning."""

    lr: float = 1e-3
    """Peak learning rate of AdamW."""
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
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak (cosine, wsd, linear)."""
    decay_fraction: float = 0.2
    """wsd only: fraction of the run spent in the final linear decay."""

    def validate(self) -> None:
        if not self.lr > 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise UserError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
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

    def validate(self) -> None:
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise UserError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.keep_checkpoints < 1:
            raise UserError("keep_checkpoints must be at least 1")


@dataclass(kw_only=True)
class TrainJob:
    """Everything the loop needs from a stage (not user-facing; stages build it)."""

    run_dir: Path
    model: nn.Module
    batches: BatchSource
    total_steps: int
    grad_accum: int = 1
    optim: OptimConfig = field(default_factory=OptimConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    seed: int = 0
    unit: str = "tokens"
    """What ``per_step`` counts (tokens for pretraining, examples for fine-tuning)."""
    per_step: int = 0
    """Units processed per optimizer step, all ranks together."""
    tokens_per_step: int = 0
    """Tokens per optimizer step, all ranks together (for throughput and FLOPs)."""
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None
    eval_every: int = 0
    """Evaluate every this many steps (0: only at the end)."""
    eval_at_start: bool = False
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int | None = None
    """Stop after this many evaluations without improvement; restore the best model."""
    restore_best: bool = False
    """At the end, load the best evaluated weights into the model (fine-tuning)."""
    checkpoint_every: int = 0
    """Checkpoint every this many steps (0: time-based only, plus at the end)."""
    export: ExportFn = export_state_dict
    restore: RestoreFn = restore_state_dict
    on_step_end: Callable[[int], None] | None = None
    compile_fn: Callable[[nn.Module], nn.Module] | None = None
    flops_per_token: dict[str, float] = field(default_factory=dict)
    """FLOPs per training token under each named convention (for the summary)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Static facts merged into summary.json (parameter counts, config hash, ...)."""
    description: str = "train"


def _weights_digest(model: nn.Module) -> str:
    """Exact fingerprint of the weights (to check that DDP ranks stay in sync)."""
    import hashlib

    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _choose(mode: str, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new < best if mode == "min" else new > best


class _StopFlag:
    """First Ctrl-C/SIGTERM: finish the step, checkpoint, stop. Second: stop now.

    With ``SCALELAB_STOP_WITH_PARENT=1`` (set by the study runner) the run also stops
    after a checkpoint when its parent process dies, so a SIGKILLed study never leaves
    orphaned rungs training.
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}
        self._parent = os.getppid() if os.environ.get("SCALELAB_STOP_WITH_PARENT") == "1" else None

    def _handler(self, signum, frame):  # noqa: ANN001
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nscalelab: stopping after this step and writing a checkpoint "
            "(press Ctrl-C again to stop at once)",
            file=sys.stderr,
        )

    def poll(self) -> bool:
        if self._parent is not None and os.getppid() != self._parent:
            self.requested = True
        return self.requested

    def __enter__(self) -> _StopFlag:
        with contextlib.suppress(ValueError):  # not in the main thread: leave signals alone
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def run(job: TrainJob) -> dict[str, Any]:
    """Train (or resume) ``job`` to completion; return the final summary dict.

    Rank 0 holds the run directory's lock for the whole run (one process per run).
    """
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    info = ddp.setup(job.runtime.device)
    with run_lock(run_dir) if info.is_main else contextlib.nullcontext():
        return _run(job, run_dir, info)


def _run(job: TrainJob, run_dir: Path, info: ddp.DistInfo) -> dict[str, Any]:
    from scalelab.utils.env import tune_allocator

    tune_allocator()
    rt = job.runtime
    if rt.threads > 0:
        torch.set_num_threads(rt.threads)
    if rt.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if rt.precision == "fp16" and info.device.type != "cuda":
        raise UserError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")

    model = job.model.to(info.device)
    optimizer = make_optimizer(
        model,
        lr=job.optim.lr,
        weight_decay=job.optim.weight_decay,
        betas=(job.optim.beta1, job.optim.beta2),
        eps=job.optim.eps,
    )
    log = MetricsLog(run_dir, enabled=info.is_main, tensorboard=rt.tensorboard)
    state: dict[str, Any] = {
        "step": 0,
        "best": None,
        "best_step": None,
        "evals_without_improvement": 0,
        "elapsed_s": 0.0,
        "last_eval": None,
        "finished": False,
    }
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        state.update(
            load_checkpoint(
                ckpt, model=model, optimizer=optimizer, restore=job.restore, rank=info.rank
            )
        )
        log.truncate_after(state["step"])
        if info.is_main:
            print(
                f"resuming {run_dir} from step {state['step']}/{job.total_steps}", file=sys.stderr
            )
    else:
        torch.manual_seed(job.seed + info.rank)
    best_dir = run_dir / "best"
    started_at = time.time()  # of this process's session (a resumed run has a later one)

    train_model: nn.Module = model
    if rt.compile:
        train_model = (job.compile_fn or torch.compile)(train_model)
    train_model = ddp.wrap(train_model, info)
    scaler = torch.amp.GradScaler("cuda") if rt.precision == "fp16" else None
    warmup = round(job.optim.warmup_fraction * job.total_steps)

    def summary(status: str, **extra: Any) -> dict[str, Any]:
        tokens = state["step"] * job.tokens_per_step
        out = {
            "status": status,
            "step": state["step"],
            "total_steps": job.total_steps,
            "tokens": tokens,
            "flops": {k: v * tokens for k, v in job.flops_per_token.items()},
            "seed": job.seed,
            "world_size": info.world,
            "device": str(info.device),
            "precision": rt.precision,
            "wall_time_s": state["elapsed_s"],
            "started_at": started_at,
            "updated_at": time.time(),
            "tokens_per_s": tokens / state["elapsed_s"] if state["elapsed_s"] > 0 else None,
            f"final_{job.metric}": (state["last_eval"] or {}).get(job.metric),
            f"best_{job.metric}": state["best"],
            "best_step": state["best_step"],
            "last_eval": state["last_eval"],
        }
        if job.unit != "tokens":
            out[job.unit] = state["step"] * job.per_step
        out.update(job.summary)
        out.update(extra)
        return out

    def do_eval() -> dict[str, float] | None:
        if job.evaluate is None:
            return None
        metrics = None
        if info.is_main:
            model.eval()
            with torch.no_grad():
                metrics = job.evaluate(model)
            model.train()
        metrics = ddp.broadcast(info, metrics)
        value = float(metrics.get(job.metric, math.nan))
        improved = _choose(job.mode, value, state["best"])
        if improved:
            state["best"], state["best_step"] = value, state["step"]
            state["evals_without_improvement"] = 0
            if job.restore_best and info.is_main:
                from scalelab.utils.io import atomic_dir

                with atomic_dir(best_dir) as tmp:
                    job.export(model, tmp)
        else:
            state["evals_without_improvement"] += 1
        state["last_eval"] = metrics
        log.write(
            {
                "type": "eval",
                "step": state["step"],
                "tokens": state["step"] * job.tokens_per_step,
                **metrics,
            }
        )
        return metrics

    def checkpoint() -> None:
        if info.enabled:  # DDP ranks must hold bit-identical weights; check before saving
            sums = ddp.gather(info, _weights_digest(model))
            if len(set(sums)) != 1:
                raise TrainingFailed(f"data-parallel ranks diverged at step {state['step']}")
            job.summary["rank_checksums_equal"] = True
        rngs = ddp.gather(info, rng_state())
        if info.is_main:
            save_checkpoint(
                run_dir,
                step=state["step"],
                model=model,
                optimizer=optimizer,
                trainer_state=dict(state),
                rng_states=rngs,
                export=job.export,
                keep=rt.keep_checkpoints,
            )
            write_summary(run_dir, summary("running"))
        ddp.barrier(info)

    if info.is_main:
        write_summary(run_dir, summary("running"))
    status = "completed"
    message = None
    pbar = None
    try:
        with _StopFlag() as stop:
            if state["step"] == 0 and job.eval_at_start and ckpt is None:
                do_eval()
            if info.is_main and rt.progress:
                from tqdm.auto import tqdm

                pbar = tqdm(
                    total=job.total_steps,
                    initial=state["step"],
                    desc=job.description,
                    unit="step",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
            model.train()
            last_ckpt_time = time.monotonic()
            window_t0, window_steps = time.monotonic(), 0
            while state["step"] < job.total_steps and not state["finished"]:
                step = state["step"]
                t0 = time.monotonic()
                mult = lr_multiplier(
                    step,
                    job.total_steps,
                    schedule=job.optim.schedule,
                    warmup_steps=warmup,
                    min_lr_ratio=job.optim.min_lr_ratio,
                    decay_fraction=job.optim.decay_fraction,
                )
                for group in optimizer.param_groups:
                    group["lr"] = job.optim.lr * mult
                micro = [
                    {
                        k: v.to(info.device, non_blocking=True)
                        for k, v in job.batches.get(step, m, info.rank, info.world).items()
                    }
                    for m in range(job.grad_accum)
                ]
                losses, grad_norm = train_step(
                    train_model,
                    micro,
                    optimizer,
                    precision=rt.precision,
                    grad_clip=job.optim.grad_clip or None,
                    device=info.device,
                    scaler=scaler,
                    no_sync=ddp.no_sync(train_model),
                )
                losses = ddp.mean_across(info, losses)
                if not all(math.isfinite(v) for v in losses.values()):
                    bad = ", ".join(f"{k}={v}" for k, v in losses.items())
                    raise TrainingFailed(
                        f"non-finite loss at step {step} ({bad}); lower the learning rate "
                        f"(lr={job.optim.lr}) or use --precision fp32"
                    )
                if job.on_step_end is not None:
                    job.on_step_end(step)
                state["step"] = step + 1
                state["elapsed_s"] += time.monotonic() - t0
                window_steps += 1
                if pbar is not None:
                    pbar.update(1)
                if state["step"] % rt.log_every == 0 or state["step"] == job.total_steps:
                    now = time.monotonic()
                    tps = window_steps * job.tokens_per_step / max(now - window_t0, 1e-9)
                    window_t0, window_steps = now, 0
                    record = {
                        "type": "train",
                        "step": state["step"],
                        "tokens": state["step"] * job.tokens_per_step,
                        "lr": job.optim.lr * mult,
                        "grad_norm": grad_norm,
                        "tokens_per_s": tps,
                        "elapsed_s": state["elapsed_s"],
                        **losses,
                    }
                    log.write(record)
                    if pbar is not None:
                        pbar.set_postfix(
                            loss=f"{losses['loss']:.3f}", tok_s=f"{tps:,.0f}", refresh=False
                        )
                done = state["step"] == job.total_steps
                stopping = False
                if (job.eval_every and state["step"] % job.eval_every == 0) or done:
                    t_eval = time.monotonic()
                    do_eval()
                    state["elapsed_s"] += time.monotonic() - t_eval
                    if (
                        job.patience is not None
                        and state["evals_without_improvement"] >= job.patience
                    ):
                        stopping = True
                        state["finished"] = True
                        status = "completed"
                        message = f"early stop: no improvement of {job.metric} in {job.patience} evaluations"
                # Rank 0 decides (clocks and signals differ per rank; checkpoints are collective).
                timed = time.monotonic() - last_ckpt_time >= rt.checkpoint_every_s
                wants_stop, timed = ddp.broadcast(info, (stop.poll(), timed))
                due = (job.checkpoint_every and state["step"] % job.checkpoint_every == 0) or timed
                if done or stopping or wants_stop or due:
                    checkpoint()
                    last_ckpt_time = time.monotonic()
                if stopping:
                    break
                if wants_stop and not done:
                    status = "interrupted"
                    break
    except TrainingFailed as exc:
        status, message = "failed", str(exc)
    except KeyboardInterrupt:
        status, message = "interrupted", "stopped by the user before a checkpoint could be written"
    finally:
        if pbar is not None:
            pbar.close()
    if job.restore_best and status == "completed" and best_dir.is_dir() and info.is_main:
        job.restore(model, best_dir)
    final = summary(status, message=message)
    if info.is_main:
        write_summary(run_dir, final)
        log.close()
    ddp.barrier(info)
    if status == "failed":
        raise TrainingFailed(message)
    if status == "interrupted":
        raise KeyboardInterrupt
    return final
