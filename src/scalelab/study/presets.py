"""Ready-made studies: ``scalelab demo`` (the README's main command) and larger presets.

- ``default``: the whole study — data preparation included — in under 10 minutes on a
  2-core CPU (measured figures in the README): an IsoFLOP design of 3 compute levels x 5
  sizes spanning 1.5 decades of non-embedding N, plus one held-out rung at twice the
  largest budget, which the fitted law predicts.
- ``medium``: about 30 minutes on the same machine; more levels and sizes, more tokens, a
  tighter fit, and the downstream section (fine-tuning every rung on a built-in task).
- ``gpu``: a study for one modern GPU (hours): 4 levels x 6 sizes of 0.8M to 163M
  non-embedding parameters at sequence 1024, bf16, ``torch.compile``.

Rerunning ``scalelab demo`` resumes an interrupted study, or finds everything done and
only re-renders the report.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from scalelab.data.config import DataConfig
from scalelab.errors import UserError
from scalelab.finetune.methods import MethodConfig
from scalelab.finetune.tasks import TaskConfig
from scalelab.study.downstream import StudyFinetuneConfig, rung_finetune_defaults
from scalelab.study.fit import StudyFitConfig
from scalelab.study.plan import PlanConfig
from scalelab.study.policy import HyperPolicy
from scalelab.study.run import RunConfig
from scalelab.train.config import RuntimeConfig
from scalelab.train.pretrain import PretrainConfig


def preset(name: str) -> PlanConfig:
    if name == "default":
        # CPU scale: a 1024-token vocabulary keeps the embeddings from dominating every model,
        # aspect ratio 32 gives the small sizes 1-2 layers, 1k-token batches give every rung
        # a few hundred optimizer steps (the DeepSeek policy's batch at these budgets).
        base = PretrainConfig(
            data=DataConfig(vocab_size=1024),
            seq_len=128,
            eval_tokens=8192,
            evals=6,
            runtime=RuntimeConfig(precision="bf16", checkpoint_every_s=60.0),
        )
        return PlanConfig(
            design="isoflop",
            budget_flops=2.2e12,
            n_budgets=3,
            budget_ratio=3.0,
            sizes_per_budget=5,
            size_spread=10.0,
            aspect_ratio=32.0,
            # Measured here: the loss-optimal size at these budgets sits near 50-100 tokens per
            # parameter (a 20-token prior left every IsoFLOP minimum at the smallest size).
            prior_tokens_per_param=30.0,
            holdout=1,
            holdout_factor=2.0,
            base=base,
            policy=HyperPolicy(batch_range=(1024, 1_048_576)),
        )
    if name == "medium":
        # The default's CPU-scale choices, with 4 compute levels over 64x and 6 sizes each.
        base = PretrainConfig(
            data=DataConfig(vocab_size=1024),
            seq_len=128,
            eval_tokens=16_384,
            evals=8,
            runtime=RuntimeConfig(precision="bf16", checkpoint_every_s=120.0),
        )
        return PlanConfig(
            design="isoflop",
            budget_flops=3e13,
            n_budgets=4,
            budget_ratio=4.0,
            sizes_per_budget=6,
            size_spread=8.0,
            aspect_ratio=32.0,
            prior_tokens_per_param=30.0,
            holdout=1,
            holdout_factor=2.0,
            base=base,
            policy=HyperPolicy(batch_range=(1024, 1_048_576)),
        )
    if name == "gpu":
        base = PretrainConfig(
            data=DataConfig(vocab_size=32768),
            seq_len=1024,
            eval_tokens=262_144,
            runtime=RuntimeConfig(
                device="cuda", precision="bf16", compile=True, checkpoint_every_s=600.0
            ),
        )
        return PlanConfig(
            design="isoflop",
            budget_flops=3e18,
            n_budgets=4,
            budget_ratio=4.0,
            sizes_per_budget=6,
            size_spread=16.0,
            holdout=1,
            holdout_factor=2.0,
            base=base,
        )
    raise UserError(f"unknown preset {name!r}: use default, medium or gpu")


def downstream(name: str) -> StudyFinetuneConfig | None:
    """The downstream step of a preset: every rung fine-tuned on a built-in task, or None."""
    if name == "default":
        return None  # the 10-minute budget has no room for it: see --preset medium
    # wiki-topics: 11-way topic classification of Wikipedia lead sections (the pretraining
    # corpus includes the same articles' text, without labels). On a CPU 2,000 training
    # examples keep the step to minutes; full fine-tuning, as the models are small.
    rung = rung_finetune_defaults()
    task = TaskConfig(task="wiki-topics", max_examples=2000 if name == "medium" else None)
    return StudyFinetuneConfig(
        finetune=rung.replace(
            task=task, method=MethodConfig(method="full"), epochs=3.0, max_length=128
        )
    )


def run_demo(name: str = "default", *, out: Path | None = None, workers: int = 0) -> int:
    """Plan (once), run, fit and report a preset study."""
    from scalelab.study.plan import make_plan
    from scalelab.study.run import run_and_fit
    from scalelab.study.study import Study

    out = (
        Path(out)
        if out is not None
        else Path("runs") / ("demo" if name == "default" else f"demo-{name}")
    )
    plan = preset(name)
    if (out / "study.yaml").is_file():
        study = Study.load(out)
        if study.plan.to_dict() != plan.to_dict():
            raise UserError(
                f"{out} holds a different study; pass --out to choose another directory"
            )
    else:
        rungs, facts = make_plan(plan, probe=False, workers=workers)
        study = Study.create(out, plan, rungs, facts)
    code = run_and_fit(study, RunConfig(workers=workers), StudyFitConfig())
    ft = downstream(name)
    if ft is None or code != 0:
        return code
    from scalelab.study.downstream import finetune_and_fit

    return finetune_and_fit(study, dataclasses.replace(ft, workers=workers))
