"""Downstream scaling: metrics against size/compute, the two-step ladder, label efficiency.

- :func:`fit_metric_power_law`: ``error = ceiling - metric`` modelled as ``E + A x^-alpha``.
- :func:`fit_sigmoid`: ``metric = a / (1 + exp(-k (L - L0))) + b`` against task loss, as in
  step 2 of Bhagia et al. (2024), "Establishing Task Scaling Laws via Compute-Efficient
  Model Ladders"; ``b`` can be fixed at chance level.
- :func:`fit_ladder`: their two steps chained: a loss law ``L(N, D)`` (Chinchilla form)
  predicts task loss, the sigmoid maps it to the metric.
- :func:`ladder_holdout`: fit the ladder without its largest rung, predict that rung's
  final metric, and report the error and a bootstrap interval.
- :func:`label_efficiency`: metric against the number of labelled examples, a power law in
  the error, and "labels needed to reach metric X" with a bootstrap interval.

Small-sample fits here default to least squares on log-error (``delta=inf``) rather than
the 1e-3 Huber loss used for pretraining losses: with 4-8 points the Huber loss is nearly
an L1 fit whose optimum is not unique.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.bootstrap import BootstrapResult, batched_refit, bootstrap, resample_counts
from scalelab.laws.chinchilla import fit_chinchilla
from scalelab.laws.fits import LawFit, interval_from_samples
from scalelab.laws.powerlaw import fit_power_law
from scalelab.laws.results import Interval, Result, check_level, register
from scalelab.laws.table import RunTable, table_from_arrays


def _positive_array(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    bad = np.flatnonzero(~np.isfinite(arr) | (arr <= 0))
    if bad.size:
        raise UserError(f"{name}[{bad[0]}] = {float(arr[bad[0]])!r} must be positive and finite")
    return arr


def _error_from_metric(metric: np.ndarray, ceiling: float, name: str = "metric") -> np.ndarray:
    err = ceiling - np.asarray(metric, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(err) | (err <= 0))
    if bad.size:
        raise UserError(
            f"{name}[{bad[0]}] = {float(metric[bad[0]])!r} is not below the ceiling {ceiling}; "
            "the error (ceiling - metric) must be positive"
        )
    return err


# ====================================================================== (a) metric power law


@register("metric_power_law")
@dataclasses.dataclass(frozen=True)
class MetricPowerLaw(Result):
    """``metric = ceiling - (E + A x^-alpha)``."""

    kind: ClassVar[str] = "metric_power_law"
    law: LawFit
    """The power law of the error ``ceiling - metric``."""
    ceiling: float

    @property
    def params(self) -> dict[str, float]:
        return dict(self.law.params)

    def predict(self, x: Any) -> np.ndarray:
        """The metric at ``x``."""
        return self.ceiling - self.law.predict(x=x)


def fit_metric_power_law(
    x: Any, metric: Any, *, ceiling: float = 1.0, offset: bool = True, delta: float = math.inf
) -> MetricPowerLaw:
    """Fit ``ceiling - metric = E + A x^-alpha`` (x: parameters, compute, labels, ...)."""
    xs = _positive_array(x, "x")
    err = _error_from_metric(np.asarray(metric, dtype=np.float64).ravel(), ceiling)
    law = fit_power_law(xs, err, offset=offset, delta=delta)
    return MetricPowerLaw(law=law, ceiling=float(ceiling))


# ====================================================================== (b) sigmoid


@register("sigmoid")
@dataclasses.dataclass(frozen=True)
class SigmoidFit(Result):
    """``metric = a / (1 + exp(-k (L - L0))) + b`` (Bhagia et al. 2024, step 2)."""

    kind: ClassVar[str] = "sigmoid"
    a: float
    k: float
    L0: float  # noqa: N815 - the paper's name
    b: float
    b_fixed: bool
    rmse: float
    n_points: int
    warnings: tuple[str, ...] = ()
    """Why the sigmoid is not identified by its points (empty: it is)."""

    @property
    def params(self) -> dict[str, float]:
        out = {"a": self.a, "k": self.k, "L0": self.L0}
        if not self.b_fixed:
            out["b"] = self.b
        return out

    def predict(self, loss: Any) -> np.ndarray:
        z = -self.k * (np.asarray(loss, dtype=np.float64) - self.L0)
        return self.a * 0.5 * (1.0 - np.tanh(0.5 * z)) + self.b  # a * logistic(-z) + b


def _sigmoid_parts(theta: np.ndarray, loss: np.ndarray, b_fixed: float | None):
    a, k, l0 = theta[0], theta[1], theta[2]
    b = b_fixed if b_fixed is not None else theta[3]
    s = 0.5 * (1.0 + np.tanh(0.5 * k * (loss - l0)))  # logistic(k (L - L0))
    pred = a * s + b
    ds = s * (1.0 - s)
    cols = [s, a * ds * (loss - l0), -a * ds * k]
    if b_fixed is None:
        cols.append(np.ones_like(loss))
    return pred, np.column_stack(cols)


def fit_sigmoid(
    loss: Any,
    metric: Any,
    *,
    chance: float | None = None,
    weights: Any = None,
    start: SigmoidFit | None = None,
) -> SigmoidFit:
    """Least-squares fit of the sigmoid from many starts (``b = chance`` when given).

    ``start`` (a previous fit, e.g. on the full data inside a bootstrap) replaces the
    18-start grid by that single warm start.
    """
    from scipy.optimize import least_squares

    ls = _positive_array(loss, "loss")
    m = np.asarray(metric, dtype=np.float64).ravel()
    if m.shape != ls.shape:
        raise UserError(f"fit_sigmoid: {ls.size} losses but {m.size} metric values")
    if not np.isfinite(m).all():
        raise UserError("fit_sigmoid: metric values must be finite")
    n_par = 3 if chance is not None else 4
    if ls.size <= n_par:
        raise UserError(
            f"the sigmoid has {n_par} free parameters but there are only {ls.size} points"
        )
    sw = np.ones_like(ls) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    spread = max(float(np.std(ls)), 1e-6)
    b0 = float(chance) if chance is not None else float(m.min()) - 0.05 * float(np.ptp(m) or 1)
    a0 = max(float(m.max()) - b0, 1e-3)
    best = None
    if start is not None:
        starts = [[start.a, start.k, start.L0] + ([start.b] if chance is None else [])]
    else:
        starts = [
            [a0, k0 / spread, float(l0)] + ([b0] if chance is None else [])
            for l0 in np.quantile(ls, [0.1, 0.5, 0.9])
            for k0 in (-10.0, -3.0, -1.0, 1.0, 3.0, 10.0)
        ]

    def resid(th):
        return (_sigmoid_parts(th, ls, chance)[0] - m) * sw

    def jac(th):
        return _sigmoid_parts(th, ls, chance)[1] * sw[:, None]

    for x0 in starts:
        with np.errstate(all="ignore"):
            res = least_squares(resid, x0, jac=jac, method="lm", xtol=1e-12, ftol=1e-12)
        if np.isfinite(res.cost) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        raise UserError("fit_sigmoid: no start converged")
    th = best.x
    pred = _sigmoid_parts(th, ls, chance)[0]
    b = float(chance) if chance is not None else float(th[3])
    return SigmoidFit(
        a=float(th[0]),
        k=float(th[1]),
        L0=float(th[2]),
        b=b,
        b_fixed=chance is not None,
        rmse=float(np.sqrt(np.mean((pred - m) ** 2))),
        n_points=int(ls.size),
        warnings=_sigmoid_warnings(th, b, ls, chance is not None, jac(th), 2.0 * best.cost),
    )


def _sigmoid_warnings(
    th: np.ndarray, b: float, loss: np.ndarray, fraction: bool, jac: np.ndarray, sse: float
) -> tuple[str, ...]:
    """Why the points do not determine the sigmoid: its midpoint lies outside the observed
    losses (one tail seen), a parameter's standard error (Gauss-Newton, s^2 (J'J)^-1) is
    larger than its value, or its ceiling a + b leaves [0, 1] for a metric fitted above
    chance (``fraction``)."""
    a, l0 = float(th[0]), float(th[2])
    out = []
    n, p = jac.shape
    if n > p:
        cov = sse / (n - p) * np.linalg.pinv(jac.T @ jac)
        se = np.sqrt(np.clip(np.diag(cov)[:3], 0.0, None))
        loose = [
            f"{name} {v:.3g} ± {e:.2g}"
            for name, v, e in zip(("a", "k", "L0"), th[:3], se)
            if not e < abs(v)
        ]
        if loose:
            out.append(
                "the sigmoid's parameters are not identified by its points (standard error "
                f"above the value: {', '.join(loose)}); its predictions are a fit to noise "
                "beyond the observed range"
            )
    lo, hi = float(loss.min()), float(loss.max())
    if not lo <= l0 <= hi:
        out.append(
            f"the sigmoid's midpoint L0 = {l0:.3g} lies outside the observed task losses "
            f"[{lo:.3g}, {hi:.3g}]: only one tail is seen, so its ceiling and slope are not "
            "identified; trust predictions only inside the observed range"
        )
    if fraction and not 0.0 <= a + b <= 1.0 + 1e-9:
        out.append(f"the sigmoid's ceiling a + b = {a + b:.3g} is outside [0, 1]")
    return tuple(out)


# ====================================================================== (c) the ladder


@register("ladder")
@dataclasses.dataclass(frozen=True)
class LadderFit(Result):
    """Bhagia et al. (2024): loss law L(N, D) chained into the sigmoid metric(L)."""

    kind: ClassVar[str] = "ladder"
    loss_fit: LawFit
    sigmoid: SigmoidFit

    @property
    def params(self) -> dict[str, float]:
        out = {f"loss.{k}": v for k, v in self.loss_fit.params.items()}
        out.update({f"sigmoid.{k}": v for k, v in self.sigmoid.params.items()})
        return out

    def predict_loss(self, N: Any, D: Any) -> np.ndarray:  # noqa: N803
        return self.loss_fit.predict(N=N, D=D)

    def predict(self, N: Any, D: Any) -> np.ndarray:  # noqa: N803
        """The metric predicted for models of N parameters trained on D tokens."""
        return self.sigmoid.predict(self.predict_loss(N, D))


def _metric_column(table: RunTable, metric: str | Sequence[float]) -> np.ndarray:
    if isinstance(metric, str):
        if metric not in table.extra:
            raise UserError(
                f"{table.source}: no metric column '{metric}' (load it with extra=['{metric}'])"
            )
        vals = np.asarray(table.extra[metric])
        if vals.dtype == object:
            raise UserError(f"{table.source}: metric column '{metric}' is not numeric")
        return vals.astype(np.float64)
    vals = np.asarray(metric, dtype=np.float64).ravel()
    if vals.size != len(table):
        raise UserError(f"{vals.size} metric values for {len(table)} rows")
    return vals


def fit_ladder(
    table: RunTable,
    metric: str | Sequence[float],
    *,
    chance: float | None = None,
    loss_fit: LawFit | None = None,
    grid: np.ndarray | None = None,
    delta: float = 1e-3,
) -> LadderFit:
    """Step 1: the table's loss column (task loss) as ``L(N, D)`` (Chinchilla form unless
    ``loss_fit`` is given); step 2: the sigmoid from observed task loss to ``metric`` (a
    column loaded with ``extra=[...]``, or values per row)."""
    m = _metric_column(table, metric)
    lf = loss_fit if loss_fit is not None else fit_chinchilla(table, grid=grid, delta=delta)
    sig = fit_sigmoid(table.loss, m, chance=chance)
    return LadderFit(loss_fit=lf, sigmoid=sig)


@register("ladder_prediction")
@dataclasses.dataclass(frozen=True)
class LadderPrediction(Result):
    """A ladder's prediction for one held-out model, with a bootstrap interval."""

    kind: ClassVar[str] = "ladder_prediction"
    N: float
    D: float
    metric: Interval
    loss: Interval
    observed_metric: float = math.nan
    observed_loss: float = math.nan
    n_boot: int = 0
    n_ok: int = 0

    @property
    def abs_error(self) -> float:
        return self.metric.estimate - self.observed_metric

    @property
    def rel_error(self) -> float:
        return self.metric.estimate / self.observed_metric - 1.0

    @property
    def covered(self) -> bool:
        return self.metric.lo <= self.observed_metric <= self.metric.hi

    def summary(self) -> str:
        lines = [
            f"ladder prediction at N={self.N:.4g}, D={self.D:.4g}:",
            f"  metric {self.metric.estimate:.4f} [{self.metric.lo:.4f}, {self.metric.hi:.4f}] "
            f"({self.metric.level:.0%}, {self.n_ok}/{self.n_boot} resamples)",
            f"  task loss {self.loss.estimate:.4f} [{self.loss.lo:.4f}, {self.loss.hi:.4f}]",
        ]
        if math.isfinite(self.observed_metric):
            lines.append(
                f"  observed metric {self.observed_metric:.4f}: error {self.abs_error:+.4f} "
                f"({self.rel_error:+.2%}), {'inside' if self.covered else 'outside'} the interval"
            )
        return "\n".join(lines)


def predict_ladder(
    table: RunTable,
    metric: str | Sequence[float],
    N: float,  # noqa: N803
    D: float,  # noqa: N803
    *,
    chance: float | None = None,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.9,
    fit: LadderFit | None = None,
) -> LadderPrediction:
    """Fit the ladder and predict the metric at (N, D) with a bootstrap interval.

    Each resample refits both steps on the same resampled rows (step 1 batched, from the
    full fit's optima; step 2 by weighted least squares).
    """
    m = _metric_column(table, metric)
    fit = fit if fit is not None else fit_ladder(table, m, chance=chance)
    rng = np.random.default_rng(seed)
    counts, _, _ = resample_counts(table, n_boot, rng)
    thetas, ok = batched_refit(table, fit.loss_fit, counts)
    data = fit.loss_fit.inputs(N=N, D=D)
    lp, _ = fit.loss_fit.law.log_pred(thetas, data)
    loss_draws = np.exp(lp[:, 0])
    metric_draws = np.full(n_boot, np.nan)
    for r in range(n_boot):
        if not ok[r]:
            continue
        use = counts[r] > 0
        try:
            sig = fit_sigmoid(
                table.loss[use], m[use], chance=chance, weights=counts[r][use], start=fit.sigmoid
            )
        except UserError:
            continue
        metric_draws[r] = sig.predict(loss_draws[r])
    good = np.isfinite(metric_draws)
    return LadderPrediction(
        N=float(N),
        D=float(D),
        metric=interval_from_samples(metric_draws[good], float(fit.predict(N, D)[0]), level),
        loss=interval_from_samples(loss_draws[ok], float(fit.predict_loss(N, D)[0]), level),
        n_boot=n_boot,
        n_ok=int(good.sum()),
    )


def ladder_holdout(
    table: RunTable,
    metric: str | Sequence[float],
    *,
    chance: float | None = None,
    n_boot: int = 500,
    seed: int = 0,
    level: float = 0.9,
) -> LadderPrediction:
    """Hold out the largest rung (largest N), fit on the rest, predict its final checkpoint
    (largest D), and compare with what it measured."""
    table.require("N", "D", what="a ladder hold-out")
    m = _metric_column(table, metric)
    n_max = float(table.N.max())
    test = np.isclose(table.N, n_max, rtol=1e-9)
    train = ~test
    if np.unique(table.N[train]).size < 2:
        raise UserError(f"{table.source}: a ladder hold-out needs at least 2 smaller rungs")
    target = np.flatnonzero(test)[np.argmax(table.D[test])]
    sub = table.subset(train)
    pred = predict_ladder(
        sub,
        m[train],
        n_max,
        float(table.D[target]),
        chance=chance,
        n_boot=n_boot,
        seed=seed,
        level=level,
    )
    return dataclasses.replace(
        pred, observed_metric=float(m[target]), observed_loss=float(table.loss[target])
    )


# ====================================================================== (d) label efficiency


@register("label_efficiency")
@dataclasses.dataclass(frozen=True)
class LabelEfficiency(Result):
    """Metric against labelled examples: ``ceiling - metric = E + A n^-alpha``."""

    kind: ClassVar[str] = "label_efficiency"
    law: LawFit
    ceiling: float
    bootstrap: BootstrapResult | None = None

    @property
    def params(self) -> dict[str, float]:
        return dict(self.law.params)

    def predict(self, n_labels: Any) -> np.ndarray:
        return self.ceiling - self.law.predict(x=n_labels)

    def _needed(self, target: float, params: dict[str, np.ndarray]) -> np.ndarray:
        err = self.ceiling - target
        e = params.get("E", np.zeros_like(params["A"]))
        with np.errstate(all="ignore"):
            gap = err - e
            n = (params["A"] / gap) ** (1.0 / params["alpha"])
        return np.where((gap > 0) & (params["alpha"] > 0), n, np.inf)

    def labels_needed(self, target: float, *, level: float | None = None) -> Interval:
        """Labels to reach ``metric = target`` (inf when the law's floor is above it)."""
        if not target < self.ceiling:
            raise UserError(f"target {target} must be below the ceiling {self.ceiling}")
        point = float(self._needed(target, {k: np.asarray(v) for k, v in self.law.params.items()}))
        if self.bootstrap is None:
            return Interval(estimate=point, lo=math.nan, hi=math.nan)
        lvl = self.bootstrap.level if level is None else level
        check_level(lvl)
        draws = self._needed(target, {k: np.asarray(v) for k, v in self.bootstrap.samples.items()})
        q = (1 - lvl) / 2
        # Percentiles over all draws: an unreachable target in a resample counts as inf;
        # no interpolation (between two infs it would give nan), rounding outwards.
        vals = np.where(np.isfinite(draws), draws, np.inf)
        lo = np.quantile(vals, q, method="lower")
        hi = np.quantile(vals, 1 - q, method="higher")
        return Interval(estimate=point, lo=float(lo), hi=float(hi), level=lvl)


def label_efficiency(
    n_labels: Any,
    metric: Any,
    *,
    ceiling: float = 1.0,
    offset: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    delta: float = math.inf,
) -> LabelEfficiency:
    """Fit the label-efficiency law and bootstrap it (``n_boot=0`` skips the bootstrap)."""
    xs = _positive_array(n_labels, "n_labels")
    m = np.asarray(metric, dtype=np.float64).ravel()
    if m.size != xs.size:
        raise UserError(f"{xs.size} label counts but {m.size} metric values")
    err = _error_from_metric(m, ceiling)
    table = table_from_arrays(loss=err, N=xs, flops_convention="none", name="label counts")
    law_n = fit_power_law(table, variable="N", offset=offset, delta=delta)
    boot = None
    if n_boot:
        boot = bootstrap(table, law_n, n=n_boot, seed=seed, level=level)
    law = fit_power_law(xs, err, offset=offset, delta=delta)  # the same fit, labelled in x
    return LabelEfficiency(law=law, ceiling=float(ceiling), bootstrap=boot)
