"""Acceptance of scalelab.laws on published scaling data (read in place, never copied).

    .venv/bin/python bench/laws_reference.py [--reference-dir ../shared/reference] [--n-boot 4000]

Checks (PASS/FAIL each):

1. Besiroglu et al. (2024) "Chinchilla Scaling: A replication attempt": their 245 points
   from Hoffmann et al. (2022) Fig. 4, D = C / (6N), the 5 highest losses dropped, Huber
   (delta 1e-3) on log-loss from the 4,500-point grid. Their fit: A = 477.8, B = 2143,
   E = 1.8172, alpha = 0.3473, beta = 0.3672 at objective 1.0183e-3 (E, alpha, beta within
   0.5%; A, B within 2%). The objective is the SUM over the 240 points of
   scipy.special.huber(1e-3, r) (r^2/2 inside delta): the mean would be 4.24e-6.
2. Their bootstrap standard errors: A 124.5, B 1293, E 0.0257, alpha 0.0154, beta 0.0206
   (within 15%). They drew 4,000 resamples; so does this check by default.
3. Approach 2 on isoflops_chinchilla_epoch.csv: a = 0.49, b = 0.51 (Hoffmann et al.
   Table 2), within 0.02.

Then the other published IsoFLOP sweeps (Llama 3, Marin, "(Mis)fitting", ml-scalefit) are
fitted per experiment and their exponents printed.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from scalelab.laws import bootstrap, fit_chinchilla, fit_isoflop, load_table  # noqa: E402
from scalelab.laws.isoflop import IsoFLOPWarning  # noqa: E402

PUBLISHED = {"A": 477.8, "B": 2143.0, "E": 1.8172, "alpha": 0.3473, "beta": 0.3672}
TOL = {"A": 0.02, "B": 0.02, "E": 0.005, "alpha": 0.005, "beta": 0.005}
PUBLISHED_OBJECTIVE = 1.0183e-3
PUBLISHED_SE = {"A": 124.5, "B": 1293.0, "E": 0.0257, "alpha": 0.0154, "beta": 0.0206}

results: list[bool] = []


def check(name: str, ok: bool, detail: str) -> None:
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")


def approach3(ref: Path, n_boot: int, seed: int) -> None:
    path = ref / "chinchilla_epoch_svg_points.csv"
    table = load_table(path, n="Model Size", c="Training FLOP", loss="loss")
    t0 = time.perf_counter()
    fit = fit_chinchilla(table, drop_highest=5)
    print(
        f"\n== Approach 3 on {path.name} ({len(table)} points, 5 dropped), {time.perf_counter() - t0:.2f} s"
    )
    print(fit.summary())
    for k, want in PUBLISHED.items():
        got = fit.params[k]
        rel = abs(got / want - 1)
        check(f"{k}", rel <= TOL[k], f"{got:.5g} vs {want:g} ({rel:.3%}, tolerance {TOL[k]:.1%})")
    rel = abs(fit.objective / PUBLISHED_OBJECTIVE - 1)
    check(
        "objective (sum of Huber)",
        rel <= 1e-3,
        f"{fit.objective:.6g} vs {PUBLISHED_OBJECTIVE:g} ({rel:.3%}); mean would be {fit.objective / fit.n_points:.3g}",
    )
    check(
        "converged",
        fit.diagnostics.converged,
        f"max|grad| {fit.diagnostics.grad_max:.2g}, {fit.diagnostics.n_best_basin}/{fit.diagnostics.n_starts} starts in the best basin",
    )

    t0 = time.perf_counter()
    boot = bootstrap(table, fit, n=n_boot, seed=seed)
    print(
        f"\n== bootstrap: {n_boot} resamples in {time.perf_counter() - t0:.1f} s ({boot.n_ok} converged, seed {seed})"
    )
    for k, want in PUBLISHED_SE.items():
        got = boot.intervals[k].se
        rel = abs(got / want - 1)
        check(f"se({k})", rel <= 0.15, f"{got:.4g} vs {want:g} ({rel:+.1%} off, tolerance 15%)")
    a = boot.intervals["a"]
    print(
        f"      a = beta/(alpha+beta) = {a.estimate:.4f} [{a.lo:.4f}, {a.hi:.4f}] ({a.level:.0%})"
    )


def experiments(path: Path) -> list[str]:
    with open(path, newline="") as fh:
        return sorted({row["experiment"] for row in csv.DictReader(fh)})


def approach2(ref: Path) -> None:
    path = ref / "isoflops_chinchilla_epoch.csv"
    table = load_table(path, n="params", d="tokens", loss="loss", extra=["budget"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IsoFLOPWarning)
        fit = fit_isoflop(table, budget="budget")
    print(f"\n== Approach 2 on {path.name}")
    print(fit.summary())
    check("IsoFLOP a", abs(fit.a - 0.49) <= 0.02, f"{fit.a:.4f} vs 0.49")
    check("IsoFLOP b", abs(fit.b - 0.51) <= 0.02, f"{fit.b:.4f} vs 0.51")

    print("\n== other published IsoFLOP sweeps (exponents printed, no reference values)")
    print(f"  {'file':<28} {'experiment':<44} {'budgets':>7} {'a':>7} {'b':>7}")
    for name in ("isoflops_llama3.csv", "isoflops_marin_2026_03.csv", "isoflops_misfitting.csv", "isoflops_ml_scalefit.csv"):  # fmt: skip
        p = ref / name
        if not p.exists():
            print(f"  {name:<28} (missing)")
            continue
        for exp in experiments(p):
            t = load_table(
                p, n="params", d="tokens", loss="loss", extra=["budget"], where={"experiment": exp}
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", IsoFLOPWarning)
                try:
                    f = fit_isoflop(t, budget="budget")
                except Exception as exc:  # report and go on: this part has no pass/fail
                    print(f"  {name:<28} {exp:<44} failed: {exc}")
                    continue
            used = sum(pr.used for pr in f.profiles)
            print(f"  {name:<28} {exp:<44} {used:>3}/{len(f.profiles):<3} {f.a:>7.3f} {f.b:>7.3f}")


def main() -> int:
    here = Path(__file__).resolve().parent
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--reference-dir", type=Path, default=here.parent.parent / "shared" / "reference"
    )
    parser.add_argument(
        "--n-boot", type=int, default=4000, help="bootstrap resamples (Besiroglu et al.: 4000)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ref = args.reference_dir
    if not (ref / "chinchilla_epoch_svg_points.csv").exists():
        print(f"reference data not found in {ref} (pass --reference-dir)", file=sys.stderr)
        return 2
    approach3(ref, args.n_boot, args.seed)
    approach2(ref)
    print(f"\n{sum(results)}/{len(results)} checks passed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
