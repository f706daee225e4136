"""The fine-tuning scaling law of Zhang et al. (2024): model size times fine-tuning data.

Zhang, Liu, Cherry & Firat (2024), "When Scaling Meets LLM Finetuning: The Effect of Data,
Model and Finetuning Method" (ICLR 2024, arXiv 2402.17193), Sec. 3, Eq. (1), the
*multiplicative joint scaling law*::

    L(X, D_f) = A * 1/X^alpha * 1/D_f^beta + E

with ``D_f`` the fine-tuning data size and ``X`` one other scaling factor: the pretrained
model's size (their 1B-16B models), its pretraining data, or the number of PET parameters.
They fit it to the fine-tuned model's test-set perplexity and judge it by the mean absolute
deviation on the fitting data (Delta_e) and on held-out data (Delta_h: the largest model,
left out of the fit; their Fig. 2).

Here ``X`` is the rung's non-embedding parameter count ``N`` (Kaplan et al. 2020) and
``D_f`` the number of labelled training examples; the response is what the caller gives
(:data:`RESPONSES`: test cross-entropy by default, its perplexity, or the error rate
``1 - F1`` / ``1 - accuracy``). In a :class:`~scalelab.laws.table.RunTable` the law's
variables are ``N`` and ``D`` (``D`` holding ``D_f``, fine-tuning *examples*, not tokens;
the table has no FLOP convention).

:func:`fit_finetune_law` fits it with the shared multi-start fit of :mod:`.fits` (least
squares on log-residuals by default, as for the other small downstream tables of
:mod:`.downstream`), attaches a bootstrap over points (percentile intervals), adds
Gauss-Newton standard errors, and runs the extrapolation check of Zhang et al.: fit
without the largest model, predict it.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import types
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit, fit_form
from scalelab.laws.forms import LawForm, _exp, _lse_weights
from scalelab.laws.results import Interval, Result, check_level, register
from scalelab.laws.table import RunTable, table_from_arrays

#: What a fine-tuning law can be fitted to (name -> label used in summaries and reports).
RESPONSES = {
    "loss": "test cross-entropy (nats)",
    "perplexity": "test perplexity, exp(cross-entropy) (the indicator of Zhang et al. 2024)",
    "error": "test error rate, 1 - F1 or 1 - accuracy",
}

# Start grid: exponents over the span of Hoffmann et al.'s (2022, App. D.2) grid, 0-2, on a
# log-like spacing (fine-tuning exponents are often small), and the offset E as fractions
# of the smallest observed value (as the offset power law of .forms).
_EXPONENTS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0)
_E_FRACTIONS = (0.001, 0.25, 0.5, 0.75, 0.9, 0.98)


class FinetuneLawForm(LawForm):
    """``L = A / (N^alpha D^beta) + E`` (Zhang et al. 2024, Eq. 1), ``D`` = fine-tuning examples.

    theta = ``(a, e, alpha, beta)`` with ``a = log A``, ``e = log E``; the log-prediction
    is ``LSE(a - alpha log N - beta log D, e)``, whose Jacobian is exact:
    ``[w1, w2, -w1 log N, -w1 log D]`` with ``w1, w2`` the softmax weights of the two terms.
    """

    name = "finetune_law"
    variables = ("N", "D")
    theta_names = ("a", "e", "alpha", "beta")
    formula = "L = A / (N^alpha * D^beta) + E  (N: model parameters, D: fine-tuning examples)"
    offset_param = "E"
    exponent_params = ("alpha", "beta")

    def log_pred(self, theta: np.ndarray, data: Any) -> tuple[np.ndarray, np.ndarray]:
        a, e, al, be = (theta[:, i : i + 1] for i in range(4))  # each [b, 1]
        ln, ld = np.log(data["N"])[None, :], np.log(data["D"])[None, :]  # [1, P]
        t1 = a - al * ln - be * ld  # [b, P]
        lp, (w1, w2) = _lse_weights(t1, np.broadcast_to(e, t1.shape))
        jac = np.stack([w1, w2, -w1 * ln, -w1 * ld], axis=-1)  # [b, P, 4]
        return lp, jac

    def to_public(self, theta: np.ndarray) -> dict[str, float]:
        a, e, al, be = (float(t) for t in theta)
        return {"A": _exp(a), "alpha": al, "beta": be, "E": _exp(e)}

    def grid(self, data: Any, log_y: np.ndarray) -> np.ndarray:
        """Starts through the median point: for each (alpha, beta, E) the coefficient that
        puts the law through (median log N, median log D, median L); plus least squares on
        ``log L = a - alpha log N - beta log D`` with E near 0. Columns ``(a, e, alpha, beta)``."""
        ln, ld = np.log(data["N"]), np.log(data["D"])
        y = np.exp(log_y)
        x_med, d_med = float(np.median(ln)), float(np.median(ld))
        y_med, y_min = float(np.exp(np.median(log_y))), float(y.min())
        design = np.column_stack([np.ones_like(ln), -ln, -ld])
        (c0, al0, be0), *_ = np.linalg.lstsq(design, log_y, rcond=None)
        starts = [[c0, math.log(1e-3 * y_min), al0, be0]]
        for al, be, frac in itertools.product(_EXPONENTS, _EXPONENTS, _E_FRACTIONS):
            e_val = frac * y_min
            if y_med - e_val <= 0:
                continue
            starts.append(
                [math.log(y_med - e_val) + al * x_med + be * d_med, math.log(e_val), al, be]
            )
        return np.array(starts, dtype=np.float64)


# ====================================================================== results


@dataclasses.dataclass(frozen=True)
class HeldOutPoint(Result):
    """One point of the held-out model, predicted by the law fitted without that model."""

    kind: ClassVar[str] = "finetune_held_out_point"
    N: float  # noqa: N815 - the quantity's name
    D_f: float  # noqa: N815
    observed: float
    predicted: float
    lo: float
    """Percentile interval of the law (bootstrap of the reduced fit); nan without one."""
    hi: float
    pred_lo: float
    """Prediction interval of a new run: the law's resamples times a drawn residual."""
    pred_hi: float
    rel_error: float
    """predicted / observed - 1."""


@dataclasses.dataclass(frozen=True)
class FinetuneHoldout(Result):
    """The extrapolation check of Zhang et al. (2024, Fig. 2): fit without the largest
    model, predict its every label count."""

    kind: ClassVar[str] = "finetune_holdout"
    held_out_N: float  # noqa: N815
    fit_N_max: float  # noqa: N815
    """Largest N the reduced fit saw."""
    distance: float
    """log10(held_out_N / fit_N_max): decades of extrapolation in model size."""
    n_fit: int
    points: tuple[HeldOutPoint, ...]
    mad: float
    """Mean absolute deviation on the held-out points (Zhang et al.'s Delta_h)."""
    mean_abs_rel_error: float
    law: LawFit
    """The reduced fit (without the held-out model)."""
    level: float = 0.95


@register("finetune_law_fit")
@dataclasses.dataclass(frozen=True)
class FinetuneLaw(Result):
    """A fitted fine-tuning law with its uncertainty and its extrapolation check."""

    kind: ClassVar[str] = "finetune_law_fit"
    law: LawFit
    """The law on every point, with its bootstrap over points attached (when run)."""
    response: str
    """What was fitted: a key of :data:`RESPONSES`."""
    se: dict[str, float]
    """Gauss-Newton standard errors of the published parameters (delta method through
    A = e^a, E = e^e): residual variance RSS/(n - 4) times (J^T J)^-1 on the log scale."""
    mad: float
    """Mean absolute deviation of the law on the fitted points (Zhang et al.'s Delta_e)."""
    holdout: FinetuneHoldout | None = None
    holdout_note: str = ""
    """Why there is no extrapolation check (empty when there is one)."""

    @property
    def params(self) -> dict[str, float]:
        return dict(self.law.params)

    @property
    def intervals(self) -> dict[str, Interval]:
        """Bootstrap percentile intervals per parameter (empty without a bootstrap)."""
        boot = self.law.bootstrap
        return dict(getattr(boot, "intervals", {}) or {})

    def predict(self, N: Any, D_f: Any) -> np.ndarray:  # noqa: N803 - the quantities
        """The law at model sizes ``N`` and label counts ``D_f`` (broadcast together)."""
        return self.law.predict(N=N, D=D_f)

    def summary(self) -> str:
        p = self.params
        lines = [
            f"fine-tuning law (Zhang et al. 2024, Eq. 1) of the {RESPONSES.get(self.response, self.response)}:",
            f"  L = {p['A']:.4g} / (N^{p['alpha']:.4f} * D_f^{p['beta']:.4f}) + {p['E']:.4g}"
            f"  ({self.law.n_points} points, rmse(log) {self.law.rmse_log:.4g}, "
            f"mean |deviation| {self.mad:.4g})",
        ]
        ivs = self.intervals
        boot = self.law.bootstrap
        for name, val in p.items():
            iv = ivs.get(name)
            band = f"  [{iv.lo:.4g}, {iv.hi:.4g}]" if iv is not None else ""
            lines.append(f"  {name:>6} = {val:.5g}{band}  (Gauss-Newton se {self.se[name]:.3g})")
        if boot is not None:
            level, ok, n = (getattr(boot, k) for k in ("level", "n_ok", "n"))
            lines.append(
                f"  intervals: {level:.0%} percentile bootstrap over points, {ok}/{n} resamples"
            )
        d = self.law.diagnostics
        lines.append(
            f"  optimiser: {'converged' if d.converged else 'NOT converged'}; "
            f"{d.n_best_basin}/{d.n_starts} starts reached the best optimum"
        )
        lines += [f"  warning: {w}" for w in d.warnings]
        h = self.holdout
        if h is not None:
            lines.append(
                f"  held out N = {h.held_out_N:.4g} (fit on N <= {h.fit_N_max:.4g}, {h.n_fit} points): "
                f"mean |deviation| {h.mad:.4g}, mean |relative error| {100 * h.mean_abs_rel_error:.1f}%"
            )
        elif self.holdout_note:
            lines.append(f"  no extrapolation check: {self.holdout_note}")
        return "\n".join(lines)


# ====================================================================== fitting


def finetune_table(
    N: Any,  # noqa: N803 - the quantity's name
    D_f: Any,  # noqa: N803
    y: Any,
    *,
    name: str = "fine-tuning runs",
) -> RunTable:
    """A table of fine-tuned points: model size ``N``, label count ``D_f`` (in column D),
    the response ``y`` as the loss; no FLOP convention (D_f is not tokens)."""
    n, d, v = (np.asarray(a, dtype=np.float64).ravel() for a in (N, D_f, y))
    if not n.size == d.size == v.size:
        raise UserError(f"{name}: {n.size} model sizes, {d.size} label counts, {v.size} values")
    return table_from_arrays(loss=v, N=n, D=d, flops_convention="none", name=name)


def check_identifiable(table: RunTable) -> None:
    """One-line :class:`UserError` unless the points can identify the 4-parameter law:
    at least 2 model sizes, 2 label counts and 5 distinct (N, D_f) points."""
    sizes, counts = np.unique(table.N).size, np.unique(table.D).size
    pts = np.unique(np.column_stack([table.N, table.D]), axis=0).shape[0]
    if sizes >= 2 and counts >= 2 and pts >= 5:
        return
    raise UserError(
        f"{table.source}: too few points for the fine-tuning law (4 parameters): "
        f"{sizes} model size{'s' if sizes != 1 else ''}, {counts} label count{'s' if counts != 1 else ''}, "
        f"{pts} distinct point{'s' if pts != 1 else ''}; it needs >= 2 sizes, >= 2 label counts "
        "and >= 5 points"
    )


def fit_finetune_law(
    N: Any,  # noqa: N803 - the quantity's name
    D_f: Any,  # noqa: N803
    y: Any,
    *,
    response: str = "loss",
    delta: float = math.inf,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    holdout: bool = True,
    name: str = "fine-tuning runs",
) -> FinetuneLaw:
    """Fit ``y = A / (N^alpha D_f^beta) + E`` (Zhang et al. 2024, Eq. 1) to fine-tuned points.

    ``N``: pretrained model sizes (non-embedding parameters), ``D_f``: labelled training
    examples, ``y``: the response (``response`` names it, see :data:`RESPONSES`; it must
    be positive). ``delta`` is the Huber threshold on log-residuals (``inf``: least
    squares; ``1e-3``: the Hoffmann et al. 2022 fit). ``n_boot`` resamples of the points
    give percentile intervals (0: none); ``holdout`` fits again without the largest model
    and predicts it (needs 3 or more sizes). Too few points is a one-line UserError.
    """
    if response not in RESPONSES:
        raise UserError(f"response must be one of {', '.join(RESPONSES)}, got {response!r}")
    if n_boot and n_boot < 2:
        raise UserError(f"n_boot must be 0 or >= 2, got {n_boot}")
    check_level(level)
    table = finetune_table(N, D_f, y, name=name)
    law = _fit_with_bootstrap(table, delta=delta, n_boot=n_boot, seed=seed, level=level)
    pred = law.predict(N=table.N, D=table.D)
    note, check = "", None
    if holdout:
        try:
            check = _holdout(table, delta=delta, n_boot=n_boot, seed=seed, level=level)
        except UserError as exc:
            note = exc.message
    return FinetuneLaw(
        law=law,
        response=response,
        se=gauss_newton_se(law, table),
        mad=float(np.mean(np.abs(pred - table.loss))),
        holdout=check,
        holdout_note=note,
    )


def bootstrap_function() -> Any:
    """:func:`scalelab.laws.bootstrap.bootstrap`, taken through the package's lazy export:
    loading the submodule ``scalelab.laws.bootstrap`` first binds ``scalelab.laws.bootstrap``
    to the module (the import system sets a package attribute per submodule), after which
    ``from scalelab.laws import bootstrap`` gives the module, not the function; taking the
    export first caches the function there. Works either way."""
    import scalelab.laws as laws

    value = laws.bootstrap
    return value.bootstrap if isinstance(value, types.ModuleType) else value


def _fit_with_bootstrap(
    table: RunTable, *, delta: float, n_boot: int, seed: int, level: float
) -> LawFit:
    bootstrap = bootstrap_function()
    check_identifiable(table)
    law = fit_form(FinetuneLawForm(), table, delta=delta)
    if n_boot:
        with np.errstate(over="ignore"):  # spread of resamples that ran off (A = e^300)
            boot = bootstrap(table, law, n=n_boot, seed=seed, level=level, group=False)
        law = law.with_bootstrap(boot)
    return law


def _holdout(
    table: RunTable, *, delta: float, n_boot: int, seed: int, level: float
) -> FinetuneHoldout:
    """Fit without the largest N, predict its points (intervals from the reduced fit's
    bootstrap, as :func:`~scalelab.laws.bootstrap.prediction_intervals`)."""
    from scalelab.laws.bootstrap import prediction_intervals

    sizes = np.unique(table.N)
    if sizes.size < 3:
        raise UserError(
            f"{sizes.size} model sizes; holding out the largest needs 3 or more (2 left to fit)"
        )
    top = float(sizes[-1])
    keep = np.less(table.N, top)
    train, test = table.subset(keep), table.subset(~keep)
    law = _fit_with_bootstrap(train, delta=delta, n_boot=n_boot, seed=seed, level=level)
    est = law.predict(N=test.N, D=test.D)
    nan = np.full(len(test), math.nan)
    bands = {"lo": nan, "hi": nan, "pred_lo": nan, "pred_hi": nan}
    if n_boot and getattr(law.bootstrap, "theta_samples", ()):
        bands = prediction_intervals(law, N=test.N, D=test.D, level=level, seed=seed)
    points = tuple(
        HeldOutPoint(
            N=float(test.N[i]),
            D_f=float(test.D[i]),
            observed=float(test.loss[i]),
            predicted=float(est[i]),
            lo=float(bands["lo"][i]),
            hi=float(bands["hi"][i]),
            pred_lo=float(bands["pred_lo"][i]),
            pred_hi=float(bands["pred_hi"][i]),
            rel_error=float(est[i] / test.loss[i] - 1.0),
        )
        for i in np.argsort(test.D, kind="stable")
    )
    fit_max = float(train.N.max())
    return FinetuneHoldout(
        held_out_N=top,
        fit_N_max=fit_max,
        distance=math.log10(top / fit_max),
        n_fit=len(train),
        points=points,
        mad=float(np.mean(np.abs(est - test.loss))),
        mean_abs_rel_error=float(np.mean(np.abs(est / test.loss - 1.0))),
        law=law,
        level=level,
    )


def gauss_newton_se(law: LawFit, table: RunTable) -> dict[str, float]:
    """Standard errors of the published parameters from the Gauss-Newton matrix at the
    optimum: ``cov(theta) = s^2 (J^T J)^-1`` with ``s^2 = RSS / (n - p)`` of the
    log-residuals (the least-squares approximation; for a Huber fit it is a guide), mapped
    to A and E by the delta method (``se(A) = A se(log A)``). nan with n <= p points."""
    form = law.law
    data = {v: getattr(table, v) for v in form.variables}
    _, jac = form.log_pred(np.asarray(law.theta)[None, :], data)
    j = jac[0]  # [P, p]
    n, p = j.shape
    resid = np.asarray(law.residuals)
    names = list(law.params)
    if n <= p:
        return {k: math.nan for k in names}
    s2 = float(resid @ resid) / (n - p)
    cov = s2 * np.linalg.pinv(j.T @ j)
    se_theta = dict(zip(form.theta_names, np.sqrt(np.clip(np.diag(cov), 0.0, None))))
    pub = law.params
    return {
        "A": pub["A"] * float(se_theta["a"]),
        "alpha": float(se_theta["alpha"]),
        "beta": float(se_theta["beta"]),
        "E": pub["E"] * float(se_theta["e"]),
    }
