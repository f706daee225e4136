"""Extrapolation checks: fit on the smaller runs, predict the larger ones, report the error.

A scaling law is only as good as its extrapolation. Two protocols:

- ``leave-largest-out``: hold out the largest runs (the top level of ``by``, or the ``k``
  largest points) and predict them from a fit to the rest.
- ``rollout``: move a cutoff up through the levels of ``by`` (model sizes or compute
  levels of a ladder; quantiles when the values are all distinct) and, at each cutoff, fit
  on everything below and predict everything above.

Each prediction records its *extrapolation distance*: decades of ``by`` beyond the largest
training value, so error can be read against distance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.results import Result, register
from scalelab.laws.table import RunTable


@dataclasses.dataclass(frozen=True)
class ExtrapolationPoint(Result):
    kind: ClassVar[str] = "extrapolation_point"
    cutoff: float
    """Largest value of ``by`` in the training set."""
    row: int
    value: float
    """This point's value of ``by``."""
    distance: float
    """log10(value / cutoff): decades of extrapolation."""
    observed: float
    predicted: float
    rel_error: float
    """predicted / observed - 1."""


@register("extrapolation")
@dataclasses.dataclass(frozen=True)
class ExtrapolationResult(Result):
    kind: ClassVar[str] = "extrapolation"
    mode: str
    by: str
    points: tuple[ExtrapolationPoint, ...]
    n_fits: int
    failures: tuple[str, ...] = ()

    def by_cutoff(self) -> list[dict[str, float]]:
        """Per cutoff: points predicted, median distance, median and max |relative error|."""
        out = []
        for cut in sorted({p.cutoff for p in self.points}):
            pts = [p for p in self.points if p.cutoff == cut]
            errs = np.abs([p.rel_error for p in pts])
            out.append(
                {
                    "cutoff": cut,
                    "n": len(pts),
                    "median_distance": float(np.median([p.distance for p in pts])),
                    "median_abs_rel_error": float(np.median(errs)),
                    "max_abs_rel_error": float(errs.max()),
                }
            )
        return out

    def summary(self) -> str:
        lines = [f"extrapolation check ({self.mode}, by {self.by}): {self.n_fits} fits"]
        lines.append(
            f"  {'cutoff':>10} {'n':>4} {'decades':>8} {'median|err|':>12} {'max|err|':>9}"
        )
        for row in self.by_cutoff():
            lines.append(
                f"  {row['cutoff']:>10.3g} {row['n']:>4d} {row['median_distance']:>8.2f} "
                f"{row['median_abs_rel_error']:>12.3%} {row['max_abs_rel_error']:>9.3%}"
            )
        lines.extend(f"  failed: {f}" for f in self.failures)
        return "\n".join(lines)


def resolve_fitter(
    fit_fn: str | Callable[[RunTable], Any], **kwargs: Any
) -> Callable[[RunTable], Any]:
    """A form name (``"chinchilla"``, ``"kaplan_n"``, ``"power_c"``, ...) or a callable."""
    if callable(fit_fn):
        return fit_fn
    from scalelab.laws.chinchilla import fit_chinchilla
    from scalelab.laws.powerlaw import fit_kaplan, fit_power_law

    name = str(fit_fn)
    if name == "chinchilla":
        return lambda t: fit_chinchilla(t, **kwargs)
    if name in ("kaplan_n", "kaplan_d", "kaplan_c", "kaplan_nd"):
        return lambda t: fit_kaplan(t, variable=name.split("_", 1)[1].upper(), **kwargs)
    if name in ("power_n", "power_d", "power_c"):
        return lambda t: fit_power_law(t, variable=name[-1].upper(), **kwargs)
    raise UserError(f"unknown law form {name!r} for an extrapolation check")


def _levels(values: np.ndarray, rtol: float = 0.1) -> np.ndarray:
    """Cluster label per value (sorted ascending), joining neighbours within 1 + rtol."""
    lv = np.log(values)
    order = np.argsort(lv)
    labels = np.empty(values.size, dtype=np.int64)
    g = 0
    for j, i in enumerate(order):
        if j > 0 and lv[i] - lv[order[j - 1]] > math.log1p(rtol):
            g += 1
        labels[i] = g
    return labels


def extrapolation_check(
    table: RunTable,
    fit_fn: str | Callable[[RunTable], Any] = "chinchilla",
    *,
    mode: str = "leave-largest-out",
    holdout: str | int = "largest",
    by: str = "C",
    min_train_levels: int = 3,
    max_cutoffs: int = 5,
    **fit_kwargs: Any,
) -> ExtrapolationResult:
    """Fit on smaller runs, predict larger ones; errors against extrapolation distance.

    ``mode`` is ``"leave-largest-out"`` (``holdout`` = ``"largest"``: the top level of
    ``by``, also spelled ``"largest-compute"``/``"largest-params"``/``"largest-tokens"``
    to set ``by``; or an int ``k``: the ``k`` largest points) or ``"rollout"`` (cutoffs at the
    level boundaries of ``by`` from ``min_train_levels`` up, at most ``max_cutoffs`` of
    them, or at quantiles 50-90% when nearly every value is distinct).
    """
    aliases = {"largest-compute": "C", "largest-params": "N", "largest-tokens": "D"}
    if isinstance(holdout, str) and holdout in aliases:
        holdout, by = "largest", aliases[holdout]
    if by not in ("N", "D", "C"):
        raise UserError(f"extrapolation 'by' must be N, D or C, got {by!r}")
    table.require(by, what=f"an extrapolation check by {by}")
    fit = resolve_fitter(fit_fn, **fit_kwargs)
    values = getattr(table, by)
    cutoffs = _train_masks(table, values, mode, holdout, by, min_train_levels, max_cutoffs)
    points: list[ExtrapolationPoint] = []
    failures: list[str] = []
    n_fits = 0
    for train_mask in cutoffs:
        test_mask = ~train_mask
        if train_mask.sum() == 0 or test_mask.sum() == 0:
            continue
        cut = float(values[train_mask].max())
        try:
            result = fit(table.subset(train_mask))
        except UserError as exc:
            failures.append(f"cutoff {cut:.3g}: {exc}")
            continue
        n_fits += 1
        points += _predict_held_out(result, table.subset(test_mask), by, cut)
    if n_fits == 0:
        raise UserError(f"{table.source}: no extrapolation fit succeeded ({'; '.join(failures)})")
    return ExtrapolationResult(
        mode=mode, by=by, points=tuple(points), n_fits=n_fits, failures=tuple(failures)
    )


def _train_masks(
    table: RunTable,
    values: np.ndarray,
    mode: str,
    holdout: str | int,
    by: str,
    min_train_levels: int,
    max_cutoffs: int,
) -> list[np.ndarray]:
    """The training set (a boolean mask over ``table``) of every cutoff ``mode`` asks for."""
    labels = _levels(values)
    n_levels = int(labels.max()) + 1
    cutoffs: list[np.ndarray] = []
    if mode == "leave-largest-out":
        if holdout == "largest":
            if n_levels < 2:
                raise UserError(
                    f"{table.source}: all runs share one level of {by}; nothing to hold out"
                )
            cutoffs.append(labels < n_levels - 1)
        else:
            k = int(holdout)
            if not 1 <= k < len(table):
                raise UserError(f"holdout must be between 1 and {len(table) - 1}, got {holdout}")
            order = np.argsort(values, kind="stable")
            mask = np.ones(len(table), dtype=bool)
            mask[order[-k:]] = False
            cutoffs.append(mask)
    elif mode == "rollout":
        if n_levels <= max(12, len(table) // 3):
            starts = list(range(min_train_levels, n_levels))[-max_cutoffs:]
            if not starts:
                raise UserError(
                    f"{table.source}: {n_levels} levels of {by}; rollout needs more than "
                    f"min_train_levels={min_train_levels}"
                )
            cutoffs.extend(labels < j for j in starts)
        else:
            qs = np.quantile(values, np.linspace(0.5, 0.9, max_cutoffs))
            cutoffs.extend(values <= q for q in qs)
    else:
        raise UserError(f"mode must be 'leave-largest-out' or 'rollout', got {mode!r}")
    return cutoffs


def _predict_held_out(result: Any, test: RunTable, by: str, cut: float) -> list[ExtrapolationPoint]:
    """The fitted law's prediction for every held-out run, with its extrapolation distance."""
    pred = result.predict(
        **{
            v: getattr(test, v)
            for v in ("N", "D", "C")
            if getattr(test, v) is not None and v in result.variables
        }
    )
    points = []
    for i in range(len(test)):
        v = float(getattr(test, by)[i])
        points.append(
            ExtrapolationPoint(
                cutoff=cut,
                row=int(test.rows[i]),
                value=v,
                distance=math.log10(v / cut),
                observed=float(test.loss[i]),
                predicted=float(pred[i]),
                rel_error=float(pred[i] / test.loss[i] - 1.0),
            )
        )
    return points
