"""Chinchilla Approach 3: ``L(N, D) = E + A/N^alpha + B/D^beta`` and compute-optimal allocation.

The fit follows Hoffmann et al. (2022, Appendix D.2) as replicated by Besiroglu et al.
(2024): Huber loss (delta 1e-3) on ``log L``, the prediction computed in log space as
``LSE(a - alpha log N, b - beta log D, e)`` with ``a = log A`` etc., L-BFGS from every
point of the 4,500-point grid, the objective summed over points. On the 240 points of
Besiroglu et al. (the 5 highest losses dropped) this gives A = 477.8, B = 2143,
E = 1.8172, alpha = 0.3473, beta = 0.3672 at objective 1.0183e-3 (bench/laws_reference.py).

Under ``C = k N D`` the loss-minimising allocation has the closed form

    N_opt = G (C/k)^a,  D_opt = G^-1 (C/k)^b,  G = (alpha A / (beta B))^(1/(alpha+beta)),
    a = beta/(alpha+beta),  b = alpha/(alpha+beta)                  (Hoffmann et al., eq. 4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from scalelab.errors import UserError
from scalelab.laws.fits import LawFit, _budgets, fit_form, interval_from_samples
from scalelab.laws.forms import ChinchillaForm, hoffmann_grid
from scalelab.laws.results import Allocation, register
from scalelab.laws.table import RunTable


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
        return text + f"\n  compute-optimal exponents: N_opt ~ C^{a:.4f}, D_opt ~ C^{b:.4f}"


def fit_chinchilla(
    table: RunTable,
    *,
    delta: float = 1e-3,
    grid: np.ndarray | None = None,
    drop_highest: int = 0,
    weights: Any = None,
    basin_rtol: float = 1e-5,
    max_iter: int = 500,
) -> ChinchillaFit:
    """Approach 3 fit of ``L = E + A/N^alpha + B/D^beta`` (see the module docstring).

    ``grid`` is ``[K, 5]`` starts in ``(log A, log B, log E, alpha, beta)``; the default is
    the 4,500-point grid of Hoffmann et al. ``drop_highest`` drops that many highest-loss
    points first (Besiroglu et al. dropped 5); ``weights`` (one per point) default to the
    table's weight column.
    """
    fit = fit_form(
        ChinchillaForm(),
        table,
        delta=delta,
        drop_highest=drop_highest,
        weights=weights,
        starts=hoffmann_grid() if grid is None else grid,
        basin_rtol=basin_rtol,
        max_iter=max_iter,
        result_cls=ChinchillaFit,
    )
    assert isinstance(fit, ChinchillaFit)
    return fit


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
    "ChinchillaFit",
    "chinchilla_loss",
    "fit_chinchilla",
    "hoffmann_grid",
    "optimal_allocation",
    "small_grid",
]
