"""Ready-made studies: ``scalelab demo`` (the README's main command) and larger presets.

- ``default``: the whole study — data preparation included — in about 10 minutes on a
  2-core CPU (measured figures in the README): an IsoFLOP design of 3 compute levels x 5
  sizes spanning 1.5 decades of non-embedding N, plus one held-out rung at twice the
  largest budget, which the fitted law predicts.
- ``medium``: about an hour on the same machine; more levels and sizes, more tokens, a
  tighter fit, and the downstream section (fine-tuning every rung on a built-in task).
- ``gpu``: a study for one modern GPU (hours): 4 levels x 6 sizes of 2e6 to 3e8 parameters
  at sequence 1024, bf16, ``torch.compile``.

Rerunning ``scalelab demo`` resumes an interrupted study, or finds everything done and
only re-renders the report.
"""

from __future__ import annotations

from pathlib import Path

from scalelab.data.config import DataConfig
from scalelab.errors import UserError
from scalelab.study.fit import StudyFitConfig
from scalelab.study.plan import PlanConfig
from scalelab.study.policy import HyperPolicy
from scalelab.study.run import RunConfig
from scalelab.train.loop import RuntimeConfig
from scalelab.train.pretrain import PretrainConfig


def preset(name: str) -> PlanConfig:
    if name == "default":
        base = PretrainConfig(
            data=DataConfig(vocab_size=4096),
            seq_len=128,
            eval_tokens=16_384,
            runtime=RuntimeConfig(precision="bf16", checkpoint_every_s=60.0),
        )
        return PlanConfig(
            design="isoflop",
            budget_flops=6e12,
            n_budgets=3,
            budget_ratio=3.0,
            sizes_per_budget=5,
            size_spread=10.0,
            holdout=1,
            holdout_factor=2.0,
            base=base,
            policy=HyperPolicy(),
        )
    if name == "medium":
        base = PretrainConfig(
            data=DataConfig(vocab_size=8192),
            seq_len=256,
            eval_tokens=32_768,
            runtime=RuntimeConfig(precision="bf16", checkpoint_every_s=120.0),
        )
        return PlanConfig(
            design="isoflop",
            budget_flops=6e13,
            n_budgets=4,
            budget_ratio=3.0,
            sizes_per_budget=6,
            size_spread=16.0,
            holdout=1,
            holdout_factor=2.0,
            base=base,
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


def run_demo(name: str = "default", *, out: Path | None = None, workers: int = 0) -> int:
    """Plan (once), run, fit and report a preset study."""
    from scalelab.study.stages import make_plan, run_and_fit
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
    return run_and_fit(study, RunConfig(workers=workers), StudyFitConfig())
