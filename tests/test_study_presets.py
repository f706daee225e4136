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
    assert len({r.tokens for r in fit}) >= 5  # D varies too: the Chinchilla form is identifiable
    (held,) = [r for r in rungs if r.role == "holdout"]
    assert held.budget > max(r.budget for r in fit)  # the held-out rung has the largest compute
    assert rungs[-1] is held  # trained last


def test_prior_counts_all_parameters():
    """The prior centres each compute level at prior_tokens_per_param tokens per parameter,
    embeddings included (up to the rounding of shapes); doubling it shrinks every centre."""
    plan = preset("default")
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
    assert ft is not None and ft.task.task == "wiki-topics"
    with pytest.raises(UserError, match="unknown preset"):
        preset("huge")
