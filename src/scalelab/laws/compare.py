"""Model comparison of law forms.

:func:`compare_forms` (``scalelab compare``) judges each form by its rolling-origin
extrapolation error (fit on the smallest compute levels, predict each larger one) and shows
its in-sample fit beside it; AIC/BIC only where their Gaussian least-squares assumption holds.
:func:`compare_models` (0.1) holds out the largest runs once and reports AIC/BIC always.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fit import TableConfig
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
        pred = part.predict(
            **{v: getattr(test, v) for v in part.variables if v in ("N", "D", "C", "U")}
        )
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


# ---------------------------------------------------------------- rolling-origin comparison
@dataclasses.dataclass(frozen=True)
class FormScore(Result):
    """One law form: rolled-forward (out-of-sample) error first, in-sample fit beside it."""

    kind: ClassVar[str] = "form_score"
    name: str
    formula: str
    n_params: int
    rolling_mape: float
    """Mean absolute relative error over the rolled-forward predictions (runs weighted equally)."""
    rolling_rmse_log: float
    """RMS of the per-level mean log errors of the rolled-forward predictions."""
    far_mape: float
    """The same MAPE on the predictions at the largest distance of each cut's farthest level."""
    form_sd_per_decade: float
    n_cuts: int
    objective: float
    """In-sample: the Huber objective of the fit on every point."""
    rmse_log: float
    aic: float
    """NaN unless every residual is inside the Huber delta (the fit is then least squares,
    which AIC/BIC assume)."""
    bic: float
    converged: bool
    warnings: tuple[str, ...] = ()


@register("form_comparison")
@dataclasses.dataclass(frozen=True)
class FormComparison(Result):
    kind: ClassVar[str] = "form_comparison"
    scores: tuple[FormScore, ...]
    n_levels: int
    level_source: str
    failures: tuple[str, ...] = ()

    def best(self) -> FormScore:
        return min(self.scores, key=lambda s: s.rolling_mape)

    def summary(self) -> str:
        lines = [
            f"law forms compared by rolling-origin extrapolation over {self.n_levels} compute "
            f"levels ({self.level_source}): fit on the smallest levels, predict each larger one",
            f"  {'form':<12}{'k':>3}{'rolled |err|':>13}{'farthest':>10}{'form sd/dec':>12}"
            f"{'cuts':>5}  |{'objective':>11}{'rmse(log)':>10}{'AIC':>9}{'BIC':>9}",
        ]
        for s in sorted(self.scores, key=lambda s: s.rolling_mape):
            aic = f"{s.aic:>9.1f}{s.bic:>9.1f}" if np.isfinite(s.aic) else f"{'-':>9}{'-':>9}"
            lines.append(
                f"  {s.name:<12}{s.n_params:>3}{s.rolling_mape:>13.2%}{s.far_mape:>10.2%}"
                f"{s.form_sd_per_decade:>12.4f}{s.n_cuts:>5}  |{s.objective:>11.4g}"
                f"{s.rmse_log:>10.4f}{aic}{'' if s.converged else '  (not converged)'}"
            )
        lines.append(
            "  headline: out-of-sample error (left); in-sample fit (right). AIC/BIC assume "
            "Gaussian least squares: shown only where every residual lies inside the Huber "
            "delta, where the Huber fit is least squares."
        )
        lines.extend(f"  {s.name}: {w}" for s in self.scores for w in s.warnings)
        lines.extend(f"  failed: {f}" for f in self.failures)
        return "\n".join(lines)


_NAMED = ("chinchilla", "kaplan_n", "kaplan_d", "kaplan_c", "kaplan_nd", "power_law")
# Not laws of a run table's N, D, C: a custom form needs its expression, the fine-tuning
# law is over model size and fine-tuning examples.
_NOT_COMPARABLE = ("custom", "finetune_law")


def form_fitter(name: str, **kwargs: Any) -> Callable[[RunTable], LawFit]:
    """A fitting function for a form name: the named fitters, else any registered form."""
    from scalelab.laws.validation import resolve_fitter

    try:
        return resolve_fitter(name, **kwargs)
    except UserError:
        from scalelab.laws.fits import fit_form
        from scalelab.laws.forms import PARAMETRIC_FORMS, make_form

        if name not in PARAMETRIC_FORMS or name in _NOT_COMPARABLE:
            named = "chinchilla, kaplan_n/d/c/nd, power_n/d/c"
            others = [f for f in PARAMETRIC_FORMS if f not in _NAMED + _NOT_COMPARABLE]
            raise UserError(
                f"unknown law form {name!r}; known: {named}, {', '.join(others)}"
            ) from None
        form = make_form(name)
        return lambda t: fit_form(form, t, **kwargs)


def compare_forms(
    table: RunTable,
    forms: Sequence[str] | Mapping[str, Callable[[RunTable], LawFit]],
    *,
    min_train_levels: int = 2,
    max_cuts: int = 8,
    by: str = "auto",
) -> FormComparison:
    """Rolling-origin extrapolation error of each form (the headline) with its in-sample fit.

    ``forms`` is a list of names (``chinchilla``, ``kaplan_nd``, ``power_c``, ...) or a mapping
    name -> fitting function. Every form is judged on the same cuts of the same compute
    levels (:func:`~scalelab.laws.calibration.rolling_origin`).
    """
    from scalelab.laws.calibration import rolling_origin

    fitters = dict(forms) if isinstance(forms, Mapping) else {f: form_fitter(f) for f in forms}
    if not fitters:
        raise UserError("compare needs at least one law form")
    scores, failures = [], []
    n_levels, how = 0, ""
    for name, fn in fitters.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                full = fn(table)
                cal = rolling_origin(
                    table, full, refit=fn, min_train_levels=min_train_levels, max_cuts=max_cuts,
                    by=by,
                )  # fmt: skip
        except UserError as exc:
            failures.append(f"{name}: {exc}")
            continue
        n_levels, how = cal.n_levels, cal.level_source
        scores.append(_form_score(name, full, cal))
    if not scores:
        raise UserError(f"{table.source}: no form could be compared ({'; '.join(failures)})")
    return FormComparison(
        scores=tuple(scores), n_levels=n_levels, level_source=how, failures=tuple(failures)
    )


def _form_score(name: str, full: LawFit, cal: Any) -> FormScore:
    pts = cal.points
    w = np.array([p.n for p in pts], dtype=np.float64)
    mape = float(np.sum(w * [p.mean_abs_rel_error for p in pts]) / w.sum())
    far = [
        max((p for p in pts if p.train_levels == j), key=lambda p: p.distance)
        for j in cal.cut_levels
    ]
    resid = np.abs(np.asarray(full.residuals))
    least_squares = bool(resid.size and resid.max() <= full.delta)
    return FormScore(
        name=name,
        formula=full.formula,
        n_params=len(full.theta),
        rolling_mape=mape,
        rolling_rmse_log=float(np.sqrt(np.mean([p.mean_log_error**2 for p in pts]))),
        far_mape=float(np.mean([p.mean_abs_rel_error for p in far])),
        form_sd_per_decade=cal.form_sd_per_decade,
        n_cuts=len(cal.cut_levels),
        objective=full.objective,
        rmse_log=full.rmse_log,
        aic=full.aic if least_squares else math.nan,
        bic=full.bic if least_squares else math.nan,
        converged=full.diagnostics.converged,
        warnings=tuple(full.diagnostics.warnings),
    )


@dataclasses.dataclass(kw_only=True)
class CompareConfig(TableConfig):
    """Options of ``scalelab compare``."""

    forms: tuple[str, ...] = ("chinchilla", "kaplan_nd", "kaplan_n", "kaplan_c")
    """Law forms to compare (comma-separated): chinchilla, kaplan_n/d/c/nd, power_n/d/c, data_constrained."""
    min_train_levels: int = 2
    """Fewest compute levels a rolled-forward fit is trained on."""
    max_cuts: int = 8
    """Rolled-forward cuts (the last ones: those that train on the most levels)."""
    out: Path | None = None
    """Write the comparison as JSON here."""

    def validate(self) -> None:
        if not self.forms:
            raise UserError("--forms needs at least one law form")
        if self.min_train_levels < 1 or self.max_cuts < 1:
            raise UserError("--min-train-levels and --max-cuts must be at least 1")


def run_compare(cfg: CompareConfig) -> tuple[FormComparison, str]:
    """Compare the configured forms on the table; save the comparison when ``out`` is set."""
    if cfg.out is not None:
        from scalelab.utils.io import check_output_file

        check_output_file(cfg.out, "--out", example="compare.json")
    for name in cfg.forms:
        form_fitter(name)  # an unknown name fails before anything is fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        table = cfg.read_table()
    result = compare_forms(
        table, list(cfg.forms), min_train_levels=cfg.min_train_levels, max_cuts=cfg.max_cuts
    )
    lines = [result.summary()]
    if cfg.out is not None:
        from scalelab.utils.io import atomic_write_json

        atomic_write_json(cfg.out, result.to_dict())
        lines.append(f"wrote {cfg.out}")
    return result, "\n".join(lines)
