"""Model comparison: in-sample AIC/BIC and held-out error of several law forms."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit
from scalelab.laws.results import Result, register
from scalelab.laws.table import RunTable


@dataclasses.dataclass(frozen=True)
class ModelScore(Result):
    kind: ClassVar[str] = "model_score"
    name: str
    formula: str
    n_params: int
    objective: float
    rmse_log: float
    aic: float
    bic: float
    heldout_rmse_log: float
    """RMS log-error on the held-out points (fit on the rest)."""
    heldout_mape: float
    """Mean absolute relative error on the held-out points."""
    converged: bool


@register("model_comparison")
@dataclasses.dataclass(frozen=True)
class ModelComparison(Result):
    kind: ClassVar[str] = "model_comparison"
    scores: tuple[ModelScore, ...]
    holdout: str
    n_heldout: int

    def best(self, by: str = "heldout_rmse_log") -> ModelScore:
        return min(self.scores, key=lambda s: getattr(s, by))

    def summary(self) -> str:
        head = f"{'model':<24}{'k':>3}{'rmse(log)':>11}{'AIC':>10}{'BIC':>10}{'held-out rmse':>15}{'MAPE':>9}"
        lines = [f"model comparison (held out: {self.holdout}, {self.n_heldout} points)", head]
        for s in sorted(self.scores, key=lambda s: s.heldout_rmse_log):
            lines.append(
                f"{s.name:<24}{s.n_params:>3}{s.rmse_log:>11.4g}{s.aic:>10.2f}{s.bic:>10.2f}"
                f"{s.heldout_rmse_log:>15.4g}{s.heldout_mape:>9.3%}"
            )
        return "\n".join(lines)


def compare_models(
    table: RunTable,
    models: Mapping[str, Callable[[RunTable], LawFit]],
    *,
    holdout: int | float = 0.2,
    by: str = "C",
) -> ModelComparison:
    """Fit each model on the whole table (AIC/BIC) and on the smaller runs (held-out error).

    ``models`` maps a name to a fitting function (``lambda t: fit_chinchilla(t)``). The
    held-out set is the ``holdout`` largest runs by ``by`` (a count, or a fraction).
    """
    if not models:
        raise UserError("compare_models needs at least one model")
    key = getattr(table, by, None)
    if key is None:
        raise UserError(f"{table.source}: cannot hold out by {by}: the table has no {by}")
    k = (
        int(round(holdout * len(table)))
        if isinstance(holdout, float) and holdout < 1
        else int(holdout)
    )
    if not 1 <= k < len(table):
        raise UserError(f"holdout must leave points on both sides, got {holdout} of {len(table)}")
    order = np.argsort(key, kind="stable")
    train, test = table.subset(np.sort(order[:-k])), table.subset(np.sort(order[-k:]))
    scores = []
    for name, fn in models.items():
        full = fn(table)
        part = fn(train)
        pred = part.predict(**{v: getattr(test, v) for v in part.variables if v in ("N", "D", "C")})
        err = np.log(pred) - np.log(test.loss)
        scores.append(
            ModelScore(
                name=name,
                formula=full.formula,
                n_params=len(full.theta),
                objective=full.objective,
                rmse_log=full.rmse_log,
                aic=full.aic,
                bic=full.bic,
                heldout_rmse_log=float(np.sqrt(np.mean(err**2))),
                heldout_mape=float(np.mean(np.abs(pred / test.loss - 1.0))),
                converged=full.diagnostics.converged and part.diagnostics.converged,
            )
        )
    return ModelComparison(scores=tuple(scores), holdout=f"largest {k} by {by}", n_heldout=k)
