"""Tuned rungs: a cheap learning-rate sweep whose optima, fitted as a power law, set the lr.

Without it every rung takes DeepSeek's lr law (DeepSeek-AI 2024, Sec. 3.1, Eq. 1), fitted
at 1e17-2e19 FLOPs, extrapolated orders of magnitude down and clipped (:mod:`policy`).
A sweep measures the optimum at the study's own scale instead, the way DeepSeek (Sec. 3.1)
and Porian et al. (2024, "Resolving Discrepancies in Compute-Optimal Scaling of Language
Models", arXiv:2406.19146) derive their hyperparameter laws:

1. a few small sizes (non-embedding targets of the plan's size dial), each trained at a
   handful of learning rates log-spaced around the policy's (``lr_span``, 16x by
   default), for the prior's compute-optimal tokens; every member is an ordinary run
   directory ``OUT/members/<id>/`` (resumable, through :func:`pretrain`);
2. per size, a parabola in ln lr of the final validation loss, fitted on the lowest loss
   and up to two neighbours each side: its vertex is the optimum (``interior``) when the
   lowest loss has a measured neighbour on both sides and the vertex lies inside them;
   otherwise ``edge`` (the optimum was not bracketed; not used);
3. across sizes, ln lr_opt = ln c + p ln x by least squares, x the non-embedding N (or
   the compute 6ND: ``basis``), with a 95% interval on p (:func:`fit_sweep`);
4. :func:`tuned_policy`: the plan's policy with the rule ``fitted`` (lr = c x^p).

The lr is chosen on the validation split that the study's laws are fitted to, as any
hyperparameter is; the held-out rung stays unseen. The optimum also depends on the
tokens trained (Bjorck et al. 2024, arXiv:2409.19913): the sweep trains each size for the
tokens the plan's prior would, so the law is for rungs near that ratio.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from scalelab.config import Config
from scalelab.errors import TrainingFailed, UserError
from scalelab.study.policy import HyperPolicy
from scalelab.train.pretrain import PretrainConfig

SWEEP_FILE = "sweep.json"
#: Points of the parabola fit: the lowest loss and up to two neighbours each side (a
#: local model of the minimum; far from it the loss is not quadratic in ln lr).
WINDOW = 5
#: Significant digits of the fitted rule's constants (what the printed flags spell, so
#: ``tuned_policy`` and a plan made with the flags give the same learning rates).
DIGITS = 4
LEVEL = 0.95


@dataclass(kw_only=True)
class SweepConfig(Config):
    """A learning-rate sweep at a few small sizes (`scalelab study sweep`)."""

    sizes: tuple[float, ...] = (2e3, 6e3, 2e4)
    """Non-embedding parameter targets of the swept sizes (the plan's size dial; at least 2)."""
    aspect_ratio: float = 64.0
    """d_model / n_layer of the size dial (use the plan's: the shapes must match the study's)."""
    lr_multipliers: tuple[float, ...] = ()
    """Learning rates as multiples of the centre (empty: n_lrs values log-spaced over lr_span)."""
    n_lrs: int = 5
    """Learning rates per size when lr_multipliers is empty."""
    lr_span: float = 16.0
    """Ratio of the largest to the smallest learning rate of a size (log-spaced around the centre)."""
    lr_centre: float | None = None
    """Centre of every size's sweep (None: the policy's learning rate for that size)."""
    tokens_per_param: float | None = None
    """Training tokens per non-embedding parameter (None: prior_tokens_per_param x all parameters, as the plan centres its design)."""
    prior_tokens_per_param: float = 20.0
    """Tokens per parameter (all of them) when tokens_per_param is None (use the plan's)."""
    min_tokens: int = 65_536
    """Never train a member on fewer tokens than this."""
    basis: Literal["N", "C"] = "N"
    """Fit lr_opt as a power law of the non-embedding N or of the compute C (6 N D)."""
    bootstrap: int = 1000
    """Draws of the interval on the exponent (0: none from the vertices' uncertainty)."""
    seed: int = 0
    """Seed of every member (init and data order: all rates of a size see the same batches) and of the bootstrap."""
    base: PretrainConfig = field(default_factory=PretrainConfig)
    """Pretraining settings shared by every member (as a plan's base: arch, data, seq_len, ...)."""
    policy: HyperPolicy = field(default_factory=HyperPolicy)
    """The plan's policy: the centre lr and the batch of each size."""

    def validate(self) -> None:
        floats = {"sizes": self.sizes, "lr_multipliers": self.lr_multipliers}
        for name, values in floats.items():
            if any(not (v > 0 and math.isfinite(v)) for v in values):
                raise UserError(f"{name} must be positive and finite, got {list(values)}")
        if len(set(self.sizes)) < 2:
            raise UserError(f"a sweep needs at least 2 distinct sizes, got {list(self.sizes)}")
        if self.lr_multipliers and len(set(self.lr_multipliers)) < 3:
            raise UserError("a sweep needs at least 3 distinct --lr-multipliers")
        if not self.lr_multipliers and (self.n_lrs < 3 or not self.lr_span > 1):
            raise UserError("a sweep needs n_lrs >= 3 and lr_span > 1")
        scalars = {
            "aspect_ratio": self.aspect_ratio,
            "prior_tokens_per_param": self.prior_tokens_per_param,
            "lr_span": self.lr_span,
            "lr_centre": self.lr_centre,
            "tokens_per_param": self.tokens_per_param,
        }
        for name, value in scalars.items():
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UserError(f"{name} must be positive and finite, got {value}")
        if self.min_tokens < 1 or self.bootstrap < 0:
            raise UserError("min_tokens must be >= 1 and bootstrap >= 0")

    @classmethod
    def for_plan(cls, plan: Any, rungs: list[Any] | None = None, **changes: Any) -> SweepConfig:
        """The sweep for a plan (:class:`~scalelab.study.plan.PlanConfig`): its base, dial,
        prior and policy; with its ``rungs``, 3 sizes log-spaced from the smallest rung's
        target to the geometric middle of the (not held-out) targets (cheap, inside the study)."""
        kw: dict[str, Any] = dict(
            base=plan.base,
            aspect_ratio=plan.aspect_ratio,
            prior_tokens_per_param=plan.prior_tokens_per_param,
            min_tokens=plan.min_tokens,
            policy=plan.policy,
        )
        targets = [r.n_target for r in rungs or () if r.role != "holdout"]
        if targets:
            lo, hi = min(targets), math.sqrt(min(targets) * max(targets))
            kw["sizes"] = tuple(float(f"{n:.3g}") for n in np.geomspace(lo, max(hi, 2 * lo), 3))
        return cls(**{**kw, **changes})

    def multipliers(self) -> list[float]:
        if self.lr_multipliers:
            return sorted(set(self.lr_multipliers))
        half = math.sqrt(self.lr_span)
        return [float(m) for m in np.geomspace(1 / half, half, self.n_lrs)]


@dataclass(frozen=True)
class SweepMember:
    """One run of the sweep: a size at one learning rate."""

    id: str
    n_target: float
    N: int  # noqa: N815 - the field's symbol
    tokens: int
    compute: float
    """Training compute 6 N D (non-embedding N, FLOPs): the policy's and the C basis's."""
    lr: float
    multiplier: float
    config: PretrainConfig


def _vocab_size(base: PretrainConfig) -> int:
    if base.dataset:
        from scalelab.data.prepare import open_dataset

        return open_dataset(base.dataset).vocab_size
    return base.data.vocab_size


def plan_sweep(cfg: SweepConfig) -> list[SweepMember]:
    """The members of a sweep, size by size (ascending), learning rates ascending."""
    from scalelab.models.accounting import param_counts, training_flops
    from scalelab.models.config import ModelConfig
    from scalelab.models.sizes import shape_for_params

    base, seq, vocab = cfg.base, cfg.base.seq_len, _vocab_size(cfg.base)
    members: list[SweepMember] = []
    for n_target in sorted(set(cfg.sizes)):
        shape = shape_for_params(n_target, arch=base.arch, aspect_ratio=cfg.aspect_ratio)
        model = ModelConfig.from_shape(
            shape, arch=base.arch, vocab_size=vocab, max_seq_len=seq
        ).resolved()
        counts = param_counts(model)
        if cfg.tokens_per_param is not None:
            tokens = cfg.tokens_per_param * counts.non_embedding
        else:
            tokens = cfg.prior_tokens_per_param * counts.total
        tokens = max(cfg.min_tokens, tokens)  # before the batch: it follows the tokens
        batch = cfg.policy.batch(training_flops(model, tokens, seq)["6n_kaplan"], int(tokens), seq)
        tokens = int(math.ceil(tokens / batch) * batch)
        compute = training_flops(model, tokens, seq)["6n_kaplan"]
        n = counts.non_embedding
        centre = cfg.lr_centre or cfg.policy.learning_rate(compute, n=n)
        for mult in cfg.multipliers():
            lr = float(f"{centre * mult:.4g}")
            config = base.replace(
                size=None,
                params=None,
                model=model,
                tokens=tokens,
                batch_tokens=batch,
                optim=base.optim.replace(lr=lr),
                seed=cfg.seed,
            )
            mid = f"n{n}-d{tokens}-lr{lr:g}"
            members.append(SweepMember(mid, float(n_target), n, tokens, compute, lr, mult, config))
    return members


# ====================================================================== fitting


@dataclass(frozen=True)
class SweepCurve:
    """One size's losses against learning rate, and its parabola's vertex."""

    N: int  # noqa: N815 - the field's symbol
    compute: float
    tokens: int
    lrs: tuple[float, ...]
    losses: tuple[float | None, ...]
    """Final validation loss per learning rate (None: diverged or not finished)."""
    status: str
    """interior (the vertex is trusted), edge (not bracketed), concave or too_few (< 3 losses)."""
    lr_opt: float | None = None
    loss_opt: float | None = None
    log_lr_se: float | None = None
    """Standard error of ln lr_opt (delta method on the parabola; None with no residual dof)."""
    dof: int = 0
    parabola: tuple[float, float, float] | None = None
    """(a, b, c) of loss = a u^2 + b u + c, u = ln lr, over the fitted window."""
    window: tuple[float, float] | None = None
    """The learning rates the parabola was fitted between."""

    def x(self, basis: str) -> float:
        return float(self.N if basis == "N" else self.compute)


def fit_curve(
    lrs: Iterable[float], losses: Iterable[float | None], *, N: int, compute: float, tokens: int = 0
) -> SweepCurve:  # noqa: N803
    """The vertex of a parabola in ln lr through the lowest loss and its neighbours."""
    pairs = sorted(zip(map(float, lrs), losses, strict=True))
    lr_all = tuple(p[0] for p in pairs)
    loss_all = tuple(None if v is None or not math.isfinite(v) else float(v) for _, v in pairs)
    kw: dict[str, Any] = dict(N=int(N), compute=float(compute), tokens=int(tokens))
    kw.update(lrs=lr_all, losses=loss_all)
    ok = [(lr, v) for lr, v in zip(lr_all, loss_all, strict=True) if v is not None]
    if len(ok) < 3:
        return SweepCurve(status="too_few", **kw)
    best = min(range(len(ok)), key=lambda i: ok[i][1])
    lo = min(max(0, best - WINDOW // 2), max(0, len(ok) - WINDOW))
    win = ok[lo : lo + WINDOW]
    u = np.log([p[0] for p in win])
    y = np.array([p[1] for p in win])
    design = np.stack([u**2, u, np.ones_like(u)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    a, b, c = (float(v) for v in coef)
    kw.update(parabola=(a, b, c), window=(win[0][0], win[-1][0]), dof=len(win) - 3)
    if not a > 0:
        return SweepCurve(status="concave", **kw)
    vertex = -b / (2 * a)
    kw.update(lr_opt=math.exp(vertex), loss_opt=c - b * b / (4 * a))
    if kw["dof"] > 0:
        sigma2 = float(np.sum((design @ coef - y) ** 2)) / kw["dof"]
        cov = sigma2 * np.linalg.inv(design.T @ design)
        grad = np.array([b / (2 * a * a), -1 / (2 * a)])  # d vertex / d(a, b)
        kw["log_lr_se"] = float(math.sqrt(max(grad @ cov[:2, :2] @ grad, 0.0)))
    bracketed = 0 < best < len(ok) - 1 and u[0] <= vertex <= u[-1]
    return SweepCurve(status="interior" if bracketed else "edge", **kw)


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(intercept, slope) of y on x."""
    slope = float(np.sum((x - x.mean()) * (y - y.mean())) / np.sum((x - x.mean()) ** 2))
    return float(y.mean() - slope * x.mean()), slope


def _exponent_interval(
    used: list[SweepCurve], x: np.ndarray, y: np.ndarray, slope: float, draws: int, seed: int
) -> tuple[tuple[float, float] | None, str]:
    """95% interval on p: the wider of (i) a parametric bootstrap of the vertices (each
    ln lr_opt redrawn from Student's t with its parabola's dof and standard error: the
    se itself is estimated from a few residuals) and (ii) with 3 or more sizes, the
    least-squares t interval from the scatter about the line (misfit of the law itself)."""
    from scipy import stats

    tail = (1 - LEVEL) / 2
    bounds: list[tuple[float, float]] = []
    sources = []
    if draws and all(c.log_lr_se is not None for c in used):
        rng = np.random.default_rng(seed)
        se = np.array([c.log_lr_se for c in used])
        noise = np.stack([rng.standard_t(c.dof, size=draws) for c in used], axis=1) * se
        ys = y[None, :] + noise
        xc = x - x.mean()
        slopes = (ys - ys.mean(axis=1, keepdims=True)) @ xc / np.sum(xc**2)
        bounds.append((float(np.quantile(slopes, tail)), float(np.quantile(slopes, 1 - tail))))
        sources.append(f"vertices ({draws} draws)")
    if len(used) >= 3:
        icpt, _ = _ols(x, y)
        resid = y - (icpt + slope * x)
        se = math.sqrt(
            float(np.sum(resid**2)) / (len(used) - 2) / float(np.sum((x - x.mean()) ** 2))
        )
        half = float(stats.t.ppf(1 - tail, len(used) - 2)) * se
        bounds.append((slope - half, slope + half))
        sources.append("scatter about the law")
    if not bounds:
        return None, "none (2 sizes whose parabolas have no residual dof: sweep more rates)"
    return (min(b[0] for b in bounds), max(b[1] for b in bounds)), " and ".join(sources)


def fit_sweep(
    rows: Iterable[Mapping[str, Any]],
    *,
    basis: Literal["N", "C"] = "N",
    bootstrap: int = 1000,
    seed: int = 0,
) -> SweepResult:
    """Fit a sweep table: rows with ``N``, ``C`` (6ND), ``lr``, ``loss`` (None, NaN: diverged)
    and optionally ``tokens``; one curve per (N, C). A one-line UserError when fewer than
    2 sizes have an interior optimum."""
    if basis not in ("N", "C"):
        raise UserError(f"basis must be N or C, got {basis!r}")
    groups: dict[tuple[int, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((int(row["N"]), float(row["C"])), []).append(row)
    curves = tuple(
        fit_curve(
            [r["lr"] for r in g],
            [r["loss"] for r in g],
            N=n,
            compute=c,
            tokens=int(g[0].get("tokens") or 0),
        )
        for (n, c), g in sorted(groups.items())
    )
    used = [c for c in curves if c.status == "interior"]
    if len(used) < 2:
        raise UserError(_refusal(curves))
    x = np.log([c.x(basis) for c in used])
    y = np.log([c.lr_opt for c in used])
    if np.ptp(x) == 0:
        raise UserError("the sweep's sizes share one value of the basis: nothing to fit a law to")
    icpt, slope = _ols(x, y)
    interval, source = _exponent_interval(used, x, y, slope, bootstrap, seed)
    return SweepResult(
        basis=basis,
        curves=curves,
        coef=math.exp(icpt),
        exponent=slope,
        exponent_interval=interval,
        interval_source=source,
        x_centre=float(math.exp(x.mean())),
    )


def _refusal(curves: tuple[SweepCurve, ...]) -> str:
    """The one line of a sweep with fewer than 2 interior optima, saying where each sat."""
    parts = []
    for c in curves:
        ok = [(lr, v) for lr, v in zip(c.lrs, c.losses, strict=True) if v is not None]
        if not ok:
            parts.append(f"N {c.N:,}: no finished member")
            continue
        lr, _ = min(ok, key=lambda p: p[1])
        where = {ok[0][0]: " (the smallest)", ok[-1][0]: " (the largest)"}.get(lr, "")
        parts.append(f"N {c.N:,}: {c.status}, lowest loss at lr {lr:.3g}{where}")
    return (
        f"the sweep found an interior optimum at {sum(c.status == 'interior' for c in curves)} "
        f"size(s), a law needs 2 ({'; '.join(parts)}); move --lr-centre towards the lowest "
        "losses or widen --lr-span"
    )


@dataclass(frozen=True)
class SweepResult:
    """A fitted sweep: per-size curves and vertices, and lr_opt = coef * x ** exponent."""

    basis: str
    curves: tuple[SweepCurve, ...]
    coef: float
    exponent: float
    exponent_interval: tuple[float, float] | None
    """95% interval on the exponent (None: nothing to estimate it from)."""
    interval_source: str
    x_centre: float
    """Geometric mean of the fitted sizes' x: the law is best determined there."""
    level: float = LEVEL

    def predict(self, x: float) -> float:
        return float(self.coef * float(x) ** self.exponent)

    def used(self) -> list[SweepCurve]:
        return [c for c in self.curves if c.status == "interior"]

    def stable_lr_range(self) -> tuple[float, float]:
        """The smallest and largest learning rates the sweep trained without diverging."""
        lrs = [
            lr for c in self.curves for lr, v in zip(c.lrs, c.losses, strict=True) if v is not None
        ]
        return min(lrs), max(lrs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SweepResult:
        try:
            curves = tuple(
                SweepCurve(
                    **{
                        **c,
                        "lrs": tuple(c["lrs"]),
                        "losses": tuple(c["losses"]),
                        "parabola": c.get("parabola") and tuple(c["parabola"]),
                        "window": c.get("window") and tuple(c["window"]),
                    }
                )
                for c in data["curves"]
            )
            interval = data.get("exponent_interval")
            return cls(
                **{
                    **data,
                    "curves": curves,
                    "exponent_interval": tuple(interval) if interval else None,
                }
            )
        except (KeyError, TypeError) as exc:
            raise UserError(f"not a scalelab sweep result ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> SweepResult:
        from scalelab.utils.io import read_json

        path = Path(path)
        if path.is_dir():
            path = path / SWEEP_FILE
        if not path.is_file():
            raise UserError(f"no sweep result at {path}; run `scalelab study sweep --out DIR`")
        try:
            return cls.from_dict(read_json(path))
        except ValueError:
            raise UserError(f"{path}: not valid JSON") from None

    def summary(self) -> str:
        """The sweep as text: every member's loss, each size's vertex, the fitted law."""
        lines = [f"{'N':>10}{'D':>11}{'C':>10}{'lr':>10}{'loss':>9}", "-" * 50]
        for c in self.curves:
            for lr, v in zip(c.lrs, c.losses, strict=True):
                loss = f"{v:.4f}" if v is not None else "diverged"
                lines.append(f"{c.N:>10,}{c.tokens:>11,}{c.compute:>10.2e}{lr:>10.3g}{loss:>9}")
        lines.append("vertices (parabola in ln lr):")
        for c in self.curves:
            if c.lr_opt is None:
                lines.append(f"  N {c.N:,}: {c.status}")
                continue
            se = f" (×/÷ {math.exp(c.log_lr_se):.2f})" if c.log_lr_se is not None else ""
            lines.append(
                f"  N {c.N:,}: lr_opt {c.lr_opt:.3g}{se}, loss {c.loss_opt:.4f}, {c.status}"
                + ("" if c.status == "interior" else " (not used)")
            )
        iv = self.exponent_interval
        band = f"[{iv[0]:.3f}, {iv[1]:.3f}]" if iv else "none"
        lines.append(
            f"fitted: lr_opt = {self.coef:.4g} * {self.basis}^{self.exponent:.4f} on "
            f"{len(self.used())} sizes; {self.level:.0%} interval on the exponent {band} "
            f"(from {self.interval_source})"
        )
        if iv is None or iv[0] <= 0 <= iv[1]:
            flat = math.exp(float(np.mean([math.log(c.lr_opt) for c in self.used()])))
            lines.append(
                f"note: the exponent is not resolved ({'no interval' if iv is None else 'its interval spans 0'}); "
                f"a constant lr near {flat:.3g} (the vertices' geometric mean) fits the sweep as well"
            )
        return "\n".join(lines)


def tuned_policy(
    result: SweepResult, base_policy: HyperPolicy, *, widen: bool = True
) -> HyperPolicy:
    """``base_policy`` with the rule ``fitted``: lr = coef * x ** exponent (constants to
    :data:`DIGITS` significant digits, as :func:`policy_flags` prints them). With
    ``widen`` its clip range grows to take in every rate the sweep trained without
    diverging (the measured range; the old clip came from an extrapolated law)."""
    lr_range = base_policy.lr_range
    if widen:
        lo, hi = result.stable_lr_range()
        lr_range = (min(lr_range[0], lo), max(lr_range[1], hi))
    return base_policy.replace(
        rule="fitted",
        lr_coef=float(f"{result.coef:.{DIGITS}g}"),
        lr_exponent=float(f"{result.exponent:.{DIGITS}g}"),
        lr_basis=result.basis,
        lr_range=lr_range,
    )


def policy_flags(policy: HyperPolicy, base_policy: HyperPolicy | None = None) -> str:
    """The ``scalelab plan`` flags that give ``policy`` (a :func:`tuned_policy`)."""
    from scalelab.study.plan import num

    flags = (
        f"--policy.rule fitted --policy.lr-coef {num(policy.lr_coef)} "
        f"--policy.lr-exponent {num(policy.lr_exponent)} --policy.lr-basis {policy.lr_basis}"
    )
    if base_policy is None or tuple(policy.lr_range) != tuple(base_policy.lr_range):
        flags += f" --policy.lr-range {num(policy.lr_range[0])},{num(policy.lr_range[1])}"
    return flags


# ====================================================================== running


def _train_members(cfgs: list[PretrainConfig], dirs: list[Path]) -> list[dict[str, Any]]:
    """Train (or resume) members; their summaries. Members of one shape go to the stacked
    trainer (``scalelab.train.stacked``, one batched model) when it exists; otherwise they
    train one after the other through :func:`pretrain` (a diverged one is recorded)."""
    from scalelab.train.pretrain import pretrain
    from scalelab.utils.io import read_json

    shapes = {tuple(sorted(c.model.shape().items())) for c in cfgs if c.model is not None}
    stacked = _stacked_trainer() if len(cfgs) > 1 and len(shapes) == 1 else None
    if stacked is not None:
        return stacked(cfgs, dirs)
    out = []
    for cfg, run_dir in zip(cfgs, dirs, strict=True):
        try:
            out.append(pretrain(cfg, run_dir))
        except TrainingFailed as exc:
            print(f"note: sweep member {run_dir.name} diverged: {exc}", file=sys.stderr)
            out.append(read_json(run_dir / "summary.json"))
    return out


def _stacked_trainer() -> Any:
    """``scalelab.train.stacked.train_stacked`` when that module exists, else None (an
    import error inside it is raised, not taken for its absence)."""
    try:
        from scalelab.train.stacked import train_stacked
    except ModuleNotFoundError as exc:
        if exc.name != "scalelab.train.stacked":
            raise
        return None
    return train_stacked


def _member_loss(run_dir: Path) -> tuple[str, float | None]:
    """(status, final validation loss) of a member directory."""
    from scalelab.utils.io import read_json

    path = run_dir / "summary.json"
    if not path.is_file():
        return "pending", None
    s = read_json(path)
    loss = s.get("final_val_loss")
    ok = s.get("status") == "completed" and isinstance(loss, int | float) and math.isfinite(loss)
    return str(s.get("status")), float(loss) if ok else None


def _pending(run_dir: Path) -> bool:
    """Whether a member still needs training (a diverged one is not retried)."""
    return _member_loss(run_dir)[0] not in ("completed", "failed")


def run_sweep(cfg: SweepConfig, out_dir: str | Path) -> SweepResult:
    """Train every member of ``cfg`` under ``out_dir/members/`` (finished ones are kept,
    interrupted ones resumed), fit them, write ``out_dir/sweep.json``; the result."""
    from scalelab.data.prepare import prepare
    from scalelab.train.lock import dir_lock
    from scalelab.utils.io import atomic_write_json, ensure_dir

    out = ensure_dir(Path(out_dir), "sweep directory")
    with dir_lock(out, f"{out} is in use by another scalelab sweep"):
        base = cfg.base
        dataset = Path(base.dataset) if base.dataset else prepare(base.data, root=base.data_root)
        cfg = cfg.replace(base=base.replace(dataset=Path(dataset).resolve()))
        cfg.to_yaml(out / "sweep.yaml")
        members = plan_sweep(cfg)
        dirs = {m.id: out / "members" / m.id for m in members}
        by_size: dict[int, list[SweepMember]] = {}
        for m in members:
            by_size.setdefault(m.N, []).append(m)
        for group in by_size.values():  # size by size: one shape each
            todo = [m for m in group if _pending(dirs[m.id])]
            if todo:
                _train_members([m.config for m in todo], [dirs[m.id] for m in todo])
        rows = [
            {"N": m.N, "C": m.compute, "tokens": m.tokens, "lr": m.lr}
            | {"loss": _member_loss(dirs[m.id])[1]}
            for m in members
        ]
        try:
            result = fit_sweep(rows, basis=cfg.basis, bootstrap=cfg.bootstrap, seed=cfg.seed)
        except UserError:
            for r in rows:  # what was measured, before the one-line refusal
                print(f"N {r['N']:>9,}  lr {r['lr']:<9.3g} loss {r['loss'] or 'diverged'}")
            raise
        atomic_write_json(out / SWEEP_FILE, result.to_dict())
        return result
