"""What ``scalelab plan`` prints: the rungs as a table, what ``--budget-hours`` became,
the one-line refusal of a budget too small, and the number spellings they use."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from scalelab.errors import UserError
from scalelab.study.policy import repetition_note

if TYPE_CHECKING:
    from scalelab.study.plan import PlanConfig, Rung


def plan_table(
    rungs: list[Rung], convention: str, corpus_tokens: int | None = None, max_epochs: float = 1.0
) -> str:
    """The rungs as a text table (what ``scalelab plan`` prints); with ``corpus_tokens``
    (the training split's size) each rung's epochs, a note on those above one, or that
    they are unknown until the data is prepared."""
    ep = f"{'epochs':>8}" if corpus_tokens else ""
    head = f"{'rung':<10}{'role':<8}{'N':>11}{'shape':>10}{'D':>12}{'D/N':>7}{'C':>10}{'lr':>9}{'batch':>7}{ep}{'est':>8}"
    lines = [head, "-" * len(head)]
    for r in rungs:
        est = f"{r.est_seconds:.0f}s" if r.est_seconds else "–"
        ep = f"{r.tokens / corpus_tokens:>8.2f}" if corpus_tokens else ""
        lines.append(
            f"{r.id:<10}{r.role:<8}{r.N:>11,}{r.shape['n_layer']:>4}x{r.shape['d_model']:<5}{r.tokens:>12,}"
            f"{r.tokens / r.N:>7.1f}{r.flops[convention]:>10.2e}{r.lr:>9.2e}{r.batch_tokens:>7}{ep}{est:>8}"
        )
    total_c = sum(r.cost(convention) for r in rungs)
    est = [r.est_seconds for r in rungs if r.est_seconds]
    lines.append(
        f"{len(rungs)} rungs, {total_c:.3e} FLOPs ({convention})"
        + (f", {sum(est):.0f} s of training" if est else "")
    )
    note = corpus_tokens and repetition_note(rungs, corpus_tokens, max_epochs)
    if note:
        lines.append(f"note: {note}")
    elif not corpus_tokens:
        lines.append(
            "epochs: checked when the data is prepared (`scalelab study run` refuses a rung above "
            f"--max-epochs {max_epochs:g}); plan with --base.dataset DIR to see them now"
        )
    return "\n".join(lines)


def hours_line(plan: PlanConfig, facts: dict[str, Any]) -> str:
    """What ``--budget-hours`` became: the FLOPs that reproduce the plan on any machine."""
    budget, probe = num(facts["budget_flops"]), facts.get("probe") or {}
    workers, threads = facts["workers"], facts["threads"]
    where = f", probe cached in {probe['cache']}" if probe.get("cache") else ""
    return (
        f"--budget-hours {num(plan.budget_hours or 0)} = {budget} FLOPs ({plan.flops_convention}) "
        f"on this machine ({workers} worker{'s' * (workers != 1)} x {threads} "
        f"thread{'s' * (threads != 1)}{where}); --budget-flops {budget} plans the same rungs anywhere"
    )


def num(x: float) -> str:
    """The shortest spelling of ``x`` that reads back as exactly ``x`` (``3.1e14``, ``0.82``,
    ``100``), without an exponent where that is as short."""
    plain = repr(float(x)).removesuffix(".0")
    for digits in range(1, 18):
        text = f"{x:.{digits}g}".replace("e+", "e")
        if float(text) == x:
            return plain if len(plain) <= len(text) else text
    return plain


def round_sig(x: float, digits: int, *, up: bool) -> float:
    """``x`` rounded up (or down) to ``digits`` significant digits, spelled exactly as typed."""
    e = math.floor(math.log10(x)) - digits + 1
    m = math.ceil(x / 10.0**e) if up else math.floor(x / 10.0**e)
    value = float(f"{m}e{e}")
    if up and value < x:  # the division rounded the wrong way
        value = float(f"{m + 1}e{e}")
    elif not up and value > x:
        value = float(f"{m - 1}e{e}")
    return value


_HINTS = {
    "isoflop": "use fewer levels or sizes (--n-budgets, --sizes-per-budget, --size-spread)",
    "ladder": "lower --n-max or --tokens-per-param",
    "grid": "use smaller --sizes or --tokens",
}


def too_small(
    cfg: PlanConfig,
    *,
    floor_flops: float,
    budget_flops: float | None = None,
    floor_hours: float | None = None,
) -> UserError:
    """The one-line error of a budget below the design's smallest, in the user's unit."""
    conv, design, hint = cfg.flops_convention, cfg.design, _HINTS[cfg.design]
    if floor_hours is not None:
        return UserError(
            f"a {num(cfg.budget_hours)} h budget is too small for the {design} design on this "
            f"machine: the smallest workable budget is {num(floor_hours)} h "
            f"({num(floor_flops)} FLOPs, {conv}); raise --budget-hours or {hint}"
        )
    return UserError(
        f"a {num(budget_flops)} FLOPs budget is too small for the {design} design: the smallest "
        f"workable budget is {num(floor_flops)} FLOPs ({conv}); raise --budget-flops or {hint}"
    )
