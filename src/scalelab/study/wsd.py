"""WSD ladders: the rungs of one size share one warmup-stable trunk (Hägele et al. 2024).

Hägele et al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training
Durations", arXiv:2405.18392, Sec. 3-4) show that a constant learning rate followed by a
short cool-down (about 20% of the run) matches a cosine schedule tuned to that run's
length, so one long stable phase can be branched at several token counts: each branch
cools down from the stable checkpoint and gives a valid (N, D) point, at the cost of its
cool-down only. OLMo-core's ladders train their sizes this way.

Given the independent rungs of a ladder or grid design, :func:`branch_families` groups
them by size and turns each group into

- a **trunk** rung (role ``trunk``, not a point of any fit): warmup, then a constant
  learning rate, up to the start of its longest branch's cool-down, keeping a checkpoint
  at every branch's start;
- one **branch** per token count (role ``fit``): the trunk's schedule to step
  ``s = T - round(cooldown T)`` (:func:`scalelab.train.schedule.wsd_decay_start`), then
  the cool-down to step ``T``; it starts from the trunk's step-``s`` checkpoint, so the
  trunk's work is counted once (:attr:`Rung.cost_fraction`).

A family shares one batch (the smallest of its rungs', so that the shortest branch keeps
the policy's minimum of optimizer steps), one learning rate (the policy's at the
geometric mean of the family's compute) and one warmup (``warmup_fraction`` of the
longest branch, at most half of the shortest one's stable phase: a short warmup at a high
learning rate cost a 3-layer model 0.3 nats here), because a branch must follow its trunk's schedule exactly up to its
cool-down. A branch is then the same computation as an independent run with that
schedule: ``tests/test_train_wsd.py`` checks equality, ``bench/wsd_branches.py`` the
loss gap at demo scale.
"""

from __future__ import annotations

import dataclasses
import math

from scalelab.study.plan import PlanConfig, Rung
from scalelab.train.schedule import wsd_decay_start


def branch_families(cfg: PlanConfig, rungs: list[Rung]) -> list[Rung]:
    """Trunks and branches for ``rungs`` (independent rungs of a ladder/grid design):
    every size with its branches (ids ``s<i>-d<j>``, fewest tokens first) and its trunk
    (``s<i>-trunk``)."""
    sizes: dict[tuple[int, ...], list[Rung]] = {}
    for r in rungs:
        sizes.setdefault(tuple(sorted(r.shape.items())), []).append(r)
    out: list[Rung] = []
    ordered = sorted(sizes.values(), key=lambda group: group[0].N)
    for i, group in enumerate(ordered):
        out.extend(_family(cfg, f"s{i}", sorted(group, key=lambda r: r.tokens)))
    return out


def _family(cfg: PlanConfig, prefix: str, group: list[Rung]) -> list[Rung]:
    """One size's trunk followed by its branches."""
    batch = min(r.batch_tokens for r in group)
    kaplan = [r.flops["6n_kaplan"] for r in group]
    middle = math.exp(sum(map(math.log, kaplan)) / len(kaplan))
    lr = cfg.policy.learning_rate(middle, n=group[0].N)
    steps = [math.ceil(r.tokens / batch) for r in group]
    starts = [wsd_decay_start(t, cfg.cooldown) for t in steps]
    # warmup_fraction of the longest branch, at most half of the shortest one's stable
    # phase: every branch warms up fully before it cools down.
    warmup = max(1, min(round(cfg.base.optim.warmup_fraction * steps[-1]), starts[0] // 2))
    shared = {"warmup_steps": warmup}
    trunk_tokens = max(starts) * batch
    trunk = dataclasses.replace(
        group[-1],
        id=f"{prefix}-trunk",
        role="trunk",
        tokens=trunk_tokens,
        batch_tokens=batch,
        lr=lr,
        flops=_scaled(group[-1].flops, trunk_tokens / group[-1].tokens),
        save_steps=tuple(sorted(set(starts))),
        optim={**shared, "schedule": "constant"},
    )
    branches = []
    for j, (r, t, s) in enumerate(zip(group, steps, starts, strict=True)):
        tokens = t * batch
        branches.append(
            dataclasses.replace(
                r,
                id=f"{prefix}-d{j}",
                tokens=tokens,
                batch_tokens=batch,
                lr=lr,
                flops=_scaled(r.flops, tokens / r.tokens),
                trunk=trunk.id,
                branch_step=s,
                # decay_fraction (t - s) / t makes the cool-down start exactly at step s.
                optim={**shared, "schedule": "wsd", "decay_fraction": (t - s) / t},
            )
        )
    return [trunk, *branches]


def _scaled(flops: dict[str, float], factor: float) -> dict[str, float]:
    """FLOPs by convention of the same model on ``factor`` times the tokens (linear)."""
    return {k: v * factor for k, v in flops.items()}
