"""Planning a study: a design and a compute budget become concrete rungs.

Designs:

- ``isoflop`` (Hoffmann et al. 2022, Approach 2): ``n_budgets`` compute levels spaced by
  ``budget_ratio``; at each, ``sizes_per_budget`` model sizes log-spaced over
  ``size_spread`` around a prior compute-optimal size, each trained for the tokens that
  spend exactly that budget. Varies N and D, so Approach 3 can be fitted as well.
- ``ladder``: ``n_sizes`` sizes log-spaced in [n_min, n_max], each trained at every value
  of ``tokens_per_param`` (OLMo-style ladder; Chinchilla's 20 tokens/param by default).
- ``grid``: every explicit (N, D) pair of ``sizes`` x ``tokens``.

Every design adds ``holdout`` rung(s) at ``holdout_factor`` times the largest budget, at
the prior's compute-optimal size; they are trained last, kept out of every fit, and
predicted by it (the extrapolation check of the report).

Budgets are in FLOPs under ``flops_convention`` (default ``6n_kaplan``: C = 6 N D with
non-embedding N, the convention in which the fitted laws state compute). Wall time follows
the full count instead (Hoffmann et al. 2022 Appendix F, with the embedding/logit and
attention FLOPs that dominate small models): ``--budget-hours`` converts wall-clock time
into a budget with a short throughput probe on this machine (``probe.py``, cached per
machine and shape, so the same hours give the same plan), and the plan prints the FLOPs
that the hours became, which reproduce it anywhere.

A budget too small for the design is refused with the smallest one that works, in the
unit it was given in (:func:`min_budget_flops`): for ``isoflop`` the budget whose
smallest rung sits at the size dial's lower end, found by bisection (the sizes of a
design grow monotonically with its budget); for ``ladder`` and ``grid`` the compute of
their fitted rungs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.study.plan_text import num, round_sig, too_small
from scalelab.study.policy import MAX_EPOCHS, HyperPolicy, repetition_error
from scalelab.train.pretrain import PretrainConfig

Design = Literal["isoflop", "ladder", "grid"]

# Prior for the compute-optimal tokens per parameter, used only to centre the design
# (Hoffmann et al. 2022, Table 3: about 20 tokens per parameter).
PRIOR_TOKENS_PER_PARAM = 20.0


@dataclass(kw_only=True)
class PlanConfig(Config):
    """A study design and its budget; `scalelab plan --dry-run` shows the rungs it gives."""

    design: Design = "isoflop"
    """isoflop (k budgets x m sizes), ladder (sizes x tokens-per-parameter) or grid (explicit N x D)."""
    budget_flops: float | None = None
    """Total compute of the study, all rungs together, in FLOPs (see flops_convention)."""
    budget_hours: float | None = None
    """Total wall-clock of the study on this machine; converted to FLOPs by a throughput probe
    (cached per machine and shape; takes precedence over budget_flops)."""
    reprobe: bool = False
    """Measure this machine's throughput again instead of reusing the cached probe."""
    flops_convention: str = "chinchilla"
    """FLOP convention of budgets and compute levels: chinchilla (the default since 0.3.0:
    Hoffmann et al. 2022 App. F, the full count with attention and the embedding/logit
    matmuls, which is what the cost follows at small scale), 6n_kaplan (6 N D with N
    non-embedding, Kaplan et al. 2020; the count of the law's allocation exponents) or
    6n_total. Every convention is recorded for every rung; the report gives the exponents
    under 6ND and the full count side by side."""
    n_budgets: int = 3
    """isoflop: number of compute levels."""
    budget_ratio: float = 3.0
    """isoflop: ratio between consecutive compute levels."""
    sizes_per_budget: int = 5
    """isoflop: model sizes per compute level."""
    size_spread: float = 10.0
    """isoflop: ratio between the largest and smallest size of a level (log-spaced)."""
    n_min: float = 2e4
    """ladder: smallest non-embedding parameter count."""
    n_max: float = 2e6
    """ladder: largest non-embedding parameter count."""
    n_sizes: int = 5
    """ladder: number of sizes."""
    tokens_per_param: tuple[float, ...] = (20.0,)
    """ladder: training tokens per non-embedding parameter (one rung per value and size)."""
    sizes: tuple[float, ...] = ()
    """grid: non-embedding parameter counts."""
    tokens: tuple[float, ...] = ()
    """grid: training tokens."""
    aspect_ratio: float = 64.0
    """d_model / n_layer of the size dial (64: nanochat's depth dial; smaller = deeper models)."""
    prior_tokens_per_param: float = PRIOR_TOKENS_PER_PARAM
    """Tokens per parameter (all parameters) at which each compute level is centred."""
    holdout: int = 1
    """Rungs held out of the fits and predicted (at the largest compute)."""
    holdout_factor: float = 2.0
    """Compute of the held-out rung relative to the largest fitted budget."""
    holdout_n: float = 0.0
    """With holdout_d: the held-out rung's non-embedding size target and tokens, given
    explicitly (e.g. the next size up), instead of the prior's optimum at holdout_factor x
    the largest compute (0: that default)."""
    holdout_d: float = 0.0
    """Training tokens of the explicit held-out rung (see holdout_n)."""
    min_tokens: int = 65_536
    """Never plan a rung with fewer training tokens than this."""
    cooldown: float = 0.0
    """ladder and grid: 0 trains every rung from scratch; > 0 makes a WSD ladder (Hägele et al. 2024, arXiv:2405.18392): the rungs of one size share one warmup-stable trunk and each branches off it with a cool-down of this fraction of its tokens (0.2: theirs; shape: base.optim.decay_shape)."""
    max_epochs: float = MAX_EPOCHS
    """Refuse a rung that trains more epochs of the training split than this (above 1 the data repeats, and the plan and the report say so)."""
    sweep: str = ""
    """The sweep.json (scalelab study sweep) a fitted learning-rate policy came from; the report draws its curves (builtin:default: the presets' own)."""
    base: PretrainConfig = field(default_factory=PretrainConfig)
    """Pretraining settings shared by every rung (arch, data, seq_len, precision, ...)."""
    policy: HyperPolicy = field(default_factory=HyperPolicy)
    """Learning rate and batch size as functions of each rung's compute."""

    def __post_init__(self) -> None:
        from scalelab.models.accounting import canonical_convention

        # One spelling everywhere: an alias (6nd, 6n, kaplan, appendix_f) is stored canonical.
        self.flops_convention = canonical_convention(self.flops_convention)
        super().__post_init__()

    def validate(self) -> None:
        self._check_numbers()
        if self.design == "isoflop" and self.budget_flops is None and self.budget_hours is None:
            raise UserError("the isoflop design needs --budget-flops or --budget-hours")
        if self.design == "isoflop" and (self.n_budgets < 1 or self.sizes_per_budget < 2):
            raise UserError("isoflop needs n_budgets >= 1 and sizes_per_budget >= 2")
        if not (self.budget_ratio > 1 and self.size_spread > 1 and self.holdout_factor > 0):
            raise UserError(
                "budget_ratio and size_spread must exceed 1, holdout_factor must be positive"
            )
        # The compute levels are budget_ratio**i: keep the largest a float.
        if self.n_budgets * math.log(self.budget_ratio) > 690:
            raise UserError(
                f"n_budgets {self.n_budgets} at budget_ratio {self.budget_ratio:g} spans compute "
                "levels beyond the floating-point range"
            )
        if self.design == "ladder" and not (0 < self.n_min < self.n_max and self.n_sizes >= 2):
            raise UserError("ladder needs 0 < n_min < n_max and n_sizes >= 2")
        if self.design == "ladder" and not self.tokens_per_param:
            raise UserError("the ladder design needs --tokens-per-param (one or more values)")
        if self.design == "grid" and (not self.sizes or not self.tokens):
            raise UserError("the grid design needs --sizes and --tokens")
        if self.holdout < 0:
            raise UserError("holdout must be >= 0")
        if (self.holdout_n > 0) != (self.holdout_d > 0) or min(self.holdout_n, self.holdout_d) < 0:
            raise UserError("give both holdout_n and holdout_d (positive), or neither")
        if not 0 <= self.cooldown < 1:
            raise UserError(f"cooldown must be in [0, 1), got {self.cooldown}")
        if self.cooldown and self.design == "isoflop":
            raise UserError(
                "cooldown (WSD branches) needs the ladder or grid design, where each size "
                "trains at several token counts"
            )
        if self.min_tokens < 1:
            raise UserError(f"min_tokens must be at least 1, got {self.min_tokens}")

    def _check_numbers(self) -> None:
        """Every number of the design positive and finite (``not x > 0`` catches nan;
        an infinite budget or size would overflow the planner's integer arithmetic)."""
        for name in ("budget_flops", "budget_hours"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UserError(f"{name} must be positive and finite, got {value}")
        scalars = ("budget_ratio", "size_spread", "holdout_factor", "n_min", "n_max", "max_epochs")
        lists = ("tokens_per_param", "sizes", "tokens")
        for name in (*scalars, "aspect_ratio", "prior_tokens_per_param", *lists):
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if not (value > 0 and math.isfinite(value)):
                    what = f"{name} values" if name in lists else name
                    raise UserError(f"{what} must be positive and finite, got {value}")


@dataclass(frozen=True)
class Rung:
    """One planned run of the study."""

    id: str
    role: Literal["fit", "holdout", "trunk"]
    budget: float | None
    """The compute level this rung belongs to (isoflop), in the plan's convention."""
    n_target: float
    shape: dict[str, int]
    params: dict[str, Any]
    tokens: int
    batch_tokens: int
    lr: float
    flops: dict[str, float]
    est_seconds: float | None = None
    trunk: str | None = None
    """A WSD branch: the id of the trunk rung whose checkpoint it starts from."""
    branch_step: int = 0
    """A WSD branch: the trunk's optimizer step it starts from, where its cool-down begins."""
    save_steps: tuple[int, ...] = ()
    """A WSD trunk: the steps its branches start from (those checkpoints are kept)."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Settings of the base optimizer config this rung overrides (a trunk's constant
    schedule, a branch's cool-down, their shared warmup)."""

    @property
    def cost_fraction(self) -> float:
        """The share of this rung's tokens it trains itself (a branch inherits the rest
        from its trunk, which is counted once, as its own rung)."""
        return 1.0 - self.branch_step * self.batch_tokens / self.tokens if self.trunk else 1.0

    def cost(self, convention: str) -> float:
        """The FLOPs (``convention``) that training this rung spends."""
        return self.flops[convention] * self.cost_fraction

    @property
    def N(self) -> int:  # noqa: N802 - the field's symbol
        return int(self.params["non_embedding"])

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["save_steps"] = list(self.save_steps)  # YAML has lists, not tuples
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rung:
        data = dict(data)
        data["save_steps"] = tuple(data.get("save_steps") or ())
        return cls(**data)

    def pretrain_config(self, base: PretrainConfig) -> PretrainConfig:
        """The full pretraining config of this rung."""
        from scalelab.models.config import ModelConfig

        model = ModelConfig.from_shape(self.shape, arch=base.arch, max_seq_len=base.seq_len)
        optim = base.optim.replace(lr=self.lr, **self.optim)
        return base.replace(
            size=None,
            params=None,
            model=model,
            tokens=self.tokens,
            batch_tokens=self.batch_tokens,
            optim=optim,
            save_steps=tuple(self.save_steps),
        )


def _model_cfg(cfg: PlanConfig, n_target: float, vocab_size: int):
    from scalelab.models.config import ModelConfig
    from scalelab.models.sizes import shape_for_params

    base = cfg.base
    shape = shape_for_params(n_target, arch=base.arch, aspect_ratio=cfg.aspect_ratio)
    return ModelConfig.from_shape(
        shape, arch=base.arch, vocab_size=vocab_size, max_seq_len=base.seq_len
    ).resolved()


def _rung(
    cfg: PlanConfig,
    *,
    rid: str,
    n_target: float,
    vocab_size: int,
    role: str = "fit",
    budget: float | None = None,
    tokens: float | None = None,
) -> Rung:
    """The rung of size ``n_target`` trained on ``tokens`` (None: exactly ``budget``)."""
    from scalelab.models.accounting import flops_per_token, param_counts, training_flops

    mcfg = _model_cfg(cfg, n_target, vocab_size)
    seq = cfg.base.seq_len
    if tokens is None:  # spend exactly the budget
        tokens = budget / flops_per_token(mcfg, cfg.flops_convention, seq_len=seq)
    compute_for_policy = training_flops(mcfg, tokens, seq)["6n_kaplan"]
    batch = cfg.policy.batch(compute_for_policy, int(tokens), seq)
    tokens = max(cfg.min_tokens, int(math.ceil(tokens / batch) * batch))
    counts = param_counts(mcfg)
    return Rung(
        id=rid,
        role=role,  # type: ignore[arg-type]
        budget=budget,
        n_target=float(n_target),
        shape=mcfg.shape(),
        params=counts.to_dict(),
        tokens=int(tokens),
        batch_tokens=int(batch),
        lr=cfg.policy.learning_rate(compute_for_policy, n=counts.non_embedding),
        flops=training_flops(mcfg, tokens, seq),
    )


def _tokens_per_param(cfg: PlanConfig, n_target: float, compute: float, vocab_size: int) -> float:
    """Training tokens per parameter (all of them) of the size ``n_target`` at ``compute``."""
    from scalelab.models.accounting import flops_per_token, param_counts

    mcfg = _model_cfg(cfg, n_target, vocab_size)
    tokens = compute / flops_per_token(mcfg, cfg.flops_convention, seq_len=cfg.base.seq_len)
    return tokens / param_counts(mcfg).total


def _prior_n_opt(cfg: PlanConfig, compute: float, vocab_size: int) -> float:
    """Non-embedding size whose tokens at this compute are the prior tokens per parameter.

    The prior counts ALL parameters, as Hoffmann et al. did: at CPU scale the embeddings
    are most of a model, and 20 tokens per non-embedding parameter would leave the larger
    rungs a few dozen optimizer steps (measured: such rungs sat far above the frontier).
    """
    lo, hi = 1e3, 1e12
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        if _tokens_per_param(cfg, mid, compute, vocab_size) > cfg.prior_tokens_per_param:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.01:
            break
    return math.sqrt(lo * hi)


def _isoflop_levels(cfg: PlanConfig, total: float) -> list[float]:
    k, r, m = cfg.n_budgets, cfg.budget_ratio, cfg.sizes_per_budget
    # total = m * C1 * (1 + r + ... + r^(k-1)) + holdout * factor * C1 * r^(k-1)
    units = m * sum(r**i for i in range(k)) + cfg.holdout * cfg.holdout_factor * r ** (k - 1)
    c1 = total / units
    return [c1 * r**i for i in range(k)]


def _smallest_target(cfg: PlanConfig, budget: float, vocab_size: int) -> float:
    """The smallest size target of an isoflop design at ``budget`` (0 below the dial).

    Nondecreasing in ``budget``: the prior's bisection takes the same steps for a larger
    compute until one of its comparisons flips, and then only upwards.
    """
    from scalelab.models.sizes import MIN_TARGET

    c1 = _isoflop_levels(cfg, budget)[0]
    if _tokens_per_param(cfg, MIN_TARGET, c1, vocab_size) <= cfg.prior_tokens_per_param:
        return 0.0  # the prior's optimum lies below the dial's smallest size
    return _prior_n_opt(cfg, c1, vocab_size) / math.sqrt(cfg.size_spread)


def min_budget_flops(cfg: PlanConfig, vocab_size: int) -> float:
    """The smallest budget (FLOPs, the plan's convention) that the design can be planned at.

    isoflop: the budget whose smallest rung is the size dial's smallest model, found by
    bisection in log budget to 1e-9 (:func:`_smallest_target` is monotone); ladder and grid:
    the compute of their fitted rungs (the budget does not pay for the holdout).
    """
    from scalelab.models.sizes import MIN_TARGET

    if cfg.design != "isoflop":
        conv = cfg.flops_convention
        return sum(r.cost(conv) for r in _explicit_rungs(cfg, vocab_size))

    def ok(budget: float) -> bool:
        return _smallest_target(cfg, budget, vocab_size) >= MIN_TARGET

    hi = 1e14
    while not ok(hi):
        hi *= 10
        if hi > 1e300:
            raise UserError(
                f"no budget fits the isoflop design in the size dial: size_spread "
                f"{cfg.size_spread:g} is too wide; lower --size-spread"
            )
    lo = hi / 10
    while ok(lo):
        hi, lo = lo, lo / 10
    while hi / lo > 1 + 1e-9:
        mid = lo * math.sqrt(hi / lo)  # no overflow near 1e300
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def workable_budget_flops(cfg: PlanConfig, vocab_size: int) -> float:
    """:func:`min_budget_flops` rounded up to 2 significant digits (what errors report)."""
    return round_sig(min_budget_flops(cfg, vocab_size), 2, up=True)


def _isoflop_rungs(cfg: PlanConfig, budget: float, vocab_size: int) -> list[Rung]:
    from scalelab.models.sizes import MAX_TARGET, MIN_TARGET

    if _smallest_target(cfg, budget, vocab_size) < MIN_TARGET:
        raise too_small(
            cfg, budget_flops=budget, floor_flops=workable_budget_flops(cfg, vocab_size)
        )
    levels = _isoflop_levels(cfg, budget)
    half = math.sqrt(cfg.size_spread)
    if _prior_n_opt(cfg, levels[-1], vocab_size) * half > MAX_TARGET:
        raise UserError(
            f"the isoflop design at {num(budget)} FLOPs needs sizes beyond the dial's largest "
            f"({MAX_TARGET:.0e} non-embedding parameters); lower the budget or --size-spread"
        )
    rungs = []
    for i, c in enumerate(levels):
        centre = _prior_n_opt(cfg, c, vocab_size)
        for j, n in enumerate(np.geomspace(centre / half, centre * half, cfg.sizes_per_budget)):
            rungs.append(_rung(cfg, rid=f"c{i}-n{j}", budget=c, n_target=n, vocab_size=vocab_size))
    return rungs


def _explicit_rungs(cfg: PlanConfig, vocab_size: int) -> list[Rung]:
    """The fitted rungs of a ladder or grid (their sizes and tokens are given)."""
    if cfg.design == "ladder":
        pairs = [
            (n, n * t)
            for n in np.geomspace(cfg.n_min, cfg.n_max, cfg.n_sizes)
            for t in cfg.tokens_per_param
        ]
    else:
        pairs = [(n, d) for n in cfg.sizes for d in cfg.tokens]
    rungs = [
        _rung(cfg, rid=f"r{i:02d}", n_target=n, tokens=d, vocab_size=vocab_size)
        for i, (n, d) in enumerate(pairs)
    ]
    if not cfg.cooldown:
        return rungs
    from scalelab.study.wsd import branch_families

    return branch_families(cfg, rungs)


def plan_rungs(
    cfg: PlanConfig, *, vocab_size: int, budget_flops: float | None = None
) -> list[Rung]:
    """The rungs of a design, fitted rungs in run order (cheapest first), holdouts last."""
    budget_flops = budget_flops if budget_flops is not None else cfg.budget_flops
    conv = cfg.flops_convention
    if cfg.design == "isoflop":
        if budget_flops is None:
            raise UserError("the isoflop design needs a budget")
        rungs = _isoflop_rungs(cfg, budget_flops, vocab_size)
        top = max(r.budget or 0.0 for r in rungs)
    else:
        rungs = _explicit_rungs(cfg, vocab_size)
        top = max(r.flops[conv] for r in rungs if r.role == "fit")
        spent = sum(r.cost(conv) for r in rungs)
        if budget_flops is not None and spent > budget_flops:
            floor = round_sig(spent, 2, up=True)
            raise too_small(cfg, budget_flops=budget_flops, floor_flops=floor)
    for h in range(cfg.holdout):
        c = top * cfg.holdout_factor * (1 + h)
        rid = f"holdout{h}"
        if cfg.holdout_n:  # explicit: the (h+1)-th of them is (h+1) times as long
            held = _rung(cfg, rid=rid, role="holdout", n_target=cfg.holdout_n,
                         tokens=cfg.holdout_d * (1 + h), vocab_size=vocab_size)  # fmt: skip
        else:
            n = _prior_n_opt(cfg, c, vocab_size)
            held = _rung(cfg, rid=rid, role="holdout", budget=c, n_target=n, vocab_size=vocab_size)
        if cfg.cooldown:  # trained from scratch with the branches' schedule shape
            held = dataclasses.replace(
                held, optim={"schedule": "wsd", "decay_fraction": cfg.cooldown}
            )
        rungs.append(held)
    first = sorted((r for r in rungs if r.role == "trunk"), key=lambda r: r.flops[conv])
    fit = sorted((r for r in rungs if r.role == "fit"), key=lambda r: r.flops[conv])
    return first + fit + [r for r in rungs if r.role == "holdout"]


def with_estimates(rungs: list[Rung], probe: dict[str, Any] | None) -> list[Rung]:
    """Attach estimated wall time (seconds) from a throughput probe, if any."""
    if not probe:
        return rungs
    from scalelab.study.probe import estimate_seconds

    return [dataclasses.replace(r, est_seconds=estimate_seconds(r, probe)) for r in rungs]


# ====================================================================== the plan stage


def plan_vocab_size(plan: PlanConfig) -> int:
    """The vocabulary of the plan's models: its dataset's, else the data config's."""
    if plan.base.dataset:
        from scalelab.data.prepare import open_dataset

        return open_dataset(plan.base.dataset).vocab_size
    return plan.base.data.vocab_size


def make_plan(
    plan: PlanConfig, *, probe: bool, workers: int = 0, unique_tokens: int | None = None
) -> tuple[list[Rung], dict[str, Any]]:
    """Rungs of ``plan`` with estimated times; a wall-clock budget is converted with the probe.

    With the training split's size known (``unique_tokens``, else ``base.dataset``'s), a
    rung above ``max_epochs`` epochs of it is refused (:func:`repetition_error`).
    """
    from scalelab.study.jobs import cpu_only, resolve_parallelism
    from scalelab.study.probe import budget_for_hours, probe_rungs

    vocab = plan_vocab_size(plan)
    unique = unique_tokens or train_tokens(plan)
    n_workers, threads = resolve_parallelism(workers, 0, cpu=cpu_only(plan.base.runtime.device))
    facts: dict[str, Any] = {"vocab_size": vocab, "workers": n_workers, "threads": threads}
    budget = plan.budget_flops
    if plan.budget_hours is not None:
        budget, facts["probe"] = budget_for_hours(plan, vocab, workers=n_workers, threads=threads)
        facts["budget_hours"] = plan.budget_hours
    rungs = plan_rungs(plan, vocab_size=vocab, budget_flops=budget)
    if unique:
        facts["train_tokens"] = unique
        refusal = repetition_error(rungs, unique, plan.max_epochs)
        if refusal is not None:
            raise refusal
    if probe and "probe" not in facts:
        facts["probe"] = probe_rungs(plan, rungs, vocab, threads)
    facts["budget_flops"] = budget
    return with_estimates(rungs, facts.get("probe")), facts


def train_tokens(plan: PlanConfig) -> int | None:
    """:func:`dataset_train_tokens` of ``base.dataset`` (None without one: the data is
    prepared when the study runs)."""
    return dataset_train_tokens(plan.base.dataset) if plan.base.dataset else None


def dataset_train_tokens(dataset: str | Path) -> int | None:
    """Training tokens of the sources a prepared dataset's mixture samples (weight > 0)."""
    from scalelab.data.prepare import open_dataset

    ds = open_dataset(dataset)
    mix = ds.mixture
    return sum(ds.num_tokens("train", s) for s in ds.sources if mix.get(s, 0) > 0) or None


def plan_study(
    plan: PlanConfig, out: Path | None, *, dry_run: bool, probe: bool, workers: int = 0
) -> Any:
    """The ``scalelab plan`` stage: print the rungs; unless ``dry_run``, write the study."""
    if not dry_run and out is None:
        raise UserError("give the study directory with --out (or use --dry-run)")
    from scalelab.study.plan_text import hours_line, plan_table

    rungs, facts = make_plan(plan, probe=probe, workers=workers)
    print(plan_table(rungs, plan.flops_convention, facts.get("train_tokens"), plan.max_epochs))
    if plan.budget_hours is not None:
        print(hours_line(plan, facts))
    if dry_run:
        return None
    from scalelab.study.study import Study
    from scalelab.utils.io import ensure_dir

    # reprobe is an action, not part of the design: a rerun without it is the same study.
    stored = plan.replace(reprobe=False)
    study = Study.create(ensure_dir(Path(out), "study directory"), stored, rungs, facts)
    print(
        f"study written to {study.root / 'study.yaml'}; run it with: scalelab study run {study.root}"
    )
    return study
