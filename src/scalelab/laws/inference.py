"""Inference-aware allocation (Sardana et al. 2024) and the smallest model for a target loss.

Sardana, Portes, Doubov and Frankle (2024, "Beyond Chinchilla-Optimal: Accounting for
Inference in Language Model Scaling Laws", arXiv 2401.00448, Sec. 2) choose the model for
its whole life: at a target loss ``l`` and an inference demand of ``T`` tokens,

    (N*, D*) = argmin  k N D + 2 N T   subject to  L(N, D) = l,

training costing ``k N D`` FLOPs (k = 6, Kaplan et al. 2020, Sec. 2.1) and inference
``2 N`` FLOPs per token (a forward pass; the same sources). At ``T = 0`` this is the
compute-optimal (Chinchilla) model that reaches ``l``; as ``T`` grows the optimum moves to
smaller models trained on more tokens. There is no closed form; the paper solves it
numerically, and so does :func:`inference_optimal`: for each N on a log grid, the D that
reaches ``l`` (bisection on log D; the loss falls with D), then a bounded Brent refinement
of ``log(k N D(N) + 2 N T)`` around the best grid point.

:func:`smallest_model` answers "the smallest model that reaches loss ``l`` within a
training budget ``C``": the least N for which some D with ``k N D <= C`` reaches ``l``.
As the loss falls with D, that D is ``C/(kN)``, and the N is the root of
``L(N, C/(kN)) = l`` below the compute-optimal size at C (Brent). It is also the cheapest
model to serve (inference costs 2N per token).

Any fitted law in N and D works (Chinchilla, Kaplan's L(N, D), a custom law, the
data-constrained law with a cap on unique tokens).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.results import Result, register

INFERENCE_FLOPS_PER_TOKEN = 2.0
"""Inference FLOPs per parameter per served token: a forward pass costs ~2N FLOPs per
token (Kaplan et al. 2020, Sec. 2.1; Sardana et al. 2024, Sec. 2)."""

LOG_N_MAX = 60.0
"""Largest log N searched (N ~ 1e26)."""
LOG_D_MAX = 120.0
"""Largest log D searched for the tokens that reach a loss (D ~ 1e52)."""
_GRID = 1201


@register("inference_plan")
@dataclasses.dataclass(frozen=True)
class InferencePlan(Result):
    """For each target loss: the model minimising training plus inference FLOPs over
    ``inference_tokens`` served tokens, beside the compute-optimal model at that loss."""

    kind: ClassVar[str] = "inference_plan"
    loss: tuple[float, ...]
    inference_tokens: float
    n_opt: tuple[float, ...]
    d_opt: tuple[float, ...]
    compute_optimal_n: tuple[float, ...]
    """The compute-optimal (Chinchilla) N at the same loss (inference ignored)."""
    compute_optimal_d: tuple[float, ...]
    flops_per_nd: float = 6.0
    flops_per_token: float = INFERENCE_FLOPS_PER_TOKEN
    unique_tokens: float = math.inf
    compute: tuple[float, ...] = ()
    """The training budgets the losses came from (those of the compute-optimal models
    there), when the plan was asked for by compute."""

    def _cost(self, n: Sequence[float], d: Sequence[float]) -> dict[str, np.ndarray]:
        n_arr, d_arr = np.asarray(n), np.asarray(d)
        train = self.flops_per_nd * n_arr * d_arr
        infer = self.flops_per_token * n_arr * self.inference_tokens
        return {"train_flops": train, "inference_flops": infer, "total_flops": train + infer}

    def rows(self) -> list[dict[str, float]]:
        """One dict per loss: the plan, its FLOPs, the compute-optimal model's, the saving."""
        plan = self._cost(self.n_opt, self.d_opt)
        ref = self._cost(self.compute_optimal_n, self.compute_optimal_d)
        out = []
        for i, loss in enumerate(self.loss):
            row = {"loss": loss, "n_opt": self.n_opt[i], "d_opt": self.d_opt[i]}
            row["tokens_per_param"] = self.d_opt[i] / self.n_opt[i]
            row.update({k: float(v[i]) for k, v in plan.items()})
            row["compute_optimal_n"] = self.compute_optimal_n[i]
            row["compute_optimal_d"] = self.compute_optimal_d[i]
            row.update({f"compute_optimal_{k}": float(v[i]) for k, v in ref.items()})
            row["saving"] = 1.0 - row["total_flops"] / row["compute_optimal_total_flops"]
            out.append(row)
        return out

    def summary(self) -> str:
        t = self.inference_tokens
        lines = [
            f"inference-aware allocation (Sardana et al. 2024): least {self.flops_per_nd:g}ND "
            f"training + {self.flops_per_token:g}N x {t:.3g} served tokens at each loss",
            f"  {'loss':>8} {'plan':<16} {'N':>10} {'D':>10} {'tokens/param':>13} "
            f"{'train FLOPs':>12} {'infer FLOPs':>12} {'total FLOPs':>12}",
        ]
        if math.isfinite(self.unique_tokens):
            lines[0] += f", {self.unique_tokens:.3g} unique tokens"
        for i, r in enumerate(self.rows()):
            at = f"  (compute-optimal at C = {self.compute[i]:.3g})" if self.compute else ""
            ref = (r["compute_optimal_n"], r["compute_optimal_d"], "compute_optimal_")
            lines.append(_plan_line(f"{r['loss']:.4f}", "compute-optimal", r, *ref) + at)
            plan = _plan_line("", "inference-aware", r, r["n_opt"], r["d_opt"], "")
            lines.append(plan + f"  ({-100 * r['saving']:+.1f}% total)")
            lines.append(
                f"  -> serving {t:.3g} tokens at loss {r['loss']:.4f}: train a "
                f"{r['n_opt'] / r['compute_optimal_n']:.2f}x smaller model on "
                f"{r['d_opt'] / r['compute_optimal_d']:.2f}x the tokens "
                f"({100 * r['saving']:.1f}% less lifetime compute)"
            )
        return "\n".join(lines)


def _plan_line(loss: str, label: str, row: dict, n: float, d: float, pre: str) -> str:
    flops = (row[pre + k] for k in ("train_flops", "inference_flops", "total_flops"))
    return f"  {loss:>8} {label:<16} {n:>10.4g} {d:>10.4g} {d / n:>13.1f} " + " ".join(
        f"{f:>12.3g}" for f in flops
    )


@register("smallest_model")
@dataclasses.dataclass(frozen=True)
class SmallestModel(Result):
    """The smallest model reaching ``loss`` within ``compute`` training FLOPs (or why not)."""

    kind: ClassVar[str] = "smallest_model"
    loss: float
    compute: float
    reachable: bool
    n: float
    """Its parameters (nan when unreachable)."""
    d: float
    """Its training tokens, ``compute / (k n)`` (nan when unreachable)."""
    best_loss: float
    """The lowest loss at ``compute`` (the compute-optimal model's)."""
    best_n: float
    best_d: float
    inference_tokens: float = 0.0
    flops_per_nd: float = 6.0
    flops_per_token: float = INFERENCE_FLOPS_PER_TOKEN
    unique_tokens: float = math.inf

    def summary(self) -> str:
        best = f"N = {self.best_n:.4g}, D = {self.best_d:.4g}"
        if not self.reachable:
            return (
                f"loss {self.loss:.4f} is unreachable within C = {self.compute:.3g} training "
                f"FLOPs: the lowest loss at that budget is {self.best_loss:.4f} (compute-optimal "
                f"{best})"
            )
        line = (
            f"smallest model reaching loss {self.loss:.4f} within C = {self.compute:.3g} "
            f"training FLOPs: N = {self.n:.4g} trained on D = {self.d:.4g} tokens "
            f"({self.d / self.n:.1f} tokens/param); the compute-optimal model at C ({best}) "
            f"reaches {self.best_loss:.4f}"
        )
        if self.inference_tokens > 0:
            per = self.flops_per_token * self.inference_tokens
            line += (
                f"\n  serving {self.inference_tokens:.3g} tokens costs {per * self.n:.3g} FLOPs "
                f"with it ({per * self.best_n:.3g} with the compute-optimal model)"
            )
        return line


# ---------------------------------------------------------------------- the loss law


LossFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def loss_function(fit: Any, unique_tokens: float | None = None) -> tuple[LossFn, float]:
    """``(L(N, D) over arrays, k of C = k N D)`` of a fitted law in N and D; with
    ``unique_tokens`` (a data-constrained law only) the cap on unique data."""
    from scalelab.laws.constrained import unique_cap
    from scalelab.laws.fits import LawFit

    if not isinstance(fit, LawFit):
        raise UserError(
            f"a {getattr(fit, 'kind', type(fit).__name__)} result has no loss law L(N, D); "
            "fit a parametric law (chinchilla, data_constrained, ...)"
        )
    used = set(fit.variables) - {"U"}
    if not used <= {"N", "D", "C"} or len(used) < 2:
        raise UserError(f"this needs a loss law in two of N, D, C, not {fit.formula}")
    if fit.flops_per_nd is None:
        raise UserError("this needs a FLOP convention (C = k N D) saved with the fit")
    kw: dict[str, float] = {}
    if "U" in fit.variables:
        kw["U"] = unique_cap(unique_tokens)
    elif unique_tokens is not None:
        raise UserError(
            f"unique tokens need a data_constrained fit (scalelab fit TABLE --form "
            f"data_constrained), not a {fit.form} one"
        )

    def loss(n: np.ndarray, d: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(fit.predict(N=n, D=d, **kw), dtype=np.float64)

    return loss, float(fit.flops_per_nd)


def tokens_for_loss(loss: LossFn, n: np.ndarray, target: float) -> np.ndarray:
    """log D at which ``loss(n, D) = target``, per N (bisection on log D in [0, LOG_D_MAX];
    the loss falls with D): nan where no D reaches it, 0 where D = 1 already does."""
    n = np.asarray(n, dtype=np.float64)
    lo, hi = np.zeros_like(n), np.full_like(n, LOG_D_MAX)
    reach = loss(n, np.exp(hi)) <= target  # nan (a law gone negative): not reached
    done = loss(n, np.ones_like(n)) <= target
    for _ in range(64):  # 120 / 2^64: to float resolution of log D
        mid = 0.5 * (lo + hi)
        below = loss(n, np.exp(mid)) <= target
        hi, lo = np.where(below, mid, hi), np.where(below, lo, mid)
    return np.where(done, 0.0, np.where(reach, hi, np.nan))


def _log_cost(loss: LossFn, t: np.ndarray, target: float, k: float, inf_flops: float):
    """``(log(k N D + inf_flops N), log D)`` at ``log N = t`` with D reaching ``target``."""
    ld = tokens_for_loss(loss, np.exp(t), target)
    with np.errstate(over="ignore"):
        cost = t + np.log(k * np.exp(ld) + inf_flops)
    return np.where(np.isfinite(cost), cost, np.inf), ld


def _plan(loss: LossFn, target: float, k: float, inf_flops: float) -> tuple[float, float]:
    """(N, D) minimising ``k N D + inf_flops N`` on ``loss(N, D) = target``."""
    from scipy.optimize import minimize_scalar

    t = np.linspace(0.0, LOG_N_MAX, _GRID)
    cost, _ = _log_cost(loss, t, target, k, inf_flops)
    if not np.isfinite(cost).any():
        with np.errstate(all="ignore"):
            floor = float(loss(np.array([math.exp(LOG_N_MAX)]), np.array([math.exp(LOG_D_MAX)]))[0])
        raise UserError(
            f"loss {target:g} is unreachable by this law at any model size (it approaches "
            f"{floor:.4g} at best)"
        )
    i = int(np.argmin(cost))
    lo, hi = t[max(i - 1, 0)], t[min(i + 1, t.size - 1)]
    res = minimize_scalar(
        lambda x: float(_log_cost(loss, np.array([x]), target, k, inf_flops)[0][0]),
        bounds=(lo, hi),
        method="bounded",
        options={"xatol": 1e-10},
    )
    best_t = float(res.x) if res.fun <= cost[i] else float(t[i])
    ld = float(tokens_for_loss(loss, np.array([math.exp(best_t)]), target)[0])
    return math.exp(best_t), math.exp(ld)


def _targets(values: float | Sequence[float], what: str) -> list[float]:
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64)).ravel()
    if arr.size == 0 or not (np.isfinite(arr).all() and (arr > 0).all()):
        raise UserError(f"{what} must be positive numbers, got {values!r}")
    return [float(v) for v in arr]


def _served(tokens: float) -> float:
    t = float(tokens)
    if not (math.isfinite(t) and t >= 0):
        raise UserError(f"inference tokens must be a number >= 0, got {tokens!r}")
    return t


# ---------------------------------------------------------------------- public API


def inference_optimal(
    fit: Any,
    *,
    loss: float | Sequence[float],
    inference_tokens: float,
    unique_tokens: float | None = None,
    flops_per_token: float = INFERENCE_FLOPS_PER_TOKEN,
) -> InferencePlan:
    """The (N, D) minimising ``k N D + flops_per_token N inference_tokens`` among the models
    with ``L(N, D) = loss`` (Sardana et al. 2024, Sec. 2), per target loss, beside the
    compute-optimal model at the same loss (``inference_tokens = 0``)."""
    fn, k = loss_function(fit, unique_tokens)
    served = _served(inference_tokens)
    targets = _targets(loss, "target losses")
    plans = [_plan(fn, lv, k, flops_per_token * served) for lv in targets]
    refs = [_plan(fn, lv, k, 0.0) for lv in targets]
    return InferencePlan(
        loss=tuple(targets),
        inference_tokens=served,
        n_opt=tuple(p[0] for p in plans),
        d_opt=tuple(p[1] for p in plans),
        compute_optimal_n=tuple(r[0] for r in refs),
        compute_optimal_d=tuple(r[1] for r in refs),
        flops_per_nd=k,
        flops_per_token=float(flops_per_token),
        unique_tokens=math.inf if unique_tokens is None else float(unique_tokens),
    )


def inference_optimal_at_compute(
    fit: Any,
    *,
    compute: float | Sequence[float],
    inference_tokens: float,
    unique_tokens: float | None = None,
    flops_per_token: float = INFERENCE_FLOPS_PER_TOKEN,
) -> InferencePlan:
    """What to train instead of the compute-optimal model at each budget C when it will
    serve ``inference_tokens`` tokens: the model reaching the same loss at the least
    training plus inference compute (more training than C, less in all)."""
    budgets = _targets(compute, "compute budgets")
    allocs = [_compute_optimal(fit, c, unique_tokens) for c in budgets]
    plan = inference_optimal(
        fit,
        loss=[a[2] for a in allocs],
        inference_tokens=inference_tokens,
        unique_tokens=unique_tokens,
        flops_per_token=flops_per_token,
    )
    return dataclasses.replace(
        plan,
        compute=tuple(budgets),
        compute_optimal_n=tuple(a[0] for a in allocs),
        compute_optimal_d=tuple(a[1] for a in allocs),
    )


def _compute_optimal(fit: Any, c: float, unique_tokens: float | None) -> tuple[float, float, float]:
    """(N, D, loss) of the fit's compute-optimal model at ``c``."""
    loss_function(fit, unique_tokens)  # the same checks as the rest
    kw = {} if unique_tokens is None else {"unique_tokens": unique_tokens}
    alloc = fit.optimal([c], **kw)
    return alloc.n_opt[0], alloc.d_opt[0], alloc.loss[0]


def smallest_model(
    fit: Any,
    *,
    loss: float,
    compute: float,
    inference_tokens: float = 0.0,
    unique_tokens: float | None = None,
    flops_per_token: float = INFERENCE_FLOPS_PER_TOKEN,
) -> SmallestModel:
    """The least N for which some D with ``k N D <= compute`` reaches ``loss`` (D is then
    ``compute / (k N)``); ``reachable=False`` with the lowest loss at ``compute`` when none
    does. ``inference_tokens`` only adds the serving cost to the summary."""
    from scipy.optimize import brentq

    fn, k = loss_function(fit, unique_tokens)
    (target,), (c,) = _targets(loss, "the target loss"), _targets(compute, "the compute budget")
    best_n, best_d, best_loss = _compute_optimal(fit, c, unique_tokens)
    common = {
        "loss": target,
        "compute": c,
        "best_loss": float(best_loss),
        "best_n": float(best_n),
        "best_d": float(best_d),
        "inference_tokens": _served(inference_tokens),
        "flops_per_nd": k,
        "flops_per_token": float(flops_per_token),
        "unique_tokens": math.inf if unique_tokens is None else float(unique_tokens),
    }
    if best_loss > target:
        return SmallestModel(reachable=False, n=math.nan, d=math.nan, **common)

    def gap(t: float) -> float:
        n = np.array([math.exp(t)])
        return float(fn(n, c / (k * n))[0]) - target

    t_best = math.log(best_n)
    if gap(0.0) <= 0:  # even N = 1 reaches it
        t = 0.0
    elif gap(t_best) >= 0:  # only the compute-optimal model itself
        t = t_best
    else:
        t = brentq(gap, 0.0, t_best, xtol=1e-13, rtol=4 * np.finfo(float).eps)
    n = math.exp(t)
    return SmallestModel(reachable=True, n=n, d=c / (k * n), **common)


def optimal_report(
    fit: Any,
    *,
    compute: Sequence[float] = (),
    loss: Sequence[float] = (),
    inference_tokens: float | None = None,
    unique_tokens: float | None = None,
) -> tuple[Any, str]:
    """``scalelab optimal`` with ``--target-loss`` and/or ``--inference-tokens``: the
    result(s) and their text (see :func:`inference_optimal`, :func:`smallest_model`)."""
    if loss and compute:
        n = max(len(loss), len(compute))
        if len(loss) not in (1, n) or len(compute) not in (1, n):
            raise UserError("--target-loss and --compute need equal lengths (or a single value)")
        pairs = zip(list(loss) * (n // len(loss)), list(compute) * (n // len(compute)))
        served = 0.0 if inference_tokens is None else inference_tokens
        res = [
            smallest_model(
                fit, loss=lv, compute=c, inference_tokens=served, unique_tokens=unique_tokens
            )
            for lv, c in pairs
        ]
        return res, "\n".join(r.summary() for r in res)
    if inference_tokens is None:
        raise UserError(
            "--target-loss needs --compute C (the smallest model reaching it within C) or "
            "--inference-tokens T (the cheapest model to train and serve at that loss)"
        )
    kw = {"inference_tokens": inference_tokens, "unique_tokens": unique_tokens}
    if loss:
        plan = inference_optimal(fit, loss=list(loss), **kw)
    elif compute:
        plan = inference_optimal_at_compute(fit, compute=list(compute), **kw)
    else:
        raise UserError("--inference-tokens needs --compute C or --target-loss L")
    return plan, plan.summary()


__all__ = [
    "INFERENCE_FLOPS_PER_TOKEN",
    "InferencePlan",
    "SmallestModel",
    "inference_optimal",
    "inference_optimal_at_compute",
    "loss_function",
    "optimal_report",
    "smallest_model",
    "tokens_for_loss",
]
