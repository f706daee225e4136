"""Chinchilla Approach 3: ``L(N, D) = E + A/N^alpha + B/D^beta`` and compute-optimal allocation.

The fit follows Hoffmann et al. (2022, Appendix D.2) as replicated by Besiroglu et al.
(2024): Huber loss (delta 1e-3) on ``log L``, the prediction computed in log space as
``LSE(a - alpha log N, b - beta log D, e)`` with ``a = log A`` etc., the objective summed
over points. Two searches minimise it: ``method="grid"``, L-BFGS from every point of the
4,500-point grid of Hoffmann et al., and ``method="vpnls"`` (the default), variable
projection over the exponent plane (:mod:`.vpnls`; Czech et al. 2026, arXiv:2603.22339),
which reaches the same optimum 15-65x faster (bench/laws_fast.py). On the 240 points of
Besiroglu et al. (the 5 highest losses dropped) both give A = 477.8, B = 2143,
E = 1.8172, alpha = 0.3473, beta = 0.3672 at objective 1.0183e-3 (bench/laws_reference.py).

Under ``C = k N D`` the loss-minimising allocation has the closed form

    N_opt = G (C/k)^a,  D_opt = G^-1 (C/k)^b,  G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta),  b = alpha/(alpha+beta)                  (Hoffmann et al., eq. 4)
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import FitWarning, LawFit, _budgets, fit_form, interval_from_samples
from scalelab.laws.forms import ChinchillaForm, hoffmann_grid
from scalelab.laws.results import Allocation, register
from scalelab.laws.table import RunTable
from scalelab.laws.vpnls import fit_vpnls

METHODS = ("vpnls", "grid")
"""Searches of :func:`fit_chinchilla`: variable projection (fast) or the Hoffmann grid."""


def optimal_allocation(
    params: Mapping[str, Any], compute: np.ndarray, k: float
) -> dict[str, np.ndarray]:
    """Closed-form optimum; ``params`` values may be arrays ``[R]`` (bootstrap samples).

    Returns arrays broadcast to ``[R, len(compute)]`` (or ``[len(compute)]`` for scalars).
    """
    e, a, b = (np.asarray(params[n], dtype=np.float64)[..., None] for n in ("E", "A", "B"))
    al, be = (np.asarray(params[n], dtype=np.float64)[..., None] for n in ("alpha", "beta"))
    c = np.asarray(compute, dtype=np.float64) / k
    with np.errstate(all="ignore"):
        s = al + be
        log_g = (np.log(al * a) - np.log(be * b)) / s
        n_opt = np.exp(log_g + (be / s) * np.log(c))
        d_opt = c / n_opt
        loss = e + a * n_opt**-al + b * d_opt**-be
    return {"n_opt": n_opt, "d_opt": d_opt, "tokens_per_param": d_opt / n_opt, "loss": loss}


@register("chinchilla")
@dataclasses.dataclass(frozen=True)
class ChinchillaFit(LawFit):
    """A fitted Chinchilla law; ``optimal(C)`` gives N_opt, D_opt, tokens/param, loss."""

    kind: ClassVar[str] = "chinchilla"
    method: str = "grid"
    """How the optimum was searched: ``grid`` (multi-start L-BFGS from a start grid, the
    Hoffmann et al. grid by default) or ``vpnls`` (variable projection, :mod:`.vpnls`).
    Fits saved before the field existed were all grid fits."""

    @property
    def E(self) -> float:  # noqa: N802 - the published name
        return self.params["E"]

    @property
    def A(self) -> float:  # noqa: N802
        return self.params["A"]

    @property
    def B(self) -> float:  # noqa: N802
        return self.params["B"]

    @property
    def alpha(self) -> float:
        return self.params["alpha"]

    @property
    def beta(self) -> float:
        return self.params["beta"]

    @property
    def exponents(self) -> tuple[float, float]:
        """``(a, b)`` with N_opt ~ C^a, D_opt ~ C^b: ``a = beta/(alpha+beta)``."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def optimal(self, compute: float | Sequence[float], *, level: float = 0.95) -> Allocation:
        """Closed-form compute-optimal allocation; intervals when a bootstrap is attached."""
        if self.flops_per_nd is None:
            raise UserError("compute-optimal allocation needs a FLOP convention (C = k N D)")
        if self.alpha <= 0 or self.beta <= 0:
            raise UserError(
                f"no finite compute-optimal allocation: alpha={self.alpha:.3g}, "
                f"beta={self.beta:.3g} (both must be positive)"
            )
        cs = _budgets(compute)
        est = optimal_allocation(self.params, cs, self.flops_per_nd)
        intervals = {}
        boot = self.bootstrap
        if boot is not None:
            samples = {k: np.asarray(v) for k, v in boot.samples.items()}  # type: ignore[attr-defined]
            draws = optimal_allocation(samples, cs, self.flops_per_nd)  # [R, len(cs)]
            for key, arr in draws.items():
                intervals[key] = tuple(
                    interval_from_samples(arr[:, i], float(est[key][i]), level)
                    for i in range(cs.size)
                )
        return Allocation(
            compute=tuple(cs.tolist()),
            n_opt=tuple(est["n_opt"].tolist()),
            d_opt=tuple(est["d_opt"].tolist()),
            tokens_per_param=tuple(est["tokens_per_param"].tolist()),
            loss=tuple(est["loss"].tolist()),
            intervals=intervals,
        )

    def summary(self) -> str:
        a, b = self.exponents
        text = super().summary()
        if self.method == "vpnls":
            text += (
                "\n  search: variable projection (exponent profile, then L-BFGS from its "
                "minima and block bests)"
            )
        return text + f"\n  compute-optimal exponents: N_opt ~ C^{a:.4f}, D_opt ~ C^{b:.4f}"


def fit_chinchilla(
    table: RunTable,
    *,
    delta: float = 1e-3,
    grid: np.ndarray | None = None,
    method: str | None = None,
    drop_highest: int = 0,
    weights: Any = None,
    basin_rtol: float = 1e-5,
    max_iter: int = 500,
) -> ChinchillaFit:
    """Approach 3 fit of ``L = E + A/N^alpha + B/D^beta`` (see the module docstring).

    ``method`` is ``"vpnls"`` (variable projection, the default) or ``"grid"`` (L-BFGS from
    every start of ``grid``); giving ``grid`` -- ``[K, 5]`` starts in ``(log A, log B,
    log E, alpha, beta)``, :func:`hoffmann_grid` by default -- implies the grid search.
    Both minimise the same objective and report the same diagnostics; ``fit.method`` says
    which ran. ``drop_highest`` drops that many highest-loss points first (Besiroglu et al.
    dropped 5); ``weights`` (one per point) default to the table's weight column.
    """
    if method is None:
        method = "grid" if grid is not None else "vpnls"
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "vpnls" and grid is not None:
        raise UserError("a start grid is for method='grid'; method='vpnls' needs none")
    kw = {"delta": delta, "drop_highest": drop_highest, "weights": weights}
    kw |= {"basin_rtol": basin_rtol, "max_iter": max_iter, "result_cls": ChinchillaFit}
    if method == "vpnls":
        fit = fit_vpnls(table, **kw)
    else:
        fit = fit_form(
            ChinchillaForm(), table, starts=hoffmann_grid() if grid is None else grid, **kw
        )
    assert isinstance(fit, ChinchillaFit)
    return _with_identification(dataclasses.replace(fit, method=method), table)


def _with_identification(fit: ChinchillaFit, table: RunTable) -> ChinchillaFit:
    """The fit, warned (and its diagnostics noted) when only 2 distinct N (or D) values
    were fitted: the points then fix ``E + A N^-alpha`` at two sizes only, so ``E``, ``A``
    and ``alpha`` trade off along a curve of fits with one and the same objective."""
    used = table.without_rows(fit.dropped_rows)
    notes = [
        f"only 2 distinct {var} values: {coef}, {expo} and E are not identified (a "
        "one-parameter family of fits has the same objective; add a third size)"
        for var, coef, expo in (("N", "A", "alpha"), ("D", "B", "beta"))
        if np.unique(getattr(used, var)).size == 2
    ]
    if not notes:
        return fit
    d = fit.diagnostics
    changes: dict[str, Any] = {"warnings": d.warnings + tuple(notes)}
    if "cautions" in {f.name for f in dataclasses.fields(d)}:
        changes["cautions"] = tuple(dict.fromkeys((*d.cautions, "not identified")))
    for note in notes:
        warnings.warn(f"chinchilla fit: {note}", FitWarning, stacklevel=3)
    return dataclasses.replace(fit, diagnostics=dataclasses.replace(d, **changes))


def small_grid() -> np.ndarray:
    """A 3^5 = 243-point grid (for tests and quick looks; the default is the full grid)."""
    import itertools

    return np.array(
        list(
            itertools.product(
                (0.0, 5.0, 10.0),
                (0.0, 5.0, 10.0),
                (-1.0, 0.0, 1.0),
                (0.2, 0.5, 1.0),
                (0.2, 0.5, 1.0),
            )
        ),
        dtype=np.float64,
    )


def chinchilla_loss(N: Any, D: Any, params: Mapping[str, float]) -> np.ndarray:  # noqa: N803
    """``E + A/N^alpha + B/D^beta`` for plain parameter values (e.g. to plant a law)."""
    n, d = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
    return params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]


__all__ = [
    "METHODS",
    "ChinchillaFit",
    "chinchilla_loss",
    "fit_chinchilla",
    "hoffmann_grid",
    "optimal_allocation",
    "small_grid",
]
