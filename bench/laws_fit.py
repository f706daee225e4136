"""Speed of the Chinchilla Approach 3 fit and its bootstrap (medians; ratios to scipy loops).

    .venv/bin/python bench/laws_fit.py [--reference-dir ../shared/reference] [--repeats 5]

Data: the 240 points of Besiroglu et al. (2024) when the reference directory is there,
else a planted law with 240 points over the same ranges. Prints:

- the full 4,500-start fit (batched L-BFGS + scipy polish): cold first call and the
  median of ``--repeats`` warm calls;
- a straightforward per-start scipy L-BFGS-B loop with the same analytic gradient and
  tolerances, timed on every ``--stride``-th start and scaled to 4,500 starts;
- the same loop with finite-difference gradients (on fewer starts);
- a 1,000-resample bootstrap (median of 3).
Targets from the issue: fit <= 2 s, bootstrap <= 60 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402


def data(ref: Path):
    from scalelab.laws import chinchilla_loss, load_table, table_from_arrays

    path = ref / "chinchilla_epoch_svg_points.csv"
    if path.exists():
        table = load_table(path, n="Model Size", c="Training FLOP", loss="loss")
        return table.drop_highest(5)[0], f"{path.name}, 5 highest dropped"
    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(4e7), np.log(1.6e10), 240))
    c = np.exp(rng.uniform(np.log(6e18), np.log(3e21), 240))
    d = c / (6 * n)
    truth = {"E": 1.82, "A": 478.0, "B": 2143.0, "alpha": 0.347, "beta": 0.367}
    loss = chinchilla_loss(n, d, truth) * np.exp(rng.normal(0, 0.01, 240))
    return table_from_arrays(N=n, D=d, loss=loss), "planted law, 240 points"


def timed(fn, repeats: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def scipy_loop(table, starts: np.ndarray, *, numeric: bool) -> tuple[float, np.ndarray]:
    """Per-start scipy L-BFGS-B, the way a straightforward implementation does it."""
    from scipy.optimize import minimize

    from scalelab.laws.objective import ChinchillaObjective
    from scalelab.laws.optim import single_threaded_blas

    obj = ChinchillaObjective(np.log(table.N), np.log(table.D), np.log(table.loss), delta=1e-3)
    fs = []
    opts = {"ftol": 1e-15, "gtol": 1e-10, "maxiter": 15000}
    t0 = time.perf_counter()
    with single_threaded_blas(), np.errstate(all="ignore"):
        for x0 in starts:
            if numeric:
                res = minimize(lambda x: obj.single(x)[0], x0, method="L-BFGS-B", options=opts)
            else:
                res = minimize(obj.single, x0, jac=True, method="L-BFGS-B", options=opts)
            fs.append(res.fun)
    return time.perf_counter() - t0, np.array(fs)


def main() -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference-dir", type=Path, default=here.parent.parent / "shared" / "reference"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stride", type=int, default=15, help="scipy loop on every k-th start")
    parser.add_argument("--n-boot", type=int, default=1000)
    args = parser.parse_args()

    from scalelab.laws import bootstrap, fit_chinchilla, hoffmann_grid

    table, what = data(args.reference_dir)
    grid = hoffmann_grid()
    print(f"data: {what}; {len(table)} points, {len(grid)} starts; 1 thread (BLAS limited)")
    warnings.simplefilter("ignore")

    t0 = time.perf_counter()
    fit = fit_chinchilla(table, method="grid")
    cold = time.perf_counter() - t0
    warm, times, fit = timed(lambda: fit_chinchilla(table, method="grid"), args.repeats)
    d = fit.diagnostics
    print(
        f"batched fit: cold {cold:.2f} s, warm median {warm:.2f} s (runs {', '.join(f'{t:.2f}' for t in times)})"
    )
    print(
        f"  objective {fit.objective:.6g}, {d.n_best_basin}/{d.n_starts} starts in the best basin ({d.n_best_basin / d.n_starts:.1%}), max|grad| {d.grad_max:.1e}"
    )

    sub = grid[:: args.stride]
    t_an, f_an = scipy_loop(table, sub, numeric=False)
    per4500 = t_an * len(grid) / len(sub)
    share = np.mean(f_an <= fit.objective * (1 + 1e-5))
    print(
        f"scipy loop, analytic gradient: {t_an:.1f} s for {len(sub)} starts -> {per4500:.0f} s for 4,500 (best basin {share:.1%} of starts)"
    )
    sub_fd = grid[:: args.stride * 4]
    t_fd, _ = scipy_loop(table, sub_fd, numeric=True)
    per4500_fd = t_fd * len(grid) / len(sub_fd)
    print(
        f"scipy loop, finite differences: {t_fd:.1f} s for {len(sub_fd)} starts -> {per4500_fd:.0f} s for 4,500"
    )
    print(
        f"speed-up of the batched fit: {per4500 / warm:.0f}x (analytic loop), {per4500_fd / warm:.0f}x (finite differences)"
    )
    print(f"target fit <= 2 s: {'met' if warm <= 2.0 else 'NOT met'} ({warm:.2f} s)")

    tb, btimes, boot = timed(lambda: bootstrap(table, fit, n=args.n_boot, seed=0), 3)
    print(
        f"bootstrap {args.n_boot} resamples: median {tb:.1f} s (runs {', '.join(f'{t:.1f}' for t in btimes)}), {boot.n_ok} converged"
    )
    print(
        "  se: "
        + ", ".join(f"{k} {boot.intervals[k].se:.4g}" for k in ("A", "B", "E", "alpha", "beta"))
    )
    print(f"target bootstrap <= 60 s: {'met' if tb <= 60 else 'NOT met'} ({tb:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
