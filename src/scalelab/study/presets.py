"""Ready-made studies: ``scalelab demo`` (the README's main command) and larger presets.

- ``default``: the whole study — data preparation included — in under 10 minutes on a
  2-core CPU (measured figures in the README): an IsoFLOP design of 3 compute levels x 5
  sizes spanning 1.5 decades of non-embedding N, plus one held-out rung at twice the
  largest budget, which the fitted law predicts.
- ``medium``: about 30 minutes on the same machine; more levels and sizes, more tokens, a
  tighter fit, and the downstream section (fine-tuning every rung on a built-in task).
  Its largest fitted rung trains 1.33 epochs of the built-in corpus: it allows up to 1.5
  (``max_epochs``), and its plan and report say so.
- ``gpu``: a study for one modern GPU (hours): 4 levels x 6 sizes of 0.8M to 163M
  non-embedding parameters at sequence 1024, bf16, ``torch.compile``, on a corpus the
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
            # c3-n0 trains 14.2M tokens, 1.33 epochs of the 10.7M-token built-in corpus:
            # allowed (the plan and the report say so) rather than resized here.
            max_epochs=1.5,
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


def demo_plan(name: str, dataset: Path | None = None) -> tuple[PlanConfig, int | None]:
    """The preset's plan for this corpus and the corpus's training tokens: the built-in
    corpus prepared (or reused) for ``default``/``medium``; for ``gpu`` the prepared
    ``dataset`` (required), the plan sized to it (:func:`fit_to_corpus`)."""
    from scalelab.data.prepare import prepare
    from scalelab.study.plan import dataset_train_tokens

    plan = preset(name)
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
        )
    )


def run_demo(
    name: str = "default",
    *,
    out: Path | None = None,
    workers: int = 0,
    dataset: Path | None = None,
) -> int:
    """Plan (once), run, fit and report a preset study (on ``dataset``, a prepared corpus,
    instead of the built-in one if given; the gpu preset needs one)."""
    from scalelab.study.plan import make_plan
    from scalelab.study.run import run_and_fit
    from scalelab.study.study import Study

    out = (
        Path(out)
        if out is not None
        else Path("runs") / ("demo" if name == "default" else f"demo-{name}")
    )
    if (out / "study.yaml").is_file() and dataset is None and name != "gpu":
        plan, unique = preset(name), None  # a study to resume: its data is prepared
    else:
        plan, unique = demo_plan(name, dataset)
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
