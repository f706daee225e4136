"""Ready-made studies: ``scalelab demo`` (the README's main command) and larger presets.

- ``default``: the whole study — data preparation included — in under 10 minutes on a
  2-core CPU (measured figures in the README): a WSD grid (Hägele et al. 2024) of 6 sizes
  (2-5 layers, 1.5 decades of non-embedding N) x 4 token counts, 24 (N, D) points from 6
  warmup-stable trunks and their cool-down branches, plus one held-out rung at the next
  size up, trained from scratch, which the fitted law predicts.
- ``medium``: about 30 minutes on the same machine: 7 sizes x 5 token counts (35 points,
  1.8 decades), and the downstream section (the most-trained branch of every size and the
  held-out rung fine-tuned on a built-in task).
- ``gpu``: a study for one modern GPU (hours): 4 levels x 6 sizes of 0.09M to 96M
  non-embedding parameters (levels in the full Appendix F count) at sequence 1024, bf16, ``torch.compile``, on a corpus the
  user brings (``--dataset``): its budget is lowered until no rung trains more than one
  epoch of it (:func:`fit_to_corpus`); the built-in corpus is far too small.

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
from scalelab.train.config import OptimConfig, RuntimeConfig
from scalelab.train.pretrain import PretrainConfig


def preset(name: str, seed: int = 0) -> PlanConfig:
    """The preset's plan; ``seed`` (the rungs' init and data order) 0 unless given: the
    presets were designed on seed 1 and are reported on seeds 0 and 2 (README)."""
    plan = _preset(name)
    return plan.replace(base=plan.base.replace(seed=seed)) if seed else plan


def _preset(name: str) -> PlanConfig:
    presets = {"default": _default, "medium": _medium, "gpu": _gpu}
    if name not in presets:
        raise UserError(f"unknown preset {name!r}: use default, medium or gpu")
    return presets[name]()


def _default() -> PlanConfig:
    # A WSD grid (Hägele et al. 2024): 6 sizes of 6k-190k non-embedding parameters (1.5
    # decades; aspect ratio 12 gives every size 2-5 layers) x 4 token counts of
    # 0.25M-2M, a rectangle in log N x log D that lies on both sides of the
    # compute-optimal line; each size trains one warmup-stable trunk and its 4 points
    # are 20% cool-downs (1-sqrt, Hägele et al.'s better shape) branched off it. Compute
    # is counted in full (Hoffmann et al. 2022 App. F), which is what wall time follows
    # at this scale. A 1024-token vocabulary keeps the embeddings from dominating; fp32
    # ran 2.3-3.4x faster than bf16 autocast at these widths (d_model 16-80) here.
    base = PretrainConfig(
        data=DataConfig(vocab_size=1024),
        seq_len=128,
        eval_tokens=8192,
        evals=4,
        optim=OptimConfig(decay_shape="1-sqrt"),
        runtime=RuntimeConfig(precision="fp32", checkpoint_every_s=60.0),
    )
    return PlanConfig(
        design="grid",
        sizes=(6e3, 1.2e4, 2.4e4, 4.8e4, 9.6e4, 1.9e5),
        tokens=(2.5e5, 5e5, 1e6, 2e6),
        cooldown=0.2,
        aspect_ratio=12.0,
        flops_convention="chinchilla",
        holdout=1,
        # The next size up (2x the largest N) at 1.25x the largest fitted compute, trained
        # from scratch with the branches' schedule shape: fixed before anything ran.
        holdout_n=3.8e5,
        holdout_d=1.5e6,
        base=base,
        # Learning rate: lr_opt = 0.2514 N^-0.3391 (95% interval on the exponent
        # [-0.615, -0.063]), measured by `scalelab study sweep` on seed 1 (the design
        # seed; default_lr_sweep.json, drawn in the report): 4 of these sizes x 6 rates
        # over 32x at 0.6M tokens, this schedule, warmup 117 steps. DeepSeek's law
        # clipped at 1e-2 gave every rung 1e-2. 1024 tokens per step for every rung
        # (DeepSeek's batch law, extrapolated, would give the largest family 2048 and its
        # shortest branch 146 steps).
        policy=HyperPolicy(
            rule="fitted",
            lr_coef=0.2514,
            lr_exponent=-0.3391,
            lr_basis="N",
            lr_range=(1e-4, 0.02),
            batch_range=(1024, 1024),
        ),
        sweep="builtin:default",
    )


def _medium() -> PlanConfig:
    # The default's design, wider and longer: 7 sizes of 6k-380k non-embedding parameters
    # (1.8 decades, 2-6 layers) x 5 token counts of 0.3M-4.8M (35 points, 0.45 epochs at
    # most), held out: the next size up (760k) at 2.4M tokens.
    base = _default().base.replace(eval_tokens=16_384, evals=6)
    return _default().replace(
        sizes=(6e3, 1.2e4, 2.4e4, 4.8e4, 9.6e4, 1.9e5, 3.8e5),
        tokens=(3e5, 6e5, 1.2e6, 2.4e6, 4.8e6),
        holdout_n=7.6e5,
        holdout_d=3.6e6,
        base=base.replace(runtime=base.runtime.replace(checkpoint_every_s=120.0)),
    )


def _gpu() -> PlanConfig:
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


def fit_to_corpus(plan: PlanConfig, unique_tokens: int, *, name: str = "gpu") -> PlanConfig:
    """``plan`` with its budget lowered (2 significant digits) until no rung trains more
    than ``max_epochs`` epochs of ``unique_tokens`` training tokens; unchanged if none
    does. A corpus too small even at the design's smallest budget is a one-line error
    saying how many tokens it needs."""
    from scalelab.study.plan import min_budget_flops, plan_rungs, plan_vocab_size, round_sig
    from scalelab.study.policy import epochs

    vocab, budget = plan_vocab_size(plan), float(plan.budget_flops or 0)

    def fits(b: float) -> bool:
        rungs = plan_rungs(plan, vocab_size=vocab, budget_flops=b)
        return max(epochs(r.tokens, unique_tokens) for r in rungs) <= plan.max_epochs

    if fits(budget):
        return plan
    lo = round_sig(min_budget_flops(plan, vocab), 2, up=True)
    if not fits(lo):
        need = max(r.tokens for r in plan_rungs(plan, vocab_size=vocab, budget_flops=lo))
        raise UserError(corpus_needed(name, int(need / plan.max_epochs), unique_tokens))
    hi = budget
    while hi / lo > 1.01:  # the rungs' tokens grow with the budget: bisect in log budget
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    sized = round_sig(lo, 2, up=False)
    return plan.replace(budget_flops=sized if fits(sized) else lo)


def corpus_needed(name: str, need: int, have: int | None = None) -> str:
    """The one-line refusal of a corpus too small for a preset, saying what to bring."""
    had = f" (this one has {have:,})" if have else " (the built-in corpus is far smaller)"
    return (
        f"the {name} preset needs >= {need:,} tokens of training data{had}; prepare a corpus "
        "with `scalelab data prepare --sources ... --vocab-size 32768` and pass it with "
        f"`scalelab demo --preset {name} --dataset DIR`"
    )


def _gpu_need() -> int:
    """Training tokens the gpu preset needs at its smallest budget (one epoch)."""
    from scalelab.study.plan import min_budget_flops, plan_rungs, round_sig

    plan = preset("gpu")
    low = round_sig(min_budget_flops(plan, plan.base.data.vocab_size), 2, up=True)
    rungs = plan_rungs(plan, vocab_size=plan.base.data.vocab_size, budget_flops=low)
    return int(max(r.tokens for r in rungs) / plan.max_epochs)


def demo_plan(
    name: str, dataset: Path | None = None, seed: int = 0
) -> tuple[PlanConfig, int | None]:
    """The preset's plan for this corpus and the corpus's training tokens: the built-in
    corpus prepared (or reused) for ``default``/``medium``; for ``gpu`` the prepared
    ``dataset`` (required), the plan sized to it (:func:`fit_to_corpus`)."""
    from scalelab.data.prepare import prepare
    from scalelab.study.plan import dataset_train_tokens

    plan = preset(name, seed)
    if dataset is None and name == "gpu":
        raise UserError(corpus_needed(name, _gpu_need()))
    if dataset is not None:
        plan = plan.replace(base=plan.base.replace(dataset=Path(dataset).resolve()))
    where = plan.base.dataset or prepare(plan.base.data, root=plan.base.data_root)
    unique = dataset_train_tokens(where)
    if name == "gpu" and unique:
        plan = fit_to_corpus(plan, unique, name=name)
    return plan, unique


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
        ),
        rungs=_longest_branches(preset(name)),
    )


def _longest_branches(plan: PlanConfig) -> tuple[str, ...]:
    """A WSD plan's most-trained branch of every size and its held-out rungs (the models
    whose downstream scaling the report fits); () for other designs: every rung."""
    from scalelab.study.plan import Rung, plan_rungs

    if not plan.cooldown:
        return ()
    rungs = plan_rungs(plan, vocab_size=plan.base.data.vocab_size)
    longest: dict[str, Rung] = {}
    for r in rungs:
        if r.trunk and (r.trunk not in longest or r.tokens > longest[r.trunk].tokens):
            longest[r.trunk] = r
    held = [r.id for r in rungs if r.role == "holdout"]
    return tuple(r.id for r in longest.values()) + tuple(held)


def run_demo(
    name: str = "default",
    *,
    out: Path | None = None,
    workers: int = 0,
    dataset: Path | None = None,
    seed: int = 0,
) -> int:
    """Plan (once), run, fit and report a preset study (on ``dataset``, a prepared corpus,
    instead of the built-in one if given; the gpu preset needs one) with ``seed``."""
    from scalelab.study.plan import make_plan
    from scalelab.study.run import run_and_fit
    from scalelab.study.study import Study

    out = (
        Path(out)
        if out is not None
        else Path("runs")
        / (("demo" if name == "default" else f"demo-{name}") + (f"-seed{seed}" if seed else ""))
    )
    if (out / "study.yaml").is_file() and dataset is None and name != "gpu":
        plan, unique = preset(name, seed), None  # a study to resume: its data is prepared
    else:
        plan, unique = demo_plan(name, dataset, seed)
    if (out / "study.yaml").is_file():
        study = Study.load(out)
        if not study.same_plan(plan):
            raise UserError(
                f"{out} holds a different study; pass --out to choose another directory"
            )
    else:
        rungs, facts = make_plan(plan, probe=False, workers=workers, unique_tokens=unique)
        study = Study.create(out, plan, rungs, facts)
    note = study.repetition_note()
    if note:
        print(f"note: {note}")
    code = run_and_fit(study, RunConfig(workers=workers), StudyFitConfig())
    ft = downstream(name)
    if ft is None or code != 0:
        return code
    from scalelab.study.downstream import finetune_and_fit

    return finetune_and_fit(study, dataclasses.replace(ft, workers=workers))
