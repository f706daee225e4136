"""The pretraining stage: one decoder LM or BERT-style encoder, trained on a prepared corpus.

``pretrain(cfg, run_dir)`` prepares (or reuses) the dataset, builds the model, trains it
with the one loop and leaves a self-describing run directory::

    run_dir/config.yaml          resolved config (commented)
    run_dir/metrics.jsonl        one JSON object per logged step / evaluation
    run_dir/summary.json         N by group, tokens, FLOPs by convention, losses, status ...
    run_dir/checkpoints/step-*/  HF layout + optimizer/RNG/trainer state (last k kept)
    run_dir/model/               the final model + tokenizer, loadable by AutoModel*/AutoTokenizer
    run_dir/tensorboard/         TensorBoard events (when the extra is installed)

Running it again on the same directory resumes it (or only rewrites nothing if done).
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from scalelab.config import Config, read_config_file
from scalelab.data.config import Sampling
from scalelab.data.prepare import DataConfig
from scalelab.errors import UserError
from scalelab.models.config import ModelConfig
from scalelab.train.config import OptimConfig, RuntimeConfig

Arch = Literal["llama", "gpt2", "bert"]
#: The sampling of a run saved before ``sampling`` existed (before scalelab 0.3.0).
LEGACY_SAMPLING: Sampling = "iid"


@dataclass(kw_only=True)
class PretrainConfig(Config):
    """Pretraining one model. Durations and batch sizes are in tokens."""

    arch: Arch = "llama"
    """Model family: llama (RMSNorm, SwiGLU, rotary), gpt2, or bert (masked LM + NSP)."""
    size: str | None = "tiny"
    """Named size from the registry (see `scalelab.models.sizes`); ignored when params is set."""
    params: float | None = None
    """Target non-embedding parameter count; the size dial turns it into a shape."""
    model: ModelConfig | None = None
    """Explicit model shape (overrides size/params); filled in by resolution and saved."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus to prepare (reused when already prepared with the same config)."""
    dataset: Path | None = None
    """A prepared dataset directory to use instead of preparing `data`."""
    data_root: Path = Path("data")
    """Where prepared datasets live (one directory per config hash)."""
    seq_len: int = 256
    """Training sequence length in tokens."""
    tokens: int = 2_000_000
    """Training duration in tokens (rounded up to whole optimizer steps)."""
    batch_tokens: int = 4096
    """Tokens per optimizer step, all ranks and accumulation steps together."""
    micro_batch_size: int = 0
    """Sequences per forward pass per rank (0: the whole per-rank batch at once)."""
    eval_every_tokens: int = 0
    """Evaluate every this many tokens (0: `evals` times per run)."""
    evals: int = 10
    """Evaluations per run when eval_every_tokens is 0 (the last one is at the end)."""
    eval_tokens: int = 65_536
    """Validation tokens per source (fixed windows from the start of each validation shard)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and learning-rate schedule."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Device, precision, compile, checkpoints, logging."""
    seed: int = 0
    """One seed for model init, data sampling and dropout."""
    sampling: Sampling = "epoch"
    """How training windows are drawn: epoch (every window of the training split once per epoch, in a seeded order) or iid (with replacement, as scalelab did before 0.3.0). A run keeps the sampling it started with when resumed; a saved config without this key is iid. bert pairs are always drawn i.i.d."""

    save_steps: tuple[int, ...] = ()
    """Also checkpoint at these optimizer steps and keep those checkpoints (a WSD trunk's branch points)."""
    init_from: Path | None = None
    """Start from this checkpoint of another run (a WSD trunk's step-XXXXXXXX directory): weights, optimizer, step and RNG; used only while the run has no checkpoint of its own."""

    def validate(self) -> None:
        if self.seq_len < 8:
            raise UserError(f"seq_len must be at least 8, got {self.seq_len}")
        if self.tokens <= 0 or self.batch_tokens <= 0:
            raise UserError("tokens and batch_tokens must be positive")
        if self.batch_tokens % self.seq_len:
            raise UserError(
                f"batch_tokens ({self.batch_tokens}) must be a multiple of seq_len ({self.seq_len})"
            )
        if self.params is not None and not self.params > 0:
            raise UserError(f"params must be positive, got {self.params}")
        if self.size is None and self.params is None and self.model is None:
            raise UserError(
                "give a model size (--size), a parameter target (--params) or a model shape"
            )
        if self.model is None and self.params is None:
            from scalelab.models.sizes import resolve_size

            resolve_size(
                self.size, arch=self.arch
            )  # an unknown name fails now, not after data prep

    @property
    def steps(self) -> int:
        return math.ceil(self.tokens / self.batch_tokens)


# Fields that may change between runs of the same directory without changing the result.
# ``save_steps`` only keeps checkpoints; ``init_from`` names where a branch's trunk lies
# (a moved study still resumes).
_RUNTIME_KEYS = ("runtime", "dataset", "data_root", "save_steps", "init_from")


def resolve(cfg: PretrainConfig, vocab_size: int) -> PretrainConfig:
    """Fill in the model shape from size/params and the dataset's vocabulary."""
    from scalelab.models.sizes import resolve_size

    if cfg.model is not None:
        model = cfg.model.replace(
            arch=cfg.arch,
            vocab_size=vocab_size,
            max_seq_len=max(cfg.model.max_seq_len, cfg.seq_len),
        )
    else:
        shape = resolve_size(cfg.params if cfg.params is not None else cfg.size, arch=cfg.arch)
        model = ModelConfig.from_shape(
            shape, arch=cfg.arch, vocab_size=vocab_size, max_seq_len=cfg.seq_len
        )
    return cfg.replace(model=model.resolved())


def _check_same(saved: PretrainConfig, new: PretrainConfig, run_dir: Path) -> None:
    a = {k: v for k, v in saved.to_dict().items() if k not in _RUNTIME_KEYS}
    b = {k: v for k, v in new.to_dict().items() if k not in _RUNTIME_KEYS}
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diff:
        raise UserError(
            f"{run_dir} already holds a run with a different config (differs in: {', '.join(diff)}); "
            "use a new run directory, or run it without those options to resume it"
        )


def load_run_config(run_dir: Path) -> PretrainConfig | None:
    """The saved config of a run directory (None if there is none). A config saved before
    ``sampling`` existed has no such key: that run drew its windows i.i.d. and goes on so."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    data = read_config_file(path)
    data.setdefault("sampling", LEGACY_SAMPLING)
    return PretrainConfig.from_dict(data, where=f"{path}: ")


def _keep_sampling(saved: PretrainConfig, cfg: PretrainConfig, run_dir: Path) -> PretrainConfig:
    """``cfg`` with the sampling the run started with: changing it mid-run would change
    the data stream of the steps already trained (a note says so when they differ)."""
    if saved.sampling == cfg.sampling:
        return cfg
    print(
        f"note: {run_dir} was started with {saved.sampling} sampling and resumes with it",
        file=sys.stderr,
    )
    return cfg.replace(sampling=saved.sampling)


def pretrain(
    cfg: PretrainConfig, run_dir: str | Path, *, resume_config: bool = True
) -> dict[str, Any]:
    """Train (or resume) one model into ``run_dir``; return its summary."""
    import torch

    from scalelab.data.prepare import open_dataset, prepare
    from scalelab.models import accounting
    from scalelab.models.build import build_model, maybe_compile
    from scalelab.models.hf import save_hf
    from scalelab.train import distributed as ddp
    from scalelab.train.trainer import Evaluation, ModelIO, Trainer, TrainJob
    from scalelab.utils.io import ensure_dir

    run_dir = Path(run_dir)
    dataset_dir = Path(cfg.dataset) if cfg.dataset else prepare(cfg.data, root=cfg.data_root)
    ds = open_dataset(dataset_dir)
    if cfg.arch == "bert" and ds.manifest["tokenizer"]["kind"] != "wordpiece":
        raise UserError("--arch bert needs a WordPiece dataset: set --data.tokenizer wordpiece")
    cfg = resolve(cfg, ds.vocab_size)
    saved = load_run_config(run_dir)
    if saved is not None:
        cfg = _keep_sampling(saved, cfg, run_dir)
        _check_same(saved, cfg, run_dir)
    ensure_dir(run_dir, "run directory")
    cfg.to_yaml(run_dir / "config.yaml")
    micro, grad_accum = _micro_batches(cfg, int(os.environ.get("WORLD_SIZE", "1")))
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    _runtime_model_options(model, cfg.runtime)
    batches, val = _batches(cfg, ds, micro, grad_accum)
    special = {f"{k}_token_id": v for k, v in ds.special_ids.items() if k in ("bos", "eos", "pad")}
    eval_every = (
        max(1, round(cfg.eval_every_tokens / cfg.batch_tokens))
        if cfg.eval_every_tokens
        else max(1, cfg.steps // max(1, cfg.evals))
    )
    counts = accounting.param_counts(cfg.model)
    job = TrainJob(
        run_dir=run_dir,
        model=model,
        batches=batches,
        total_steps=cfg.steps,
        grad_accum=grad_accum,
        optim=cfg.optim,
        runtime=cfg.runtime,
        seed=cfg.seed,
        tokens_per_step=cfg.batch_tokens,
        unique_tokens=batches.unique_tokens,
        keep_steps=tuple(cfg.save_steps),
        init_from=Path(cfg.init_from) if cfg.init_from else None,
        evaluation=Evaluation(fn=_validation_loss(val, cfg.runtime.precision), every=eval_every),
        io=ModelIO(
            export=lambda m, d: save_hf(m, d, extra_config=special),
            restore=_restore_hf,
            compile_fn=maybe_compile,
        ),
        flops_per_token={
            c: accounting.flops_per_token(cfg.model, c, seq_len=cfg.seq_len)
            for c in accounting.FLOP_CONVENTIONS
        },
        summary=_static_summary(cfg, counts, dataset_dir, ds),
        description=f"{cfg.arch} {counts.non_embedding / 1e6:.2f}M",
    )
    summary = Trainer(job).fit()
    is_main = ddp.setup(cfg.runtime.device).is_main
    ddp.teardown()
    if summary["status"] == "completed" and is_main and not (run_dir / "model").is_dir():
        # Under FSDP the trained model is sharded; rank 0 kept a full copy of it.
        _save_final_model(ddp.full_model(model), run_dir / "model", ds, special)
    return summary


def _micro_batches(cfg: PretrainConfig, world: int) -> tuple[int, int]:
    """``(sequences per forward pass, accumulation steps)`` of each of ``world`` ranks."""
    per_rank = cfg.batch_tokens // cfg.seq_len
    if per_rank % world:
        raise UserError(f"batch of {per_rank} sequences does not split over {world} processes")
    per_rank //= world
    micro = cfg.micro_batch_size or per_rank
    if per_rank % micro:
        raise UserError(
            f"micro_batch_size {micro} must divide the per-process batch of {per_rank} sequences"
        )
    return micro, per_rank // micro


def _batches(cfg: PretrainConfig, ds: Any, micro: int, accum: int) -> tuple[Any, dict[str, list]]:
    """The training batch source and the fixed validation batches per source."""
    from scalelab.data.batches import DecoderBatches, EncoderBatches, validation_batches

    if cfg.arch == "bert":
        batches = EncoderBatches(ds, seq_len=cfg.seq_len, batch_size=micro, seed=cfg.seed)
        return batches, batches.validation(max_tokens_per_source=cfg.eval_tokens)
    batches = DecoderBatches(
        ds,
        seq_len=cfg.seq_len,
        batch_size=micro,
        seed=cfg.seed,
        sampling=cfg.sampling,
        accum=accum,
    )
    val = validation_batches(
        ds, seq_len=cfg.seq_len, batch_size=micro, max_tokens_per_source=cfg.eval_tokens
    )
    return batches, val


def _validation_loss(val: dict[str, list], precision: str) -> Any:
    """The trainer's evaluation: token-weighted validation loss per source and overall
    (the masked-LM loss for BERT)."""
    from scalelab.train.step import autocast

    def evaluate(m: Any) -> dict[str, float]:
        device = next(m.parameters()).device
        out: dict[str, float] = {}
        total, count = 0.0, 0
        for source, source_batches in val.items():
            s_total, s_count = 0.0, 0
            for batch in source_batches:
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, precision):
                    res = m(**batch)
                key = "mlm_loss" if "mlm_loss" in res else "loss"
                n = int((batch["labels"] != -100).sum())
                s_total += float(res[key]) * n
                s_count += n
            if s_count:
                out[f"val_loss/{source}"] = s_total / s_count
                total, count = total + s_total, count + s_count
        out["val_loss"] = total / count if count else math.nan
        return out

    return evaluate


def _static_summary(cfg: PretrainConfig, counts: Any, dataset_dir: Path, ds: Any) -> dict[str, Any]:
    """Facts of the run merged into summary.json."""
    from scalelab.train.mfu import model_flops_per_token
    from scalelab.utils.env import versions

    return {
        "kind": "pretrain",
        "arch": cfg.arch,
        "shape": cfg.model.shape(),
        "params": counts.to_dict(),
        "N": counts.non_embedding,
        "seq_len": cfg.seq_len,
        "batch_tokens": cfg.batch_tokens,
        "lr": cfg.optim.lr,
        "dataset": str(dataset_dir),
        "dataset_hash": ds.manifest.get("content_hash"),
        "config_hash": cfg.hash(exclude=_RUNTIME_KEYS),
        # The trainer turns this into the MFU (scalelab.train.mfu: PaLM's 6N + 12LHQT).
        "mfu_flops_per_token": model_flops_per_token(cfg.model, cfg.seq_len),
        "versions": versions(),
        **_branch_facts(cfg),
    }


def _branch_facts(cfg: PretrainConfig) -> dict[str, Any]:
    """``branch_of``: the checkpoint a WSD branch started from, and its step."""
    if cfg.init_from is None:
        return {}
    path = Path(cfg.init_from)
    step = int(path.name.removeprefix("step-")) if path.name.startswith("step-") else None
    return {"branch_of": {"checkpoint": str(path), "step": step}}


def _runtime_model_options(model: Any, runtime: RuntimeConfig) -> None:
    """Apply the runtime options that live on the model: activation checkpointing."""
    if not runtime.activation_checkpointing:
        return
    if hasattr(model, "activation_checkpointing"):  # scalelab's decoder
        model.activation_checkpointing = True
    else:  # BERT: a Hugging Face model
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _save_final_model(model: Any, final_dir: Path, ds: Any, special: dict[str, int]) -> None:
    """``RUN/model/``: the trained model with its bos/eos/pad ids (as the checkpoints have
    them) and the tokenizer, written atomically."""
    from scalelab.models.hf import save_hf
    from scalelab.utils.io import atomic_dir

    with atomic_dir(final_dir) as tmp:
        save_hf(model, tmp, extra_config=special)
        for f in Path(ds.tokenizer_path).iterdir():
            if f.is_file():
                shutil.copy2(f, tmp / f.name)


def _restore_hf(model, directory: Path) -> None:
    """Load a checkpoint's Hugging Face weights back into the training module."""
    from scalelab.models.hf import load_hf

    loaded, _ = load_hf(directory)
    model.load_state_dict(loaded.state_dict())
