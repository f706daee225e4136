"""Fitting a study's results with the scaling-law module.

From the study's results (rebuilt from the rungs' summaries) this fits, on the rungs whose
role is ``fit``:

- Approach 3 (Chinchilla parametric law, Huber on log loss, 4,500 starts) with a run-level
  bootstrap, N being the non-embedding parameter count and C = 6 N D;
- Approach 2 (IsoFLOP parabolas) when the design has compute levels;
- Approach 1 (the envelope of the validation curves) when there are curves;
- the allocation exponents under non-embedding and total N, each with C = 6 N D and the
  Appendix F count, side by side (``conventions``, :mod:`scalelab.study.conventions`);

and then predicts every held-out rung from the Approach 3 law, with a prediction interval,
and states the error. Everything is written under ``STUDY/fits/``; ``summary.json`` lists
the rungs of the Approach 3 law (``chinchilla.rungs``), which ``results.csv`` marks
``in_fit``.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from scalelab.config import Config
from scalelab.errors import UserError
from scalelab.study.study import Study
from scalelab.utils.io import atomic_write_json, read_json


@dataclass(kw_only=True)
class StudyFitConfig(Config):
    """How to fit a study."""

    loss: str = "final_val_loss"
    """Column of results.csv to fit (final_val_loss, best_val_loss or val_loss/<source>)."""
    bootstrap: int = 400
    """Bootstrap resamples for intervals (0: none)."""
    seed: int = 0
    """Seed of the bootstrap."""
    grid: str = "hoffmann"
    """Initialisation grid of Approach 3: hoffmann (4,500 starts) or small."""
    frontier_band: float | None = None
    """IsoFLOP designs, optional: fit Approach 3 only to the rungs whose loss is within this
    fraction of the best loss at their compute level (none, the default since 0.3.0: every
    rung). A selection on the outcome: it truncates on the response and drops the off-optimum
    points that separate A/alpha from B/beta, so a held-out error measured with a band chosen
    after seeing it is no longer out of sample (scalelab 0.2 used 0.05 by default)."""

    calibrate: bool = True
    """Calibrated intervals: resample whole compute levels and add the model-form error of
    rolling-origin extrapolation (fit on the smallest levels, predict the larger ones); needs
    3 or more compute levels (else the plain bootstrap of runs)."""

    def validate(self) -> None:
        if self.bootstrap < 0:
            raise UserError("bootstrap must be >= 0")
        if self.frontier_band is not None and not self.frontier_band > 0:
            raise UserError("frontier_band must be positive (or none)")
        if self.grid not in ("hoffmann", "small"):
            raise UserError("grid must be hoffmann or small")


def _rows(study: Study, loss: str) -> tuple[list[dict], list[dict]]:
    rows = study.result_rows()
    done = [r for r in rows if r["status"] == "completed" and r.get(loss) is not None]
    if rows and not any(loss in r for r in rows):
        raise UserError(f"results have no column {loss!r}")
    return [r for r in done if r["role"] == "fit"], [r for r in done if r["role"] == "holdout"]


def _table(rows: list[dict], loss: str, convention: str):
    from scalelab.laws import load_table

    cols = {k: [r.get(k) for r in rows] for k in ("rung", "N", "D", "budget", loss)}
    cols["C"] = [r[f"C_{convention}"] for r in rows]
    # C follows the plan's convention; with 6n_kaplan it is exactly 6 N D.
    fpnd = "6n_kaplan" if convention == "6n_kaplan" else "none"
    extra = ["rung"] + (["budget"] if all(b not in (None, "") for b in cols["budget"]) else [])
    return load_table(
        cols, n="N", d="D", c="C", loss=loss, extra=extra, flops_convention=fpnd, name="results"
    )


def _near_frontier(rows: list[dict], cfg: StudyFitConfig) -> list[dict]:
    """The rungs within ``cfg.frontier_band`` of the best loss at their compute level; every
    rung when that leaves fewer than 6 (the Chinchilla law has 5 parameters)."""
    if cfg.frontier_band is None or any(r.get("budget") in (None, "") for r in rows):
        return rows

    def level(r: dict) -> float:
        return round(math.log(float(r["budget"])), 3)

    best: dict[float, float] = {}
    for r in rows:
        best[level(r)] = min(best.get(level(r), math.inf), float(r[cfg.loss]))
    near = [r for r in rows if float(r[cfg.loss]) <= (1 + cfg.frontier_band) * best[level(r)]]
    return near if len(near) >= 6 else rows


def fit_study(study: Study, cfg: StudyFitConfig) -> dict[str, Any]:
    """Fit the study's laws; write ``fits/*.json``; return the summary dict."""
    from scalelab.laws import save_fit

    fit_rows, holdout_rows = _rows(study, cfg.loss)
    if len(fit_rows) < 6:
        raise UserError(
            f"{study.root}: {len(fit_rows)} completed fit rung(s); the Chinchilla law needs at least 6 "
            "(run `scalelab study run` first)"
        )
    conv = study.plan.flops_convention
    table = _table(fit_rows, cfg.loss, conv)
    fits_dir = study.root / "fits"
    near = _near_frontier(fit_rows, cfg) if study.plan.design == "isoflop" else fit_rows
    out: dict[str, Any] = {"loss": cfg.loss, "n_fit": len(near), "flops_convention": conv}
    chin, all_rungs = _fit_approach3(out, table, fit_rows, holdout_rows, near, cfg, conv)
    save_fit(chin, fits_dir / "chinchilla.json")
    out["holdout"] = [
        _holdout_check(r, chin, all_rungs, fit_rows, cfg.loss, conv) for r in holdout_rows
    ]
    if study.plan.design == "isoflop" and "budget" in (table.extra or {}):
        out["isoflop"] = _fit_approach2(table, fits_dir)
    out["conventions"] = _fit_conventions(fit_rows, near, cfg, conv)
    from scalelab.study.forms_fit import fit_forms

    out.update(fit_forms(table, fit_rows, holdout_rows, cfg, conv, fits_dir))
    envelope = _fit_approach1(fit_rows, fits_dir)
    if envelope is not None:
        out["envelope"] = envelope
    from scalelab.study.downstream import downstream_keys, fit_downstream, label_curve_dirs

    if downstream_keys(study) or label_curve_dirs(study):
        out["downstream"] = fit_downstream(
            study, n_boot=min(cfg.bootstrap, 500) or 200, seed=cfg.seed
        )
    note = study.repetition_note()
    if note:
        out["repetition_note"] = note
    atomic_write_json(fits_dir / "summary.json", out)
    return out


def _fit_approach3(
    out: dict[str, Any],
    table: Any,
    fit_rows: list[dict],
    holdout_rows: list[dict],
    near: list[dict],
    cfg: StudyFitConfig,
    conv: str,
) -> tuple[Any, Any]:
    """Approach 3 on the near-frontier rungs (with a bootstrap), and on every rung when the
    band left some out; records both in ``out``; returns ``(law, every-rung law or None)``."""
    from scalelab.laws import fit_chinchilla, hoffmann_grid, small_grid

    grid = hoffmann_grid() if cfg.grid == "hoffmann" else small_grid()
    all_rungs = None
    if len(near) < len(fit_rows):
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            all_rungs = fit_chinchilla(table, grid=grid)
        out["chinchilla_all"] = {
            "params": dict(all_rungs.params),
            "converged": all_rungs.diagnostics.converged,
            "n_fit": len(fit_rows),
            "rungs": [r["rung"] for r in fit_rows],
            "a": all_rungs.exponents[0],
            "b": all_rungs.exponents[1],
        }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chin_table = _table(near, cfg.loss, conv) if all_rungs is not None else table
        chin = fit_chinchilla(chin_table, grid=grid)
        if cfg.bootstrap:
            c_hi = max(r[f"C_{conv}"] for r in fit_rows + holdout_rows)
            # An allocation needs C = k N D: none under the Appendix F count (the report's
            # answer table then allocates under 6 N D and says so).
            compute = [c_hi * f for f in (0.01, 0.1, 1.0, 10.0)] if chin.flops_per_nd else None
            chin = chin.with_bootstrap(_bootstrap(chin_table, chin, cfg, compute, grid))
            if chin.bootstrap.calibration is not None:
                out["calibration"] = calibration_summary(chin.bootstrap.calibration)
    out["chinchilla"] = {
        "params": dict(chin.params),
        "converged": chin.diagnostics.converged,
        "cautions": list(getattr(chin.diagnostics, "cautions", ())),
        "rmse_log": chin.rmse_log,
        "a": chin.exponents[0],
        "b": chin.exponents[1],
        "warnings": _fit_warnings(caught),
        "frontier_band": cfg.frontier_band if all_rungs is not None else None,
        "excluded": sorted({r["rung"] for r in fit_rows} - {r["rung"] for r in near}),
        # The points of this law: results.csv's in_fit column marks them.
        "rungs": [r["rung"] for r in near],
    }
    return chin, all_rungs


def _fit_conventions(
    fit_rows: list[dict], near: list[dict], cfg: StudyFitConfig, conv: str
) -> dict[str, Any]:
    """The allocation exponents under non-embedding and total N, each with C = 6 N D and the
    Appendix F count (:func:`scalelab.study.conventions.allocation_by_convention`; Pearce &
    Song 2024, arXiv:2406.12907; Porian et al. 2024, arXiv:2406.19146): Approach 3 on the
    rungs of the main law, with its start grid, and Approach 2 on every fit rung."""
    from scalelab.laws import hoffmann_grid, small_grid
    from scalelab.study.conventions import allocation_by_convention

    try:
        return allocation_by_convention(
            fit_rows,
            approach3_rows=near,
            loss=cfg.loss,
            plan_convention=conv,
            n_boot=cfg.bootstrap,
            seed=cfg.seed,
            grid=hoffmann_grid() if cfg.grid == "hoffmann" else small_grid(),
        ).to_dict()
    except UserError as exc:  # each cell records its own failure; this is a last resort
        return {"error": str(exc), "cells": []}


def _bootstrap(
    table: Any, chin: Any, cfg: StudyFitConfig, compute: list[float] | None, grid: Any
) -> Any:
    """The calibrated bootstrap (compute levels resampled, rolling-origin form error) when
    asked for and the study has 3 or more compute levels; else the bootstrap of runs."""
    from scalelab.laws import bootstrap, fit_chinchilla
    from scalelab.laws.calibration import calibrated_bootstrap, compute_levels

    if cfg.calibrate and len(compute_levels(table)[1]) >= 3:
        try:
            return calibrated_bootstrap(
                table,
                chin,
                n=cfg.bootstrap,
                seed=cfg.seed,
                compute=compute,
                refit=lambda t: fit_chinchilla(t, grid=grid),
            )
        except UserError as exc:  # no cut has enough rungs for the law: runs resampled
            warnings.warn(f"calibrated intervals skipped: {exc}", stacklevel=2)
    return bootstrap(table, chin, n=cfg.bootstrap, seed=cfg.seed, compute=compute)


def calibration_summary(cal: Any) -> dict[str, Any]:
    """What ``fits/summary.json`` records of a rolling-origin calibration."""
    return {
        "form_sd_per_decade": cal.form_sd_per_decade,
        "bias_per_decade": cal.bias_per_decade,
        "noise_sd": cal.noise_sd,
        "n_levels": cal.n_levels,
        "cuts": list(cal.cut_levels),
        "coverage": cal.coverage(),
        "points": [
            {
                "train_levels": p.train_levels,
                "cut": p.cut,
                "level": p.level,
                "decades": p.distance,
                "runs": p.n,
                "mean_error": math.expm1(p.mean_log_error),
                "mean_abs_error": p.mean_abs_rel_error,
                "covered": p.covered,
            }
            for p in cal.points
        ],
    }


def _fit_warnings(caught: list[Any]) -> list[str]:
    """The fit's own warnings (numpy's RuntimeWarnings from trial points are noise)."""
    return list(
        dict.fromkeys(str(w.message) for w in caught if not issubclass(w.category, RuntimeWarning))
    )


def _holdout_check(
    r: dict, chin: Any, all_rungs: Any, fit_rows: list[dict], loss: str, conv: str
) -> dict[str, Any]:
    """A held-out rung predicted by the law fitted without it: estimate, interval, error."""
    from scalelab.laws import prediction_intervals

    pred: dict[str, Any] = {"estimate": float(np.ravel(chin.predict(N=r["N"], D=r["D"]))[0])}
    if chin.bootstrap is not None:
        iv = prediction_intervals(chin, N=[r["N"]], D=[r["D"]])
        pred.update(pred_lo=float(iv["pred_lo"][0]), pred_hi=float(iv["pred_hi"][0]))
    actual = float(r[loss])
    pred.update(
        rung=r["rung"],
        N=r["N"],
        D=r["D"],
        C=r[f"C_{conv}"],
        actual=actual,
        rel_error=(pred["estimate"] - actual) / actual,
        inside_interval=("pred_lo" in pred and pred["pred_lo"] <= actual <= pred["pred_hi"]),
        extrapolation_decades=math.log10(r[f"C_{conv}"] / max(x[f"C_{conv}"] for x in fit_rows)),
    )
    if all_rungs is not None:
        est = float(np.ravel(all_rungs.predict(N=r["N"], D=r["D"]))[0])
        pred.update(estimate_all=est, rel_error_all=(est - actual) / actual)
    return pred


def _fit_approach2(table: Any, fits_dir: Any) -> dict[str, Any]:
    """IsoFLOP parabolas per compute level (Approach 2)."""
    from scalelab.laws import fit_isoflop, save_fit

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            iso = fit_isoflop(table, budget="budget")
        except UserError as exc:
            return {"error": str(exc)}
        save_fit(iso, fits_dir / "isoflop.json")
        return {
            "a": iso.a,
            "b": iso.b,
            "warnings": list(iso.warnings) + _fit_warnings(caught),
        }


def _fit_approach1(fit_rows: list[dict], fits_dir: Any) -> dict[str, Any] | None:
    """The envelope of the rungs' validation curves (Approach 1); None without curves."""
    from scalelab.laws import fit_envelope, load_table, save_fit

    curve_rows = []
    for r in fit_rows:
        for tokens, loss in json.loads(r["curve"]):
            if tokens > 0:
                curve_rows.append({"rung": r["rung"], "N": r["N"], "D": tokens, "loss": loss})
    if len({c["rung"] for c in curve_rows}) < 2:
        return None
    curves = load_table(
        curve_rows,
        n="N",
        d="D",
        loss="loss",
        group="rung",
        flops_convention="6n_kaplan",
        name="curves",
    )
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        try:
            env = fit_envelope(curves)
        except UserError as exc:
            return {"error": str(exc)}
        save_fit(env, fits_dir / "envelope.json")
        return {"a": env.n_opt_law.exponent, "b": env.d_opt_law.exponent}


def load_fit_summary(study: Study) -> dict[str, Any] | None:
    path = study.root / "fits" / "summary.json"
    return read_json(path) if path.is_file() else None


RESULT_FILES = ("results.csv", "curves.csv", "downstream.csv")


def results_hash(study: Study) -> str:
    """Content hash of results.csv, curves.csv and downstream.csv, the fits' inputs (the
    fits are redone when it changes; a study fitted by scalelab 0.1 is refitted once)."""
    paths = [study.root / name for name in RESULT_FILES]
    if not paths[0].is_file():
        return ""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"")
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def fit_and_report(study: Study, fit_cfg: Any, *, force_fit: bool = False) -> dict[str, Any] | None:
    """Fit (unless the fits already match the current results) and render the report."""
    from scalelab.study.report.study_report import build_report

    study.write_results()
    summary = load_fit_summary(study)
    if force_fit or summary is None or summary.get("results_hash") != results_hash(study):
        try:
            summary = fit_study(study, fit_cfg)
        except UserError as exc:
            print(f"scalelab: not fitted yet: {exc}", file=sys.stderr)
            summary = None
        else:
            # results.csv again: its in_fit column marks the rungs of the new fit, and the
            # hash is of what the study's tables now hold (unchanged until a rung changes).
            study.write_results()
            summary["results_hash"] = results_hash(study)
            atomic_write_json(study.root / "fits" / "summary.json", summary)
    html, md = build_report(study)
    print(f"report: {html} (and {md.name})")
    return summary


def _verdict(chin: dict[str, Any]) -> str:
    """'converged', 'converged, but: E ~ 0, ...' (the fit's cautions) or 'NOT CONVERGED'."""
    if not chin["converged"]:
        return "NOT CONVERGED"
    cautions = chin.get("cautions") or []
    return "converged" + (f", but: {', '.join(cautions)}" if cautions else "")


def describe_fit(summary: dict[str, Any], study: Study | None = None) -> str:
    """The fit summary in a few lines (what ``scalelab study fit`` prints)."""
    p = summary["chinchilla"]["params"]
    lines = [
        f"Approach 3: L(N, D) = {p['E']:.4f} + {p['A']:.4g}/N^{p['alpha']:.4f} + {p['B']:.4g}/D^{p['beta']:.4f}"
        f"  (rmse(log) {summary['chinchilla']['rmse_log']:.4f}, {_verdict(summary['chinchilla'])})",
        f"  compute-optimal N ∝ C^{summary['chinchilla']['a']:.3f}, D ∝ C^{summary['chinchilla']['b']:.3f}",
    ]
    if summary["chinchilla"].get("excluded"):
        lines.append(
            f"  fitted on {summary['n_fit']} rungs within {100 * summary['chinchilla']['frontier_band']:.0f}% "
            f"of their compute level's best loss (left out: {', '.join(summary['chinchilla']['excluded'])})"
        )
    if study is not None:  # the answer: N_opt, D_opt, D/N and loss with 95% intervals
        from scalelab.study.answer import answer_lines

        lines += answer_lines(summary, study)
    for key, name in (("isoflop", "Approach 2 (IsoFLOP)"), ("envelope", "Approach 1 (envelope)")):
        if "a" in summary.get(key, {}):
            lines.append(
                f"{name}: N_opt ∝ C^{summary[key]['a']:.3f}, D_opt ∝ C^{summary[key]['b']:.3f}"
            )
    from scalelab.study.report.conventions_section import convention_lines

    lines += convention_lines(summary)
    skipped = [w for w in summary["chinchilla"].get("warnings", []) if w.startswith("calibrated")]
    if skipped:
        lines.append(f"  {skipped[0].split(' (')[0]} (runs resampled instead)")
    cal = summary.get("calibration")
    if cal:
        cov = cal["coverage"]
        lines.append(
            f"  rolling-origin check over {cal['n_levels']} compute levels: model-form error "
            f"{cal['form_sd_per_decade']:.4f} per decade (in the intervals)"
            + (
                f", nested 95% intervals covered {cov:.0%} of the rolled-forward rungs"
                if cov == cov
                else ""
            )
        )
    for c in summary.get("holdout", []):
        pi = f" [{c['pred_lo']:.4f}, {c['pred_hi']:.4f}]" if "pred_lo" in c else ""
        lines.append(
            f"held out {c['rung']}: predicted {c['estimate']:.4f}{pi}, measured {c['actual']:.4f}, "
            f"error {100 * c['rel_error']:+.2f}%"
        )
        if "estimate_all" in c:
            lines.append(
                f"  (law fitted on every rung: predicted {c['estimate_all']:.4f}, "
                f"error {100 * c['rel_error_all']:+.2f}%)"
            )
    from scalelab.study.forms_fit import forms_lines

    lines += forms_lines(summary)
    for key, res in summary.get("downstream", {}).items():
        for h in res.get("holdout", []):
            if "ladder_estimate" in h:
                lines.append(
                    f"downstream {key}, held out {h['rung']}: ladder predicted {h['ladder_estimate']:.4f} "
                    f"[{h['ladder_lo']:.4f}, {h['ladder_hi']:.4f}], measured {h['actual']:.4f} "
                    f"(error {h['ladder_error']:+.4f})"
                )
        if "error" in res:
            lines.append(f"downstream {key}: {res['error']}")
    from scalelab.study.downstream import describe_label_laws

    lines += describe_label_laws(summary.get("downstream", {}))
    if summary.get("repetition_note"):  # Study.repetition_note(): rungs above one epoch
        lines.append(f"note: {summary['repetition_note']}")
    return "\n".join(lines)
