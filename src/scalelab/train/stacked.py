"""Train k decoder LMs of one shape at once: a learning-rate sweep as one stacked model.

``train_stacked(cfgs, run_dirs)`` trains member i as ``pretrain(cfgs[i], run_dirs[i])``
would -- the same initialisation (from the shared seed), the same batches, AdamW with
decoupled weight decay on matrices, warmup and schedule, gradient clipping by the
member's own global norm, autocast -- but all members in one
:class:`~scalelab.train.stacked_model.StackedDecoder`, whose batched kernels waste less
of a small CPU than k runs one after another (``bench/stacked_sweep.py``).

The members must agree on everything but their optimizer settings (``optim.*``: the
learning rate, and also weight decay, betas, eps, clipping, schedule, warmup) and
runtime fields that change no result; the stack runs with member 0's device, precision,
threads, logging and checkpoint interval. Each member leaves the run directory pretrain
leaves: ``config.yaml``, ``metrics.jsonl`` (the trainer's ``train``/``eval`` records),
``summary.json`` (the trainer's summary plus ``stacked``), ``checkpoints/step-*/`` (HF
weights and torch AdamW state in pretrain's layout, so ``pretrain`` can also resume a
member alone) and ``model/``. ``wall_time_s`` is the stack's time (shared by its members;
``stacked.k`` says by how many).

Resume: all members are checkpointed at the same steps and pruned only once every one
is written, so after a kill at any moment the newest step that every member holds
intact is where they all resume. A member whose loss goes non-finite ends with status
``failed`` and leaves the stack; the others go on (nothing is raised for it). Running a
finished set again only returns its summaries.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from scalelab.errors import UserError
from scalelab.train import distributed as ddp
from scalelab.train.checkpoint import (
    STATE,
    checkpoint_dirs,
    load_checkpoint,
    manifest_problems,
    remove_leftovers,
    rng_state,
    save_checkpoint,
)
from scalelab.train.config import OptimConfig
from scalelab.train.job import TrainJob, TrainState
from scalelab.train.lock import run_lock
from scalelab.train.metrics_log import MetricsLog, read_summary, write_summary
from scalelab.train.mfu import mfu_facts
from scalelab.train.pretrain import (
    _RUNTIME_KEYS,
    PretrainConfig,
    _batches,
    _check_same,
    _keep_sampling,
    _micro_batches,
    _restore_hf,
    _save_final_model,
    _static_summary,
    load_run_config,
    resolve,
)
from scalelab.train.schedule import lr_multiplier
from scalelab.train.stacked_model import StackedAdamW, StackedDecoder
from scalelab.train.step import autocast, make_optimizer
from scalelab.train.stop import StopFlag
from scalelab.train.trainer import Trainer, _improves

# What members of one stack may differ in (besides these, their configs must be equal).
_MAY_DIFFER = ("optim", "runtime", "data_root", "size", "params", "save_steps")
# Runtime fields that change the numbers: every member must have member 0's.
_SAME_RUNTIME = ("device", "precision", "deterministic")


def train_stacked(cfgs: Sequence[PretrainConfig], run_dirs: Sequence[str | Path]) -> list[dict]:
    """Train (or resume) ``cfgs[i]`` into ``run_dirs[i]`` as one stack; return the summaries."""
    from scalelab.data.prepare import open_dataset, prepare
    from scalelab.utils.io import ensure_dir

    cfgs, dirs = list(cfgs), [Path(d) for d in run_dirs]
    _check_request(cfgs, dirs)
    first = cfgs[0]
    dataset_dir = (
        Path(first.dataset) if first.dataset else prepare(first.data, root=first.data_root)
    )
    ds = open_dataset(dataset_dir)
    cfgs = [resolve(c, ds.vocab_size) for c in cfgs]
    for i, d in enumerate(dirs):
        saved = load_run_config(d)
        if saved is not None:
            cfgs[i] = _keep_sampling(saved, cfgs[i], d)
            _check_same(saved, cfgs[i], d)
    _check_members(cfgs)
    with contextlib.ExitStack() as locks:
        for c, d in zip(cfgs, dirs):
            ensure_dir(d, "run directory")
            locks.enter_context(run_lock(d))
            remove_leftovers(d)
            c.to_yaml(d / "config.yaml")
        done = [_finished(c, d) for c, d in zip(cfgs, dirs)]
        todo = [i for i, s in enumerate(done) if s is None]
        if todo:
            run = _StackedRun([cfgs[i] for i in todo], [dirs[i] for i in todo], dataset_dir, ds)
            for i, summary in zip(todo, run.fit()):
                done[i] = summary
    return done  # type: ignore[return-value]


def _check_request(cfgs: list[PretrainConfig], dirs: list[Path]) -> None:
    """One-line refusals of what cannot be stacked, before any data is prepared."""
    if not cfgs or len(cfgs) != len(dirs):
        raise UserError(
            f"train_stacked needs one run directory per config, got {len(cfgs)} configs "
            f"and {len(dirs)} directories"
        )
    if len({d.resolve() for d in dirs}) != len(dirs):
        raise UserError("train_stacked: every member needs its own run directory")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("stacked training runs in one process; do not launch it with torchrun")
    for i, c in enumerate(cfgs):
        if c.arch not in ("llama", "gpt2"):
            raise UserError(
                f"stacked training needs a decoder (llama or gpt2); member {i} is {c.arch}"
            )
        if c.optim.lr is None:
            raise UserError(f"member {i} has no learning rate: set optim.lr")
        if c.model is not None and c.model.dropout > 0:
            raise UserError(f"stacked training needs dropout 0; member {i} has {c.model.dropout}")
        if c.init_from is not None:
            raise UserError(f"stacked training starts from scratch; member {i} has init_from")
        if c.runtime.precision == "fp16" or c.runtime.fsdp:
            raise UserError(
                f"stacked training runs in bf16 or fp32, without FSDP; member {i} asks for "
                f"{'FSDP' if c.runtime.fsdp else 'fp16'}"
            )


def _check_members(cfgs: list[PretrainConfig]) -> None:
    """Members must share shape, data, batch, duration and seed (differ in optim only)."""

    def shared(c: PretrainConfig) -> dict[str, Any]:
        return {k: v for k, v in c.to_dict().items() if k not in _MAY_DIFFER}

    base = shared(cfgs[0])
    for i, c in enumerate(cfgs[1:], 1):
        other = shared(c)
        diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
        diff += [f"runtime.{k}" for k in _SAME_RUNTIME
                 if getattr(c.runtime, k) != getattr(cfgs[0].runtime, k)]  # fmt: skip
        if diff:
            shapes = (
                f" (shape {cfgs[0].model.shape()} vs {c.model.shape()})" if "model" in diff else ""
            )
            raise UserError(
                "stacked members may differ only in their optim settings: member "
                f"{i} differs from member 0 in {', '.join(diff)}{shapes}"
            )


def _finished(cfg: PretrainConfig, run_dir: Path) -> dict[str, Any] | None:
    """The summary of a member that has nothing left to do (completed or failed)."""
    s = read_summary(run_dir)
    if s.get("config_hash") != cfg.hash(exclude=_RUNTIME_KEYS):
        return None
    if s.get("status") == "failed":
        return s
    complete = s.get("status") == "completed" and s.get("step") == cfg.steps
    return s if complete and (run_dir / "model").is_dir() else None


def _common_checkpoint(run_dirs: list[Path]) -> int | None:
    """The newest step every run holds an intact checkpoint of (None: start from 0).

    Refuses when the runs hold checkpoints of different steps with none in common (they
    were not trained together), rather than train over them from step 0; a first
    checkpoint cut short by a kill (one step, held by some) only restarts the set.
    """
    held = [{int(p.name[5:]): p for p in checkpoint_dirs(d)} for d in run_dirs]
    common = set.intersection(*(set(h) for h in held))
    for step in sorted(common, reverse=True):
        if all(not set(manifest_problems(h[step])) - {STATE} for h in held):
            return step
    steps = set().union(*held)
    if len(steps) > 1:
        listed = "; ".join(f"{d}: {sorted(h) or 'none'}" for d, h in zip(run_dirs, held))
        raise UserError(
            f"the stacked runs share no intact checkpoint to resume from ({listed}); "
            "resume them one by one with pretrain, or remove their checkpoints"
        )
    return None


def _prune(run_dir: Path, step: int, keep: int, protect: Sequence[int]) -> None:
    """Keep the newest ``keep`` checkpoints up to ``step`` and those of the steps
    ``protect`` (as save_checkpoint prunes)."""
    import shutil

    done = [p for p in checkpoint_dirs(run_dir) if int(p.name[5:]) <= step]
    for old in done[:-keep]:
        if int(old.name[5:]) not in protect:
            shutil.rmtree(old, ignore_errors=True)


def _lr(optim: OptimConfig, step: int, total: int) -> float:
    """The learning rate of optimizer step ``step``, as the trainer schedules it."""
    warmup = optim.warmup_steps or round(optim.warmup_fraction * total)
    return optim.lr * lr_multiplier(
        step,
        total,
        schedule=optim.schedule,
        warmup_steps=warmup,
        min_lr_ratio=optim.min_lr_ratio,
        decay_fraction=optim.decay_fraction,
        decay_shape=optim.decay_shape,
    )


@dataclass
class _Member:
    """One member's bookkeeping; its weights and moments live in the stack."""

    cfg: PretrainConfig
    run_dir: Path
    trainer: Trainer
    """Never fit: holds the member's TrainState and writes its summary dict."""
    log: MetricsLog
    status: str = "running"
    message: str | None = None
    window_tokens: int = 0
    timed_tokens: int = 0
    timed_s: float = 0.0
    """This session's tokens and seconds inside optimizer steps (the MFU's)."""

    @property
    def state(self) -> TrainState:
        return self.trainer.state


class _StackedRun:
    """The members still to train, as one stack: set up, resume, step, log, checkpoint."""

    def __init__(self, cfgs: list[PretrainConfig], dirs: list[Path], dataset_dir: Path, ds: Any):
        from scalelab.models import accounting
        from scalelab.models.build import build_model
        from scalelab.utils.env import tune_allocator

        cfg, rt = cfgs[0], cfgs[0].runtime
        tune_allocator()
        if rt.threads > 0:
            torch.set_num_threads(rt.threads)
        if rt.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.cfg, self.ds, self.device = cfg, ds, ddp.resolve_device(rt.device)
        self.micro, self.accum = _micro_batches(cfg, 1)
        self.batches, self.val = _batches(cfg, ds, self.micro, self.accum)
        self.special = {f"{k}_token_id": v for k, v in ds.special_ids.items()
                        if k in ("bos", "eos", "pad")}  # fmt: skip
        self.total = cfg.steps
        self.eval_every = (
            max(1, round(cfg.eval_every_tokens / cfg.batch_tokens))
            if cfg.eval_every_tokens
            else max(1, cfg.steps // max(1, cfg.evals))
        )
        counts = accounting.param_counts(cfg.model)
        flops = {c: accounting.flops_per_token(cfg.model, c, seq_len=cfg.seq_len)
                 for c in accounting.FLOP_CONVENTIONS}  # fmt: skip
        if rt.compile or rt.activation_checkpointing:
            print("note: stacked training runs eagerly and stores activations "
                  "(runtime.compile and runtime.activation_checkpointing are ignored)",
                  file=sys.stderr)  # fmt: skip
        torch.manual_seed(cfg.seed)  # pretrain's initialisation, the same for every member
        # A plain model: every member's initial weights, and how members are saved/loaded.
        self.shadow = build_model(cfg.model).to(self.device)
        self.members = [self._member(c, d, counts, flops, dataset_dir) for c, d in zip(cfgs, dirs)]
        self.active = list(range(len(cfgs)))  # stack row j holds members[active[j]]
        self.stack = StackedDecoder(cfg.model, len(cfgs), self.device)
        self.optimizer = self._optimizer()
        self.step_index = 0
        self.description = f"{cfg.arch} {counts.non_embedding / 1e6:.2f}M x{len(cfgs)} stacked"

    def _member(self, cfg, run_dir, counts, flops, dataset_dir) -> _Member:  # noqa: ANN001
        job = TrainJob(
            run_dir=run_dir,
            model=self.shadow,
            batches=self.batches,
            total_steps=self.total,
            grad_accum=self.accum,
            optim=cfg.optim,
            runtime=cfg.runtime,
            seed=cfg.seed,
            tokens_per_step=cfg.batch_tokens,
            unique_tokens=self.batches.unique_tokens,
            flops_per_token=flops,
            summary=_static_summary(cfg, counts, dataset_dir, self.ds),
        )
        trainer = Trainer(job)
        trainer.info = ddp.DistInfo(device=self.device)
        fallback = {
            "optim": cfg.optim.to_dict(),
            "runtime": cfg.runtime.to_dict(),
            "seed": cfg.seed,
        }
        return _Member(
            cfg, run_dir, trainer, MetricsLog(run_dir, runtime=cfg.runtime, config=fallback)
        )

    def _optimizer(self) -> StackedAdamW:
        opts = [self.members[i].cfg.optim for i in self.active]
        self.clips = torch.tensor([o.grad_clip for o in opts], device=self.device)
        return StackedAdamW(self.stack, [(o.weight_decay, o.beta1, o.beta2, o.eps) for o in opts])

    # ------------------------------------------------------------------ the whole run
    def fit(self) -> list[dict[str, Any]]:
        """Resume, train to the end (or a stop), write every member's final summary."""
        self.resume()
        for m in self.members:
            write_summary(m.run_dir, self._summary(m, "running"))
        status, message = "completed", None
        pbar = self._progress_bar()
        try:
            with StopFlag() as stop, warnings.catch_warnings():
                # The stack's parameters are strided views of one buffer (by design).
                warnings.filterwarnings("ignore", message="grad and param do not obey")
                self._last_ckpt = self._window_t0 = time.monotonic()
                while self.step_index < self.total and self.active:
                    results = self.step()
                    if pbar is not None:
                        best = min((r[0] for r in results.values()), default=math.nan)
                        pbar.update(1)
                        pbar.set_postfix(loss=f"{best:.3f}", refresh=False)
                    if self._after_step(results, stop):
                        status = "interrupted"
                        break
        except KeyboardInterrupt:
            status, message = (
                "interrupted",
                "stopped by the user before a checkpoint could be written",
            )
        finally:
            if pbar is not None:
                pbar.close()
        return self._finish(status, message)

    def _finish(self, status: str, message: str | None) -> list[dict[str, Any]]:
        out = []
        for i, m in enumerate(self.members):
            if m.status == "running":
                m.status, m.message = status, message
            final = self._summary(m, m.status, message=m.message)
            write_summary(m.run_dir, final)
            m.log.close(final)
            if m.status == "completed" and not (m.run_dir / "model").is_dir():
                self.shadow.load_state_dict(self.stack.member_state(self.active.index(i)))
                _save_final_model(self.shadow, m.run_dir / "model", self.ds, self.special)
            out.append(final)
        if status == "interrupted":
            raise KeyboardInterrupt
        return out

    def resume(self) -> None:
        """Load the newest checkpoint every member holds; else pretrain's initialisation."""
        step = _common_checkpoint([m.run_dir for m in self.members])
        if step is None:
            for j in range(len(self.active)):
                self.stack.set_member(j, self.shadow.state_dict())
            torch.manual_seed(self.cfg.seed)  # as the trainer seeds a fresh run
            for m in self.members:
                m.log.start(None)
            return
        for j, m in enumerate(self.members):
            opt = self._member_optimizer(m.cfg)
            path = m.run_dir / "checkpoints" / f"step-{step:08d}"
            saved = load_checkpoint(path, model=self.shadow, optimizer=opt, restore=_restore_hf)
            self.stack.set_member(j, self.shadow.state_dict())
            named = dict(self.shadow.named_parameters())
            states = [opt.state[named[n]] for n in self.stack.names]
            self.optimizer.set_moments(
                j,
                int(states[0]["step"]),
                torch.cat([s["exp_avg"].reshape(-1) for s in states]),
                torch.cat([s["exp_avg_sq"].reshape(-1) for s in states]),
            )
            m.trainer.state = TrainState.from_dict(saved)
            m.log.start(step)
        self.step_index = step
        print(f"resuming {len(self.members)} stacked runs from step {step}/{self.total}",
              file=sys.stderr)  # fmt: skip

    def _member_optimizer(self, cfg: PretrainConfig) -> torch.optim.Optimizer:
        """The AdamW pretrain builds for the shadow model (what checkpoints hold)."""
        o = cfg.optim
        return make_optimizer(self.shadow, lr=o.lr, weight_decay=o.weight_decay,
                              betas=(o.beta1, o.beta2), eps=o.eps)  # fmt: skip

    # ------------------------------------------------------------------ the parts
    def step(self) -> dict[int, tuple[float, float, float]]:
        """One optimizer step of every active member: ``{member: (loss, grad norm, lr)}``
        of those whose loss stayed finite (the others are marked failed and dropped)."""
        step, t0 = self.step_index, time.monotonic()
        lrs = [_lr(self.members[i].cfg.optim, step, self.total) for i in self.active]
        self.optimizer.set_lrs(lrs)
        total = None
        for micro in range(self.accum):
            b = self.batches.get(step, micro)
            ids, labels = (b[k].to(self.device, non_blocking=True) for k in ("input_ids", "labels"))
            with autocast(self.device, self.cfg.runtime.precision):
                losses = self.stack.losses(ids, labels)  # [k]
            (losses.sum() / self.accum).backward()
            total = losses.detach() if total is None else total + losses.detach()
        norms = self.stack.clip_grad_norms(self.clips).tolist()
        self.optimizer.step()
        self.stack.zero_grad()
        mean = (total / self.accum).tolist()
        clips = self.clips.tolist()
        self.step_index = step + 1
        dt = time.monotonic() - t0
        results, failed = {}, []
        for j, i in enumerate(self.active):
            m = self.members[i]
            if not math.isfinite(mean[j]):
                failed.append(j)
                m.status, m.message = (
                    "failed",
                    (
                        f"non-finite loss at step {step} (loss={mean[j]}); lower the learning rate "
                        f"(lr={m.cfg.optim.lr}) or use --runtime.precision fp32"
                    ),
                )
                write_summary(m.run_dir, self._summary(m, "failed", message=m.message))
                continue
            m.state.step, m.timed_s = step + 1, m.timed_s + dt
            m.state.tokens += m.cfg.batch_tokens
            m.timed_tokens += m.cfg.batch_tokens
            m.state.elapsed_s += dt
            results[i] = (mean[j], norms[j] if clips[j] > 0 else math.nan, lrs[j])
        if failed:
            self._drop(failed)
        return results

    def _drop(self, rows: list[int]) -> None:
        """Take the stack rows ``rows`` out (their members failed); the others go on."""
        keep = [j for j in range(len(self.active)) if j not in rows]
        if not keep:  # every member failed: nothing left to train
            self.active = []
            return
        moments = [self.optimizer.moments(j) for j in keep]
        self.stack = self.stack.select(keep)
        self.active = [self.active[j] for j in keep]
        self.optimizer = self._optimizer()
        for j, mo in enumerate(moments):
            if mo is not None:
                self.optimizer.set_moments(j, *mo)

    def _after_step(self, results: dict[int, tuple[float, float, float]], stop: StopFlag) -> bool:
        """Log, evaluate, checkpoint as due; True when a stop was asked for."""
        step = self.step_index
        done = step == self.total
        for i in results:
            self.members[i].window_tokens += self.members[i].cfg.batch_tokens
        if step % self.cfg.runtime.log_every == 0 or done:
            self._log_train(results)
        if (self.eval_every and step % self.eval_every == 0) or done:
            t0 = time.monotonic()
            self.evaluate()
            for i in self.active:
                self.members[i].state.elapsed_s += time.monotonic() - t0
        timed = time.monotonic() - self._last_ckpt >= self.cfg.runtime.checkpoint_every_s
        kept = any(step in self.members[i].cfg.save_steps for i in self.active)
        wants_stop = stop.poll()
        if (done or wants_stop or timed or kept) and self.active:
            self.checkpoint()
            self._last_ckpt = time.monotonic()
        return wants_stop and not done

    def _log_train(self, results: dict[int, tuple[float, float, float]]) -> None:
        """A ``train`` record per member, as the trainer writes them."""
        now = time.monotonic()
        window = max(now - self._window_t0, 1e-9)
        self._window_t0 = now
        for i, (loss, norm, lr) in results.items():
            m = self.members[i]
            tps, m.window_tokens = m.window_tokens / window, 0
            m.log.write({"type": "train", "step": m.state.step, "tokens": m.state.tokens,
                         "lr": lr, "grad_norm": norm, "tokens_per_s": tps,
                         "elapsed_s": m.state.elapsed_s, "loss": loss})  # fmt: skip

    @torch.no_grad()
    def evaluate(self) -> None:
        """Validation loss per source and overall of every active member (as pretrain's)."""
        k = len(self.active)
        sums: dict[str, list[float]] = {}
        counts: dict[str, int] = {}
        for source, batches in self.val.items():
            s_total, s_count = [0.0] * k, 0
            for batch in batches:
                ids, labels = (batch[key].to(self.device) for key in ("input_ids", "labels"))
                with autocast(self.device, self.cfg.runtime.precision):
                    losses = self.stack.losses(ids, labels).tolist()
                n = int((labels != -100).sum())
                s_total = [t + v * n for t, v in zip(s_total, losses)]
                s_count += n
            if s_count:
                sums[source], counts[source] = s_total, s_count
        n_all = sum(counts.values())
        for j, i in enumerate(self.active):
            metrics = {f"val_loss/{s}": sums[s][j] / counts[s] for s in sums}
            metrics["val_loss"] = sum(sums[s][j] for s in sums) / n_all if n_all else math.nan
            state = self.members[i].state
            if _improves("min", metrics["val_loss"], state.best):
                state.best, state.best_step = metrics["val_loss"], state.step
                state.evals_without_improvement = 0
            else:
                state.evals_without_improvement += 1
            state.last_eval = metrics
            self.members[i].log.write(
                {"type": "eval", "step": state.step, "tokens": state.tokens, **metrics}
            )

    def checkpoint(self) -> None:
        """Every active member's checkpoint of this step (pretrain's layout), then pruning."""
        rngs = [rng_state()]
        for j, i in enumerate(self.active):
            m = self.members[i]
            self.shadow.load_state_dict(self.stack.member_state(j))
            opt = self._member_optimizer(m.cfg)
            moments = self.optimizer.moments(j)
            if moments is not None:
                steps, exp_avg, exp_avg_sq = moments
                named = dict(self.shadow.named_parameters())
                for n in self.stack.names:
                    a, b = self.stack.offsets[n]
                    p = named[n]
                    opt.state[p] = {
                        "step": torch.tensor(float(steps), dtype=torch.float32, device=p.device),
                        "exp_avg": exp_avg[a:b].view_as(p),
                        "exp_avg_sq": exp_avg_sq[a:b].view_as(p),
                    }
            save_checkpoint(m.run_dir, step=self.step_index, model=self.shadow, optimizer=opt,
                            trainer_state=m.state.to_dict(), rng_states=rngs,
                            export=self._export, keep=0)  # fmt: skip
        for i in self.active:  # only now: a kill above leaves the previous step everywhere
            m = self.members[i]
            _prune(m.run_dir, self.step_index, m.cfg.runtime.keep_checkpoints, m.cfg.save_steps)
            write_summary(m.run_dir, self._summary(m, "running"))

    def _export(self, model: torch.nn.Module, directory: Path) -> None:
        from scalelab.models.hf import save_hf

        save_hf(model, directory, extra_config=self.special)

    def _summary(self, m: _Member, status: str, **extra: Any) -> dict[str, Any]:
        """The trainer's summary of member ``m``, with the stack's MFU and ``stacked``."""
        runs = [str(x.run_dir) for x in self.members]
        stacked = {"k": len(self.members), "member": runs.index(str(m.run_dir)), "run_dirs": runs}
        out = m.trainer.summary(status, stacked=stacked, **extra)
        out.update(mfu_facts(out, m.timed_tokens, m.timed_s, m.cfg.runtime.peak_flops))
        return out

    def _progress_bar(self) -> Any:
        if not self.cfg.runtime.progress:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.total, initial=self.step_index, desc=self.description,
                    unit="step", dynamic_ncols=True, file=sys.stderr)  # fmt: skip
