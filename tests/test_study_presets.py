"""The preset studies meet what the README promises of them, before any compute is spent."""

from __future__ import annotations

import dataclasses
import math

import pytest

from scalelab.errors import UserError
from scalelab.study.plan import plan_rungs
from scalelab.study.presets import downstream, preset


@pytest.mark.parametrize("name", ["default", "medium", "gpu"])
def test_preset_designs(name):
    plan = preset(name)
    rungs = plan_rungs(plan, vocab_size=plan.base.data.vocab_size)
    fit = [r for r in rungs if r.role == "fit"]
    sizes = {r.N for r in fit}
    assert len(sizes) >= 5
    assert math.log10(max(sizes) / min(sizes)) >= 1.5  # at least 1.5 decades of non-embedding N
    assert len({r.tokens for r in fit}) >= 4  # D varies too: the Chinchilla form is identifiable
    if plan.design == "grid":  # the WSD default and medium: >= 24 points, 2+ layers each
        assert len(fit) >= 24 and all(r.shape["n_layer"] >= 2 for r in rungs)
        assert all(r.trunk for r in fit) and plan.cooldown == 0.2
    (held,) = [r for r in rungs if r.role == "holdout"]
    conv = plan.flops_convention
    # The held-out rung has the largest compute (and, on the WSD default, the largest N).
    assert held.flops[conv] > max(r.flops[conv] for r in fit)
    assert rungs[-1] is held  # trained last


def test_prior_counts_all_parameters():
    """The prior centres each compute level at prior_tokens_per_param tokens per parameter,
    embeddings included (up to the rounding of shapes); doubling it shrinks every centre."""
    from scalelab.data.config import DataConfig
    from scalelab.study.plan import PlanConfig
    from scalelab.study.policy import HyperPolicy
    from scalelab.train.pretrain import PretrainConfig

    plan = PlanConfig(  # the isoflop default of scalelab 0.3.0 and before
        budget_flops=2.2e12, aspect_ratio=32.0, prior_tokens_per_param=30.0,
        flops_convention="6n_kaplan",
        base=PretrainConfig(data=DataConfig(vocab_size=1024), seq_len=128),
        policy=HyperPolicy(batch_range=(1024, 1_048_576)),
    )  # fmt: skip
    centre = {r.budget: r for r in plan_rungs(plan, vocab_size=1024) if r.id.endswith("-n2")}
    for r in centre.values():
        assert r.tokens / r.params["total"] == pytest.approx(plan.prior_tokens_per_param, rel=0.5)
    more = dataclasses.replace(plan, prior_tokens_per_param=2 * plan.prior_tokens_per_param)
    for r in plan_rungs(more, vocab_size=1024):
        if r.id.endswith("-n2"):
            assert r.N < centre[r.budget].N


def test_downstream_step_of_presets():
    assert downstream("default") is None  # no room in its 10 minutes
    ft = downstream("medium")
    assert ft is not None and ft.finetune.task.task == "wiki-topics"
    # The most-trained WSD branch of each of the 7 sizes, and the held-out rung.
    assert ft.rungs == (*(f"s{i}-d4" for i in range(7)), "holdout0")
    # The same fine-tuning of every rung as 0.1 ran (the medium demo's numbers depend on it).
    run = ft.finetune
    assert (run.epochs, run.batch_size, run.max_length, run.patience) == (3.0, 16, 128, 3)
    assert run.peak_lr == 1e-3 and run.optim.weight_decay == 0.01 and run.optim.beta2 == 0.999
    assert run.optim.schedule == "linear" and run.optim.warmup_fraction == 0.1
    assert run.runtime.precision == "bf16" and not run.runtime.progress
    with pytest.raises(UserError, match="unknown preset"):
        preset("huge")


def test_near_frontier_selection():
    """Approach 3 keeps the rungs within the band of their level's best loss; with fewer than
    6 left it keeps every rung."""
    from scalelab.study.fit import StudyFitConfig, _near_frontier

    rows = [
        {"rung": f"c{i}-n{j}", "budget": 1e10 * 3**i, "final_val_loss": loss}
        for i, losses in enumerate([(5.0, 4.8, 4.9, 5.3), (4.6, 4.5, 4.6, 4.9)])
        for j, loss in enumerate(losses)
    ]
    kept = {r["rung"] for r in _near_frontier(rows, StudyFitConfig(frontier_band=0.05))}
    assert kept == {"c0-n0", "c0-n1", "c0-n2", "c1-n0", "c1-n1", "c1-n2"}
    assert len(_near_frontier(rows, StudyFitConfig(frontier_band=0.01))) == len(rows)
    assert len(_near_frontier(rows, StudyFitConfig(frontier_band=None))) == len(rows)
