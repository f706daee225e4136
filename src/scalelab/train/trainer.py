"""The one training loop as a small :class:`Trainer`: pretraining and every fine-tuning method.

A stage describes its job as a :class:`TrainJob` — the model, a stateless batch source,
how to evaluate (:class:`Evaluation`) and how to save/load/compile the model
(:class:`ModelIO`) — and calls ``Trainer(job).fit()``. The trainer owns everything else:
optimizer and schedule, gradient accumulation, mixed precision, ``torch.compile``, DDP,
periodic evaluation with best-metric tracking and early stopping, atomic checkpoints
with resume, ``metrics.jsonl`` / TensorBoard, the progress bar, Ctrl-C/SIGTERM handling
(checkpoint, then stop) and ``summary.json``. Its methods (:meth:`Trainer.resume`,
:meth:`~Trainer.step`, :meth:`~Trainer.evaluate`, :meth:`~Trainer.checkpoint`) work
over one typed :class:`TrainState`, which is what a checkpoint's ``trainer_state.json``
holds.

Resume contract: batches are a pure function of (step, micro-batch, rank), the schedule a
pure function of the step, and the checkpoint carries model, optimizer and RNG state;
so a run killed at any point and resumed retraces the uninterrupted run exactly in fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scalelab.errors import TrainingFailed, UserError
from scalelab.train import distributed as ddp
from scalelab.train.checkpoint import (
    fallback_facts,
    load_checkpoint,
    load_intact,
    remove_leftovers,
    resume_latest,
    rng_state,
    save_checkpoint,
)
from scalelab.train.config import OptimConfig, RuntimeConfig
from scalelab.train.job import (
    Batch,
    BatchSource,
    Evaluation,
    ModelIO,
    StepResult,
    TrainJob,
    TrainState,
)
from scalelab.train.lock import run_lock
from scalelab.train.metrics_log import MetricsLog, read_summary, write_summary
from scalelab.train.mfu import mfu_facts
from scalelab.train.schedule import lr_multiplier
from scalelab.train.step import make_optimizer, train_step
from scalelab.train.stop import StopFlag


def count_tokens(batch: Batch) -> int:
    """Non-padding tokens of a batch: its attention mask's sum, else every input id."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def _weights_digest(model: nn.Module) -> str:
    """Exact fingerprint of the weights (to check that DDP ranks stay in sync)."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _improves(mode: str, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new < best if mode == "min" else new > best


# The token count rides along with the losses' all-reduce (one collective per step, not
# two); no model output is named like this.
_TOKENS = "\0tokens"


class Trainer:
    """Runs one :class:`TrainJob`: ``Trainer(job).fit()`` trains or resumes it to the end.

    :meth:`fit` sets up (device, optimizer, metrics log), calls :meth:`resume` to continue
    from the latest checkpoint, then alternates :meth:`step` with logging, :meth:`evaluate`
    and :meth:`checkpoint` as they fall due. Attributes set up by :meth:`fit`: ``info``,
    ``model`` (unwrapped), ``train_model`` (compiled / DDP-wrapped), ``optimizer``, ``log``;
    ``state`` is always valid.
    """

    info: ddp.DistInfo
    model: nn.Module
    train_model: nn.Module
    optimizer: torch.optim.Optimizer
    log: MetricsLog

    def __init__(self, job: TrainJob) -> None:
        if job.optim.lr is None:
            raise UserError("no learning rate: set optim.lr (the stage gave no default)")
        self.job = job
        self.peak_lr: float = job.optim.lr
        self.run_dir = Path(job.run_dir)
        self.best_dir = self.run_dir / "best"
        self.state = TrainState()
        self.scaler: torch.amp.GradScaler | None = None
        self._warmup_steps = job.optim.warmup_steps or round(
            job.optim.warmup_fraction * job.total_steps
        )
        # Summary facts of this run; a copy, so that the job itself is never changed.
        self._facts: dict[str, Any] = dict(job.summary)
        self._started_at = time.time()
        self._pbar: Any = None
        self._last_ckpt_time = self._window_t0 = time.monotonic()
        self._window_tokens = 0
        self._timed = (0, 0.0)  # tokens and seconds inside this session's steps (the MFU's)

    # ------------------------------------------------------------------ the whole run
    def fit(self) -> dict[str, Any]:
        """Train (or resume) the job to completion; return the final summary dict.

        Rank 0 holds the run directory's lock for the whole run (one process per run).
        Raises :class:`TrainingFailed` (non-finite loss, diverged ranks) and
        ``KeyboardInterrupt`` (stopped by a signal) after writing the summary.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.info = ddp.setup(self.job.runtime.device)
        with run_lock(self.run_dir) if self.info.is_main else contextlib.nullcontext():
            if self.info.is_main:
                remove_leftovers(self.run_dir)  # of writes killed midway, never finished
            self._setup()
            resumed = self.resume()
            self._started_at = time.time()  # of this session (a resumed run has a later one)
            self._wrap_model()
            if self.info.is_main:
                write_summary(self.run_dir, self.summary("running"))
            status, message = self._train(fresh=not resumed)
            return self._finish(status, message)

    def _setup(self) -> None:
        """Threads, determinism, the model on its device, the optimizer, the metrics log."""
        from scalelab.utils.env import tune_allocator

        tune_allocator()
        rt, optim = self.job.runtime, self.job.optim
        if rt.threads > 0:
            torch.set_num_threads(rt.threads)
        if rt.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if rt.precision == "fp16" and self.info.device.type != "cuda":
            raise UserError("fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        self.model = self.job.model.to(self.info.device)
        self.optimizer = make_optimizer(
            self.model,
            lr=self.peak_lr,
            weight_decay=optim.weight_decay,
            betas=(optim.beta1, optim.beta2),
            eps=optim.eps,
        )
        fallback = {"optim": optim.to_dict(), "runtime": rt.to_dict(), "seed": self.job.seed}
        self.log = MetricsLog(self.run_dir, enabled=self.info.is_main, runtime=rt, config=fallback)

    def _wrap_model(self) -> None:
        """Compile and DDP-wrap the model for training; the fp16 loss scaler."""
        rt = self.job.runtime
        if rt.fsdp:  # shards self.model in place (after resume, before compile)
            self.optimizer = ddp.shard(self.model, self.optimizer, self.info, self.job.evaluation)
        train_model: nn.Module = self.model
        if rt.compile:
            train_model = (self.job.io.compile_fn or torch.compile)(train_model)
        self.train_model = ddp.wrap(train_model, self.info, fsdp=rt.fsdp)
        self.scaler = torch.amp.GradScaler("cuda") if rt.precision == "fp16" else None

    def _train(self, *, fresh: bool) -> tuple[str, str | None]:
        """Step until done, stopped early, interrupted or failed; return (status, message)."""
        status, message = "completed", None
        try:
            with StopFlag() as stop:
                if fresh and self.state.step == 0 and self.job.evaluation.at_start:
                    self.evaluate()
                self._pbar = self._progress_bar()
                self.model.train()
                self._last_ckpt_time = self._window_t0 = time.monotonic()
                self._window_tokens = 0
                while self.state.step < self.job.total_steps and not self.state.finished:
                    outcome = self._after_step(self.step(), stop)
                    if outcome is not None:
                        status, message = outcome
                        break
        except TrainingFailed as exc:
            status, message = "failed", str(exc)
        except KeyboardInterrupt:
            message = "stopped by the user before a checkpoint could be written"
            status = "interrupted"
        finally:
            if self._pbar is not None:
                self._pbar.close()
        return status, message

    def _finish(self, status: str, message: str | None) -> dict[str, Any]:
        """Restore the best weights, write the final summary, re-raise a failure or a stop."""
        if (
            self.job.evaluation.restore_best
            and status == "completed"
            and self.best_dir.is_dir()
            and self.info.is_main
        ):
            self.job.io.restore(self.model, self.best_dir)
        final = self.summary(status, message=message)
        if self.info.is_main:
            write_summary(self.run_dir, final)
            self.log.close(final)
        ddp.barrier(self.info)
        if status == "failed":
            raise TrainingFailed(message)
        if status == "interrupted":
            raise KeyboardInterrupt
        return final

    # ------------------------------------------------------------------ the parts
    def resume(self) -> bool:
        """Load the newest intact checkpoint (model, optimizer, RNG, state); False: none.

        Broken newer ones are skipped with a warning and recorded in the summary; when all
        are broken this raises UserError. Without a checkpoint this seeds the RNG instead
        (dropout differs per rank).
        """
        job, info = self.job, self.info

        def load(p: Path) -> dict[str, Any]:
            return load_checkpoint(
                p,
                model=self.model,
                optimizer=self.optimizer,
                restore=job.io.restore,
                rank=info.rank,
            )

        found = resume_latest(self.run_dir, load, warn=info.is_main)
        self._facts.update(fallback_facts(read_summary(self.run_dir), found))
        if found is None and job.init_from is not None:
            return self._start_from(job.init_from, load)
        if found is None:
            torch.manual_seed(job.seed + info.rank)
            self.log.start(None)  # from scratch: what a killed first session logged goes
            return False
        saved = found.state
        self.state = TrainState.from_dict(saved)
        if "tokens" not in saved:  # written before the count was kept: count again
            self.state.tokens = self._tokens_before(self.state.step)
        self.log.start(self.state.step)  # drops/hides what was logged after the checkpoint
        if info.is_main:
            print(
                f"resuming {self.run_dir} from step {self.state.step}/{job.total_steps}",
                file=sys.stderr,
            )
        return True

    def _start_from(self, path: Path, load: Callable[[Path], dict[str, Any]]) -> bool:
        """Start from another run's checkpoint (a WSD branch from its trunk): its weights,
        optimizer, RNG and state; this run's own log starts empty."""
        state = load_intact(Path(path), load)
        self.state = TrainState.from_dict(state)
        self.state.finished = False
        self.log.start(None)
        if self.info.is_main:
            print(
                f"starting {self.run_dir} from {path} (step {self.state.step}/"
                f"{self.job.total_steps})",
                file=sys.stderr,
            )
        return True

    def _tokens_before(self, step: int) -> int:
        """Tokens of steps ``0..step-1``, recounted from the stateless batch source."""
        job, info = self.job, self.info
        if job.tokens_per_step is not None:
            return step * job.tokens_per_step
        # A batch source may draw from torch's RNG (masking); keep the restored state intact.
        with torch.random.fork_rng(devices=[]):
            local = sum(
                count_tokens(job.batches.get(s, m, info.rank, info.world))
                for s in range(step)
                for m in range(job.grad_accum)
            )
        return self._reduce({}, local)[1]

    def step(self) -> StepResult:
        """One optimizer step at ``state.step``: schedule, micro-batches, update; advance."""
        job, info, state = self.job, self.info, self.state
        step = state.step
        t0 = time.monotonic()
        lr = self.peak_lr * lr_multiplier(
            step,
            job.total_steps,
            schedule=job.optim.schedule,
            warmup_steps=self._warmup_steps,
            min_lr_ratio=job.optim.min_lr_ratio,
            decay_fraction=job.optim.decay_fraction,
            decay_shape=job.optim.decay_shape,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batches = [job.batches.get(step, m, info.rank, info.world) for m in range(job.grad_accum)]
        # Counted on the host before the copy, so that counting never waits for the device.
        local = None if job.tokens_per_step is not None else sum(map(count_tokens, batches))
        losses, grad_norm = train_step(
            self.train_model,
            [{k: v.to(info.device, non_blocking=True) for k, v in b.items()} for b in batches],
            self.optimizer,
            precision=job.runtime.precision,
            grad_clip=job.optim.grad_clip or None,
            device=info.device,
            scaler=self.scaler,
            no_sync=ddp.no_sync(self.train_model),
        )
        losses, tokens = self._reduce(losses, local)
        if not all(math.isfinite(v) for v in losses.values()):
            bad = ", ".join(f"{k}={v}" for k, v in losses.items())
            raise TrainingFailed(
                f"non-finite loss at step {step} ({bad}); lower the learning rate "
                f"(lr={self.peak_lr}) or use --runtime.precision fp32"
            )
        if job.on_step_end is not None:
            job.on_step_end(step)
        state.step = step + 1
        state.tokens += tokens
        state.elapsed_s += (dt := time.monotonic() - t0)
        self._timed = (self._timed[0] + tokens, self._timed[1] + dt)
        return StepResult(losses=losses, grad_norm=grad_norm, lr=lr, tokens=tokens)

    def _reduce(
        self, losses: dict[str, float], local_tokens: int | None
    ) -> tuple[dict[str, float], int]:
        """Losses averaged over ranks, and the step's tokens summed over ranks."""
        if local_tokens is None:
            assert self.job.tokens_per_step is not None
            return ddp.mean_across(self.info, losses), self.job.tokens_per_step
        mean = ddp.mean_across(self.info, {**losses, _TOKENS: float(local_tokens)})
        tokens = round(mean.pop(_TOKENS) * self.info.world)
        return mean, tokens

    def _after_step(self, result: StepResult, stop: StopFlag) -> tuple[str, str | None] | None:
        """Log, evaluate, checkpoint as due; (status, message) when the run should stop."""
        job, ev, state = self.job, self.job.evaluation, self.state
        self._window_tokens += result.tokens
        if self._pbar is not None:
            self._pbar.update(1)
        done = state.step == job.total_steps
        if state.step % job.runtime.log_every == 0 or done:
            self._log_train(result)
        stopping = False
        if (ev.every and state.step % ev.every == 0) or done:
            t_eval = time.monotonic()
            self.evaluate()
            state.elapsed_s += time.monotonic() - t_eval
            if ev.patience is not None and state.evals_without_improvement >= ev.patience:
                stopping = state.finished = True
        # Rank 0 decides (clocks and signals differ per rank; checkpoints are collective).
        timed = time.monotonic() - self._last_ckpt_time >= job.runtime.checkpoint_every_s
        wants_stop, timed = ddp.broadcast(self.info, (stop.poll(), timed))
        due = (job.checkpoint_every and state.step % job.checkpoint_every == 0) or timed
        due = due or state.step in job.keep_steps
        if done or stopping or wants_stop or due:
            self.checkpoint()
            self._last_ckpt_time = time.monotonic()
        if stopping:
            return "completed", (
                f"early stop: no improvement of {ev.metric} in {ev.patience} evaluations"
            )
        if wants_stop and not done:
            return "interrupted", None
        return None

    def _log_train(self, result: StepResult) -> None:
        """A ``train`` record; tokens/s over the steps since the previous record."""
        now = time.monotonic()
        tps = self._window_tokens / max(now - self._window_t0, 1e-9)
        self._window_t0, self._window_tokens = now, 0
        self.log.write(
            {
                "type": "train",
                "step": self.state.step,
                "tokens": self.state.tokens,
                "lr": result.lr,
                "grad_norm": result.grad_norm,
                "tokens_per_s": tps,
                "elapsed_s": self.state.elapsed_s,
                **result.losses,
            }
        )
        if self._pbar is not None:
            loss = result.losses["loss"]
            self._pbar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}", refresh=False)

    def evaluate(self) -> dict[str, float] | None:
        """Evaluate on rank 0, share the metrics, track the best (saving it to ``best/``)."""
        ev, info, state = self.job.evaluation, self.info, self.state
        if ev.fn is None:
            return None
        metrics = None
        if info.is_main or self.job.runtime.fsdp:  # a sharded forward needs every rank
            self.model.eval()
            with torch.no_grad():
                metrics = ev.fn(self.model)
            self.model.train()
        metrics = ddp.broadcast(info, metrics)
        value = float(metrics.get(ev.metric, math.nan))
        if _improves(ev.mode, value, state.best):
            state.best, state.best_step = value, state.step
            state.evals_without_improvement = 0
            if ev.restore_best and info.is_main:
                from scalelab.utils.io import atomic_dir

                with atomic_dir(self.best_dir) as tmp:
                    self.job.io.export(self.model, tmp)
        else:
            state.evals_without_improvement += 1
        state.last_eval = metrics
        self.log.write({"type": "eval", "step": state.step, "tokens": state.tokens, **metrics})
        return metrics

    def checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (collective; rank 0 writes, returns its path).

        Under DDP it first checks that every rank holds bit-identical weights.
        """
        info = self.info
        if info.enabled and not self.job.runtime.fsdp:  # FSDP ranks hold different shards
            sums = ddp.gather(info, _weights_digest(self.model))
            if len(set(sums)) != 1:
                raise TrainingFailed(f"data-parallel ranks diverged at step {self.state.step}")
            self._facts["rank_checksums_equal"] = True
        rngs = ddp.gather(info, rng_state())
        model, optimizer = ddp.full_state(self.model, self.optimizer)  # collective
        path = None
        if info.is_main:
            path = save_checkpoint(
                self.run_dir,
                step=self.state.step,
                model=model,
                optimizer=optimizer,
                trainer_state=self.state.to_dict(),
                rng_states=rngs,
                export=self.job.io.export,
                keep=self.job.runtime.keep_checkpoints,
                protect=tuple(
                    self.run_dir / "checkpoints" / f"step-{s:08d}" for s in self.job.keep_steps
                ),
            )
            write_summary(self.run_dir, self.summary("running"))
        ddp.barrier(info)
        return path

    def summary(self, status: str, **extra: Any) -> dict[str, Any]:
        """The ``summary.json`` content now: progress, throughput, metrics, the job's facts."""
        job, state, metric = self.job, self.state, self.job.evaluation.metric
        out: dict[str, Any] = {
            "status": status,
            "step": state.step,
            "total_steps": job.total_steps,
            "tokens": state.tokens,
            "flops": {k: v * state.tokens for k, v in job.flops_per_token.items()},
            "seed": job.seed,
            "world_size": self.info.world,
            "device": str(self.info.device),
            "precision": job.runtime.precision,
            "wall_time_s": state.elapsed_s,
            "started_at": self._started_at,
            "updated_at": time.time(),
            "tokens_per_s": state.tokens / state.elapsed_s if state.elapsed_s > 0 else None,
            f"final_{metric}": (state.last_eval or {}).get(metric),
            f"best_{metric}": state.best,
            "best_step": state.best_step,
            "last_eval": state.last_eval,
        }
        if job.examples_per_step is not None:
            out["examples"] = state.step * job.examples_per_step
        if job.unique_tokens:
            out.update(unique_tokens=job.unique_tokens, tokens_seen=state.tokens)
            out["epochs"] = state.tokens / job.unique_tokens
        out.update(self._facts)
        out.update(mfu_facts(out, *self._timed, job.runtime.peak_flops))
        out.update(extra)
        return out

    def _progress_bar(self) -> Any:
        """A tqdm bar on rank 0 when enabled, else None."""
        if not (self.info.is_main and self.job.runtime.progress):
            return None
        from tqdm.auto import tqdm

        return tqdm(
            total=self.job.total_steps,
            initial=self.state.step,
            desc=self.job.description,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
        )


__all__ = ["BatchSource", "Evaluation", "ModelIO", "OptimConfig", "RuntimeConfig", "StepResult",
           "TrainJob", "TrainState", "Trainer", "count_tokens"]  # fmt: skip
